//! The SDK's media code end to end without the gateway: our `Publisher` offers
//! straight to our `Subscriber` (a stand-in for the SFU's answering side) on
//! 127.0.0.1, both send synthetic audio and video, and the receiver checks every
//! payload. Signaling is relayed in-process exactly as the gateway would carry it.

use std::sync::Arc;
use std::time::Duration;

use gatehouse_sdk::media::{MediaOptions, Publisher, RemoteTrack, Subscriber};
use gatehouse_sdk::now_us;
use gatehouse_sdk::synthetic::{ReceiverStats, StreamSummary, SyntheticConfig};
use gatehouse_signaling::protocol::{ClientMessage, PeerRole, TrackSource};
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(20);

/// One layer per track: with no SFU between them to pick a layer, a simulcast camera's
/// three layers would all reach the subscriber, which is not what this test checks.
fn loopback(stream_id: &str) -> MediaOptions {
    MediaOptions {
        udp_addrs: vec!["127.0.0.1:0".into()],
        stream_id: stream_id.into(),
        simulcast: false,
        ..MediaOptions::default()
    }
}

/// Carries each side's frames to the other, as the gateway's signaling would.
async fn relay(
    publisher: Arc<Publisher>,
    subscriber: Arc<Subscriber>,
    mut from_publisher: mpsc::UnboundedReceiver<ClientMessage>,
    mut from_subscriber: mpsc::UnboundedReceiver<ClientMessage>,
) {
    loop {
        tokio::select! {
            Some(msg) = from_publisher.recv() => match msg {
                ClientMessage::PublishOffer { sdp, tracks } => {
                    assert!(!tracks.is_empty());
                    subscriber.on_offer(sdp).await.expect("subscriber answers");
                }
                ClientMessage::IceCandidate { target: PeerRole::Publisher, candidate } => {
                    subscriber.add_remote_candidate(candidate).await.expect("subscriber takes candidate");
                }
                other => panic!("publisher sent {other:?}"),
            },
            Some(msg) = from_subscriber.recv() => match msg {
                ClientMessage::SubscribeAnswer { sdp } => assert!(publisher.on_answer(sdp), "an offer was waiting"),
                ClientMessage::IceCandidate { target: PeerRole::Subscriber, candidate } => {
                    publisher.add_remote_candidate(candidate).await.expect("publisher takes candidate");
                }
                other => panic!("subscriber sent {other:?}"),
            },
            else => break,
        }
    }
}

