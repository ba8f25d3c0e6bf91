//! SRTP with AES-GCM (RFC 7714) sealed and opened in place, for the packets the shard
//! encrypts and decrypts itself (issue 13; `own_srtp`, `own_inbound`).
//!
//! `rtc-srtp`'s context does per packet more than a forwarded packet needs: two SipHash
//! lookups of the stream's state, a fresh buffer the packet is copied into, a boxed replay
//! detector, and on the way in the header parsed once to decrypt and again by the caller.
//! For the GCM profiles, which `rtc` prefers and browsers offer, this module does the same
//! work once:
//!
//! - the session key and salt are derived from the master key and salt by RFC 3711's AES-CM
//!   PRF (§4.3.3, key derivation rate 0; AES-256's as RFC 7714 §11 asks), with the crypto
//!   provider's block cipher; the AEAD is the provider's, as `rtc`'s is;
//! - the nonce is the session salt XOR (SSRC, rollover counter, sequence number) (RFC 7714
//!   §8.1), the header (extensions included) the associated data;
//! - each stream's packet index is estimated from its highest one as RFC 3711 Appendix A
//!   does, the highest index moving only forward, and what is opened must not be older than
//!   64 packets nor seen before (§3.3.2, over the 48-bit index rather than `rtc`'s 16-bit
//!   sequence number);
//! - the packet is sealed in the buffer it is marshalled into (one allocation, no copy), and
//!   opened in one copy of the datagram from which the packet is parsed once.
//!
//! Subscribers' SRTCP is opened the same way ([`RtcpOpener`], RFC 7714 §9), into a buffer the
//! caller keeps. The AES-CM profiles (HMAC-SHA1 tags) stay with `rtc-srtp`. Tests check both directions
//! against `rtc-srtp`'s context for every GCM profile, across rollovers.

use bytes::BytesMut;
use rtc::crypto::{AeadAlgorithm, AeadCipher, BlockCipherAlgorithm, RTCCrypto};
use rtc::rtp::Packet;
use rtc::rtp::header::Extension;
use rtc::shared::marshal::{Marshal, MarshalSize};
use rtc::srtp::protection_profile::ProtectionProfile;

use super::srtp_keys::{MasterKey, REPLAY_WINDOW};

/// The GCM tag's length (RFC 7714 §5: 16 octets for SRTP).
pub const TAG_LEN: usize = 16;
/// A GCM profile's master and session salt (RFC 7714 §11: 12 octets).
const SALT_LEN: usize = 12;
/// RFC 3711 §4.3.1's labels.
const LABEL_ENCRYPTION: u8 = 0x00;
const LABEL_SALT: u8 = 0x02;
const LABEL_SRTCP_ENCRYPTION: u8 = 0x03;
const LABEL_SRTCP_SALT: u8 = 0x05;
/// SRTCP's trailer after the tag: the E flag and the 31-bit SRTCP index (RFC 7714 §9.1).
const SRTCP_INDEX_LEN: usize = 4;
const SRTCP_E_FLAG: u32 = 1 << 31;
/// The RTCP header and sender SSRC, SRTCP's associated data before the index (RFC 7714 §9.2).
const RTCP_HEADER: usize = 8;
/// The window of [`Seen`]: `rtc`'s replay window, as a bit mask.
const WINDOW: u64 = REPLAY_WINDOW as u64;
const _: () = assert!(WINDOW <= 64);
/// An RTP header's fixed part.
const FIXED_HEADER: usize = 12;

/// Why a packet was not sealed or opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SrtpError {
    /// Not an RTP datagram, or its header runs past its end.
    NotRtp,
    /// Not an RTCP datagram (its version is not 2).
    NotRtcp,
    /// Shorter than its header and the tag.
    TooShort,
    /// Seen before, or older than the replay window.
    Replayed,
    /// The tag does not match: forged, damaged, or another key.
    Unauthentic,
    /// A stream the opener has not taken.
    UnknownStream,
    /// The packet does not marshal, or what was opened does not parse.
    Malformed,
    /// The cipher refused the buffer.
    Crypto,
}

impl std::fmt::Display for SrtpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SrtpError::NotRtp => "not an RTP datagram",
            SrtpError::NotRtcp => "not an RTCP datagram",
            SrtpError::TooShort => "shorter than its header and tag",
            SrtpError::Replayed => "replayed or too old",
            SrtpError::Unauthentic => "authentication failed",
            SrtpError::UnknownStream => "a stream not taken over",
            SrtpError::Malformed => "malformed RTP",
            SrtpError::Crypto => "the cipher refused the buffer",
        })
    }
}

impl std::error::Error for SrtpError {}

/// Whether [`Sealer`] and [`Opener`] take this profile.
pub fn handles(profile: ProtectionProfile) -> bool {
    matches!(
        profile,
        ProtectionProfile::AeadAes128Gcm | ProtectionProfile::AeadAes256Gcm
    )
}

/// One direction's session key (in the provider's AEAD) and session salt.
struct Session {
    cipher: Box<dyn AeadCipher>,
    salt: [u8; SALT_LEN],
}

impl Session {
    fn new(profile: ProtectionProfile, master: &MasterKey) -> Option<Self> {
        Self::with_labels(profile, master, LABEL_ENCRYPTION, LABEL_SALT)
    }

    /// SRTCP's session key and salt (RFC 3711 §4.3.2's labels 3 and 5).
    fn rtcp(profile: ProtectionProfile, master: &MasterKey) -> Option<Self> {
        Self::with_labels(profile, master, LABEL_SRTCP_ENCRYPTION, LABEL_SRTCP_SALT)
    }

