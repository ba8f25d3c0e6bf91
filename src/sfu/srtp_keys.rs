//! A connection's SRTP master keys, read from `rtc`'s own key derivation (issue 13: the
//! lean path for forwarded packets).
//!
//! `rtc` 0.21 keeps a connection's DTLS state and SRTP contexts private, but it takes the
//! cryptography it uses from a provider given per connection
//! (`SettingEngineBuilder::with_crypto_provider`, public). When DTLS completes it builds
//! the local (sending) context, then the remote (receiving) one
//! (`DtlsHandler::update_srtp_contexts`), and each derives its session keys from its master
//! key and salt by RFC 3711's AES-CM PRF (`rtc-srtp`'s `key_derivation`): one
//! `block_encrypt` per 16 bytes, keyed with the master key, the first of them on the block
//! `master_salt ^ (label 0 at byte 7) || index 0`, that is the master salt itself, zero
//! padded. [`KeyCapture`] is such a provider: it hands every call to the built-in one and
//! notes the first block of each new key, so [`KeyCapture::keys`] gives the connection's
//! master keys and salts, local first, from which an `rtc::srtp` context of our own
//! encrypts (or decrypts) exactly as the connection's does. Nothing else in `rtc` 0.21
//! calls `block_encrypt` (DTLS uses AEAD and CBC ciphers, ICE HMAC).
//!
//! The AES-CM profiles with an 80-bit and a 32-bit tag derive alike: a connection whose
//! keys are used must not offer `SRTP_AES128_CM_HMAC_SHA1_32` (the AES-CM keys are reported
//! as `Aes128CmHmacSha1_80`).

use std::sync::{Arc, Mutex};

use rtc::crypto::{
    ActiveKeyExchange, AeadAlgorithm, AeadCipher, BlockCipherAlgorithm, CbcAlgorithm, CbcCipher, CryptoAlgorithm,
    CryptoError, HashAlgorithm, HmacAlgorithm, KeyExchangeAlgorithm, Mac, PublicKey, RTCCrypto, RTCCryptoProvider,
    RTCRandom, SignatureScheme, SigningKey, StreamCipher, StreamCipherAlgorithm,
};
use rtc::srtp::context::Context;
use rtc::srtp::protection_profile::ProtectionProfile;

/// One side's master key and salt.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey {
    pub key: Vec<u8>,
    pub salt: Vec<u8>,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({} + {} bytes, redacted)", self.key.len(), self.salt.len())
    }
}

/// A connection's SRTP keys: `local` protects what it sends, `remote` what it receives.
#[derive(Debug, Clone)]
pub struct SrtpKeys {
    pub profile: ProtectionProfile,
    pub local: MasterKey,
    pub remote: MasterKey,
}

impl SrtpKeys {
    /// An SRTP context of our own for what the connection sends: it encrypts as the
    /// connection's does.
    pub fn local_context(&self) -> Result<Context, rtc::shared::error::Error> {
        self.context(&self.local, None, None)
    }

    /// An SRTP context of our own for what the connection receives, refusing replays as
    /// `rtc`'s own does (a window of [`REPLAY_WINDOW`] packets per stream).
    pub fn remote_context(&self) -> Result<Context, rtc::shared::error::Error> {
        self.context(
            &self.remote,
            Some(rtc::srtp::option::srtp_replay_protection(REPLAY_WINDOW)),
            Some(rtc::srtp::option::srtcp_replay_protection(REPLAY_WINDOW)),
        )
    }

    fn context(
        &self,
        side: &MasterKey,
        rtp: Option<rtc::srtp::option::ContextOption>,
        rtcp: Option<rtc::srtp::option::ContextOption>,
    ) -> Result<Context, rtc::shared::error::Error> {
        let provider = rtc::crypto::default_provider().map_err(|e| rtc::shared::error::Error::Other(e.to_string()))?;
        Context::new(&side.key, &side.salt, self.profile, rtp, rtcp, provider.crypto())
    }
}

/// The replay window of [`SrtpKeys::remote_context`]: `rtc` 0.21's default for the contexts
/// it builds itself.
pub const REPLAY_WINDOW: usize = 64;

/// The cipher a derived session key went into: tells the profiles apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Gcm,
    Ctr,
}

/// One master key seen: the first block it encrypted, and the cipher its keys went into.
struct Derivation {
    key: Vec<u8>,
    first_block: [u8; 16],
    family: Option<Family>,
}

