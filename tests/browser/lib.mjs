// Shared fixtures for the dashboard tests: a throwaway threatfeed stack (via
// stack_server.py), a fresh headless Debian Chromium (via playwright-core),
// bounded polling helpers and a test wrapper that labels steps, saves a
// screenshot whatever happens and always cleans up.
//
// Every test gets its own stack (upstream + lighttpd + handler + workers, a
// fresh store) and its own browser with a fresh profile, so tests can run in
// any order, alone (--test-name-pattern) or together.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const REPO = path.resolve(HERE, '..', '..');
export const SCREENSHOT_DIR = path.join(REPO, 'build', 'screenshots');
export const COLLECTION = '91a7b528-80eb-42ed-a74d-c6fbd5a26116';
export const TERMINAL = new Set(['completed', 'failed', 'stopped', 'cancelled']);

// Generous: the stack runs ASan builds and the machine may be busy. Tests
// never assert speed, they only bound their waits.
export const UI_TIMEOUT = 30_000;     // the page reflecting something (polls every 1-5 s)
export const RUN_TIMEOUT = 90_000;    // a run reaching a terminal state

const CHROMIUM = process.env.TF_CHROMIUM || '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** `promise`, or 'timeout' after `ms` (the timer never keeps node alive). */
function within(promise, ms) {
  let timer;
  const t = new Promise((r) => { timer = setTimeout(() => r('timeout'), ms); });
  return Promise.race([promise, t]).finally(() => clearTimeout(timer));
}

/* ------------------------------------------------------------------------ */
/* Stack                                                                     */
/* ------------------------------------------------------------------------ */

const liveStacks = new Set();
const liveProfiles = new Set();
// Last resort: the test process exits with a stack still up (a bug in a test,
// or an uncaught error). Closing stdin is enough for stack_server.py; the
// SIGTERM covers a launcher that is stuck.
process.on('exit', () => {
  for (const s of liveStacks) {
    try { s.child.stdin.destroy(); } catch (_) { /* gone */ }
    try { s.child.kill('SIGTERM'); } catch (_) { /* gone */ }
  }
  for (const dir of liveProfiles) {
    try { fs.rmSync(dir, { recursive: true, force: true }); } catch (_) { /* best effort */ }
  }
});

// `node --test` runs this file in a child process. If the runner dies (e.g.
// `timeout` sent it SIGTERM) the child is orphaned and would go on with its
// stacks and browsers: notice the new parent and exit. Exiting closes every
// pipe, which is what stops stack_server.py (stdin EOF) and Chromium (its
// DevTools pipe); the 'exit' handler above also sends SIGTERM.
const PARENT = process.ppid;
setInterval(() => {
  if (process.ppid !== PARENT) {
    process.stderr.write('browser tests: the test runner is gone; stopping\n');
    process.exit(1);
  }
}, 500).unref();

