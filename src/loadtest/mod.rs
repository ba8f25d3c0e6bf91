//! `gatehouse loadtest`: drives a running gateway with real WebRTC peers from
//! the SDK and reports what they received, next to what the gateway's own
//! `/metrics` said about its CPU and memory meanwhile.
//!
//! [`scenario`] holds the shape and the timeline, [`report`] the figures and the
//! verdict, [`gateway`] the metrics scraping; all three are pure but for the
//! scraper's HTTP call. This module is the shell: it creates the meetings,
//! starts participants on the ramp schedule, shows progress, stops and closes
//! everyone, and hands the results to [`Report::from_run`].

pub mod churn;
pub mod gateway;
pub mod lean;
mod participant;
pub mod report;
pub mod resources;
pub mod scenario;
pub mod soak;
pub mod spawn;

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use gatehouse_signaling::token::StaffRole;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::DEFAULT_DATA_DIR;
use gatehouse_sdk::synthetic::SyntheticCodec;
use gatehouse_sdk::{ConnectOptions, LobbyBypass, MediaOptions, NewMeeting, ReconnectPolicy, RestClient, TlsOptions};
use gateway::{Scraper, Snapshot};
use participant::{Probe, Setup};
pub use report::{Report, Thresholds};
use scenario::{Phase, Role, Shape, StreamShape};

/// How the load tester proves it may create meetings and join them.
#[derive(Debug, Clone)]
pub enum Auth {
    /// A staff token (e.g. from `gatehouse token`).
    Token(String),
    /// The gateway's data directory: a staff token is minted with its signing key.
    DataDir(PathBuf),
}

/// What drives the participants' media.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Engine {
    /// The SDK's async webrtc-rs peers: a socket and tasks per connection, as a staff
    /// application would connect (any gateway; a client core saturates before a gateway core).
    #[default]
    Sdk,
    /// rtc's sans-IO core, every connection of a thread on one UDP socket with batched I/O,
    /// as the gateway's shards run (real signaling, ICE, DTLS, SRTP; a gateway on this
    /// machine: each connection gets its own 127.x address): about half the SDK engine's
    /// client CPU, about what the gateway spends on the same packets. Its connections send
    /// what browsers send: receiver reports, transport-wide sequence numbers and TWCC
    /// feedback, audio levels.
    Lean,
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct Options {
    /// What drives the media.
    pub engine: Engine,
    /// Lean engine: threads, each with one socket (at least 1).
    pub client_threads: usize,
    /// Lean engine: each frame leaves at its own time, not on the runtime's millisecond tick.
    pub precise_sends: bool,
    /// SDK engine: publish cameras as three simulcast layers (as browsers do); `false` sends
    /// one layer, every packet of which a subscriber receives (the lean engine always does).
    pub simulcast: bool,
    /// The gateway, `https://host:port`.
    pub url: String,
    /// Who we are.
    pub auth: Auth,
    /// Which certificates to trust.
    pub tls: TlsOptions,
    /// The load.
    pub shape: Shape,
    /// What makes the run fail.
    pub thresholds: Thresholds,
    /// Draw the live progress line on stderr.
    pub progress: bool,
    /// How often `/metrics` is scraped.
    pub scrape_interval: Duration,
    /// The gateway's metrics token, when its /metrics requires one.
    pub metrics_token: Option<String>,
}