/// What the derivations noted come to: the local and remote keys, once both are seen.
fn keys_from(seen: &[Derivation]) -> Option<SrtpKeys> {
    let [local, remote, ..] = seen else {
        return None;
    };
    let family = local.family?;
    if remote.family != Some(family) || local.key.len() != remote.key.len() {
        return None;
    }
    let profile = match (family, local.key.len()) {
        (Family::Gcm, 16) => ProtectionProfile::AeadAes128Gcm,
        (Family::Gcm, 32) => ProtectionProfile::AeadAes256Gcm,
        (Family::Ctr, 16) => ProtectionProfile::Aes128CmHmacSha1_80,
        (Family::Ctr, 32) => ProtectionProfile::Aes256CmHmacSha1_80,
        _ => return None,
    };
    let side = |d: &Derivation| MasterKey {
        key: d.key.clone(),
        salt: d.first_block[..profile.salt_len()].to_vec(),
    };
    Some(SrtpKeys {
        profile,
        local: side(local),
        remote: side(remote),
    })
}

/// A crypto provider for one connection: the built-in provider, with its SRTP master keys
/// noted (see the module documentation).
pub struct KeyCapture {
    inner: Arc<dyn RTCCryptoProvider>,
    crypto: Recording,
}

struct Recording {
    inner: Arc<dyn RTCCryptoProvider>,
    seen: Mutex<Vec<Derivation>>,
}

impl KeyCapture {
    /// Around the built-in provider (`rtc::crypto::default_provider`).
    pub fn new() -> Result<Arc<Self>, CryptoError> {
        let inner = rtc::crypto::default_provider()?;
        Ok(Arc::new(Self {
            inner: inner.clone(),
            crypto: Recording {
                inner,
                seen: Mutex::new(Vec::new()),
            },
        }))
    }

    /// The connection's keys, once DTLS has completed and both contexts were built.
    pub fn keys(&self) -> Option<SrtpKeys> {
        keys_from(&self.crypto.seen.lock().ok()?)
    }
}

impl RTCCryptoProvider for KeyCapture {
    fn name(&self) -> &'static str {
        "gatehouse-key-capture"
    }

    fn crypto(&self) -> &dyn RTCCrypto {
        &self.crypto
    }

    fn random(&self) -> &dyn RTCRandom {
        self.inner.random()
    }
}

impl Recording {
    fn crypto(&self) -> &dyn RTCCrypto {
        self.inner.crypto()
    }

    /// A session key went into a cipher of `family`: it was derived from the last key seen.
    fn note_family(&self, family: Family) {
        if let Ok(mut seen) = self.seen.lock()
            && let Some(last) = seen.last_mut()
        {
            last.family.get_or_insert(family);
        }
    }
}

impl RTCCrypto for Recording {
    fn supports(&self, algorithm: CryptoAlgorithm) -> bool {
        self.crypto().supports(algorithm)
    }

    fn hash(&self, algorithm: HashAlgorithm, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.crypto().hash(algorithm, data)
    }

    fn block_encrypt(&self, algorithm: BlockCipherAlgorithm, key: &[u8], block: &mut [u8]) -> Result<(), CryptoError> {
        if let Ok(mut seen) = self.seen.lock()
            && seen.len() < 2
            && !seen.iter().any(|d| d.key == key)
            && let Ok(first_block) = <[u8; 16]>::try_from(&block[..])
        {
            seen.push(Derivation {
                key: key.to_vec(),
                first_block,
                family: None,
            });
        }
        self.crypto().block_encrypt(algorithm, key, block)
    }

    fn new_hmac(&self, algorithm: HmacAlgorithm, key: &[u8]) -> Result<Box<dyn Mac>, CryptoError> {
        self.crypto().new_hmac(algorithm, key)
    }

    fn new_stream_cipher(
        &self,
        algorithm: StreamCipherAlgorithm,
        key: &[u8],
    ) -> Result<Box<dyn StreamCipher>, CryptoError> {
        self.note_family(Family::Ctr);
        self.crypto().new_stream_cipher(algorithm, key)
    }

    fn new_aead(&self, algorithm: AeadAlgorithm, key: &[u8]) -> Result<Box<dyn AeadCipher>, CryptoError> {
        // DTLS's record ciphers come before any SRTP key: noted only after a derivation.
        self.note_family(Family::Gcm);
        self.crypto().new_aead(algorithm, key)
    }

