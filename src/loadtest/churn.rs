//! `gatehouse loadtest --churn`: participants come and go for the whole run while
//! the gateway's resources are sampled, and the run fails if any of them grows (see
//! [`super::soak`] for how growth is judged).
//!
//! One meeting, a staff host in it for the whole run (it admits or denies guests),
//! and `slots` participants at a time, each living one short cycle after another.
//! The cycles take turns: a staff publisher (audio and video) that leaves; a guest
//! who redeems a single-use link, waits in the lobby, is admitted, publishes audio
//! and leaves; a staff receiver whose connection drops without `leave`; a guest
//! denied in the lobby; a staff publisher that drops. Everyone in the call sends a
//! chat message and receives what the others publish. Samples come from
//! `/proc/<pid>` when the gateway runs on this machine (`--spawn-gateway`,
//! `--gateway-pid`) and from its `/metrics` (peer connections, signaling
//! connections; memory, descriptors and threads too without a pid).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use gatehouse_sdk::synthetic::{SyntheticCodec, SyntheticConfig};
use gatehouse_sdk::{
    Client, ConnectOptions, Event, LinkKind, LobbyBypass, NewLink, NewMeeting, RestClient, TlsOptions,
};
use gatehouse_signaling::protocol::TrackSource;
use gatehouse_signaling::token::StaffRole;
use tokio::task::JoinSet;

use super::gateway::{RSS_BYTES, Scraper, Snapshot};
use super::resources;
use super::scenario::StreamShape;
use super::soak::{ChurnCounts, Limits, Sample, SamplePhase, SoakReport};
use super::spawn::SpawnedGateway;
use super::{Auth, staff_token};

/// How long joining (socket and `joined`) may take.
const JOIN_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a guest may wait for the host's decision.
const LOBBY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the cycles still running at the end of the churn may take to finish.
const WIND_DOWN: Duration = Duration::from_secs(60);
/// Errors kept in the report (the first ones: the rest usually follow from them).
const KEPT_ERRORS: usize = 8;
/// How often the progress line is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// Everything a churn run needs.
#[derive(Debug, Clone)]
pub struct ChurnOptions {
    /// The gateway, `https://host:port`.
    pub url: String,
    pub auth: Auth,
    pub tls: TlsOptions,
    /// Its /metrics token, if any.
    pub metrics_token: Option<String>,
    /// The gateway's process on this machine, to read `/proc/<pid>`.
    pub pid: Option<u32>,
    /// How long participants come and go.
    pub duration: Duration,
    /// Participants at a time.
    pub slots: u32,
    /// How often the gateway is sampled.
    pub sample_every: Duration,
    /// How long to wait after the churn for connections to close and held seats to
    /// expire before the last sample.
    pub settle: Duration,
    /// What makes the run fail.
    pub limits: Limits,
    /// Print a progress line every 10 s on stderr.
    pub progress: bool,
}

/// What every cycle shares.
struct Ctx {
    url: String,
    tls: TlsOptions,
    staff: ConnectOptions,
    /// Signs a staff token per participant: staff sharing a token are one participant
    /// (a second join is the same person on a new connection).
    keys: gatehouse_signaling::token::TokenKeys,
    rest: RestClient,
    meeting_id: String,
    audio: SyntheticConfig,
    video: SyntheticConfig,
    counts: Mutex<ChurnCounts>,
    /// Participants in the call right now (for the progress line).
    in_call: AtomicU64,
}