/// Drive a running gateway with real WebRTC peers and measure what they receive.
///
/// Each participant is a staff member of the token's organisation, in a meeting
/// created for the run (lobby bypass `organization`, so it enters at once), with
/// a publisher and a subscriber connection. Publishers send synthetic audio and
/// video whose packets carry a sequence number, a send time and a checksum;
/// every participant receives every other publisher's tracks and measures loss,
/// jitter, one-way latency (sender and receiver share this machine's clock) and
/// bitrate. Join time runs from holding the token to the first media packet; join to
/// first frame from sending `join` to the first remote video keyframe complete.
/// Meanwhile the gateway's /metrics is read every second for its CPU and memory.
///
/// Phases: ramp (participants start at --ramp per second, until each is in with
/// all its streams flowing, or 15 s after the last start), then the steady phase
/// of --duration seconds, then everyone is closed and the meetings are ended.
///
/// Example, against `gatehouse serve` on this machine (its data directory gives
/// the signing key and the development CA):
///   gatehouse loadtest --meetings 5 --publishers 2 --subscribers 4 --duration 60 \
///       --max-loss 1 --max-p99-ms 150
///
/// Against another host, machine-readable:
///   gatehouse loadtest --url https://meet.example.org --token "$TOKEN" \
///       --meetings 20 --publishers 3 --ramp 5 --duration 300 --json > run.json
///
/// The lean engine (--engine lean, or --lean), to load a gateway on this machine harder
/// than the SDK's peers can; the report then says which side was the limit:
///   gatehouse loadtest --lean --meetings 100 --publishers 2 --no-video --audio-kbps 40
///
/// A join storm (--storm): 200 more participants join within 10 s, 15 s into the steady
/// phase, while 50 calls forward; the report compares the calls' one-way latency before,
/// during and after it (what joining costs the media already flowing):
///   gatehouse loadtest --lean --meetings 50 --publishers 2 --duration 60 \
///       --storm 200 --storm-within 10 --storm-after 15
///
/// Idle participants (--idle): what connected participants cost the gateway with no media;
/// the report states its CPU per idle participant in ms per second:
///   gatehouse loadtest --lean --idle --meetings 250 --publishers 2 --duration 30
///
/// Exit codes:
///   0    finished within the thresholds
///   1    could not run (gateway unreachable, token refused...) or nobody could join
///   2    bad arguments
///   3    a threshold was breached (--max-loss, --max-p99-ms), or a participant failed
///   130  interrupted with Ctrl-C (every peer is closed, the partial report printed)
#[derive(Debug, Clone, Args)]
#[command(verbatim_doc_comment)]
pub struct LoadtestArgs {
    /// The gateway to load.
    #[arg(long, env = "GATEHOUSE_URL", default_value = "https://localhost:8443")]
    pub url: String,
    /// A staff token (from `gatehouse token`); without it one is minted from --data-dir.
    #[arg(long, env = "GATEHOUSE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The gateway's data directory, to mint a staff token with its signing key
    /// (and trust its development CA when --ca is not given).
    #[arg(long, default_value = DEFAULT_DATA_DIR, conflicts_with = "token")]
    pub data_dir: PathBuf,
    /// PEM file of the CA that signed the gateway's certificate.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Accept any certificate (development only).
    #[arg(long, conflicts_with = "ca")]
    pub insecure: bool,
    /// The gateway's --metrics-token, if it protects /metrics.
    #[arg(long, env = "GATEHOUSE_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// What drives the participants' media (see "The lean engine" above).
    #[arg(long, value_enum, default_value_t = Engine::Sdk)]
    pub engine: Engine,
    /// Short for --engine lean.
    #[arg(long, conflicts_with = "engine")]
    pub lean: bool,
    /// Lean engine: threads driving media, each with its own UDP socket (one per client core
    /// to use; pin them with taskset).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub client_threads: usize,
    /// Lean engine: send each frame at its own time (to the microsecond, sleeping for it) as
    /// independent clients do, so the gateway sees datagrams spread over each millisecond;
    /// without it, frames due within one millisecond of the engine's timer leave together, a
    /// burst the gateway reads in one go. Costs the load tester a wake-up per frame.
    #[arg(long)]
    pub precise_sends: bool,
    /// SDK engine: publish each camera as one layer instead of three simulcast layers. With
    /// simulcast (as browsers publish a camera) a publisher sends about 60 % more video
    /// packets than a subscriber receives (it gets one layer); with one layer every video
    /// packet in is forwarded. The lean engine always publishes one layer.
    #[arg(long)]
    pub no_simulcast: bool,
    /// Meetings to create.
    #[arg(long, default_value_t = 1)]
    pub meetings: u32,
    /// Publishers per meeting (they also receive).
    #[arg(long, default_value_t = 2)]
    pub publishers: u32,
    /// Receive-only participants per meeting.
    #[arg(long, default_value_t = 0)]
    pub subscribers: u32,
    /// Video bitrate per publisher, kbit/s: with the sdk engine the top layer's of its
    /// simulcast camera (the two below add a third and a ninth of it).
    #[arg(long, default_value_t = 500)]
    pub video_kbps: u32,
    /// Video frames per second (packets per frame follow from the bitrate: 1100-byte payloads).
    #[arg(long, default_value_t = 30)]
    pub video_fps: u32,
    /// Audio bitrate per publisher, kbit/s.
    #[arg(long, default_value_t = 32)]
    pub audio_kbps: u32,
    /// Audio packets per second (one per frame; 50 = 20 ms frames).
    #[arg(long, default_value_t = 50)]
    pub audio_pps: u32,
    /// Publish no audio.
    #[arg(long)]
    pub no_audio: bool,
    /// Publish no video.
    #[arg(long)]
    pub no_video: bool,
    /// Participants started per second, across all meetings.
    #[arg(long, default_value_t = 10.0)]
    pub ramp: f64,
    /// Length of the steady phase, seconds (1 to 86400).
    #[arg(long, default_value_t = 30)]
    pub duration: u64,
    /// Print one JSON object with every figure instead of the table (no progress line).
    #[arg(long)]
    pub json: bool,
    /// Fail (exit 3) when packet loss is over this percent; streams that never arrive count as loss.
    #[arg(long, value_name = "PERCENT")]
    pub max_loss: Option<f64>,
    /// Fail (exit 3) when the 99th percentile one-way latency is over this many milliseconds.
    #[arg(long, value_name = "MS")]
    pub max_p99_ms: Option<f64>,
    /// A join storm in the steady phase: N more participants join, in meetings of their own
    /// of the run's shape (N a multiple of the participants per meeting; their publishers
    /// publish), all started within --storm-within seconds, --storm-after seconds into the
    /// steady phase. The report gives the one-way latency of the run's own calls before the
    /// storm, during it (until every storm participant has its media flowing) and after it,
    /// the rise of their p99, and the storm participants' join times. --duration must be more
    /// than --storm-after + --storm-within (and leave its participants time to settle).
    #[arg(long, value_name = "N", conflicts_with = "churn")]
    pub storm: Option<u32>,
    /// Idle participants: the run's publishers send until everyone receives everything (every
    /// connection up, every track negotiated), then, when the steady phase starts, stop
    /// sending and announce their tracks muted; everyone stays connected with no media either
    /// way (ICE consent checks only). The report states the gateway's CPU per connected idle
    /// participant in ms per second, measured from 2 s after the media stopped. Lean engine
    /// only. Example: 500 idle participants, each with a muted microphone and camera:
    ///   gatehouse loadtest --lean --idle --meetings 250 --publishers 2 --duration 30
    #[arg(long, verbatim_doc_comment, conflicts_with_all = ["storm", "churn", "max_p99_ms"])]
    pub idle: bool,
    /// Join storm: seconds within which all its participants start (evenly spread).
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub storm_within: u64,
    /// Join storm: seconds into the steady phase at which it starts (the latency before it
    /// is measured over these).
    #[arg(long, default_value_t = 15, value_name = "SECS")]
    pub storm_after: u64,
    /// Join storm, then a leave storm: this many seconds after every storm participant
    /// settled, they all leave at once (as when a large meeting ends). The report adds the
    /// run's own calls' one-way latency over the 5 s from the leaving and its p99 rise over
    /// the latency before the storm. --duration must leave room for it.
    #[arg(long, value_name = "SECS", requires = "storm")]
    pub storm_leave_after: Option<u64>,
    /// Churn soak instead of a steady load: for --duration seconds participants join,
    /// publish, chat and leave, drop without leaving, or wait in the lobby to be admitted
    /// or denied, while the gateway's memory, descriptors, threads, UDP sockets and
    /// connections are sampled; exit 3 when one grows beyond its --max-*-growth limit
    /// (docs/RELIABILITY.md, "Soak and churn"). Example, with a gateway of its own:
    ///   gatehouse loadtest --churn --spawn-gateway --duration 1800
    #[arg(long, verbatim_doc_comment)]
    pub churn: bool,
    /// Churn: start a gateway (this binary's `serve` on loopback, a fresh data directory,
    /// short seat holds) and read its /proc; --url, --token and --data-dir are not used.
    #[arg(long, requires = "churn", conflicts_with = "gateway_pid")]
    pub spawn_gateway: bool,
    /// Churn: the process id of the gateway at --url, on this machine, to read its
    /// /proc (without it, memory, descriptors and threads come from /metrics and UDP
    /// sockets are not counted).
    #[arg(long, requires = "churn")]
    pub gateway_pid: Option<u32>,
    /// Churn: participants in the meeting at a time (besides the host).
    #[arg(long, default_value_t = 4)]
    pub churn_slots: u32,
    /// Churn: seconds between two samples of the gateway.
    #[arg(long, default_value_t = 2)]
    pub sample_secs: u64,
    /// Churn: seconds to wait after the churn for the gateway to be idle again (connections
    /// closed, held seats expired) before its last sample; longer than its --seat-hold.
    #[arg(long, default_value_t = 75)]
    pub settle_secs: u64,
    /// Churn: resident memory growth allowed, MB (highest in the last quarter of the
    /// churn against the highest in its second quarter).
    #[arg(long, default_value_t = 32.0, value_name = "MB")]
    pub max_rss_growth_mb: f64,
    /// Churn: open file descriptors allowed at the end beyond the start.
    #[arg(long, default_value_t = 8)]
    pub max_fd_growth: u32,
    /// Churn: threads allowed at the end beyond the start.
    #[arg(long, default_value_t = 4)]
    pub max_thread_growth: u32,
    /// Churn: UDP sockets allowed at the end beyond the start.
    #[arg(long, default_value_t = 2)]
    pub max_udp_growth: u32,
    /// Churn: peer connections (and signaling connections) allowed at the end beyond the start.
    #[arg(long, default_value_t = 0)]
    pub max_connection_growth: u32,
    /// Churn: share of participant cycles that may fail, percent.
    #[arg(long, default_value_t = 10.0, value_name = "PERCENT")]
    pub max_failed_percent: f64,
}