    fn with_labels(profile: ProtectionProfile, master: &MasterKey, key_label: u8, salt_label: u8) -> Option<Self> {
        let (aead, block) = match profile {
            ProtectionProfile::AeadAes128Gcm => (AeadAlgorithm::Aes128Gcm, BlockCipherAlgorithm::Aes128),
            ProtectionProfile::AeadAes256Gcm => (AeadAlgorithm::Aes256Gcm, BlockCipherAlgorithm::Aes256),
            _ => return None,
        };
        if master.key.len() != profile.key_len() || master.salt.len() != SALT_LEN {
            return None;
        }
        let provider = rtc::crypto::default_provider().ok()?;
        let crypto = provider.crypto();
        let key = prf(crypto, block, master, key_label, master.key.len())?;
        let salt = prf(crypto, block, master, salt_label, SALT_LEN)?;
        let cipher = crypto.new_aead(aead, &key).ok()?;
        (cipher.tag_len() == TAG_LEN).then_some(())?;
        Some(Self {
            cipher,
            salt: salt.try_into().ok()?,
        })
    }

    /// RFC 7714 §8.1: 00 00 || SSRC || ROC || SEQ, XOR the session salt.
    fn nonce(&self, ssrc: u32, index: u64) -> [u8; SALT_LEN] {
        let mut iv = [0u8; SALT_LEN];
        iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
        iv[6..].copy_from_slice(&index.to_be_bytes()[2..]);
        for (v, s) in iv.iter_mut().zip(self.salt) {
            *v ^= s;
        }
        iv
    }
}

/// RFC 3711 §4.3.3 with a key derivation rate of 0: AES in counter mode, keyed with the
/// master key, over the master salt XOR the label at octet 7, `len` octets of it.
fn prf(
    crypto: &dyn RTCCrypto,
    block: BlockCipherAlgorithm,
    master: &MasterKey,
    label: u8,
    len: usize,
) -> Option<Vec<u8>> {
    let mut x = [0u8; 16];
    x.get_mut(..master.salt.len())?.copy_from_slice(&master.salt);
    x[7] ^= label;
    let mut out = Vec::with_capacity(len.next_multiple_of(16));
    for i in 0..len.div_ceil(16) {
        let mut counter = x;
        counter[14..].copy_from_slice(&u16::try_from(i).ok()?.to_be_bytes());
        crypto.block_encrypt(block, &master.key, &mut counter).ok()?;
        out.extend_from_slice(&counter);
    }
    out.truncate(len);
    Some(out)
}

/// RFC 3711 Appendix A: the index (rollover counter · 2^16 + sequence number) of a packet
/// with sequence number `seq`, given the highest index of its stream so far. A packet that
/// would belong before the first rollover counter is taken as a jump forward (as `rtc-srtp`
/// takes it).
fn estimate(highest: Option<u64>, seq: u16) -> u64 {
    let Some(highest) = highest else {
        return u64::from(seq);
    };
    let roc = highest >> 16;
    let last = highest as u16;
    let v = if last < 0x8000 {
        if seq > last && seq - last > 0x8000 {
            roc.saturating_sub(1)
        } else {
            roc
        }
    } else if last - 0x8000 > seq {
        roc + 1
    } else {
        roc
    };
    (v << 16) | u64::from(seq)
}

/// What a stream has had opened: its highest index and, below it, which of the last
/// [`WINDOW`] were seen (bit `i`: index `highest - i`).
#[derive(Debug, Clone, Copy)]
struct Seen {
    highest: u64,
    mask: u64,
}

impl Seen {
    fn fresh(&self, index: u64) -> bool {
        match self.highest.checked_sub(index) {
            None => true,
            Some(age) => age < WINDOW && self.mask & (1 << age) == 0,
        }
    }

    fn accept(&mut self, index: u64) {
        match self.highest.checked_sub(index) {
            Some(age) => self.mask |= 1 << age,
            None => {
                let shift = index - self.highest;
                self.mask = if shift >= 64 { 0 } else { self.mask << shift } | 1;
                self.highest = index;
            }
        }
    }
}

/// A connection's sending side for the GCM profiles: each stream's highest index.
pub struct Sealer {
    session: Session,
    streams: Vec<(u32, u64)>,
}

impl Sealer {
    /// `None` for a profile other than GCM's, or keys of the wrong length.
    pub fn new(profile: ProtectionProfile, local: &MasterKey) -> Option<Self> {
        Some(Self {
            session: Session::new(profile, local)?,
            streams: Vec::new(),
        })
    }

    /// `packet` as an SRTP datagram, marshalled and sealed in one buffer (tests; the shard
    /// seals into its arena, [`seal_in`](Self::seal_in)).
    #[cfg(test)]
    pub fn seal(&mut self, packet: &Packet) -> Result<BytesMut, SrtpError> {
        self.seal_in(packet, &mut BytesMut::new())
    }

    /// As [`seal`](Self::seal), into space cut from `arena` instead of a buffer of its own
    /// (as [`Opener::open_in`] does): the datagram shares `arena`'s buffer, which `reserve`
    /// takes again once every datagram cut from it has been sent and dropped (within the
    /// turn), or replaces while one is still queued. So a shard seals forwarded copies
    /// without allocating per copy.
    pub fn seal_in(&mut self, packet: &Packet, arena: &mut BytesMut) -> Result<BytesMut, SrtpError> {
        let ssrc = packet.header.ssrc;
        let at = match self.streams.iter().position(|(s, _)| *s == ssrc) {
            Some(at) => at,
            None => {
                self.streams.push((ssrc, u64::from(packet.header.sequence_number)));
                self.streams.len() - 1
            }
        };
        let highest = self.streams[at].1;
        let index = estimate(Some(highest), packet.header.sequence_number);
        let header_len = packet.header.marshal_size();
        let size = packet.marshal_size();
        arena.clear();
        arena.reserve(size + TAG_LEN);
        // Written as `Packet::marshal_to` writes it, but only the header's few bytes are
        // zeroed first: the payload is copied in once, not over a zeroed buffer (a pass over
        // every forwarded copy's bytes less).
        arena.resize(header_len, 0);
        let body_at = packet
            .header
            .marshal_to(&mut arena[..header_len])
            .map_err(|_| SrtpError::Malformed)?;
        arena.truncate(body_at);
        arena.extend_from_slice(&packet.payload);
        if packet.header.padding {
            let padding = padding_len(packet.payload.len());
            arena.extend_from_slice(&[0; 3][..padding - 1]);
            arena.extend_from_slice(&[padding as u8]);
        }
        let n = arena.len();
        arena.extend_from_slice(&[0; TAG_LEN]);
        // The tag goes right after what was written.
        let (sealed, rest) = arena.split_at_mut(n);
        let (aad, body) = sealed.split_at_mut(body_at);
        let tag: &mut [u8; TAG_LEN] = (&mut rest[..TAG_LEN]).try_into().map_err(|_| SrtpError::Malformed)?;
        self.session
            .cipher
            .seal_in_place(&self.session.nonce(ssrc, index), aad, body, tag)
            .map_err(|_| SrtpError::Crypto)?;
        let datagram = arena.split_to(n + TAG_LEN);
        arena.clear();
        self.streams[at].1 = highest.max(index);
        Ok(datagram)
    }
}

