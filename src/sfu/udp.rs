//! Batched I/O on a shard's media socket: many datagrams per system call both ways.
//!
//! **Receive**: `quinn-udp`'s `recvmmsg` with GRO on (Linux): one call fills up to
//! [`RECV_MSGS`] buffers, each possibly holding several datagrams of one sender
//! (`stride` apart). [`UdpIo::next_datagram`] hands them out one at a time, each copied
//! into a slice of a reused pool (no allocation per datagram while `rtc` drops what it
//! was given, which it does within the turn).
//!
//! **Send**: datagrams are queued during a turn ([`UdpIo::queue`], owning the buffer
//! `rtc` produced, no copy) and sent at its end ([`UdpIo::flush`]): grouped by
//! destination ([`plan`], pure), each run of equal-size datagrams to one destination
//! (a video frame to one subscriber) becomes one GSO message (`UDP_SEGMENT`, the last
//! segment may be shorter), and all messages of the turn go out in one `sendmmsg`.
//! `quinn-udp` sends one `sendmsg` per transmit and has no `sendmmsg`, so the send side
//! calls `libc` directly and uses `quinn-udp` only to learn whether the kernel does GSO.
//! A full socket buffer (`EAGAIN`) keeps the unsent rest queued (bounded by
//! [`MAX_QUEUED`]; beyond it new datagrams are dropped and counted) for the next turn
//! in which the socket is writable; a kernel or device that refuses GSO turns it off
//! for this socket and the same messages go out unsegmented.
//!
//! **Readiness**: the runtime watches the socket for reading only. A UDP socket reports
//! room to write after every datagram it sent, so a socket registered for both woke the
//! shard's runtime once more after each turn's `sendmmsg` (an `epoll_wait` that found only
//! `EPOLLOUT`) and queued the socket on the ready list for each datagram sent. Write
//! readiness is watched only while a flush found the buffer full, through a second
//! registration of the same socket (a duplicate descriptor) that lasts until it drains.
//!
//! **Local addresses** ([`UdpIo::with_local_addresses`], the lean load tester's client side):
//! one socket bound to a wildcard address stands for many local addresses (all of
//! 127.0.0.0/8 on loopback): each received datagram tells which one it came to
//! ([`UdpIo::last_destination`], from `IP_PKTINFO`) and each queued one may say which one it
//! goes from ([`UdpIo::queue_from`], an `IP_PKTINFO` control message). The server's model of
//! many connections on one socket then holds for clients too, against a server that tells
//! connections apart by their address.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};

use bytes::BytesMut;
use quinn_udp::{RecvMeta, UdpSockRef, UdpSocketState};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::net::UdpSocket;

/// Receive buffers per `recvmmsg` (quinn-udp's batch size on Linux).
pub const RECV_MSGS: usize = quinn_udp::BATCH_SIZE;
/// One receive buffer: a GRO buffer holds up to 64 datagrams of one sender, at most 64 KiB.
const RECV_BUF_GRO: usize = 1 << 16;
/// One receive buffer without GRO: WebRTC keeps datagrams under the path MTU.
const RECV_BUF_PLAIN: usize = 2048;
/// The pool datagrams are copied into for `rtc`; reclaimed whole once they are dropped.
const HANDOFF_POOL: usize = 64 << 10;
/// A turn that queued this many datagrams sends them at once (bounds the memory held and
/// the delay of the first of them).
pub const FLUSH_AT: usize = 1024;
/// Datagrams kept while the socket buffer is full; past this, new ones are dropped.
pub const MAX_QUEUED: usize = 4096;
/// Bytes in one GSO message: the UDP length field (65 535) less headers, with room to spare.
const MAX_GSO_BYTES: usize = 65_000;
/// `sendmmsg` takes at most `UIO_MAXIOV` messages per call.
const MAX_MSGS_PER_CALL: usize = 1024;

/// Registers a socket with the current runtime for `interest` only.
fn watch(socket: std::net::UdpSocket, interest: Interest) -> io::Result<AsyncFd<std::net::UdpSocket>> {
    // SAFETY: the `AsyncFd` owns the socket, so its descriptor stays open and the same
    // for as long as the registration lives.
    unsafe { AsyncFd::register_with_interest(socket, interest) }.map_err(io::Error::from)
}

/// One datagram waiting to be sent.
struct Pending {
    to: SocketAddr,
    /// The local address it goes from (`None`: the one routing picks).
    from: Option<IpAddr>,
    data: BytesMut,
}

/// One message of a flush: `segments` consecutive entries of the plan's order, all to one
/// destination; with more than one, every segment but the last is `segment` bytes long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message {
    /// Index in the order of the first datagram.
    pub first: usize,
    pub segments: usize,
    /// The GSO segment size (the first datagram's length).
    pub segment: usize,
}

