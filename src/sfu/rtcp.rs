//! RTCP on the media plane: an interceptor that counts feedback and lets
//! keyframe requests and NACKs through to the application, plus builders for the
//! feedback we send.
//!
//! Inbound RTCP stops at the end of `rtc`'s interceptor chain unless something
//! marks it `DeliverToApplication`. [`RtcpTap`] marks only PLI and FIR (what an
//! SFU relays upstream), generic NACKs (answered by the media room from its
//! retransmission cache, `retransmit`), subscribers' transport-wide congestion
//! control feedback and REMBs (their bandwidth estimate, `bwe`) and reception reports (loss,
//! jitter and round-trip time for connection quality, `quality`; a browser sends one
//! a second or less often), and counts the first two as they pass.

use std::collections::VecDeque;
use std::time::Instant;

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::reception_report::ReceptionReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;

use super::stats::StatsPair;

/// Whether an RTCP packet asks for a keyframe.
pub fn is_keyframe_request(p: &dyn rtcp::Packet) -> bool {
    let any = p.as_any();
    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
}

/// The media SSRC a keyframe request names (PLI: media_ssrc; FIR: each entry).
pub fn keyframe_request_ssrcs(p: &dyn rtcp::Packet, mut each: impl FnMut(u32)) {
    let any = p.as_any();
    if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
        each(pli.media_ssrc);
    } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
        if fir.fir.is_empty() {
            each(fir.media_ssrc);
        }
        for entry in &fir.fir {
            each(entry.ssrc);
        }
    }
}

/// The generic NACK in an RTCP packet, if it is one.
pub fn as_nack(p: &dyn rtcp::Packet) -> Option<&TransportLayerNack> {
    p.as_any().downcast_ref::<TransportLayerNack>()
}

/// The REMB in an RTCP packet, if it is one: the bit rate its sender says it can receive.
pub fn as_remb(p: &dyn rtcp::Packet) -> Option<u64> {
    let remb = p.as_any().downcast_ref::<ReceiverEstimatedMaximumBitrate>()?;
    (remb.bitrate.is_finite() && remb.bitrate >= 0.0).then_some(remb.bitrate as u64)
}

/// The transport-wide congestion control feedback in an RTCP packet, if it is one.
pub fn as_twcc(p: &dyn rtcp::Packet) -> Option<&TransportLayerCc> {
    p.as_any().downcast_ref::<TransportLayerCc>()
}

/// The reception report blocks of a receiver or sender report.
pub fn reception_reports(p: &dyn rtcp::Packet) -> &[ReceptionReport] {
    let any = p.as_any();
    if let Some(rr) = any.downcast_ref::<ReceiverReport>() {
        &rr.reports
    } else if let Some(sr) = any.downcast_ref::<SenderReport>() {
        &sr.reports
    } else {
        &[]
    }
}

/// A PLI for `media_ssrc`, ready for `RTCRtpReceiver::write_rtcp`.
pub fn pli(media_ssrc: u32) -> Vec<Box<dyn rtcp::Packet>> {
    vec![Box::new(PictureLossIndication {
        sender_ssrc: 0,
        media_ssrc,
    })]
}

/// A REMB telling the sender of `media_ssrc` to stay under `bps`, ready for
/// `RTCRtpReceiver::write_rtcp`.
pub fn remb(media_ssrc: u32, bps: u64) -> Vec<Box<dyn rtcp::Packet>> {
    vec![Box::new(ReceiverEstimatedMaximumBitrate {
        sender_ssrc: 0,
        bitrate: bps as f32,
        ssrcs: vec![media_ssrc],
    })]
}

/// Counts inbound feedback and passes keyframe requests to the application.
/// Sits application-side of the default interceptors (slot 14 000).
pub struct RtcpTap {
    stats: StatsPair,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

/// The slot the tap occupies: after the JitterBuffer (13 000), the last of `rtc`'s named slots.
pub const RTCP_TAP_SLOT: usize = 14_000;

impl RtcpTap {
    pub fn new(stats: StatsPair) -> Self {
        Self {
            stats,
            read_queue: VecDeque::new(),
            write_queue: VecDeque::new(),
        }
    }
}

/// What the tap does with a compound RTCP packet a connection received, wherever it was
/// opened (`rtc`'s chain, or the shard itself, `own_rtcp`): counts its NACKs and keyframe
/// requests, and says whether the room wants it (a NACK, a keyframe request, congestion
/// feedback, or reception reports).
pub fn tap(stats: &StatsPair, packets: &[Box<dyn rtcp::Packet>]) -> bool {
    let (mut nacks, mut kf, mut twcc, mut reports) = (0, 0, 0, false);
    for p in packets {
        if p.as_any().is::<TransportLayerNack>() {
            nacks += 1;
        } else if is_keyframe_request(p.as_ref()) {
            kf += 1;
        } else if p.as_any().is::<TransportLayerCc>() || p.as_any().is::<ReceiverEstimatedMaximumBitrate>() {
            twcc += 1;
        } else {
            reports |= !reception_reports(p.as_ref()).is_empty();
        }
    }
    if nacks > 0 {
        stats.add(|c| &c.nacks, nacks);
    }
    if kf > 0 {
        stats.add(|c| &c.keyframe_requests_received, kf);
    }
    kf + nacks + twcc > 0 || reports
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for RtcpTap {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet
            && tap(&self.stats, packets)
        {
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }

    fn handle_timeout(&mut self, _now: Instant) -> Result<(), Self::Error> {
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Self::Time> {
        None
    }
}

impl Interceptor for RtcpTap {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtcp::payload_feedbacks::full_intra_request::FirEntry;

    #[test]
    fn keyframe_requests_are_recognised_with_their_ssrcs() {
        let pli = PictureLossIndication {
            sender_ssrc: 1,
            media_ssrc: 7,
        };
        let fir = FullIntraRequest {
            sender_ssrc: 1,
            media_ssrc: 0,
            fir: vec![
                FirEntry {
                    ssrc: 8,
                    sequence_number: 1,
                },
                FirEntry {
                    ssrc: 9,
                    sequence_number: 1,
                },
            ],
        };
        let nack = TransportLayerNack::default();
        assert!(is_keyframe_request(&pli));
        assert!(is_keyframe_request(&fir));
        assert!(!is_keyframe_request(&nack));
        let mut seen = Vec::new();
        keyframe_request_ssrcs(&pli, |s| seen.push(s));
        keyframe_request_ssrcs(&fir, |s| seen.push(s));
        keyframe_request_ssrcs(&nack, |s| seen.push(s));
        assert_eq!(seen, [7, 8, 9]);
    }
}
