//! The `gatehouse` command: run the gateway, mint staff tokens, load-test a gateway.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use gatehouse::config::{Config, DEFAULT_DATA_DIR, LogFormat};
use gatehouse::loadtest::LoadtestArgs;
use gatehouse_signaling::token::StaffRole;

/// Gatehouse: a self-hosted meeting gateway for staff and external guests.
///
/// Guests open a link in a browser, wait in the lobby until staff admit them,
/// then talk by audio, video, screen share and chat. Staff use the web console
/// or the Rust SDK.
///
/// Start here:
///   gatehouse serve                                  # https://localhost:8443, data in ./gatehouse-data
///   gatehouse token --name "Alice" --sub alice       # a staff token for the console, curl or the SDK
///   gatehouse loadtest --meetings 5 --publishers 2   # real WebRTC peers against a running gateway
#[derive(Parser)]
#[command(name = "gatehouse", version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway: HTTPS + WebSocket signaling on one port, media on a UDP port per shard.
    ///
    /// With no flags it listens on 0.0.0.0:8443, keeps its database, signing key and a
    /// generated development certificate in ./gatehouse-data, and takes media on UDP 7882 and up
    /// (one port per media shard, one shard per core).
    /// Every flag can also be set as an environment variable or in a TOML file (--config).
    #[command(verbatim_doc_comment)]
    Serve(Box<Config>),
    /// Mint a staff token signed with this gateway's key (for scripts, the console and the SDK).
    ///
    /// Example:
    ///   TOKEN=$(gatehouse token --sub alice@clinic.example --name "Dr Alice" --role staff)
    ///   curl --cacert gatehouse-data/tls/ca.pem -H "Authorization: Bearer $TOKEN" https://localhost:8443/api/v1/meetings
    #[command(verbatim_doc_comment)]
    Token(TokenArgs),
    // No doc comment here: `LoadtestArgs` carries the help, example and exit codes.
    Loadtest(Box<LoadtestArgs>),
}

#[derive(clap::Args)]
struct TokenArgs {
    /// Display name others see.
    #[arg(long)]
    name: String,
    /// Stable staff identifier [default: the name, lower-cased].
    #[arg(long)]
    sub: Option<String>,
    /// `staff` manages meetings they organise or are invited to; `admin` manages all of the organisation's.
    #[arg(long, default_value = "staff", value_parser = parse_role)]
    role: StaffRole,
    /// Organisation the staff member belongs to.
    #[arg(long, default_value = "default")]
    org: String,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 12 * 3600)]
    ttl: u64,
    /// The gateway's data directory (where its signing key lives).
    #[arg(long, env = "GATEHOUSE_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// The cluster's PostgreSQL, whose shared signing key the token is signed with (the
    /// gateways' `--database-url`). Unset: the key in the data directory.
    #[arg(long, env = "GATEHOUSE_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
}

fn parse_role(s: &str) -> Result<StaffRole, String> {
    match s {
        "staff" => Ok(StaffRole::Staff),
        "admin" => Ok(StaffRole::Admin),
        _ => Err("role must be `staff` or `admin`".into()),
    }
}

fn init_logs(json: bool, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().flatten_event(true).with_current_span(true).init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let config = Config::resolve(*args)?;
            init_logs(
                config.log_format() == LogFormat::Json,
                gatehouse::sfu::DEFAULT_LOG_FILTER,
            );
            serve(config).await
        }
        Command::Token(args) => {
            let keys = match args.database_url.filter(|u| !u.is_empty()) {
                None => gatehouse::server::load_or_create_signing_key(&args.data_dir)?,
                #[cfg(feature = "cluster")]
                Some(url) => {
                    let data_dir = args.data_dir.clone();
                    tokio::task::spawn_blocking(move || {
                        let store = gatehouse::store::Store::open_postgres(&url)?;
                        gatehouse::server::shared_signing_key(&store, &data_dir)
                    })
                    .await??
                }
                #[cfg(not(feature = "cluster"))]
                Some(_) => anyhow::bail!("--database-url needs a gatehouse built with the `cluster` feature"),
            };
            let sub = args.sub.unwrap_or_else(|| args.name.to_lowercase().replace(' ', "."));
            let now = gatehouse::ids::now_ms() / 1000;
            let token = keys.mint_staff(&sub, &args.name, &args.org, args.role, now, args.ttl)?;
            println!("{token}");
            Ok(())
        }
        Command::Loadtest(args) => {
            // Quiet by default: the progress line and the report are the output.
            init_logs(false, "error,gatehouse=warn");
            loadtest(*args).await
        }
    }
}

