//! A UDP relay that delays datagrams: the "40 ms of delay" of issue 12's capped-downlink
//! scenario, on a kernel without `netem`. The gateway advertises the relay's address as its
//! media address (`public_ip`), and the relay listens on that address with the gateway's
//! media port, so a browser's ICE finds the gateway only through it. Each client address gets
//! its own socket toward the gateway (the gateway sees one peer per client, as through a NAT),
//! and datagrams to and from a client the test chooses wait a fixed time in each direction,
//! in order: one queue per direction, its head sent when due.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;

/// The delays of one relay: toward the client (its downlink) and toward the gateway.
#[derive(Debug, Clone, Copy)]
pub struct Delays {
    pub to_client: Duration,
    pub to_gateway: Duration,
}

/// A running relay; dropping it stops it (its sockets close with its tasks).
pub struct DelayRelay {
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
    pub addr: SocketAddr,
    /// Datagrams relayed with the delays: to delayed clients, and from them.
    delayed: Arc<[AtomicU64; 2]>,
}

impl DelayRelay {
    /// How many datagrams went to and came from the delayed clients.
    pub fn delayed(&self) -> (u64, u64) {
        (
            self.delayed[0].load(Ordering::Relaxed),
            self.delayed[1].load(Ordering::Relaxed),
        )
    }
}

impl Drop for DelayRelay {
    fn drop(&mut self) {
        for t in self.tasks.lock().expect("never poisoned").drain(..) {
            t.abort();
        }
    }
}

type Outgoing = (Instant, Vec<u8>, SocketAddr);

/// Sends each queued datagram on `socket` when it is due, in order.
fn sender(socket: Arc<UdpSocket>) -> (mpsc::UnboundedSender<Outgoing>, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Outgoing>();
    let task = tokio::spawn(async move {
        while let Some((due, datagram, to)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            // A full socket buffer drops the datagram, as a router would.
            let _ = socket.send_to(&datagram, to).await;
        }
    });
    (tx, task)
}

impl DelayRelay {
    /// Listens on `listen` and relays to `gateway`; clients for which `delayed` says yes get
    /// `delays`, others none.
    pub async fn start(
        listen: SocketAddr,
        gateway: SocketAddr,
        delays: Delays,
        delayed: impl Fn(IpAddr) -> bool + Send + 'static,
    ) -> std::io::Result<DelayRelay> {
        let front = Arc::new(UdpSocket::bind(listen).await?);
        let addr = front.local_addr()?;
        let (to_clients, back_task) = sender(front.clone());
        let tasks: Arc<Mutex<Vec<AbortHandle>>> = Arc::new(Mutex::new(vec![back_task.abort_handle()]));
        let all = tasks.clone();
        let counts: Arc<[AtomicU64; 2]> = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        let counted = counts.clone();
        let main = tokio::spawn(async move {
            let mut clients: HashMap<SocketAddr, mpsc::UnboundedSender<Outgoing>> = HashMap::new();
            let keep = |t: JoinHandle<()>| all.lock().expect("never poisoned").push(t.abort_handle());
            let mut buf = vec![0u8; 65_536];
            loop {
                let Ok((n, from)) = front.recv_from(&mut buf).await else {
                    break;
                };
                let slow = delayed(from.ip());
                let (up, down) = if slow {
                    (delays.to_gateway, delays.to_client)
                } else {
                    (Duration::ZERO, Duration::ZERO)
                };
                if slow {
                    counted[1].fetch_add(1, Ordering::Relaxed);
                }
                if let std::collections::hash_map::Entry::Vacant(slot) = clients.entry(from) {
                    // This client's own socket toward the gateway, and its way back.
                    let Ok(socket) = UdpSocket::bind(SocketAddr::new(listen.ip(), 0)).await else {
                        continue;
                    };
                    let socket = Arc::new(socket);
                    let (tx, task) = sender(socket.clone());
                    keep(task);
                    let back = to_clients.clone();
                    let counted = counted.clone();
                    keep(tokio::spawn(async move {
                        let mut buf = vec![0u8; 65_536];
                        while let Ok((n, src)) = socket.recv_from(&mut buf).await {
                            if src != gateway {
                                continue;
                            }
                            if slow {
                                counted[0].fetch_add(1, Ordering::Relaxed);
                            }
                            if back.send((Instant::now() + down, buf[..n].to_vec(), from)).is_err() {
                                break;
                            }
                        }
                    }));
                    slot.insert(tx);
                }
                let _ = clients[&from].send((Instant::now() + up, buf[..n].to_vec(), gateway));
            }
        });
        tasks.lock().expect("never poisoned").push(main.abort_handle());
        Ok(DelayRelay {
            tasks,
            addr,
            delayed: counts,
        })
    }
}