export class Stack {
  constructor(child, info, log) {
    this.child = child;
    this.info = info;
    this.log = log;                 // stderr of the launcher (stack notes, tracebacks)
    this.baseUrl = info.base_url;   // "http://127.0.0.1:PORT/"
    this.upstreamUrl = info.upstream_url;
    this.upstreamPort = info.upstream_port;
    this.exited = new Promise((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) resolve(child.exitCode);
      else child.once('exit', (code, sig) => resolve(code === null ? sig : code));
    });
  }

  url(p) { return new URL(String(p).replace(/^\/+/, ''), this.baseUrl).toString(); }

  /** One API call from node (not through the browser). Returns {status, data}. */
  async api(method, p, body, { timeoutMs = 20_000 } = {}) {
    const headers = { Accept: 'application/json' };
    let payload;
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      payload = JSON.stringify(body);
    }
    const res = await fetch(this.url(p), {
      method, headers, body: payload, signal: AbortSignal.timeout(timeoutMs),
    });
    const text = await res.text();
    let data = text;
    try { data = text ? JSON.parse(text) : null; } catch (_) { /* keep the text */ }
    return { status: res.status, data };
  }

  /** API call that must answer `expect` (a status or a list of them). */
  async apiOk(method, p, body, expect = [200, 201, 202, 204]) {
    const want = Array.isArray(expect) ? expect : [expect];
    const r = await this.api(method, p, body);
    if (!want.includes(r.status)) {
      throw new Error(`${method} ${p} answered ${r.status} (wanted ${want.join('/')}): ${JSON.stringify(r.data)}`);
    }
    return r.data;
  }

  /** Feed JSON for the upstream's TAXII 2.1 collection; `fields` override. */
  demoFeed(id, fields = {}) {
    return {
      id, name: 'Demo TAXII 2.1', type: 'taxii21', url: this.upstreamUrl,
      collection: COLLECTION, interval_s: 0, enabled: true, options: { page_size: 100 },
      ...fields,
    };
  }

  createFeed(id, fields = {}) {
    return this.apiOk('POST', '/api/threat-feeds/', this.demoFeed(id, fields), 201);
  }

  feed(id) { return this.apiOk('GET', `/api/threat-feeds/${id}/`, undefined, 200); }
  task(id) { return this.apiOk('GET', `/api/threat-feeds/task-status/${id}/`, undefined, 200); }

  /** Poll task-status until `pred(task)` holds; returns the task. */
  async waitTask(id, pred = (t) => TERMINAL.has(t.status), { timeout = RUN_TIMEOUT, what } = {}) {
    return waitUntil(async () => {
      const t = await this.task(id);
      return pred(t) ? t : null;
    }, { timeout, what: what || `task ${id} to reach the expected state`, last: () => this.task(id) });
  }

  /** Cancel whatever runs on the store (cleanup after a failure). */
  async cancelAllActive() {
    try {
      const { data } = await this.api('GET', '/api/threat-feeds/tasks/?active=1');
      for (const t of (data && data.tasks) || []) {
        await this.api('POST', `/api/threat-feeds/cancel-task/${t.task_id}/`, { mode: 'stop_now' });
      }
    } catch (_) { /* the stack is going away anyway */ }
  }

  /** POST (or `method`) JSON to the upstream's control API /_ctl/PATH. */
  async upstreamCtl(p, body = {}, method = 'POST') {
    const url = `http://127.0.0.1:${this.upstreamPort}/_ctl/${p.replace(/^\/+/, '')}`;
    const init = { method, signal: AbortSignal.timeout(10_000) };
    if (method !== 'GET') {
      init.headers = { 'Content-Type': 'application/json' };
      init.body = JSON.stringify(body);
    }
    const res = await fetch(url, init);
    const text = await res.text();
    if (!res.ok) throw new Error(`upstream /_ctl/${p} answered ${res.status}: ${text}`);
    return text ? JSON.parse(text) : null;
  }

  /** Replace the upstream's fault configuration (see tests/upstream/upstream.py). */
  faults(cfg) { return this.upstreamCtl('faults', cfg); }

  /**
   * Stop everything (closing stdin makes stack_server.py stop the stack).
   * keep: keep the state dir (logs, store) for a post-mortem.
   */
  async stop({ keep = false } = {}) {
    if (!liveStacks.has(this)) return this.exited;
    liveStacks.delete(this);
    try { this.child.stdin.end(keep ? 'keep\n' : undefined); } catch (_) { /* already closed */ }
    const outcome = await within(this.exited, 45_000);
    if (outcome === 'timeout') {
      this.child.kill('SIGTERM');
      const again = await within(this.exited, 10_000);
      if (again === 'timeout') this.child.kill('SIGKILL');
      throw new Error('stack_server.py did not stop within 45 s of its stdin closing\n' + this.logTail());
    }
    if (outcome === 2) throw new Error('sanitizer reports in the stack logs:\n' + this.logTail());
    if (outcome !== 0) throw new Error(`stack_server.py exited with ${outcome}\n` + this.logTail());
    return outcome;
  }

  logTail(lines = 40) {
    return this.log.join('').split('\n').slice(-lines).join('\n');
  }

  /** The last lines of the stack's own logs (web server, handler, upstream, runs). */
  serverLogs(lines = 15) {
    const out = [];
    const dir = this.info.state_dir;
    const walk = (d, depth) => {
      let entries = [];
      try { entries = fs.readdirSync(d, { withFileTypes: true }); } catch (_) { return; }
      for (const e of entries) {
        const p = path.join(d, e.name);
        if (e.isDirectory() && depth < 2 && e.name !== 'db') walk(p, depth + 1);
        else if (e.isFile() && /\.(log|out|err)$/.test(e.name)) {
          let text = '';
          try { text = fs.readFileSync(p, 'utf8'); } catch (_) { continue; }
          const tail = text.trimEnd().split('\n').slice(-lines).join('\n');
          if (tail) out.push(`==> ${path.relative(dir, p)} <==\n${tail}`);
        }
      }
    };
    if (dir) walk(dir, 0);
    return out.join('\n');
  }
}

