//! The floor under a shard's cost per forwarded packet: a relay built from the shard's own
//! I/O shell (`gatehouse::sfu::udp::UdpIo`: `recvmmsg` with GRO, one `sendmmsg` with GSO per
//! turn; `gatehouse::sfu::coalesce::Coalescer`: receive coalescing) that does nothing else.
//! No ICE, DTLS or SRTP, no RTP parsing, no RTCP, no timers: each datagram in goes out
//! unchanged to the other side of its call. What the relay costs a forwarded packet is what
//! the kernel's UDP work, the wake-ups and the I/O shell cost at that packet rate and with
//! those senders; the gateway cannot spend less on the same traffic (docs/BENCHMARKS.md §3,
//! "The floor"). With `--srtp` (on both sides) the relay also opens each datagram and seals
//! it again with the gateway's own AES-GCM opener and sealer: the floor with the crypto that
//! no forwarded packet can do without.
//!
//! Two processes, as the gateway and `gatehouse loadtest` run (`scripts/bench/floor.sh`
//! pins them to one core each):
//!
//! ```sh
//! cargo run --release --example udp_floor -- relay --calls 30          # CPU 0
//! cargo run --release --example udp_floor -- clients --calls 30        # CPU 1
//! ```
//!
//! The clients send what the load tester's SDK engine sends with one camera layer and its
//! default media: per participant 50 audio packets a second (80-byte payloads) and 30 video
//! frames a second of 500 kbit/s (1100-byte payloads, so two packets a frame), each
//! participant on a socket and tasks of its own on a multi-threaded runtime, every stream
//! starting at a phase of its own, plus the SRTP framing (12-byte header, 16-byte tag). They
//! receive and time what the relay forwards (one-way latency on the machine's monotonic
//! clock). The relay measures its own CPU (`getrusage`) over the steady window and prints one
//! JSON line; the clients print theirs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use clap::{Parser, Subcommand};
use gatehouse::sfu::coalesce::{Coalescer, DEFAULT_WINDOW, thread_sleeps};
use gatehouse::sfu::srtp_gcm::{Opener, Sealer};
use gatehouse::sfu::srtp_keys::MasterKey;
use gatehouse::sfu::udp::UdpIo;
use rtc::rtp::Packet;
use rtc::rtp::header::{Extension, Header};
use rtc::srtp::protection_profile::ProtectionProfile;
use tokio::net::UdpSocket;

/// A client's hello: this byte, the call (u32, big-endian), the side (0 or 1).
const HELLO: u8 = 0xff;
/// The relay's answer to a hello.
const WELCOME: u8 = 0xfe;
/// First byte of media (an RTP version-2 header's).
const MEDIA: u8 = 0x80;
/// RTP header and SRTP (AES-GCM) tag around each payload.
const FRAMING: usize = 12 + 16;
/// Receive rounds per turn, as the shard's.
const RECV_ROUNDS: usize = 2;

#[derive(Parser)]
#[command(
    about = "The floor under the gateway's cost per forwarded packet: a UDP relay with the shard's I/O shell and nothing else"
)]
struct Args {
    #[command(subcommand)]
    side: Side,
}

