//! An opened RTP packet parsed without allocating (issue 13, the lean per-packet path).
//!
//! `rtc`'s `Packet::unmarshal` builds a fresh `Vec` of header extensions for every packet:
//! one allocation and one free per packet a publisher sends, the only ones left on the
//! shard's forwarding path. [`parse_into`] parses the same way into a [`Packet`] whose lists
//! the caller lends (cleared, capacity kept): the shard hands a forwarded packet's
//! extension list back for the next one (`Peers::recycle`).
//!
//! It is `rtc`'s parser re-done, field for field and refusal for refusal, so that a packet
//! reads the same whichever of the two opened it (a stream's first packets go through
//! `rtc`): the fuzz target `rtp_parse` compares the two on arbitrary input, and the tests
//! below on the cases that matter. That includes `rtc`'s quirks: a one-byte extension with
//! the reserved id 15 ends the list, and the rest of the block is read as payload; an
//! extension may run past its block into the payload.
//!
//! Payload and extensions are slices of `raw` (no copy), as with `rtc`.

use bytes::Bytes;
use rtc::rtp::Packet;
use rtc::rtp::header::{EXTENSION_PROFILE_ONE_BYTE, EXTENSION_PROFILE_TWO_BYTE, Extension};

/// The fixed part of an RTP header.
const FIXED: usize = 12;
/// The one-byte form's reserved id: the list ends there (RFC 8285 §4.2).
const RESERVED_ID: u8 = 15;

/// `raw` is not an RTP packet `rtc` would parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("malformed RTP packet")
    }
}

impl std::error::Error for Malformed {}

/// Parses `raw` into `packet` as `rtc::rtp::Packet::unmarshal` would, reusing `packet`'s
/// CSRC and extension lists. On an error `packet`'s fields are unspecified (its extension
/// list may hold slices of `raw`): a caller drops it or parses into it again.
pub fn parse_into(raw: Bytes, packet: &mut Packet) -> Result<(), Malformed> {
    let h = &mut packet.header;
    h.csrc.clear();
    h.extensions.clear();
    packet.payload = Bytes::new();
    let len = raw.len();
    if len < FIXED {
        return Err(Malformed);
    }
    let b0 = raw[0];
    let cc = usize::from(b0 & 0x0F);
    let mut at = FIXED + 4 * cc;
    if len < at {
        return Err(Malformed);
    }
    h.version = b0 >> 6;
    h.padding = b0 & 0x20 != 0;
    h.extension = b0 & 0x10 != 0;
    h.marker = raw[1] & 0x80 != 0;
    h.payload_type = raw[1] & 0x7F;
    h.sequence_number = u16::from_be_bytes([raw[2], raw[3]]);
    h.timestamp = u32::from_be_bytes([raw[4], raw[5], raw[6], raw[7]]);
    h.ssrc = u32::from_be_bytes([raw[8], raw[9], raw[10], raw[11]]);
    h.csrc.extend(
        raw[FIXED..at]
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]])),
    );
    h.extension_profile = 0;
    h.extensions_padding = 0;
    if h.extension {
        if len < at + 4 {
            return Err(Malformed);
        }
        h.extension_profile = u16::from_be_bytes([raw[at], raw[at + 1]]);
        let block = 4 * usize::from(u16::from_be_bytes([raw[at + 2], raw[at + 3]]));
        at += 4;
        let end = at + block;
        if len < end {
            return Err(Malformed);
        }
        match h.extension_profile {
            EXTENSION_PROFILE_ONE_BYTE => {
                while at < end {
                    let b = raw[at];
                    at += 1;
                    if b == 0 {
                        h.extensions_padding += 1;
                        continue;
                    }
                    let (id, size) = (b >> 4, usize::from(b & 0x0F) + 1);
                    if id == RESERVED_ID {
                        break;
                    }
                    at = element(&raw, at, id, size, &mut h.extensions)?;
                }
            }
            EXTENSION_PROFILE_TWO_BYTE => {
                while at < end {
                    let id = raw[at];
                    at += 1;
                    if id == 0 {
                        h.extensions_padding += 1;
                        continue;
                    }
                    if at >= end {
                        return Err(Malformed);
                    }
                    let size = usize::from(raw[at]);
                    at = element(&raw, at + 1, id, size, &mut h.extensions)?;
                }
            }
            // RFC 3550's own form: the whole block as one extension with id 0.
            _ => {
                h.extensions.push(Extension {
                    id: 0,
                    payload: raw.slice(at..end),
                });
                at = end;
            }
        }
    }
    let payload_len = len - at;
    let keep = if h.padding {
        let padding = usize::from(*raw.last().filter(|_| payload_len > 0).ok_or(Malformed)?);
        payload_len.checked_sub(padding).ok_or(Malformed)?
    } else {
        payload_len
    };
    packet.payload = raw.slice(at..at + keep);
    Ok(())
}

