//! Publishes synthetic audio and video (see `gatehouse_sdk::synthetic`) into a
//! meeting, for load and latency tests with a receiver that checks the payloads.
//!
//! ```text
//! cargo run --example synthetic_publisher -- --url https://127.0.0.1:8443 --token <token> --meeting m_... --seconds 30
//! ```

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use gatehouse_sdk::synthetic::SyntheticConfig;
use gatehouse_sdk::{Client, ConnectOptions, Event};
use gatehouse_signaling::protocol::TrackSource;

#[derive(Parser)]
struct Args {
    /// Gateway base URL.
    #[arg(long, env = "GATEHOUSE_URL", default_value = "https://127.0.0.1:8443")]
    url: String,
    /// Staff or guest token.
    #[arg(long, env = "GATEHOUSE_TOKEN")]
    token: String,
    /// Meeting id (needed with a staff token).
    #[arg(long)]
    meeting: Option<String>,
    /// PEM file of the CA to trust (the dev CA).
    #[arg(long)]
    ca: Option<std::path::PathBuf>,
    /// Accept any server certificate (development only).
    #[arg(long)]
    insecure: bool,
    /// Video bitrate in kbit/s (of the top layer: the camera is simulcast, its lower layers
    /// at a third and a ninth of it).
    #[arg(long, default_value_t = 500)]
    video_kbps: u32,
    /// Publish the camera as one layer instead of three (simulcast `q`, `h`, `f`).
    #[arg(long)]
    no_simulcast: bool,
    /// Video frames per second.
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// How long to publish; 0 = until Ctrl-C.
    #[arg(long, default_value_t = 0)]
    seconds: u64,
    /// How long to wait in the lobby for admission.
    #[arg(long, default_value_t = 300)]
    admission_timeout: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let mut options = ConnectOptions::new(&args.url, &args.token);
    options.meeting_id = args.meeting.clone();
    options.danger_accept_invalid_certs = args.insecure;
    options.media.simulcast = !args.no_simulcast;
    if let Some(path) = &args.ca {
        options.ca_pem = Some(std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?);
    }
    let (client, mut events) = Client::connect(options).await?;
    println!("joined as {}, waiting for admission", client.me().participant_id);
    events
        .wait_for(Duration::from_secs(args.admission_timeout), |event| match event {
            Event::Admitted { .. } => Some(Ok(())),
            Event::Left { reason, message } => Some(Err(anyhow::anyhow!("left: {reason:?} {message:?}"))),
            Event::Lobby { status, .. } => {
                println!("in the lobby: {status:?}");
                None
            }
            _ => None,
        })
        .await??;

    let mic = client.publish(TrackSource::Microphone).await?;
    let cam = client.publish(TrackSource::Camera).await?;
    let video = SyntheticConfig {
        bitrate_bps: args.video_kbps * 1000,
        frame_rate: args.fps,
        ..SyntheticConfig::video()
    };
    let audio_sender = mic.start_synthetic(SyntheticConfig::audio())?;
    let video_sender = cam.start_synthetic(video)?;
    println!(
        "publishing synthetic audio (mid {:?}) and video (mid {:?})",
        mic.mid(),
        cam.mid()
    );

    let deadline = async {
        if args.seconds == 0 {
            std::future::pending::<()>().await
        } else {
            tokio::time::sleep(Duration::from_secs(args.seconds)).await
        }
    };
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            _ = tokio::signal::ctrl_c() => break,
            event = events.recv() => match event {
                Some(Event::Left { reason, .. }) => { println!("left: {reason:?}"); break }
                Some(Event::Disconnected { error }) => { println!("disconnected: {error:?}"); break }
                Some(Event::MediaFailed { role, error }) => eprintln!("{role:?} media failed: {error}"),
                Some(Event::PublisherLayers { layers, .. }) => {
                    let active: Vec<&str> = layers.iter().filter(|l| l.active).map(|l| l.rid.as_str()).collect();
                    println!("layers anybody needs: {active:?}");
                }
                Some(_) => {}
                None => break,
            },
        }
    }
    println!("audio: {:?}", audio_sender.stop().await?);
    let layers = video_sender.layers();
    println!("video: {:?}", video_sender.stop().await?);
    for layer in layers {
        println!("  layer {:?}: {layer:?}", layer.rid);
    }
    client.leave()?;
    client.close().await;
    Ok(())
}