impl LoadtestArgs {
    /// The run these arguments describe; `Err` is a sentence about a bad argument.
    pub fn into_options(self) -> Result<Options, String> {
        let shape = Shape {
            meetings: self.meetings,
            publishers: self.publishers,
            subscribers: self.subscribers,
            audio: (!self.no_audio).then_some(StreamShape {
                kbps: self.audio_kbps,
                fps: self.audio_pps,
            }),
            video: (!self.no_video).then_some(StreamShape {
                kbps: self.video_kbps,
                fps: self.video_fps,
            }),
            ramp_per_sec: self.ramp,
            duration: Duration::from_secs(self.duration),
            storm: self.storm.map(|participants| scenario::Storm {
                participants,
                within: Duration::from_secs(self.storm_within),
                after: Duration::from_secs(self.storm_after),
                leave_after: self.storm_leave_after.map(Duration::from_secs),
            }),
            idle: self.idle,
        };
        shape.validate().map_err(|e| e.0)?;
        for (flag, value) in [("--max-loss", self.max_loss), ("--max-p99-ms", self.max_p99_ms)] {
            if value.is_some_and(|v| !(v.is_finite() && v >= 0.0)) {
                return Err(format!("{flag} must be a number of at least 0"));
            }
        }
        let engine = if self.lean { Engine::Lean } else { self.engine };
        if self.idle && engine != Engine::Lean {
            return Err(
                "--idle needs the lean engine (--lean): it stops its participants' media and counts their \
                        connections"
                    .into(),
            );
        }
        if !(1..=64).contains(&self.client_threads) {
            return Err("--client-threads must be 1 to 64".into());
        }
        if engine == Engine::Lean && local_udp_addr(&self.url) != "127.0.0.1:0" {
            return Err(format!(
                "--engine lean loads a gateway on this machine (each connection has its own 127.x \
                 address); {} is not a loopback URL: use the sdk engine for a remote gateway",
                self.url
            ));
        }
        let (auth, tls) = self.auth_and_tls()?;
        Ok(Options {
            engine,
            client_threads: self.client_threads,
            precise_sends: self.precise_sends,
            simulcast: engine == Engine::Sdk && !self.no_simulcast,
            url: self.url,
            auth,
            tls,
            shape,
            thresholds: Thresholds {
                max_loss_percent: self.max_loss,
                max_p99_ms: self.max_p99_ms,
            },
            progress: !self.json && std::io::IsTerminal::is_terminal(&std::io::stderr()),
            scrape_interval: Duration::from_secs(1),
            metrics_token: self.metrics_token,
        })
    }

    /// The churn soak these arguments describe (`--churn`).
    pub fn into_churn_options(self) -> Result<churn::ChurnOptions, String> {
        if self.duration == 0 || self.duration > scenario::MAX_DURATION.as_secs() {
            return Err(format!(
                "--duration must be 1 to {} seconds",
                scenario::MAX_DURATION.as_secs()
            ));
        }
        if !(1..=200).contains(&self.churn_slots) {
            return Err("--churn-slots must be 1 to 200".into());
        }
        if !(1..=60).contains(&self.sample_secs) {
            return Err("--sample-secs must be 1 to 60".into());
        }
        if !(self.max_rss_growth_mb.is_finite() && self.max_rss_growth_mb >= 0.0) {
            return Err("--max-rss-growth-mb must be a number of at least 0".into());
        }
        if !(self.max_failed_percent.is_finite() && (0.0..=100.0).contains(&self.max_failed_percent)) {
            return Err("--max-failed-percent must be 0 to 100".into());
        }
        let (auth, tls) = if self.spawn_gateway {
            // Filled in once the gateway runs.
            (Auth::Token(String::new()), TlsOptions::default())
        } else {
            self.auth_and_tls()?
        };
        let connections = f64::from(self.max_connection_growth);
        Ok(churn::ChurnOptions {
            url: self.url,
            auth,
            tls,
            metrics_token: self.metrics_token,
            pid: self.gateway_pid,
            duration: Duration::from_secs(self.duration),
            slots: self.churn_slots,
            sample_every: Duration::from_secs(self.sample_secs),
            settle: Duration::from_secs(self.settle_secs),
            limits: soak::Limits {
                rss_mb: self.max_rss_growth_mb,
                fds: f64::from(self.max_fd_growth),
                threads: f64::from(self.max_thread_growth),
                udp_sockets: f64::from(self.max_udp_growth),
                peer_connections: connections,
                signaling_connections: connections,
                failed_percent: self.max_failed_percent,
            },
            progress: !self.json,
        })
    }

    /// Who we are and which certificates we trust, from --token/--data-dir, --ca, --insecure.
    fn auth_and_tls(&self) -> Result<(Auth, TlsOptions), String> {
        let auth = match &self.token {
            Some(token) => Auth::Token(token.clone()),
            None => Auth::DataDir(self.data_dir.clone()),
        };
        // With a local data directory and no --ca, trust the gateway's development CA.
        let ca = self.ca.clone().or_else(|| {
            let dev_ca = self.data_dir.join("tls").join("ca.pem");
            (matches!(auth, Auth::DataDir(_)) && !self.insecure && dev_ca.exists()).then_some(dev_ca)
        });
        let ca_pem = match ca {
            Some(path) => {
                Some(std::fs::read_to_string(&path).map_err(|e| format!("cannot read --ca {}: {e}", path.display()))?)
            }
            None => None,
        };
        Ok((
            auth,
            TlsOptions {
                ca_pem,
                danger_accept_invalid_certs: self.insecure,
            },
        ))
    }
}

