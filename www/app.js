/*
 * threatfeed dashboard — plain ES2020, no framework, no build step.
 *
 * Layout of this file:
 *   1. constants and small helpers (formatting, DOM)
 *   2. API client (token, timeouts, ETag cache, error types)
 *   3. state and derived views (task merging, outcomes, cancel lock)
 *   4. user-facing messages (alerts, live region, offline banner)
 *   5. rendering (header, feeds, active tasks, recent tasks) by keyed diffing
 *   6. actions (consume, stop/cancel, test, remove, copy, add feed, token)
 *   7. poll loop
 *   8. boot, and what the indicator views in explore.js share (window.threatfeed)
 *
 * Every piece of server text goes through textContent or setAttribute, never
 * innerHTML: feed names, messages and errors come from upstream feeds.
 *
 * It is a classic (non-module) script on purpose: module scripts are refused
 * when a web server sends .js with a generic MIME type, classic ones are not.
 */
(function () {
  'use strict';

  /* ===================================================================== */
  /* 1. Constants and helpers                                              */
  /* ===================================================================== */

  const ACTIVE = new Set(['queued', 'running', 'stopping', 'cancelling']);
  const TERMINAL = new Set(['completed', 'failed', 'stopped', 'cancelled']);

  const POLL_ACTIVE_MS = 1000;   // something is running: the user is watching it
  const POLL_IDLE_MS = 5000;
  const POLL_HIDDEN_MS = 15000;  // tab in the background: keep the server quiet
  const POLL_AGAIN_MS = 100;     // follow-up round right after a user action
  const REQUEST_TIMEOUT_MS = 5000;
  // test_connection: the server gives up on the upstream after 10 s
  // (TF_TEST_CONNECTION_TIMEOUT_S in lib/tf_limits.h); wait longer than that.
  const TEST_CONNECTION_TIMEOUT_MS = 20000;
  const HEALTH_EVERY_MS = 5000;
  const MAX_ALERTS = 6;
  const MAX_STATUS_FETCHES = 5;  // per round; the task lists normally make these unnecessary
  const TOKEN_KEY = 'threatfeed.apiToken';

  const $ = (sel, root) => (root || document).querySelector(sel);

  /** Create an element. attrs: plain attributes, plus `text` and `class`. */
  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v == null || v === false) continue;
        if (k === 'text') node.textContent = String(v);
        else if (k === 'class') node.className = v;
        else node.setAttribute(k, v === true ? '' : String(v));
      }
    }
    if (children) for (const c of children) if (c) node.append(c);
    return node;
  }

  // The setters below only touch the DOM when the value changed, so that a
  // re-render every second does not disturb focus, selection or screen readers.
  function setText(node, value) {
    const s = value == null ? '' : String(value);
    if (node.textContent !== s) node.textContent = s;
  }
  function setAttr(node, name, value) {
    if (value == null || value === false) {
      if (node.hasAttribute(name)) node.removeAttribute(name);
      return;
    }
    const s = value === true ? '' : String(value);
    if (node.getAttribute(name) !== s) node.setAttribute(name, s);
  }
  function setHidden(node, hidden) {
    if (node.hidden !== hidden) node.hidden = hidden;
  }
  function setDisabled(btn, disabled) {
    if (btn.disabled !== disabled) btn.disabled = disabled;
  }

  function parseTime(s) {
    if (!s) return null;
    const t = Date.parse(s);
    return Number.isFinite(t) ? t : null;
  }

  function pad2(n) { return n < 10 ? '0' + n : String(n); }

  /** 4s, 1m 05s, 2h 03m, 3d 04h */
  function fmtDuration(ms) {
    if (ms == null || !Number.isFinite(ms)) return '—';
    let s = Math.max(0, Math.floor(ms / 1000));
    if (s < 60) return s + 's';
    let m = Math.floor(s / 60); s %= 60;
    if (m < 60) return m + 'm ' + pad2(s) + 's';
    let h = Math.floor(m / 60); m %= 60;
    if (h < 24) return h + 'h ' + pad2(m) + 'm';
    const d = Math.floor(h / 24); h %= 24;
    return d + 'd ' + pad2(h) + 'h';
  }

  function fmtRelative(t, now) {
    if (t == null) return '—';
    const diff = Math.round((now - t) / 1000);
    const a = Math.abs(diff);
    let txt;
    if (a < 5) return 'just now';
    if (a < 60) txt = a + ' s';
    else if (a < 3600) txt = Math.floor(a / 60) + ' min';
    else if (a < 86400) txt = Math.floor(a / 3600) + ' h';
    else txt = Math.floor(a / 86400) + ' d';
    return diff >= 0 ? txt + ' ago' : 'in ' + txt;
  }

  function fmtAbsolute(t) {
    if (t == null) return '';
    const d = new Date(t);
    return d.toLocaleString() + ' (' + d.toISOString().replace('.000Z', 'Z') + ')';
  }

  function shortId(id) {
    const s = String(id || '');
    return s.length > 8 ? s.slice(0, 8) + '…' : s;
  }

  function count(v) {
    return Number.isFinite(v) ? v : 0;
  }

  function enc(s) { return encodeURIComponent(String(s)); }

  /* ===================================================================== */
  /* 2. API client                                                         */
  /* ===================================================================== */

  /** The API answered with a non-2xx status and (normally) a JSON error body. */
  class ApiError extends Error {
    constructor(status, code, message, body) {
      super(message);
      this.status = status;
      this.code = code;
      this.body = body;
    }
  }

  /** No usable answer: connection refused, timeout, or a gateway error page. */
  class NetworkError extends Error {}

  // Resolved against the page so the dashboard also works below a sub-path.
  const apiMeta = document.querySelector('meta[name="threatfeed-api"]');
  const API_BASE = new URL((apiMeta && apiMeta.content) || 'api/', document.baseURI);

  function apiUrl(path) {
    return new URL(path.replace(/^\/+/, ''), API_BASE).toString();
  }

  // sessionStorage can throw (disabled storage, sandboxed frames); fall back
  // to memory so the dashboard still works for this page load.
  let memoryToken = '';
  function getToken() {
    try { return sessionStorage.getItem(TOKEN_KEY) || ''; } catch (_) { return memoryToken; }
  }
  function setToken(t) {
    memoryToken = t || '';
    try {
      if (t) sessionStorage.setItem(TOKEN_KEY, t); else sessionStorage.removeItem(TOKEN_KEY);
    } catch (_) { /* memory fallback already set */ }
  }

  // url -> {etag, body}. Task status and task lists send ETags; a 304 means
  // "same as the body you already have", so we keep the body per URL.
  const etagCache = new Map();

  /**
   * One API call. Resolves to {status, data, notModified}; rejects with
   * ApiError (the server said no) or NetworkError (no usable answer).
   * GETs are conditional (If-None-Match) when we hold an ETag for the URL.
   */
  async function request(method, path, opts) {
    opts = opts || {};
    const url = apiUrl(path);
    const headers = { Accept: 'application/json' };
    const token = getToken();
    if (token) headers.Authorization = 'Bearer ' + token;

    let body;
    if (method !== 'GET' && method !== 'HEAD') {
      // The server refuses writes that are not JSON, even when there is
      // nothing to say, so always send a JSON body.
      headers['Content-Type'] = 'application/json';
      body = JSON.stringify(opts.body === undefined ? {} : opts.body);
    }

    // raw: the body is text the caller keeps (an export), not JSON; it is
    // not cached (an export can be large).
    const cached = method === 'GET' && !opts.raw ? etagCache.get(url) : undefined;
    if (cached) headers['If-None-Match'] = cached.etag;

    const ctrl = new AbortController();
    const timeoutMs = opts.timeoutMs || REQUEST_TIMEOUT_MS;
    const timeoutText = `${Math.round(timeoutMs / 100) / 10} s`;   // "5 s", "20 s", "2.5 s"
    const timer = setTimeout(() => ctrl.abort(), timeoutMs);
    try {
      let res;
      try {
        // no-store: we do our own conditional requests; the HTTP cache must
        // neither answer for the server nor hide a 304 from us.
        // Keep the default mode ("cors"): with mode "same-origin" and the
        // server's Referrer-Policy: no-referrer, browsers send `Origin: null`
        // on writes, which the API's CSRF check refuses.
        res = await fetch(url, {
          method, headers, body,
          cache: 'no-store',
          credentials: 'same-origin',
          signal: ctrl.signal,
        });
      } catch (e) {
        throw new NetworkError(ctrl.signal.aborted ? `no answer within ${timeoutText}` : (e && e.message) || 'network error');
      }

      if (res.status === 304 && cached) {
        noteReachable(true);
        if (!opts.authExempt) noteAuthorized();
        return { status: 304, data: cached.body, notModified: true };
      }

      let text;
      try {
        text = await res.text();
      } catch (e) {
        throw new NetworkError(ctrl.signal.aborted ? `answer cut off after ${timeoutText}` : 'answer cut off');
      }
      if (opts.raw && res.ok) {
        noteReachable(true);
        if (!opts.authExempt) noteAuthorized();
        return { status: res.status, data: text, notModified: false, headers: res.headers };
      }
      let data = null;
      let isJson = true;
      if (text) {
        try { data = JSON.parse(text); } catch (_) { isJson = false; }
      }

      // A 502/503/504 HTML page comes from the web server when the FastCGI
      // handler is down: for the user that is "API unreachable", not an API error.
      if (!isJson && res.status >= 500) {
        throw new NetworkError('HTTP ' + res.status + ' from the web server');
      }
      noteReachable(true);

      if (!res.ok) {
        const code = (data && typeof data.code === 'string' && data.code) || 'http_' + res.status;
        const msg = (data && typeof data.error === 'string' && data.error) || res.statusText || 'HTTP ' + res.status;
        if (res.status === 401) noteUnauthorized();
        throw new ApiError(res.status, code, msg, data);
      }
      // /health may be open without a token: its success proves nothing
      // about auth, and must not hide the token panel while the user types.
      if (!opts.authExempt) noteAuthorized();

      if (method === 'GET' && !opts.raw) {
        const etag = res.headers.get('ETag');
        if (etag) etagCache.set(url, { etag, body: data });
        else etagCache.delete(url);
      }
      return { status: res.status, data, notModified: false };
    } catch (e) {
      if (e instanceof NetworkError) noteReachable(false);
      throw e;
    } finally {
      clearTimeout(timer);
    }
  }

  const api = {
    health: () => request('GET', 'health', { authExempt: true }),
    feeds: () => request('GET', 'threat-feeds/'),
    tasks: (query) => request('GET', 'threat-feeds/tasks/' + query),
    taskStatus: (id) => request('GET', 'threat-feeds/task-status/' + enc(id) + '/'),
    consume: (feedId) => request('POST', 'threat-feeds/' + enc(feedId) + '/consume/', { body: {} }),
    cancelTask: (taskId, mode) => request('POST', 'threat-feeds/cancel-task/' + enc(taskId) + '/', { body: { mode } }),
    cancelFeed: (feedId, mode) => request('POST', 'threat-feeds/' + enc(feedId) + '/cancel_consumption/', { body: { mode } }),
    testConnection: (feedId) => request('POST', 'threat-feeds/' + enc(feedId) + '/test_connection/', {
      body: {}, timeoutMs: TEST_CONNECTION_TIMEOUT_MS,
    }),
    createFeed: (feed) => request('POST', 'threat-feeds/', { body: feed }),
    removeFeed: (feedId) => request('DELETE', 'threat-feeds/' + enc(feedId) + '/', { body: {} }),
    audit: (cursor) => request('GET', 'audit/?limit=50' + (cursor ? '&cursor=' + enc(cursor) : '')),
  };

  /* ===================================================================== */
  /* 3. State and derived views                                            */
  /* ===================================================================== */

  const state = {
    feeds: [],                  // server order
    feedsLoaded: false,
    tasks: new Map(),           // task_id -> task, merged from every source
    recentIds: [],              // ids of the server's last-20 list, newest first
    health: null,
    healthState: 'unknown',     // ok | degraded | unreachable | auth | unknown
    healthAt: 0,
    healthActiveKey: '',        // the active tasks (id:status) when health was last fetched
    reachable: true,
    authRequired: false,
    // Cancels clicked but not yet visible as stopping/cancelling/terminal.
    // task_id -> mode. Keeps buttons locked across re-renders and stale polls.
    pendingCancel: new Map(),
    pendingConsume: new Set(),  // feed ids with a consume request in flight
    pendingRemove: new Set(),
    testing: new Set(),         // feed ids with a connection test in flight
    testResults: new Map(),     // feed_id -> {ok, detail}
    lastStatus: new Map(),      // task_id -> status at the last announcement check
  };

  function feedById(id) {
    return state.feeds.find((f) => f.id === id) || null;
  }
  function feedName(id) {
    const f = feedById(id);
    return (f && f.name) || id || '—';
  }

  /**
   * Merge a task from any source. Guards against stale answers: a status
   * request that started before a cancel may answer after it, so a terminal
   * task never goes back to active and an older updated_at never wins.
   */
  function mergeTask(t) {
    if (!t || typeof t.task_id !== 'string') return;
    const old = state.tasks.get(t.task_id);
    if (old) {
      if (TERMINAL.has(old.status) && !TERMINAL.has(t.status)) return;
      const a = parseTime(old.updated_at), b = parseTime(t.updated_at);
      if (a != null && b != null && b < a) return;
    }
    state.tasks.set(t.task_id, t);
    if (TERMINAL.has(t.status)) state.pendingCancel.delete(t.task_id);
  }

  function forgetTask(id) {
    state.tasks.delete(id);
    state.pendingCancel.delete(id);
    state.lastStatus.delete(id);
  }

  function activeTasks() {
    const list = [];
    for (const t of state.tasks.values()) if (ACTIVE.has(t.status)) list.push(t);
    // Oldest first: rows keep their place while newer runs are added below.
    list.sort((a, b) => (parseTime(a.created_at) || 0) - (parseTime(b.created_at) || 0)
      || String(a.task_id).localeCompare(String(b.task_id)));
    return list;
  }

  /** The task id of the feed's running job, or null. */
  function feedActiveTaskId(feed) {
    const id = feed.active_task_id;
    if (id) {
      const t = state.tasks.get(id);
      // The feed list and the task list are fetched side by side; a task we
      // already saw end is over even if the feed list lags one round.
      if (!t || !TERMINAL.has(t.status)) return id;
    }
    // ...and the other way round: a run we just started or saw in the task
    // list before the feed list caught up.
    for (const t of state.tasks.values()) {
      if (t.feed_id === feed.id && ACTIVE.has(t.status)) return t.task_id;
    }
    return null;
  }

  /** The end state as one line, e.g. "stopped: 120 kept (forced)". */
  function outcomeText(t) {
    const p = t.progress || {};
    const created = count(p.indicators_created);
    const updated = count(p.indicators_updated);
    const forced = t.cancel && t.cancel.forced ? ' (forced)' : '';
    switch (t.status) {
      case 'completed': return 'completed: ' + created + ' new, ' + updated + ' updated';
      case 'stopped': return 'stopped: ' + (created + updated) + ' kept' + forced;
      case 'cancelled': return 'cancelled: ' + count(t.rolled_back) + ' rolled back' + forced;
      case 'failed': return 'failed: ' + (t.error || 'unknown error') + forced;
      default: return (t.status || 'unknown') + (t.stage && t.stage !== t.status ? ' (' + t.stage + ')' : '');
    }
  }

  /**
   * Button state for stopping a task. Locked (both buttons disabled) from the
   * click until the task is terminal: derived from the server status and the
   * local pending set, so neither a re-render nor a stale poll unlocks it.
   */
  function cancelView(taskId) {
    const t = taskId ? state.tasks.get(taskId) : null;
    let mode = null;
    if (t && t.status === 'stopping') mode = 'stop_now';
    else if (t && t.status === 'cancelling') mode = 'cancel_job';
    else if (state.pendingCancel.has(taskId)) mode = state.pendingCancel.get(taskId);
    else if (t && t.cancel && ACTIVE.has(t.status)) mode = t.cancel.mode || 'stop_now';
    const terminal = !!(t && TERMINAL.has(t.status));
    return {
      mode,
      locked: !!mode || terminal || !taskId,
      stopLabel: mode === 'stop_now' ? 'Stopping…' : 'Stop Now',
      cancelLabel: mode === 'cancel_job' ? 'Cancelling…' : 'Cancel Job',
    };
  }

  function anythingActive() {
    if (state.pendingCancel.size || state.pendingConsume.size) return true;
    for (const t of state.tasks.values()) if (ACTIVE.has(t.status)) return true;
    return state.feeds.some((f) => f.active_task_id);
  }

  /* ===================================================================== */
  /* 4. Messages: alerts, live region, offline banner, auth panel          */
  /* ===================================================================== */

  const ui = {
    alerts: $('[data-testid="alerts"]'),
    live: $('[data-testid="live"]'),
    offline: $('[data-testid="offline-banner"]'),
    health: $('[data-testid="health"]'),
    workers: $('[data-testid="workers"]'),
    authMode: $('[data-testid="auth-mode"]'),
    tokenButton: $('[data-testid="token-button"]'),
    version: $('[data-testid="version"]'),
    authPanel: $('#auth-panel'),
    authForm: $('#auth-form'),
    authInput: $('#auth-token'),
    authForget: $('#auth-forget'),
    activeSection: $('#active-tasks'),
    activeBody: $('#active-body'),
    feedsBody: $('#feeds-body'),
    feedsEmpty: $('[data-testid="feeds-empty"]'),
    feedsUpdated: $('[data-testid="feeds-updated"]'),
    recentBody: $('#recent-body'),
    recentEmpty: $('[data-testid="recent-empty"]'),
    form: $('#add-feed-form'),
    formError: $('#add-feed-error'),
    main: $('#main'),
    auditSection: $('#audit'),
    auditBody: $('#audit-body'),
    auditMore: $('[data-testid="audit-more"]'),
  };

  /**
   * Show an alert (role="alert" region). The same message repeated (a poll
   * failing every second) is counted on the existing alert, not stacked.
   */
  function showAlert(context, message, code, level, tag) {
    level = level || 'error';
    const key = level + '|' + context + '|' + (code || '') + '|' + message;
    for (const node of ui.alerts.children) {
      if (node.dataset.key === key) {
        const n = Number(node.dataset.count || '1') + 1;
        node.dataset.count = String(n);
        setText(node.querySelector('.alert-count'), '×' + n);
        return;
      }
    }
    const text = el('span', { class: 'alert-text' });
    if (context) text.append(el('strong', { text: context + ': ' }));
    text.append(document.createTextNode(message));
    if (code) text.append(' ', el('code', { class: 'alert-code', 'data-testid': 'alert-code', text: code }));
    const node = el('div', { class: 'alert', 'data-level': level, 'data-testid': 'alert' }, [
      text,
      el('span', { class: 'alert-count', 'aria-hidden': 'true' }),
      el('button', { type: 'button', class: 'btn btn-small btn-ghost', 'data-action': 'dismiss', 'aria-label': 'Dismiss alert', text: 'Dismiss' }),
    ]);
    node.dataset.key = key;
    if (tag) node.dataset.tag = tag;
    ui.alerts.append(node);
    while (ui.alerts.children.length > MAX_ALERTS) ui.alerts.firstElementChild.remove();
  }

  function dismissAlert(node) {
    const next = node.nextElementSibling || node.previousElementSibling;
    const hadFocus = node.contains(document.activeElement);
    node.remove();
    if (hadFocus) {
      const b = next && next.querySelector('button');
      (b || ui.main).focus();
    }
  }

  /**
   * Report a failed request to the user (never only in the console). `tag`
   * names what failed (e.g. "consume:FEED") so that the alert can be taken
   * down once the same thing succeeds (clearAlerts): a stale "could not
   * start" next to a run that did start misleads.
   */
  function reportError(context, err, tag) {
    if (err instanceof ApiError) {
      const extra = err.body && err.body.task_id ? ' (task ' + err.body.task_id + ')' : '';
      showAlert(context, err.message + extra, err.code, 'error', tag);
    } else if (err instanceof NetworkError) {
      showAlert(context, 'API unreachable: ' + err.message, 'network', 'error', tag);
    } else {
      console.error(err);
      showAlert(context, String((err && err.message) || err), 'client_error', 'error', tag);
    }
  }

  /** Remove the alerts reported under `tag` (see reportError). */
  function clearAlerts(tag) {
    for (const node of Array.from(ui.alerts.children)) {
      if (node.dataset.tag !== tag) continue;
      if (node.contains(document.activeElement)) dismissAlert(node);
      else node.remove();
    }
  }

  // Messages queued during one render are announced together, so two tasks
  // ending in the same round are both read out.
  let liveQueue = [];
  function announce(msg) {
    liveQueue.push(msg);
    if (liveQueue.length === 1) {
      queueMicrotask(() => {
        const text = liveQueue.join(' ');
        liveQueue = [];
        // Same text twice would not be re-announced; add a zero-width change.
        ui.live.textContent = text === ui.live.textContent ? text + '\u200b' : text;
      });
    }
  }

  function noteReachable(ok) {
    if (ok === state.reachable) return;
    state.reachable = ok;
    setHidden(ui.offline, ok);
    if (ok) {
      if (state.healthState === 'unreachable') state.healthState = 'unknown';
      state.healthAt = 0; // refresh health on the next round
      announce('API reachable again.');
    } else {
      state.healthState = 'unreachable';
    }
    renderHeader();
  }

  function noteUnauthorized() {
    if (state.authRequired) return;
    state.authRequired = true;
    setHidden(ui.authPanel, false);
    renderHeader();
  }

  function noteAuthorized() {
    for (const node of Array.from(ui.alerts.querySelectorAll('[data-tag="auth"]'))) node.remove();
    if (!state.authRequired) return;
    state.authRequired = false;
    setHidden(ui.authPanel, true);
    renderHeader();
  }

  /* ===================================================================== */
  /* 5. Rendering                                                          */
  /* ===================================================================== */

  function render() {
    const focused = document.activeElement;
    renderHeader();
    renderFeeds();
    renderActive();
    renderRecent();
    // A button that gets disabled under the keyboard focus would drop focus
    // to <body>; move it to the nearest usable control in the same row.
    if (focused && focused.tagName === 'BUTTON' && focused.disabled && focused.isConnected) rescueFocus(focused);
  }

  function rescueFocus(btn) {
    const usable = (b) => b && !b.disabled && !b.closest('[hidden]');
    const group = btn.closest('.btn-row');
    if (group) {
      const list = Array.from(group.querySelectorAll('button'));
      const i = list.indexOf(btn);
      const next = list.slice(i + 1).find(usable) || list.slice(0, i).reverse().find(usable);
      if (next) { next.focus(); return; }
    }
    const row = btn.closest('tr');
    const other = row && Array.from(row.querySelectorAll('button')).find(usable);
    (other || ui.main).focus();
  }

  function renderHeader() {
    const h = state.health;
    let label, s = state.healthState;
    if (!state.reachable) s = 'unreachable';
    switch (s) {
      case 'ok': label = 'API: ok'; break;
      case 'unreachable': label = 'API: unreachable'; break;
      case 'auth': label = 'API: ok (token required)'; break;
      case 'degraded': label = 'API: degraded' + (h && h.store && h.store !== 'ok' ? ' (store: ' + h.store + ')' : ''); break;
      default: label = 'API: checking…';
    }
    setText(ui.health, label);
    setAttr(ui.health, 'data-state', s);

    if (h && Number.isFinite(h.active_workers)) {
      setText(ui.workers, 'Workers: ' + h.active_workers + ' active, ' + count(h.queued) + ' queued');
      setHidden(ui.workers, false);
    } else {
      setHidden(ui.workers, true);
    }
    setText(ui.version, h && h.version ? 'v' + String(h.version).replace(/^v/, '') : '');

    const has = !!getToken();
    setText(ui.authMode, has ? 'Auth: token configured' : 'Auth: no token');
    const serverMode = h && h.auth ? h.auth : (state.authRequired ? 'token' : null);
    setAttr(ui.authMode, 'title', serverMode ? 'Server auth mode: ' + serverMode : 'Server auth mode: unknown');
    setAttr(ui.authMode, 'data-state', state.authRequired ? 'required' : (has ? 'token' : 'none'));
    setText(ui.tokenButton, has ? 'Change token' : 'Set token');
  }

  /**
   * Keep tbody rows in `keys` order, reusing existing rows. A row is only
   * moved when it is out of place (moving a node blurs a focused button).
   * `emptyRow` stays the last child and is shown when there are no rows.
   */
  function syncRows(tbody, emptyRow, rows, keys, build, update, onRemove) {
    const want = new Set(keys);
    for (const [k, row] of rows) {
      if (!want.has(k)) {
        const hadFocus = row.tr.contains(document.activeElement);
        row.tr.remove();
        rows.delete(k);
        if (onRemove) onRemove(k, row, hadFocus);
      }
    }
    keys.forEach((k, i) => {
      let row = rows.get(k);
      if (!row) { row = build(k); labelCells(tbody, row.tr); rows.set(k, row); }
      update(row, k);
      const at = tbody.children[i];
      if (at !== row.tr) tbody.insertBefore(row.tr, at || emptyRow);
    });
    if (emptyRow.parentNode !== tbody || tbody.lastElementChild !== emptyRow) tbody.append(emptyRow);
    setHidden(emptyRow, keys.length > 0);
  }

  // Narrow screens show rows as cards; each cell names its column (CSS reads
  // data-label), taken from the table head so the two never disagree.
  function labelCells(tbody, tr) {
    const head = tbody.parentNode.tHead;
    const ths = head ? head.rows[0].cells : [];
    Array.from(tr.cells).forEach((td, i) => {
      if (ths[i]) td.setAttribute('data-label', ths[i].textContent.trim());
    });
  }

  function badge(status) {
    return el('span', { class: 'badge', 'data-status': status || 'none', text: status || 'never run' });
  }
  function updateBadge(node, status, text) {
    setAttr(node, 'data-status', status || 'none');
    setText(node, text);
  }

  function button(action, text, extra) {
    return el('button', Object.assign({ type: 'button', class: 'btn btn-small', 'data-action': action, text }, extra || {}));
  }

  // No-break spaces inside each item: a narrow cell wraps between items
  // ("0 updated ·" / "0 skipped"), never between a number and its word.
  function progressCounts(t) {
    const p = t.progress || {};
    return count(p.indicators_created) + '\u00a0new · ' + count(p.indicators_updated) + '\u00a0updated · ' +
      count(p.indicators_skipped) + '\u00a0skipped';
  }
  function progressPages(t) {
    const p = t.progress || {};
    const total = Number.isFinite(p.pages_total) ? p.pages_total : '?';
    return 'pages\u00a0' + count(p.pages_done) + '/' + total + ' · ' + count(p.objects_processed) + '\u00a0objects';
  }

  /* ----- Feeds ----- */

  const feedRows = new Map();

  function buildFeedRow(id) {
    const nameId = 'feed-name-' + id;
    const cells = {
      name: el('span', { class: 'feed-name', id: nameId }),
      id: el('span', { class: 'mono muted small', 'data-testid': 'feed-id' }),
      note: el('div', { class: 'row-note', 'data-testid': 'test-result', hidden: true }),
      type: el('span', { class: 'mono' }),
      schedule: el('div', { class: 'muted small' }),
      status: badge(null),
      statusDetail: el('div', { class: 'muted small', 'data-testid': 'feed-status-detail' }),
      lastRun: el('time', { 'data-testid': 'last-run' }),
      count: el('td', { class: 'num', 'data-testid': 'indicator-count' }),
    };
    cells.status.setAttribute('data-testid', 'feed-status');
    const described = { 'data-feed-id': id, 'aria-describedby': nameId };
    const btns = {
      consume: button('consume', 'Consume', Object.assign({ class: 'btn btn-small btn-primary' }, described)),
      stop: button('stop', 'Stop Now', described),
      cancel: button('cancel', 'Cancel Job', described),
      test: button('test', 'Test connection', described),
      remove: button('remove', 'Remove', Object.assign({ class: 'btn btn-small btn-danger' }, described)),
    };
    // The id is a link target: the indicator views link a hit's feed here.
    const tr = el('tr', { id: 'feed-' + id, 'data-testid': 'feed-row-' + id, 'data-feed-id': id }, [
      el('td', { class: 'cell-name' }, [cells.name, cells.id, cells.note]),
      el('td', null, [cells.type, cells.schedule]),
      el('td', null, [cells.status, cells.statusDetail]),
      el('td', { class: 'nowrap' }, [cells.lastRun]),
      cells.count,
      el('td', { class: 'actions' }, [el('div', { class: 'btn-row' }, [btns.consume, btns.stop, btns.cancel, btns.test, btns.remove])]),
    ]);
    return { tr, cells, btns };
  }

  function updateFeedRow(row, id) {
    const f = feedById(id);
    const { cells, btns } = row;
    const now = Date.now();
    setText(cells.name, f.name || id);
    setText(cells.id, id);

    setText(cells.type, f.type || '—');
    const interval = Number(f.interval_s) || 0;
    setText(cells.schedule, (f.enabled === false ? 'disabled · ' : '') +
      (interval > 0 ? 'every ' + fmtDuration(interval * 1000) : 'manual'));

    const activeId = feedActiveTaskId(f);
    const active = activeId ? state.tasks.get(activeId) : null;
    if (activeId) {
      const st = active ? active.status : (f.last_task_id === activeId && f.last_status) || 'queued';
      updateBadge(cells.status, st, st);
      const p = active && active.progress ? active.progress.percent : null;
      setText(cells.statusDetail, (active && active.stage ? active.stage : '') +
        (Number.isFinite(p) ? ' · ' + Math.floor(p) + '%' : ''));
    } else {
      const last = f.last_task_id ? state.tasks.get(f.last_task_id) : null;
      const st = last ? last.status : f.last_status;
      updateBadge(cells.status, st, last ? outcomeText(last) : (st || 'never run'));
      setText(cells.statusDetail, f.last_task_id ? 'task ' + shortId(f.last_task_id) : '');
    }
    setAttr(cells.statusDetail, 'title', activeId || f.last_task_id || null);

    // The server sets last_run_at (a run's start) when the run ends; while
    // one is going, its own start is the last run, not "never".
    const runAt = (active && (active.started_at || active.created_at)) || f.last_run_at;
    const lastRun = parseTime(runAt);
    setText(cells.lastRun, lastRun == null ? 'never' : fmtRelative(lastRun, now));
    setAttr(cells.lastRun, 'datetime', lastRun == null ? null : runAt);
    setAttr(cells.lastRun, 'title', lastRun == null ? null : fmtAbsolute(lastRun));
    setText(cells.count, Number.isFinite(f.indicator_count) ? f.indicator_count : '—');

    const test = state.testResults.get(id);
    setHidden(cells.note, !test);
    if (test) {
      setText(cells.note, (test.ok ? 'Connection OK' : 'Connection failed') + (test.detail ? ': ' + test.detail : ''));
      setAttr(cells.note, 'data-ok', test.ok ? 'true' : 'false');
    }

    // While the request is in flight the button is only aria-disabled (clicks
    // are ignored) so keyboard focus stays on it; once the run is active it
    // is really disabled and focus moves on to Stop Now.
    const consuming = state.pendingConsume.has(id);
    setDisabled(btns.consume, !!activeId || state.pendingRemove.has(id));
    setAttr(btns.consume, 'aria-disabled', consuming && !activeId ? 'true' : null);
    setText(btns.consume, consuming ? 'Starting…' : 'Consume');

    const cv = cancelView(activeId);
    setDisabled(btns.stop, !activeId || cv.locked);
    setDisabled(btns.cancel, !activeId || cv.locked);
    setText(btns.stop, cv.stopLabel);
    setText(btns.cancel, cv.cancelLabel);
    setAttr(btns.stop, 'data-pending', cv.mode === 'stop_now');
    setAttr(btns.cancel, 'data-pending', cv.mode === 'cancel_job');
    setAttr(btns.stop, 'data-task-id', activeId);
    setAttr(btns.cancel, 'data-task-id', activeId);

    const testing = state.testing.has(id);
    setDisabled(btns.test, testing);
    setText(btns.test, testing ? 'Testing…' : 'Test connection');

    // The server refuses to remove a feed while it runs; say so up front.
    const removing = state.pendingRemove.has(id);
    setDisabled(btns.remove, !!activeId || removing);
    setText(btns.remove, removing ? 'Removing…' : 'Remove');
    setAttr(btns.remove, 'title', activeId ? 'Stop the active run before removing the feed' : null);
  }

  function renderFeeds() {
    const keys = state.feeds.map((f) => f.id);
    syncRows(ui.feedsBody, ui.feedsEmpty, feedRows, keys, buildFeedRow, updateFeedRow, (k, row, hadFocus) => {
      if (hadFocus) ui.main.focus();
    });
    if (state.feedsLoaded) setText(ui.feedsEmpty.firstElementChild, 'No feeds yet. Add one below.');
  }

  /* ----- Active Background Tasks ----- */

  /** The task id as a link to its run view (explore.js, `#task/ID`). */
  function runLink(id, code, label) {
    return el('a', { class: 'run-link', href: '#task/' + id, 'data-testid': 'task-link', 'aria-label': label || null }, [code]);
  }

  const taskRows = new Map();

  function buildTaskRow(id) {
    const idCode = el('code', { class: 'mono task-id', 'data-testid': 'task-id', id: 'task-id-' + id, text: id });
    const c = {
      idCode,
      feed: el('td', { 'data-testid': 'feed' }),
      status: badge('queued'),
      stage: el('div', { class: 'mono small muted stage', 'data-testid': 'stage' }),
      message: el('td', { class: 'cell-message', 'data-testid': 'message' }),
      progress: el('progress', { max: '100', 'data-testid': 'progress', 'aria-label': 'Progress of task ' + id }),
      percent: el('span', { class: 'percent', 'data-testid': 'percent' }),
      counts: el('div', { 'data-testid': 'counts' }),
      pages: el('div', { class: 'muted small', 'data-testid': 'pages' }),
      elapsed: el('td', { class: 'nowrap num', 'data-testid': 'elapsed' }),
    };
    c.status.setAttribute('data-testid', 'status');
    const described = { 'data-task-id': id, 'aria-describedby': 'task-id-' + id };
    const btns = {
      copy: button('copy', 'Copy', Object.assign({ class: 'btn btn-small btn-ghost', 'aria-label': 'Copy task ID' }, described)),
      stop: button('stop', 'Stop Now', described),
      cancel: button('cancel', 'Cancel Job', described),
    };
    const tr = el('tr', { 'data-testid': 'task-row-' + id, 'data-task-id': id }, [
      el('td', { class: 'cell-id' }, [el('div', { class: 'id-line' }, [runLink(id, idCode), btns.copy])]),
      c.feed,
      el('td', null, [c.status, c.stage]),
      c.message,
      el('td', { class: 'cell-progress' }, [el('div', { class: 'progress-line' }, [c.progress, c.percent])]),
      el('td', { class: 'cell-counts small' }, [c.counts, c.pages]),
      c.elapsed,
      el('td', { class: 'actions' }, [el('div', { class: 'btn-row' }, [btns.stop, btns.cancel])]),
    ]);
    return { tr, c, btns };
  }

  function updateTaskRow(row, id) {
    const t = state.tasks.get(id);
    const { c, btns } = row;
    const p = t.progress || {};
    setText(c.feed, feedName(t.feed_id));
    setAttr(c.feed, 'title', t.feed_id || null);
    updateBadge(c.status, t.status, t.status);
    setText(c.stage, t.stage || '—');
    setText(c.message, t.message || '');

    // No value attribute = indeterminate bar, which is what "unknown" means.
    if (Number.isFinite(p.percent)) {
      const v = Math.max(0, Math.min(100, p.percent));
      setAttr(c.progress, 'value', String(v));
      setText(c.percent, Math.floor(v) + '%');
    } else {
      setAttr(c.progress, 'value', null);
      setText(c.percent, '—');
    }
    setAttr(c.progress, 'aria-valuetext', Number.isFinite(p.percent) ? Math.floor(p.percent) + ' percent' : 'unknown');

    setText(c.counts, progressCounts(t));
    setText(c.pages, progressPages(t));

    const start = parseTime(t.started_at) || parseTime(t.created_at);
    setText(c.elapsed, start == null ? '—' : fmtDuration(Date.now() - start));
    setAttr(c.elapsed, 'title', start == null ? null : 'since ' + fmtAbsolute(start));

    const cv = cancelView(id);
    setDisabled(btns.stop, cv.locked);
    setDisabled(btns.cancel, cv.locked);
    setText(btns.stop, cv.stopLabel);
    setText(btns.cancel, cv.cancelLabel);
    setAttr(btns.stop, 'data-pending', cv.mode === 'stop_now');
    setAttr(btns.cancel, 'data-pending', cv.mode === 'cancel_job');
  }

  function renderActive() {
    const list = activeTasks();
    syncRows(ui.activeBody, ensureActiveEmpty(), taskRows, list.map((t) => t.task_id), buildTaskRow, updateTaskRow,
      (k, row, hadFocus) => {
        if (!hadFocus) return;
        // The row ends when its task does; put focus somewhere meaningful:
        // the feed's row, where Consume is available again.
        const t = state.tasks.get(k);
        const fr = t && feedRows.get(t.feed_id);
        const target = fr && [fr.btns.consume, fr.btns.test].find((b) => !b.disabled);
        (target || ui.main).focus();
      });
    setHidden(ui.activeSection, list.length === 0);
  }

  // syncRows wants an end marker; the active table never shows an empty row
  // (the whole section is hidden instead).
  let activeEmpty = null;
  function ensureActiveEmpty() {
    if (!activeEmpty) {
      activeEmpty = el('tr', { class: 'empty-row', hidden: true }, [el('td', { colspan: '8' })]);
      ui.activeBody.append(activeEmpty);
    }
    return activeEmpty;
  }

  /* ----- Recent tasks ----- */

  const recentRows = new Map();

  function buildRecentRow(id) {
    const c = {
      id: runLink(id, el('code', { class: 'mono', 'data-testid': 'task-id', title: id, text: shortId(id) }), 'run ' + id),
      feed: el('td', { 'data-testid': 'feed' }),
      outcome: badge(null),
      started: el('time', { 'data-testid': 'started' }),
      duration: el('td', { class: 'num nowrap', 'data-testid': 'duration' }),
      counts: el('div', { 'data-testid': 'counts' }),
      pages: el('div', { class: 'muted small' }),
      error: el('td', { class: 'cell-error', 'data-testid': 'error' }),
    };
    c.outcome.setAttribute('data-testid', 'outcome');
    c.outcome.classList.add('badge-wrap');
    const tr = el('tr', { 'data-testid': 'recent-row-' + id, 'data-task-id': id }, [
      el('td', null, [c.id]),
      c.feed,
      el('td', null, [c.outcome]),
      el('td', { class: 'nowrap' }, [c.started]),
      c.duration,
      el('td', { class: 'small' }, [c.counts, c.pages]),
      c.error,
    ]);
    return { tr, c };
  }

  function updateRecentRow(row, id) {
    const t = state.tasks.get(id);
    const { c } = row;
    const now = Date.now();
    setText(c.feed, feedName(t.feed_id));
    setAttr(c.feed, 'title', t.feed_id || null);
    updateBadge(c.outcome, t.status, outcomeText(t));

    const started = parseTime(t.started_at);
    const created = parseTime(t.created_at);
    if (started != null) {
      setText(c.started, fmtRelative(started, now));
      setAttr(c.started, 'datetime', t.started_at);
      setAttr(c.started, 'title', fmtAbsolute(started));
    } else {
      setText(c.started, created != null ? 'not started' : '—');
      setAttr(c.started, 'datetime', null);
      setAttr(c.started, 'title', created != null ? 'created ' + fmtAbsolute(created) : null);
    }
    const end = parseTime(t.finished_at);
    const from = started != null ? started : created;
    let dur = '—';
    if (from != null && end != null) dur = fmtDuration(end - from);
    else if (from != null && ACTIVE.has(t.status)) dur = fmtDuration(now - from) + '…';
    setText(c.duration, dur);

    setText(c.counts, progressCounts(t));
    setText(c.pages, progressPages(t) + (t.status === 'cancelled' ? ' · ' + count(t.rolled_back) + ' rolled back' : ''));

    const warnings = Array.isArray(t.warnings) ? t.warnings : [];
    let errText = t.error || '';
    if (warnings.length) errText += (errText ? ' · ' : '') + warnings.length + (warnings.length === 1 ? ' warning' : ' warnings');
    setText(c.error, errText);
    setAttr(c.error, 'title', warnings.length ? warnings.slice(0, 20).join('\n') : null);
  }

  function renderRecent() {
    const keys = state.recentIds.filter((id) => state.tasks.has(id));
    syncRows(ui.recentBody, ui.recentEmpty, recentRows, keys, buildRecentRow, updateRecentRow, (k, row, hadFocus) => {
      if (hadFocus) ui.main.focus();
    });
  }

  /** Announce status changes since the last check (aria-live "polite"). */
  function announceTransitions() {
    for (const t of state.tasks.values()) {
      const prev = state.lastStatus.get(t.task_id);
      state.lastStatus.set(t.task_id, t.status);
      // First sighting: only announce if it is new work, not old history.
      if (prev === undefined || prev === t.status) continue;
      const who = 'Task ' + shortId(t.task_id) + ' (' + feedName(t.feed_id) + ')';
      if (TERMINAL.has(t.status)) announce(who + ' ' + outcomeText(t) + '.');
      else if (t.status === 'stopping') announce(who + ' stopping…');
      else if (t.status === 'cancelling') announce(who + ' cancelling, rolling back…');
      else if (t.status === 'running') announce(who + ' running.');
    }
  }

  /* ===================================================================== */
  /* 6. Actions                                                            */
  /* ===================================================================== */

  async function doConsume(feedId) {
    if (state.pendingConsume.has(feedId)) return;
    const f = feedById(feedId);
    if (f && feedActiveTaskId(f)) return;
    state.pendingConsume.add(feedId);
    render();
    try {
      const { data } = await api.consume(feedId);
      if (data && data.task_id) {
        // Show the run at once; the next poll replaces this placeholder.
        const now = new Date().toISOString();
        mergeTask({
          task_id: data.task_id, feed_id: data.feed_id || feedId, status: data.status || 'queued',
          stage: 'queued', message: '', cancel: null, rolled_back: 0, error: null, warnings: [],
          progress: { percent: null, pages_done: 0, pages_total: null, objects_processed: 0,
            indicators_created: 0, indicators_updated: 0, indicators_skipped: 0, bytes_received: 0 },
          created_at: now, started_at: null, updated_at: null, finished_at: null,
        });
        state.lastStatus.set(data.task_id, data.status || 'queued');
        if (f) f.active_task_id = data.task_id;
        announce('Task ' + shortId(data.task_id) + ' queued for ' + feedName(feedId) + '.');
      }
      clearAlerts('consume:' + feedId);
    } catch (e) {
      if (e instanceof ApiError && e.code === 'run_active' && e.body && e.body.task_id && f) {
        f.active_task_id = e.body.task_id; // show the run that is already going
      }
      reportError('Consume ' + feedName(feedId), e, 'consume:' + feedId);
    } finally {
      state.pendingConsume.delete(feedId);
      render();
      pollSoon();
    }
  }

  /**
   * Stop or cancel a run. Both buttons of the task (in the monitor and in the
   * feed row) are disabled synchronously, before the request is sent, so a
   * double click sends one request; they stay disabled until the task is
   * terminal, or come back if the request fails.
   * `feedId` set = the click came from the feeds table: use the feed-level
   * endpoint, which also catches a run that is still starting.
   */
  async function doCancel(taskId, mode, feedId) {
    if (!taskId || state.pendingCancel.has(taskId)) return;
    if (cancelView(taskId).locked) return;
    state.pendingCancel.set(taskId, mode);
    render();
    const verb = mode === 'cancel_job' ? 'Cancel' : 'Stop';
    try {
      const { data } = feedId ? await api.cancelFeed(feedId, mode) : await api.cancelTask(taskId, mode);
      if (data && data.task_id) {
        if (data.task_id !== taskId) state.pendingCancel.set(data.task_id, mode);
        mergeTask(data);
      }
      clearAlerts('cancel:' + taskId);
    } catch (e) {
      state.pendingCancel.delete(taskId);
      reportError(verb + ' task ' + shortId(taskId), e, 'cancel:' + taskId);
    }
    announceTransitions();
    render();
    pollSoon();
  }

  async function doTest(feedId) {
    if (state.testing.has(feedId)) return;
    state.testing.add(feedId);
    state.testResults.delete(feedId);
    render();
    try {
      const { data } = await api.testConnection(feedId);
      const ok = !!(data && data.ok);
      let detail = data ? data.detail : '';
      if (detail != null && typeof detail !== 'string') detail = JSON.stringify(detail);
      state.testResults.set(feedId, { ok, detail: detail || '' });
      announce('Connection test for ' + feedName(feedId) + ': ' + (ok ? 'OK' : 'failed') + (detail ? ', ' + detail : '') + '.');
      clearAlerts('test:' + feedId);
    } catch (e) {
      reportError('Test connection ' + feedName(feedId), e, 'test:' + feedId);
    } finally {
      state.testing.delete(feedId);
      render();
    }
  }

  async function doRemove(feedId) {
    if (state.pendingRemove.has(feedId)) return;
    const name = feedName(feedId);
    // eslint-disable-next-line no-alert -- a native confirm is keyboard and screen-reader friendly
    if (!window.confirm('Remove feed "' + name + '" (' + feedId + ')? This cannot be undone.')) return;
    state.pendingRemove.add(feedId);
    render();
    try {
      await api.removeFeed(feedId);
      state.feeds = state.feeds.filter((f) => f.id !== feedId);
      state.testResults.delete(feedId);
      announce('Feed ' + name + ' removed.');
      clearAlerts('remove:' + feedId);
    } catch (e) {
      reportError('Remove ' + name, e, 'remove:' + feedId);
    } finally {
      state.pendingRemove.delete(feedId);
      render();
      pollSoon();
    }
  }

  async function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      try { await navigator.clipboard.writeText(text); return true; } catch (_) { /* try the fallback */ }
    }
    // Fallback for plain-http origins and denied permissions.
    const active = document.activeElement;
    const ta = el('textarea', { readonly: true, 'aria-hidden': 'true', class: 'clip-helper' });
    ta.value = text;
    document.body.append(ta);
    ta.select();
    let ok = false;
    try { ok = document.execCommand('copy'); } catch (_) { ok = false; }
    ta.remove();
    if (active && active.focus) active.focus();
    return ok;
  }

  async function doCopy(btn, taskId) {
    const ok = await copyText(taskId);
    if (ok) {
      btn.textContent = 'Copied';
      announce('Task ID ' + taskId + ' copied.');
      setTimeout(() => { btn.textContent = 'Copy'; }, 1500);
    } else {
      // Select the visible id so Ctrl+C works.
      const code = document.getElementById('task-id-' + taskId);
      if (code) {
        const r = document.createRange();
        r.selectNodeContents(code);
        const sel = window.getSelection();
        sel.removeAllRanges();
        sel.addRange(r);
      }
      showAlert('Copy task ID', 'The browser refused clipboard access; the ID is selected, press Ctrl+C.', 'clipboard');
    }
  }

  /* ----- Add feed form ----- */

  const SECRET_LABEL = {
    taxii21: 'Password',
    otx: 'API key',
    virustotal: 'API key',
    stix_bundle: 'Secret (optional)',
  };
  // The run appends the API's paths (OTX /api/v1/…, VirusTotal /api/v3/…):
  // the hint is the base, as README "Feed types" asks for.
  const URL_HINT = {
    taxii21: 'https://taxii.example/taxii2/',
    otx: 'https://otx.alienvault.com',
    virustotal: 'https://www.virustotal.com',
    stix_bundle: 'https://example/bundle.json',
  };

  function syncFormType() {
    const type = ui.form.elements.type.value;
    for (const node of ui.form.querySelectorAll('[data-types]')) {
      setHidden(node, !node.dataset.types.split(' ').includes(type));
    }
    setText($('#f-secret-label'), SECRET_LABEL[type] || 'Secret');
    ui.form.elements.url.placeholder = URL_HINT[type] || 'https://…';
  }

  function clearFormErrors() {
    setHidden(ui.formError, true);
    ui.formError.textContent = '';
    for (const node of ui.form.querySelectorAll('.field-error')) { node.textContent = ''; node.hidden = true; }
    for (const input of ui.form.querySelectorAll('[aria-invalid]')) {
      input.removeAttribute('aria-invalid');
      const d = (input.getAttribute('aria-describedby') || '').split(' ').filter((x) => x && !x.endsWith('-err')).join(' ');
      setAttr(input, 'aria-describedby', d || null);
    }
  }

  const FORM_FIELDS = ['id', 'name', 'type', 'url', 'collection', 'username', 'secret', 'interval_s',
    'enabled', 'targets', 'requests_per_minute', 'page_size'];

  /** Which input a server error is about: an explicit `field`, or its first word ("url: …"). */
  function errorField(err) {
    const b = err.body || {};
    let f = typeof b.field === 'string' ? b.field : null;
    if (!f) {
      const m = /^\s*["']?([a-z_.]+)["']?\s*(?::|\(|\bis\b|\bmust\b|\balready\b|\bhas\b)/i.exec(err.message || '');
      f = m ? m[1].toLowerCase() : null;
    }
    if (!f || !FORM_FIELDS.includes(f.replace(/^options\./, ''))) {
      const m = /^(?:invalid|bad|missing|duplicate)_([a-z_]+)$/.exec(err.code || '');
      if (m) f = m[1];
    }
    if (!f) return null;
    f = f.replace(/^options\./, '');
    return FORM_FIELDS.includes(f) ? f : null;
  }

  function showFieldError(field, message) {
    const input = ui.form.elements[field];
    const errNode = document.getElementById('f-' + field + '-err');
    if (!input || !errNode || errNode.parentElement.closest('[hidden]')) return false;
    errNode.textContent = message;
    errNode.hidden = false;
    input.setAttribute('aria-invalid', 'true');
    const d = (input.getAttribute('aria-describedby') || '').split(' ').filter(Boolean);
    if (!d.includes(errNode.id)) d.push(errNode.id);
    input.setAttribute('aria-describedby', d.join(' '));
    return true;
  }

  function numberOrRaw(s) {
    const v = s.trim();
    if (v === '') return undefined;
    const n = Number(v);
    // Send what the user typed if it is not a number: the server's message
    // is the one that explains the rule.
    return Number.isFinite(n) ? n : v;
  }

  function feedFromForm() {
    const e = ui.form.elements;
    const type = e.type.value;
    const feed = { name: e.name.value.trim(), type, url: e.url.value.trim() };
    const id = e.id.value.trim();
    if (id) feed.id = id;
    if (type === 'taxii21') {
      if (e.collection.value.trim()) feed.collection = e.collection.value.trim();
      if (e.username.value.trim()) feed.username = e.username.value.trim();
    }
    if (e.secret.value) feed.secret = e.secret.value;
    const interval = numberOrRaw(e.interval_s.value);
    feed.interval_s = interval === undefined ? 0 : interval;
    feed.enabled = e.enabled.checked;
    const options = {};
    if (type === 'virustotal') {
      const targets = e.targets.value.split(/\r?\n/).map((s) => s.trim()).filter(Boolean);
      if (targets.length) options.targets = targets;
      const rpm = numberOrRaw(e.requests_per_minute.value);
      if (rpm !== undefined) options.requests_per_minute = rpm;
    }
    if (type === 'taxii21') {
      const ps = numberOrRaw(e.page_size.value);
      if (ps !== undefined) options.page_size = ps;
    }
    if (Object.keys(options).length) feed.options = options;
    return feed;
  }

  let submitting = false;
  async function onSubmitFeed(ev) {
    ev.preventDefault();
    if (submitting) return;
    clearFormErrors();
    const feed = feedFromForm();
    const submit = ui.form.querySelector('[type="submit"]');
    submitting = true;
    submit.disabled = true;
    submit.textContent = 'Adding…';
    try {
      const { data } = await api.createFeed(feed);
      const type = ui.form.elements.type.value;
      ui.form.reset();
      ui.form.elements.type.value = type;
      syncFormType();
      if (data && data.id) {
        if (!feedById(data.id)) state.feeds.push(data);
        announce('Feed ' + (data.name || data.id) + ' added (id ' + data.id + ').');
      }
      clearAlerts('add-feed');
      render();
      pollSoon();
    } catch (e) {
      // Next to the form, where the user is looking, and in the alert region.
      const msg = e instanceof ApiError ? e.message : (e instanceof NetworkError ? 'API unreachable: ' + e.message : String(e));
      const code = e instanceof ApiError ? e.code : 'network';
      ui.formError.textContent = '';
      ui.formError.append(el('strong', { text: 'Not added: ' }), document.createTextNode(msg + ' '),
        el('code', { text: code }));
      setHidden(ui.formError, false);
      const field = e instanceof ApiError ? errorField(e) : null;
      if (field && showFieldError(field, msg)) ui.form.elements[field].focus();
      else ui.formError.focus();
      reportError('Add feed', e, 'add-feed');
    } finally {
      submitting = false;
      submit.disabled = false;
      submit.textContent = 'Add feed';
    }
  }

  /* ----- Token ----- */

  function onSubmitToken(ev) {
    ev.preventDefault();
    const t = ui.authInput.value.trim();
    if (!t) { ui.authInput.focus(); return; }
    setToken(t);
    ui.authInput.value = '';
    // Optimistic: a 401 with the new token opens the panel again.
    state.authRequired = false;
    setHidden(ui.authPanel, true);
    announce('API token set for this tab.');
    renderHeader();
    pollSoon();
  }

  function onForgetToken() {
    setToken('');
    ui.authInput.value = '';
    etagCache.clear();
    if (!state.authRequired) setHidden(ui.authPanel, true);
    announce('API token forgotten.');
    renderHeader();
    pollSoon();
  }

  /* ----- Event wiring (delegated: rows are created and removed often) ----- */

  function onClick(ev) {
    const btn = ev.target.closest('button[data-action]');
    if (!btn || btn.disabled || btn.getAttribute('aria-disabled') === 'true') return;
    const a = btn.dataset.action;
    const feedId = btn.dataset.feedId;
    const taskId = btn.dataset.taskId;
    switch (a) {
      case 'consume': doConsume(feedId); break;
      case 'stop': doCancel(taskId, 'stop_now', feedId); break;
      case 'cancel': doCancel(taskId, 'cancel_job', feedId); break;
      case 'test': doTest(feedId); break;
      case 'remove': doRemove(feedId); break;
      case 'copy': doCopy(btn, taskId); break;
      case 'dismiss': dismissAlert(btn.closest('.alert')); break;
      case 'audit-load': loadAudit(null); break;
      case 'audit-more': loadAudit(auditCursor); break;
      case 'token':
        setHidden(ui.authPanel, false);
        ui.authInput.focus();
        break;
      default: break;
    }
  }

  /**
   * The audit view (README "Audit"): loaded on demand, not polled — a trail
   * is read when someone asks who did what. Shown to admins only (the
   * health answer names the caller's role; the server refuses the rest).
   */
  let auditCursor = null;
  async function loadAudit(cursor) {
    let data;
    try {
      ({ data } = await api.audit(cursor));
    } catch (e) {
      showAlert('Loading the audit', e.message || String(e), e.code, 'error');
      return;
    }
    const entries = data && Array.isArray(data.entries) ? data.entries : [];
    if (!cursor) ui.auditBody.textContent = '';
    for (const a of entries) {
      const target = [a.feed_id, a.task_id && shortId(a.task_id), a.mode].filter(Boolean).join(' ');
      const outcome = a.outcome === 'ok' ? String(a.status) + ' ok' : String(a.status) + ' ' + a.outcome;
      ui.auditBody.append(el('tr', { 'data-testid': 'audit-row', 'data-outcome': a.outcome || '' }, [
        el('td', { class: 'mono' }, [a.time ? fmtAbsolute(Date.parse(a.time)) : '']),
        el('td', {}, [a.who || '']),
        el('td', {}, [a.role || '']),
        el('td', { class: 'mono' }, [a.address || '']),
        el('td', {}, [(a.via === 'cli' ? 'cli ' : '') + (a.action || '')]),
        el('td', { class: 'mono' }, [target]),
        el('td', {}, [outcome]),
      ]));
    }
    if (!ui.auditBody.children.length) {
      ui.auditBody.append(el('tr', { class: 'empty-row' }, [el('td', { colspan: '7' }, ['No entries.'])]));
    }
    auditCursor = data && typeof data.next_cursor === 'string' ? data.next_cursor : null;
    setHidden(ui.auditMore, !auditCursor);
  }

  /* ===================================================================== */
  /* 7. Poll loop                                                          */
  /* ===================================================================== */

  // One loop, never overlapping: the next round is scheduled only after the
  // previous one finished. pollSoon() during a round asks for another one
  // right after it instead of starting a parallel one.
  let pollTimer = null;
  let polling = false;
  let pollAgain = false;

  function nextDelay() {
    if (document.hidden) return POLL_HIDDEN_MS;
    if (!state.reachable) return POLL_IDLE_MS;
    return anythingActive() ? POLL_ACTIVE_MS : POLL_IDLE_MS;
  }

  function schedule(ms) {
    clearTimeout(pollTimer);
    pollTimer = setTimeout(pollNow, ms);
  }

  function pollSoon() {
    if (polling) pollAgain = true;
    else schedule(POLL_AGAIN_MS);
  }

  async function pollNow() {
    clearTimeout(pollTimer);
    if (polling) { pollAgain = true; return; }
    polling = true;
    try {
      await pollRound();
    } catch (e) {
      // A bug in rendering must not stop the loop; show it, do not hide it.
      reportError('Dashboard', e);
    } finally {
      polling = false;
    }
    if (pollAgain) { pollAgain = false; schedule(POLL_AGAIN_MS); }
    else schedule(nextDelay());
  }

  // A failed poll is reported under the tag "poll:CONTEXT" and taken down by
  // pollOk(CONTEXT) when the same request works again (polls repeat every
  // few seconds: an error that went away must not stay on screen).
  function pollError(context, e) {
    // Unreachable is shown by the banner; everything else as an alert.
    if (e instanceof NetworkError) return;
    if (e instanceof ApiError && e.status === 401) {
      // One alert for all polled URLs; it goes away once a token works.
      showAlert('API token required', e.message, e.code, 'error', 'auth');
      return;
    }
    reportError(context, e, 'poll:' + context);
  }
  function pollOk(context) {
    clearAlerts('poll:' + context);
  }

  async function pollRound() {
    const now = Date.now();
    // Health carries the worker counts: refresh it as soon as a run starts,
    // changes state or ends, so the header never says "0 active" next to a
    // running task for the rest of the health interval.
    // Also when the last answer disagrees with what we see (a run that
    // started and ended between two rounds can leave "1 queued" behind).
    const active = activeTasks();
    const activeKey = active.map((t) => t.task_id + ':' + t.status).join(' ');
    const h0 = state.health;
    const disagrees = !!h0 && Number.isFinite(h0.active_workers) &&
      (h0.active_workers + count(h0.queued) > 0) !== (active.length > 0);
    const wantHealth = now - state.healthAt >= HEALTH_EVERY_MS || state.healthState !== 'ok' ||
      activeKey !== state.healthActiveKey || disagrees;
    // Feeds and the task list carry everything normally needed: one request each.
    const [feedsR, tasksR, healthR] = await Promise.allSettled([
      api.feeds(),
      api.tasks('?limit=20'),
      wantHealth ? api.health() : Promise.resolve(null),
    ]);

    if (healthR.status === 'fulfilled' && healthR.value) {
      const h = healthR.value.data || {};
      state.health = h;
      state.healthAt = Date.now();
      state.healthActiveKey = activeKey;
      state.healthState = h.status === 'ok' && (h.store === undefined || h.store === 'ok') ? 'ok' : 'degraded';
      setHidden(ui.auditSection, h.role !== 'admin');
      pollOk('Health check');
    } else if (healthR.status === 'rejected') {
      const e = healthR.reason;
      state.healthAt = Date.now();
      if (e instanceof NetworkError) state.healthState = 'unreachable';
      else if (e instanceof ApiError && e.status === 401) state.healthState = 'auth';
      else {
        state.healthState = 'degraded';
        pollError('Health check', e);
      }
    }

    if (feedsR.status === 'fulfilled') {
      const d = feedsR.value.data;
      state.feeds = (d && Array.isArray(d.feeds) ? d.feeds : []).filter((f) => f && typeof f.id === 'string');
      state.feedsLoaded = true;
      setText(ui.feedsUpdated, 'updated ' + new Date().toLocaleTimeString());
      pollOk('Loading feeds');
      document.dispatchEvent(new CustomEvent('threatfeed:feeds'));
    } else {
      pollError('Loading feeds', feedsR.reason);
    }

    if (tasksR.status === 'fulfilled') {
      const d = tasksR.value.data;
      const list = (d && Array.isArray(d.tasks) ? d.tasks : []).filter((t) => t && typeof t.task_id === 'string');
      list.forEach(mergeTask);
      state.recentIds = list.map((t) => t.task_id);
      pollOk('Loading tasks');
      await refreshMissing(new Set(state.recentIds));
    } else {
      pollError('Loading tasks', tasksR.reason);
    }

    pruneTasks();
    announceTransitions();
    render();
  }

  /**
   * Tasks that are (or were, last we knew) active but are not in the last-20
   * list: many feeds, or a run that ended and scrolled out. Fetch the active
   * list once, then task-status only for what is still unexplained (so we can
   * show how it ended).
   */
  async function refreshMissing(seen) {
    const missing = new Set();
    for (const f of state.feeds) {
      const id = f.active_task_id;
      const known = id && state.tasks.get(id);
      if (id && !seen.has(id) && !(known && TERMINAL.has(known.status))) missing.add(id);
    }
    for (const t of state.tasks.values()) if (ACTIVE.has(t.status) && !seen.has(t.task_id)) missing.add(t.task_id);
    for (const id of state.pendingCancel.keys()) if (!seen.has(id)) missing.add(id);
    if (!missing.size) return;

    try {
      const { data } = await api.tasks('?active=1');
      for (const t of (data && Array.isArray(data.tasks) ? data.tasks : [])) {
        mergeTask(t);
        missing.delete(t.task_id);
      }
      pollOk('Loading active tasks');
    } catch (e) {
      pollError('Loading active tasks', e);
      return;
    }

    let n = 0;
    for (const id of missing) {
      if (n++ >= MAX_STATUS_FETCHES) break;
      try {
        const { data } = await api.taskStatus(id);
        mergeTask(data);
        pollOk('Task ' + shortId(id));
      } catch (e) {
        if (e instanceof ApiError && e.status === 404) forgetTask(id); // history cleared
        else { pollError('Task ' + shortId(id), e); if (e instanceof NetworkError) return; }
      }
    }
  }

  /** Keep only tasks something still shows or waits for. */
  function pruneTasks() {
    const keep = new Set(state.recentIds);
    for (const f of state.feeds) {
      if (f.active_task_id) keep.add(f.active_task_id);
      if (f.last_task_id) keep.add(f.last_task_id);
    }
    for (const id of state.pendingCancel.keys()) keep.add(id);
    for (const [id, t] of state.tasks) {
      if (!keep.has(id) && !ACTIVE.has(t.status)) {
        state.tasks.delete(id);
        state.lastStatus.delete(id);
      }
    }
  }

  /* ===================================================================== */
  /* 8. Boot                                                               */
  /* ===================================================================== */

  // What the indicator views (explore.js, loaded after this file) share
  // with the rest of the dashboard: one API client, one way to show errors.
  window.threatfeed = Object.freeze({
    request, apiUrl, ApiError, NetworkError, REQUEST_TIMEOUT_MS,
    el, setText, setHidden, setAttr, labelCells, badge, shortId, enc, parseTime, fmtAbsolute, fmtDuration, count,
    announce, showAlert, reportError, clearAlerts,
    feeds: () => state.feeds, feedName, outcomeText, progressCounts, progressPages,
    taskStatus: (id) => api.taskStatus(id),
  });

  function boot() {
    document.addEventListener('click', onClick);
    ui.form.addEventListener('submit', onSubmitFeed);
    ui.form.elements.type.addEventListener('change', syncFormType);
    ui.authForm.addEventListener('submit', onSubmitToken);
    ui.authForget.addEventListener('click', onForgetToken);
    ui.formError.tabIndex = -1;

    document.addEventListener('visibilitychange', () => {
      // Visible again: the user wants fresh data now, not in 15 s.
      if (!document.hidden) pollNow();
      else if (!polling) schedule(nextDelay());
    });
    window.addEventListener('online', () => pollNow());

    syncFormType();
    renderHeader();
    pollNow();
  }

  boot();
})();