/// Groups `n` queued datagrams (`key(i)` is the destination and length of the `i`-th, in
/// queue order; a destination is anything ordered, e.g. an address or a pair of local and
/// remote addresses) into messages: `order` becomes the queue indices sorted by destination
/// (queue order kept within one destination), and `messages` the runs of that order that
/// may go out as one GSO message: same destination, equal lengths except a shorter last
/// one, at most `max_segments` and [`MAX_GSO_BYTES`]. With `max_segments` 1 every datagram
/// is its own message. Allocates nothing once `order` and `messages` have grown.
pub fn plan<K: Ord + Copy>(
    n: usize,
    key: impl Fn(usize) -> (K, usize),
    max_segments: usize,
    order: &mut Vec<u32>,
    messages: &mut Vec<Message>,
) {
    order.clear();
    messages.clear();
    order.extend(0..u32::try_from(n).unwrap_or(u32::MAX));
    // Unstable sort with the queue index in the key: stable in effect, and no buffer.
    order.sort_unstable_by_key(|&i| (key(i as usize).0, i));
    // The message being built: its destination, the last segment's length, its bytes.
    let mut current: Option<(K, Message, usize, usize)> = None;
    for (at, &i) in order.iter().enumerate() {
        let (to, len) = key(i as usize);
        if let Some((cur_to, message, last, bytes)) = current.as_mut() {
            let fits = *cur_to == to
                && message.segments < max_segments
                && *last == message.segment
                && len <= message.segment
                && *bytes + len <= MAX_GSO_BYTES;
            if fits {
                message.segments += 1;
                *last = len;
                *bytes += len;
                continue;
            }
            messages.push(*message);
        }
        let message = Message {
            first: at,
            segments: 1,
            segment: len,
        };
        current = Some((to, message, len, len));
    }
    if let Some((_, message, _, _)) = current {
        messages.push(message);
    }
}

/// What one flush did (for counters and tests).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    /// Datagrams handed to the kernel.
    pub sent: usize,
    /// Datagrams the kernel refused for good (counted as dropped by the caller).
    pub failed: usize,
    /// Whether datagrams stay queued because the socket buffer is full.
    pub blocked: bool,
}

/// Totals over the socket's life, for tests and the debug view.
#[derive(Debug, Default, Clone, Copy)]
pub struct IoTotals {
    pub datagrams_sent: u64,
    pub send_calls: u64,
    pub gso_messages: u64,
    pub datagrams_received: u64,
    pub recv_calls: u64,
}

/// A shard's media socket with batched receive and send.
pub struct UdpIo {
    /// Registered with the runtime for reading only (see the module documentation).
    socket: AsyncFd<std::net::UdpSocket>,
    /// Write readiness, registered only while [`blocked`](Self::blocked).
    writer: Option<AsyncFd<std::net::UdpSocket>>,
    state: UdpSocketState,
    /// GSO segments per message (1: off, the kernel or device cannot).
    max_segments: usize,
    queue: Vec<Pending>,
    /// The socket buffer was full at the last flush: wait for writability.
    blocked: bool,
    /// Scratch of a flush, reused.
    order: Vec<u32>,
    messages: Vec<Message>,
    /// Which queued datagrams stay after a partial flush.
    keep: Vec<bool>,
    #[cfg(target_os = "linux")]
    scratch: sys::Scratch,
    /// Receive buffers (one allocation) and what the last `recvmmsg` put in them.
    recv_buf: Vec<u8>,
    recv_slot: usize,
    recv_meta: [RecvMeta; RECV_MSGS],
    /// Filled buffers of the last receive call, and the cursor over their datagrams.
    recv_filled: usize,
    recv_at: (usize, usize),
    handoff: BytesMut,
    totals: IoTotals,
    /// Bench hook: a flush counts the queued datagrams as sent and drops them, so a bench
    /// can measure the per-packet path up to the system call.
    discard: bool,
    /// Received datagrams carry their destination address (see the module documentation).
    local_addresses: bool,
}

impl UdpIo {
    /// Takes over a bound, non-blocking socket (registered with the current runtime).
    pub fn new(socket: UdpSocket) -> io::Result<Self> {
        Self::build(socket, false)
    }

    /// Like [`new`](Self::new) for a socket bound to a wildcard address that stands for many
    /// local addresses: received datagrams say which one they came to
    /// ([`last_destination`](Self::last_destination)).
    pub fn with_local_addresses(socket: UdpSocket) -> io::Result<Self> {
        Self::build(socket, true)
    }

    fn build(socket: UdpSocket, local_addresses: bool) -> io::Result<Self> {
        let socket = watch(socket.into_std()?, Interest::READABLE)?;
        let state = UdpSocketState::new(UdpSockRef::from(&socket))?;
        #[cfg(target_os = "linux")]
        if !local_addresses {
            sys::no_receive_metadata(&socket);
        }
        let max_segments = state.max_gso_segments().max(1);
        let recv_slot = if state.gro_segments() > 1 {
            RECV_BUF_GRO
        } else {
            RECV_BUF_PLAIN
        };
        Ok(Self {
            socket,
            writer: None,
            state,
            max_segments,
            queue: Vec::new(),
            blocked: false,
            order: Vec::new(),
            messages: Vec::new(),
            keep: Vec::new(),
            #[cfg(target_os = "linux")]
            scratch: sys::Scratch::default(),
            recv_buf: vec![0; recv_slot * RECV_MSGS],
            recv_slot,
            recv_meta: [RecvMeta::default(); RECV_MSGS],
            recv_filled: 0,
            recv_at: (0, 0),
            handoff: BytesMut::with_capacity(HANDOFF_POOL),
            totals: IoTotals::default(),
            discard: false,
            local_addresses,
        })
    }