#[derive(Subcommand)]
enum Side {
    /// The relay: forwards each call's datagrams between its two sides, then prints its
    /// cost per forwarded packet over the steady window as one JSON line.
    Relay {
        /// Calls to wait for: the window starts when all have both sides.
        #[arg(long, default_value_t = 30)]
        calls: u32,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7990")]
        listen: SocketAddr,
        /// Receive coalescing window in microseconds (the gateway's --media-coalesce-us; 0: off).
        #[arg(long, default_value_t = DEFAULT_WINDOW.as_micros() as u64)]
        coalesce_us: u64,
        /// Seconds after the last call is paired before measuring.
        #[arg(long, default_value_t = 3)]
        warmup: u64,
        /// Seconds measured.
        #[arg(long, default_value_t = 15)]
        seconds: u64,
        /// Open each datagram (SRTP, AES-128-GCM, the sender's key) and seal it again for
        /// the receiver, with the gateway's own sealer and opener: the floor with the crypto a
        /// forwarded packet cannot do without. The clients need --srtp too.
        #[arg(long)]
        srtp: bool,
    },
    /// The clients: two participants per call, each sending audio and video to the relay and
    /// timing what comes back from the other side.
    Clients {
        #[arg(long, default_value_t = 30)]
        calls: u32,
        /// The relay's address.
        #[arg(long, default_value = "127.0.0.1:7990")]
        relay: SocketAddr,
        /// Seconds to send for (more than the relay's warmup and window).
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Audio packets a second per participant.
        #[arg(long, default_value_t = 50)]
        audio_pps: u32,
        /// Audio payload bytes.
        #[arg(long, default_value_t = 80)]
        audio_bytes: usize,
        /// Video kbit/s per participant (0: no video).
        #[arg(long, default_value_t = 500)]
        video_kbps: u32,
        /// Video frames a second.
        #[arg(long, default_value_t = 30)]
        video_fps: u32,
        /// Send SRTP and open what comes back (for a relay run with --srtp).
        #[arg(long)]
        srtp: bool,
    },
}

fn main() -> std::io::Result<()> {
    match Args::parse().side {
        Side::Relay {
            calls,
            listen,
            coalesce_us,
            warmup,
            seconds,
            srtp,
        } => {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let window = Duration::from_micros(coalesce_us);
            runtime.block_on(relay(
                calls,
                listen,
                window,
                Duration::from_secs(warmup),
                Duration::from_secs(seconds),
                srtp,
            ))
        }
        Side::Clients {
            calls,
            relay,
            seconds,
            audio_pps,
            audio_bytes,
            video_kbps,
            video_fps,
            srtp,
        } => {
            let media = Media {
                audio_every: Duration::from_secs(1) / audio_pps.max(1),
                audio_bytes,
                video_every: Duration::from_secs(1) / video_fps.max(1),
                video_frame: (video_kbps as usize * 1000 / 8) / video_fps.max(1) as usize,
                srtp,
            };
            tokio::runtime::Runtime::new()?.block_on(clients(calls, relay, Duration::from_secs(seconds), media))
        }
    }
}