/// A started participant: what it shows, and its task (which returns the packets
/// and bytes it sent).
type Running = (Arc<Probe>, JoinHandle<(u64, u64)>);

/// Runs a load test to the end and returns its report.
pub async fn run(options: Options) -> anyhow::Result<Report> {
    run_until(options, std::future::pending()).await
}

/// Runs a load test until it ends or `cancel` resolves (Ctrl-C); either way every
/// peer is closed and the report covers what was measured (`interrupted` says which).
pub async fn run_until(options: Options, cancel: impl Future<Output = ()>) -> anyhow::Result<Report> {
    options.shape.validate()?;
    let token = staff_token(&options.auth)?;
    let shape = options.shape.clone();
    let rest = RestClient::new(&options.url, &options.tls)?.with_token(token.clone());
    let scraper = Scraper::new(&options.url, &options.tls, options.metrics_token.clone())?;

    let meetings = create_meetings(&rest, &shape).await?;
    let run_start = Instant::now();
    let (stop_tx, stop_rx) = watch::channel(false);
    // The storm's participants stop on their own signal (a leave storm), or with everyone.
    let (storm_stop_tx, storm_stop_rx) = watch::channel(false);
    // An idle run's publishers go quiet when the steady phase starts.
    let (quiet_tx, quiet_rx) = watch::channel(false);
    let scrapes = Arc::new(Mutex::new(Scrapes::default()));
    let scrape_task = tokio::spawn(scrape_loop(
        scraper.clone(),
        scrapes.clone(),
        run_start,
        options.scrape_interval,
        stop_rx.clone(),
    ));

    let mut connect = ConnectOptions::new(options.url.clone(), token);
    connect.ca_pem = options.tls.ca_pem.clone();
    connect.danger_accept_invalid_certs = options.tls.danger_accept_invalid_certs;
    connect.join_timeout = Duration::from_secs(15);
    // A participant the gateway drops is a failure to count, not one to paper over.
    connect.reconnect = ReconnectPolicy::never();
    connect.media = MediaOptions {
        udp_addrs: vec![local_udp_addr(&options.url).to_owned()],
        simulcast: options.simulcast,
        ..MediaOptions::default()
    };
    let setup = Arc::new(Setup {
        connect,
        audio: shape.audio.map(|a| a.synthetic(SyntheticCodec::Opus)),
        video: shape.video.map(|v| v.synthetic(SyntheticCodec::Vp8)),
    });
    let lean = match options.engine {
        Engine::Sdk => None,
        Engine::Lean => {
            let lean_setup = Arc::new(lean::LeanSetup {
                url: options.url.clone(),
                token: setup.connect.token.clone(),
                tls: options.tls.clone(),
                audio: setup.audio.clone(),
                video: setup.video.clone(),
            });
            let engine = lean::LeanEngine::start(options.client_threads, options.precise_sends)
                .context("starting the lean engine")?;
            Some((lean_setup, Arc::new(engine)))
        }
    };
    let mut client_cpu = ClientCpu::default();

    let plan = shape.plan();
    let timeline = shape.timeline();
    let storm_plan = shape.storm_plan();
    let mut storm = StormRun::default();
    let progress = Progress::new(options.progress);
    let mut running: Vec<Running> = Vec::with_capacity(plan.len());
    let mut all_settled_at = None;
    let mut steady: Option<(Duration, Duration)> = None;
    // Both sides' socket drops when the steady phase began: what the phase itself dropped is
    // the difference at its end (a join burst or the teardown drops too, and says nothing of
    // the load measured).
    let mut drops_at_start: Option<(Option<u64>, Option<u64>)> = None;
    let mut interrupted = false;
    let mut ticks = tokio::time::interval(Duration::from_millis(100));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last_sample = (Instant::now(), Totals::default());
    tokio::pin!(cancel);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = &mut cancel => {
                interrupted = true;
                break;
            }
        }
        let elapsed = run_start.elapsed();
        let start = |seat: &scenario::Seat, stop_rx: &watch::Receiver<bool>| -> Running {
            let others = shape.publishers - u32::from(seat.role == Role::Publisher);
            let probe = Arc::new(Probe::new(seat.role, (others * shape.tracks_per_publisher()) as usize));
            let meeting = meetings[seat.meeting as usize].clone();
            let task = match &lean {
                Some((lean_setup, engine)) => tokio::spawn(lean::run(
                    lean_setup.clone(),
                    engine.clone(),
                    *seat,
                    meeting,
                    probe.clone(),
                    stop_rx.clone(),
                    quiet_rx.clone(),
                )),
                None => tokio::spawn(participant::run(
                    setup.clone(),
                    *seat,
                    meeting,
                    probe.clone(),
                    stop_rx.clone(),
                )),
            };
            (probe, task)
        };
        for seat in plan.iter().take(timeline.due(elapsed)).skip(running.len()) {
            running.push(start(seat, &stop_rx));
        }
        if all_settled_at.is_none() && running.len() == plan.len() && all_settled(&plan, &running, &shape) {
            all_settled_at = Some(elapsed);
        }
        let phase = timeline.phase(elapsed, all_settled_at);
        if let Phase::Steady { .. } = phase
            && shape.idle
            && !*quiet_tx.borrow()
        {
            let _ = quiet_tx.send(true);
        }
        if let Phase::Steady { started_at, .. } = phase
            && steady.is_none()
            && elapsed >= shape.measured_from(started_at)
        {
            let started_at = shape.measured_from(started_at);
            steady = Some((started_at, started_at));
            // Latency percentiles describe the steady phase, not the join burst before it.
            for (probe, _) in &running {
                probe.reset_latency();
            }
            client_cpu.start(lean.as_ref().map(|(_, e)| e.thread_ids()).unwrap_or_default());
            drops_at_start = Some((
                resources::udp_drops(std::process::id()),
                lean.as_ref()
                    .and_then(|(_, e)| resources::udp_drops_on_ports(&e.gateway_ports())),
            ));
            scrape_now(&scraper, &scrapes, run_start).await;
        }
        if let (Phase::Steady { started_at, .. }, Some(shape_storm)) = (phase, shape.storm) {
            // The join storm: the calls' latency so far is the yardstick, then its participants
            // start on their schedule, and once they all settled the calls' latency meanwhile
            // is the storm's.
            if storm.started_at.is_none() && elapsed >= started_at + shape_storm.after {
                storm.started_at = Some(elapsed);
                storm.before = latency_of(&running);
            }
            if let Some(storm_start) = storm.started_at {
                let due = shape_storm.due(elapsed.saturating_sub(storm_start));
                for seat in storm_plan.iter().take(due).skip(storm.running.len()) {
                    storm.running.push(start(seat, &storm_stop_rx));
                }
                if storm.settled_at.is_none()
                    && storm.running.len() == storm_plan.len()
                    && all_settled(&storm_plan, &storm.running, &shape)
                {
                    storm.settled_at = Some(elapsed);
                    storm.until_settled = latency_of(&running);
                }
                // The leave storm: everyone of the storm leaves at once, and the calls'
                // latency over the LEAVE_WINDOW from then is the leaving's.
                if let (Some(settled), Some(leave_after)) = (storm.settled_at, shape_storm.leave_after) {
                    if storm.left_at.is_none() && elapsed >= settled + leave_after {
                        storm.left_at = Some(elapsed);
                        storm.until_left = latency_of(&running);
                        let _ = storm_stop_tx.send(true);
                    }
                    if let Some(left) = storm.left_at
                        && storm.after_leaving.is_none()
                        && elapsed >= left + LEAVE_WINDOW
                    {
                        storm.after_leaving = Some(latency_of(&running));
                    }
                }
            }
        }
        if last_sample.0.elapsed() >= Duration::from_secs(1) {
            let totals = Totals::of(&running);
            progress.show(phase, elapsed, &totals, &last_sample, plan.len());
            last_sample = (Instant::now(), totals);
        }
        if phase == Phase::Done {
            break;
        }
    }
    let stopped_at = run_start.elapsed();
    let mut client = report::ClientFigures {
        engine: match options.engine {
            Engine::Sdk => "sdk",
            Engine::Lean => "lean",
        }
        .to_owned(),
        simulcast: options.simulcast,
        cores: std::thread::available_parallelism().map_or(1, usize::from),
        ..report::ClientFigures::default()
    };
    let storm_started = storm.started_at.map(|at| {
        (
            at.saturating_sub(steady.map_or(at, |(from, _)| from)),
            storm.settled_at.map(|settled| settled.saturating_sub(at)),
        )
    });
    if let Some((from, _)) = steady {
        steady = Some((from, stopped_at));
        client_cpu.finish(&mut client);
        // The last scrape before teardown closes the steady window.
        scrape_now(&scraper, &scrapes, run_start).await;
    }
    let gateway_ports = lean.as_ref().map(|(_, engine)| engine.gateway_ports());
    let (client_start, gateway_start) = drops_at_start.unwrap_or_default();
    let client_end = resources::udp_drops(std::process::id());
    let gateway_end = gateway_ports.as_deref().and_then(resources::udp_drops_on_ports);
    client.socket_drops = resources::drops_between(client_start, client_end);
    client.socket_drops_run = client_end;
    progress.finish(if interrupted {
        "interrupted: closing every peer"
    } else {
        "closing every peer"
    });

    // Their connections as they were at the end, before anyone leaves.
    for (probe, _) in running.iter().chain(&storm.running) {
        probe.note_connections();
    }
    let _ = stop_tx.send(true);
    let _ = storm_stop_tx.send(true);
    // They all close at once; one deadline bounds the whole teardown.
    let deadline = tokio::time::Instant::now() + participant::CLOSE_TIMEOUT + Duration::from_secs(5);
    let participants = close_all(running, deadline).await;
    let storm_participants = close_all(storm.running, deadline).await;
    let _ = scrape_task.await;
    end_meetings(&rest, &meetings).await;
    if let Some((_, engine)) = lean {
        // Every participant task has ended, so this is the last handle.
        if let Ok(engine) = Arc::try_unwrap(engine) {
            let _ = tokio::task::spawn_blocking(move || engine.stop()).await;
        }
    }

    let scrapes = std::mem::take(&mut *scrapes.lock().unwrap_or_else(|p| p.into_inner()));
    let storm_data = storm_started.map(|(started_after, settled_in)| {
        // The calls' latency windows: the last one ends where the run's own figures do.
        let mut all = gatehouse_sdk::synthetic::LatencyHistogram::default();
        for s in participants.iter().flat_map(|p| &p.streams) {
            all.merge(&s.latency);
        }
        // A leave storm ends "after" where it begins, and its window where the run did if that
        // came first.
        let after_end = if storm.left_at.is_some() {
            &storm.until_left
        } else {
            &all
        };
        let (during, after) = match settled_in {
            Some(_) => (
                storm.until_settled.since(&storm.before),
                after_end.since(&storm.until_settled),
            ),
            None => (all.since(&storm.before), Default::default()),
        };
        let leaving = storm
            .left_at
            .map(|_| storm.after_leaving.as_ref().unwrap_or(&all).since(&storm.until_left));
        report::StormData {
            participants: storm_participants,
            started_after,
            settled_in,
            latency_before: storm.before.clone(),
            latency_during: during,
            latency_after: after,
            left_after: storm
                .left_at
                .zip(storm.settled_at)
                .map(|(left, settled)| left.saturating_sub(settled)),
            latency_leaving: leaving,
        }
    });
    let data = report::RunData {
        shape,
        thresholds: options.thresholds,
        meetings_created: meetings.len(),
        participants,
        gateway: gateway::GatewayFigures {
            socket_drops: resources::drops_between(gateway_start, gateway_end),
            // After the teardown: the socket's whole life, joins and leaves included.
            socket_drops_run: gateway_ports.as_deref().and_then(resources::udp_drops_on_ports),
            ..gateway::figures(&scrapes.snapshots, scrapes.errors, steady)
        },
        client,
        elapsed: stopped_at,
        steady,
        interrupted,
        storm: storm_data,
    };
    Ok(Report::from_run(&data))
}