/// Counts a track's synthetic payloads, publishing the running summary.
async fn receive(track: Arc<RemoteTrack>, progress: watch::Sender<StreamSummary>) {
    let codec = track.synthetic_codec().expect("opus or vp8");
    let mut stats = ReceiverStats::new(codec, now_us());
    while let Some(packet) = track.recv_rtp().await {
        let _ = stats.on_payload(now_us(), &packet.payload);
        progress.send_replace(stats.summary());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synthetic_audio_and_video_arrive_intact_in_order_without_loss() {
    let (pub_tx, pub_rx) = mpsc::unbounded_channel();
    let (sub_tx, sub_rx) = mpsc::unbounded_channel();
    let publisher = Publisher::new(loopback("p_alice"), pub_tx).await.expect("publisher");
    let (subscriber, mut remote_tracks) = Subscriber::new(loopback("p_bob"), sub_tx);
    let relay = tokio::spawn(relay(publisher.clone(), subscriber.clone(), pub_rx, sub_rx));

    // Two negotiations: the second is a renegotiation on the same connection.
    let mic = timeout(WAIT, publisher.publish(TrackSource::Microphone))
        .await
        .expect("in time")
        .expect("publish mic");
    let cam = timeout(WAIT, publisher.publish(TrackSource::Camera))
        .await
        .expect("in time")
        .expect("publish camera");
    assert_eq!(mic.mid().as_deref(), Some("0"));
    assert_eq!(cam.mid().as_deref(), Some("1"));
    assert_eq!(mic.mime_type(), "audio/opus");
    assert_eq!(cam.mime_type(), "video/VP8");
    assert!(mic.payload_type().is_some() && cam.payload_type().is_some());

    let video = SyntheticConfig {
        bitrate_bps: 400_000,
        ..SyntheticConfig::video()
    };
    assert!(video.packets_per_frame() > 1, "frames span packets");
    // Both ends up before the first packet: the publisher's side of DTLS can finish before
    // the subscriber's, and what it sends in between cannot be decrypted (lost, as on any
    // network; this test counts every packet from the first).
    mic.wait_connected(WAIT).await.expect("publisher connected");
    subscriber.wait_connected(WAIT).await.expect("subscriber connected");
    let audio_sender = mic.start_synthetic(SyntheticConfig::audio()).expect("audio sender");
    let video_sender = cam.start_synthetic(video).expect("video sender");

    let mut progress = Vec::new();
    let mut remote_camera = None;
    for _ in 0..2 {
        let track = timeout(WAIT, remote_tracks.recv())
            .await
            .expect("remote track in time")
            .expect("a track");
        assert_eq!(track.participant_id(), "p_alice", "msid stream id");
        let local = if track.mime_type().eq_ignore_ascii_case("audio/opus") {
            &mic
        } else {
            &cam
        };
        assert_eq!(track.track_id(), local.local_id(), "msid track id");
        let (tx, rx) = watch::channel(ReceiverStats::new(track.synthetic_codec().unwrap(), 0).summary());
        progress.push((local.source(), rx));
        let track = Arc::new(track);
        if local.source() == TrackSource::Camera {
            remote_camera = Some(track.clone());
        }
        tokio::spawn(receive(track, tx));
    }

    // Let media flow for a while (2 s of audio), then stop and account for every packet.
    for (_, rx) in &mut progress {
        timeout(WAIT, rx.wait_for(|s| s.received >= 100))
            .await
            .expect("100 packets in time")
            .unwrap();
    }
    // A keyframe request reaches the sender, which counts it.
    let requests = video_sender.sent().keyframe_requests;
    remote_camera
        .expect("the camera arrived")
        .request_keyframe()
        .await
        .expect("PLI sent");
    let asked = timeout(WAIT, async {
        while video_sender.sent().keyframe_requests == requests {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    asked.await.expect("the PLI reaches the video sender");
    let audio_sent = audio_sender.stop().await.expect("audio sender ran cleanly");
    let video_sent = video_sender.stop().await.expect("video sender ran cleanly");

    for (source, rx) in &mut progress {
        let sent = if *source == TrackSource::Microphone {
            audio_sent
        } else {
            video_sent
        };
        let arrived = timeout(WAIT, rx.wait_for(|s| s.received + s.corrupt >= sent.packets))
            .await
            .is_ok();
        let summary = rx.borrow().clone();
        assert!(
            arrived,
            "{source:?}: not every packet arrived within {WAIT:?}: sent {sent:?}\n  received {summary:#?}"
        );
        println!("{source:?}: sent {sent:?}\n  received {summary:#?}");
        assert_eq!(summary.received, sent.packets, "{source:?}: every packet arrived");
        assert_eq!(summary.first_seq, Some(0), "{source:?}: from the first packet");
        assert_eq!(summary.lost, 0, "{source:?}");
        assert_eq!(summary.duplicates, 0, "{source:?}");
        assert_eq!(summary.reordered, 0, "{source:?}");
        assert_eq!(summary.corrupt, 0, "{source:?}");
        assert_eq!(summary.bytes, sent.bytes, "{source:?}");
        let p99 = summary.latency_p99_us.expect("latency measured");
        // Live, not queued: a bound only a defect breaks, even on a busy machine.
        assert!(p99 < 1_000_000, "{source:?}: p99 latency {p99} us on loopback");
        if *source == TrackSource::Camera {
            assert!(summary.keyframes >= 1, "the first frame is a keyframe");
        }
    }

    publisher.close().await;
    subscriber.close().await;
    relay.abort();
}
