//! What a gateway process holds, read from `/proc/<pid>` (Linux): resident memory,
//! threads, open file descriptors and, among them, UDP sockets. The parsers are pure
//! and tested on captured text; [`read`] is the thin IO around them.

use std::collections::HashSet;

/// One reading of a process's resources; `None` where it could not be read.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcResources {
    /// Resident set size, bytes (`VmRSS`).
    pub rss_bytes: Option<f64>,
    /// OS threads (`Threads`).
    pub threads: Option<f64>,
    /// Open file descriptors (entries of `fd/`).
    pub fds: Option<f64>,
    /// Open UDP sockets (fds whose socket inode is in `net/udp` or `net/udp6`).
    pub udp_sockets: Option<f64>,
}

/// `VmRSS` (bytes) and `Threads` from `/proc/<pid>/status`.
pub fn parse_status(status: &str) -> (Option<f64>, Option<f64>) {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    (field("VmRSS:").map(|kb| kb * 1024.0), field("Threads:"))
}

/// The socket inodes listed in `/proc/<pid>/net/udp` or `udp6` (10th column).
pub fn parse_udp_inodes(table: &str) -> impl Iterator<Item = u64> + '_ {
    table
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(9)?.parse().ok())
}

/// Each socket's inode and its receive drops (`drops`, the 13th column: datagrams the
/// kernel threw away because the socket's receive buffer was full) from `net/udp` or `udp6`.
pub fn parse_udp_drops(table: &str) -> impl Iterator<Item = (u64, u64)> + '_ {
    table.lines().skip(1).filter_map(|l| {
        let mut columns = l.split_whitespace();
        let inode = columns.nth(9)?.parse().ok()?;
        let drops = columns.nth(2)?.parse().ok()?;
        Some((inode, drops))
    })
}

/// Receive drops of the UDP sockets bound to one of `ports` (any address), from this network
/// namespace's `/proc/net/udp` and `udp6`, which list every process's sockets: a gateway on this
/// machine's media sockets, found by the port its datagrams come from. `None` if unreadable.
pub fn udp_drops_on_ports(ports: &[u16]) -> Option<u64> {
    let mut total = None;
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        if let Ok(text) = std::fs::read_to_string(table) {
            *total.get_or_insert(0) += parse_port_drops(&text)
                .filter(|(port, _)| ports.contains(port))
                .map(|(_, drops)| drops)
                .sum::<u64>();
        }
    }
    total
}

/// Drops counted between two readings of the same sockets' counters: `end - start` when both
/// were read (a socket closed meanwhile can make it negative: none then), `end` when the
/// first reading is missing (no steady phase began: the whole run so far).
pub fn drops_between(start: Option<u64>, end: Option<u64>) -> Option<u64> {
    match (start, end) {
        (Some(start), Some(end)) => Some(end.saturating_sub(start)),
        (None, end) => end,
        (Some(_), None) => None,
    }
}

/// Each socket's local port and receive drops from `net/udp` or `udp6` (`local_address` is
/// `ADDR:PORT` in hex).
pub fn parse_port_drops(table: &str) -> impl Iterator<Item = (u16, u64)> + '_ {
    table.lines().skip(1).filter_map(|l| {
        let mut columns = l.split_whitespace();
        let local = columns.nth(1)?;
        let port = u16::from_str_radix(local.rsplit(':').next()?, 16).ok()?;
        let drops = columns.nth(10)?.parse().ok()?;
        Some((port, drops))
    })
}

/// CPU time (user + system) in clock ticks from a `/proc/<pid>/stat` or
/// `/proc/<pid>/task/<tid>/stat` line: fields 14 and 15, counted after the command name
/// (which may hold spaces and parentheses, so from its last `)`).
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(user + system)
}

/// CPU seconds (user + system) of a process (`/proc/<pid>/stat`) or one of its threads
/// (`/proc/<pid>/task/<tid>/stat`), at clock-tick resolution.
pub fn cpu_seconds(stat_path: &str) -> Option<f64> {
    let ticks = parse_stat_ticks(&std::fs::read_to_string(stat_path).ok()?)?;
    #[cfg(target_os = "linux")]
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    #[cfg(not(target_os = "linux"))]
    let per_second = 100;
    (per_second > 0).then(|| ticks as f64 / per_second as f64)
}

/// Datagrams dropped so far on `pid`'s UDP sockets because their receive buffer was full
/// (summed over the sockets it has open now); `None` where `/proc` cannot be read.
pub fn udp_drops(pid: u32) -> Option<u64> {
    let dir = std::path::PathBuf::from(format!("/proc/{pid}"));
    let mut drops = std::collections::HashMap::new();
    for table in ["net/udp", "net/udp6"] {
        if let Ok(text) = std::fs::read_to_string(dir.join(table)) {
            drops.extend(parse_udp_drops(&text));
        }
    }
    let mut total = 0;
    for entry in std::fs::read_dir(dir.join("fd")).ok()?.flatten() {
        if let Ok(target) = std::fs::read_link(entry.path())
            && let Some(inode) = target.to_str().and_then(socket_inode)
        {
            total += drops.get(&inode).copied().unwrap_or(0);
        }
    }
    Some(total)
}

/// The inode of an fd link target `socket:[12345]`.
pub fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