    pub fn socket(&self) -> &std::net::UdpSocket {
        self.socket.get_ref()
    }

    /// Waits until the socket may hold datagrams (the readiness stays set until a
    /// [`receive`](Self::receive) finds the socket drained).
    pub async fn readable(&self) -> io::Result<()> {
        self.socket.readable().await.map(drop)
    }

    /// While [`blocked`](Self::blocked): waits until the socket buffer has room again.
    /// Otherwise never ready.
    pub async fn writable(&self) -> io::Result<()> {
        match &self.writer {
            Some(writer) => writer.writable().await.map(drop),
            None => std::future::pending().await,
        }
    }

    /// Blocked or not after a flush: write readiness is watched exactly while blocked.
    fn set_blocked(&mut self, blocked: bool) {
        self.blocked = blocked;
        if !blocked {
            self.writer = None;
        } else if self.writer.is_none() {
            // A fresh registration reports only what happens from now on (or room that
            // appeared since the `EAGAIN`, which is then real).
            match self
                .socket
                .get_ref()
                .try_clone()
                .and_then(|dup| watch(dup, Interest::WRITABLE))
            {
                Ok(writer) => self.writer = Some(writer),
                // Flushes are tried every turn regardless, so this only delays them.
                Err(e) => tracing::debug!("media socket: cannot watch for room to write: {e}"),
            }
        }
    }

    /// GSO segments per message in use (1 when the kernel cannot segment).
    pub fn max_segments(&self) -> usize {
        self.max_segments
    }

    pub fn totals(&self) -> IoTotals {
        self.totals
    }

    /// Bench hook: whether flushes drop the queued datagrams instead of sending them.
    pub fn set_discard(&mut self, discard: bool) {
        self.discard = discard;
    }

    /// Datagrams waiting to be sent.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Whether the socket buffer was full at the last flush (datagrams wait for writability).
    pub fn blocked(&self) -> bool {
        self.blocked
    }

    /// Queues a datagram for the end of the turn. `false` when it was dropped: the socket
    /// buffer is full and [`MAX_QUEUED`] datagrams already wait. A turn that has queued
    /// [`FLUSH_AT`] sends them before taking more.
    #[must_use]
    pub fn queue(&mut self, to: SocketAddr, data: BytesMut) -> (bool, Flushed) {
        self.queue_from(None, to, data)
    }

    /// [`queue`](Self::queue) from a given local address (`IP_PKTINFO`; see the module
    /// documentation): the socket must be bound to a wildcard address, or to `from` itself.
    #[must_use]
    pub fn queue_from(&mut self, from: Option<IpAddr>, to: SocketAddr, data: BytesMut) -> (bool, Flushed) {
        let mut flushed = Flushed::default();
        if self.queue.len() >= FLUSH_AT && !self.blocked {
            flushed = self.flush();
        }
        if self.queue.len() >= MAX_QUEUED {
            return (false, flushed);
        }
        self.queue.push(Pending { to, from, data });
        (true, flushed)
    }

    /// Sends what is queued, as few system calls as the plan allows. What the socket
    /// buffer cannot take stays queued (see [`blocked`](Self::blocked)).
    pub fn flush(&mut self) -> Flushed {
        let mut flushed = Flushed::default();
        if self.queue.is_empty() {
            self.set_blocked(false);
            return flushed;
        }
        if self.discard {
            flushed.sent = self.queue.len();
            self.totals.datagrams_sent += flushed.sent as u64;
            self.queue.clear();
            self.set_blocked(false);
            return flushed;
        }
        loop {
            let queue = &self.queue;
            plan(
                queue.len(),
                |i| ((queue[i].to, queue[i].from), queue[i].data.len()),
                self.max_segments,
                &mut self.order,
                &mut self.messages,
            );
            let outcome = self.send_planned();
            flushed.sent += outcome.sent_datagrams;
            flushed.failed += outcome.failed_datagrams;
            self.totals.datagrams_sent += outcome.sent_datagrams as u64;
            self.totals.send_calls += outcome.calls as u64;
            self.totals.gso_messages += outcome.gso_messages as u64;
            // Drop what went out or failed for good; keep the rest in queue order.
            let done_upto = outcome.done_messages;
            if done_upto == self.messages.len() {
                self.queue.clear();
                self.set_blocked(false);
                break;
            }
            let keep_from = self.messages[done_upto].first;
            self.keep.clear();
            self.keep.resize(self.queue.len(), false);
            for &i in &self.order[keep_from..] {
                self.keep[i as usize] = true;
            }
            let mut k = self.keep.iter();
            self.queue.retain(|_| *k.next().expect("one flag per datagram"));
            if outcome.gso_refused {
                // The same datagrams again, unsegmented.
                self.max_segments = 1;
                tracing::info!("UDP GSO refused by the kernel or device: sending unsegmented");
                continue;
            }
            self.set_blocked(true);
            flushed.blocked = true;
            break;
        }
        flushed
    }

