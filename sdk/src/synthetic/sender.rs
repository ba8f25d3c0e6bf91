//! Synthetic media over real tracks: a task that publishes a [`SyntheticSource`] on a
//! [`LocalTrack`] (one per layer of a simulcast camera), answering keyframe requests on
//! the layer they name (and counting them, so a test sees them arrive), pausing the
//! layers nobody needs and stamping audio with [`audio_level`], and the receiving side's
//! measurement of a [`RemoteTrack`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{StreamSummary, SyntheticCodec, SyntheticConfig, SyntheticSource, audio_level};
use crate::error::{Result, SdkError};
use crate::media::{LocalTrack, RemoteTrack};
use crate::now_us;

impl LocalTrack {
    /// Starts a task that sends synthetic media on this track (see
    /// [`synthetic`](crate::synthetic)); it waits for the connection first, and
    /// answers PLI/FIR with a keyframe. Audio carries [`audio_level`] in the
    /// audio-level header extension when the connection negotiated it.
    ///
    /// On a simulcast track every layer gets its own source
    /// ([`SyntheticConfig::for_layer`]: `config.bitrate_bps` is the top layer's, each
    /// layer below a third of the one above), ticked together so the layers' frames share
    /// numbers and RTP timestamps. A keyframe request is answered on the layer it names. A
    /// layer the gateway says nobody needs ([`LocalTrack::is_layer_active`]) is skipped
    /// until it is needed again, and then starts with a keyframe.
    /// [`SyntheticSender::layers`] counts what each layer sent.
    pub fn start_synthetic(&self, config: SyntheticConfig) -> Result<SyntheticSender> {
        let codec = SyntheticCodec::from_mime(self.mime_type())
            .ok_or_else(|| SdkError::Protocol(format!("no synthetic format for {}", self.mime_type())))?;
        if codec != config.codec {
            return Err(SdkError::Protocol(format!(
                "track is {} but the config says {:?}",
                self.mime_type(),
                config.codec
            )));
        }
        let (stop_tx, stop_rx) = oneshot::channel();
        let counters = Arc::new(SentCounters {
            layers: self
                .layers()
                .into_iter()
                .map(|l| LayerCounters {
                    rid: l.rid,
                    ..LayerCounters::default()
                })
                .collect(),
            ..SentCounters::default()
        });
        let task = tokio::spawn(run_synthetic(self.clone(), config, stop_rx, counters.clone()));
        Ok(SyntheticSender {
            stop: Some(stop_tx),
            task,
            counters,
        })
    }
}

/// What a synthetic sender has sent so far.
#[derive(Debug, Default)]
struct SentCounters {
    frames: AtomicU64,
    packets: AtomicU64,
    bytes: AtomicU64,
    keyframe_requests: AtomicU64,
    /// Per layer of the track, smallest first.
    layers: Vec<LayerCounters>,
}

/// What a synthetic sender has sent on one layer.
#[derive(Debug, Default)]
struct LayerCounters {
    rid: String,
    frames: AtomicU64,
    skipped: AtomicU64,
    keyframes: AtomicU64,
    packets: AtomicU64,
    bytes: AtomicU64,
    keyframe_requests: AtomicU64,
}

/// What a synthetic sender sent on one layer of its track.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyntheticLayerSent {
    /// The layer's rid (`q`, `h`, `f`; empty on a track of one layer).
    pub rid: String,
    /// Frames sent on it.
    pub frames: u64,
    /// Frames not sent because the layer was inactive (nobody needed it).
    pub skipped: u64,
    /// Keyframes among the frames sent.
    pub keyframes: u64,
    /// RTP packets sent on it.
    pub packets: u64,
    /// Payload bytes of those packets.
    pub bytes: u64,
    /// Keyframe requests (PLI, FIR) that named this layer.
    pub keyframe_requests: u64,
}

/// Totals of a synthetic sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyntheticSent {
    /// Frame ticks (on a simulcast track, each sends a frame on every active layer).
    pub frames: u64,
    /// RTP packets handed to webrtc-rs, all layers together.
    pub packets: u64,
    /// Payload bytes of those packets.
    pub bytes: u64,
    /// RTCP keyframe requests (PLI, FIR) this sender received for its track; each
    /// makes the next frame a keyframe (video).
    pub keyframe_requests: u64,
}

/// A running synthetic media task; stop it with [`stop`](Self::stop).
pub struct SyntheticSender {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<()>>,
    counters: Arc<SentCounters>,
}

impl SyntheticSender {
    /// What has been sent so far.
    pub fn sent(&self) -> SyntheticSent {
        SyntheticSent {
            frames: self.counters.frames.load(Ordering::Relaxed),
            packets: self.counters.packets.load(Ordering::Relaxed),
            bytes: self.counters.bytes.load(Ordering::Relaxed),
            keyframe_requests: self.counters.keyframe_requests.load(Ordering::Relaxed),
        }
    }