/// The process's CPU time so far (user and system), from `getrusage`.
fn cpu_time() -> Duration {
    // SAFETY: an all-zero `rusage` is a valid value for the call to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable `rusage`.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// The machine's monotonic clock in nanoseconds: the same in both processes.
fn monotonic_ns() -> u64 {
    // SAFETY: an all-zero `timespec` is a valid value for the call to overwrite.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `ts` is a valid, writable `timespec`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// What the relay counted at one instant.
#[derive(Clone, Copy)]
struct Mark {
    at: Instant,
    cpu: Duration,
    sleeps: u64,
    received: u64,
    forwarded: u64,
    pauses: u64,
    turns: u64,
}

async fn relay(
    calls: u32,
    listen: SocketAddr,
    window: Duration,
    warmup: Duration,
    seconds: Duration,
    srtp: bool,
) -> std::io::Result<()> {
    let mut io = UdpIo::new(UdpSocket::bind(listen).await?)?;
    // Opened and sealed packets are cut from here, as the shard does (no allocation each).
    let mut arena = BytesMut::new();
    // The last packet's list of header extensions, for the next (as the shard recycles them).
    let mut spare = Vec::new();
    let mut refused = 0u64;
    let mut coalescer = Coalescer::new(window);
    let mut routes: HashMap<SocketAddr, Route> = HashMap::new();
    let mut sides: HashMap<u32, [Option<SocketAddr>; 2]> = HashMap::new();
    let (mut received, mut forwarded, mut dropped, mut pauses, mut turns) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut paired_at: Option<Instant> = None;
    let mut start: Option<Mark> = None;
    let mut reported = false;
    let quiet = tokio::time::sleep(Duration::from_secs(30));
    tokio::pin!(quiet);
    let mut received_then = 0;
    eprintln!("udp_floor relay: on {listen}, waiting for {calls} calls");
    loop {
        // One timer for the loop's life, as the shard's: it fires only after a quiet spell.
        // After the report, forwarding goes on until the clients stop (a second without a
        // datagram), so that their loss counts only what the relay lost.
        tokio::select! {
            biased;
            ready = io.readable() => ready?,
            _ = &mut quiet => {
                let spell = if reported { Duration::from_secs(1) } else { Duration::from_secs(30) };
                if received == received_then {
                    return if reported { Ok(()) } else { Err(std::io::Error::other("no datagram for 30 s")) };
                }
                received_then = received;
                quiet.as_mut().reset(tokio::time::Instant::now() + spell);
                continue;
            }
        }
        let (mut read, mut full) = (0usize, false);
        for _ in 0..RECV_ROUNDS {
            full = false;
            match io.receive() {
                Ok(true) => full = io.received_full(),
                Ok(false) => break,
                Err(e) => {
                    eprintln!("udp_floor relay: receive: {e}");
                    break;
                }
            }
            while let Some((from, data)) = io.next_datagram() {
                read += 1;
                received += 1;
                if data.len() == 6 && data[0] == HELLO {
                    let call = u32::from_be_bytes([data[1], data[2], data[3], data[4]]);
                    let side = usize::from(data[5] & 1);
                    let pair = sides.entry(call).or_default();
                    if routes.contains_key(&from) {
                        // A hello sent again before the welcome arrived: welcomed again,
                        // the call's routes (and their SRTP state) left as they are.
                        let _ = io.queue(from, BytesMut::from(&[WELCOME][..]));
                        continue;
                    }
                    pair[side] = Some(from);
                    // Both sides are welcomed once the call has both: no media is sent
                    // before it can be forwarded.
                    if let [Some(a), Some(b)] = *pair {
                        let (ia, ib) = (index_of(call, 0), index_of(call, 1));
                        routes.insert(a, Route::new(b, srtp.then_some((ia, ib))));
                        routes.insert(b, Route::new(a, srtp.then_some((ib, ia))));
                        let _ = io.queue(a, BytesMut::from(&[WELCOME][..]));
                        let _ = io.queue(b, BytesMut::from(&[WELCOME][..]));
                        if routes.len() == 2 * calls as usize {
                            paired_at = Some(Instant::now());
                            eprintln!("udp_floor relay: all {calls} calls paired");
                        }
                    }
                } else if let Some(route) = routes.get_mut(&from) {
                    let out = match &mut route.crypto {
                        None => Some(data),
                        Some((opener, sealer)) => reseal(opener, sealer, data, &mut arena, &mut spare),
                    };
                    // Dropped only past a full socket buffer and a full queue: counted.
                    match out.map(|out| io.queue(route.to, out).0) {
                        Some(true) => forwarded += 1,
                        Some(false) => dropped += 1,
                        None => refused += 1,
                    }
                }
            }
            if !full {
                break;
            }
        }
        io.flush();
        turns += 1;
        let now = Instant::now();
        let mark = || Mark {
            at: now,
            cpu: cpu_time(),
            sleeps: thread_sleeps(),
            received,
            forwarded,
            pauses,
            turns,
        };
        match (paired_at, start) {
            (Some(at), None) if now >= at + warmup => start = Some(mark()),
            (_, Some(s)) if !reported && now >= s.at + seconds => {
                report(calls, window, srtp, s, mark(), dropped, refused);
                reported = true;
                quiet
                    .as_mut()
                    .reset(tokio::time::Instant::now() + Duration::from_secs(1));
            }
            _ => {}
        }
        if let Some(pause) = coalescer.turn(now, read, full, || None, thread_sleeps) {
            pauses += 1;
            std::thread::sleep(pause);
        }
    }
}

/// Where a sender's datagrams go, and with --srtp the opener of its key and the sealer of
/// the receiver's.
struct Route {
    to: SocketAddr,
    crypto: Option<(Opener, Sealer)>,
}

impl Route {
    /// `keys`: the sender's and the receiver's participant indexes, with --srtp.
    fn new(to: SocketAddr, keys: Option<(u64, u64)>) -> Self {
        let crypto = keys.map(|(from, to)| {
            let opener = Opener::new(PROFILE, &master_key(from, Direction::Up)).expect("a GCM key");
            let sealer = Sealer::new(PROFILE, &master_key(to, Direction::Down)).expect("a GCM key");
            (opener, sealer)
        });
        Self { to, crypto }
    }
}

/// Opens a datagram in place and seals the packet again for the other side (into `arena`), as
/// the shard does a forwarded packet (its streams taken from their first packet on, its lists
/// of header extensions reused); `None` if it does not open.
fn reseal(
    opener: &mut Opener,
    sealer: &mut Sealer,
    datagram: BytesMut,
    arena: &mut BytesMut,
    spare: &mut Vec<Extension>,
) -> Option<BytesMut> {
    let (seq, ssrc) = rtp_ids(&datagram)?;
    if !opener.has(ssrc) {
        opener.take(ssrc, seq.wrapping_sub(1));
    }
    let packet = opener.open_owned(datagram, std::mem::take(spare)).ok()?;
    let sealed = sealer.seal_in(&packet, arena).ok();
    *spare = packet.header.extensions;
    spare.clear();
    sealed
}

/// An RTP datagram's sequence number and SSRC.
fn rtp_ids(datagram: &[u8]) -> Option<(u16, u32)> {
    let b = datagram.get(..12)?;
    Some((
        u16::from_be_bytes([b[2], b[3]]),
        u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
    ))
}

/// The SRTP profile of --srtp: the one browsers and `rtc` prefer.
const PROFILE: ProtectionProfile = ProtectionProfile::AeadAes128Gcm;

/// Which way a key protects: a participant's sending, or what is sent to it.
#[derive(Clone, Copy)]
enum Direction {
    Up,
    Down,
}

/// A participant's key one way: made up, but its own (both processes derive the same).
fn master_key(index: u64, direction: Direction) -> MasterKey {
    let seed = index
        .wrapping_mul(2)
        .wrapping_add(matches!(direction, Direction::Down) as u64);
    let byte = |i: u64| (seed.wrapping_mul(0x9e37_79b9).wrapping_add(i * 41) >> 3) as u8;
    MasterKey {
        key: (0..16).map(byte).collect(),
        salt: (16..28).map(byte).collect(),
    }
}

/// A participant's index: two per call.
fn index_of(call: u32, side: u8) -> u64 {
    u64::from(call) * 2 + u64::from(side)
}

fn report(calls: u32, window: Duration, srtp: bool, s: Mark, e: Mark, dropped: u64, refused: u64) {
    let secs = (e.at - s.at).as_secs_f64();
    let fwd = (e.forwarded - s.forwarded) as f64;
    let cpu = (e.cpu - s.cpu).as_secs_f64();
    let line = serde_json::json!({
        "side": "relay",
        "calls": calls,
        "coalesce_us": window.as_micros() as u64,
        "srtp": srtp,
        "seconds": secs,
        "received_per_s": (e.received - s.received) as f64 / secs,
        "fwd_per_s": fwd / secs,
        "cpu_percent": 100.0 * cpu / secs,
        "us_per_fwd": 1e6 * cpu / fwd.max(1.0),
        "sleeps_per_s": (e.sleeps - s.sleeps) as f64 / secs,
        "pauses_per_s": (e.pauses - s.pauses) as f64 / secs,
        "turns_per_s": (e.turns - s.turns) as f64 / secs,
        "dropped": dropped,
        "srtp_refused": refused,
    });
    println!("{line}");
}

/// What each participant sends.
#[derive(Clone, Copy)]
struct Media {
    audio_every: Duration,
    audio_bytes: usize,
    video_every: Duration,
    video_frame: usize,
    srtp: bool,
}

/// Video payloads are cut at this size, as the load tester's.
const VIDEO_PAYLOAD: usize = 1100;

/// What the participants received, shared between their tasks.
#[derive(Default)]
struct Received {
    packets: AtomicU64,
    sent: AtomicU64,
}

async fn clients(calls: u32, relay: SocketAddr, seconds: Duration, media: Media) -> std::io::Result<()> {
    let totals = Arc::new(Received::default());
    let latencies = Arc::new(std::sync::Mutex::new(Vec::<u32>::new()));
    let mut tasks = Vec::new();
    for call in 0..calls {
        for side in 0..2u8 {
            let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
            socket.connect(relay).await?;
            let index = index_of(call, side);
            let (totals, latencies) = (totals.clone(), latencies.clone());
            tasks.push(tokio::spawn(async move {
                welcome(&socket, call, side).await?;
                participant(socket, index, seconds, media, totals, latencies).await
            }));
        }
    }
    eprintln!("udp_floor clients: {calls} calls sending");
    for task in tasks {
        task.await.map_err(std::io::Error::other)??;
    }
    let mut latencies = std::mem::take(&mut *latencies.lock().expect("not poisoned"));
    latencies.sort_unstable();
    let pick = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    let (sent, packets) = (
        totals.sent.load(Ordering::Relaxed),
        totals.packets.load(Ordering::Relaxed),
    );
    let line = serde_json::json!({
        "side": "clients",
        "calls": calls,
        "sent": sent,
        "received": packets,
        "loss_percent": 100.0 * sent.saturating_sub(packets) as f64 / sent.max(1) as f64,
        "p50_ms": f64::from(pick(0.5)) / 1000.0,
        "p99_ms": f64::from(pick(0.99)) / 1000.0,
    });
    println!("{line}");
    Ok(())
}

/// Says hello until the relay has paired the call (every 100 ms: the relay may not be
/// listening yet, and it answers only once both sides are there).
async fn welcome(socket: &UdpSocket, call: u32, side: u8) -> std::io::Result<()> {
    let mut hello = vec![HELLO];
    hello.extend_from_slice(&call.to_be_bytes());
    hello.push(side);
    let mut answer = [0u8; 8];
    loop {
        socket.send(&hello).await?;
        match tokio::time::timeout(Duration::from_millis(100), socket.recv(&mut answer)).await {
            Ok(Ok(1)) if answer[0] == WELCOME => return Ok(()),
            // Not listening yet (the relay starts at the same time): say hello again.
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(Err(e)) => return Err(e),
            _ => {}
        }
    }
}

/// One participant: its audio and video streams, each starting at a phase of its own
/// (spread by the participant's index), and what it receives.
async fn participant(
    socket: Arc<UdpSocket>,
    index: u64,
    seconds: Duration,
    media: Media,
    totals: Arc<Received>,
    latencies: Arc<std::sync::Mutex<Vec<u32>>>,
) -> std::io::Result<()> {
    let end = Instant::now() + seconds;
    let phase = |every: Duration, salt: u64| every.mul_f64(((index * 7919 + salt * 104_729) % 1000) as f64 / 1000.0);
    // With --srtp each stream seals with the participant's key, under an SSRC of its own.
    let sealer = |stream: u32| {
        let ssrc = (index as u32) << 1 | stream;
        media.srtp.then(|| {
            (
                Sealer::new(PROFILE, &master_key(index, Direction::Up)).expect("a GCM key"),
                ssrc,
            )
        })
    };
    let mut streams = vec![tokio::spawn(send(
        socket.clone(),
        sealer(0),
        media.audio_every,
        phase(media.audio_every, 1),
        vec![media.audio_bytes],
        end,
        totals.clone(),
    ))];
    if media.video_frame > 0 {
        let mut packets = vec![VIDEO_PAYLOAD; media.video_frame / VIDEO_PAYLOAD];
        if !media.video_frame.is_multiple_of(VIDEO_PAYLOAD) {
            packets.push(media.video_frame % VIDEO_PAYLOAD);
        }
        streams.push(tokio::spawn(send(
            socket.clone(),
            sealer(1),
            media.video_every,
            phase(media.video_every, 2),
            packets,
            end,
            totals.clone(),
        )));
    }
    let opener = media
        .srtp
        .then(|| Opener::new(PROFILE, &master_key(index, Direction::Down)).expect("a GCM key"));
    receive(socket, opener, end, totals, latencies).await?;
    for stream in streams {
        stream.await.map_err(std::io::Error::other)??;
    }
    Ok(())
}

/// One stream: `packets` (payload sizes) every `every`, from `phase` on, until `end`; with a
/// sealer, as SRTP packets of its SSRC.
async fn send(
    socket: Arc<UdpSocket>,
    mut sealer: Option<(Sealer, u32)>,
    every: Duration,
    phase: Duration,
    packets: Vec<usize>,
    end: Instant,
    totals: Arc<Received>,
) -> std::io::Result<()> {
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + phase, every);
    let mut buf = vec![0u8; FRAMING + packets.iter().copied().max().unwrap_or(0)];
    buf[0] = MEDIA;
    let mut seq = 0u16;
    while Instant::now() < end {
        interval.tick().await;
        for &size in &packets {
            let now = monotonic_ns();
            match &mut sealer {
                None => {
                    buf[4..12].copy_from_slice(&now.to_be_bytes());
                    socket.send(&buf[..FRAMING + size]).await?;
                }
                Some((sealer, ssrc)) => {
                    let mut payload = vec![0u8; size.max(8)];
                    payload[..8].copy_from_slice(&now.to_be_bytes());
                    seq = seq.wrapping_add(1);
                    let packet = Packet {
                        header: Header {
                            version: 2,
                            payload_type: 96,
                            sequence_number: seq,
                            timestamp: (now / 11_111) as u32,
                            ssrc: *ssrc,
                            ..Default::default()
                        },
                        payload: payload.into(),
                    };
                    let datagram = sealer
                        .seal_in(&packet, &mut BytesMut::new())
                        .map_err(|e| std::io::Error::other(format!("seal: {e}")))?;
                    socket.send(&datagram).await?;
                }
            }
            totals.sent.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// What the other side sent: counted, and timed one way (opened first, with an opener).
async fn receive(
    socket: Arc<UdpSocket>,
    mut opener: Option<Opener>,
    end: Instant,
    totals: Arc<Received>,
    latencies: Arc<std::sync::Mutex<Vec<u32>>>,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 2048];
    let mut mine = Vec::new();
    // Past the senders' end by what is still in flight.
    let until = tokio::time::Instant::from_std(end + Duration::from_millis(200));
    while let Ok(received) = tokio::time::timeout_at(until, socket.recv(&mut buf)).await {
        let datagram = &buf[..received?];
        let sent = match &mut opener {
            None => datagram.get(4..12).filter(|_| datagram[0] == MEDIA).map(|b| b.to_vec()),
            Some(opener) => rtp_ids(datagram).and_then(|(seq, ssrc)| {
                if !opener.has(ssrc) {
                    opener.take(ssrc, seq.wrapping_sub(1));
                }
                let packet = opener.open(datagram).ok()?;
                packet.payload.get(..8).map(|b| b.to_vec())
            }),
        };
        if let Some(sent) = sent {
            let sent = u64::from_be_bytes(sent.try_into().expect("8 bytes"));
            mine.push((monotonic_ns().saturating_sub(sent) / 1000) as u32);
            totals.packets.fetch_add(1, Ordering::Relaxed);
        }
    }
    latencies.lock().expect("not poisoned").extend(mine);
    Ok(())
}
