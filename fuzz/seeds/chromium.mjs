#!/usr/bin/env node
// Seeds from a real Chromium (Debian's, driven by playwright-core from tests/browser):
// the publisher offer a guest's browser makes (fake camera and microphone, host
// candidates on loopback), the answer it gives to a subscriber offer, and the first
// datagrams it sends: connectivity checks (USERNAME, ICE-CONTROLLING, PRIORITY,
// USE-CANDIDATE, MESSAGE-INTEGRITY, FINGERPRINT, GOOG-NETWORK-INFO) to a UDP socket here
// that the answer names as the remote candidate.
//
//   node fuzz/seeds/chromium.mjs fuzz/corpus     (run from the repository root)
//
// Writes sdp_offer/chromium-offer, sdp_offer/chromium-answer (mode byte first, as the
// target reads them) and media_datagram/chromium-check-N (mode 0: from the client's address).
import { createSocket } from 'node:dgram';
import { createServer } from 'node:http';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';

const require = createRequire(path.resolve('tests/browser/package.json'));
const { chromium } = require('playwright-core');
const out = process.argv[2] || 'fuzz/corpus';

const udp = createSocket('udp4');
const checks = [];
udp.on('message', (msg) => { if (checks.length < 4 && msg[0] < 4) checks.push(Buffer.from(msg)); });
await new Promise((r) => udp.bind(0, '127.0.0.1', r));
const port = udp.address().port;

// getUserMedia needs a secure context: a page from loopback is one.
const http = createServer((_, res) => res.end('<!doctype html><title>seeds</title>'));
await new Promise((r) => http.listen(0, '127.0.0.1', r));

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--headless=new', '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
    '--allow-loopback-in-peer-connection', '--disable-features=WebRtcHideLocalIpsWithMdns'],
});
try {
  const page = await (await browser.newContext({ permissions: ['camera', 'microphone'] })).newPage();
  await page.goto(`http://127.0.0.1:${http.address().port}/`);
  const sdps = await page.evaluate(async (port) => {
    const gathered = (pc) => new Promise((resolve) => {
      if (pc.iceGatheringState === 'complete') return resolve();
      pc.addEventListener('icegatheringstatechange', () => pc.iceGatheringState === 'complete' && resolve());
    });
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
    // The publisher: sends camera and microphone, as the web client's publisher connection.
    const pub = new RTCPeerConnection();
    for (const track of stream.getTracks()) pub.addTransceiver(track, { direction: 'sendonly', streams: [stream] });
    await pub.setLocalDescription(await pub.createOffer());
    await gathered(pub);
    const offer = pub.localDescription.sdp;
    // A subscriber: answers an offer of two recvonly-for-it tracks.
    const server = new RTCPeerConnection();
    for (const track of stream.getTracks()) server.addTransceiver(track, { direction: 'sendonly' });
    await server.setLocalDescription(await server.createOffer());
    const sub = new RTCPeerConnection();
    await sub.setRemoteDescription(server.localDescription);
    await sub.setLocalDescription(await sub.createAnswer());
    await gathered(sub);
    const answer = sub.localDescription.sdp;
    // The publisher's checks, toward our UDP socket: the answer (from `server`'s side)
    // names it as the only candidate.
    const remote = (await (async () => {
      const peer = new RTCPeerConnection();
      await peer.setRemoteDescription({ type: 'offer', sdp: offer });
      await peer.setLocalDescription(await peer.createAnswer());
      return peer.localDescription.sdp;
    })()).split('\r\n').filter((l) => !l.startsWith('a=candidate') && !l.startsWith('a=end-of-candidates')).join('\r\n')
      .replace(/(m=audio[^\r]*\r\n)/, `$1a=candidate:1 1 udp 2130706431 127.0.0.1 ${port} typ host\r\n`);
    await pub.setRemoteDescription({ type: 'answer', sdp: remote });
    await new Promise((r) => setTimeout(r, 1500));
    return { offer, answer };
  }, port);
  for (const dir of ['sdp_offer', 'media_datagram']) mkdirSync(path.join(out, dir), { recursive: true });
  writeFileSync(path.join(out, 'sdp_offer', 'chromium-offer'), Buffer.concat([Buffer.from([0]), Buffer.from(sdps.offer)]));
  writeFileSync(path.join(out, 'sdp_offer', 'chromium-answer'), Buffer.concat([Buffer.from([1]), Buffer.from(sdps.answer)]));
  checks.forEach((c, i) => writeFileSync(path.join(out, 'media_datagram', `chromium-check-${i}`), Buffer.concat([Buffer.from([0]), c])));
  console.log(`offer ${sdps.offer.length} B, answer ${sdps.answer.length} B, ${checks.length} checks`);
} finally {
  await browser.close();
  udp.close();
  http.close();
}
