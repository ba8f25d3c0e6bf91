#!/usr/bin/env node
// A stand-in for the Rust SDK side of guest-meets-sdk, for trying firefox.mjs by hand:
// a staff member in Chromium (playwright-core, fake camera and microphone) joins the
// meeting from the console, waits for a guest, measures the guest's media arriving,
// says "measured ..." in the chat, and waits for the guest to leave.
//
//   node tests/browser/staff-peer.mjs '{"baseUrl","staffToken","meetingId","waitGuestMs","mediaTimeoutMs"}'
//
// Prints one JSON line {"ok","error","facts","durationMs"}; exit 0 iff ok.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { mediaReport, mediaRisingPredicate } from './media-probe.mjs';

const cfg = JSON.parse(process.argv[2] || process.env.GATEHOUSE_BROWSER_CONFIG || '{}');
const baseUrl = (cfg.baseUrl || 'https://localhost:8443').replace(/\/$/, '');
const facts = {};
const started = Date.now();
let at = 'launching Chromium';
let error = null;
const home = mkdtempSync(path.join(tmpdir(), 'gatehouse-chromium-'));
const browser = await chromium.launch({
  executablePath: cfg.chromiumPath || process.env.CHROMIUM_PATH || '/usr/bin/chromium',
  headless: true,
  args: [
    '--no-sandbox', '--headless=new', '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
    '--allow-loopback-in-peer-connection', '--disable-features=WebRtcHideLocalIpsWithMdns',
    '--autoplay-policy=no-user-gesture-required', '--ignore-certificate-errors',
  ],
  env: { ...process.env, HOME: home },
});
try {
  const ctx = await browser.newContext({ ignoreHTTPSErrors: true, permissions: ['camera', 'microphone'] });
  ctx.setDefaultTimeout(cfg.timeoutMs || 15000);
  const page = await ctx.newPage();
  at = 'staff signs in and joins';
  await page.goto(`${baseUrl}/console`);
  await page.getByTestId('token-input').fill(cfg.staffToken);
  await page.getByTestId('sign-in-button').click();
  await page.locator('[data-testid="dashboard-view"]:visible').waitFor();
  await page.locator(`[data-testid="meeting-row"][data-meeting-id="${cfg.meetingId}"] [data-testid="join-meeting-button"]`).click();
  await page.locator('[data-testid="call-view"]:visible').waitFor();
  process.stderr.write('staff-peer: in the call, waiting for a guest\n');
  at = 'a guest arrives (admitting from the lobby if needed)';
  const guestTile = page.locator('[data-testid="remote-tile"][data-source="camera"]');
  const admit = page.locator('[data-testid="admit-button"]');
  await Promise.race([
    guestTile.first().waitFor({ timeout: cfg.waitGuestMs || 120000 }),
    admit.first().waitFor({ timeout: cfg.waitGuestMs || 120000 }).then(() => admit.first().click()).then(() => guestTile.first().waitFor()),
  ]);
  facts.guestParticipantId = await guestTile.first().getAttribute('data-participant-id');
  at = "the guest's media reaches staff";
  const first = await page.evaluate(() => window.gatehouse.stats());
  const flowing = await page
    .waitForFunction(mediaRisingPredicate, { first, wantVideo: true, wantAudio: true, source: 'camera', videoKey: 'framesDecoded' },
      { timeout: cfg.mediaTimeoutMs || 20000, polling: 500 })
    .then(() => true)
    .catch(() => false);
  facts.staffMedia = mediaReport(flowing, first, await page.evaluate(() => window.gatehouse.stats()));
  await page.getByTestId('chat-input').fill(`measured: staff media from the guest ${flowing ? 'flows' : 'did not flow'}`);
  await page.getByTestId('chat-send').click();
  at = 'the guest leaves';
  await page.locator(`[data-testid="remote-tile"][data-participant-id="${facts.guestParticipantId}"]`).waitFor({ state: 'detached', timeout: 60000 });
  facts.guestLeft = true;
  await page.locator('[data-testid="leave-button"]:visible').click();
  if (!flowing) throw new Error('media from the guest did not flow');
} catch (e) {
  error = `${at}: ${String(e?.message || e).split('\n')[0]}`;
} finally {
  await browser.close().catch(() => {});
  rmSync(home, { recursive: true, force: true });
}
process.stdout.write(`${JSON.stringify({ ok: error === null, error, facts, durationMs: Date.now() - started })}\n`);
process.exit(error === null ? 0 : 1);
