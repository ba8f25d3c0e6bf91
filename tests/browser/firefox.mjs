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

import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import puppeteer from 'puppeteer-core';
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

function readConfig(arg) {
  let raw = arg ?? process.env.GATEHOUSE_BROWSER_CONFIG ?? '{}';
  if (raw.startsWith('@')) raw = readFileSync(raw.slice(1), 'utf8');
  const cfg = JSON.parse(raw);
  return {
    baseUrl: (cfg.baseUrl || 'https://localhost:8443').replace(/\/$/, ''),
    linkCode: cfg.linkCode || null,
    screenshotDir: cfg.screenshotDir || null,
    requireMedia: Boolean(cfg.requireMedia),
    timeoutMs: cfg.timeoutMs || 15000,
    mediaTimeoutMs: cfg.mediaTimeoutMs || (cfg.requireMedia ? 20000 : 5000),
    firefoxPath: cfg.firefoxPath || process.env.FIREFOX_PATH || '/usr/bin/firefox-esr',
    guestName: cfg.guestName || 'Maria Jansen',
    headed: Boolean(cfg.headed),
  };
}

// ------------------------------------------------------------ page helpers

class Run {
  constructor(cfg, name) {
    this.cfg = cfg;
    this.name = name;
    this.facts = {};
    this.screenshots = [];
    this.pageErrors = [];
    this.contexts = [];
    this.at = null;
  }

  /** Names what the scenario waits for next, so a timeout says where it stopped. */
  step(what) {
    this.at = what;
  }

  async context(label) {
    const ctx = await this.browser.createBrowserContext();
    const page = await ctx.newPage();
    page.setDefaultTimeout(this.cfg.timeoutMs);
    await page.setViewport({ width: 1280, height: 800 });
    page.on('pageerror', (e) => this.pageErrors.push(`${label}: ${e?.message || e}`));
    page.on('console', (m) => {
      if (m.type() === 'error') process.stderr.write(`[${this.name}/${label} console] ${m.text()}\n`);
    });
    this.contexts.push(ctx);
    return page;
  }

  async shot(page, file) {
    if (!this.cfg.screenshotDir) return;
    mkdirSync(this.cfg.screenshotDir, { recursive: true });
    const p = path.join(this.cfg.screenshotDir, file);
    await page.screenshot({ path: p });
    this.screenshots.push(p);
  }

  async close() {
    for (const ctx of this.contexts) await ctx.close().catch(() => {});
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

/** Media is reported always; it fails the scenario only with requireMedia. */
function judgeMedia(run, key, facts) {
  run.facts[key] = facts;
  if (run.cfg.requireMedia && !facts.flowing) throw new Error(`${key}: media did not flow`);
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

async function main() {
  const [which, arg] = process.argv.slice(2);
  if (!which || which === '--help') {
    process.stderr.write(`usage: node firefox.mjs <${Object.keys(SCENARIOS).join('|')}>[,...] [json|@file]\n`);
    process.exit(2);
  }
  const cfg = readConfig(arg);
  const names = which === 'all' ? Object.keys(SCENARIOS).filter((n) => n !== 'guest-meets-sdk') : which.split(',');
  const unknown = names.filter((n) => !SCENARIOS[n]);
  if (unknown.length || !names.length) {
    process.stderr.write(`unknown scenario(s): ${unknown.join(', ') || which}\n`);
    process.exit(2);
  }
  let allOk = true;
  for (const name of names) {
    const run = new Run(cfg, name);
    const started = Date.now();
    // A fresh browser and a fresh profile per scenario.
    const profileDir = mkdtempSync(path.join(tmpdir(), 'gatehouse-firefox-'));
    let error = null;
    try {
      run.step('launching Firefox');
      run.browser = await puppeteer.launch({
        browser: 'firefox',
        protocol: 'webDriverBiDi',
        executablePath: cfg.firefoxPath,
        headless: !cfg.headed,
        userDataDir: profileDir,
        acceptInsecureCerts: true, // the gateway's self-signed dev certificate
        extraPrefsFirefox: FIREFOX_PREFS,
        env: { ...process.env, HOME: profileDir, MOZ_CRASHREPORTER_DISABLE: '1' },
        timeout: 60000,
      });
      run.facts.browser = await run.browser.version();
      run.step(null);
      await SCENARIOS[name](run);
      if (run.pageErrors.length) throw new Error(`uncaught page errors: ${run.pageErrors.join(' | ')}`);
    } catch (e) {
      error = `${run.at ? `${run.at}: ` : ''}${String(e?.message || e).split('\n')[0]}`;
    } finally {
      await run.close();
      await run.browser?.close().catch(() => {});
      rmSync(profileDir, { recursive: true, force: true });
    }
    const ok = error === null;
    allOk &&= ok;
    const line = {
      scenario: name,
      ok,
      error,
      requireMedia: cfg.requireMedia,
      facts: run.facts,
      screenshots: run.screenshots,
      pageErrors: run.pageErrors,
      durationMs: Date.now() - started,
    };
    process.stdout.write(`${JSON.stringify(line)}\n`);
  }
  process.exit(allOk ? 0 : 1);
}

main().catch((e) => {
  process.stderr.write(`${e?.stack || e}\n`);
  process.exit(2);
});