    /// Sends the planned messages in order until done, blocked or GSO is refused.
    #[cfg(target_os = "linux")]
    fn send_planned(&mut self) -> Outcome {
        let mut outcome = Outcome::default();
        self.scratch.send(
            self.socket.get_ref(),
            &self.queue,
            &self.order,
            &self.messages,
            &mut outcome,
        );
        if outcome.would_block {
            self.clear_write_readiness();
        }
        outcome
    }

    /// After a real `EAGAIN`: the runtime's write readiness is cleared so that `writable()`
    /// waits for the kernel's next report of room (sends are tried whatever the runtime
    /// believes, since it learns of writability only once its driver has run).
    fn clear_write_readiness(&self) {
        if let Some(writer) = &self.writer {
            let _ = writer.try_io(Interest::WRITABLE, |_| Err::<(), _>(io::ErrorKind::WouldBlock.into()));
        }
    }

    /// Without `sendmmsg`: one `quinn-udp` send per datagram (no GSO is planned).
    #[cfg(not(target_os = "linux"))]
    fn send_planned(&mut self) -> Outcome {
        let mut outcome = Outcome::default();
        for (done, message) in self.messages.iter().enumerate() {
            let p = &self.queue[self.order[message.first] as usize];
            let transmit = quinn_udp::Transmit {
                destination: p.to,
                ecn: None,
                contents: &p.data,
                segment_size: None,
                src_ip: p.from,
            };
            let sent = self.state.try_send(UdpSockRef::from(self.socket.get_ref()), &transmit);
            outcome.calls += 1;
            match sent {
                Ok(()) => outcome.sent_datagrams += 1,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    outcome.done_messages = done;
                    outcome.would_block = true;
                    self.clear_write_readiness();
                    return outcome;
                }
                Err(e) => {
                    tracing::trace!("send to {}: {e}", p.to);
                    outcome.failed_datagrams += 1;
                }
            }
        }
        outcome.done_messages = self.messages.len();
        outcome
    }

    /// Receives a batch: `Ok(true)` when datagrams are ready for
    /// [`next_datagram`](Self::next_datagram), `Ok(false)` when the socket had none. When
    /// it had fewer than [`RECV_MSGS`] the readiness is cleared, so `readable()` waits
    /// for the next arrival.
    pub fn receive(&mut self) -> io::Result<bool> {
        let (socket, state, slot) = (&self.socket, &self.state, self.recv_slot);
        let mut bufs: [IoSliceMut<'_>; RECV_MSGS] = {
            let mut chunks = self.recv_buf.chunks_mut(slot);
            std::array::from_fn(|_| IoSliceMut::new(chunks.next().expect("RECV_MSGS buffers")))
        };
        let meta = &mut self.recv_meta;
        let mut filled = 0;
        let received = socket.try_io(Interest::READABLE, |socket| {
            filled = state.recv(UdpSockRef::from(socket), &mut bufs, meta)?;
            // Fewer than asked for: the socket is drained. Saying so clears the readiness
            // now, which saves the call that would only return EAGAIN; a datagram arriving
            // meanwhile wakes the loop again (epoll reports every arrival).
            if filled < RECV_MSGS {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(())
        });
        if filled > 0 {
            self.totals.recv_calls += 1;
        }
        self.recv_filled = filled;
        self.recv_at = (0, 0);
        match received {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(filled > 0),
            Err(e) => {
                self.recv_filled = 0;
                Err(e)
            }
        }
    }

    /// Whether the last [`receive`](Self::receive) filled every buffer: the socket may hold
    /// more (a backlog), where a shorter batch means it was drained.
    pub fn received_full(&self) -> bool {
        self.recv_filled == RECV_MSGS
    }

    /// The next datagram of the last [`receive`](Self::receive), copied into a buffer of
    /// its own for `rtc` (from a reused pool).
    pub fn next_datagram(&mut self) -> Option<(SocketAddr, BytesMut)> {
        loop {
            let (msg, offset) = self.recv_at;
            if msg >= self.recv_filled {
                return None;
            }
            let meta = &self.recv_meta[msg];
            let stride = if meta.stride == 0 { meta.len } else { meta.stride };
            if offset >= meta.len || stride == 0 {
                self.recv_at = (msg + 1, 0);
                continue;
            }
            let len = stride.min(meta.len - offset);
            let start = msg * self.recv_slot + offset;
            let data = &self.recv_buf[start..start + len];
            self.recv_at = (msg, offset + len);
            self.handoff.reserve(len);
            self.handoff.extend_from_slice(data);
            self.totals.datagrams_received += 1;
            return Some((meta.addr, self.handoff.split()));
        }
    }

    /// The local address the datagram last returned by [`next_datagram`](Self::next_datagram)
    /// came to, on a socket made [`with_local_addresses`](Self::with_local_addresses).
    pub fn last_destination(&self) -> Option<IpAddr> {
        if !self.local_addresses {
            return None;
        }
        self.recv_meta.get(self.recv_at.0).and_then(|meta| meta.dst_ip)
    }
}

