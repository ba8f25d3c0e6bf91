//! How many signaling connections the gateway holds at once, in total and per client
//! address: a pure counter with no IO, and a permit that gives its place back when the
//! connection ends (however it ends).
//!
//! A guest opens one socket, staff a few (console tabs); a client with dozens open is a
//! bug or an attack, and a server past its total would fail everyone. Both limits refuse
//! before the WebSocket upgrade, with a clear HTTP error, rather than letting sockets and
//! tasks pile up.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use gatehouse_signaling::{Error, ErrorCode};

/// The counts, behind one mutex (taken once when a connection opens and once when it ends).
#[derive(Debug)]
pub struct ConnectionLimits {
    max_total: usize,
    max_per_ip: usize,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// One open connection's place; dropping it frees the place.
#[derive(Debug)]
pub struct ConnectionPermit {
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
}

impl ConnectionLimits {
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<ConnectionLimits> {
        Arc::new(ConnectionLimits {
            max_total,
            max_per_ip,
            open: Mutex::new(Open::default()),
        })
    }

    fn open(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for one more connection from `ip`, or why not.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionPermit, Error> {
        let mut open = self.open();
        if open.total >= self.max_total {
            return Err(Error::new(
                ErrorCode::ServerBusy,
                "the gateway holds as many connections as it is set to; try again shortly",
            ));
        }
        let from_ip = open.per_ip.entry(ip).or_default();
        if *from_ip >= self.max_per_ip {
            return Err(Error::new(
                ErrorCode::RateLimited,
                format!("at most {} open connections per address", self.max_per_ip),
            ));
        }
        *from_ip += 1;
        open.total += 1;
        Ok(ConnectionPermit {
            limits: self.clone(),
            ip,
        })
    }

    /// Connections open now (total, from `ip`).
    pub fn open_now(&self, ip: IpAddr) -> (usize, usize) {
        let open = self.open();
        (open.total, open.per_ip.get(&ip).copied().unwrap_or(0))
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut open = self.limits.open();
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn per_address_limit_then_total_limit_and_places_come_back() {
        let limits = ConnectionLimits::new(3, 2);
        let a1 = limits.acquire(ip(1)).unwrap();
        let _a2 = limits.acquire(ip(1)).unwrap();
        assert_eq!(limits.acquire(ip(1)).unwrap_err().code, ErrorCode::RateLimited);
        let _b1 = limits.acquire(ip(2)).unwrap();
        // Total reached: even a new address is refused, and told the server is busy.
        assert_eq!(limits.acquire(ip(3)).unwrap_err().code, ErrorCode::ServerBusy);
        assert_eq!(limits.open_now(ip(1)), (3, 2));
        drop(a1);
        assert_eq!(limits.open_now(ip(1)), (2, 1));
        let _a3 = limits.acquire(ip(1)).unwrap();
        assert_eq!(limits.open_now(ip(3)), (3, 0));
    }

    #[test]
    fn an_address_with_nothing_open_is_forgotten() {
        let limits = ConnectionLimits::new(10, 1);
        drop(limits.acquire(ip(9)).unwrap());
        assert!(limits.open().per_ip.is_empty());
        assert!(limits.acquire(ip(9)).is_ok());
    }
}
