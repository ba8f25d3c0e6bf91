// What every browser script shares, whatever drives the browser (playwright-core
// for Chromium in scenarios.mjs, puppeteer-core over WebDriver BiDi for Firefox in
// firefox.mjs): the config, a scenario's bookkeeping, and the CLI loop that runs
// scenarios and prints one JSON line each.

import { mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';

/** The config both scripts understand; `extra` maps the script's own keys. */
export function readConfig(arg, extra = (cfg) => ({})) {
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
    guestName: cfg.guestName || 'Maria Jansen',
    headed: Boolean(cfg.headed),
    holdMs: cfg.holdMs ?? 120000,
    ...extra(cfg),
  };
}

/** One scenario's run: facts, screenshots, page errors and where it is. Scripts add `context(label)`. */
export class RunBase {
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

  /**
   * Tells the calling test how far the scenario got, as it happens: one JSON line
   * `{"progress": what, "scenario": name, ...}` on stdout. A test that plays the other
   * side (the SDK) starts its own clocks from these (e.g. `join-sent`), never from the
   * moment it started Node, so a slow browser start cannot eat its waits.
   */
  progress(what, extra = {}) {
    process.stdout.write(`${JSON.stringify({ progress: what, scenario: this.name, ...extra })}\n`);
  }

  /** Collects uncaught page errors and Content-Security-Policy violations (a scenario fails
   * on either), and echoes console errors to stderr. */
  watch(page, label) {
    page.on('pageerror', (e) => {
      this.pageErrors.push(`${label}: ${e?.message || e}`);
      process.stderr.write(`[${this.name}/${label} page error] ${e?.stack || e}\n`);
    });
    page.on('console', (m) => {
      if (m.type() !== 'error') return;
      process.stderr.write(`[${this.name}/${label} console] ${m.text()}\n`);
      // The gateway's policy allows only its own scripts, styles and connections: anything
      // the page does that it blocks is a defect of the page or of the policy.
      if (/Content[- ]Security[- ]Policy/i.test(m.text())) this.pageErrors.push(`${label}: ${m.text()}`);
    });
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

/**
 * What the calling test tells the script on its stdin, one JSON object a line
 * (`BrowserScript::tell` in tests/browser.rs), e.g. `{"told": "restored", "at": <ms>}` when
 * the network it cut is back. Resolves with the first line whose `told` is `what`.
 */
export function toldByTest(what, timeoutMs) {
  if (!toldByTest.lines) {
    toldByTest.lines = [];
    toldByTest.waiters = new Set();
    let buffered = '';
    process.stdin.setEncoding('utf8');
    process.stdin.on('data', (chunk) => {
      buffered += chunk;
      let nl;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        try {
          toldByTest.lines.push(JSON.parse(line));
        } catch {
          continue;
        }
        for (const w of toldByTest.waiters) w();
      }
    });
  }
  return new Promise((resolve, reject) => {
    const check = () => {
      const found = toldByTest.lines.find((l) => l.told === what);
      if (!found) return;
      toldByTest.waiters.delete(check);
      clearTimeout(timer);
      resolve(found);
    };
    const timer = setTimeout(() => {
      toldByTest.waiters.delete(check);
      reject(new Error(`the test did not say "${what}" within ${timeoutMs} ms`));
    }, timeoutMs);
    toldByTest.waiters.add(check);
    check();
  });
}

/** Media is reported always; it fails the scenario only with requireMedia. */
export function judgeMedia(run, key, facts) {
  run.facts[key] = facts;
  if (run.cfg.requireMedia && !facts.flowing) throw new Error(`${key}: media did not flow`);
}

/**
 * A scenario every script has: open the gateway's start page and stay there until the
 * process is ended (at most `holdMs`, default 120 s). The suite uses it to prove that a
 * test which fails while a browser runs leaves no browser process behind.
 */
async function hold(run) {
  const page = await run.context('hold');
  await page.goto(run.cfg.baseUrl);
  run.progress('holding');
  await new Promise((resolve) => setTimeout(resolve, run.cfg.holdMs));
}

/** Scenarios that need a partner or exist for the suite's own checks: not part of `all`. */
const NOT_IN_ALL = new Set(['guest-meets-sdk', 'hold']);

/**
 * The CLI: `node <script> <scenario>[,...|all] [json|@file]`. For each scenario a
 * fresh browser from `launch(run)`, the scenario, `teardown()`; one JSON line on
 * stdout each (and `progress` lines while it runs, see `RunBase.progress`); exit 0
 * when all are ok, 1 otherwise, 2 for a usage error. `all` is every self-contained
 * scenario: guest-meets-sdk needs an SDK peer, hold never ends by itself.
 */
export async function runCli({ script, scenarios: own, makeRun, readCfg, launch, teardown = () => {} }) {
  const scenarios = { ...own, hold };
  const [which, arg] = process.argv.slice(2);
  if (!which || which === '--help') {
    process.stderr.write(`usage: node ${script} <${Object.keys(scenarios).join('|')}|all>[,...] [json|@file]\n`);
    process.exit(2);
  }
  const cfg = readCfg(arg);
  const names = which === 'all' ? Object.keys(scenarios).filter((n) => !NOT_IN_ALL.has(n)) : which.split(',');
  const unknown = names.filter((n) => !scenarios[n]);
  if (unknown.length || !names.length) {
    process.stderr.write(`unknown scenario(s): ${unknown.join(', ') || which}\n`);
    process.exit(2);
  }
  let allOk = true;
  for (const name of names) {
    const run = makeRun(cfg, name);
    const started = Date.now();
    let error = null;
    try {
      run.browser = await launch(run);
      run.progress('browser-launched');
      run.step(null);
      await scenarios[name](run);
      if (run.pageErrors.length) throw new Error(`uncaught page errors: ${run.pageErrors.join(' | ')}`);
    } catch (e) {
      error = `${run.at ? `${run.at}: ` : ''}${String(e?.message || e).split('\n')[0]}`;
    } finally {
      await run.close();
      await run.browser?.close().catch(() => {});
      await run.cleanup?.();
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
  await teardown();
  process.exit(allOk ? 0 : 1);
}
