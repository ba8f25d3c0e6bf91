//! ICE-lite as RFC 8445 §2.5 and §7.3 describe it, on top of `rtc`'s agent.
//!
//! A lite agent never sends connectivity checks: a valid check from the client
//! (right USERNAME, MESSAGE-INTEGRITY, FINGERPRINT) proves the path, is answered
//! with a Binding success at once, and a nomination (USE-CANDIDATE) selects the
//! pair at once. `rtc` 0.21.1's lite agent does otherwise: on every check it also
//! sends a check of its own back (ICE-CONTROLLED, USERNAME reversed), and it
//! answers a nominating check only once the client has answered one of *its*
//! checks. A client that does not answer server checks never connects, and
//! every other client loses a retransmission interval (≈500 ms for aiortc).
//!
//! So the shard never lets such a check out. A check `rtc` sends while handling
//! a client's check, to the address that check came from, is a triggered check
//! of a path the client has just proven (`rtc` only triggers checks for requests
//! that passed its own USERNAME and MESSAGE-INTEGRITY checks): the shard answers
//! it itself, with the Binding success the client would have sent, signed with
//! the client's password from its SDP ([`answer_own_check`]). If the client's
//! check nominated and went unanswered, it is then handed to `rtc` once more,
//! which now answers it and selects the pair. Checks `rtc` sends at any other
//! time or to any other address are dropped: nothing unproven becomes valid.

use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;

use bytes::{BufMut, BytesMut};
use rtc::crypto::RTCCryptoProvider;
use rtc::stun::fingerprint::FINGERPRINT;
use rtc::stun::integrity::MessageIntegrity;
use rtc::stun::message::{BINDING_REQUEST, Message, Setter};

fn crypto() -> Option<&'static dyn RTCCryptoProvider> {
    static PROVIDER: OnceLock<Option<std::sync::Arc<dyn RTCCryptoProvider>>> = OnceLock::new();
    PROVIDER.get_or_init(|| rtc::crypto::default_provider().ok()).as_deref()
}

/// Whether an outgoing datagram is a STUN Binding request (a check `rtc` originated).
/// Header bytes only: it is asked of every datagram a connection sends, media included,
/// so it must cost nothing (no parse, no allocation).
pub fn is_check(datagram: &[u8]) -> bool {
    const BINDING_REQUEST_TYPE: [u8; 2] = [0x00, 0x01];
    const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
    datagram.len() >= 20 && datagram[..2] == BINDING_REQUEST_TYPE && datagram[4..8] == MAGIC_COOKIE
}

/// The Binding success the client would send for `rtc`'s own check: same
/// transaction, XOR-MAPPED-ADDRESS `mapped` (where the check appeared to come
/// from: our advertised address), MESSAGE-INTEGRITY keyed with the client's ICE
/// password, FINGERPRINT. `None` if `check` is not a Binding request.
pub fn answer_own_check(check: &[u8], mapped: SocketAddr, client_pwd: &str) -> Option<Vec<u8>> {
    let mut out = BytesMut::new();
    answer_check(check, mapped, client_pwd, &mut out).then(|| out.to_vec())
}