/// A join storm as the runner goes: when it started and its participants settled (elapsed
/// since the run's start), its participants, and the run's calls' latency at both moments.
#[derive(Default)]
struct StormRun {
    started_at: Option<Duration>,
    settled_at: Option<Duration>,
    running: Vec<Running>,
    before: gatehouse_sdk::synthetic::LatencyHistogram,
    until_settled: gatehouse_sdk::synthetic::LatencyHistogram,
    /// A leave storm: when its participants were told to leave, the calls' latency until
    /// then, and until LEAVE_WINDOW later.
    left_at: Option<Duration>,
    until_left: gatehouse_sdk::synthetic::LatencyHistogram,
    after_leaving: Option<gatehouse_sdk::synthetic::LatencyHistogram>,
}

/// How long after a leave storm the run's calls' latency is the leaving's.
const LEAVE_WINDOW: Duration = Duration::from_secs(5);

/// The latency the participants' streams recorded so far (since the steady phase began).
fn latency_of(running: &[Running]) -> gatehouse_sdk::synthetic::LatencyHistogram {
    let mut out = gatehouse_sdk::synthetic::LatencyHistogram::default();
    for (probe, _) in running {
        out.merge(&probe.latency());
    }
    out
}

/// Waits for the participants' tasks (the run told them to stop) until `deadline`, aborting
/// the late, and returns their outcomes.
async fn close_all(running: Vec<Running>, deadline: tokio::time::Instant) -> Vec<report::ParticipantOutcome> {
    let mut participants = Vec::with_capacity(running.len());
    for (probe, mut task) in running {
        let (sent_packets, sent_bytes) = match tokio::time::timeout_at(deadline, &mut task).await {
            Ok(Ok(sent)) => sent,
            _ => {
                task.abort();
                (0, 0)
            }
        };
        participants.push(probe.outcome(sent_packets, sent_bytes));
    }
    participants
}

