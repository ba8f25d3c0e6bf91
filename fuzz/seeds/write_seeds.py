#!/usr/bin/env python3
"""Hand-written seeds for the targets whose input is not captured traffic: the frames,
bodies and claims of docs/PROTOCOL.md, and RTP packets shaped like Chromium's (Opus with
the audio-level one-byte extension, VP8 with two-byte extensions, padding, CSRCs).
Run from the repository root: python3 fuzz/seeds/write_seeds.py fuzz/corpus
(The captured seeds come from fuzz/seeds/chromium.mjs and the media harness.)"""
import json
import os
import struct
import sys

out = sys.argv[1] if len(sys.argv) > 1 else "fuzz/corpus"


def write(target, name, data):
    os.makedirs(os.path.join(out, target), exist_ok=True)
    with open(os.path.join(out, target, name), "wb") as f:
        f.write(data)


def chromium_sdp(kind):
    path = os.path.join(out, "sdp_offer", f"chromium-{kind}")
    with open(path, "rb") as f:
        return f.read()[1:].decode()


# signaling_frame: steps separated by 0xFF; first byte: op (low 3 bits: 0-3 the four
# participants, 4 a socket never joined, 5 drop, 6 tick, 7 rejoin) and seconds passing (high 5).
SEP = b"\xff"
frames = {
    "chat": (2, {"type": "chat", "text": "Hello doctor"}),
    "ping": (1, {"type": "ping", "nonce": 42}),
    "admit": (0, {"type": "admit", "participant_id": "g_anon"}),
    "admit_all": (1, {"type": "admit_all"}),
    "deny": (0, {"type": "deny", "participant_id": "g_anon", "reason": "Please use your invitation"}),
    "remove": (0, {"type": "remove", "participant_id": "g_invited", "reason": "Disruptive"}),
    "end_meeting": (0, {"type": "end_meeting"}),
    "leave": (3, {"type": "leave"}),
    "join_again": (2, {"type": "join", "protocol": 1, "token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.e30.x"}),
    "media_status": (2, {"type": "media_status",
                         "publisher": {"state": "connected", "path": "udp"},
                         "subscriber": {"state": "connecting"}}),
    "mute": (1, {"type": "mute_track", "track_id": "t_Cam3raXy9", "muted": True}),
    "ice_candidate": (2, {"type": "ice_candidate", "target": "publisher",
                          "candidate": {"candidate": "candidate:1 1 udp 2130706431 192.0.2.10 54400 typ host",
                                        "sdpMid": "0", "sdpMLineIndex": 0}}),
    "chat_from_lobby": (3, {"type": "chat", "text": "let me in"}),
    "unknown_type": (4, {"type": "fly"}),
}
for name, (op, frame) in frames.items():
    write("signaling_frame", name, bytes([op]) + json.dumps(frame).encode())
write("signaling_frame", "publish_offer",
      bytes([2]) + json.dumps({"type": "publish_offer", "sdp": chromium_sdp("offer"),
                               "tracks": [{"mid": "0", "source": "microphone"},
                                          {"mid": "1", "source": "camera", "muted": True}]}).encode())
# A sequence: the guest drops, time passes past the hold, staff admit, the lobby guest chats, tick.
write("signaling_frame", "drop_hold_admit",
      bytes([5]) + b"\x02" + SEP + bytes([6 | (31 << 3)]) + SEP
      + bytes([0]) + json.dumps({"type": "admit", "participant_id": "g_anon"}).encode() + SEP
      + bytes([3]) + json.dumps({"type": "chat", "text": "thanks"}).encode() + SEP + bytes([7]) + b"\x02")

# rest_body: selector (body = selector % 5: create, patch, link, redeem, deny; high bits: content type).
bodies = [
    (0, {"title": "Clinic", "lobby_bypass": "invited", "invited_staff": ["ivan"], "lobby_timeout_secs": 900}),
    (0, {"title": "Open day", "lobby_bypass": "everyone", "allow_anonymous": True, "max_participants": 100}),
    (1, {"title": "Renamed", "chat_enabled": False}),
    (1, {"scheduled_start_ms": 1767225600000, "scheduled_end_ms": 1767229200000}),
    (2, {"kind": "invite", "invitee": "Grace Hopper", "expires_in_secs": 86400}),
    (2, {"kind": "single_use"}),
    (3, {"display_name": "Grace Hopper"}),
    (4, {"reason": "Please use your invitation"}),
]
for i, (selector, body) in enumerate(bodies):
    write("rest_body", f"body-{i}", bytes([selector]) + json.dumps(body).encode())
write("rest_body", "redeem-array", bytes([3]) + b'["x"]')
write("rest_body", "deny-empty", bytes([4]))