/// The Binding success to a client's consent check, made by the shard itself (`Peers`
/// answers checks on a connection's nominated path without `rtc` once it is up), written
/// into `out` (cleared first; it grows only if too small): byte for byte what `rtc`'s STUN
/// message builds (the tests compare), from our side ([`answer_own_check`] is the same
/// answer with the client's password).
/// XOR-MAPPED-ADDRESS `from` (where the check came from), MESSAGE-INTEGRITY keyed with
/// *our* password `local_pwd` (the key the client signed its check with; the caller has
/// verified it, as the shard's screen does for every check), FINGERPRINT.
///
/// No STUN message is parsed or built (a parse, five boxed setters, the key copied and
/// the answer copied again took about twenty allocations per check, a fifth of the
/// shard's at 30 calls; issue 13): the check's transaction id is all it needs. `false`
/// (and `out` empty) if `check` is not a Binding request.
pub fn answer_check(check: &[u8], from: SocketAddr, local_pwd: &str, out: &mut BytesMut) -> bool {
    use hmac::{Hmac, Mac};
    use rtc::stun::fingerprint::fingerprint_value;
    out.clear();
    if !is_check(check) {
        return false;
    }
    let transaction = &check[8..20];
    let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(local_pwd.as_bytes()) else {
        return false;
    };
    let address_len: u16 = if from.is_ipv4() { 8 } else { 20 };
    // Header, XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY, FINGERPRINT.
    out.reserve(20 + 4 + usize::from(address_len) + 24 + 8);
    out.put_u16(BINDING_SUCCESS_TYPE);
    out.put_u16(0);
    out.put_u32(MAGIC_COOKIE);
    out.put_slice(transaction);
    out.put_u16(ATTR_XOR_MAPPED_ADDRESS);
    out.put_u16(address_len);
    out.put_u8(0);
    out.put_u8(if from.is_ipv4() { 1 } else { 2 });
    out.put_u16(from.port() ^ (MAGIC_COOKIE >> 16) as u16);
    let mut pad = [0u8; 16];
    pad[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    pad[4..].copy_from_slice(transaction);
    match from.ip() {
        IpAddr::V4(ip) => out.extend(ip.octets().iter().zip(&pad).map(|(a, b)| a ^ b)),
        IpAddr::V6(ip) => out.extend(ip.octets().iter().zip(&pad).map(|(a, b)| a ^ b)),
    }
    // RFC 8489 §14.5: the HMAC covers the message up to the attribute, its header's length
    // counting the attribute; §14.7: the fingerprint likewise, counting itself.
    let set_length = |out: &mut BytesMut, attribute: usize| {
        let length = (out.len() - 20 + attribute) as u16;
        out[2..4].copy_from_slice(&length.to_be_bytes());
    };
    set_length(out, 24);
    mac.update(out);
    out.put_u16(ATTR_MESSAGE_INTEGRITY);
    out.put_u16(20);
    out.put_slice(&mac.finalize().into_bytes());
    set_length(out, 8);
    let fingerprint = fingerprint_value(out);
    out.put_u16(ATTR_FINGERPRINT);
    out.put_u16(4);
    out.put_u32(fingerprint);
    true
}

const BINDING_SUCCESS_TYPE: u16 = 0x0101;
const MAGIC_COOKIE: u32 = 0x2112_A442;
const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;
const ATTR_MESSAGE_INTEGRITY: u16 = 0x0008;
const ATTR_FINGERPRINT: u16 = 0x8028;

/// A client's first check on a connection with no path yet, made nominating: the same
/// request (transaction, USERNAME, PRIORITY, role, ...) with USE-CANDIDATE added, signed
/// again with *our* password `local_pwd` (the key `rtc` checks it with) and fingerprinted.
///
/// Why: a lite agent has nothing to choose between, and the client's first valid check
/// already proves the path, so the connection may go ahead on it at once, as mediasoup's
/// ICE server does (its tuple is selected on the first valid request; nomination only
/// confirms it). Waiting for the client's nomination costs Chromium joins 100-280 ms:
/// as the controlling agent it nominates only on a later ping of the pair it selected.
/// A later nomination by the client still moves the path (see `Conn::nominated`).
///
/// The caller must have checked the original's MESSAGE-INTEGRITY with `local_pwd`
/// (the shard's screen does, for every check): this re-signs, it proves nothing.
/// `None` if `check` is not a Binding request or is already nominating.
pub fn nominating_copy(check: &[u8], local_pwd: &str) -> Option<Vec<u8>> {
    use rtc::stun::attributes::{ATTR_FINGERPRINT, ATTR_MESSAGE_INTEGRITY, ATTR_USE_CANDIDATE};
    let mut request = Message::new();
    request.unmarshal_binary(check).ok()?;
    if request.typ != BINDING_REQUEST || request.contains(ATTR_USE_CANDIDATE) {
        return None;
    }
    let crypto = crypto()?.crypto();
    let mut copy = Message::new();
    copy.typ = request.typ;
    copy.transaction_id = request.transaction_id;
    copy.write_header();
    // Everything the client signed, in its order; what follows the integrity is only
    // the fingerprint (RFC 8489 §14.5), made again below.
    for attr in request
        .attributes
        .0
        .iter()
        .take_while(|a| a.typ != ATTR_MESSAGE_INTEGRITY)
    {
        if attr.typ != ATTR_FINGERPRINT {
            copy.add(attr.typ, &attr.value);
        }
    }
    copy.add(ATTR_USE_CANDIDATE, &[]);
    MessageIntegrity::new_short_term_integrity_with_provider(local_pwd.to_owned(), crypto)
        .add_to(&mut copy)
        .ok()?;
    FINGERPRINT.add_to(&mut copy).ok()?;
    Some(copy.raw)
}

/// A Binding request as a client signs it: USERNAME `username`, MESSAGE-INTEGRITY with
/// `key`, FINGERPRINT. For tests and the fuzzing harness (doc-hidden).
#[doc(hidden)]
pub fn signed_check(username: &str, key: &str) -> Vec<u8> {
    let crypto = crypto().expect("a crypto provider").crypto();
    let mut m = Message::new();
    let setters: [Box<dyn Setter + '_>; 5] = [
        Box::new(BINDING_REQUEST),
        Box::new(rtc::stun::message::TransactionId::new()),
        Box::new(rtc::stun::textattrs::Username::new(
            rtc::stun::attributes::ATTR_USERNAME,
            username.to_owned(),
        )),
        Box::new(MessageIntegrity::new_short_term_integrity_with_provider(
            key.to_owned(),
            crypto,
        )),
        Box::new(FINGERPRINT),
    ];
    m.build(&setters).expect("a check builds");
    m.raw
}

/// The ICE password (`a=ice-pwd`) of a session description: the first one, session
/// or media level (we bundle, so every m-section carries the same).
pub fn ice_pwd(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|line| line.trim_end().strip_prefix("a=ice-pwd:"))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::stun::attributes::{ATTR_MESSAGE_INTEGRITY, ATTR_USERNAME};
    use rtc::stun::message::BINDING_SUCCESS;
    use rtc::stun::message::{Getter, TransactionId};
    use rtc::stun::textattrs::Username;
    use rtc::stun::xoraddr::XorMappedAddress;

    fn check(pwd: &str) -> Message {
        let crypto = crypto().expect("provider").crypto();
        let mut m = Message::new();
        let setters: [Box<dyn Setter + '_>; 5] = [
            Box::new(BINDING_REQUEST),
            Box::new(TransactionId::new()),
            Box::new(Username::new(ATTR_USERNAME, "client:server".into())),
            Box::new(MessageIntegrity::new_short_term_integrity_with_provider(
                pwd.to_owned(),
                crypto,
            )),
            Box::new(FINGERPRINT),
        ];
        m.build(&setters).expect("build");
        m
    }

    /// The same answer built with `rtc`'s STUN message: what [`answer_check`] must write.
    fn rtc_answer(check: &[u8], mapped: SocketAddr, pwd: &str) -> Option<Vec<u8>> {
        let mut request = Message::new();
        request.unmarshal_binary(check).ok()?;
        if request.typ != BINDING_REQUEST {
            return None;
        }
        let crypto = crypto()?.crypto();
        let mut response = Message::new();
        let setters: [Box<dyn Setter + '_>; 5] = [
            Box::new(BINDING_SUCCESS),
            Box::new(request.transaction_id),
            Box::new(XorMappedAddress {
                ip: mapped.ip(),
                port: mapped.port(),
            }),
            Box::new(MessageIntegrity::new_short_term_integrity_with_provider(
                pwd.to_owned(),
                crypto,
            )),
            Box::new(FINGERPRINT),
        ];
        response.build(&setters).ok()?;
        Some(response.raw)
    }

    #[test]
    fn our_answer_is_the_success_the_client_would_send() {
        let request = check("client-password-0123456789");
        assert!(is_check(&request.raw));
        let mapped: SocketAddr = "203.0.113.7:7882".parse().unwrap();
        let raw = answer_own_check(&request.raw, mapped, "client-password-0123456789").expect("answer");
        assert!(!is_check(&raw));
        let mut response = Message::new();
        response.unmarshal_binary(&raw).expect("parses");
        assert_eq!(response.typ, BINDING_SUCCESS);
        assert_eq!(response.transaction_id, request.transaction_id);
        let mut xor = XorMappedAddress {
            ip: std::net::Ipv4Addr::UNSPECIFIED.into(),
            port: 0,
        };
        xor.get_from(&response).expect("XOR-MAPPED-ADDRESS");
        assert_eq!(SocketAddr::new(xor.ip, xor.port), mapped);
        assert!(response.contains(ATTR_MESSAGE_INTEGRITY));
        let crypto = crypto().unwrap().crypto();
        MessageIntegrity::check(&mut response, b"client-password-0123456789", crypto)
            .expect("signed with the client's password");
        assert!(MessageIntegrity::check(&mut response, b"another-password-000000000", crypto).is_err());
    }

    #[test]
    fn a_consent_check_is_answered_as_rtc_would_signed_with_our_password() {
        let ours = "server-password-0123456789abcdef";
        let request = check(ours);
        let from: SocketAddr = "198.51.100.20:50123".parse().unwrap();
        let mut out = BytesMut::new();
        assert!(answer_check(&request.raw, from, ours, &mut out));
        let raw = out.to_vec();
        let mut response = Message::new();
        response.unmarshal_binary(&raw).expect("parses");
        assert_eq!(response.typ, BINDING_SUCCESS);
        assert_eq!(
            response.transaction_id, request.transaction_id,
            "the check's transaction"
        );
        let mut xor = XorMappedAddress {
            ip: std::net::Ipv4Addr::UNSPECIFIED.into(),
            port: 0,
        };
        xor.get_from(&response).expect("XOR-MAPPED-ADDRESS");
        assert_eq!(SocketAddr::new(xor.ip, xor.port), from, "where the check came from");
        let crypto = crypto().unwrap().crypto();
        MessageIntegrity::check(&mut response, ours.as_bytes(), crypto).expect("signed with our password");
        rtc::stun::fingerprint::FINGERPRINT
            .check(&response)
            .expect("fingerprinted");
        assert!(!answer_check(&raw, from, ours, &mut out), "a success is not answered");
        assert!(out.is_empty());
        assert!(
            !answer_check(&request.raw[..19], from, ours, &mut out),
            "too short for a header"
        );
    }

    /// The answer written in place is, byte for byte, the one `rtc`'s STUN message builds
    /// ([`rtc_answer`]): random transactions, IPv4 and IPv6 addresses and ports,
    /// passwords of every length (HMAC keys shorter and longer than a SHA-1 block), with a
    /// buffer reused from answer to answer.
    #[test]
    fn the_answer_written_in_place_is_the_one_rtc_builds() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(13);
        let mut out = BytesMut::new();
        for i in 0..500 {
            let pwd: String = (0..rng.random_range(1..100))
                .map(|_| char::from(rng.random_range(b'!'..=b'~')))
                .collect();
            let request = check(&pwd);
            let ip: IpAddr = if i % 2 == 0 {
                std::net::Ipv4Addr::from(rng.random::<u32>()).into()
            } else {
                std::net::Ipv6Addr::from(rng.random::<u128>()).into()
            };
            let from = SocketAddr::new(ip, rng.random());
            assert!(answer_check(&request.raw, from, &pwd, &mut out));
            let rtc = rtc_answer(&request.raw, from, &pwd).expect("rtc's answer");
            assert_eq!(&out[..], &rtc[..], "{from} {pwd:?}");
        }
    }

    #[test]
    fn only_binding_requests_are_answered() {
        let request = check("pwd-pwd-pwd-pwd-pwd-pwd-pwd");
        let mapped: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let success = answer_own_check(&request.raw, mapped, "x").expect("answer");
        assert_eq!(
            answer_own_check(&success, mapped, "x"),
            None,
            "a success is not a check"
        );
        assert_eq!(answer_own_check(b"\x16\xfe\xfd garbage", mapped, "x"), None);
        assert!(!is_check(&[0x80, 0x60, 0, 1]));
        assert!(!is_check(&[0x80; 200]), "RTP is never a check");
        let mut not_stun = request.raw.clone();
        not_stun[4] ^= 0xff;
        assert!(!is_check(&not_stun), "no magic cookie, no STUN");
        assert!(!is_check(&request.raw[..19]), "too short for a header");
    }

    #[test]
    fn a_first_check_made_nominating_keeps_everything_and_verifies_with_our_password() {
        use rtc::stun::attributes::{ATTR_PRIORITY, ATTR_USE_CANDIDATE};
        let crypto = crypto().unwrap().crypto();
        let ours = "server-password-0123456789abcdef";
        let mut request = check(ours);
        // A real check also carries PRIORITY and the client's role: keep them, in order.
        let mut with_priority = Message::new();
        with_priority.typ = request.typ;
        with_priority.transaction_id = request.transaction_id;
        with_priority.write_header();
        with_priority.add(ATTR_USERNAME, b"client:server");
        with_priority.add(ATTR_PRIORITY, &1_845_501_695u32.to_be_bytes());
        MessageIntegrity::new_short_term_integrity_with_provider(ours.to_owned(), crypto)
            .add_to(&mut with_priority)
            .unwrap();
        FINGERPRINT.add_to(&mut with_priority).unwrap();
        for original in [request.raw.clone(), with_priority.raw.clone()] {
            let raw = nominating_copy(&original, ours).expect("a copy");
            assert!(is_check(&raw));
            let mut copy = Message::new();
            copy.unmarshal_binary(&raw).expect("parses");
            let mut before = Message::new();
            before.unmarshal_binary(&original).unwrap();
            assert_eq!(
                copy.transaction_id, before.transaction_id,
                "the client's transaction, so its answer matches"
            );
            assert!(copy.contains(ATTR_USE_CANDIDATE));
            assert_eq!(copy.get(ATTR_USERNAME).unwrap(), b"client:server");
            assert_eq!(copy.get(ATTR_PRIORITY).ok(), before.get(ATTR_PRIORITY).ok());
            MessageIntegrity::check(&mut copy, ours.as_bytes(), crypto).expect("signed with our password");
            rtc::stun::fingerprint::FINGERPRINT.check(&copy).expect("fingerprinted");
            assert_eq!(
                crate::sfu::demux::binding_request(&raw).map(|r| r.use_candidate),
                Some(true),
                "the demultiplexer sees a nomination"
            );
            assert_eq!(nominating_copy(&raw, ours), None, "already nominating: nothing to do");
        }
        request.typ = BINDING_SUCCESS;
        request.write_header();
        assert_eq!(nominating_copy(&request.raw, ours), None, "only requests");
        assert_eq!(nominating_copy(b"\x16\xfe\xfd garbage", ours), None);
    }

    #[test]
    fn the_password_comes_from_the_sdp() {
        let sdp = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\na=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdefghijkl\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=ice-pwd:0123456789abcdefghijkl\r\n";
        assert_eq!(ice_pwd(sdp).as_deref(), Some("0123456789abcdefghijkl"));
        assert_eq!(ice_pwd("v=0\r\n"), None);
    }
}