    fn new_cbc(&self, algorithm: CbcAlgorithm, key: &[u8]) -> Result<Box<dyn CbcCipher>, CryptoError> {
        self.crypto().new_cbc(algorithm, key)
    }

    fn start_key_exchange(&self, algorithm: KeyExchangeAlgorithm) -> Result<Box<dyn ActiveKeyExchange>, CryptoError> {
        self.crypto().start_key_exchange(algorithm)
    }

    fn generate_signing_key(&self, scheme: SignatureScheme) -> Result<Arc<dyn SigningKey>, CryptoError> {
        self.crypto().generate_signing_key(scheme)
    }

    fn import_signing_key(
        &self,
        scheme: SignatureScheme,
        pkcs8_der: &[u8],
    ) -> Result<Arc<dyn SigningKey>, CryptoError> {
        self.crypto().import_signing_key(scheme, pkcs8_der)
    }

    fn verify_signature(
        &self,
        scheme: SignatureScheme,
        public_key: PublicKey<'_>,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), CryptoError> {
        self.crypto().verify_signature(scheme, public_key, message, signature)
    }
}

/// Keys and a peer's context for the tests of the modules that use a connection's keys.
#[cfg(test)]
pub mod testing {
    use super::*;

    /// Distinct local and remote master keys of `profile`.
    pub fn keys(profile: ProtectionProfile) -> SrtpKeys {
        let key = |k: u8, s: u8| MasterKey {
            key: vec![k; profile.key_len()],
            salt: vec![s; profile.salt_len()],
        };
        SrtpKeys {
            profile,
            local: key(1, 2),
            remote: key(3, 4),
        }
    }

    /// What the remote peer sends is protected with its local key, our remote one.
    pub fn peer_context(keys: &SrtpKeys) -> Context {
        let provider = rtc::crypto::default_provider().expect("provider");
        Context::new(
            &keys.remote.key,
            &keys.remote.salt,
            keys.profile,
            None,
            None,
            provider.crypto(),
        )
        .expect("peer context")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::srtp::context::Context;

    fn key(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| seed.wrapping_mul(31).wrapping_add(i as u8 * 7))
            .collect()
    }

    fn rtp(seq: u16) -> Vec<u8> {
        use rtc::shared::marshal::Marshal;
        let packet = rtc::rtp::Packet {
            header: rtc::rtp::header::Header {
                version: 2,
                payload_type: 96,
                sequence_number: seq,
                timestamp: 90_000,
                ssrc: 0x1234_5678,
                ..Default::default()
            },
            payload: bytes::Bytes::from_static(b"a forwarded frame"),
        };
        packet.marshal().expect("marshal").to_vec()
    }

    /// What `rtc` does when DTLS completes, through the capture: the local context, then
    /// the remote one, from the keys each side exported.
    #[test]
    fn the_keys_of_both_contexts_are_read_back_for_every_profile() {
        for profile in [
            ProtectionProfile::AeadAes128Gcm,
            ProtectionProfile::AeadAes256Gcm,
            ProtectionProfile::Aes128CmHmacSha1_80,
            ProtectionProfile::Aes256CmHmacSha1_80,
        ] {
            let capture = KeyCapture::new().expect("the built-in provider");
            assert!(capture.keys().is_none(), "nothing before DTLS completes");
            let local = MasterKey {
                key: key(profile.key_len(), 1),
                salt: key(profile.salt_len(), 2),
            };
            let remote = MasterKey {
                key: key(profile.key_len(), 3),
                salt: key(profile.salt_len(), 4),
            };
            let mut sending =
                Context::new(&local.key, &local.salt, profile, None, None, capture.crypto()).expect("local context");
            assert!(capture.keys().is_none(), "{profile:?}: one side is not enough");
            let _receiving =
                Context::new(&remote.key, &remote.salt, profile, None, None, capture.crypto()).expect("remote context");
            let keys = capture.keys().expect("both sides");
            assert_eq!(keys.profile as u8, profile as u8, "{profile:?}");
            assert_eq!((&keys.local, &keys.remote), (&local, &remote), "{profile:?}");
            // A context of our own from what was read decrypts what the connection's sent,
            // and what it encrypts is what the connection's would have sent.
            let mut ours = keys.local_context().expect("our context");
            let sent = sending.encrypt_rtp(&rtp(7)).expect("encrypt");
            assert_eq!(
                ours.decrypt_rtp(&sent).expect("decrypt").to_vec(),
                rtp(7),
                "{profile:?}"
            );
            let mut ours = keys.local_context().expect("our context");
            assert_eq!(
                ours.encrypt_rtp(&rtp(8)).expect("encrypt").to_vec(),
                sending.encrypt_rtp(&rtp(8)).expect("encrypt").to_vec(),
                "{profile:?}"
            );
        }
    }

