//! A guest's own network for a test: a network namespace joined to this one by a
//! veth pair (host side `10.213.N.1/29`, guest side `10.213.N.2/29`), with the
//! guest side's conditions set by nftables rules inside the namespace. Everything
//! is removed when the value is dropped, also when the test fails.
//!
//! Needs root (CI runs as root). Where the kernel refuses namespaces, [`GuestNet::create`]
//! says why and returns `None`, and the test says it was skipped.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU8, Ordering};

/// A namespace with a veth link to this one.
pub struct GuestNet {
    pub name: String,
    host_if: String,
    /// This side's address (the gateway binds it).
    pub host_ip: Ipv4Addr,
    /// The guest side's address (it changes with [`GuestNet::move_guest`]).
    pub guest_ip: Ipv4Addr,
    guest_if: String,
}

fn run(args: &[&str], input: Option<&str>) -> Result<(), String> {
    use std::io::Write;
    let mut cmd = Command::new(args[0]);
    cmd.args(&args[1..])
        .stdin(if input.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if let Some(input) = input {
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(input.as_bytes())
            .map_err(|e| e.to_string())?;
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl GuestNet {
    /// A fresh namespace and link, up, with no rules yet. `None` (and the reason on
    /// stderr) where namespaces cannot be made here.
    pub fn create() -> Option<GuestNet> {
        static NEXT: AtomicU8 = AtomicU8::new(0);
        let n = (std::process::id() as u8)
            .wrapping_mul(7)
            .wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed))
            % 250;
        let name = format!("gh-guest-{}-{n}", std::process::id());
        let host_if = format!("ghh{}", n);
        let guest_if = format!("ghg{}", n);
        let net = GuestNet {
            name: name.clone(),
            host_if: host_if.clone(),
            host_ip: Ipv4Addr::new(10, 213, n, 1),
            guest_ip: Ipv4Addr::new(10, 213, n, 2),
            guest_if: guest_if.clone(),
        };
        let (host_cidr, guest_cidr) = (format!("{}/29", net.host_ip), format!("{}/29", net.guest_ip));
        // Leftovers of a run that was killed: same names, so clear them first.
        let _ = run(&["ip", "link", "del", &host_if], None);
        let _ = run(&["ip", "netns", "del", &name], None);
        let host_v6 = format!("net.ipv6.conf.{host_if}.disable_ipv6=1");
        let steps: [&[&str]; 11] = [
            &["ip", "netns", "add", &name],
            // IPv4 only, on both ends: an IPv6 link-local address appearing a second or two
            // after a link comes up is a network change to a browser, which then fails the
            // page load in flight with ERR_NETWORK_CHANGED. The guest's end is made in the
            // namespace (its defaults say no IPv6); ours is set before it comes up, since
            // staff's browser, outside the namespace, sees this namespace's links.
            &[
                "ip",
                "netns",
                "exec",
                &name,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
            ],
            &[
                "ip",
                "netns",
                "exec",
                &name,
                "sysctl",
                "-qw",
                "net.ipv6.conf.default.disable_ipv6=1",
            ],
            &[
                "ip", "link", "add", &host_if, "type", "veth", "peer", "name", &guest_if, "netns", &name,
            ],
            &["sysctl", "-qw", &host_v6],
            &["ip", "addr", "add", &host_cidr, "dev", &host_if],
            &["ip", "link", "set", &host_if, "up"],
            &["ip", "-n", &name, "addr", "add", &guest_cidr, "dev", &guest_if],
            &["ip", "-n", &name, "link", "set", &guest_if, "up"],
            &["ip", "-n", &name, "link", "set", "lo", "up"],
            &[
                "ip",
                "-n",
                &name,
                "route",
                "add",
                "default",
                "via",
                &net.host_ip.to_string(),
            ],
        ];
        for step in steps {
            if let Err(e) = run(step, None) {
                eprintln!("SKIPPED: cannot build a guest network namespace here ({e}); run the suite as root");
                return None;
            }
        }
        Some(net)
    }

    /// The guest moves to the next address of its link (a phone going from Wi-Fi to
    /// mobile data): the new one is added, the old one removed (its sockets break), and
    /// the default route goes via the new one.
    pub fn move_guest(&mut self) {
        let old = self.guest_ip;
        let new = Ipv4Addr::from(u32::from(old) + 1);
        assert!(new.octets()[3] < 7, "the /29 has room for four moves");
        // Without this, removing the primary address removes the new (secondary) one too.
        let promote = format!("net.ipv4.conf.{}.promote_secondaries=1", self.guest_if);
        let steps: [&[&str]; 4] = [
            &["ip", "netns", "exec", &self.name, "sysctl", "-qw", &promote],
            &[
                "ip",
                "-n",
                &self.name,
                "addr",
                "add",
                &format!("{new}/29"),
                "dev",
                &self.guest_if,
            ],
            &[
                "ip",
                "-n",
                &self.name,
                "addr",
                "del",
                &format!("{old}/29"),
                "dev",
                &self.guest_if,
            ],
            &[
                "ip",
                "-n",
                &self.name,
                "route",
                "replace",
                "default",
                "via",
                &self.host_ip.to_string(),
                "src",
                &new.to_string(),
            ],
        ];
        for step in steps {
            run(step, None).unwrap_or_else(|e| panic!("moving the guest: {e}"));
        }
        self.guest_ip = new;
    }

    /// A second address on this side of the link (10.214.n.1, outside the link's /29, reached
    /// from the guest by its default route), for a relay between the guest and the gateway.
    /// It goes with the link. Add it before any browser starts: a new address is a network
    /// change to a browser outside the namespace.
    pub fn add_host_address(&self) -> Ipv4Addr {
        let [_, _, n, _] = self.host_ip.octets();
        let ip = Ipv4Addr::new(10, 214, n, 1);
        run(&["ip", "addr", "add", &format!("{ip}/32"), "dev", &self.host_if], None)
            .unwrap_or_else(|e| panic!("adding {ip}: {e}"));
        ip
    }

    /// Loads an nftables ruleset inside the namespace (`nft -f -`).
    pub fn nft(&self, ruleset: &str) {
        run(&["ip", "netns", "exec", &self.name, "nft", "-f", "-"], Some(ruleset))
            .unwrap_or_else(|e| panic!("nft in {}: {e}", self.name));
    }

    /// Drops `percent` % of the UDP datagrams from the guest where they arrive, on this
    /// side of the link (a rule in this namespace's input hook for the host end of the
    /// veth): a drop in the guest's own output hook would fail the sender's `send` with
    /// EPERM, and Chromium then knows its packet never left, which no real network tells
    /// it. The rule goes when the returned value is dropped.
    pub fn lose_from_guest(&self, percent: u8) -> HostRules {
        let table = format!("gh_from_{}", self.host_if);
        let ruleset = format!(
            "table inet {table} {{
               chain in {{ type filter hook input priority -10; policy accept;
                 iifname \"{}\" meta l4proto udp numgen random mod 100 < {percent} counter drop; }}
             }}",
            self.host_if
        );
        run(&["nft", "-f", "-"], Some(&ruleset)).unwrap_or_else(|e| panic!("nft: {e}"));
        HostRules { table }
    }

    /// Caps the rate toward the guest with `tc` `tbf` on this side's end of the link (its
    /// egress is the guest's downlink): `kbit` per second, a bucket of 8 KB, and a queue of
    /// `queue_ms` (beyond that packets are dropped, as by a router's buffer). Replaces an
    /// earlier cap; [`GuestNet::uncap_to_guest`] lifts it, and it goes with the link.
    pub fn cap_to_guest(&self, kbit: u32, queue_ms: u32) {
        let (rate, latency) = (format!("{kbit}kbit"), format!("{queue_ms}ms"));
        run(
            &[
                "tc",
                "qdisc",
                "replace",
                "dev",
                &self.host_if,
                "root",
                "tbf",
                "rate",
                &rate,
                "burst",
                "8kb",
                "latency",
                &latency,
            ],
            None,
        )
        .unwrap_or_else(|e| panic!("tc: {e}"));
    }

    /// Lifts [`GuestNet::cap_to_guest`]'s cap.
    pub fn uncap_to_guest(&self) {
        run(&["tc", "qdisc", "del", "dev", &self.host_if, "root"], None).unwrap_or_else(|e| panic!("tc: {e}"));
    }

    /// The `tc -s` statistics of the cap toward the guest (sent, dropped, overlimits), as text.
    pub fn cap_stats(&self) -> String {
        let out = Command::new("tc")
            .args(["-s", "qdisc", "show", "dev", &self.host_if])
            .output()
            .unwrap_or_else(|e| panic!("tc -s: {e}"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `nft list <what>` inside the namespace (its rules with their counters), as text.
    pub fn nft_list(&self, what: &str) -> String {
        let mut args = vec!["netns", "exec", &self.name, "nft", "list"];
        args.extend(what.split_whitespace());
        let out = Command::new("ip")
            .args(&args)
            .output()
            .unwrap_or_else(|e| panic!("nft list in {}: {e}", self.name));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Drops every UDP datagram into and out of the guest (DNS included: the test
    /// uses addresses only).
    pub fn block_udp(&self) {
        self.nft(
            "table inet gatehouse_test {
               chain out { type filter hook output priority 0; policy accept; meta l4proto udp drop; }
               chain in { type filter hook input priority 0; policy accept; meta l4proto udp drop; }
             }",
        );
    }

    /// An executable that runs `program` (with its arguments) inside the namespace:
    /// what a browser driver is given as the browser's path.
    pub fn wrapper(&self, dir: &std::path::Path, program: &str) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(format!("in-{}", self.name));
        std::fs::write(
            &path,
            format!("#!/bin/sh\nexec ip netns exec {} {program} \"$@\"\n", self.name),
        )
        .expect("write wrapper");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }
}

/// An nftables table in this (the host's) namespace, deleted when dropped.
pub struct HostRules {
    table: String,
}

impl HostRules {
    /// The packets its counters have counted (in rule order).
    pub fn counted(&self) -> Vec<u64> {
        let out = Command::new("nft")
            .args(["list", "table", "inet", &self.table])
            .output()
            .unwrap_or_else(|e| panic!("nft list: {e}"));
        packet_counts(&String::from_utf8_lossy(&out.stdout))
    }
}

impl Drop for HostRules {
    fn drop(&mut self) {
        if let Err(e) = run(&["nft", "delete", "table", "inet", &self.table], None) {
            eprintln!("removing {}: {e}", self.table);
        }
    }
}

/// The `counter packets N` figures of an `nft list` output, in order.
pub fn packet_counts(listing: &str) -> Vec<u64> {
    listing
        .lines()
        .filter_map(|l| {
            l.split("counter packets ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

impl Drop for GuestNet {
    fn drop(&mut self) {
        // Our end first, at once: deleting the namespace would take the pair with it, but
        // later (the kernel frees a namespace in the background), and a link vanishing
        // then is a network change to the next test's browser.
        if let Err(e) = run(&["ip", "link", "del", &self.host_if], None) {
            eprintln!("cleaning up {}: {e}", self.host_if);
        }
        if let Err(e) = run(&["ip", "netns", "del", &self.name], None) {
            eprintln!("cleaning up {}: {e}", self.name);
        }
    }
}