/// Whether every participant is done joining. Streams of publishers that
/// failed are not waited for: they will not come.
fn all_settled(plan: &[scenario::Seat], running: &[Running], shape: &Shape) -> bool {
    let meetings = plan.iter().map(|s| s.meeting as usize + 1).max().unwrap_or(0);
    let mut failed_publishers = vec![0usize; meetings];
    for (seat, (probe, _)) in plan.iter().zip(running) {
        if seat.role == Role::Publisher && probe.failed() {
            failed_publishers[seat.meeting as usize] += 1;
        }
    }
    let tracks = shape.tracks_per_publisher() as usize;
    plan.iter()
        .zip(running)
        .all(|(seat, (probe, _))| probe.settled(failed_publishers[seat.meeting as usize] * tracks))
}

/// The staff token to use: given, or minted with the gateway's signing key.
pub(crate) fn staff_token(auth: &Auth) -> anyhow::Result<String> {
    match auth {
        Auth::Token(token) => Ok(token.clone()),
        Auth::DataDir(dir) => {
            // Never make a key here: a fresh one would sign tokens no gateway accepts.
            anyhow::ensure!(
                dir.join("signing.key").exists(),
                "no signing key in {}: pass --token, or --data-dir of the gateway to load",
                dir.display()
            );
            let keys = crate::server::load_or_create_signing_key(dir)?;
            let now = crate::ids::now_ms() / 1000;
            let ttl = 24 * 3600 + 3600;
            Ok(keys.mint_staff("loadtest", "Load tester", "default", StaffRole::Staff, now, ttl)?)
        }
    }
}

/// Creates the run's meetings; on failure ends those already made.
async fn create_meetings(rest: &RestClient, shape: &Shape) -> anyhow::Result<Vec<String>> {
    let tag = crate::ids::random_code(6);
    // The run's own meetings, then the join storm's.
    let count = shape.meetings + shape.storm_meetings();
    let mut ids = Vec::with_capacity(count as usize);
    for n in 0..count {
        let meeting = NewMeeting {
            title: format!("Load test {tag} #{}", n + 1),
            lobby_bypass: Some(LobbyBypass::Organization),
            max_participants: Some(shape.per_meeting().max(2)),
            ..NewMeeting::default()
        };
        match rest.create_meeting(&meeting).await {
            Ok(m) => ids.push(m.meeting_id),
            Err(e) => {
                end_meetings(rest, &ids).await;
                return Err(e).context("creating the load test's meetings");
            }
        }
    }
    Ok(ids)
}

/// Ends the run's meetings (best effort: the gateway cleans up empty ones anyway).
async fn end_meetings(rest: &RestClient, ids: &[String]) {
    for id in ids {
        let path = format!("/api/v1/meetings/{id}/end");
        match tokio::time::timeout(Duration::from_secs(5), rest.request(reqwest::Method::POST, &path, None)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::debug!(meeting_id = %id, error = %e, "ending a load test meeting"),
            Err(_) => tracing::debug!(meeting_id = %id, "ending a load test meeting timed out"),
        }
    }
}

/// Loopback gateways get loopback candidates only; others every interface.
pub(crate) fn local_udp_addr(url: &str) -> &'static str {
    let loopback = url::Url::parse(url).ok().is_some_and(|u| match u.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    });
    if loopback { "127.0.0.1:0" } else { "0.0.0.0:0" }
}

/// The load tester's CPU at the start of the steady phase: the whole process's and each
/// lean engine thread's (seconds), to take the difference at its end.
#[derive(Default)]
struct ClientCpu {
    at: Option<Instant>,
    process: Option<f64>,
    threads: Vec<(i32, Option<f64>)>,
}

impl ClientCpu {
    fn start(&mut self, thread_ids: Vec<i32>) {
        self.at = Some(Instant::now());
        self.process = resources::cpu_seconds("/proc/self/stat");
        self.threads = thread_ids
            .into_iter()
            .map(|tid| (tid, resources::cpu_seconds(&format!("/proc/self/task/{tid}/stat"))))
            .collect();
    }

    fn finish(&self, figures: &mut report::ClientFigures) {
        let Some(at) = self.at else { return };
        let secs = at.elapsed().as_secs_f64();
        if secs <= 0.0 {
            return;
        }
        let percent = |before: Option<f64>, now: Option<f64>| Some((now? - before?).max(0.0) / secs * 100.0);
        figures.cpu_percent = percent(self.process, resources::cpu_seconds("/proc/self/stat"));
        figures.busiest_thread_percent = self
            .threads
            .iter()
            .filter_map(|(tid, before)| {
                percent(*before, resources::cpu_seconds(&format!("/proc/self/task/{tid}/stat")))
            })
            .reduce(f64::max);
    }
}

#[derive(Default)]
struct Scrapes {
    snapshots: Vec<Snapshot>,
    errors: usize,
}

async fn scrape_now(scraper: &Scraper, scrapes: &Mutex<Scrapes>, run_start: Instant) {
    let result = scraper.scrape(run_start.elapsed()).await;
    let mut scrapes = scrapes.lock().unwrap_or_else(|p| p.into_inner());
    match result {
        Ok(snapshot) => scrapes.snapshots.push(snapshot),
        Err(e) => {
            if scrapes.errors == 0 {
                tracing::warn!(error = %e, "cannot read the gateway's /metrics; its figures will be n/a");
            }
            scrapes.errors += 1;
        }
    }
}

