// Unit tests of web-client/media-status.js (pure functions, no browser): what a client
// calls its own media and what it reports to others. Run by `node --test` from
// tests/browser.rs (`web_client_pure_modules`), or by hand:
//   node --test tests/browser/media-status.test.mjs

import assert from 'node:assert/strict';
import test from 'node:test';
import {
  describePeerMedia,
  describeQuality,
  LOW_QUALITY_HOLD_MS,
  LowQualityLabel,
  mediaPhase,
  phaseMessage,
  qualityNoticeText,
  reportOf,
} from '../../web-client/media-status.js';

/** One connection's health as the client keeps it (see `resetHealth` in gatehouse-client.js). */
function conn(overrides = {}) {
  return {
    exists: true,
    state: 'new',
    iceState: 'new',
    path: null,
    attempts: 0,
    restarts: 0,
    stalled: false,
    gaveUp: false,
    everConnected: false,
    ...overrides,
  };
}

const connected = (path = 'udp') => conn({ state: 'connected', path, everConnected: true });

test('phases: idle, connecting, connected, blocked, reconnecting, failed', () => {
  assert.equal(mediaPhase({ publisher: conn({ exists: false }), subscriber: conn({ exists: false }) }), 'idle');
  assert.equal(mediaPhase({ publisher: conn({ state: 'connecting' }), subscriber: conn({ exists: false }) }), 'connecting');
  assert.equal(mediaPhase({ publisher: connected(), subscriber: connected() }), 'connected');
  const stalled = conn({ state: 'connecting', stalled: true });
  assert.equal(mediaPhase({ publisher: stalled, subscriber: conn({ state: 'connecting' }) }), 'blocked');
  const lost = conn({ state: 'disconnected', everConnected: true });
  assert.equal(mediaPhase({ publisher: lost, subscriber: connected() }), 'reconnecting');
  assert.equal(mediaPhase({ publisher: conn({ gaveUp: true, attempts: 3 }), subscriber: connected() }), 'failed');
});

test('a connection that never came up and missed its connect timer is reported failed, not connecting', () => {
  // Others must read "no media" as soon as the user is told the network blocks it.
  const report = reportOf({ publisher: conn({ state: 'connecting', stalled: true }), subscriber: conn({ state: 'connecting', attempts: 1 }) });
  assert.deepEqual(report, { publisher: { state: 'failed' }, subscriber: { state: 'failed' } });
  assert.deepEqual(describePeerMedia(report), { ok: false, state: 'no-media', text: 'no media (failed)' });
});

test('a connection still within its connect timer is connecting', () => {
  const report = reportOf({ publisher: conn({ state: 'connecting' }), subscriber: conn({ exists: false }) });
  assert.deepEqual(report, { publisher: { state: 'connecting' }, subscriber: { state: 'new' } });
  assert.equal(describePeerMedia(report).state, 'connecting');
});

test('a connection that was up and is being restarted reports what the browser says', () => {
  const restarting = conn({ state: 'connecting', attempts: 1, everConnected: true });
  assert.deepEqual(reportOf({ publisher: restarting, subscriber: connected('tcp') }), {
    publisher: { state: 'connecting' },
    subscriber: { state: 'connected', path: 'tcp' },
  });
  const lost = conn({ state: 'disconnected', everConnected: true });
  assert.equal(describePeerMedia(reportOf({ publisher: lost, subscriber: connected() })).text, 'no media (reconnecting)');
});

test('given up is failed whatever the browser says; connected carries its path', () => {
  assert.deepEqual(reportOf({ publisher: conn({ state: 'connecting', gaveUp: true, everConnected: true }), subscriber: connected('relay') }), {
    publisher: { state: 'failed' },
    subscriber: { state: 'connected', path: 'relay' },
  });
  assert.deepEqual(describePeerMedia({ publisher: { state: 'connected', path: 'relay' }, subscriber: { state: 'failed' } }), {
    ok: true,
    state: 'media',
    text: 'media over a relay (TURN), not receiving (failed)',
  });
  assert.equal(describePeerMedia(null), null);
});

test('connected before the path is known says media, not a made-up path', () => {
  assert.deepEqual(describePeerMedia({ publisher: { state: 'connected' }, subscriber: { state: 'connected' } }), {
    ok: true,
    state: 'media',
    text: 'media',
  });
});

