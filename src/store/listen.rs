//! The other nodes' queue changes, heard (`LISTEN`) and republished into this node's
//! (`Store::queue_changes`), so a staff console on any node is pushed every change of the
//! cluster. One thread with a connection of its own (a listening connection cannot be
//! lent: its `LISTEN` belongs to its session); the decisions are in `notice`.
//!
//! A notice names the change; the record is read back here (the appointment as it is now,
//! at least as new as the change), so a notice stays small. The listening connection, once
//! lost, is made again every [`RETRY`]; notices sent meanwhile are gone (PostgreSQL keeps
//! none for a session that is not there), so every subscriber is then told to read the
//! queue again (`Store::queue_resyncs`).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;

use super::appointments::{ChangedAppointment, QueueChange};
use super::notice::{self, Heard, Notice, Verdict};
use super::{Backend, Store};

/// How long the listener waits for a notice before it looks whether the server stops.
const POLL: Duration = Duration::from_millis(250);
/// How long it waits before making its connection again.
const RETRY: Duration = Duration::from_millis(500);
/// Notices read back in one go at most (a burst beyond waits for the next round).
const BATCH: usize = 256;
/// How long a node starting waits for its listening connection before it goes on.
const FIRST_LISTEN: Duration = Duration::from_secs(5);

impl Store {
    /// Announces this node's queue changes to the other nodes of its cluster (in each
    /// change's commit) and republishes theirs here, until `shutdown`. Only a PostgreSQL
    /// store shares (records in SQLite are one node's): returns whether this one does.
    /// Blocks until it listens (at most [`FIRST_LISTEN`]; it goes on trying after), so the
    /// node hears every change committed after its start: call it off the runtime's threads.
    pub fn share_queue_changes(self: &Arc<Self>, shutdown: tokio::sync::watch::Receiver<bool>) -> bool {
        let Backend::Postgres(pool) = &self.backend else {
            return false;
        };
        let target = pool.target().clone();
        let store = Arc::downgrade(self);
        let origin = self.shared.origin.clone();
        let (up_tx, up) = std::sync::mpsc::sync_channel(1);
        let started = std::thread::Builder::new()
            .name("gatehouse-listen".into())
            .spawn(move || listen(&target, &store, origin, &shutdown, up_tx));
        if started.is_err() {
            tracing::error!("no thread for the other nodes' queue changes");
            return false;
        }
        self.shared.on.store(true, Ordering::Relaxed);
        if up.recv_timeout(FIRST_LISTEN).is_err() {
            tracing::warn!("not listening for the other nodes' queue changes yet; going on trying");
        }
        true
    }
}

fn stopping(shutdown: &tokio::sync::watch::Receiver<bool>) -> bool {
    *shutdown.borrow() || shutdown.has_changed().is_err()
}

fn listen(
    target: &super::pg_tls::Target,
    store: &Weak<Store>,
    origin: String,
    shutdown: &tokio::sync::watch::Receiver<bool>,
    up: std::sync::mpsc::SyncSender<()>,
) {
    let mut heard = Heard::new(origin);
    let mut lost = false;
    while !stopping(shutdown) {
        let mut client = match target.connect().and_then(|mut c| {
            c.batch_execute(&format!("LISTEN {}", notice::CHANNEL))?;
            Ok(c)
        }) {
            Ok(c) => c,
            Err(e) => {
                if !lost {
                    tracing::warn!(error = %e, "cannot listen for the other nodes' queue changes; retrying");
                    lost = true;
                }
                std::thread::sleep(RETRY);
                continue;
            }
        };
        let _ = up.try_send(());
        if lost {
            // Whatever was announced meanwhile was not heard: the subscribers read it all again.
            tracing::info!("listening for the other nodes' queue changes again");
            let Some(s) = store.upgrade() else { return };
            s.shared.resyncs.send_modify(|n| *n += 1);
            lost = false;
        }
        while !stopping(shutdown) {
            let mut payloads = Vec::new();
            let mut failed = None;
            {
                let mut n = client.notifications();
                match n.timeout_iter(POLL).next() {
                    Ok(Some(x)) => payloads.push(x.payload().to_owned()),
                    Ok(None) => {}
                    Err(e) => failed = Some(e),
                }
                if failed.is_none() && !payloads.is_empty() {
                    // Whatever else is here already joins this round.
                    let mut rest = n.iter();
                    while payloads.len() < BATCH {
                        match rest.next() {
                            Ok(Some(x)) => payloads.push(x.payload().to_owned()),
                            Ok(None) => break,
                            Err(e) => {
                                failed = Some(e);
                                break;
                            }
                        }
                    }
                }
            }
            let Some(s) = store.upgrade() else { return };
            republish(&s, &mut heard, &payloads);
            if failed.is_some() || client.is_closed() {
                tracing::warn!(error = ?failed.map(|e| e.to_string()), "the listening connection to PostgreSQL was lost");
                lost = true;
                break;
            }
        }
    }
}

/// The other nodes' changes among `payloads`, read back and published here.
fn republish(store: &Store, heard: &mut Heard, payloads: &[String]) {
    let mut fresh = Vec::new();
    for p in payloads {
        match Notice::parse(p) {
            Ok(n) => match heard.hear(&n) {
                Verdict::New => fresh.push(n),
                Verdict::Own | Verdict::Duplicate => {}
                Verdict::TooLate => {
                    tracing::warn!(origin = %n.origin, seq = n.seq, "a queue notice too late to place; dropped")
                }
            },
            Err(e) => tracing::debug!(error = %e, "a queue notice unreadable; ignored"),
        }
    }
    for n in notice::coalesce(fresh) {
        let appointment = match n.appointment_id.as_deref().map(|id| store.appointment(id)).transpose() {
            Ok(a) => a.flatten().map(|record| ChangedAppointment {
                record,
                transitions: n.transitions,
            }),
            Err(e) => {
                // The meeting's row is still worth showing; its appointment's comes with the next change.
                tracing::warn!(error = %e.message, "another node's appointment could not be read back");
                None
            }
        };
        store.published(vec![QueueChange {
            meeting_id: n.meeting_id,
            appointment,
        }]);
    }
}