/// The padding `Packet::marshal_to` appends to a payload of `len` bytes when the header's
/// padding bit is set: up to the next multiple of 4, and 4 where it is one already (the last
/// byte says how many).
fn padding_len(len: usize) -> usize {
    match len % 4 {
        0 => 4,
        r => 4 - r,
    }
}

/// Streams an [`Opener`] takes at most (`own_inbound::MAX_STREAMS` takes no more).
pub const MAX_OPENED_STREAMS: usize = 16;

/// A connection's receiving side for the GCM profiles: the streams taken over, each with
/// what it has had opened. They are kept in place, not behind a pointer of their own: every
/// datagram looks its stream up here, and in rooms of many small calls each connection's
/// state is cold by the time its next packet comes.
pub struct Opener {
    session: Session,
    streams: [(u32, Seen); MAX_OPENED_STREAMS],
    taken: usize,
}

impl Opener {
    /// `None` for a profile other than GCM's, or keys of the wrong length.
    pub fn new(profile: ProtectionProfile, remote: &MasterKey) -> Option<Self> {
        Some(Self {
            session: Session::new(profile, remote)?,
            streams: [(0, Seen { highest: 0, mask: 0 }); MAX_OPENED_STREAMS],
            taken: 0,
        })
    }

    /// Whether [`take`](Self::take) took this stream.
    pub fn has(&self, ssrc: u32) -> bool {
        self.streams[..self.taken].iter().any(|(s, _)| *s == ssrc)
    }

    /// How many streams are taken.
    pub fn taken(&self) -> usize {
        self.taken
    }

    /// Takes stream `ssrc`, whose packet `seq` was the last opened elsewhere (by `rtc`,
    /// which estimates indexes from the stream's first packet with rollover counter 0, as
    /// this does): its later packets are estimated from there on. A stream taken already
    /// keeps what it has seen; beyond [`MAX_OPENED_STREAMS`] none is taken (its packets stay
    /// `rtc`'s to open).
    pub fn take(&mut self, ssrc: u32, seq: u16) {
        if !self.has(ssrc) && self.taken < MAX_OPENED_STREAMS {
            self.streams[self.taken] = (
                ssrc,
                Seen {
                    highest: u64::from(seq),
                    mask: 1,
                },
            );
            self.taken += 1;
        }
    }

    /// Opens an SRTP packet of a stream taken (authenticates, refuses a replay, decrypts)
    /// and parses it.
    pub fn open(&mut self, datagram: &[u8]) -> Result<Packet, SrtpError> {
        self.open_in(datagram, &mut BytesMut::new(), Vec::new())
    }

    /// As [`open`](Self::open), the datagram copied into space cut from `arena` and opened
    /// there ([`open_owned`](Self::open_owned)): the packet's bytes share `arena`'s buffer,
    /// which `reserve` takes again once every packet cut from it is dropped, or replaces while
    /// one is kept.
    pub fn open_in(
        &mut self,
        datagram: &[u8],
        arena: &mut BytesMut,
        spare: Vec<Extension>,
    ) -> Result<Packet, SrtpError> {
        arena.reserve(datagram.len());
        arena.extend_from_slice(datagram);
        let owned = arena.split_to(datagram.len());
        self.open_owned(owned, spare)
    }

    /// As [`open`](Self::open), in place: the datagram is decrypted where it lies (a shard's
    /// datagrams are slices of its receive pool, `udp::UdpIo::next_datagram`, taken again once
    /// every slice is dropped: a forwarded packet is dropped within its turn), and parsed into
    /// `spare`, a list of header extensions (cleared, its capacity kept: [`super::rtp_parse`]).
    /// So a shard that hands each forwarded packet's list back opens packets without copying
    /// or allocating.
    pub fn open_owned(&mut self, mut datagram: BytesMut, spare: Vec<Extension>) -> Result<Packet, SrtpError> {
        let header_len = header_len(&datagram).ok_or(SrtpError::NotRtp)?;
        let tag_at = datagram
            .len()
            .checked_sub(TAG_LEN)
            .filter(|&t| t >= header_len)
            .ok_or(SrtpError::TooShort)?;
        let seq = u16::from_be_bytes([datagram[2], datagram[3]]);
        let ssrc = u32::from_be_bytes([datagram[8], datagram[9], datagram[10], datagram[11]]);
        let seen = self.streams[..self.taken]
            .iter_mut()
            .find(|(s, _)| *s == ssrc)
            .map(|(_, seen)| seen)
            .ok_or(SrtpError::UnknownStream)?;
        let index = estimate(Some(seen.highest), seq);
        if !seen.fresh(index) {
            return Err(SrtpError::Replayed);
        }
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&datagram[tag_at..]);
        datagram.truncate(tag_at);
        let (aad, body) = datagram.split_at_mut(header_len);
        self.session
            .cipher
            .open_in_place(&self.session.nonce(ssrc, index), aad, body, &tag)
            .map_err(|_| SrtpError::Unauthentic)?;
        seen.accept(index);
        let mut packet = Packet::default();
        packet.header.extensions = spare;
        super::rtp_parse::parse_into(datagram.freeze(), &mut packet).map_err(|_| SrtpError::Malformed)?;
        Ok(packet)
    }
}

