//! Synthetic media over real tracks: a task that publishes a [`SyntheticSource`] on a
//! [`LocalTrack`], answering keyframe requests (and counting them, so a test sees them
//! arrive) and stamping audio with [`audio_level`], and the receiving side's
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
        let counters = Arc::new(SentCounters::default());
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
}

/// Totals of a synthetic sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyntheticSent {
    /// Frames produced.
    pub frames: u64,
    /// RTP packets handed to webrtc-rs.
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
    let keyframe_wanted = Arc::new(AtomicBool::new(false));
    let feedback = {
        let (track, wanted, counters) = (track.clone(), keyframe_wanted.clone(), counters.clone());
        tokio::spawn(async move {
            while let Some(packets) = track.next_rtcp().await {
                let requests = packets
                    .iter()
                    .filter(|p| p.as_any().is::<PictureLossIndication>() || p.as_any().is::<FullIntraRequest>())
                    .count();
                if requests > 0 {
                    counters.keyframe_requests.fetch_add(requests as u64, Ordering::Relaxed);
                    wanted.store(true, Ordering::Relaxed);
                }
            }
        })
    };
    let audio = config.codec == SyntheticCodec::Opus;
    let mut source = SyntheticSource::new(config);
    let base_timestamp: u32 = rand::random();
    let mut ticks = tokio::time::interval(Duration::from_micros(source.config().frame_interval_us()));
    let result = loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = &mut stop => break Ok(()),
        }
        if keyframe_wanted.swap(false, Ordering::Relaxed) {
            source.request_keyframe();
        }
        let frame = source.next_frame(now_us());
        let last = frame.payloads.len().saturating_sub(1);
        let mut failed = None;
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
                track.write_payload(payload, timestamp, marker).await
            };
            if let Err(e) = written {
                failed = Some(e);
                break;
            }
            counters.packets.fetch_add(1, Ordering::Relaxed);
            counters.bytes.fetch_add(len, Ordering::Relaxed);
        }
        if let Some(e) = failed {
            break Err(e);
        }
        counters.frames.fetch_add(1, Ordering::Relaxed);
    };
    feedback.abort();
    result
}

impl RemoteTrack {
    /// The synthetic payload format this track would carry, judged by its codec.
    pub fn synthetic_codec(&self) -> Option<SyntheticCodec> {
        SyntheticCodec::from_mime(self.mime_type())
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
