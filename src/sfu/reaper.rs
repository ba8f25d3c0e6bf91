//! Closed connections freed off the forwarding turn (issue 13).
//!
//! Dropping a closed `rtc` peer connection frees all of its state (transports, media
//! engine, interceptors and their histories, statistics): about 85 µs on this machine's
//! shard (median; the 99th percentile near 1 ms), three times what closing it costs. A
//! participant has two connections, so a meeting of 500 that ends at once cost the shard
//! 85 ms of frees on top of the leaves themselves, in turns that other meetings' packets
//! waited behind (BENCHMARKS §3, "Joins and leaves off the forwarding turn").
//!
//! A [`Reaper`] hands what it is given to a thread of its own, at the lowest scheduling
//! priority, which drops it there: the shard's turn only moves a box into a channel. The
//! memory is freed a little later, as soon as the core has time; closing (the DTLS
//! `close_notify`, the last datagrams) still happens on the shard, before the handover.

use std::sync::mpsc::{self, Sender};

/// Something dropped on the reaper's thread.
type Corpse = Box<dyn Send>;

/// The sending end of a reaper thread (see the module documentation). Dropping it ends
/// the thread once everything handed over is dropped.
pub struct Reaper {
    tx: Option<Sender<Corpse>>,
}

impl Reaper {
    /// A reaper thread named `name`. If no thread can be started, what it is given is
    /// dropped in place (as before there was a reaper).
    pub fn spawn(name: String) -> Self {
        let (tx, rx) = mpsc::channel::<Corpse>();
        let spawned = std::thread::Builder::new().name(name).spawn(move || {
            lowest_priority();
            for corpse in rx {
                drop(corpse);
            }
        });
        match spawned {
            Ok(_) => Self { tx: Some(tx) },
            Err(e) => {
                tracing::warn!("no reaper thread, closed connections are freed on the shard: {e}");
                Self { tx: None }
            }
        }
    }

    /// Drops `value` on the reaper's thread (in place if there is none, or it has gone).
    pub fn reap<T: Send + 'static>(&self, value: T) {
        let Some(tx) = &self.tx else {
            return drop(value);
        };
        if let Err(mpsc::SendError(corpse)) = tx.send(Box::new(value)) {
            drop(corpse);
        }
    }
}

/// The calling thread at nice 19, so that freeing never delays forwarding on a shared core.
fn lowest_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `setpriority` with `who = 0` changes the calling thread's nice value
        // (Linux keeps it per thread); it reads and writes no memory of ours.
        let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
        if rc != 0 {
            tracing::debug!("reaper: cannot lower its priority: {}", std::io::Error::last_os_error());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::Receiver;
    use std::time::Duration;

    /// Tells, when dropped, on which thread that happened.
    struct Tell(Sender<Option<String>>);

    impl Drop for Tell {
        fn drop(&mut self) {
            let _ = self.0.send(std::thread::current().name().map(str::to_owned));
        }
    }

    fn told(rx: &Receiver<Option<String>>) -> Option<String> {
        rx.recv_timeout(Duration::from_secs(10)).expect("dropped")
    }

    #[test]
    fn what_is_reaped_is_dropped_on_the_reapers_thread_in_order() {
        let reaper = Reaper::spawn("reaper-test".into());
        let (tx, rx) = mpsc::channel();
        for _ in 0..3 {
            reaper.reap(Tell(tx.clone()));
        }
        for _ in 0..3 {
            assert_eq!(told(&rx).as_deref(), Some("reaper-test"));
        }
    }

    #[test]
    fn the_thread_ends_with_its_reaper_after_dropping_what_it_was_given() {
        let (tx, rx) = mpsc::channel();
        let reaper = Reaper::spawn("reaper-end".into());
        reaper.reap(Tell(tx));
        drop(reaper);
        assert_eq!(told(&rx).as_deref(), Some("reaper-end"));
        // Every sender gone: the channel closes only once the thread dropped its last corpse.
        assert!(rx.recv_timeout(Duration::from_secs(10)).is_err());
    }

    #[test]
    fn without_a_thread_what_is_reaped_is_dropped_in_place() {
        let reaper = Reaper { tx: None };
        let (tx, rx) = mpsc::channel();
        let here = std::thread::current().name().map(str::to_owned);
        reaper.reap(Tell(tx));
        assert_eq!(rx.try_recv().expect("dropped at once"), here);
    }
}