/// The highest SRTCP index (31 bits); `rtc-srtp` wraps to 0 past it.
const MAX_SRTCP_INDEX: u32 = 0x7fff_ffff;

/// A connection's sending side of SRTCP for the GCM profiles (RFC 7714 §9), sealed as
/// `rtc-srtp` seals it, byte for byte: each sender SSRC's index counts from 1, the E flag set,
/// the compound encrypted after its first 8 octets, then the tag and the index.
pub struct RtcpSealer {
    session: Session,
    streams: Vec<(u32, u32)>,
}

impl RtcpSealer {
    /// `None` for a profile other than GCM's, or keys of the wrong length.
    pub fn new(profile: ProtectionProfile, local: &MasterKey) -> Option<Self> {
        Some(Self {
            session: Session::rtcp(profile, local)?,
            streams: Vec::new(),
        })
    }

    /// A compound RTCP packet as an SRTCP datagram, sealed in space cut from `arena` (as
    /// [`Sealer::seal_in`] does): no allocation while `arena`'s buffer can be taken again.
    pub fn seal_in(&mut self, plain: &[u8], arena: &mut BytesMut) -> Result<BytesMut, SrtpError> {
        if plain.len() < RTCP_HEADER {
            return Err(SrtpError::TooShort);
        }
        if plain[0] >> 6 != 2 {
            return Err(SrtpError::NotRtcp);
        }
        let ssrc = u32::from_be_bytes([plain[4], plain[5], plain[6], plain[7]]);
        let at = match self.streams.iter().position(|(s, _)| *s == ssrc) {
            Some(at) => at,
            None => {
                self.streams.push((ssrc, 0));
                self.streams.len() - 1
            }
        };
        let index = &mut self.streams[at].1;
        *index = if *index >= MAX_SRTCP_INDEX { 0 } else { *index + 1 };
        let trailer = (*index | SRTCP_E_FLAG).to_be_bytes();
        let mut aad = [0u8; RTCP_HEADER + SRTCP_INDEX_LEN];
        aad[..RTCP_HEADER].copy_from_slice(&plain[..RTCP_HEADER]);
        aad[RTCP_HEADER..].copy_from_slice(&trailer);
        let mut nonce = [0u8; SALT_LEN];
        nonce[2..6].copy_from_slice(&ssrc.to_be_bytes());
        nonce[8..].copy_from_slice(&index.to_be_bytes());
        for (v, s) in nonce.iter_mut().zip(self.session.salt) {
            *v ^= s;
        }
        let len = plain.len() + TAG_LEN + SRTCP_INDEX_LEN;
        arena.clear();
        arena.reserve(len);
        arena.extend_from_slice(plain);
        let mut tag = [0u8; TAG_LEN];
        self.session
            .cipher
            .seal_in_place(&nonce, &aad, &mut arena[RTCP_HEADER..], &mut tag)
            .map_err(|_| SrtpError::Crypto)?;
        arena.extend_from_slice(&tag);
        arena.extend_from_slice(&trailer);
        Ok(arena.split_to(len))
    }
}

/// The SRTCP streams (sender SSRCs) an [`RtcpOpener`] keeps a replay window for: a client
/// sends its RTCP from one or two.
pub const MAX_RTCP_STREAMS: usize = 16;

/// A connection's receiving side of SRTCP for the GCM profiles (RFC 7714 §9), opened as
/// `rtc-srtp` opens it, into a buffer the caller keeps: the nonce is the SRTCP session salt
/// XOR (SSRC, SRTCP index), the associated data the header and sender SSRC and the index with
/// the E flag set (`rtc-srtp` sets it whatever the wire says, and so decrypts every packet);
/// what is opened must not be older than the replay window of its sender SSRC nor seen before
/// in it.
pub struct RtcpOpener {
    session: Session,
    streams: Vec<(u32, Seen)>,
}

impl RtcpOpener {
    /// `None` for a profile other than GCM's, or keys of the wrong length.
    pub fn new(profile: ProtectionProfile, remote: &MasterKey) -> Option<Self> {
        Some(Self {
            session: Session::rtcp(profile, remote)?,
            streams: Vec::new(),
        })
    }