/// What sending the planned messages did.
#[derive(Debug, Default)]
struct Outcome {
    /// Messages (from the first) that are finished: sent or failed for good.
    done_messages: usize,
    sent_datagrams: usize,
    failed_datagrams: usize,
    calls: usize,
    gso_messages: usize,
    would_block: bool,
    /// The kernel refused a segmented message: retry with GSO off.
    gso_refused: bool,
}

#[cfg(target_os = "linux")]
mod sys {
    //! `sendmmsg` with a `UDP_SEGMENT` control message per segmented message.

    use super::{MAX_MSGS_PER_CALL, Message, Outcome, Pending};
    use std::io;
    use std::os::fd::AsRawFd;

    /// Room for a `cmsghdr` with a `u16` (`CMSG_SPACE(2)` is 24 on 64-bit Linux) and one
    /// with an `in_pktinfo` or `in6_pktinfo` (`CMSG_SPACE(20)` is 40).
    #[derive(Clone, Copy)]
    #[repr(C, align(8))]
    struct Control([u8; 64]);

    /// Arrays of one flush, reused (they only grow).
    #[derive(Default)]
    pub struct Scratch {
        iovecs: Vec<libc::iovec>,
        names: Vec<socket2::SockAddr>,
        /// Each message's control messages and their length.
        controls: Vec<(Control, usize)>,
        headers: Vec<libc::mmsghdr>,
    }