/// Runs `gatehouse loadtest --churn`; exits with the soak report's code.
async fn churn(args: LoadtestArgs) -> anyhow::Result<()> {
    let (json, spawn) = (args.json, args.spawn_gateway);
    let options = match args.into_churn_options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("error: {message}");
            std::process::exit(gatehouse::loadtest::report::EXIT_USAGE);
        }
    };
    let report = if spawn {
        let exe = std::env::current_exe().context("finding this program to start a gateway with")?;
        gatehouse::loadtest::churn::run_spawned(options, &exe).await
    } else {
        let what = options.pid.map(|pid| format!("pid {pid}")).unwrap_or_default();
        gatehouse::loadtest::churn::run(options, what).await
    };
    print_report_and_exit(report.map(|r| (if json { r.to_json() + "\n" } else { r.to_table() }, r.exit_code())))
}

/// Runs `gatehouse loadtest`; exits with the report's code (see its --help).
async fn loadtest(args: LoadtestArgs) -> anyhow::Result<()> {
    if args.churn {
        return churn(args).await;
    }
    let json = args.json;
    let options = match args.into_options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("error: {message}");
            std::process::exit(gatehouse::loadtest::report::EXIT_USAGE);
        }
    };
    let cancel = async {
        shutdown_signal().await;
        eprintln!("\nstopping: closing every peer and printing the partial report (Ctrl-C again to quit at once)");
        tokio::spawn(async {
            shutdown_signal().await;
            std::process::exit(gatehouse::loadtest::report::EXIT_INTERRUPTED);
        });
    };
    let report = gatehouse::loadtest::run_until(options, cancel).await;
    print_report_and_exit(report.map(|r| (if json { r.to_json() + "\n" } else { r.to_table() }, r.exit_code())))
}

/// Prints a load-test report (its JSON or table text) and exits with its code; a run
/// that could not produce one exits with `EXIT_FAILED`.
fn print_report_and_exit(outcome: anyhow::Result<(String, i32)>) -> ! {
    match outcome {
        Ok((text, code)) => {
            use std::io::Write as _;
            print!("{text}");
            let _ = std::io::stdout().flush();
            std::process::exit(code);
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(gatehouse::loadtest::report::EXIT_FAILED);
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let data_dir = config.data_dir();
    let mut running = gatehouse::server::start(config).await?;
    let ca = running
        .ca_file
        .as_ref()
        .map(|p| format!(" --cacert {}", p.display()))
        .unwrap_or_default();
    eprintln!(
        "\nGatehouse is listening on https://{} (public URL {}), media on udp {} (one port per shard, as advertised to clients)\n\
         Staff console:   {}/console\n\
         First staff token:\n  TOKEN=$({} token --data-dir {} --name \"Your Name\" --role admin)\n\
         Try the API:\n  curl{} -H \"Authorization: Bearer $TOKEN\" {}/api/v1/meetings\n",
        running.addr,
        running.state.config.public_url(),
        running
            .state
            .sfu
            .media_addrs()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        running.state.config.public_url(),
        this_command(),
        data_dir.display(),
        ca,
        running.state.config.public_url(),
    );
    tokio::select! {
        result = running.wait() => return result.context("the server stopped"),
        () = shutdown_signal() => {}
    }
    if running.state.config.drain() {
        eprintln!(
            "draining: no new meeting here; stopping once the meetings running here end (signal again to stop now)"
        );
        tokio::select! {
            () = running.drain() => {}
            () = shutdown_signal() => eprintln!("stopping without waiting for the meetings here"),
        }
    }
    running.shutdown().await;
    Ok(())
}

/// How the user can run this same binary again from their shell: `gatehouse` when that
/// is what PATH finds, else its path (relative when under the current directory), so
/// `cargo run --release -- serve` prints `./target/release/gatehouse`.
fn this_command() -> String {
    let Ok(exe) = std::env::current_exe().and_then(std::fs::canonicalize) else {
        return "gatehouse".into();
    };
    let on_path = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .filter_map(|dir| std::fs::canonicalize(dir.join("gatehouse")).ok())
                .any(|found| found == exe)
        })
        .unwrap_or(false);
    if on_path {
        return "gatehouse".into();
    }
    let relative = std::env::current_dir().ok().and_then(|cwd| {
        exe.strip_prefix(std::fs::canonicalize(cwd).ok()?)
            .ok()
            .map(|p| p.to_owned())
    });
    match relative {
        Some(rel) => format!("./{}", rel.display()),
        None => exe.display().to_string(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
