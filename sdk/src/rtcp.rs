//! The SDK's RTCP tap: keyframe requests reach the application.
//!
//! Inbound RTCP ends inside `rtc`'s interceptor chain unless something marks it
//! `DeliverToApplication`. This interceptor marks PLI and FIR only, so that a publisher
//! (the synthetic sender, or an application's encoder) can answer them with a keyframe,
//! while receiver reports and NACKs stay with the interceptors that act on them.

use std::collections::VecDeque;
use std::time::Instant;

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;

/// The slot the tap takes: after the JitterBuffer (13 000), the last of `rtc`'s named slots.
pub(crate) const KEYFRAME_TAP_SLOT: usize = 14_000;

/// Passes inbound PLI and FIR to the application; everything else flows on unchanged.
#[derive(Default)]
pub(crate) struct KeyframeTap {
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

/// Whether an inbound RTCP compound packet carries a keyframe request.
fn asks_for_keyframe(packet: &Packet) -> bool {
    let Packet::Rtcp(packets) = packet else { return false };
    packets.iter().any(|p| {
        let any = p.as_any();
        any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
    })
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeTap {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if asks_for_keyframe(&msg.message.packet) {
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

impl Interceptor for KeyframeTap {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtcp::receiver_report::ReceiverReport;
    use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;

    #[test]
    fn only_keyframe_requests_are_for_the_application() {
        let pli = Packet::Rtcp(vec![Box::new(PictureLossIndication {
            sender_ssrc: 1,
            media_ssrc: 7,
        })]);
        let fir_in_compound = Packet::Rtcp(vec![
            Box::new(ReceiverReport::default()),
            Box::new(FullIntraRequest::default()),
        ]);
        let nack = Packet::Rtcp(vec![Box::new(TransportLayerNack::default())]);
        assert!(asks_for_keyframe(&pli));
        assert!(asks_for_keyframe(&fir_in_compound));
        assert!(!asks_for_keyframe(&nack));
    }
}
