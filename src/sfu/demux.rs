//! The demultiplexer for the shared media socket: which connection does a
//! datagram belong to?
//!
//! Every connection on a shard shares one UDP socket. A STUN binding request
//! names its connection in the USERNAME attribute (`<our ufrag>:<their ufrag>`,
//! RFC 8445 §7.2.2); once one arrives, its source address is remembered and every
//! later datagram from that address (DTLS, SRTP, SRTCP, STUN responses) routes by
//! address alone. Anything from an unknown address is garbage and is dropped, never
//! parsed further; what comes from a connection's address passes [`screen`] first,
//! and junk (counted per connection) never reaches `rtc`.
//! Pure: no I/O, no clock; the shard owns the socket.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::SocketAddr;

/// What kind of protocol a datagram carries, from its first byte (RFC 7983 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// 0..=3: STUN.
    Stun,
    /// 20..=63: DTLS.
    Dtls,
    /// 128..=191: RTP or RTCP (SRTP/SRTCP once keyed).
    Rtp,
    /// Anything else (including an empty datagram).
    Unknown,
}

/// Classifies a datagram by its first byte.
pub fn classify(buf: &[u8]) -> Class {
    match buf.first() {
        Some(0..=3) => Class::Stun,
        Some(20..=63) => Class::Dtls,
        Some(128..=191) => Class::Rtp,
        _ => Class::Unknown,
    }
}

/// Whether a datagram is RTCP (SRTCP once keyed): see [`is_rtp`].
pub fn is_rtcp(buf: &[u8]) -> bool {
    classify(buf) == Class::Rtp && buf.get(1).is_some_and(|b| (192..=223).contains(b))
}

/// Whether a datagram is RTP (SRTP once keyed), not RTCP: RFC 5761 §4 tells them apart by
/// the second byte, whose RTCP packet types (192 to 223) RTP payload types with the marker
/// bit set never take. The header is not encrypted, so this holds for SRTP and SRTCP too.
pub fn is_rtp(buf: &[u8]) -> bool {
    classify(buf) == Class::Rtp && buf.get(1).is_some_and(|b| !(192..=223).contains(b))
}

const STUN_HEADER_LEN: usize = 20;
const STUN_MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const STUN_BINDING_REQUEST: u16 = 0x0001;
const STUN_ATTR_USERNAME: u16 = 0x0006;
const STUN_ATTR_USE_CANDIDATE: u16 = 0x0025;
/// RFC 8489 §14.3: USERNAME is at most 513 bytes.
const STUN_MAX_USERNAME: usize = 513;

/// What the demultiplexer reads from a STUN binding request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindingRequest<'a> {
    /// The USERNAME attribute (`<our ufrag>:<their ufrag>`).
    pub username: &'a [u8],
    /// USE-CANDIDATE is present: the (controlling) client nominates this path.
    pub use_candidate: bool,
}

/// The USERNAME of a well-formed STUN binding request, or `None` for anything
/// else (other STUN methods, truncated or inconsistent lengths, no USERNAME).
pub fn stun_binding_username(buf: &[u8]) -> Option<&[u8]> {
    binding_request(buf).map(|r| r.username)
}

/// Parses a well-formed STUN binding request's USERNAME and USE-CANDIDATE.
///
/// Only the framing is checked: MESSAGE-INTEGRITY is the connection's job once
/// the datagram has been routed to it.
pub fn binding_request(buf: &[u8]) -> Option<BindingRequest<'_>> {
    if buf.len() < STUN_HEADER_LEN || classify(buf) != Class::Stun {
        return None;
    }
    let msg_type = u16::from_be_bytes([buf[0], buf[1]]);
    if msg_type != STUN_BINDING_REQUEST || buf[4..8] != STUN_MAGIC_COOKIE {
        return None;
    }
    let body_len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    if body_len % 4 != 0 || STUN_HEADER_LEN + body_len > buf.len() {
        return None;
    }
    let mut attrs = &buf[STUN_HEADER_LEN..STUN_HEADER_LEN + body_len];
    let mut username = None;
    let mut use_candidate = false;
    while attrs.len() >= 4 {
        let attr_type = u16::from_be_bytes([attrs[0], attrs[1]]);
        let attr_len = usize::from(u16::from_be_bytes([attrs[2], attrs[3]]));
        let padded = attr_len.div_ceil(4) * 4;
        if 4 + padded > attrs.len() {
            return None;
        }
        match attr_type {
            STUN_ATTR_USERNAME if username.is_none() => {
                if attr_len == 0 || attr_len > STUN_MAX_USERNAME {
                    return None;
                }
                username = Some(&attrs[4..4 + attr_len]);
            }
            STUN_ATTR_USE_CANDIDATE => use_candidate = true,
            _ => {}
        }
        attrs = &attrs[4 + padded..];
    }
    username.map(|username| BindingRequest {
        username,
        use_candidate,
    })
}

