//! The queue of server messages to one signaling connection, bounded.
//!
//! The meeting task and the media plane write to a participant's [`Outbox`]
//! without waiting (they serve everyone in the meeting, and one client that
//! stops reading its socket must not stall them or grow memory without bound);
//! the connection's writer task drains it into the WebSocket.
//!
//! **When it is full** (a client has let [`OUTBOX_CAPACITY`] messages pile
//! up), the message is not queued and the connection is closed with WebSocket
//! close code 1008 (policy violation) and the reason `too slow: outbox full`.
//! For the meeting that is a dropped connection like any other: a participant
//! in the call keeps a held seat and can rejoin with its token.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use gatehouse_signaling::protocol::ServerMessage;
use tokio::sync::{Notify, mpsc};

/// Messages queued for one connection before it counts as too slow.
pub const OUTBOX_CAPACITY: usize = 256;

/// The sending side; cheap to clone.
#[derive(Clone, Debug)]
pub struct Outbox {
    tx: mpsc::Sender<ServerMessage>,
    overflow: Arc<Overflow>,
}

#[derive(Debug, Default)]
struct Overflow {
    happened: AtomicBool,
    notify: Notify,
}

/// The receiving side, owned by the connection's writer.
#[derive(Debug)]
pub struct OutboxReceiver {
    rx: mpsc::Receiver<ServerMessage>,
    overflow: Arc<Overflow>,
}

/// What the writer gets next.
#[derive(Debug, PartialEq)]
pub enum Next {
    Message(ServerMessage),
    /// The outbox overflowed: close the connection.
    Overflowed,
    /// Every sender is gone and everything queued was taken.
    Closed,
}

/// A new outbox of [`OUTBOX_CAPACITY`].
pub fn outbox() -> (Outbox, OutboxReceiver) {
    with_capacity(OUTBOX_CAPACITY)
}

/// A new outbox of the given capacity (tests use small ones).
pub fn with_capacity(capacity: usize) -> (Outbox, OutboxReceiver) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let overflow = Arc::new(Overflow::default());
    (
        Outbox {
            tx,
            overflow: overflow.clone(),
        },
        OutboxReceiver { rx, overflow },
    )
}

impl Outbox {
    /// Queues a message without waiting. `false` if it was not queued: the
    /// connection is gone (nothing to do, the meeting hears of it separately)
    /// or too slow (it is closed, see the module documentation).
    pub fn send(&self, message: ServerMessage) -> bool {
        match self.tx.try_send(message) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Closed(_)) => false,
            Err(mpsc::error::TrySendError::Full(_)) => {
                if !self.overflow.happened.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        capacity = self.tx.max_capacity(),
                        "signaling client too slow: outbox full, closing"
                    );
                    self.overflow.notify.notify_one();
                }
                false
            }
        }
    }
}

impl OutboxReceiver {
    /// The next message, or why there is none. An overflow is reported as soon
    /// as it happens, ahead of what is still queued.
    pub async fn next(&mut self) -> Next {
        if self.overflow.happened.load(Ordering::Relaxed) {
            return Next::Overflowed;
        }
        tokio::select! {
            biased;
            () = self.overflow.notify.notified() => Next::Overflowed,
            message = self.rx.recv() => message.map_or(Next::Closed, Next::Message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(n: u32) -> ServerMessage {
        ServerMessage::Pong { nonce: u64::from(n) }
    }

    #[tokio::test]
    async fn messages_arrive_in_order_then_closed() {
        let (tx, mut rx) = with_capacity(4);
        assert!(tx.send(msg(1)));
        assert!(tx.send(msg(2)));
        drop(tx);
        assert_eq!(rx.next().await, Next::Message(msg(1)));
        assert_eq!(rx.next().await, Next::Message(msg(2)));
        assert_eq!(rx.next().await, Next::Closed);
    }

    #[tokio::test]
    async fn a_full_outbox_refuses_and_reports_overflow_once_and_for_good() {
        let (tx, mut rx) = with_capacity(2);
        assert!(tx.send(msg(1)));
        assert!(tx.send(msg(2)));
        assert!(!tx.send(msg(3)), "full");
        assert!(!tx.clone().send(msg(4)), "still full, from a clone too");
        assert_eq!(rx.next().await, Next::Overflowed);
        assert_eq!(
            rx.next().await,
            Next::Overflowed,
            "the connection is to be closed, not drained"
        );
    }

    #[tokio::test]
    async fn a_gone_connection_refuses_quietly() {
        let (tx, rx) = with_capacity(2);
        drop(rx);
        assert!(!tx.send(msg(1)));
        assert!(!tx.overflow.happened.load(Ordering::Relaxed));
    }
}