# token_verify: odd mode = claims signed with the real key; even = a token from outside.
now = 1_700_000_000
staff = {"sub": "olga", "name": "Olga", "org": "acme", "role": "member", "iss": "gatehouse-fuzz",
         "aud": "gatehouse-staff", "iat": now, "exp": now + 3600}
guest = {"sub": "p_x", "mtg": "m_1", "name": "Grace", "invited": True, "iss": "gatehouse-fuzz",
         "aud": "gatehouse-guest", "iat": now, "exp": now + 3600}
write("token_verify", "staff-claims", b"\x01" + json.dumps(staff).encode())
write("token_verify", "guest-claims", b"\x01" + json.dumps(guest).encode())
write("token_verify", "expired-claims", b"\x01" + json.dumps({**guest, "exp": now - 60}).encode())
write("token_verify", "forged", b"\x00eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
      b"eyJzdWIiOiJvbGdhIiwiaXNzIjoiZ2F0ZWhvdXNlLWZ1enoiLCJhdWQiOiJnYXRlaG91c2Utc3RhZmYiLCJleHAiOjk5OTk5OTk5OTl9."
      b"c2lnbmF0dXJl")
write("token_verify", "alg-none", b"\x00eyJhbGciOiJub25lIn0.eyJzdWIiOiJvbGdhIn0.")


