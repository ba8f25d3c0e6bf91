//! A front-desk bot: joins a meeting as staff, lets invited guests in from the
//! lobby as soon as they arrive, and greets every guest in chat.
//!
//! ```text
//! cargo run --example front_desk -- --url https://127.0.0.1:8443 --token <staff token> --meeting m_... --ca certs/dev-ca.pem
//! ```

use std::collections::HashSet;

use anyhow::Context;
use clap::Parser;
use gatehouse_sdk::{Client, ConnectOptions, Event};
use gatehouse_signaling::protocol::ParticipantKind;

#[derive(Parser)]
struct Args {
    /// Gateway base URL.
    #[arg(long, env = "GATEHOUSE_URL", default_value = "https://127.0.0.1:8443")]
    url: String,
    /// Staff token.
    #[arg(long, env = "GATEHOUSE_TOKEN")]
    token: String,
    /// Meeting id (`m_...`).
    #[arg(long)]
    meeting: String,
    /// PEM file of the CA to trust (the dev CA).
    #[arg(long)]
    ca: Option<std::path::PathBuf>,
    /// Accept any server certificate (development only).
    #[arg(long)]
    insecure: bool,
    /// Greeting; `{name}` becomes the guest's display name.
    #[arg(long, default_value = "Welcome, {name}! Someone will be with you shortly.")]
    greeting: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let mut options = ConnectOptions::new(&args.url, &args.token).meeting(&args.meeting);
    options.danger_accept_invalid_certs = args.insecure;
    if let Some(path) = &args.ca {
        options.ca_pem = Some(std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?);
    }
    let (client, mut events) = Client::connect(options).await?;
    println!("joined {} as {}", client.meeting().title, client.me().display_name);

    let mut admitted = HashSet::new();
    loop {
        let event = tokio::select! {
            event = events.recv() => match event {
                Some(event) => event,
                None => break,
            },
            _ = tokio::signal::ctrl_c() => {
                client.leave()?;
                continue;
            }
        };
        match event {
            Event::Lobby { status, .. } => {
                println!("the bot itself waits in the lobby: {status:?}")
            }
            Event::Admitted { participants, .. } => {
                println!("in the call with {} others", participants.len())
            }
            Event::LobbyChanged { entries } => {
                for entry in entries.iter().filter(|e| e.invited) {
                    if admitted.insert(entry.participant_id.clone()) {
                        println!("admitting invited {} ({})", entry.display_name, entry.participant_id);
                        client.admit(entry.participant_id.clone())?;
                    }
                }
            }
            Event::ParticipantJoined(participant) if participant.kind == ParticipantKind::Guest => {
                client.chat(args.greeting.replace("{name}", &participant.display_name))?;
            }
            Event::Error { code, message } => eprintln!("server refused: {code:?}: {message}"),
            Event::Left { reason, message } => {
                println!("left: {reason:?} {}", message.unwrap_or_default());
            }
            Event::Disconnected { error } => {
                eprintln!("disconnected: {}", error.unwrap_or_else(|| "socket closed".into()));
            }
            _ => {}
        }
    }
    Ok(())
}