/**
 * Start a stack. `upstream`: arguments for tests/upstream/upstream.py;
 * `conf`: THREATFEED_CONF settings.
 */
export async function startStack({ upstream = [], conf = {}, timeoutMs = 60_000 } = {}) {
  const args = [path.join(HERE, 'stack_server.py')];
  for (const [k, v] of Object.entries(conf)) args.push('--conf', `${k}=${v}`);
  args.push('--', ...upstream.map(String));
  const env = { ...process.env, TF_STACK_QUIET: process.env.TF_STACK_QUIET || '1' };
  const child = spawn('python3', args, { cwd: REPO, env, stdio: ['pipe', 'pipe', 'pipe'] });
  const log = [];
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d) => { log.push(d); if (log.length > 2000) log.splice(0, 1000); });
  child.stdin.on('error', () => { /* EPIPE when it died first */ });

  const line = await new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => {
      child.kill('SIGTERM');
      reject(new Error(`the stack did not start within ${timeoutMs / 1000} s\n${log.join('')}`));
    }, timeoutMs);
    const onData = (d) => {
      buf += d;
      const i = buf.indexOf('\n');
      if (i >= 0) {
        clearTimeout(timer);
        child.stdout.off('data', onData);
        child.stdout.resume(); // drain anything else
        resolve(buf.slice(0, i));
      }
    };
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`stack_server.py exited with ${code} before it was ready\n${buf}\n${log.join('')}`));
    });
    child.once('error', (e) => { clearTimeout(timer); reject(e); });
  });
  let info;
  try { info = JSON.parse(line); } catch (e) {
    child.kill('SIGTERM');
    throw new Error(`stack_server.py printed something that is not JSON: ${line}\n${log.join('')}`);
  }
  if (info.error) {
    throw new Error(`the stack could not start: ${info.error}`);
  }
  const stack = new Stack(child, info, log);
  liveStacks.add(stack);
  return stack;
}

/* ------------------------------------------------------------------------ */
/* Browser                                                                   */
/* ------------------------------------------------------------------------ */

/**
 * A fresh headless Chromium with a fresh profile. Returns
 * {context, page, problems, close()}; `problems` collects uncaught page
 * errors and console errors (the dashboard must show errors to the user and
 * must not throw).
 */
export async function launchBrowser({ viewport = { width: 1280, height: 800 } } = {}) {
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'threatfeed-chromium-'));
  liveProfiles.add(userDataDir);
  let context;
  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_ARGS,
      viewport,
      // Stable screenshots and dates.
      locale: 'en-US',
      timezoneId: 'UTC',
      colorScheme: 'light',
      reducedMotion: 'reduce',
      timeout: 60_000,
    });
  } catch (e) {
    fs.rmSync(userDataDir, { recursive: true, force: true });
    liveProfiles.delete(userDataDir);
    throw e;
  }
  context.setDefaultTimeout(UI_TIMEOUT);
  const page = context.pages()[0] || await context.newPage();
  const problems = { pageErrors: [], consoleErrors: [] };
  page.on('pageerror', (e) => problems.pageErrors.push(String(e && e.stack || e)));
  page.on('console', (m) => {
    if (m.type() === 'error') problems.consoleErrors.push(m.text());
  });
  return {
    context, page, problems, userDataDir,
    async close() {
      try { await within(context.close(), 20_000); } finally {
        fs.rmSync(userDataDir, { recursive: true, force: true });
        liveProfiles.delete(userDataDir);
      }
    },
  };
}

