//! ICE over TCP (RFC 6544) for guests whose networks block UDP: one listening
//! port for the whole media plane, every connection advertising a passive TCP
//! host candidate on it, packets framed as RFC 4571 says (a 16-bit big-endian
//! length, then the packet).
//!
//! One acceptor thread owns the listener. An accepted connection must send a
//! STUN Binding request as its first frame within [`FIRST_FRAME_WITHIN`]; its
//! USERNAME names our ufrag, the [`Directory`] says which shard owns that
//! ufrag, and the socket is handed to that shard ([`ShardTcp::Accepted`]).
//! Anything else is closed unread beyond that frame. From then on the shard
//! owns the socket: a reader task turns frames into [`ShardTcp::Frame`]s on the
//! shard's own queue, and a writer task sends what the shard queues for it
//! ([`Link::send`]), dropping (and counting) when the link is too slow rather
//! than stalling the shard. The shard treats a frame like a datagram whose
//! source is the link: ICE, DTLS and SRTP run unchanged on top.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::AbortHandle;

use super::demux;

/// An accepted connection that has not sent its first frame by then is closed.
pub const FIRST_FRAME_WITHIN: Duration = Duration::from_secs(10);

/// Accepted connections waiting for their first frame at once; more are closed
/// at once (a flood of idle connections cannot hold the acceptor's memory).
const PENDING_LIMIT: usize = 256;

/// Frames queued toward one client before further ones are dropped: a TCP link
/// that cannot keep up loses packets, as a congested UDP path would.
const LINK_QUEUE: usize = 512;

/// Frames queued from all of a shard's links before readers wait (TCP
/// backpressure toward those clients).
pub const SHARD_TCP_QUEUE: usize = 1024;

/// A link's id, unique within its shard.
pub type LinkId = u64;

/// What reaches a shard from the TCP side.
pub enum ShardTcp {
    /// A connection whose first frame (`first`) names one of this shard's ufrags.
    Accepted {
        stream: std::net::TcpStream,
        peer: SocketAddr,
        first: BytesMut,
    },
    /// A frame read from a link.
    Frame { link: LinkId, data: BytesMut },
    /// A link's reader ended (the client closed it, or it broke).
    Closed { link: LinkId },
}

/// Which shard owns which ufrag: written by the shards as connections come and
/// go, read by the acceptor once per accepted connection.
#[derive(Clone, Default)]
pub struct Directory(Arc<Mutex<HashMap<String, usize>>>);

impl Directory {
    pub fn insert(&self, ufrag: &str, shard: usize) {
        self.lock().insert(ufrag.to_owned(), shard);
    }

    pub fn remove(&self, ufrag: &str) {
        self.lock().remove(ufrag);
    }

    pub fn shard_of(&self, ufrag: &str) -> Option<usize> {
        self.lock().get(ufrag).copied()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The ufrag a first frame names, if it is a STUN Binding request with a USERNAME.
pub fn first_frame_ufrag(frame: &[u8]) -> Option<&str> {
    demux::binding_request(frame).and_then(|request| demux::local_ufrag(request.username))
}

/// One RFC 4571 frame: the length, then the packet. `None` for a packet too
/// long to frame (never the case for what fits a UDP datagram of ours).
pub fn frame(packet: &[u8]) -> Option<Bytes> {
    let len = u16::try_from(packet.len()).ok()?;
    let mut out = BytesMut::with_capacity(2 + packet.len());
    out.put_u16(len);
    out.extend_from_slice(packet);
    Some(out.freeze())
}

/// Reads one frame. `Ok(None)` at a clean end of stream between frames.
pub async fn read_frame<R: AsyncReadExt + Unpin>(reader: &mut R) -> std::io::Result<Option<BytesMut>> {
    let mut len = [0u8; 2];
    match reader.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = usize::from(u16::from_be_bytes(len));
    let mut data = BytesMut::zeroed(len);
    reader.read_exact(&mut data).await?;
    Ok(Some(data))
}

/// Serves the listener until every shard has stopped (their queues closed).
/// Runs on a thread of its own.
pub async fn accept_loop(listener: TcpListener, directory: Directory, shards: Vec<mpsc::Sender<ShardTcp>>) {
    let pending = Arc::new(Semaphore::new(PENDING_LIMIT));
    let all_stopped = {
        let shards = shards.clone();
        async move {
            for shard in &shards {
                shard.closed().await;
            }
        }
    };
    tokio::pin!(all_stopped);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: the next accept may work.
                    tracing::debug!("media TCP accept: {e}");
                    continue;
                }
            },
            () = &mut all_stopped => return,
        };
        let Ok(permit) = pending.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "media TCP: too many connections waiting for a first frame; closed");
            continue;
        };
        let (directory, shards) = (directory.clone(), shards.clone());
        tokio::spawn(async move {
            let _permit = permit;
            hand_off(stream, peer, &directory, &shards).await;
        });
    }
}

