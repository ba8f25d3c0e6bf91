#!/usr/bin/env node
// Browser scenarios for the Gatehouse web client in Firefox.
//
//   node tests/browser/firefox.mjs guest-meets-sdk [<json> | @config.json]
//   GATEHOUSE_BROWSER_CONFIG='<json>' node tests/browser/firefox.mjs guest-meets-sdk
//
// Drives Debian's Firefox ESR (never a downloaded browser) over WebDriver BiDi with
// puppeteer-core, headless, fake camera and microphone, a fresh profile per run.
// Same output as scenarios.mjs: ONE JSON line per scenario on stdout,
// {"scenario", "ok", "error", "facts", "screenshots", "pageErrors", "durationMs"};
// everything else goes to stderr. Exit code 0 when every scenario is ok, 2 for a usage error.
// See docs/WEB-CLIENT.md ("Firefox").

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import puppeteer from 'puppeteer-core';
import { RunBase, judgeMedia, readConfig, runCli } from './harness.mjs';
import { mediaReport, mediaRisingPredicate } from './media-probe.mjs';

const SCENARIOS = {
  'guest-meets-sdk': guestMeetsSdk,
};

const FIREFOX_PREFS = {
  // Fake camera (moving colours) and microphone (a tone), no permission prompt.
  'media.navigator.streams.fake': true,
  'media.navigator.permission.disabled': true,
  // The gateway binds media to 127.0.0.1 in tests: gather loopback candidates, plain (no mDNS).
  'media.peerconnection.ice.loopback': true,
  'media.peerconnection.ice.obfuscate_host_addresses': false,
  'media.autoplay.default': 0, // allowed
  'media.autoplay.blocking_policy': 0,
  // Quiet: no first-run pages, updates or telemetry.
  'app.update.enabled': false,
  'browser.shell.checkDefaultBrowser': false,
  'datareporting.policy.dataSubmissionEnabled': false,
  'toolkit.telemetry.enabled': false,
};

// ------------------------------------------------------------------- config

function readFirefoxConfig(arg) {
  return readConfig(arg, (cfg) => ({
    firefoxPath: cfg.firefoxPath || process.env.FIREFOX_PATH || '/usr/bin/firefox-esr',
  }));
}

// ------------------------------------------------------------ page helpers

class Run extends RunBase {
  async context(label) {
    const ctx = await this.browser.createBrowserContext();
    const page = await ctx.newPage();
    page.setDefaultTimeout(this.cfg.timeoutMs);
    await page.setViewport({ width: 1280, height: 800 });
    this.watch(page, label);
    this.contexts.push(ctx);
    return page;
  }
}

/** The visible element with this test id (Playwright's `:visible`), once there is one. */
async function visible(page, testid, { timeout } = {}) {
  const handle = await page.waitForFunction(
    (id) =>
      [...document.querySelectorAll(`[data-testid="${id}"]`)].find(
        (e) => e.getClientRects().length > 0 && getComputedStyle(e).visibility !== 'hidden',
      ) || null,
    { timeout, polling: 100 },
    testid,
  );
  return handle.asElement();
}

async function fill(page, testid, text) {
  const input = await visible(page, testid);
  await input.evaluate((e) => {
    e.focus();
    e.value = '';
    e.dispatchEvent(new Event('input', { bubbles: true }));
  });
  await input.type(text);
}

/** Guest: open the link, wait for the join form, type the name, join. */
async function guestJoins(run, page, linkCode, name, { shot = null } = {}) {
  await page.goto(`${run.cfg.baseUrl}/j/${linkCode}`);
  await visible(page, 'name-input');
  run.facts.meetingTitleShown = await page.$eval('[data-testid="meeting-title"]', (e) => e.textContent);
  await page
    .waitForFunction(() => document.querySelector('[data-testid="preview-video"]')?.readyState >= 2, { timeout: 5000, polling: 100 })
    .then(() => (run.facts.previewPlaying = true))
    .catch(() => (run.facts.previewPlaying = false));
  if (shot) await run.shot(page, shot);
  await fill(page, 'name-input', name);
  await (await visible(page, 'join-button')).click();
  run.progress('join-sent');
  await page.waitForFunction(() => ['lobby', 'call', 'left'].includes(window.gatehouse?.view), { polling: 100 });
  return page.evaluate(() => window.gatehouse.client.you.participant_id);
}

/** Two samples of window.gatehouse.stats(): does media flow, and which? (as scenarios.mjs) */
async function mediaFacts(page, { timeoutMs, wantVideo = true, wantAudio = true, source = 'camera', videoKey = 'framesDecoded' }) {
  const first = await page.evaluate(() => window.gatehouse.stats());
  const rising = await page
    .waitForFunction(mediaRisingPredicate, { timeout: timeoutMs, polling: 500 }, { first, wantVideo, wantAudio, source, videoKey })
    .then(() => true)
    .catch(() => false);
  const second = await page.evaluate(() => window.gatehouse.stats());
  return mediaReport(rising, first, second);
}