impl Ctx {
    fn count(&self, f: impl FnOnce(&mut ChurnCounts)) {
        f(&mut self.counts.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

/// The kinds of cycle, in turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    StaffPublisherLeaves,
    GuestAdmitted,
    StaffReceiverDrops,
    GuestDenied,
    StaffPublisherDrops,
}

impl Kind {
    fn of(cycle: u64) -> Kind {
        match cycle % 5 {
            0 => Kind::StaffPublisherLeaves,
            1 => Kind::GuestAdmitted,
            2 => Kind::StaffReceiverDrops,
            3 => Kind::GuestDenied,
            _ => Kind::StaffPublisherDrops,
        }
    }
}

/// Runs against a gateway this process starts (`exe serve`), then stops it.
pub async fn run_spawned(mut options: ChurnOptions, exe: &std::path::Path) -> anyhow::Result<SoakReport> {
    let dir = std::env::temp_dir().join(format!("gatehouse-churn-{}", crate::ids::random_code(8)));
    // Short seat holds: a dropped participant's seat (and media) is held this long,
    // and the settle phase must outlast it.
    let hold_secs = options.settle.as_secs().saturating_sub(5).clamp(1, 60);
    let extra = [
        "--seat-hold-secs".to_owned(),
        hold_secs.to_string(),
        "--redeem-per-minute".to_owned(),
        "100000".to_owned(),
    ];
    let exe = exe.to_owned();
    let dir2 = dir.clone();
    let mut gateway = tokio::task::spawn_blocking(move || SpawnedGateway::start(&exe, &dir2, &extra)).await??;
    options.url = gateway.url.clone();
    options.auth = Auth::DataDir(gateway.data_dir.clone());
    options.tls = TlsOptions {
        ca_pem: Some(
            std::fs::read_to_string(gateway.data_dir.join("tls").join("ca.pem"))
                .context("reading the spawned gateway's development CA")?,
        ),
        danger_accept_invalid_certs: false,
    };
    options.pid = Some(gateway.pid);
    let pid = gateway.pid;
    let result = run(options, format!("spawned gateway (pid {pid})")).await;
    let lines = gateway.log_lines();
    let alive = gateway.is_running();
    gateway.stop(Duration::from_secs(10));
    let mut report = result?;
    report.gateway_log_lines = Some(lines);
    if !alive {
        report.breaches.push("the gateway process died during the run".into());
        report.verdict = super::soak::SoakVerdict::ThresholdBreached;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(report)
}

/// Runs the churn against `options.url` and judges it; `what` says what is sampled.
pub async fn run(options: ChurnOptions, what: String) -> anyhow::Result<SoakReport> {
    anyhow::ensure!(options.slots >= 1, "--churn-slots must be at least 1");
    let Auth::DataDir(dir) = &options.auth else {
        anyhow::bail!(
            "--churn mints a staff token per participant: give the gateway's --data-dir (its signing key) or --spawn-gateway, not --token"
        );
    };
    let token = staff_token(&options.auth)?;
    let keys = crate::server::load_or_create_signing_key(dir)?;
    let rest = RestClient::new(&options.url, &options.tls)?.with_token(token.clone());
    let scraper = Scraper::new(&options.url, &options.tls, options.metrics_token.clone())?;
    let what = match options.pid {
        Some(_) => what,
        None => "/metrics only (no pid: UDP sockets n/a)".to_owned(),
    };
    let run_start = Instant::now();
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let phase = Arc::new(AtomicU8::new(0));

    // The idle gateway, twice (the first scrape opens the scraper's connection).
    for _ in 0..2 {
        let s = sample(&scraper, options.pid, run_start, SamplePhase::Baseline).await;
        samples.lock().unwrap_or_else(|p| p.into_inner()).push(s);
        tokio::time::sleep(options.sample_every.min(Duration::from_secs(1))).await;
    }

    let tag = crate::ids::random_code(6);
    let meeting = rest
        .create_meeting(&NewMeeting {
            title: format!("Churn soak {tag}"),
            lobby_bypass: Some(LobbyBypass::Organization),
            chat_enabled: Some(true),
            max_participants: Some(options.slots + 8),
            ..NewMeeting::default()
        })
        .await
        .context("creating the churn meeting")?;
    let mut staff = ConnectOptions::new(options.url.clone(), token);
    staff.ca_pem = options.tls.ca_pem.clone();
    staff.danger_accept_invalid_certs = options.tls.danger_accept_invalid_certs;
    staff.join_timeout = JOIN_TIMEOUT;
    // Drops are the churn's own (a participant closes without `leave`); any other is a failure.
    staff.reconnect = gatehouse_sdk::ReconnectPolicy::never();
    staff.media = gatehouse_sdk::MediaOptions {
        udp_addrs: vec![super::local_udp_addr(&options.url).to_owned()],
        ..gatehouse_sdk::MediaOptions::default()
    };
    let ctx = Arc::new(Ctx {
        url: options.url.clone(),
        tls: options.tls.clone(),
        staff: staff.clone().meeting(meeting.meeting_id.clone()),
        keys,
        rest: rest.clone(),
        meeting_id: meeting.meeting_id.clone(),
        audio: StreamShape { kbps: 24, fps: 50 }.synthetic(SyntheticCodec::Opus),
        video: StreamShape { kbps: 150, fps: 15 }.synthetic(SyntheticCodec::Vp8),
        counts: Mutex::default(),
        in_call: AtomicU64::new(0),
    });

    // The host: in the call for the whole run, deciding on every guest in the lobby.
    let (host, host_events) = Client::connect(ctx.staff.clone())
        .await
        .context("the host joining the churn meeting")?;
    let host_task = tokio::spawn(host_loop(host.clone(), host_events));

    phase.store(1, Ordering::Relaxed);
    let sampler = tokio::spawn(sample_loop(
        scraper.clone(),
        options.pid,
        run_start,
        options.sample_every,
        samples.clone(),
        phase.clone(),
        options.progress.then(|| (ctx.clone(), options.duration)),
    ));

    let churn_end = Instant::now() + options.duration;
    let next_cycle = Arc::new(AtomicU64::new(0));
    let mut slots = JoinSet::new();
    for slot in 0..options.slots {
        let (ctx, next_cycle) = (ctx.clone(), next_cycle.clone());
        slots.spawn(async move {
            // Staggered starts: the slots do not all join in the same second.
            tokio::time::sleep(Duration::from_millis(u64::from(slot) * 700)).await;
            while Instant::now() < churn_end {
                let cycle = next_cycle.fetch_add(1, Ordering::Relaxed);
                ctx.count(|c| c.cycles += 1);
                match run_cycle(&ctx, cycle).await {
                    Ok(()) => ctx.count(|c| c.completed += 1),
                    Err(e) => {
                        tracing::debug!(cycle, error = %e, "churn cycle failed");
                        ctx.count(|c| {
                            c.failed += 1;
                            if c.errors.len() < KEPT_ERRORS {
                                c.errors.push(format!("cycle {cycle} ({:?}): {e}", Kind::of(cycle)));
                            }
                        });
                        // A failing gateway is not hammered in a tight loop.
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
    }
    let wind_down = tokio::time::sleep_until(tokio::time::Instant::from_std(churn_end + WIND_DOWN));
    tokio::pin!(wind_down);
    loop {
        tokio::select! {
            joined = slots.join_next() => if joined.is_none() { break },
            () = &mut wind_down => {
                slots.abort_all();
                ctx.count(|c| c.errors.push("some cycles were still running 60 s after the churn ended".into()));
                break;
            }
        }
    }
    let churned = run_start.elapsed();

    // Everyone out: the host leaves, the meeting ends, held seats expire.
    let _ = host.leave();
    host.close().await;
    host_task.abort();
    let path = format!("/api/v1/meetings/{}/end", ctx.meeting_id);
    let _ = tokio::time::timeout(Duration::from_secs(5), rest.request(reqwest::Method::POST, &path, None)).await;
    phase.store(2, Ordering::Relaxed);
    sampler.abort();
    let baseline = samples.lock().unwrap_or_else(|p| p.into_inner())[1];
    let settle_end = Instant::now() + options.settle;
    let mut settled_in_a_row = 0;
    loop {
        let s = sample(&scraper, options.pid, run_start, SamplePhase::Settle).await;
        samples.lock().unwrap_or_else(|p| p.into_inner()).push(s);
        // Idle again: no connection, no socket or descriptor more than at the start.
        let idle = s.peer_connections.unwrap_or(0.0) <= baseline.peer_connections.unwrap_or(0.0)
            && s.signaling_connections.unwrap_or(0.0) <= baseline.signaling_connections.unwrap_or(0.0)
            && s.fds.zip(baseline.fds).is_none_or(|(now, then)| now <= then)
            && s.udp_sockets
                .zip(baseline.udp_sockets)
                .is_none_or(|(now, then)| now <= then);
        settled_in_a_row = if idle { settled_in_a_row + 1 } else { 0 };
        if settled_in_a_row >= 2 || Instant::now() >= settle_end {
            break;
        }
        tokio::time::sleep(options.sample_every.min(Duration::from_secs(2))).await;
    }
    if options.progress {
        eprintln!(
            "settled {:.0} s after the churn",
            (run_start.elapsed() - churned).as_secs_f64()
        );
    }
    let counts = ctx.counts.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let samples = std::mem::take(&mut *samples.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(SoakReport::new(
        what,
        options.duration.as_secs_f64(),
        options.slots,
        counts,
        samples,
        options.limits,
        None,
    ))
}

/// One reading of the gateway: `/proc/<pid>` when known, /metrics for the rest.
async fn sample(scraper: &Scraper, pid: Option<u32>, run_start: Instant, phase: SamplePhase) -> Sample {
    let at = run_start.elapsed();
    let metrics = scraper.scrape(at).await.unwrap_or_else(|e| {
        tracing::debug!(error = %e, "scrape failed");
        Snapshot::default()
    });
    let proc = pid.map(resources::read).unwrap_or_default();
    Sample {
        at_secs: at.as_secs_f64(),
        phase,
        rss_bytes: proc.rss_bytes.or_else(|| metrics.get(RSS_BYTES)),
        fds: proc.fds.or_else(|| metrics.get("process_open_fds")),
        threads: proc.threads.or_else(|| metrics.get("process_threads")),
        udp_sockets: proc.udp_sockets,
        peer_connections: metrics.get("gatehouse_sfu_peer_connections"),
        signaling_connections: metrics.get("gatehouse_signaling_connections"),
        meetings_live: metrics.get("gatehouse_meetings_live"),
    }
}

async fn sample_loop(
    scraper: Scraper,
    pid: Option<u32>,
    run_start: Instant,
    every: Duration,
    samples: Arc<Mutex<Vec<Sample>>>,
    phase: Arc<AtomicU8>,
    progress: Option<(Arc<Ctx>, Duration)>,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_progress = Instant::now();
    let churn_started = Instant::now();
    loop {
        ticks.tick().await;
        if phase.load(Ordering::Relaxed) != 1 {
            return;
        }
        let s = sample(&scraper, pid, run_start, SamplePhase::Churn).await;
        samples.lock().unwrap_or_else(|p| p.into_inner()).push(s);
        if let Some((ctx, duration)) = &progress
            && last_progress.elapsed() >= PROGRESS_EVERY
        {
            last_progress = Instant::now();
            let c = ctx.counts.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let n = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.0}"));
            eprintln!(
                "churn {:>5.0}/{:.0} s | cycles {} (failed {}) | in call {} | rss {} | fds {} | threads {} | udp {} | peer connections {}",
                churn_started.elapsed().as_secs_f64(),
                duration.as_secs_f64(),
                c.cycles,
                c.failed,
                ctx.in_call.load(Ordering::Relaxed),
                s.rss_bytes.map_or("n/a".to_owned(), |v| format!("{:.1} MB", v / 1e6)),
                n(s.fds),
                n(s.threads),
                n(s.udp_sockets),
                n(s.peer_connections),
            );
        }
    }
}

/// The host: admits guests named `admit-*`, denies the others.
async fn host_loop(host: Client, mut events: gatehouse_sdk::Events) {
    let mut decided = HashSet::new();
    while let Some(event) = events.recv().await {
        if let Event::LobbyChanged { entries } = event {
            for entry in entries {
                if !decided.insert(entry.participant_id.clone()) {
                    continue;
                }
                let _ = if entry.display_name.starts_with("admit") {
                    host.admit(entry.participant_id.clone())
                } else {
                    host.deny(entry.participant_id.clone(), Some("churn soak".into()))
                };
            }
        }
    }
}

/// How long a participant stays: 1.5 to 4.5 s, varied by cycle.
fn stay(cycle: u64) -> Duration {
    Duration::from_millis(1_500 + cycle.wrapping_mul(7_919) % 3_000)
}

/// One participant's life.
async fn run_cycle(ctx: &Ctx, cycle: u64) -> Result<(), String> {
    let kind = Kind::of(cycle);
    let options = match kind {
        Kind::GuestAdmitted | Kind::GuestDenied => {
            let link = ctx
                .rest
                .create_link(
                    &ctx.meeting_id,
                    &NewLink {
                        kind: LinkKind::SingleUse,
                        invitee: None,
                        expires_in_secs: Some(600),
                    },
                )
                .await
                .map_err(|e| format!("creating a link: {e}"))?;
            let name = if kind == Kind::GuestAdmitted {
                format!("admit-{cycle}")
            } else {
                format!("deny-{cycle}")
            };
            let redeemed = ctx
                .rest
                .redeem_link(&link.code, &name)
                .await
                .map_err(|e| format!("redeeming a link: {e}"))?;
            let mut o = ConnectOptions::new(ctx.url.clone(), redeemed.token);
            o.ca_pem = ctx.tls.ca_pem.clone();
            o.danger_accept_invalid_certs = ctx.tls.danger_accept_invalid_certs;
            o.join_timeout = JOIN_TIMEOUT;
            o.reconnect = gatehouse_sdk::ReconnectPolicy::never();
            o.media = ctx.staff.media.clone();
            o
        }
        _ => {
            let now = crate::ids::now_ms() / 1000;
            let name = format!("churn-{cycle}");
            let token = ctx
                .keys
                .mint_staff(&name, &name, "default", StaffRole::Staff, now, 3600)
                .map_err(|e| format!("minting a staff token: {e}"))?;
            let mut o = ctx.staff.clone();
            o.token = token;
            o
        }
    };
    let (client, mut events) = tokio::time::timeout(JOIN_TIMEOUT, Client::connect(options))
        .await
        .map_err(|_| "no `joined` within 15 s".to_owned())?
        .map_err(|e| format!("join: {e}"))?;
    let result = in_call(ctx, kind, cycle, &client, &mut events).await;
    let drops = matches!(kind, Kind::StaffReceiverDrops | Kind::StaffPublisherDrops);
    if result.is_ok() && drops {
        ctx.count(|c| c.dropped += 1);
    } else {
        if client.leave().is_ok() && result.is_ok() && kind != Kind::GuestDenied {
            ctx.count(|c| c.left += 1);
        }
    }
    // Without `leave` first, this is a dropped connection as the server sees it.
    client.close().await;
    result
}

async fn in_call(
    ctx: &Ctx,
    kind: Kind,
    cycle: u64,
    client: &Client,
    events: &mut gatehouse_sdk::Events,
) -> Result<(), String> {
    // Staff enter at once (lobby bypass), guests when the host decides.
    let admitted = events
        .wait_for(LOBBY_TIMEOUT, |e| match e {
            Event::Admitted { .. } => Some(true),
            Event::Left { .. } => Some(false),
            Event::Disconnected { .. } => Some(false),
            _ => None,
        })
        .await
        .map_err(|e| format!("waiting for admission: {e}"))?;
    match (kind, admitted) {
        (Kind::GuestAdmitted, true) => ctx.count(|c| c.admitted += 1),
        (Kind::GuestDenied, false) => {
            ctx.count(|c| c.denied += 1);
            return Ok(());
        }
        (Kind::GuestAdmitted | Kind::GuestDenied, admitted) => {
            return Err(format!("the host's decision was not applied (admitted: {admitted})"));
        }
        (_, true) => {}
        (_, false) => return Err("staff left before admission".into()),
    }
    ctx.count(|c| c.joined += 1);
    ctx.in_call.fetch_add(1, Ordering::Relaxed);
    let result = media_and_chat(ctx, kind, cycle, client, events).await;
    ctx.in_call.fetch_sub(1, Ordering::Relaxed);
    result
}

async fn media_and_chat(
    ctx: &Ctx,
    kind: Kind,
    cycle: u64,
    client: &Client,
    events: &mut gatehouse_sdk::Events,
) -> Result<(), String> {
    let sources: &[(TrackSource, &SyntheticConfig)] = match kind {
        Kind::StaffPublisherLeaves | Kind::StaffPublisherDrops => {
            &[(TrackSource::Microphone, &ctx.audio), (TrackSource::Camera, &ctx.video)]
        }
        Kind::GuestAdmitted => &[(TrackSource::Microphone, &ctx.audio)],
        _ => &[],
    };
    let received = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut receivers = JoinSet::new();
    let mut senders = Vec::new();
    let mut result = Ok(());
    for (source, config) in sources {
        if result.is_err() {
            break;
        }
        match client.publish(*source).await {
            Ok(track) => match track.start_synthetic((*config).clone()) {
                Ok(sender) => {
                    senders.push(sender);
                    ctx.count(|c| c.published += 1);
                }
                Err(e) => result = Err(format!("synthetic {source:?}: {e}")),
            },
            Err(e) => result = Err(format!("publishing {source:?}: {e}")),
        }
    }
    if result.is_ok() {
        client
            .chat(format!("churn cycle {cycle}"))
            .map_err(|e| format!("chat: {e}"))?;
        ctx.count(|c| c.chats += 1);
        let until = tokio::time::Instant::now() + stay(cycle);
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(Event::RemoteTrack(track)) => {
                        let received = received.clone();
                        receivers.spawn(async move {
                            while track.recv_rtp().await.is_some() {
                                received.store(true, Ordering::Relaxed);
                            }
                        });
                    }
                    Some(Event::Left { reason, .. }) => {
                        result = Err(format!("removed from the call: {reason:?}"));
                        break;
                    }
                    Some(Event::Disconnected { error }) => {
                        result = Err(format!("disconnected: {}", error.unwrap_or_default()));
                        break;
                    }
                    Some(_) => {}
                    None => {
                        result = Err("the event stream ended".into());
                        break;
                    }
                },
                () = tokio::time::sleep_until(until) => break,
            }
        }
    }
    if received.load(Ordering::Relaxed) {
        ctx.count(|c| c.received_media += 1);
    }
    receivers.abort_all();
    for sender in senders {
        let _ = tokio::time::timeout(Duration::from_secs(2), sender.stop()).await;
    }
    result
}