test('every phase has words, and trouble says what is happening', () => {
  for (const phase of ['idle', 'connecting', 'connected', 'blocked', 'reconnecting', 'failed']) {
    const { status, problem } = phaseMessage(phase, { publisher: connected(), subscriber: connected() });
    assert.equal(typeof status, 'string', phase);
    assert.equal(problem !== null, ['blocked', 'reconnecting', 'failed'].includes(phase), phase);
  }
  assert.match(phaseMessage('blocked', {}).problem, /blocking/);
  assert.match(phaseMessage('failed', {}).problem, /Try another network/);
  assert.equal(phaseMessage('connected', { publisher: connected('udp'), subscriber: connected('tcp') }).status, 'Connected over UDP and TCP');
});

test('connection quality: a word only when weak, the whole state as a name, a notice only for poor or lost', () => {
  assert.deepEqual(describeQuality({ quality: 'excellent', videoReduced: false }), { name: 'Connection excellent', word: '' });
  assert.deepEqual(describeQuality({ quality: 'good', videoReduced: true }), { name: 'Connection good, receiving reduced video', word: '' });
  assert.deepEqual(describeQuality({ quality: 'poor', videoReduced: true }), {
    name: 'Connection weak, receiving reduced video',
    word: 'connection weak',
  });
  assert.deepEqual(describeQuality({ quality: 'lost', videoReduced: false }), { name: 'Connection lost', word: 'connection lost' });
  assert.equal(describeQuality({ quality: 'shaky' }).name, 'Connection unknown');
  assert.equal(qualityNoticeText({ quality: 'excellent', videoReduced: false }), '');
  assert.equal(qualityNoticeText({ quality: 'good', videoReduced: true }), '', 'one layer down is no news');
  assert.match(qualityNoticeText({ quality: 'poor', videoReduced: true }), /video was reduced to keep audio clear/);
  assert.match(qualityNoticeText({ quality: 'poor', videoReduced: false }), /weak/);
  assert.doesNotMatch(qualityNoticeText({ quality: 'poor', videoReduced: false }), /reduced/);
  assert.match(qualityNoticeText({ quality: 'lost', videoReduced: true }), /interrupted/);
});

test('the connection notice stays quiet while the media alert already speaks', () => {
  const weak = { quality: 'poor', videoReduced: true };
  assert.match(qualityNoticeText(weak, 'connected'), /weak/);
  for (const phase of ['blocked', 'reconnecting', 'failed']) {
    assert.equal(qualityNoticeText(weak, phase), '', phase);
    assert.equal(qualityNoticeText({ quality: 'lost', videoReduced: false }, phase), '', phase);
  }
  for (const phase of ['idle', 'connecting']) assert.match(qualityNoticeText(weak, phase), /weak/, phase);
});

test('low-quality label: shows at once when reduced, goes after the hold once not reduced', () => {
  const l = new LowQualityLabel(3000);
  assert.deepEqual(l.state(0), { shown: false, recheckAt: null }, 'nothing known: no label');
  l.set(false, 100);
  assert.deepEqual(l.state(100), { shown: false, recheckAt: null }, 'not reduced: no label');
  l.set(true, 1000);
  assert.deepEqual(l.state(1000), { shown: true, recheckAt: null }, 'reduced: the label at once');
  assert.deepEqual(l.state(60000), { shown: true, recheckAt: null }, 'still reduced: the label stays');
  l.set(true, 60500);
  l.set(false, 61000);
  assert.deepEqual(l.state(61000), { shown: true, recheckAt: 64000 }, 'back: the label holds');
  assert.deepEqual(l.state(63999), { shown: true, recheckAt: 64000 });
  assert.deepEqual(l.state(64000), { shown: false, recheckAt: null }, 'gone after the hold');
  assert.deepEqual(l.state(70000), { shown: false, recheckAt: null });
  assert.equal(LOW_QUALITY_HOLD_MS > 0, true);
});

test('low-quality label: a video that flaps within the hold keeps one label', () => {
  const l = new LowQualityLabel(3000);
  l.set(true, 0);
  l.set(false, 1000);
  assert.equal(l.state(2000).shown, true);
  l.set(true, 2500);
  assert.deepEqual(l.state(2500), { shown: true, recheckAt: null }, 'reduced again: no pending end');
  l.set(false, 3500);
  assert.deepEqual(l.state(5000), { shown: true, recheckAt: 6500 }, 'the hold counts from the last return');
  assert.equal(l.state(6500).shown, false);
  l.set(false, 7000);
  assert.deepEqual(l.state(7000), { shown: false, recheckAt: null }, 'a repeated "not reduced" changes nothing');
});