/// Whether a datagram is a STUN binding success response. The connection only
/// sends one to an address whose request passed MESSAGE-INTEGRITY, which makes it
/// the proof that a nomination from that address was genuine.
pub fn is_binding_success(buf: &[u8]) -> bool {
    buf.len() >= STUN_HEADER_LEN && buf[0] == 0x01 && buf[1] == 0x01 && buf[4..8] == STUN_MAGIC_COOKIE
}

/// Our half of a STUN USERNAME (`<ours>:<theirs>`), if it is valid UTF-8 and non-empty.
pub fn local_ufrag(username: &[u8]) -> Option<&str> {
    let colon = username.iter().position(|&b| b == b':')?;
    let ours = std::str::from_utf8(&username[..colon]).ok()?;
    (!ours.is_empty()).then_some(ours)
}

/// What is wrong with a datagram that came from a connection's own address (or named
/// it): the demultiplexer drops it before `rtc` sees it, so `rtc` never logs about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Junk {
    /// First byte outside STUN, DTLS and RTP/RTCP (RFC 7983).
    NotWebRtc,
    /// STUN range, but not a well-formed STUN message (bad cookie, lengths, attributes).
    MalformedStun,
    /// Well-formed STUN that a client of an ICE-lite server never sends: anything but a
    /// Binding request (with USERNAME and MESSAGE-INTEGRITY) or a Binding indication.
    UnexpectedStun,
    /// A Binding request for another connection's ufrag, or whose MESSAGE-INTEGRITY
    /// does not verify with the connection's password.
    BadCheck,
    /// DTLS range, but not a sequence of well-formed DTLS records.
    MalformedDtls,
    /// RTP range, but shorter than its own header says.
    MalformedRtp,
}

impl Junk {
    /// A short name for logs and the debug snapshot.
    pub fn as_str(self) -> &'static str {
        match self {
            Junk::NotWebRtc => "not_webrtc",
            Junk::MalformedStun => "malformed_stun",
            Junk::UnexpectedStun => "unexpected_stun",
            Junk::BadCheck => "bad_check",
            Junk::MalformedDtls => "malformed_dtls",
            Junk::MalformedRtp => "malformed_rtp",
        }
    }
}

const STUN_ATTR_MESSAGE_INTEGRITY: u16 = 0x0008;
const STUN_BINDING_INDICATION: u16 = 0x0011;
/// HMAC-SHA1 output: the MESSAGE-INTEGRITY value (RFC 8489 §14.5).
const STUN_INTEGRITY_LEN: usize = 20;

/// Checks the framing of a datagram routed to a connection, by its class, without
/// allocating: what passes is something `rtc` can parse (whether it authenticates is
/// `rtc`'s business: SRTP, DTLS and, see [`check_integrity`], STUN checks).
///
/// STUN must be a whole message (length field equal to the datagram, attributes that
/// end exactly at its end) and a Binding request carrying USERNAME and
/// MESSAGE-INTEGRITY, or a Binding indication; DTLS a run of records of a known
/// content type and version 254.x whose lengths add up to the datagram; RTP at least
/// its fixed header, CSRCs and extension header; RTCP at least a header and an SSRC.
pub fn screen(buf: &[u8]) -> Result<Class, Junk> {
    match classify(buf) {
        Class::Unknown => Err(Junk::NotWebRtc),
        Class::Stun => screen_stun(buf).map(|()| Class::Stun),
        Class::Dtls => screen_dtls(buf).map(|()| Class::Dtls),
        Class::Rtp => screen_rtp(buf).map(|()| Class::Rtp),
    }
}