/* ------------------------------------------------------------------------ */
/* Waiting                                                                   */
/* ------------------------------------------------------------------------ */

/**
 * Poll `fn` (sync or async) until it returns a truthy value, which is
 * returned. Errors thrown by `fn` count as "not yet" (the last one is
 * reported). On timeout throws "timed out after N s waiting for WHAT
 * (last: ...)".
 */
export async function waitUntil(fn, { timeout = UI_TIMEOUT, interval = 100, what = 'condition', last } = {}) {
  const deadline = Date.now() + timeout;
  let lastErr = null;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
      lastErr = null;
    } catch (e) {
      lastErr = e;
    }
    if (Date.now() > deadline) {
      let detail = lastErr ? `last error: ${lastErr.message}` : '';
      if (last) {
        try { detail += (detail ? '; ' : '') + 'last: ' + JSON.stringify(await last()); } catch (_) { /* no detail */ }
      }
      throw new Error(`timed out after ${timeout / 1000} s waiting for ${what}${detail ? ` (${detail})` : ''}`);
    }
    await sleep(interval);
  }
}

/** Wait until the locator's text matches `re`; returns the match. */
export async function waitText(locator, re, { timeout = UI_TIMEOUT, what } = {}) {
  let text = null;
  return waitUntil(async () => {
    text = await locator.textContent({ timeout: 1000 });
    const m = text != null && text.match(re);
    return m || null;
  }, { timeout, what: what || `text matching ${re}`, last: () => text });
}

/** Text of the element, trimmed (null when it does not exist). */
export async function textOf(locator) {
  if (await locator.count() === 0) return null;
  const t = await locator.first().textContent({ timeout: 5000 });
  return t == null ? null : t.trim();
}

/** A promise with its resolve function, for holding intercepted requests. */
export function deferred() {
  let resolve;
  const promise = new Promise((r) => { resolve = r; });
  return { promise, resolve };
}

/* ------------------------------------------------------------------------ */
/* Dashboard locators                                                        */
/* ------------------------------------------------------------------------ */

export function dash(page) {
  const byId = (id) => page.locator(`[data-testid="${id}"]`);
  return {
    feedRow: (id) => byId(`feed-row-${id}`),
    feedBtn: (id, action) => byId(`feed-row-${id}`).locator(`button[data-action="${action}"]`),
    feedCell: (id, cell) => byId(`feed-row-${id}`).locator(`[data-testid="${cell}"]`),
    activeSection: page.locator('#active-tasks'),
    taskRows: page.locator('#active-tasks [data-testid^="task-row-"]'),
    taskRow: (id) => byId(`task-row-${id}`),
    taskBtn: (id, action) => byId(`task-row-${id}`).locator(`button[data-action="${action}"]`),
    taskCell: (id, cell) => byId(`task-row-${id}`).locator(`[data-testid="${cell}"]`),
    recentRow: (id) => byId(`recent-row-${id}`),
    recentCell: (id, cell) => byId(`recent-row-${id}`).locator(`[data-testid="${cell}"]`),
    alerts: byId('alerts'),
    offline: byId('offline-banner'),
    live: byId('live'),
    health: byId('health'),
    form: byId('add-feed-form'),
    formError: byId('form-error'),
    submit: byId('add-feed-submit'),
  };
}