    /// What has been sent on each layer so far, smallest first (one entry on a track of
    /// one layer).
    pub fn layers(&self) -> Vec<SyntheticLayerSent> {
        self.counters
            .layers
            .iter()
            .map(|l| SyntheticLayerSent {
                rid: l.rid.clone(),
                frames: l.frames.load(Ordering::Relaxed),
                skipped: l.skipped.load(Ordering::Relaxed),
                keyframes: l.keyframes.load(Ordering::Relaxed),
                packets: l.packets.load(Ordering::Relaxed),
                bytes: l.bytes.load(Ordering::Relaxed),
                keyframe_requests: l.keyframe_requests.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Stops sending and returns the totals, or the error that ended the task early.
    pub async fn stop(mut self) -> Result<SyntheticSent> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match (&mut self.task).await {
            Ok(result) => result.map(|()| self.sent()),
            Err(e) => Err(SdkError::Protocol(format!("synthetic sender task failed: {e}"))),
        }
    }
}

impl Drop for SyntheticSender {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run_synthetic(
    track: LocalTrack,
    config: SyntheticConfig,
    mut stop: oneshot::Receiver<()>,
    counters: Arc<SentCounters>,
) -> Result<()> {
    tokio::select! {
        connected = track.wait_connected(Duration::from_secs(30)) => connected?,
        _ = &mut stop => return Ok(()),
    }
    let layers = track.layer_count();
    // Per layer: a keyframe request for it arrived.
    let keyframe_wanted: Arc<Vec<AtomicBool>> = Arc::new((0..layers).map(|_| AtomicBool::new(false)).collect());
    let feedback = {
        let (track, wanted, counters) = (track.clone(), keyframe_wanted.clone(), counters.clone());
        tokio::spawn(async move {
            while let Some(packets) = track.next_rtcp().await {
                let requests = packets
                    .iter()
                    .filter(|p| p.as_any().is::<PictureLossIndication>() || p.as_any().is::<FullIntraRequest>())
                    .count();
                if requests == 0 {
                    continue;
                }
                counters.keyframe_requests.fetch_add(requests as u64, Ordering::Relaxed);
                for layer in track.keyframe_layers(&packets) {
                    counters.layers[layer].keyframe_requests.fetch_add(1, Ordering::Relaxed);
                    wanted[layer].store(true, Ordering::Relaxed);
                }
            }
        })
    };
    let audio = config.codec == SyntheticCodec::Opus;
    let mut sources: Vec<SyntheticSource> = (0..layers)
        .map(|layer| SyntheticSource::for_layer(config.for_layer(layer, layers), layer as u8))
        .collect();
    // Whether each layer was sent on the previous tick: one coming back starts with a keyframe.
    let mut was_active = vec![true; layers];
    let base_timestamp: u32 = rand::random();
    let mut ticks = tokio::time::interval(Duration::from_micros(config.frame_interval_us()));
    let result = 'ticks: loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = &mut stop => break Ok(()),
        }
        let now = now_us();
        for (layer, source) in sources.iter_mut().enumerate() {
            let sent = &counters.layers[layer];
            if !track.is_layer_active(layer) {
                source.skip_frame();
                was_active[layer] = false;
                sent.skipped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let asked = keyframe_wanted[layer].swap(false, Ordering::Relaxed);
            if asked || !was_active[layer] {
                source.request_keyframe();
            }
            was_active[layer] = true;
            let frame = source.next_frame(now);
            let last = frame.payloads.len().saturating_sub(1);
            let timestamp = base_timestamp.wrapping_add(frame.rtp_timestamp);
            for (i, payload) in frame.payloads.into_iter().enumerate() {
                let len = payload.len() as u64;
                let (payload, marker) = (Bytes::from(payload), i == last);
                let written = if audio {
                    let level = audio_level(frame.frame);
                    track
                        .write_payload_with_audio_level(payload, timestamp, marker, level)
                        .await
                } else {
                    track.write_layer_payload(layer, payload, timestamp, marker).await
                };
                if let Err(e) = written {
                    break 'ticks Err(e);
                }
                for (packets, bytes) in [(&counters.packets, &counters.bytes), (&sent.packets, &sent.bytes)] {
                    packets.fetch_add(1, Ordering::Relaxed);
                    bytes.fetch_add(len, Ordering::Relaxed);
                }
            }
            sent.frames.fetch_add(1, Ordering::Relaxed);
            if frame.keyframe {
                sent.keyframes.fetch_add(1, Ordering::Relaxed);
            }
        }
        counters.frames.fetch_add(1, Ordering::Relaxed);
    };
    feedback.abort();
    result
}

impl RemoteTrack {
    /// The synthetic payload format this track would carry, judged by its codec; by its kind
    /// when webrtc-rs had no codec for it as it opened (an empty [`mime_type`](Self::mime_type)):
    /// synthetic media has one format per kind, whatever the negotiated codec.
    pub fn synthetic_codec(&self) -> Option<SyntheticCodec> {
        SyntheticCodec::of_track(self.mime_type(), self.kind())
    }

    /// Receives synthetic packets into fresh [`ReceiverStats`](crate::synthetic::ReceiverStats)
    /// until `until` resolves or the track ends, then returns the summary.
    /// `started_at_us` is the reference for time to first packet.
    pub async fn measure_synthetic(
        &self,
        started_at_us: u64,
        until: impl std::future::Future<Output = ()>,
    ) -> Result<StreamSummary> {
        let codec = self
            .synthetic_codec()
            .ok_or_else(|| SdkError::Protocol(format!("no synthetic format for {}", self.mime_type())))?;
        let mut stats = crate::synthetic::ReceiverStats::new(codec, started_at_us);
        tokio::pin!(until);
        loop {
            tokio::select! {
                packet = self.recv_rtp() => match packet {
                    Some(packet) => {
                        let _ = stats.on_payload(now_us(), &packet.payload);
                    }
                    None => break,
                },
                _ = &mut until => break,
            }
        }
        Ok(stats.summary())
    }
}