/// The attributes of a whole STUN message: `(type, value offset, value length)`, or
/// `None` if its framing is broken.
fn stun_attributes(buf: &[u8]) -> Option<impl Iterator<Item = (u16, usize, usize)> + '_> {
    if buf.len() < STUN_HEADER_LEN || buf[4..8] != STUN_MAGIC_COOKIE {
        return None;
    }
    let body_len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    if body_len % 4 != 0 || STUN_HEADER_LEN + body_len != buf.len() {
        return None;
    }
    // Walk once to validate; the iterator then walks again without checks.
    let mut at = STUN_HEADER_LEN;
    while at < buf.len() {
        if at + 4 > buf.len() {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([buf[at + 2], buf[at + 3]]));
        at += 4 + len.div_ceil(4) * 4;
    }
    if at != buf.len() {
        return None;
    }
    let mut at = STUN_HEADER_LEN;
    Some(std::iter::from_fn(move || {
        if at >= buf.len() {
            return None;
        }
        let attr_type = u16::from_be_bytes([buf[at], buf[at + 1]]);
        let len = usize::from(u16::from_be_bytes([buf[at + 2], buf[at + 3]]));
        let item = (attr_type, at + 4, len);
        at += 4 + len.div_ceil(4) * 4;
        Some(item)
    }))
}

fn screen_stun(buf: &[u8]) -> Result<(), Junk> {
    let attributes = stun_attributes(buf).ok_or(Junk::MalformedStun)?;
    match u16::from_be_bytes([buf[0], buf[1]]) {
        STUN_BINDING_INDICATION => Ok(()),
        STUN_BINDING_REQUEST => {
            let (mut username, mut integrity) = (false, false);
            for (attr_type, _, len) in attributes {
                match attr_type {
                    STUN_ATTR_USERNAME => username = len > 0 && len <= STUN_MAX_USERNAME,
                    STUN_ATTR_MESSAGE_INTEGRITY => integrity = len == STUN_INTEGRITY_LEN,
                    _ => {}
                }
            }
            if username && integrity {
                Ok(())
            } else {
                Err(Junk::UnexpectedStun)
            }
        }
        _ => Err(Junk::UnexpectedStun),
    }
}

/// Whether a well-formed STUN message's MESSAGE-INTEGRITY verifies with `key` (the
/// short-term password, RFC 8489 §14.5: HMAC-SHA1 over the message up to the
/// attribute, with the header's length field counting up to the end of it). `true`
/// for a message without MESSAGE-INTEGRITY (nothing to verify). No allocation.
pub fn check_integrity(buf: &[u8], key: &[u8]) -> bool {
    use hmac::{Hmac, Mac};
    let Some(mut attributes) = stun_attributes(buf) else {
        return false;
    };
    let Some((_, value, len)) = attributes.find(|&(t, _, _)| t == STUN_ATTR_MESSAGE_INTEGRITY) else {
        return true;
    };
    if len != STUN_INTEGRITY_LEN {
        return false;
    }
    let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(key) else {
        return false;
    };
    let counted = u16::try_from(value + STUN_INTEGRITY_LEN - STUN_HEADER_LEN).unwrap_or(u16::MAX);
    mac.update(&buf[..2]);
    mac.update(&counted.to_be_bytes());
    mac.update(&buf[4..value - 4]);
    mac.verify_slice(&buf[value..value + STUN_INTEGRITY_LEN]).is_ok()
}

fn screen_dtls(buf: &[u8]) -> Result<(), Junk> {
    const RECORD_HEADER: usize = 13;
    let mut rest = buf;
    while !rest.is_empty() {
        // change_cipher_spec, alert, handshake, application_data, heartbeat, tls12_cid
        if rest.len() < RECORD_HEADER || !(20..=25).contains(&rest[0]) || rest[1] != 0xfe {
            return Err(Junk::MalformedDtls);
        }
        let len = usize::from(u16::from_be_bytes([rest[11], rest[12]]));
        if RECORD_HEADER + len > rest.len() {
            return Err(Junk::MalformedDtls);
        }
        rest = &rest[RECORD_HEADER + len..];
    }
    Ok(())
}