/** Open the dashboard and wait until the feeds table has loaded. */
export async function openDashboard(page, stack, { feedId } = {}) {
  await page.goto(stack.baseUrl, { waitUntil: 'domcontentloaded' });
  const d = dash(page);
  if (feedId) await d.feedRow(feedId).waitFor({ state: 'visible' });
  else await waitText(page.locator('[data-testid="feeds-empty"]'), /No feeds yet|./, { what: 'the feeds table' });
  await waitText(d.health, /API: ok/, { what: 'the health pill to say "API: ok"' });
  return d;
}

/**
 * Click Consume for `feedId` and wait for the run's row in the task monitor;
 * returns the task id (read from the row's task-id cell).
 */
export async function consumeViaUi(page, feedId) {
  const d = dash(page);
  await d.feedBtn(feedId, 'consume').click();
  const row = d.taskRows.filter({ has: page.locator(`[data-testid="feed"][title="${feedId}"]`) }).first();
  await row.waitFor({ state: 'visible' });
  const taskId = (await row.locator('[data-testid="task-id"]').textContent()).trim();
  if (!/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/.test(taskId)) {
    throw new Error(`the task row shows "${taskId}", not a UUID v4 task id`);
  }
  return taskId;
}

/** pages_done as shown in the task row's "pages N/M · K objects" cell. */
export async function pagesShown(page, taskId) {
  const t = await textOf(dash(page).taskCell(taskId, 'pages'));
  const m = t && t.match(/pages\s+(\d+)\//);
  return m ? Number(m[1]) : null;
}

/** Disabled state and label of a button. */
export async function btnState(locator) {
  return locator.evaluate((b) => ({ disabled: b.disabled, text: b.textContent.trim() }));
}

/* ------------------------------------------------------------------------ */
/* Test wrapper                                                              */
/* ------------------------------------------------------------------------ */

/**
 * test(name) with a fresh stack and browser. `fn({t, stack, page, d, step,
 * problems})`; `step(label, async () => ...)` labels what failed. A
 * screenshot is saved to build/screenshots/SHOT.png in every case, then the
 * browser and the stack are stopped. Uncaught page errors fail the test.
 */
export function dashTest(name, { shot, stack: stackOpts = {}, timeout = 150_000, allowConsoleErrors = false } = {}, fn) {
  test(name, { timeout }, async (t) => {
    let current = 'start the stack';
    const step = async (label, body) => {
      current = label;
      t.diagnostic(`step: ${label}`);
      try {
        return await body();
      } catch (e) {
        labelError(e, label);
        throw e;
      }
    };
    let stack = null;
    let browser = null;
    let failure = null;
    try {
      stack = await startStack(stackOpts);
      current = 'launch Chromium';
      browser = await launchBrowser();
      await fn({ t, stack, page: browser.page, d: dash(browser.page), step, problems: browser.problems });
      current = 'check the page for uncaught errors';
      if (browser.problems.pageErrors.length) {
        throw new Error('[step "no uncaught errors in the page"] ' + browser.problems.pageErrors.join('\n'));
      }
      const consoleErrors = browser.problems.consoleErrors.filter((m) => !/^Failed to load resource/.test(m));
      if (consoleErrors.length && !allowConsoleErrors) {
        throw new Error('[step "no console errors"] ' + consoleErrors.join('\n'));
      }
    } catch (e) {
      failure = e;
      t.diagnostic(`FAILED at step: ${current}`);
      labelError(e, current);
      throw e;
    } finally {
      if (browser) {
        const file = path.join(SCREENSHOT_DIR, `${shot || slug(name)}.png`);
        try {
          fs.mkdirSync(SCREENSHOT_DIR, { recursive: true });
          await browser.page.screenshot({ path: file, fullPage: true, timeout: 15_000 });
          t.diagnostic(`screenshot: ${path.relative(REPO, file)}`);
        } catch (e) {
          t.diagnostic(`screenshot failed: ${e.message}`);
        }
        if (failure) {
          for (const m of browser.problems.pageErrors) t.diagnostic(`page error: ${m}`);
          for (const m of browser.problems.consoleErrors.slice(-10)) t.diagnostic(`console: ${m}`);
          try {
            const alerts = await browser.page.locator('[data-testid="alert"]').allTextContents();
            for (const a of alerts) t.diagnostic(`alert shown: ${a.trim()}`);
          } catch (_) { /* page gone */ }
        }
        await browser.close().catch((e) => t.diagnostic(`closing Chromium: ${e.message}`));
      }
      if (stack) {
        if (failure) {
          t.diagnostic(`stack logs (state dir ${stack.info.state_dir}, kept):\n${stack.serverLogs(15)}`);
          const launcher = stack.logTail(20).trim();
          if (launcher) t.diagnostic(`stack_server.py:\n${launcher}`);
          await stack.cancelAllActive();
        }
        try {
          await stack.stop({ keep: !!failure });
        } catch (e) {
          if (!failure) throw e; // sanitizer reports or a stuck launcher fail the test
          t.diagnostic(`stopping the stack: ${e.message}`);
        }
      }
    }
  });
}

/** Prefix the error's message (and the first line of its stack) with the step. */
function labelError(e, label) {
  if (!e || typeof e.message !== 'string' || e.message.startsWith('[step ')) return;
  const old = e.message;
  const stack = e.stack; // read first: V8 formats it lazily, from the current message
  e.message = `[step "${label}"] ${old}`;
  if (typeof stack === 'string') {
    e.stack = old && stack.includes(old) ? stack.replace(old, e.message) : `[step "${label}"] ${stack}`;
  }
}

function slug(s) {
  return s.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '').slice(0, 60);
}