    /// Opens an SRTCP datagram (authenticates, refuses a replay, decrypts) into `plain`
    /// (cleared first; its capacity kept): the compound RTCP packet. A sender SSRC beyond
    /// [`MAX_RTCP_STREAMS`] is refused.
    pub fn open_into(&mut self, datagram: &[u8], plain: &mut BytesMut) -> Result<(), SrtpError> {
        let len = datagram.len();
        if len < RTCP_HEADER + TAG_LEN + SRTCP_INDEX_LEN {
            return Err(SrtpError::TooShort);
        }
        if datagram[0] >> 6 != 2 {
            return Err(SrtpError::NotRtcp);
        }
        let trailer = u32::from_be_bytes(
            datagram[len - SRTCP_INDEX_LEN..]
                .try_into()
                .map_err(|_| SrtpError::TooShort)?,
        );
        let index = u64::from(trailer & !SRTCP_E_FLAG);
        let ssrc = u32::from_be_bytes([datagram[4], datagram[5], datagram[6], datagram[7]]);
        let at = self.streams.iter().position(|(s, _)| *s == ssrc);
        if let Some(at) = at
            && !self.streams[at].1.fresh(index)
        {
            return Err(SrtpError::Replayed);
        }
        if at.is_none() && self.streams.len() >= MAX_RTCP_STREAMS {
            return Err(SrtpError::UnknownStream);
        }
        let tag_at = len - SRTCP_INDEX_LEN - TAG_LEN;
        let mut aad = [0u8; RTCP_HEADER + SRTCP_INDEX_LEN];
        aad[..RTCP_HEADER].copy_from_slice(&datagram[..RTCP_HEADER]);
        aad[RTCP_HEADER..].copy_from_slice(&(trailer | SRTCP_E_FLAG).to_be_bytes());
        let mut nonce = [0u8; SALT_LEN];
        nonce[2..6].copy_from_slice(&ssrc.to_be_bytes());
        nonce[8..].copy_from_slice(&(index as u32).to_be_bytes());
        for (v, s) in nonce.iter_mut().zip(self.session.salt) {
            *v ^= s;
        }
        plain.clear();
        plain.extend_from_slice(&datagram[..tag_at]);
        self.session
            .cipher
            .open_in_place(
                &nonce,
                &aad,
                &mut plain[RTCP_HEADER..],
                &datagram[tag_at..tag_at + TAG_LEN],
            )
            .map_err(|_| SrtpError::Unauthentic)?;
        match at {
            Some(at) => self.streams[at].1.accept(index),
            None => self.streams.push((
                ssrc,
                Seen {
                    highest: index,
                    mask: 1,
                },
            )),
        }
        Ok(())
    }
}