async fn scrape_loop(
    scraper: Scraper,
    scrapes: Arc<Mutex<Scrapes>>,
    run_start: Instant,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => scrape_now(&scraper, &scrapes, run_start).await,
            _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
        }
    }
}

/// Counts across all participants at one moment, for the live display.
#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    joined: usize,
    received: u64,
    expected: u64,
    lost: u64,
}

impl Totals {
    fn of(running: &[Running]) -> Totals {
        let mut t = Totals::default();
        for (probe, _) in running {
            t.joined += usize::from(probe.joined());
            for stream in probe.streams() {
                let s = stream.summary();
                t.received += s.received;
                t.expected += s.expected;
                t.lost += s.lost;
            }
        }
        t
    }
}

/// The live progress line (a no-op when hidden).
struct Progress {
    bar: ProgressBar,
}

impl Progress {
    fn new(visible: bool) -> Progress {
        let bar = if visible {
            let bar = ProgressBar::new_spinner();
            bar.set_style(ProgressStyle::with_template("{spinner} {msg}").expect("the template is a valid literal"));
            bar.enable_steady_tick(Duration::from_millis(200));
            bar.set_message("creating meetings, starting participants");
            bar
        } else {
            ProgressBar::hidden()
        };
        Progress { bar }
    }

    fn show(&self, phase: Phase, elapsed: Duration, now: &Totals, before: &(Instant, Totals), planned: usize) {
        if self.bar.is_hidden() {
            return;
        }
        let dt = before.0.elapsed().as_secs_f64().max(1e-3);
        let pps = now.received.saturating_sub(before.1.received) as f64 / dt;
        // Loss over the last interval (what changed), not since the start.
        let d_expected = now.expected.saturating_sub(before.1.expected);
        let d_lost = now.lost.saturating_sub(before.1.lost);
        let loss = if d_expected == 0 {
            0.0
        } else {
            d_lost as f64 * 100.0 / d_expected as f64
        };
        let when = match phase {
            Phase::Ramp => format!("ramp    {:>5.0} s", elapsed.as_secs_f64()),
            Phase::Steady { ends_at, .. } => format!(
                "steady  {:>5.0} s, {:.0} s left",
                elapsed.as_secs_f64(),
                ends_at.saturating_sub(elapsed).as_secs_f64()
            ),
            Phase::Done => "done".to_owned(),
        };
        self.bar.set_message(format!(
            "{when} | {}/{planned} connected | {pps:>7.0} packets/s received | loss {loss:.2} %",
            now.joined
        ));
    }