/** The ICE candidate pair each of the client's peer connections uses (Firefox marks it `selected`). */
async function iceFacts(page) {
  return page.evaluate(async () => {
    const client = window.gatehouse.client;
    const out = {};
    for (const role of ['publisher', 'subscriber']) {
      const pc = client?.[role];
      if (!pc) {
        out[role] = null;
        continue;
      }
      const stats = [...(await pc.getStats()).values()];
      const byId = Object.fromEntries(stats.map((s) => [s.id, s]));
      const pair = stats.find((s) => s.type === 'candidate-pair' && s.selected) ||
        stats.find((s) => s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded');
      const cand = (id) => {
        const c = byId[id];
        return c ? `${c.address ?? c.ip}:${c.port} ${c.protocol} ${c.candidateType}` : null;
      };
      out[role] = {
        iceConnectionState: pc.iceConnectionState,
        connectionState: pc.connectionState,
        selectedPair: pair ? { state: pair.state, local: cand(pair.localCandidateId), remote: cand(pair.remoteCandidateId) } : null,
      };
      // Without a working pair, say what was tried (as about:webrtc would).
      if (!pair) {
        out[role].pairs = stats
          .filter((s) => s.type === 'candidate-pair')
          .map((s) => `${cand(s.localCandidateId)} -> ${cand(s.remoteCandidateId)}: ${s.state}`);
        out[role].remoteCandidates = stats.filter((s) => s.type === 'remote-candidate').map((s) => cand(s.id));
      }
    }
    return out;
  });
}

// ---------------------------------------------------------------- scenarios

/**
 * scenarios.mjs's guest-meets-sdk, in Firefox: a guest meets a staff member on the
 * Rust SDK (driven by the calling test, which admits the guest, publishes synthetic
 * media and says "measured" in the chat). Video is judged by packets received.
 */
async function guestMeetsSdk(run) {
  if (!run.cfg.linkCode) throw new Error('guest-meets-sdk needs linkCode (the SDK side owns the meeting)');
  const guest = await run.context('guest');
  run.facts.guestParticipantId = await guestJoins(run, guest, run.cfg.linkCode, run.cfg.guestName);
  run.step('the SDK admits the guest');
  await visible(guest, 'call-view', { timeout: run.cfg.mediaTimeoutMs });
  run.step('media from the SDK reaches the browser');
  const media = await mediaFacts(guest, { timeoutMs: run.cfg.mediaTimeoutMs, videoKey: 'packetsReceived' });
  run.facts.ice = await iceFacts(guest).catch((e) => ({ error: String(e?.message || e) }));
  await run.shot(guest, 'firefox-call.png');
  judgeMedia(run, 'guestMedia', media);
  run.step('the guest keeps publishing until the SDK has measured');
  await guest.waitForFunction(
    () => document.querySelector('[data-testid="chat-messages"]')?.textContent.includes('measured'),
    { timeout: run.cfg.mediaTimeoutMs, polling: 200 },
  );
  run.facts.sdkSaidMeasured = true;
  run.step('the guest leaves');
  await (await visible(guest, 'leave-button')).click();
  await guest.waitForFunction(() => window.gatehouse.view === 'left', { polling: 100 });
  run.facts.left = true;
}

// --------------------------------------------------------------------- main

runCli({
  script: 'firefox.mjs',
  scenarios: SCENARIOS,
  readCfg: readFirefoxConfig,
  makeRun: (cfg, name) => new Run(cfg, name),
  // A fresh browser and a fresh profile per scenario.
  launch: async (run) => {
    const profileDir = mkdtempSync(path.join(tmpdir(), 'gatehouse-firefox-'));
    run.cleanup = () => rmSync(profileDir, { recursive: true, force: true });
    run.step('launching Firefox');
    const browser = await puppeteer.launch({
      browser: 'firefox',
      protocol: 'webDriverBiDi',
      executablePath: run.cfg.firefoxPath,
      headless: !run.cfg.headed,
      userDataDir: profileDir,
      acceptInsecureCerts: true, // the gateway's self-signed dev certificate
      extraPrefsFirefox: FIREFOX_PREFS,
      env: { ...process.env, HOME: profileDir, MOZ_CRASHREPORTER_DISABLE: '1' },
      timeout: 60000,
    });
    run.facts.browser = await browser.version();
    return browser;
  },
}).catch((e) => {
  process.stderr.write(`${e?.stack || e}\n`);
  process.exit(2);
});