/// Reads `pid`'s resources now. Fields that cannot be read (another user's process,
/// not Linux, gone) are `None`.
pub fn read(pid: u32) -> ProcResources {
    let dir = std::path::PathBuf::from(format!("/proc/{pid}"));
    let (rss_bytes, threads) = std::fs::read_to_string(dir.join("status"))
        .map(|s| parse_status(&s))
        .unwrap_or((None, None));
    let mut udp: HashSet<u64> = HashSet::new();
    for table in ["net/udp", "net/udp6"] {
        if let Ok(text) = std::fs::read_to_string(dir.join(table)) {
            udp.extend(parse_udp_inodes(&text));
        }
    }
    let (mut fds, mut udp_sockets) = (None, None);
    if let Ok(entries) = std::fs::read_dir(dir.join("fd")) {
        let (mut n, mut u) = (0u64, 0u64);
        for entry in entries.flatten() {
            n += 1;
            if let Ok(target) = std::fs::read_link(entry.path())
                && let Some(inode) = target.to_str().and_then(socket_inode)
                && udp.contains(&inode)
            {
                u += 1;
            }
        }
        fds = Some(n as f64);
        udp_sockets = Some(u as f64);
    }
    ProcResources {
        rss_bytes,
        threads,
        fds,
        udp_sockets,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_are_counted_between_two_readings_or_over_the_run_without_the_first() {
        assert_eq!(drops_between(Some(1_500), Some(1_545)), Some(45), "the steady phase's");
        assert_eq!(drops_between(Some(0), Some(0)), Some(0));
        assert_eq!(
            drops_between(None, Some(9_147)),
            Some(9_147),
            "no steady phase: the run's"
        );
        assert_eq!(
            drops_between(Some(300), Some(200)),
            Some(0),
            "a socket closed meanwhile"
        );
        assert_eq!(drops_between(Some(3), None), None, "nothing to read at the end");
        assert_eq!(drops_between(None, None), None);
    }

    #[test]
    fn status_gives_rss_and_threads() {
        let status = "Name:\tgatehouse\nState:\tS (sleeping)\nVmPeak:\t  900000 kB\nVmRSS:\t   51200 kB\nThreads:\t7\n";
        assert_eq!(parse_status(status), (Some(51200.0 * 1024.0), Some(7.0)));
        assert_eq!(parse_status("Name:\tx\n"), (None, None));
    }

    #[test]
    fn udp_tables_and_fd_links_meet_at_the_inode() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
                     1234: 0100007F:1EC2 00000000:0000 07 00000000:00000000 00:00000000 00000000  1000        0 98765 2 0000000000000000 0\n\
                     1235: 0100007F:A001 00000000:0000 07 00000000:00000000 00:00000000 00000000  1000        0 98766 2 0000000000000000 0\n";
        assert_eq!(parse_udp_inodes(table).collect::<Vec<_>>(), vec![98765, 98766]);
        let dropping = table.replace(" 0000000000000000 0\n", " 0000000000000000 17\n");
        assert_eq!(
            parse_udp_drops(&dropping).collect::<Vec<_>>(),
            vec![(98765, 17), (98766, 17)]
        );
        assert_eq!(parse_udp_drops(table).map(|(_, d)| d).sum::<u64>(), 0);
        assert_eq!(
            parse_port_drops(&dropping).collect::<Vec<_>>(),
            vec![(0x1EC2, 17), (0xA001, 17)],
            "ports 7874 and 40961"
        );
        assert_eq!(socket_inode("socket:[98765]"), Some(98765));
        assert_eq!(socket_inode("anon_inode:[eventpoll]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
    }

    #[test]
    fn stat_gives_user_plus_system_ticks_whatever_the_command_name() {
        let stat = "4242 (lean (engine) 0) S 1 4242 4242 0 -1 4194304 100 0 0 0 250 75 0 0 20 0 3 0 1 2 3";
        assert_eq!(parse_stat_ticks(stat), Some(325));
        assert_eq!(parse_stat_ticks("4242 (x) S 1"), None);
        assert_eq!(parse_stat_ticks("no parenthesis"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn our_own_cpu_and_drops_can_be_read() {
        let before = cpu_seconds("/proc/self/stat").expect("our CPU");
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(60) {
            std::hint::black_box(spin.elapsed());
        }
        assert!(
            cpu_seconds("/proc/self/stat").expect("our CPU") > before,
            "spinning costs CPU"
        );
        // A socket with the smallest receive buffer, sent more than it holds: it drops.
        let small = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).expect("socket");
        small.set_recv_buffer_size(1).expect("a tiny buffer");
        small
            .bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .expect("bind");
        let small: std::net::UdpSocket = small.into();
        let to = small.local_addr().expect("addr");
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        for _ in 0..64 {
            sender.send_to(&[7; 1000], to).expect("loopback send");
        }
        assert!(
            udp_drops(std::process::id()).expect("our sockets") >= 1,
            "the overflow is counted"
        );
        drop(small);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn our_own_process_can_be_read() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let r = read(std::process::id());
        assert!(r.rss_bytes.expect("rss") > 1e6);
        assert!(r.threads.expect("threads") >= 1.0);
        assert!(r.fds.expect("fds") >= 4.0);
        assert!(r.udp_sockets.expect("udp") >= 1.0, "{r:?}");
        drop(socket);
    }
}