    fn finish(&self, message: &'static str) {
        if !self.bar.is_hidden() {
            self.bar.finish_with_message(message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: LoadtestArgs,
    }

    fn parse(args: &[&str]) -> Result<Options, String> {
        let cli =
            Cli::try_parse_from(std::iter::once("loadtest").chain(args.iter().copied())).map_err(|e| e.to_string())?;
        cli.args.into_options()
    }

    #[test]
    fn defaults_make_a_small_valid_run() {
        let o = parse(&["--data-dir", "/nonexistent", "--json"]).unwrap();
        assert_eq!(o.url, "https://localhost:8443");
        assert!(matches!(o.auth, Auth::DataDir(ref d) if d == std::path::Path::new("/nonexistent")));
        assert_eq!((o.shape.meetings, o.shape.publishers, o.shape.subscribers), (1, 2, 0));
        assert_eq!(o.shape.audio, Some(StreamShape { kbps: 32, fps: 50 }));
        assert_eq!(o.shape.video, Some(StreamShape { kbps: 500, fps: 30 }));
        assert_eq!(o.shape.duration, Duration::from_secs(30));
        assert!(!o.progress, "no progress line with --json");
        assert_eq!(o.tls.ca_pem, None);
        assert_eq!(o.thresholds, Thresholds::default());
        assert!(o.simulcast, "the SDK engine's cameras are simulcast, as browsers' are");
        assert!(!parse(&["--no-simulcast"]).unwrap().simulcast);
        assert!(
            !parse(&["--lean"]).unwrap().simulcast,
            "the lean engine sends one layer"
        );
    }

    #[test]
    fn flags_set_the_shape_and_thresholds() {
        let o = parse(&[
            "--token",
            "t",
            "--meetings",
            "3",
            "--publishers",
            "1",
            "--subscribers",
            "4",
            "--no-video",
            "--audio-kbps",
            "48",
            "--ramp",
            "2.5",
            "--duration",
            "90",
            "--max-loss",
            "0.5",
            "--max-p99-ms",
            "150",
            "--insecure",
        ])
        .unwrap();
        assert!(matches!(o.auth, Auth::Token(ref t) if t == "t"));
        assert_eq!(o.shape.video, None);
        assert_eq!(o.shape.audio.unwrap().kbps, 48);
        assert_eq!(o.shape.ramp_per_sec, 2.5);
        assert_eq!(o.shape.total_participants(), 15);
        assert_eq!(o.thresholds.max_loss_percent, Some(0.5));
        assert_eq!(o.thresholds.max_p99_ms, Some(150.0));
        assert!(o.tls.danger_accept_invalid_certs);
    }

    #[test]
    fn storm_flags_make_issue_13s_join_storm() {
        let o = parse(&["--token", "t", "--meetings", "50", "--duration", "60", "--storm", "200"]).unwrap();
        assert_eq!(
            o.shape.storm,
            Some(scenario::Storm {
                participants: 200,
                within: Duration::from_secs(10),
                after: Duration::from_secs(15),
                leave_after: None,
            }),
            "200 within 10 s, 15 s into the steady phase by default"
        );
        assert_eq!(o.shape.storm_meetings(), 100);
        let o = parse(&[
            "--token",
            "t",
            "--storm",
            "4",
            "--storm-within",
            "3",
            "--storm-after",
            "5",
        ])
        .unwrap();
        assert_eq!(
            o.shape.storm.map(|s| (s.within, s.after)),
            Some((Duration::from_secs(3), Duration::from_secs(5)))
        );
        assert!(parse(&["--token", "t"]).unwrap().shape.storm.is_none());
        let e = parse(&["--token", "t", "--storm", "3"]).unwrap_err();
        assert!(e.contains("--storm must be a positive multiple of the 2"), "{e}");
        let e = parse(&["--token", "t", "--storm", "4", "--duration", "20"]).unwrap_err();
        assert!(e.contains("--duration must be more than"), "{e}");
        let e = parse(&["--token", "t", "--storm", "4", "--churn"]).unwrap_err();
        assert!(e.contains("--churn"), "{e}");
        let o = parse(&["--token", "t", "--storm", "4", "--storm-leave-after", "5"]).unwrap();
        assert_eq!(o.shape.storm.and_then(|s| s.leave_after), Some(Duration::from_secs(5)));
        let e = parse(&["--token", "t", "--storm-leave-after", "5"]).unwrap_err();
        assert!(e.contains("--storm"), "a leave storm needs a storm: {e}");
    }

    #[test]
    fn idle_runs_need_the_lean_engine_and_no_media_thresholds() {
        let o = parse(&["--token", "t", "--lean", "--idle", "--meetings", "250"]).unwrap();
        assert!(o.shape.idle);
        assert_eq!(o.shape.total_participants(), 500);
        assert!(!parse(&["--token", "t", "--lean"]).unwrap().shape.idle);
        for (args, needle) in [
            (&["--idle"][..], "--idle needs the lean engine"),
            (&["--lean", "--idle", "--max-p99-ms", "50"][..], "cannot be used with"),
            (&["--lean", "--idle", "--storm", "2"][..], "cannot be used with"),
            (
                &["--lean", "--idle", "--duration", "2"][..],
                "--duration must be more than 2 s with --idle",
            ),
        ] {
            let err = parse(&[&["--token", "t"][..], args].concat()).expect_err(needle);
            assert!(err.contains(needle), "{args:?}: {err}");
        }
        let help = Cli::command().render_long_help().to_string();
        assert!(
            help.contains("gatehouse loadtest --lean --idle --meetings 250"),
            "{help}"
        );
    }

    #[test]
    fn bad_values_are_refused_with_the_flag_named() {
        for (args, needle) in [
            (&["--duration", "0"][..], "--duration"),
            (&["--duration", "100000"][..], "--duration"),
            (&["--meetings", "0"][..], "--meetings"),
            (&["--no-audio", "--no-video"][..], "nothing to send"),
            (&["--max-loss=-1"][..], "--max-loss"),
            (&["--max-p99-ms", "NaN"][..], "--max-p99-ms"),
            (&["--ramp", "0"][..], "--ramp"),
            (&["--token", "t", "--data-dir", "x"][..], "cannot be used with"),
            (&["--ca", "x.pem", "--insecure"][..], "cannot be used with"),
            (&["--ca", "/nonexistent/ca.pem"][..], "cannot read --ca"),
        ] {
            let err = parse(args).expect_err(needle);
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }

    #[test]
    fn the_lean_engine_is_chosen_by_flag_and_needs_a_gateway_on_this_machine() {
        assert_eq!(parse(&["--token", "t"]).unwrap().engine, Engine::Sdk);
        for args in [
            &["--token", "t", "--lean"][..],
            &["--token", "t", "--engine", "lean"][..],
        ] {
            let o = parse(args).unwrap();
            assert_eq!((o.engine, o.client_threads), (Engine::Lean, 1), "{args:?}");
        }
        let o = parse(&[
            "--token",
            "t",
            "--lean",
            "--client-threads",
            "2",
            "--url",
            "https://127.0.0.1:9",
        ])
        .unwrap();
        assert_eq!(o.client_threads, 2);
        for (args, needle) in [
            (
                &["--lean", "--url", "https://meet.example.org"][..],
                "not a loopback URL",
            ),
            (&["--lean", "--engine", "sdk"][..], "cannot be used with"),
            (&["--client-threads", "0"][..], "--client-threads"),
            (&["--engine", "fast"][..], "possible values: sdk, lean"),
        ] {
            let err = parse(&[&["--token", "t"][..], args].concat()).expect_err(needle);
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }

    #[test]
    fn help_teaches_with_an_example_and_the_exit_codes() {
        let help = Cli::command().render_long_help().to_string();
        for needle in [
            "gatehouse loadtest --meetings 5",
            "Exit codes:",
            "130",
            "--max-p99-ms",
            "gatehouse loadtest --lean",
            "--engine <ENGINE>",
            "lean: ",
            "--client-threads",
        ] {
            assert!(help.contains(needle), "missing {needle:?} in\n{help}");
        }
    }

    #[test]
    fn churn_flags_set_the_soak_and_its_limits() {
        let churn = |args: &[&str]| {
            Cli::try_parse_from(["loadtest", "--churn"].iter().chain(args).copied())
                .map_err(|e| e.to_string())
                .and_then(|cli| cli.args.into_churn_options())
        };
        let o = churn(&[
            "--spawn-gateway",
            "--duration",
            "1800",
            "--churn-slots",
            "6",
            "--max-fd-growth",
            "3",
            "--max-rss-growth-mb",
            "10",
        ])
        .unwrap();
        assert_eq!((o.duration, o.slots), (Duration::from_secs(1800), 6));
        assert_eq!(
            (o.limits.fds, o.limits.rss_mb, o.limits.peer_connections),
            (3.0, 10.0, 0.0)
        );
        assert_eq!(o.settle, Duration::from_secs(75));
        assert!(o.progress);
        let o = churn(&["--gateway-pid", "42", "--data-dir", "/nonexistent"]).unwrap();
        assert_eq!(o.pid, Some(42));
        for (args, needle) in [
            (&["--churn-slots", "0"][..], "--churn-slots"),
            (&["--sample-secs", "0"][..], "--sample-secs"),
            (&["--max-failed-percent", "150"][..], "--max-failed-percent"),
            (&["--spawn-gateway", "--gateway-pid", "1"][..], "cannot be used with"),
        ] {
            let err = churn(args).expect_err(needle);
            assert!(err.contains(needle), "{args:?}: {err}");
        }
        assert!(
            Cli::try_parse_from(["loadtest", "--spawn-gateway"]).is_err(),
            "--spawn-gateway needs --churn"
        );
    }

    #[test]
    fn loopback_gateways_get_loopback_candidates() {
        assert_eq!(local_udp_addr("https://localhost:8443"), "127.0.0.1:0");
        assert_eq!(local_udp_addr("https://127.0.0.1:8443"), "127.0.0.1:0");
        assert_eq!(local_udp_addr("https://[::1]:8443"), "127.0.0.1:0");
        assert_eq!(local_udp_addr("https://meet.example.org"), "0.0.0.0:0");
    }
}