fn screen_rtp(buf: &[u8]) -> Result<(), Junk> {
    if buf.len() < 8 {
        return Err(Junk::MalformedRtp);
    }
    // RTCP (RFC 5761 §4): packet types 192..=223 in the second byte.
    if (192..=223).contains(&buf[1]) {
        return Ok(());
    }
    let csrcs = usize::from(buf[0] & 0x0f);
    let mut header = 12 + 4 * csrcs;
    if buf[0] & 0x10 != 0 {
        if buf.len() < header + 4 {
            return Err(Junk::MalformedRtp);
        }
        header += 4 + 4 * usize::from(u16::from_be_bytes([buf[header + 2], buf[header + 3]]));
    }
    if buf.len() < header {
        return Err(Junk::MalformedRtp);
    }
    Ok(())
}

/// Why a datagram was not routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Not STUN/DTLS/RTP by its first byte.
    NotWebRtc,
    /// From an address we have not learned, and not a binding request for a known ufrag.
    UnknownSource,
}

/// Where a datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<K> {
    /// To this connection. `learned` is true when this datagram taught us its
    /// address; `nominated` when it is a binding request with USE-CANDIDATE (the
    /// client's chosen path: media to this connection should go there).
    Conn {
        key: K,
        learned: bool,
        nominated: bool,
    },
    Drop(DropReason),
}

/// The routing tables of one shard: ufrag -> connection, address -> connection.
#[derive(Debug)]
pub struct Router<K> {
    /// Our local ufrag of each connection (unique per shard: we generate them).
    by_ufrag: HashMap<String, K>,
    /// Source addresses learned from binding requests. Looked up for every datagram, so
    /// hashed with `foldhash` (seeded per process, several times cheaper than SipHash for
    /// an address) rather than the standard hasher.
    by_addr: HashMap<SocketAddr, K, foldhash::fast::RandomState>,
}

impl<K> Default for Router<K> {
    fn default() -> Self {
        Self {
            by_ufrag: HashMap::new(),
            by_addr: HashMap::default(),
        }
    }
}