/// One extension element's data, `size` bytes at `at` (which may run past the extension block,
/// as in `rtc`, but not past the packet), onto `list`; where the next element starts.
fn element(raw: &Bytes, at: usize, id: u8, size: usize, list: &mut Vec<Extension>) -> Result<usize, Malformed> {
    if size > raw.len() - at {
        return Err(Malformed);
    }
    list.push(Extension {
        id,
        payload: raw.slice(at..at + size),
    });
    Ok(at + size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::shared::marshal::Unmarshal;

    /// Both parsers on `raw`: the same outcome, and the same packet when it parses.
    fn same(raw: &[u8]) -> Result<Packet, Malformed> {
        let theirs = Packet::unmarshal(&mut Bytes::copy_from_slice(raw));
        let mut ours = Packet::default();
        // A list with room and stale content: it must come back cleared and refilled.
        ours.header.extensions = vec![
            Extension {
                id: 9,
                payload: Bytes::from_static(b"stale"),
            };
            4
        ];
        ours.header.csrc = vec![7; 3];
        let result = parse_into(Bytes::copy_from_slice(raw), &mut ours);
        match (&theirs, result) {
            (Ok(theirs), Ok(())) => assert_eq!(*theirs, ours, "{raw:02x?}"),
            (Err(_), Err(Malformed)) => {}
            _ => panic!("rtc {theirs:?}, ours {result:?} on {raw:02x?}"),
        }
        result.map(|()| ours)
    }

    /// A browser's VP8 packet as it arrives: marker, payload type 96, one-byte extensions
    /// abs-send-time (id 2), transport-cc (3) and mid (4) padded to a word, 1 100 bytes of payload.
    fn browser_video() -> Vec<u8> {
        let mut raw = vec![0x90, 0xE0, 0xAB, 0xCD, 1, 2, 3, 4, 0x12, 0x34, 0x56, 0x78];
        raw.extend_from_slice(&[
            0xBE, 0xDE, 0, 3, 0x22, 0x12, 0x34, 0x56, 0x31, 0x00, 0x07, 0x40, 0x30, 0, 0, 0,
        ]);
        raw.extend_from_slice(&[0x90; 1100]);
        raw
    }

    #[test]
    fn a_browsers_packet_parses_as_rtc_parses_it_sharing_the_buffer() {
        let raw = browser_video();
        let ours = same(&raw).expect("parses");
        assert_eq!(ours.header.extensions.len(), 3);
        assert_eq!(ours.header.extensions_padding, 3);
        assert_eq!(ours.payload.len(), 1100);
        // No copy: the payload is a slice of the buffer given.
        let buf = Bytes::from(raw.to_vec());
        let mut packet = Packet::default();
        parse_into(buf.clone(), &mut packet).expect("parses");
        assert_eq!(packet.payload.as_ptr(), buf[buf.len() - 1100..].as_ptr());
    }

    #[test]
    fn the_lists_lent_are_reused_not_reallocated() {
        let raw = Bytes::from(browser_video());
        let mut packet = Packet::default();
        packet.header.extensions = Vec::with_capacity(8);
        let at = packet.header.extensions.as_ptr();
        for _ in 0..3 {
            parse_into(raw.clone(), &mut packet).expect("parses");
            assert_eq!(packet.header.extensions.as_ptr(), at, "the same list");
            assert_eq!(packet.header.extensions.len(), 3);
        }
    }

    #[test]
    fn every_form_of_header_and_padding_reads_as_in_rtc() {
        // CSRCs, the two-byte form with padding between elements, RFC 3550's own form,
        // padding at the end of the payload.
        let mut two = vec![
            0x93, 0xE0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 7, 0, 0, 0, 8, 0, 0, 0, 9,
        ];
        two.extend_from_slice(&[0x10, 0x00, 0, 2, 200, 3, 0x12, 0x34, 0x56, 3, 1, 7]);
        two.extend_from_slice(&[0x90; 100]);
        let p = same(&two).expect("parses");
        assert_eq!((p.header.csrc.len(), p.header.extensions.len()), (3, 2));
        let mut raw = browser_video();
        raw[0] |= 0x20;
        same(&raw).expect("padding of 0x90 bytes out of 1100");
        let mut rfc3550 = raw.clone();
        rfc3550[12..14].copy_from_slice(&[0x12, 0x34]);
        same(&rfc3550).expect("parses");
        let mut two_padded = vec![0x90, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0x10, 0x00, 0, 2];
        two_padded.extend_from_slice(&[0, 0, 5, 1, 0xAA, 0, 0, 0, 0xFF, 0xEE]);
        let p = same(&two_padded).expect("parses");
        assert_eq!(p.header.extensions_padding, 2 + 3);
    }

    #[test]
    fn what_rtc_refuses_is_refused_and_its_quirks_are_kept() {
        let raw = browser_video();
        for cut in [0, 3, 11, 12, 15, 16, 19] {
            assert_eq!(same(&raw[..cut]).map(|_| ()), Err(Malformed), "cut at {cut}");
        }
        // Padding longer than the payload, or a padded packet without payload.
        let mut padded = raw.clone();
        padded[0] |= 0x20;
        *padded.last_mut().unwrap() = 0xFF;
        let mut tiny = padded[..padded.len() - 1096].to_vec();
        *tiny.last_mut().unwrap() = 9;
        assert!(same(&tiny).is_err());
        let mut header_only = padded.clone();
        header_only.truncate(12 + 4 + 12);
        assert!(same(&header_only).is_err());
        // A CSRC count the packet cannot hold.
        let mut csrcs = raw.clone();
        csrcs[0] |= 0x0F;
        csrcs.truncate(40);
        assert!(same(&csrcs).is_err());
        // The reserved id ends the list, and what follows in the block is payload.
        let mut reserved = vec![0x90, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0xBE, 0xDE, 0, 2];
        reserved.extend_from_slice(&[0x10, 0xAA, 0xF0, 0x11, 0x22, 0x33, 0x44, 0x55, 0x99]);
        let p = same(&reserved).expect("parses");
        assert_eq!(p.header.extensions.len(), 1);
        assert_eq!(&p.payload[..], &[0x11, 0x22, 0x33, 0x44, 0x55, 0x99]);
        // An element running past its block into the payload, and past the packet's end.
        let mut long = vec![0x90, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0xBE, 0xDE, 0, 1];
        long.extend_from_slice(&[0x1F, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17]);
        same(&long).expect("parses");
        long.truncate(long.len() - 3);
        assert!(same(&long).is_err());
        // A two-byte element whose length octet is past the block.
        let cut_two = [0x90, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0x10, 0x00, 0, 1, 0, 0, 0, 5, 9];
        assert!(same(&cut_two).is_err());
    }
}