/// The length of an RTP datagram's header on the wire (fixed part, CSRCs, extension), if it
/// is RTP version 2 and the header fits.
fn header_len(datagram: &[u8]) -> Option<usize> {
    let first = *datagram.first()?;
    if first >> 6 != 2 || datagram.len() < FIXED_HEADER {
        return None;
    }
    let mut len = FIXED_HEADER + 4 * usize::from(first & 0x0F);
    if first & 0x10 != 0 {
        let words = datagram.get(len + 2..len + 4)?;
        len += 4 + 4 * usize::from(u16::from_be_bytes([words[0], words[1]]));
    }
    (len <= datagram.len()).then_some(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::shared::marshal::Unmarshal;
    use rtc::srtp::context::Context;
    use rtc::srtp::option::srtp_replay_protection;

    const PROFILES: [ProtectionProfile; 2] = [ProtectionProfile::AeadAes128Gcm, ProtectionProfile::AeadAes256Gcm];

    fn master(profile: ProtectionProfile, seed: u8) -> MasterKey {
        MasterKey {
            key: (0..profile.key_len())
                .map(|i| seed.wrapping_mul(31).wrapping_add(i as u8))
                .collect(),
            salt: (0..profile.salt_len())
                .map(|i| seed.wrapping_add(7 * i as u8))
                .collect(),
        }
    }

    fn rtc_context(profile: ProtectionProfile, key: &MasterKey, replay: bool) -> Context {
        let provider = rtc::crypto::default_provider().expect("provider");
        let option = replay.then(|| srtp_replay_protection(REPLAY_WINDOW));
        Context::new(&key.key, &key.salt, profile, option, None, provider.crypto()).expect("context")
    }

    /// A packet as Chrome sends video: one-byte extensions (padded to a word), a payload of
    /// `len` octets.
    fn packet(ssrc: u32, seq: u16, len: usize) -> Packet {
        Packet {
            header: rtc::rtp::header::Header {
                version: 2,
                marker: seq.is_multiple_of(3),
                payload_type: 96,
                sequence_number: seq,
                timestamp: u32::from(seq).wrapping_mul(3000),
                ssrc,
                extension: true,
                extension_profile: rtc::rtp::header::EXTENSION_PROFILE_ONE_BYTE,
                extensions: vec![
                    rtc::rtp::header::Extension {
                        id: 3,
                        payload: bytes::Bytes::copy_from_slice(&seq.to_be_bytes()),
                    },
                    rtc::rtp::header::Extension {
                        id: 4,
                        payload: bytes::Bytes::from_static(b"abc"),
                    },
                ],
                ..Default::default()
            },
            payload: (0..len).map(|i| (i as u8) ^ (seq as u8)).collect::<Vec<u8>>().into(),
        }
    }

    /// A parsed packet as it was built (the parser notes the extension block's padding).
    fn unpadded(mut packet: Packet) -> Packet {
        packet.header.extensions_padding = 0;
        packet
    }

    /// Sequence numbers from `start`, wrapping, with a few reordered pairs and losses.
    fn sequence(start: u16, count: u16) -> Vec<u16> {
        let mut seqs: Vec<u16> = (0..count)
            .filter(|i| i % 97 != 5)
            .map(|i| start.wrapping_add(i))
            .collect();
        for i in (10..seqs.len() - 1).step_by(41) {
            seqs.swap(i, i + 1);
        }
        seqs
    }

    #[test]
    fn what_it_seals_rtc_opens_and_what_rtc_seals_it_opens_across_rollovers() {
        for profile in PROFILES {
            let key = master(profile, 1);
            let mut sealer = Sealer::new(profile, &key).expect("gcm");
            let mut rtc_opener = rtc_context(profile, &key, true);
            let mut rtc_sealer = rtc_context(profile, &key, false);
            let mut opener = Opener::new(profile, &key).expect("gcm");
            // Our sender numbers in order, as the shard's rewriter does; `rtc`'s sender in
            // the order a network may deliver.
            for (i, seq) in (0..70_000u32).map(|i| (i, 65_000u16.wrapping_add(i as u16))) {
                let sent = packet(0x1234, seq, (i % 200) as usize);
                let datagram = sealer.seal(&sent).expect("sealed");
                let opened = Packet::unmarshal(&mut rtc_opener.decrypt_rtp(&datagram).expect("rtc opens").freeze())
                    .expect("parses");
                assert_eq!(unpadded(opened), sent, "{profile:?} seq {seq}");
            }
            let seqs = sequence(65_500, 3_000);
            opener.take(0x99, seqs[0]);
            let first = rtc_sealer
                .encrypt_rtp(&packet(0x99, seqs[0], 10).marshal().expect("m"))
                .expect("e");
            assert_eq!(
                opener.open(&first),
                Err(SrtpError::Replayed),
                "the packet taken over at"
            );
            for &seq in &seqs[1..] {
                let sent = packet(0x99, seq, 100);
                let datagram = rtc_sealer
                    .encrypt_rtp(&sent.marshal().expect("marshal"))
                    .expect("rtc seals");
                assert_eq!(
                    unpadded(opener.open(&datagram).expect("opened")),
                    sent,
                    "{profile:?} seq {seq}"
                );
            }
        }
    }

    #[test]
    fn what_it_seals_is_byte_for_byte_what_rtc_seals_padding_included() {
        for profile in PROFILES {
            let key = master(profile, 5);
            let mut sealer = Sealer::new(profile, &key).expect("gcm");
            let mut rtc_sealer = rtc_context(profile, &key, false);
            let mut seq = 1u16;
            for len in 0..13 {
                for padding in [false, true] {
                    let mut sent = packet(0x77, seq, len);
                    sent.header.padding = padding;
                    let ours = sealer.seal(&sent).expect("sealed");
                    let theirs = rtc_sealer
                        .encrypt_rtp(&sent.marshal().expect("marshal"))
                        .expect("rtc seals");
                    assert_eq!(&ours[..], &theirs[..], "{profile:?} len {len} padding {padding}");
                    seq += 1;
                }
            }
        }
    }

    #[test]
    fn a_replay_a_packet_too_old_a_forgery_and_another_key_are_refused() {
        for profile in PROFILES {
            let key = master(profile, 2);
            let mut sealer = Sealer::new(profile, &key).expect("gcm");
            let mut opener = Opener::new(profile, &key).expect("gcm");
            let seal = |sealer: &mut Sealer, seq: u16| sealer.seal(&packet(7, seq, 40)).expect("sealed");
            let d100 = seal(&mut sealer, 100);
            assert_eq!(opener.open(&d100), Err(SrtpError::UnknownStream));
            opener.take(7, 99);
            assert!(opener.open(&d100).is_ok());
            assert_eq!(opener.open(&d100), Err(SrtpError::Replayed));
            let early: Vec<_> = (101..=300).map(|seq| seal(&mut sealer, seq)).collect();
            // 300 first, then 240 (within the window, unseen) and 236 (older than 64).
            assert!(opener.open(&early[199]).is_ok());
            assert!(opener.open(&early[139]).is_ok());
            assert_eq!(opener.open(&early[139]), Err(SrtpError::Replayed));
            assert_eq!(opener.open(&early[135]), Err(SrtpError::Replayed));
            let mut forged = seal(&mut sealer, 301).to_vec();
            forged[20] ^= 0x40;
            assert_eq!(opener.open(&forged), Err(SrtpError::Unauthentic));
            // A forgery moves nothing: the genuine packet still opens.
            forged[20] ^= 0x40;
            assert!(opener.open(&forged).is_ok());
            let mut stranger = Sealer::new(profile, &master(profile, 3)).expect("gcm");
            assert_eq!(
                opener.open(&stranger.seal(&packet(7, 302, 40)).expect("sealed")),
                Err(SrtpError::Unauthentic)
            );
            assert_eq!(opener.open(&seal(&mut sealer, 303)[..30]), Err(SrtpError::TooShort));
            assert_eq!(opener.open(&[0x40; 40]), Err(SrtpError::NotRtp));
            assert_eq!(
                opener.open(&[0x90, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7, 0xBE, 0xDE, 0xFF, 0xFF]),
                Err(SrtpError::NotRtp)
            );
        }
    }

    /// SRTCP from three senders, delivered out of order, twice, late, forged, with the E flag
    /// cleared and cut short: `RtcpOpener` decides each as `rtc-srtp`'s context with the
    /// same replay window does, and opens the same bytes.
    #[test]
    fn srtcp_is_opened_and_refused_as_rtc_opens_and_refuses_it() {
        use rtc::srtp::option::srtcp_replay_protection;
        for profile in PROFILES {
            let key = master(profile, 9);
            let mut sender = rtc_context(profile, &key, false);
            let provider = rtc::crypto::default_provider().expect("provider");
            let option = Some(srtcp_replay_protection(REPLAY_WINDOW));
            let mut theirs =
                Context::new(&key.key, &key.salt, profile, None, option, provider.crypto()).expect("context");
            let mut ours = RtcpOpener::new(profile, &key).expect("GCM");
            let mut sent = Vec::new();
            for i in 0..200u32 {
                let ssrc = [7u32, 8, 9][i as usize % 3];
                let mut rr = vec![0x81, 201, 0, 7];
                rr.extend_from_slice(&ssrc.to_be_bytes());
                rr.extend((0..24).map(|b| (b as u32 * i) as u8));
                sent.push(sender.encrypt_rtcp(&rr).expect("sealed").to_vec());
            }
            // Out of order within the window, every one twice, some far too late, some damaged.
            let mut order: Vec<Vec<u8>> = Vec::new();
            for chunk in sent.chunks(12) {
                order.extend(chunk.iter().rev().cloned());
                order.extend(chunk.iter().step_by(5).cloned());
            }
            order.extend(sent[..6].iter().cloned());
            let mut forged = sent[199].clone();
            forged[12] ^= 0x40;
            let mut e_cleared = sent[198].clone();
            let at = e_cleared.len() - 4;
            e_cleared[at] &= 0x7f;
            let mut other_version = sent[197].clone();
            other_version[0] &= 0x3f;
            order.extend([
                forged,
                e_cleared,
                other_version,
                sent[196][..27].to_vec(),
                sent[196].clone(),
            ]);
            let mut plain = BytesMut::new();
            let (mut opened, mut refused) = (0, 0);
            for datagram in &order {
                let rtc = theirs.decrypt_rtcp(datagram);
                let own = ours.open_into(datagram, &mut plain);
                match (rtc, own) {
                    (Ok(p), Ok(())) => {
                        assert_eq!(&p[..], &plain[..], "{profile:?}");
                        opened += 1;
                    }
                    (Err(_), Err(_)) => refused += 1,
                    (rtc, own) => panic!("{profile:?}: rtc-srtp {rtc:?}, ours {own:?}"),
                }
            }
            assert_eq!(opened, 200, "{profile:?}: each packet opened once");
            assert!(refused > 50, "{profile:?}: {refused}");
        }
    }

    /// SRTCP sealed in an arena is byte for byte what `rtc-srtp` seals, sender by sender.
    #[test]
    fn srtcp_is_sealed_as_rtc_seals_it() {
        for profile in PROFILES {
            let key = master(profile, 5);
            let mut theirs = rtc_context(profile, &key, false);
            let mut ours = RtcpSealer::new(profile, &key).expect("GCM");
            let mut arena = BytesMut::with_capacity(4096);
            for i in 0..300u32 {
                let ssrc = [0xfeed_u32, 0xbeef][i as usize % 2];
                let mut rr = vec![0x81, 201, 0, 7];
                rr.extend_from_slice(&ssrc.to_be_bytes());
                rr.extend((0..24).map(|b| (b as u32 ^ i) as u8));
                let want = theirs.encrypt_rtcp(&rr).expect("rtc seals");
                let got = ours.seal_in(&rr, &mut arena).expect("sealed");
                assert_eq!(&got[..], &want[..], "{profile:?} packet {i}");
            }
            assert_eq!(ours.seal_in(&[0x81, 201, 0], &mut arena), Err(SrtpError::TooShort));
            assert_eq!(
                ours.seal_in(&[0x41, 201, 0, 1, 0, 0, 0, 1], &mut arena),
                Err(SrtpError::NotRtcp)
            );
        }
    }

    #[test]
    fn an_srtcp_opener_keeps_a_bounded_number_of_senders_and_reuses_its_buffer() {
        let profile = ProtectionProfile::AeadAes128Gcm;
        let key = master(profile, 3);
        let mut sender = rtc_context(profile, &key, false);
        let mut ours = RtcpOpener::new(profile, &key).expect("GCM");
        let mut plain = BytesMut::with_capacity(256);
        let at = plain.as_ptr();
        for ssrc in 0..MAX_RTCP_STREAMS as u32 + 1 {
            let mut pli = vec![0x81, 206, 0, 2];
            pli.extend_from_slice(&ssrc.to_be_bytes());
            pli.extend_from_slice(&1u32.to_be_bytes());
            let datagram = sender.encrypt_rtcp(&pli).expect("sealed");
            let opened = ours.open_into(&datagram, &mut plain);
            if (ssrc as usize) < MAX_RTCP_STREAMS {
                assert_eq!(opened, Ok(()));
                assert_eq!(&plain[..], &pli[..]);
                assert_eq!(plain.as_ptr(), at, "the buffer is reused");
            } else {
                assert_eq!(opened, Err(SrtpError::UnknownStream));
            }
        }
    }

    #[test]
    fn the_index_follows_rfc_3711_appendix_a() {
        assert_eq!(estimate(None, 65_535), 65_535);
        assert_eq!(estimate(Some(65_535), 0), 1 << 16);
        assert_eq!(estimate(Some(65_535), 65_534), 65_534);
        assert_eq!(
            estimate(Some((1 << 16) | 2), 65_534),
            65_534,
            "a late packet of the previous rollover"
        );
        assert_eq!(estimate(Some((1 << 16) | 40_000), 3), (2 << 16) | 3);
        assert_eq!(estimate(Some((1 << 16) | 40_000), 20_000), (1 << 16) | 20_000);
        assert_eq!(estimate(Some(10), 60_000), 60_000, "no rollover counter below 0");
        let mut seen = Seen { highest: 1000, mask: 1 };
        assert!(!seen.fresh(1000) && seen.fresh(999) && seen.fresh(937) && !seen.fresh(936));
        seen.accept(1100);
        assert!(seen.fresh(1099) && !seen.fresh(1000) && !seen.fresh(1100));
        seen.accept(1099);
        assert!(!seen.fresh(1099));
        seen.accept(1_000_000);
        assert_eq!(seen.mask, 1);
    }

    #[test]
    fn other_profiles_and_bad_keys_are_left_to_rtc() {
        let cm = ProtectionProfile::Aes128CmHmacSha1_80;
        assert!(!handles(cm) && Sealer::new(cm, &master(cm, 1)).is_none());
        let gcm = ProtectionProfile::AeadAes128Gcm;
        let mut short = master(gcm, 1);
        short.salt.pop();
        assert!(handles(gcm) && Opener::new(gcm, &short).is_none());
    }

    /// An opener takes at most [`MAX_OPENED_STREAMS`] streams; one more is not taken and its
    /// packets are refused as unknown (they stay `rtc`'s), while the taken ones still open.
    #[test]
    fn an_opener_takes_a_bounded_number_of_streams() {
        let profile = ProtectionProfile::AeadAes128Gcm;
        let key = master(profile, 4);
        let mut sealer = Sealer::new(profile, &key).expect("gcm");
        let mut opener = Opener::new(profile, &key).expect("gcm");
        let extra = MAX_OPENED_STREAMS as u32 + 1;
        for ssrc in 1..=extra {
            opener.take(ssrc, 0);
            opener.take(ssrc, 0);
        }
        assert_eq!(
            opener.taken(),
            MAX_OPENED_STREAMS,
            "none taken twice, none past the bound"
        );
        assert!(opener.has(MAX_OPENED_STREAMS as u32) && !opener.has(extra));
        for ssrc in [1, MAX_OPENED_STREAMS as u32] {
            let sent = packet(ssrc, 1, 100);
            let opened = opener.open(&sealer.seal(&sent).expect("sealed")).expect("opened");
            assert_eq!(unpadded(opened), sent);
        }
        let beyond = sealer.seal(&packet(extra, 1, 100)).expect("sealed");
        assert!(matches!(opener.open(&beyond), Err(SrtpError::UnknownStream)));
    }

    /// Packets opened into one arena share its buffer, which is taken again once the packets
    /// are dropped: a thousand packets, each dropped before the next, all lie in one buffer.
    /// A packet kept while the arena fills keeps its bytes (the arena moves to a new buffer),
    /// and what comes out is what went in either way.
    #[test]
    fn packets_opened_into_an_arena_reuse_its_buffer_and_a_kept_one_stays_whole() {
        let profile = ProtectionProfile::AeadAes128Gcm;
        let key = master(profile, 3);
        let mut sealer = Sealer::new(profile, &key).expect("gcm");
        let mut opener = Opener::new(profile, &key).expect("gcm");
        opener.take(5, 0);
        let mut arena = BytesMut::with_capacity(16 * 1024);
        let (mut lowest, mut highest) = (usize::MAX, 0);
        for seq in 1..=1000u16 {
            let sent = packet(5, seq, 1000);
            let opened = opener
                .open_in(&sealer.seal(&sent).expect("sealed"), &mut arena, Vec::new())
                .expect("opened");
            let at = opened.payload.as_ptr() as usize;
            (lowest, highest) = (lowest.min(at), highest.max(at + opened.payload.len()));
            assert_eq!(unpadded(opened), sent, "seq {seq}");
        }
        assert!(
            highest - lowest <= 16 * 1024,
            "1 000 packets of 1 000 bytes in one 16 KiB buffer: {} bytes apart",
            highest - lowest
        );
        let kept_sent = packet(5, 1001, 1000);
        let kept = opener
            .open_in(&sealer.seal(&kept_sent).expect("sealed"), &mut arena, Vec::new())
            .expect("opened");
        for seq in 1002..=1100u16 {
            let sent = packet(5, seq, 1000);
            let opened = opener
                .open_in(&sealer.seal(&sent).expect("sealed"), &mut arena, Vec::new())
                .expect("opened");
            assert_eq!(unpadded(opened), sent, "seq {seq}");
        }
        assert_eq!(unpadded(kept), kept_sent, "a packet kept across the arena's refills");
    }

    /// A datagram opened in place: the packet's payload lies in the datagram's own buffer
    /// (no copy), and what comes out is what went in; a replay and a forgery are refused
    /// before anything is decrypted into the buffer.
    #[test]
    fn a_datagram_opened_in_place_is_its_own_packet() {
        let profile = ProtectionProfile::AeadAes256Gcm;
        let key = master(profile, 5);
        let mut sealer = Sealer::new(profile, &key).expect("gcm");
        let mut opener = Opener::new(profile, &key).expect("gcm");
        opener.take(7, 0);
        for seq in 1..=3u16 {
            let sent = packet(7, seq, 1000);
            let datagram = sealer.seal(&sent).expect("sealed");
            let replay = datagram.clone();
            let range = datagram.as_ptr() as usize..datagram.as_ptr() as usize + datagram.len();
            let opened = opener.open_owned(datagram, Vec::new()).expect("opened");
            assert!(range.contains(&(opened.payload.as_ptr() as usize)), "in place");
            assert_eq!(unpadded(opened), sent);
            assert!(matches!(
                opener.open_owned(replay, Vec::new()),
                Err(SrtpError::Replayed)
            ));
        }
        let mut forged = sealer.seal(&packet(7, 4, 1000)).expect("sealed");
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert!(matches!(
            opener.open_owned(forged, Vec::new()),
            Err(SrtpError::Unauthentic)
        ));
    }

    #[test]
    fn copies_sealed_into_an_arena_match_their_own_buffers_and_reuse_one() {
        let profile = ProtectionProfile::AeadAes128Gcm;
        let key = master(profile, 4);
        let mut own = Sealer::new(profile, &key).expect("gcm");
        let mut in_arena = Sealer::new(profile, &key).expect("gcm");
        let mut arena = BytesMut::with_capacity(16 * 1024);
        let sized = |seq: u16| packet(9, seq, 100 + usize::from(seq % 900));
        let (mut lowest, mut highest) = (usize::MAX, 0);
        for seq in 1..=1000u16 {
            let datagram = in_arena.seal_in(&sized(seq), &mut arena).expect("sealed");
            assert_eq!(datagram, own.seal(&sized(seq)).expect("sealed"), "seq {seq}");
            let at = datagram.as_ptr() as usize;
            (lowest, highest) = (lowest.min(at), highest.max(at + datagram.len()));
        }
        assert!(
            highest - lowest <= 16 * 1024,
            "1 000 datagrams in one 16 KiB buffer: {} bytes apart",
            highest - lowest
        );
        // Datagrams still queued when the arena fills keep their bytes.
        let kept: Vec<(u16, BytesMut)> = (1001..=1100u16)
            .map(|seq| (seq, in_arena.seal_in(&sized(seq), &mut arena).expect("sealed")))
            .collect();
        let mut opener = Opener::new(profile, &key).expect("gcm");
        opener.take(9, 1000);
        for (seq, datagram) in kept {
            let opened = opener.open(&datagram).expect("a kept datagram stays whole");
            assert_eq!(unpadded(opened), sized(seq), "seq {seq}");
        }
    }
}
