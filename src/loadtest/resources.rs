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
        assert_eq!(socket_inode("socket:[98765]"), Some(98765));
        assert_eq!(socket_inode("anon_inode:[eventpoll]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
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