# rtp_rewrite: 12 bytes of negotiation, then (selector, length, RTP) records.
def rtp(pt, seq, ts, ssrc, payload, marker=False, csrcs=(), ext=None, padding=0):
    first = 0x80 | (0x20 if padding else 0) | (0x10 if ext else 0) | len(csrcs)
    b = struct.pack("!BBHII", first, (0x80 if marker else 0) | pt, seq, ts, ssrc)
    for c in csrcs:
        b += struct.pack("!I", c)
    if ext:
        profile, body = ext
        body += b"\x00" * (-len(body) % 4)
        b += struct.pack("!HH", profile, len(body) // 4) + body
    b += payload
    if padding:
        b += b"\x00" * (padding - 1) + bytes([padding])
    return b


audio_level = (0xBEDE, bytes([0x10, 0x85]))           # id 1, one byte: voice, -5 dBov
orientation = (0xBEDE, bytes([0x40, 0x01, 0x30, 0x00]))  # id 4 (video orientation), id 3
two_byte = (0x1000, bytes([0x05, 0x02, 0xAB, 0xCD, 0x01, 0x01, 0x7F]))
# publisher: VP8 96, Opus 111, ext ids (level 1, orientation 4, twcc 3, mid 9);
# subscriber: VP8 100, Opus 109, ext ids (level 5, orientation 2, twcc 3, mid 9).
config = bytes([96, 111, 100, 109, 1, 4, 3, 9, 5, 2, 3, 9])
packets = [
    (1, rtp(111, 1, 960, 0, b"\xfc\xff\xfe", ext=audio_level)),
    (0, rtp(96, 7, 3000, 0, b"\x90\x80\x00\x00\x9d\x01\x2a", marker=True, ext=orientation)),
    (0, rtp(96, 8, 3000, 0, b"\x90\x80\x00\x01", ext=two_byte, padding=4)),
    (1, rtp(111, 2, 1920, 0, b"\xfc", csrcs=(7, 8))),
    (2, rtp(97, 9, 3000, 1234, b"rtx")),
]
write("rtp_rewrite", "chromium-like",
      config + b"".join(bytes([sel, len(p)]) + p for sel, p in packets))
write("rtp_rewrite", "one-byte-id-over-14",
      bytes([96, 111, 100, 109, 1, 4, 3, 9, 200, 2, 3, 9]) + bytes([1, 14]) + rtp(111, 1, 960, 0, b"", ext=audio_level))
# media_datagram, mode 4/5: RTP and RTCP that the client encrypts.
write("media_datagram", "client-rtp-audio", b"\x04" + rtp(111, 100, 96000, 0, b"\xfc\xff\xfe", ext=audio_level))
write("media_datagram", "client-rtp-video", b"\x84" + rtp(96, 100, 90000, 0, b"\x90\x80\x00\x00\x9d\x01\x2a", marker=True))
pli = struct.pack("!BBHII", 0x81, 206, 2, 1, 0x0B1DE0)
nack = struct.pack("!BBHIIHH", 0x81, 205, 3, 1, 0x0B1DE0, 5, 0)
write("media_datagram", "client-rtcp-pli", b"\x05" + pli)
write("media_datagram", "client-rtcp-nack", b"\x05" + nack)
# mode 7: a nominating check from a new address (127.0.0.2:40000), with a PRIORITY-like record.
write("media_datagram", "nomination-moves", b"\x07" + bytes([127, 0, 0, 2, 0x9C, 0x40]) + b"\xc0\x57\x04\x00\x01\x00\x0a")

# rtcp_view: decrypted compounds as subscribers send them.
def rtcp(first, pt, body, padding=0):
    """One RTCP packet: first byte's count (RC/FMT), type, body; padding as RFC 3550 pads."""
    if padding:
        body += b"\x00" * (padding - 1) + bytes([padding])
    return struct.pack("!BBH", 0x80 | (0x20 if padding else 0) | first, pt, len(body) // 4) + body


block = struct.pack("!IB3sIIII", 0x0B1DE0, 3, b"\x00\x00\x07", 0x1_0042, 90, 0xDEAD_BEEF, 6553)
rr = rtcp(1, 201, struct.pack("!I", 1) + block)
sdes = rtcp(1, 202, struct.pack("!I", 1) + b"\x01\x05guest\x00")
# Chromium-like TWCC: base 100, 10 packets, a 2-bit vector (small, small, large, lost,
# small, small, lost), a run of 3 small; deltas; padded to a word with the P bit.
twcc_body = struct.pack("!IIHH", 1, 0x0B1DE0, 100, 10) + bytes([0, 0, 5, 7])
twcc_body += struct.pack("!H", 0xC000 | 0b01_01_10_00_01_01_00 << 0) + struct.pack("!H", 0x2003)
twcc_body += bytes([4, 8]) + struct.pack("!h", -12) + bytes([20, 4, 4, 4, 4])
pad = -len(twcc_body) % 4
twcc = rtcp(15, 205, twcc_body, padding=pad) if pad else rtcp(15, 205, twcc_body)
remb = rtcp(15, 206, struct.pack("!II4sB3s", 1, 0, b"REMB", 1, bytes([0x0A, 0x3D, 0x09])) + struct.pack("!I", 0x0B1DE0))
fir = rtcp(4, 206, struct.pack("!IIIB3x", 1, 0, 0x0B1DE0, 1))
write("rtcp_view", "rr", rr)
write("rtcp_view", "rr-sdes", rr + sdes)
write("rtcp_view", "twcc-padded", twcc)
write("rtcp_view", "nack-pli", nack + pli)
write("rtcp_view", "remb-fir", remb + fir)
write("rtcp_view", "sr", rtcp(1, 200, struct.pack("!IQIII", 1, 1 << 32, 90000, 10, 1000) + block))


# relay_envelope: steps separated by 0xFF; first byte: 0-2 an envelope arriving on the
# node's channel (its JSON follows), 3 the edge's client sends a frame (text follows),
# 4 the edge's client hangs up, 5 the edge loses its owner, 6 the owner sends a frame,
# 7 the owner ends the session.
def envelope(frm, conn, seq, body):
    return bytes([0]) + json.dumps({"from": frm, "conn": conn, "seq": seq, "body": body}).encode()


joined = {"type": "joined", "protocol": 1,
          "you": {"participant_id": "p-1", "display_name": "Wanda", "kind": "guest"},
          "meeting": {"meeting_id": "m_fuzz", "title": "Clinic", "chat_enabled": True,
                      "guests_may_present": False}}
ping = json.dumps({"type": "ping", "nonce": 1})
write("relay_envelope", "open", envelope("n-edge", 7, 0, {"kind": "open", "token": "tok", "meeting_id": "m_fuzz"}))
write("relay_envelope", "session",
      envelope("n-edge", 7, 0, {"kind": "open", "token": "tok", "meeting_id": None}) + SEP
      + envelope("n-owner", 1, 0, {"kind": "message", "msg": joined}) + SEP
      + bytes([3]) + ping.encode() + SEP
      + envelope("n-edge", 7, 1, {"kind": "frame", "text": ping}) + SEP
      + bytes([6]) + SEP
      + envelope("n-owner", 1, 1, {"kind": "message", "msg": {"type": "pong", "nonce": 1}}) + SEP
      + envelope("n-edge", 7, 2, {"kind": "hangup"}) + SEP
      + envelope("n-owner", 1, 2, {"kind": "end", "reason": "left"}))
write("relay_envelope", "refused",
      envelope("n-owner", 1, 0, {"kind": "message", "msg": {"type": "error", "code": "unauthorized",
                                                             "message": "bad token"}}) + SEP + bytes([4]))
write("relay_envelope", "gap",
      envelope("n-owner", 1, 0, {"kind": "message", "msg": joined}) + SEP
      + envelope("n-owner", 1, 5, {"kind": "message", "msg": {"type": "pong", "nonce": 2}}) + SEP + bytes([5]))