/// Reads the first frame and gives the connection to the shard it names.
async fn hand_off(mut stream: TcpStream, peer: SocketAddr, directory: &Directory, shards: &[mpsc::Sender<ShardTcp>]) {
    let first = match tokio::time::timeout(FIRST_FRAME_WITHIN, read_frame(&mut stream)).await {
        Ok(Ok(Some(first))) => first,
        Ok(Ok(None)) | Ok(Err(_)) => return,
        Err(_) => {
            tracing::debug!(%peer, "media TCP: no first frame in time; closed");
            return;
        }
    };
    let Some(shard) = first_frame_ufrag(&first).and_then(|ufrag| directory.shard_of(ufrag)) else {
        tracing::debug!(%peer, "media TCP: first frame is not a check for a known connection; closed");
        return;
    };
    let Some(queue) = shards.get(shard) else { return };
    // Exactly one frame was read (no buffering), so the stream is at a frame boundary.
    let Ok(stream) = stream.into_std() else { return };
    if queue.try_send(ShardTcp::Accepted { stream, peer, first }).is_err() {
        tracing::debug!(%peer, shard, "media TCP: shard busy or stopped; closed");
    }
}

/// A shard's end of one TCP connection.
pub struct Link {
    /// The connection it belongs to, fixed by its first frame.
    pub conn: u64,
    pub peer: SocketAddr,
    tx: mpsc::Sender<Bytes>,
    reader: AbortHandle,
    writer: AbortHandle,
}

impl Link {
    /// Takes over an accepted stream on the current (shard) runtime: frames read
    /// go to `events` as [`ShardTcp::Frame`], then one [`ShardTcp::Closed`].
    pub fn start(
        id: LinkId,
        conn: u64,
        stream: std::net::TcpStream,
        peer: SocketAddr,
        events: mpsc::Sender<ShardTcp>,
    ) -> std::io::Result<Link> {
        let stream = TcpStream::from_std(stream)?;
        // Media is latency-bound: never hold a packet back to fill a segment.
        stream.set_nodelay(true)?;
        let (mut read, mut write) = stream.into_split();
        let reader = tokio::spawn(async move {
            while let Ok(Some(data)) = read_frame(&mut read).await {
                if events.send(ShardTcp::Frame { link: id, data }).await.is_err() {
                    return;
                }
            }
            let _ = events.send(ShardTcp::Closed { link: id }).await;
        })
        .abort_handle();
        let (tx, mut rx) = mpsc::channel::<Bytes>(LINK_QUEUE);
        let writer = tokio::spawn(async move {
            while let Some(frame) = rx.recv().await {
                if write.write_all(&frame).await.is_err() {
                    return;
                }
            }
            let _ = write.shutdown().await;
        })
        .abort_handle();
        Ok(Link {
            conn,
            peer,
            tx,
            reader,
            writer,
        })
    }

    /// Queues one packet toward the client. False if it was dropped (queue full,
    /// link closed, or too long to frame).
    pub fn send(&self, packet: &[u8]) -> bool {
        frame(packet).is_some_and(|framed| self.tx.try_send(framed).is_ok())
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_a_big_endian_length() {
        assert_eq!(&frame(b"abc").unwrap()[..], &[0, 3, b'a', b'b', b'c']);
        assert_eq!(&frame(b"").unwrap()[..], &[0, 0]);
        assert_eq!(frame(&vec![0; 65_535]).unwrap().len(), 65_537);
        assert!(frame(&vec![0; 65_536]).is_none());
    }

    #[tokio::test]
    async fn frames_are_read_back_whole_and_a_clean_end_is_none() {
        let mut wire = Vec::new();
        for packet in [&b"first"[..], b"", b"third packet"] {
            wire.extend_from_slice(&frame(packet).unwrap());
        }
        let mut reader = &wire[..];
        assert_eq!(&read_frame(&mut reader).await.unwrap().unwrap()[..], b"first");
        assert_eq!(&read_frame(&mut reader).await.unwrap().unwrap()[..], b"");
        assert_eq!(&read_frame(&mut reader).await.unwrap().unwrap()[..], b"third packet");
        assert!(read_frame(&mut reader).await.unwrap().is_none());
        // A frame cut short is an error, not a short packet.
        let mut cut = &[0u8, 9, 1, 2][..];
        assert!(read_frame(&mut cut).await.is_err());
    }

    #[test]
    fn only_a_binding_request_with_a_username_names_a_shard() {
        let directory = Directory::default();
        directory.insert("ourufrag", 3);
        let mut check = vec![0x00, 0x01, 0x00, 0x14, 0x21, 0x12, 0xA4, 0x42];
        check.extend_from_slice(&[7; 12]);
        check.extend_from_slice(&[0x00, 0x06, 0x00, 0x0e]);
        check.extend_from_slice(b"ourufrag:their\0\0");
        let ufrag = first_frame_ufrag(&check).expect("a check");
        assert_eq!(directory.shard_of(ufrag), Some(3));
        assert!(first_frame_ufrag(b"\x16\xfe\xfd not stun").is_none());
        assert!(first_frame_ufrag(&check[..24]).is_none(), "truncated");
        directory.remove("ourufrag");
        assert_eq!(directory.shard_of("ourufrag"), None);
    }
}