    impl Scratch {
        /// Builds the headers for `messages` and sends them with `sendmmsg` until all
        /// are done or the socket would block.
        pub fn send(
            &mut self,
            socket: &impl AsRawFd,
            queue: &[Pending],
            order: &[u32],
            messages: &[Message],
            outcome: &mut Outcome,
        ) {
            self.iovecs.clear();
            self.names.clear();
            self.controls.clear();
            self.headers.clear();
            for message in messages {
                for &i in &order[message.first..message.first + message.segments] {
                    let data = &queue[i as usize].data;
                    self.iovecs.push(libc::iovec {
                        iov_base: data.as_ptr() as *mut libc::c_void,
                        iov_len: data.len(),
                    });
                }
                let first = &queue[order[message.first] as usize];
                self.names.push(socket2::SockAddr::from(first.to));
                let mut control = (Control([0; 64]), 0usize);
                if message.segments > 1 {
                    control.1 = write_segment(&mut control.0, message.segment);
                }
                if let Some(from) = first.from {
                    control.1 += write_source(&mut control.0, control.1, from);
                }
                self.controls.push(control);
            }
            // Pointers are taken once every vector is complete (none moves afterwards).
            let mut iov_at = 0;
            for (k, message) in messages.iter().enumerate() {
                // SAFETY: a zeroed `mmsghdr` is a valid empty header.
                let mut header: libc::mmsghdr = unsafe { std::mem::zeroed() };
                header.msg_hdr.msg_name = self.names[k].as_ptr() as *mut libc::c_void;
                header.msg_hdr.msg_namelen = self.names[k].len();
                header.msg_hdr.msg_iov = self.iovecs[iov_at..].as_mut_ptr();
                header.msg_hdr.msg_iovlen = message.segments as _;
                let (control, len) = &mut self.controls[k];
                if *len > 0 {
                    header.msg_hdr.msg_control = control.0.as_mut_ptr() as *mut libc::c_void;
                    header.msg_hdr.msg_controllen = *len as _;
                }
                iov_at += message.segments;
                self.headers.push(header);
            }
            let mut at = 0;
            while at < self.headers.len() {
                let batch = (self.headers.len() - at).min(MAX_MSGS_PER_CALL);
                // SAFETY: the headers point into `names`, `iovecs` and `controls` (alive and
                // unmoved for this call) and into the queued buffers (borrowed immutably).
                let n = unsafe { libc::sendmmsg(socket.as_raw_fd(), self.headers[at..].as_mut_ptr(), batch as _, 0) };
                outcome.calls += 1;
                if n >= 0 {
                    let n = n as usize;
                    for message in &messages[at..at + n] {
                        outcome.sent_datagrams += message.segments;
                        if message.segments > 1 {
                            outcome.gso_messages += 1;
                        }
                    }
                    at += n;
                    outcome.done_messages = at;
                    continue;
                }
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock => {
                        outcome.would_block = true;
                        return;
                    }
                    _ => {}
                }
                let message = messages[at];
                if message.segments > 1 && matches!(e.raw_os_error(), Some(libc::EIO) | Some(libc::EINVAL)) {
                    // Some devices and kernels refuse segmentation only when asked.
                    outcome.gso_refused = true;
                    return;
                }
                // This message is refused for good (unreachable, too large, ...): skip it.
                tracing::trace!("sendmmsg to {:?}: {e}", self.names[at].as_socket());
                outcome.failed_datagrams += message.segments;
                at += 1;
                outcome.done_messages = at;
            }
        }
    }

    /// `quinn-udp` asks for each datagram's arrival time, destination address and TOS
    /// byte: three control messages per datagram that we do not read. Turned off again
    /// (best effort: a socket that keeps them only costs a little more).
    pub fn no_receive_metadata(socket: &impl AsRawFd) {
        let off: libc::c_int = 0;
        for (level, name) in [
            (libc::SOL_SOCKET, libc::SO_TIMESTAMPNS),
            (libc::IPPROTO_IP, libc::IP_PKTINFO),
            (libc::IPPROTO_IP, libc::IP_RECVTOS),
            (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO),
            (libc::IPPROTO_IPV6, libc::IPV6_RECVTCLASS),
        ] {
            // SAFETY: a plain int option on a socket we own; errors (wrong family) are ignored.
            unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    level,
                    name,
                    &off as *const libc::c_int as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
    }

    /// Writes the `UDP_SEGMENT` control message at the start; returns its space.
    fn write_segment(control: &mut Control, segment: usize) -> usize {
        let segment = u16::try_from(segment).unwrap_or(u16::MAX);
        // SAFETY: `control` is aligned for `cmsghdr` and larger than CMSG_SPACE(2).
        unsafe {
            let header = control.0.as_mut_ptr() as *mut libc::cmsghdr;
            (*header).cmsg_len = libc::CMSG_LEN(2) as _;
            (*header).cmsg_level = libc::SOL_UDP;
            (*header).cmsg_type = libc::UDP_SEGMENT;
            std::ptr::write_unaligned(libc::CMSG_DATA(header) as *mut u16, segment);
            libc::CMSG_SPACE(2) as usize
        }
    }

    /// Writes an `IP_PKTINFO` (or `IPV6_PKTINFO`) control message naming the source address
    /// at byte `at` (after the segment's, if any: both are 8-aligned); returns its space.
    fn write_source(control: &mut Control, at: usize, from: std::net::IpAddr) -> usize {
        // SAFETY: `at` is 0 or CMSG_SPACE(2) = 24, 8-aligned; 24 + CMSG_SPACE(20) = 64 fits.
        unsafe {
            let header = control.0.as_mut_ptr().add(at) as *mut libc::cmsghdr;
            match from {
                std::net::IpAddr::V4(ip) => {
                    let size = std::mem::size_of::<libc::in_pktinfo>() as u32;
                    (*header).cmsg_len = libc::CMSG_LEN(size) as _;
                    (*header).cmsg_level = libc::IPPROTO_IP;
                    (*header).cmsg_type = libc::IP_PKTINFO;
                    let info = libc::in_pktinfo {
                        ipi_ifindex: 0,
                        ipi_spec_dst: libc::in_addr {
                            s_addr: u32::from_ne_bytes(ip.octets()),
                        },
                        ipi_addr: libc::in_addr { s_addr: 0 },
                    };
                    std::ptr::write_unaligned(libc::CMSG_DATA(header) as *mut libc::in_pktinfo, info);
                    libc::CMSG_SPACE(size) as usize
                }
                std::net::IpAddr::V6(ip) => {
                    let size = std::mem::size_of::<libc::in6_pktinfo>() as u32;
                    (*header).cmsg_len = libc::CMSG_LEN(size) as _;
                    (*header).cmsg_level = libc::IPPROTO_IPV6;
                    (*header).cmsg_type = libc::IPV6_PKTINFO;
                    let info = libc::in6_pktinfo {
                        ipi6_addr: libc::in6_addr { s6_addr: ip.octets() },
                        ipi6_ifindex: 0,
                    };
                    std::ptr::write_unaligned(libc::CMSG_DATA(header) as *mut libc::in6_pktinfo, info);
                    libc::CMSG_SPACE(size) as usize
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn planned(datagrams: &[(u16, usize)], max_segments: usize) -> (Vec<u32>, Vec<Message>) {
        let (mut order, mut messages) = (Vec::new(), Vec::new());
        plan(
            datagrams.len(),
            |i| (addr(datagrams[i].0), datagrams[i].1),
            max_segments,
            &mut order,
            &mut messages,
        );
        (order, messages)
    }

    fn msg(first: usize, segments: usize, segment: usize) -> Message {
        Message {
            first,
            segments,
            segment,
        }
    }

    #[test]
    fn a_frame_to_one_destination_is_one_message_with_a_shorter_last_segment() {
        let (order, messages) = planned(&[(1, 1200), (1, 1200), (1, 1200), (1, 700)], 64);
        assert_eq!(order, [0, 1, 2, 3]);
        assert_eq!(messages, [msg(0, 4, 1200)]);
    }

    #[test]
    fn interleaved_destinations_are_regrouped_keeping_each_ones_order() {
        // A publisher's packets fanned out: p0 to 1, 2, 3, then p1 to 1, 2, 3, ...
        let mut datagrams = Vec::new();
        for _ in 0..3 {
            for to in [3, 1, 2] {
                datagrams.push((to, 1000));
            }
        }
        let (order, messages) = planned(&datagrams, 64);
        assert_eq!(
            order,
            [1, 4, 7, 2, 5, 8, 0, 3, 6],
            "by destination, queue order within each"
        );
        assert_eq!(messages, [msg(0, 3, 1000), msg(3, 3, 1000), msg(6, 3, 1000)]);
    }

    #[test]
    fn a_longer_datagram_or_one_after_a_short_one_starts_a_new_message() {
        let (_, messages) = planned(&[(1, 1000), (1, 1100), (1, 1100), (1, 500), (1, 500), (1, 1100)], 64);
        assert_eq!(
            messages,
            [msg(0, 1, 1000), msg(1, 3, 1100), msg(4, 1, 500), msg(5, 1, 1100)]
        );
    }

    #[test]
    fn messages_respect_the_segment_count_and_the_byte_limit() {
        let (_, messages) = planned(&[(1, 100); 10], 4);
        assert_eq!(messages, [msg(0, 4, 100), msg(4, 4, 100), msg(8, 2, 100)]);
        // 1300-byte segments: 50 of them would pass 65 000 bytes.
        let (_, messages) = planned(&[(1, 1300); 60], 64);
        assert_eq!(messages, [msg(0, 50, 1300), msg(50, 10, 1300)]);
        assert!(
            messages.iter().all(|m| m.segments * m.segment <= MAX_GSO_BYTES),
            "under the UDP length limit"
        );
    }

    #[test]
    fn without_gso_every_datagram_is_its_own_message_and_nothing_is_lost() {
        let (order, messages) = planned(&[(2, 10), (1, 20), (2, 30)], 1);
        assert_eq!(order, [1, 0, 2]);
        assert_eq!(messages, [msg(0, 1, 20), msg(1, 1, 10), msg(2, 1, 30)]);
        let (order, messages) = planned(&[], 64);
        assert!(order.is_empty() && messages.is_empty());
    }

    async fn io() -> (UdpIo, SocketAddr) {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let addr = socket.local_addr().expect("addr");
        (UdpIo::new(socket).expect("socket state"), addr)
    }

    fn datagram(tag: u8, seq: u8, len: usize) -> BytesMut {
        let mut data = BytesMut::from(&vec![seq; len][..]);
        data[0] = tag;
        data
    }

    /// Receives until `count` datagrams arrived (each wait bounded).
    async fn receive(io: &mut UdpIo, count: usize) -> Vec<(SocketAddr, Vec<u8>)> {
        let mut got = Vec::new();
        while got.len() < count {
            tokio::time::timeout(std::time::Duration::from_secs(5), io.readable())
                .await
                .expect("datagrams arrive")
                .expect("readable");
            if io.receive().expect("receive") {
                while let Some((from, data)) = io.next_datagram() {
                    got.push((from, data.to_vec()));
                }
            }
        }
        got
    }

    async fn a_turn_goes_out_in_one_call_and_arrives_whole_and_in_order(gso: bool) {
        let (mut server, server_addr) = io().await;
        let (mut a, a_addr) = io().await;
        let (mut b, b_addr) = io().await;
        if !gso {
            server.max_segments = 1;
        }
        // Two frames of three packets (the last shorter) fanned out to A and B, a STUN-sized
        // datagram to B in between.
        let mut sent = 0;
        for seq in 0..6u8 {
            let len = if seq % 3 == 2 { 600 } else { 1100 };
            for (to, tag) in [(a_addr, b'a'), (b_addr, b'b')] {
                assert!(server.queue(to, datagram(tag, seq, len)).0);
                sent += 1;
            }
            if seq == 3 {
                assert!(server.queue(b_addr, datagram(b'b', 99, 80)).0);
                sent += 1;
            }
        }
        assert_eq!(server.queued(), sent);
        let flushed = server.flush();
        assert_eq!(
            flushed,
            Flushed {
                sent,
                failed: 0,
                blocked: false
            }
        );
        assert_eq!(server.queued(), 0);
        let totals = server.totals();
        assert_eq!(totals.send_calls, 1, "one sendmmsg for the turn");
        if gso && server.max_segments() > 1 {
            // A: [1100, 1100, 600] twice; B: [1100, 1100, 600], [1100, 80] (a shorter last
            // segment), [1100, 600].
            assert_eq!(totals.gso_messages, 5);
        } else {
            assert_eq!(totals.gso_messages, 0);
        }

        let got_a = receive(&mut a, 6).await;
        let expected_a: Vec<_> = (0..6u8)
            .map(|seq| {
                (
                    server_addr,
                    datagram(b'a', seq, if seq % 3 == 2 { 600 } else { 1100 }).to_vec(),
                )
            })
            .collect();
        assert_eq!(got_a, expected_a);
        let got_b = receive(&mut b, 7).await;
        let seqs: Vec<u8> = got_b.iter().map(|(_, d)| d[1]).collect();
        assert_eq!(seqs, [0, 1, 2, 3, 99, 4, 5]);
        assert!(got_b.iter().all(|(from, d)| *from == server_addr && d[0] == b'b'));
        assert_eq!(got_b[4].1.len(), 80);
    }

    #[tokio::test]
    async fn a_turn_goes_out_in_one_call_with_gso() {
        a_turn_goes_out_in_one_call_and_arrives_whole_and_in_order(true).await;
    }

    /// One wildcard socket stands for many loopback addresses: each datagram leaves from
    /// the address it was queued from (a frame's run to one destination still one GSO
    /// message) and tells the address it came to.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_socket_with_local_addresses_sends_from_and_receives_at_each() {
        let (mut server, server_addr) = io().await;
        let socket = UdpSocket::bind("0.0.0.0:0").await.expect("bind the wildcard");
        let port = socket.local_addr().expect("addr").port();
        let mut client = UdpIo::with_local_addresses(socket).expect("socket state");
        let ip = |last: u8| IpAddr::from([127, 0, 0, last]);
        for (seq, from) in [(0u8, 5u8), (1, 5), (2, 5), (3, 9)] {
            assert!(
                client
                    .queue_from(Some(ip(from)), server_addr, datagram(from, seq, 900))
                    .0
            );
        }
        assert_eq!(client.flush().sent, 4);
        let mut got = receive(&mut server, 4).await;
        got.sort_by_key(|(_, d)| d[1]);
        let froms: Vec<SocketAddr> = got.iter().map(|(from, _)| *from).collect();
        let five = SocketAddr::new(ip(5), port);
        let nine = SocketAddr::new(ip(9), port);
        assert_eq!(froms, [five, five, five, nine]);
        // Answers to each address arrive on the one socket, each saying where it came to.
        for to in [nine, five] {
            assert!(server.queue(to, datagram(to.ip().to_string().len() as u8, 7, 300)).0);
        }
        assert_eq!(server.flush().sent, 2);
        let mut destinations = Vec::new();
        while destinations.len() < 2 {
            tokio::time::timeout(std::time::Duration::from_secs(5), client.readable())
                .await
                .expect("answers arrive")
                .expect("readable");
            if client.receive().expect("receive") {
                while let Some((from, _)) = client.next_datagram() {
                    assert_eq!(from, server_addr);
                    destinations.push(client.last_destination().expect("IP_PKTINFO says where"));
                }
            }
        }
        destinations.sort();
        assert_eq!(destinations, [ip(5), ip(9)]);
        assert_eq!(server.last_destination(), None, "only asked for with local addresses");
    }

    #[tokio::test]
    async fn a_turn_goes_out_in_one_call_without_gso() {
        a_turn_goes_out_in_one_call_and_arrives_whole_and_in_order(false).await;
    }

    #[tokio::test]
    async fn write_readiness_is_watched_only_while_blocked() {
        use std::time::Duration;
        let (mut server, _) = io().await;
        let (client, client_addr) = io().await;
        let wait = Duration::from_millis(200);
        // Not blocked: never writable, and sending does not make the socket "ready".
        assert!(server.writer.is_none());
        let (queued, _) = server.queue(client_addr, datagram(0, 1, 100));
        assert!(queued);
        assert_eq!(server.flush().sent, 1);
        assert!(
            tokio::time::timeout(wait, server.writable()).await.is_err(),
            "pending while not blocked"
        );
        // Reading is not disturbed by the sends: the client sees exactly the datagram sent.
        assert_eq!(receive(&mut { client }, 1).await.len(), 1);
        // Blocked (as after an EAGAIN): the second registration reports the room there is.
        server.set_blocked(true);
        assert!(server.writer.is_some());
        tokio::time::timeout(Duration::from_secs(5), server.writable())
            .await
            .expect("room is reported")
            .expect("no error");
        // A flush that drains the queue ends the watch.
        let flushed = server.flush();
        assert!(!flushed.blocked && !server.blocked());
        assert!(server.writer.is_none(), "the registration is dropped once unblocked");
        assert!(tokio::time::timeout(wait, server.writable()).await.is_err());
    }

    #[tokio::test]
    async fn a_blocked_socket_keeps_a_bounded_queue_and_refuses_the_rest() {
        let (mut server, _) = io().await;
        let to = addr(9);
        server.blocked = true;
        for seq in 0..MAX_QUEUED {
            let (queued, flushed) = server.queue(to, datagram(0, seq as u8, 100));
            assert!(queued, "datagram {seq} fits");
            assert_eq!(flushed, Flushed::default(), "no flush attempt while blocked");
        }
        assert!(!server.queue(to, datagram(0, 0, 100)).0, "the bound is kept");
        assert_eq!(server.queued(), MAX_QUEUED);
        // Writable again: everything queued goes out (loopback to a closed port still
        // counts as sent: UDP has no delivery report without IP_RECVERR).
        let flushed = server.flush();
        assert_eq!(flushed.sent + flushed.failed, MAX_QUEUED);
        assert!(!flushed.blocked && !server.blocked());
        assert_eq!(server.queued(), 0);
    }

    #[tokio::test]
    async fn a_busy_turn_flushes_before_the_queue_grows_past_flush_at() {
        let (mut server, _) = io().await;
        let (_sink, sink_addr) = io().await;
        for seq in 0..FLUSH_AT {
            assert!(server.queue(sink_addr, datagram(1, seq as u8, 200)).0);
        }
        assert_eq!(server.queued(), FLUSH_AT);
        let (queued, flushed) = server.queue(sink_addr, datagram(1, 0, 200));
        assert!(queued);
        assert_eq!(flushed.sent, FLUSH_AT, "the turn's first datagrams went out");
        assert_eq!(server.queued(), 1);
        assert_eq!(server.flush().sent, 1);
        assert_eq!(server.totals().datagrams_sent, FLUSH_AT as u64 + 1);
    }
}