/* ------------------------------------------------------------------------ */
/* Upstream scenarios                                                        */
/* ------------------------------------------------------------------------ */

/**
 * Make the next run last as long as the test needs: the upstream's page
 * counter restarts, pages 0..stallAt-1 come every `delayMs`, and page
 * `stallAt` sends nothing for 10 minutes (a stop/cancel ends the transfer).
 */
export async function armStall(stack, { stallAt = 3, delayMs = 300 } = {}) {
  await stack.upstreamCtl('reset');
  await stack.faults({ page_delay_ms: delayMs, stall: { page: stallAt, after_bytes: -1, seconds: 600 } });
}

/** Wait until the task row shows at least `min` pages done; returns that number. */
export async function waitPages(page, taskId, min, opts = {}) {
  let last = null;
  return waitUntil(async () => {
    last = await pagesShown(page, taskId);
    return last != null && last >= min ? last : null;
  }, { timeout: RUN_TIMEOUT, what: `task row ${taskId} to show at least ${min} pages done`, last: () => last, ...opts });
}

/** Wait for the recent-tasks row of `taskId` to show an outcome matching `re`. */
export function waitOutcome(page, taskId, re, opts = {}) {
  return waitText(dash(page).recentCell(taskId, 'outcome'), re,
    { timeout: RUN_TIMEOUT, what: `recent-row-${taskId} outcome ${re}`, ...opts });
}

/** Snapshot (one evaluate, so one instant) of a feed's and a task's stop/cancel buttons. */
export function cancelButtons(page, feedId, taskId) {
  return page.evaluate(([f, t]) => {
    const get = (row, action) => {
      const b = document.querySelector(`[data-testid="${row}"] button[data-action="${action}"]`);
      return b ? { disabled: b.disabled, text: b.textContent.trim() } : null;
    };
    return {
      feedStop: get('feed-row-' + f, 'stop'),
      feedCancel: get('feed-row-' + f, 'cancel'),
      taskStop: get('task-row-' + t, 'stop'),
      taskCancel: get('task-row-' + t, 'cancel'),
    };
  }, [feedId, taskId]);
}

/** Is this request a cancel (feed-level or task-level)? */
export function isCancelRequest(req) {
  return req.method() === 'POST' && /\/api\/threat-feeds\/(?:[^/]+\/cancel_consumption|cancel-task\/[^/]+)\/?(?:\?|$)/.test(req.url());
}