    #[test]
    fn a_derivation_without_its_cipher_or_mismatched_sides_give_no_keys() {
        let d = |key: Vec<u8>, family| Derivation {
            key,
            first_block: [9; 16],
            family,
        };
        assert!(keys_from(&[]).is_none());
        assert!(keys_from(&[d(vec![1; 16], Some(Family::Gcm))]).is_none());
        assert!(keys_from(&[d(vec![1; 16], None), d(vec![2; 16], Some(Family::Gcm))]).is_none());
        assert!(keys_from(&[d(vec![1; 16], Some(Family::Gcm)), d(vec![2; 16], Some(Family::Ctr))]).is_none());
        assert!(keys_from(&[d(vec![1; 16], Some(Family::Gcm)), d(vec![2; 32], Some(Family::Gcm))]).is_none());
        assert!(keys_from(&[d(vec![1; 24], Some(Family::Gcm)), d(vec![2; 24], Some(Family::Gcm))]).is_none());
        let keys = keys_from(&[d(vec![1; 16], Some(Family::Ctr)), d(vec![2; 16], Some(Family::Ctr))]).expect("keys");
        assert_eq!(keys.profile as u8, ProtectionProfile::Aes128CmHmacSha1_80 as u8);
        assert_eq!(keys.local.salt, vec![9; 14]);
        assert_eq!(format!("{:?}", keys.local), "MasterKey(16 + 14 bytes, redacted)");
    }

    // ---- a real DTLS handshake ----

    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    use rtc::peer_connection::RTCPeerConnection;
    use rtc::peer_connection::event::RTCPeerConnectionEvent;
    use rtc::peer_connection::message::RTCMessage;
    use rtc::peer_connection::state::RTCPeerConnectionState;
    use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
    use rtc::sansio::Protocol;
    use rtc::shared::marshal::Unmarshal;

    use crate::sfu::demux::{Class, classify};
    use crate::sfu::rtc_client;

    /// One side of an in-memory link: its connection, its address, whether it is connected.
    struct Side {
        pc: RTCPeerConnection,
        addr: SocketAddr,
        connected: bool,
        received: Vec<rtc::rtp::Packet>,
    }

    impl Side {
        fn new(pc: RTCPeerConnection, addr: &str) -> Self {
            Self {
                pc,
                addr: addr.parse().expect("addr"),
                connected: false,
                received: Vec::new(),
            }
        }

        /// A datagram from `from`, as the socket would hand it over.
        fn read(&mut self, from: SocketAddr, data: &[u8], now: Instant) {
            let _ = self
                .pc
                .handle_read(rtc_client::datagram(now, self.addr, from, bytes::BytesMut::from(data)));
            self.drain();
        }

        fn drain(&mut self) {
            while let Some(read) = self.pc.poll_read() {
                if let RTCMessage::RtpPacket(_, packet) = read.message {
                    self.received.push(packet);
                }
            }
            while let Some(event) = self.pc.poll_event() {
                if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = event {
                    self.connected = state == RTCPeerConnectionState::Connected;
                }
            }
        }
    }

    /// Carries what `from` sends to `to`, returning the datagrams; runs `from`'s due timers.
    fn carry(from: &mut Side, to: &mut Side, now: Instant) -> Vec<Vec<u8>> {
        let mut sent = Vec::new();
        while let Some(out) = from.pc.poll_write() {
            to.read(from.addr, &out.message, now);
            sent.push(out.message.to_vec());
        }
        if from.pc.poll_timeout().is_some_and(|at| at <= now) {
            let _ = from.pc.handle_timeout(now);
        }
        from.drain();
        sent
    }

    fn video(seq: u16, ssrc: u32) -> rtc::rtp::Packet {
        rtc::rtp::Packet {
            header: rtc::rtp::header::Header {
                version: 2,
                payload_type: rtc_client::VP8_PT,
                sequence_number: seq,
                timestamp: 3000 * u32::from(seq),
                ssrc,
                ..Default::default()
            },
            payload: bytes::Bytes::from(format!("frame {seq}")),
        }
    }