impl<K: Copy + Eq + Hash> Router<K> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes a connection reachable by its local ufrag. Returns false (and changes
    /// nothing) if the ufrag is already taken.
    pub fn register(&mut self, ufrag: &str, key: K) -> bool {
        if self.by_ufrag.contains_key(ufrag) {
            return false;
        }
        self.by_ufrag.insert(ufrag.to_owned(), key);
        true
    }

    /// The connection a local ufrag belongs to.
    pub fn by_ufrag(&self, ufrag: &str) -> Option<K> {
        self.by_ufrag.get(ufrag).copied()
    }

    /// Forgets a connection: its ufrag and every address learned for it.
    pub fn remove(&mut self, key: K) {
        self.by_ufrag.retain(|_, k| *k != key);
        self.by_addr.retain(|_, k| *k != key);
    }

    /// Routes one datagram from `from`.
    ///
    /// A binding request for a known ufrag wins over the address table (the
    /// remote may have moved, or reused a port); everything else needs a learned
    /// address. No allocation unless a new address is learned.
    pub fn route(&mut self, from: SocketAddr, buf: &[u8]) -> Route<K> {
        let class = classify(buf);
        if class == Class::Stun
            && let Some(request) = binding_request(buf)
            && let Some(key) = local_ufrag(request.username).and_then(|ufrag| self.by_ufrag.get(ufrag).copied())
        {
            let learned = self.by_addr.insert(from, key) != Some(key);
            return Route::Conn {
                key,
                learned,
                nominated: request.use_candidate,
            };
        }
        match self.by_addr.get(&from) {
            Some(&key) => Route::Conn {
                key,
                learned: false,
                nominated: false,
            },
            // Garbage from a stranger is just dropped; from a connection's address it
            // goes to that connection's junk count (see [`screen`]).
            None if class == Class::Unknown => Route::Drop(DropReason::NotWebRtc),
            None => Route::Drop(DropReason::UnknownSource),
        }
    }

    /// Connections known by ufrag.
    pub fn connections(&self) -> usize {
        self.by_ufrag.len()
    }

    /// Addresses learned.
    pub fn addresses(&self) -> usize {
        self.by_addr.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A binding request with the given attributes (type, value), padded.
    fn stun(msg_type: u16, attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (t, v) in attrs {
            body.extend_from_slice(&t.to_be_bytes());
            body.extend_from_slice(&(v.len() as u16).to_be_bytes());
            body.extend_from_slice(v);
            while body.len() % 4 != 0 {
                body.push(0);
            }
        }
        let mut m = Vec::new();
        m.extend_from_slice(&msg_type.to_be_bytes());
        m.extend_from_slice(&(body.len() as u16).to_be_bytes());
        m.extend_from_slice(&STUN_MAGIC_COOKIE);
        m.extend_from_slice(&[7; 12]);
        m.extend_from_slice(&body);
        m
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn rtp_is_told_from_rtcp_by_its_second_byte() {
        assert!(is_rtp(&[0x80, 111]), "Opus");
        assert!(is_rtp(&[0x80, 0x80 | 96]), "VP8 with the marker bit");
        assert!(is_rtp(&[0x90, 0xff]), "payload type 127 with the marker bit");
        for pt in [200u8, 201, 205, 206, 192, 223] {
            assert!(!is_rtp(&[0x81, pt]), "RTCP packet type {pt}");
        }
        assert!(!is_rtp(&[0x80]), "too short");
        assert!(!is_rtp(&[0x00, 0x01]), "STUN");
        assert!(!is_rtp(&[22, 0xfe]), "DTLS");
        assert!(!is_rtp(&[]));
    }

    #[test]
    fn classify_follows_rfc7983() {
        assert_eq!(classify(&[]), Class::Unknown);
        assert_eq!(classify(&[0]), Class::Stun);
        assert_eq!(classify(&[3]), Class::Stun);
        assert_eq!(classify(&[4]), Class::Unknown);
        assert_eq!(classify(&[19]), Class::Unknown);
        assert_eq!(classify(&[20]), Class::Dtls);
        assert_eq!(classify(&[63]), Class::Dtls);
        assert_eq!(classify(&[64]), Class::Unknown);
        assert_eq!(classify(&[127]), Class::Unknown);
        assert_eq!(classify(&[128]), Class::Rtp);
        assert_eq!(classify(&[191]), Class::Rtp);
        assert_eq!(classify(&[192]), Class::Unknown);
        assert_eq!(classify(&[255]), Class::Unknown);
    }

    #[test]
    fn username_is_found_after_other_attributes() {
        let m = stun(
            0x0001,
            &[(0x8022, b"soft"), (0x0006, b"ours:theirs"), (0x0008, &[0; 20])],
        );
        assert_eq!(stun_binding_username(&m), Some(&b"ours:theirs"[..]));
        assert_eq!(local_ufrag(b"ours:theirs"), Some("ours"));
    }

    #[test]
    fn username_with_odd_length_is_padded() {
        let m = stun(0x0001, &[(0x0006, b"abc:d"), (0x8028, &[1, 2, 3, 4])]);
        assert_eq!(stun_binding_username(&m), Some(&b"abc:d"[..]));
    }

    #[test]
    fn non_requests_and_malformed_messages_have_no_username() {
        // success response, indication
        assert_eq!(stun_binding_username(&stun(0x0101, &[(0x0006, b"a:b")])), None);
        assert_eq!(stun_binding_username(&stun(0x0011, &[(0x0006, b"a:b")])), None);
        // no username
        assert_eq!(stun_binding_username(&stun(0x0001, &[(0x8022, b"x")])), None);
        // empty username
        assert_eq!(stun_binding_username(&stun(0x0001, &[(0x0006, b"")])), None);
        // too short
        assert_eq!(stun_binding_username(&[0, 1, 0, 0]), None);
        // bad cookie
        let mut m = stun(0x0001, &[(0x0006, b"a:b")]);
        m[4] = 0;
        assert_eq!(stun_binding_username(&m), None);
        // body length beyond the datagram
        let mut m = stun(0x0001, &[(0x0006, b"a:b")]);
        m[3] += 4;
        assert_eq!(stun_binding_username(&m), None);
        // body length not a multiple of 4
        let mut m = stun(0x0001, &[(0x0006, b"a:b")]);
        m[3] -= 1;
        assert_eq!(stun_binding_username(&m), None);
        // attribute length beyond the body
        let mut m = stun(0x0001, &[(0x0006, b"a:b")]);
        m[23] = 200;
        assert_eq!(stun_binding_username(&m), None);
        // oversized username
        let big = vec![b'a'; 600];
        assert_eq!(stun_binding_username(&stun(0x0001, &[(0x0006, &big)])), None);
        // not STUN at all
        assert_eq!(stun_binding_username(&[0x80; 40]), None);
    }

    #[test]
    fn local_ufrag_needs_a_colon_and_utf8() {
        assert_eq!(local_ufrag(b"nocolon"), None);
        assert_eq!(local_ufrag(b":theirs"), None);
        assert_eq!(local_ufrag(b"ours:"), Some("ours"));
        assert_eq!(local_ufrag(b"a:b:c"), Some("a"));
        assert_eq!(local_ufrag(&[0xff, 0xfe, b':', b'x']), None);
    }

    #[test]
    fn binding_request_teaches_the_address_then_other_traffic_follows() {
        let mut r = Router::new();
        assert!(r.register("srv1", 1u32));
        assert!(r.register("srv2", 2u32));
        assert!(!r.register("srv1", 3u32), "ufrags are unique");

        // DTLS before any binding request: unknown source.
        assert_eq!(
            r.route(addr(5000), &[22, 254, 253]),
            Route::Drop(DropReason::UnknownSource)
        );

        let req = stun(0x0001, &[(0x0006, b"srv1:cli")]);
        assert_eq!(
            r.route(addr(5000), &req),
            Route::Conn {
                key: 1,
                learned: true,
                nominated: false
            }
        );
        assert_eq!(
            r.route(addr(5000), &req),
            Route::Conn {
                key: 1,
                learned: false,
                nominated: false
            }
        );
        assert_eq!(
            r.route(addr(5000), &[22, 254, 253]),
            Route::Conn {
                key: 1,
                learned: false,
                nominated: false
            }
        );
        assert_eq!(
            r.route(addr(5000), &[0x80, 96, 0, 1]),
            Route::Conn {
                key: 1,
                learned: false,
                nominated: false
            }
        );
        // a STUN response from a known address routes by address
        assert_eq!(
            r.route(addr(5000), &stun(0x0101, &[])),
            Route::Conn {
                key: 1,
                learned: false,
                nominated: false
            }
        );

        // other address, other connection
        let req2 = stun(0x0001, &[(0x0006, b"srv2:cli")]);
        assert_eq!(
            r.route(addr(6000), &req2),
            Route::Conn {
                key: 2,
                learned: true,
                nominated: false
            }
        );
        assert_eq!(
            r.route(addr(6000), &[0x80]),
            Route::Conn {
                key: 2,
                learned: false,
                nominated: false
            }
        );
        assert_eq!(r.addresses(), 2);
    }

    #[test]
    fn unknown_ufrag_and_garbage_are_dropped() {
        let mut r = Router::new();
        r.register("srv1", 1u32);
        let req = stun(0x0001, &[(0x0006, b"nope:cli")]);
        assert_eq!(r.route(addr(1), &req), Route::Drop(DropReason::UnknownSource));
        assert_eq!(r.route(addr(1), &[]), Route::Drop(DropReason::NotWebRtc));
        assert_eq!(r.route(addr(1), &[0xff; 100]), Route::Drop(DropReason::NotWebRtc));
        assert_eq!(r.route(addr(1), &[0x00, 0x01]), Route::Drop(DropReason::UnknownSource));
        // garbage from a learned address goes to its connection, whose screen counts it as junk
        r.route(addr(2), &stun(0x0001, &[(0x0006, b"srv1:c")]));
        assert_eq!(
            r.route(addr(2), &[0x42; 10]),
            Route::Conn {
                key: 1,
                learned: false,
                nominated: false
            }
        );
        assert_eq!(screen(&[0x42; 10]), Err(Junk::NotWebRtc));
        assert_eq!(r.addresses(), 1);
    }

    #[test]
    fn a_binding_request_moves_an_address_to_its_connection() {
        let mut r = Router::new();
        r.register("a", 1u8);
        r.register("b", 2u8);
        r.route(addr(9), &stun(0x0001, &[(0x0006, b"a:x")]));
        assert_eq!(
            r.route(addr(9), &stun(0x0001, &[(0x0006, b"b:x")])),
            Route::Conn {
                key: 2,
                learned: true,
                nominated: false
            }
        );
        assert_eq!(
            r.route(addr(9), &[0x80]),
            Route::Conn {
                key: 2,
                learned: false,
                nominated: false
            }
        );
    }

    #[test]
    fn use_candidate_marks_the_nominated_path() {
        let mut r = Router::new();
        r.register("a", 1u8);
        let plain = stun(0x0001, &[(0x0006, b"a:x"), (0x8029, &[0; 8])]);
        let nominating = stun(0x0001, &[(0x0006, b"a:x"), (0x0025, b""), (0x8029, &[0; 8])]);
        assert_eq!(
            r.route(addr(1), &plain),
            Route::Conn {
                key: 1,
                learned: true,
                nominated: false
            }
        );
        assert_eq!(
            r.route(addr(2), &nominating),
            Route::Conn {
                key: 1,
                learned: true,
                nominated: true
            }
        );
        assert_eq!(
            binding_request(&nominating),
            Some(BindingRequest {
                username: b"a:x",
                use_candidate: true
            })
        );
        // USE-CANDIDATE before USERNAME counts too
        let early = stun(0x0001, &[(0x0025, b""), (0x0006, b"a:x")]);
        assert_eq!(binding_request(&early).map(|b| b.use_candidate), Some(true));
        // without a USERNAME it is nothing
        assert_eq!(binding_request(&stun(0x0001, &[(0x0025, b"")])), None);
    }

    #[test]
    fn binding_success_is_recognised() {
        assert!(is_binding_success(&stun(0x0101, &[(0x0020, &[0; 8])])));
        assert!(!is_binding_success(&stun(0x0001, &[(0x0006, b"a:b")])));
        assert!(!is_binding_success(&stun(0x0111, &[])));
        assert!(!is_binding_success(&[0x01, 0x01, 0, 0]));
        let mut bad_cookie = stun(0x0101, &[]);
        bad_cookie[5] = 0;
        assert!(!is_binding_success(&bad_cookie));
    }

    #[test]
    fn remove_forgets_ufrag_and_addresses() {
        let mut r = Router::new();
        r.register("a", 1u8);
        r.register("b", 2u8);
        r.route(addr(1), &stun(0x0001, &[(0x0006, b"a:x")]));
        r.route(addr(2), &stun(0x0001, &[(0x0006, b"a:y")]));
        r.route(addr(3), &stun(0x0001, &[(0x0006, b"b:x")]));
        r.remove(1);
        assert_eq!(r.route(addr(1), &[0x80]), Route::Drop(DropReason::UnknownSource));
        assert_eq!(r.route(addr(2), &[0x80]), Route::Drop(DropReason::UnknownSource));
        assert_eq!(
            r.route(addr(3), &[0x80]),
            Route::Conn {
                key: 2,
                learned: false,
                nominated: false
            }
        );
        assert_eq!((r.connections(), r.addresses()), (1, 1));
        assert!(r.register("a", 4), "a removed ufrag can be reused");
    }

    use crate::sfu::ice_lite::signed_check;

    #[test]
    fn checks_pass_the_screen_and_verify_only_with_their_key() {
        let check = signed_check("srv1:cli", "the-servers-password-0123");
        assert_eq!(screen(&check), Ok(Class::Stun));
        assert!(check_integrity(&check, b"the-servers-password-0123"));
        assert!(!check_integrity(&check, b"the-servers-password-0124"));
        let mut tampered = check.clone();
        tampered[30] ^= 1; // inside USERNAME
        assert_eq!(screen(&tampered), Ok(Class::Stun), "framing intact");
        assert!(!check_integrity(&tampered, b"the-servers-password-0123"));
        // Without MESSAGE-INTEGRITY there is nothing to verify, but the screen refuses a check without it.
        let bare = stun(0x0001, &[(0x0006, b"srv1:cli")]);
        assert!(check_integrity(&bare, b"x"));
        assert_eq!(screen(&bare), Err(Junk::UnexpectedStun));
        assert_eq!(screen(&stun(0x0011, &[])), Ok(Class::Stun), "indication (keepalive)");
    }

    #[test]
    fn broken_or_unexpected_stun_is_junk() {
        let check = signed_check("srv1:cli", "pw");
        for cut in [1, 4, 19, 20, check.len() - 1] {
            assert_eq!(screen(&check[..cut]), Err(Junk::MalformedStun), "cut at {cut}");
        }
        let mut longer = check.clone();
        longer.extend_from_slice(&[0; 4]);
        assert_eq!(screen(&longer), Err(Junk::MalformedStun), "trailing bytes");
        let mut bad_attr = stun(0x0001, &[(0x0006, b"a:b")]);
        bad_attr[23] = 9; // attribute length runs past the body
        assert_eq!(screen(&bad_attr), Err(Junk::MalformedStun));
        // Responses and other methods: an ICE-lite server sends no checks, so gets no answers.
        assert_eq!(screen(&stun(0x0101, &[(0x0020, &[0; 8])])), Err(Junk::UnexpectedStun));
        assert_eq!(screen(&stun(0x0111, &[])), Err(Junk::UnexpectedStun));
        assert_eq!(screen(&stun(0x0003, &[])), Err(Junk::UnexpectedStun));
        assert_eq!(screen(&[0x01; 40]), Err(Junk::MalformedStun), "no cookie");
    }

    #[test]
    fn dtls_records_must_add_up() {
        let record = |ct: u8, len: u16| {
            let mut r = vec![ct, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 1];
            r.extend_from_slice(&len.to_be_bytes());
            r.extend(std::iter::repeat_n(7u8, usize::from(len)));
            r
        };
        assert_eq!(screen(&record(22, 100)), Ok(Class::Dtls));
        let mut two = record(20, 1);
        two.extend(record(22, 40));
        assert_eq!(screen(&two), Ok(Class::Dtls), "several records in one datagram");
        let mut short = record(22, 100);
        short.truncate(60);
        assert_eq!(screen(&short), Err(Junk::MalformedDtls));
        let mut trailing = record(23, 10);
        trailing.push(1);
        assert_eq!(screen(&trailing), Err(Junk::MalformedDtls));
        assert_eq!(
            screen(&record(30, 10)),
            Err(Junk::MalformedDtls),
            "no such content type"
        );
        let mut version = record(22, 10);
        version[1] = 3; // TLS, not DTLS
        assert_eq!(screen(&version), Err(Junk::MalformedDtls));
    }

    #[test]
    fn rtp_must_hold_its_header() {
        let mut rtp = vec![0x80, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2];
        assert_eq!(screen(&rtp), Ok(Class::Rtp));
        assert_eq!(screen(&rtp[..11]), Err(Junk::MalformedRtp));
        rtp[0] = 0x82; // two CSRCs announced, none there
        assert_eq!(screen(&rtp), Err(Junk::MalformedRtp));
        rtp.extend_from_slice(&[0; 8]);
        assert_eq!(screen(&rtp), Ok(Class::Rtp));
        // An extension header whose length runs past the datagram.
        let mut ext = vec![0x90, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0xbe, 0xde, 0, 3, 0, 0, 0, 0];
        assert_eq!(screen(&ext), Err(Junk::MalformedRtp));
        ext.extend_from_slice(&[0; 8]);
        assert_eq!(screen(&ext), Ok(Class::Rtp));
        // RTCP: header and sender SSRC.
        assert_eq!(screen(&[0x80, 200, 0, 1, 0, 0, 0, 1]), Ok(Class::Rtp));
        assert_eq!(screen(&[0x80, 201, 0, 1]), Err(Junk::MalformedRtp));
        assert_eq!(screen(&[0x42; 20]), Err(Junk::NotWebRtc));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut r = Router::new();
        r.register("a", 1u8);
        let mut x: u32 = 0x1234_5678;
        for len in 0..200usize {
            let mut buf = vec![0u8; len];
            for b in &mut buf {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                *b = x as u8;
            }
            if len > 0 {
                buf[0] &= 0x03; // make many of them look like STUN
            }
            if len >= 8 {
                buf[4..8].copy_from_slice(&STUN_MAGIC_COOKIE);
            }
            let _ = r.route(addr(len as u16), &buf);
            let _ = stun_binding_username(&buf);
            let _ = screen(&buf);
            let _ = check_integrity(&buf, b"key");
        }
    }
}