    /// Two `rtc` connections in memory, the answerer's cryptography through the capture,
    /// each sending video: once DTLS completes, the captured remote key decrypts what the
    /// offerer sent, the local key decrypts what the answerer's `rtc` sent, and a packet we
    /// encrypt ourselves with the local key is taken by the offerer as the answerer's next
    /// packet. The clock is simulated (sans-IO), so nothing waits.
    #[test]
    fn a_real_dtls_handshake_gives_the_keys_its_srtp_uses() {
        const A_SSRC: u32 = 0x0A0A_0A0A;
        const B_SSRC: u32 = 0x0B0B_0B0B;
        let mut a_pc = rtc_client::client("127.0.0.1:40001".parse().expect("addr"), &[]).expect("client a");
        let a_video = a_pc
            .add_track(rtc_client::track("a", "cam", RtpCodecKind::Video, A_SSRC))
            .expect("a's track");
        let capture = KeyCapture::new().expect("provider");
        let mut b_pc = rtc_client::client_with_crypto("127.0.0.1:40002".parse().expect("addr"), &[], capture.clone())
            .expect("client b");
        let b_video = b_pc
            .add_track(rtc_client::track("b", "cam", RtpCodecKind::Video, B_SSRC))
            .expect("b's track");
        let mut now = Instant::now();
        let offer = a_pc.create_offer(None).expect("offer");
        a_pc.set_local_description(now, offer.clone()).expect("a local");
        b_pc.set_remote_description(now, offer).expect("b remote");
        let answer = b_pc.create_answer(None).expect("answer");
        b_pc.set_local_description(now, answer.clone()).expect("b local");
        a_pc.set_remote_description(now, answer).expect("a remote");
        let (mut a, mut b) = (Side::new(a_pc, "127.0.0.1:40001"), Side::new(b_pc, "127.0.0.1:40002"));

        let deadline = now + Duration::from_secs(30);
        while !(a.connected && b.connected && capture.keys().is_some()) {
            assert!(now < deadline, "connected a: {}, b: {}", a.connected, b.connected);
            carry(&mut a, &mut b, now);
            carry(&mut b, &mut a, now);
            now += Duration::from_millis(5);
        }
        let keys = capture.keys().expect("the keys");
        let srtp = |sent: Vec<Vec<u8>>| -> Vec<Vec<u8>> {
            sent.into_iter()
                .filter(|d| classify(d) == Class::Rtp && !(192..=223).contains(&(d[1] & 0x7f | 0x80)))
                .collect()
        };

        // What the offerer sent, decrypted with the answerer's remote key.
        a.pc.rtp_sender(a_video)
            .expect("sender")
            .write_rtp(now, video(1, A_SSRC))
            .expect("write");
        let sent = srtp(carry(&mut a, &mut b, now));
        assert_eq!(sent.len(), 1, "one SRTP datagram");
        let plain = keys
            .remote_context()
            .expect("context")
            .decrypt_rtp(&sent[0])
            .expect("decrypted with the remote key");
        let packet = rtc::rtp::Packet::unmarshal(&mut &plain[..]).expect("rtp");
        assert_eq!((packet.header.ssrc, packet.payload.as_ref()), (A_SSRC, &b"frame 1"[..]));

        // What the answerer's `rtc` sent, decrypted with its local key; then our own packet.
        b.pc.rtp_sender(b_video)
            .expect("sender")
            .write_rtp(now, video(1, B_SSRC))
            .expect("write");
        let sent = srtp(carry(&mut b, &mut a, now));
        assert_eq!(sent.len(), 1, "one SRTP datagram");
        let mut ours = keys.local_context().expect("context");
        let plain = ours.decrypt_rtp(&sent[0]).expect("decrypted with the local key");
        let packet = rtc::rtp::Packet::unmarshal(&mut &plain[..]).expect("rtp");
        assert_eq!((packet.header.ssrc, packet.payload.as_ref()), (B_SSRC, &b"frame 1"[..]));
        {
            use rtc::shared::marshal::Marshal;
            let ours_encrypted = ours
                .encrypt_rtp(&video(2, B_SSRC).marshal().expect("marshal"))
                .expect("encrypt");
            let (from, count) = (b.addr, a.received.len());
            a.read(from, &ours_encrypted, now);
            let got = a.received.get(count).expect("the offerer took our packet");
            assert_eq!(
                (got.header.ssrc, got.header.sequence_number, got.payload.as_ref()),
                (B_SSRC, 2, &b"frame 2"[..])
            );
        }
    }
}
