/*
 * threatfeed dashboard: the indicator views (README "Dashboard", issue 16).
 *
 *   1. constants and helpers
 *   2. hit rows (shared by search and browse), a hit's STIX object on request
 *   3. search: one value (GET /api/indicators/?value=) or many (POST /api/indicators/lookup)
 *   4. browse: GET /api/indicators/?type=&feed_id=&limit=&cursor=, one page at a time
 *   5. run detail (#task/ID): the run that last wrote a hit, or a task table's run
 *   5b. its charts (inline SVG): the run's objects/s, its feed's indicator count over its runs
 *   6. exports: per feed and across feeds, downloaded with the tab's token
 *   7. boot
 *
 * It uses app.js's API client and messages (window.threatfeed), so errors,
 * the token and "API unreachable" behave as in the rest of the dashboard.
 * Like app.js it is a classic script (see there) and puts every piece of
 * server text in through textContent, never innerHTML: values, record ids
 * and objects come from upstream feeds.
 */
(function () {
  'use strict';

  const tf = window.threatfeed;
  if (!tf) return; // app.js did not load: it shows nothing either
  const { el, setText, setHidden, setAttr, ApiError, NetworkError } = tf;

  /* ===================================================================== */
  /* 1. Constants and helpers                                              */
  /* ===================================================================== */

  // The server takes at most this many values per bulk lookup
  // (TF_MAX_LOOKUP_VALUES, lib/limits.h); a larger paste goes in batches.
  const LOOKUP_BATCH = 1000;
  // A lookup answers from the index in one read, but a batch of 1000 values
  // with their sources is more than the 5 s a poll waits on a busy machine.
  const LOOKUP_TIMEOUT_MS = 30000;
  // An export streams the whole list (1M values take about 2 s to write,
  // README "Benchmarks"), and then it still has to cross the network.
  const EXPORT_TIMEOUT_MS = 120000;
  const TERMINAL_STATES = new Set(['completed', 'failed', 'stopped', 'cancelled']);
  const HIT_COLUMNS = 7;   // Value … STIX object (search adds "Looked up")

  const $ = (sel) => document.querySelector(sel);

  const ui = {
    searchForm: $('#search-form'),
    searchValues: $('#search-values'),
    searchError: $('#search-error'),
    searchResults: $('#search-results'),
    searchSummary: $('#search-summary'),
    searchBody: $('#search-body'),
    browseForm: $('#browse-form'),
    browseError: $('#browse-error'),
    browseFeed: $('#browse-feed'),
    browseResults: $('#browse-results'),
    browsePage: $('#browse-page'),
    browseBody: $('#browse-body'),
    browsePrev: $('[data-testid="browse-prev"]'),
    browseNext: $('[data-testid="browse-next"]'),
    run: $('#run-detail'),
    runHeading: $('#run-heading'),
    runId: $('[data-testid="run-id"]'),
    runFacts: $('#run-facts'),
    exportType: $('#export-type'),
    exportExpired: $('#export-expired'),
    exportsBody: $('#exports-body'),
  };

  /** "2026-12-05 21:40:03Z" (UTC, seconds): dates side by side compare at a glance. */
  function fmtTime(s) {
    const t = tf.parseTime(s);
    return t == null ? null : new Date(t).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
  }

  function timeCell(s, testid) {
    const text = fmtTime(s);
    return el('td', { class: 'nowrap', 'data-testid': testid }, [text ? el('time', { datetime: s, text }) : '—']);
  }

  function query(params) {
    const q = Object.entries(params).filter(([, v]) => v !== '' && v != null && v !== false)
      .map(([k, v]) => k + '=' + tf.enc(v === true ? 1 : v));
    return q.length ? '?' + q.join('&') : '';
  }

  /** An API error next to the form it belongs to (like the add-feed form), focused. */
  function showFormError(box, what, e) {
    box.textContent = '';
    let msg, code;
    if (e instanceof ApiError) { msg = e.message; code = e.code; }
    else if (e instanceof NetworkError) { msg = 'API unreachable: ' + e.message; code = 'network'; }
    else if (typeof e === 'string') { msg = e; code = 'client'; }
    else { console.error(e); msg = String((e && e.message) || e); code = 'client_error'; }
    box.append(el('strong', { text: what + ': ' }), document.createTextNode(msg + ' '),
      el('code', { 'data-testid': 'error-code', text: code }));
    setHidden(box, false);
    box.focus();
    tf.announce(what + ': ' + msg);
  }

  function hideFormError(box) {
    setHidden(box, true);
    box.textContent = '';
  }

  function busy(btn, on, label) {
    if (!btn.dataset.label) btn.dataset.label = btn.textContent;
    btn.disabled = on;
    setText(btn, on ? label : btn.dataset.label);
  }

  /* ===================================================================== */
  /* 2. Hit rows                                                           */
  /* ===================================================================== */

  let rowSeq = 0;

  /**
   * The rows of one hit: one per feed record that holds the value (a hit
   * lists at most 100, `feeds_total` counts them all). `looked` is the value
   * the user asked for (search) or undefined (browse).
   */
  function hitRows(hit, looked) {
    const rows = [];
    const sources = Array.isArray(hit.feeds) ? hit.feeds : [];
    for (const src of sources) {
      const objId = 'hit-object-' + (++rowSeq);
      const notes = [];
      if (hit.match === 'network') notes.push('network holding it');
      if (src.revoked) notes.push('revoked');
      else if (src.expired) notes.push('expired');
      if (src.valid_until) notes.push('valid until ' + fmtTime(src.valid_until));
      const cells = [];
      if (looked !== undefined) cells.push(el('td', { class: 'cell-value', 'data-testid': 'hit-query' }, [el('code', { text: looked })]));
      cells.push(
        el('td', { class: 'cell-value' }, [
          el('code', { 'data-testid': 'hit-value', text: hit.value }),
          el('div', { class: 'muted small' }, [
            el('span', { 'data-testid': 'hit-type', text: hit.type }),
            notes.length ? el('span', { 'data-testid': 'hit-notes', text: ' · ' + notes.join(' · ') }) : null,
          ]),
        ]),
        el('td', { 'data-testid': 'hit-feed' }, [
          el('a', { href: '#feed-' + src.feed_id, text: tf.feedName(src.feed_id) }),
          el('div', { class: 'mono muted small', text: src.feed_id }),
        ]),
        el('td', { class: 'cell-record' }, [el('code', { 'data-testid': 'hit-record', text: src.record_id })]),
        timeCell(src.first_seen, 'hit-first-seen'),
        timeCell(src.last_seen, 'hit-last-seen'),
        el('td', { class: 'nowrap' }, [src.task_id
          ? el('a', { href: '#task/' + src.task_id, class: 'mono', title: 'run ' + src.task_id,
            'aria-label': 'run ' + src.task_id, 'data-testid': 'hit-run', text: tf.shortId(src.task_id) })
          : '—']),
        el('td', { class: 'actions' }, [el('button', {
          type: 'button', class: 'btn btn-small', 'data-action': 'hit-object', 'data-testid': 'hit-object-button',
          'aria-expanded': 'false', 'aria-controls': objId, text: 'STIX object',
          'aria-label': 'STIX object of ' + src.record_id + ' in ' + tf.feedName(src.feed_id),
          'data-value': hit.value, 'data-type': hit.type, 'data-feed-id': src.feed_id, 'data-record-id': src.record_id,
        })]),
      );
      rows.push(el('tr', {
        'data-testid': 'hit-row', 'data-value': hit.value, 'data-feed-id': src.feed_id, 'data-record-id': src.record_id,
      }, cells));
      const span = HIT_COLUMNS + (looked !== undefined ? 1 : 0);
      rows.push(el('tr', { class: 'object-row', id: objId, hidden: true }, [
        el('td', { colspan: String(span) }, [el('pre', { class: 'object-json', tabindex: '0', 'data-testid': 'hit-object' })]),
      ]));
    }
    const more = Number(hit.feeds_total) - sources.length;
    if (more > 0) {
      rows.push(el('tr', { class: 'note-row' }, [el('td', { colspan: String(HIT_COLUMNS + (looked !== undefined ? 1 : 0)), class: 'muted small',
        text: hit.value + ': ' + more + ' more records hold it (a hit lists the first ' + sources.length + ')' })]));
    }
    return rows;
  }

  function appendRows(tbody, rows) {
    for (const tr of rows) {
      tbody.append(tr);
      if (tr.dataset.testid === 'hit-row') tf.labelCells(tbody, tr);
    }
  }

  /**
   * Show or hide a record's STIX object, fetched when first asked for: the
   * hit's value looked up again with include_object=1 (expired too, so an
   * expired hit shows its object as well), and the record picked from it.
   */
  async function toggleObject(btn) {
    const row = document.getElementById(btn.getAttribute('aria-controls'));
    if (!row) return;
    if (btn.getAttribute('aria-expanded') === 'true') {
      btn.setAttribute('aria-expanded', 'false');
      setHidden(row, true);
      return;
    }
    const pre = row.querySelector('pre');
    if (!row.dataset.loaded) {
      btn.disabled = true;
      setText(pre, 'Loading…');
      try {
        const { data } = await tf.request('GET', 'indicators/' + query({
          value: btn.dataset.value, type: btn.dataset.type, include_object: 1, include_expired: 1,
        }), { timeoutMs: LOOKUP_TIMEOUT_MS });
        const hits = data && Array.isArray(data.hits) ? data.hits : [];
        const hit = hits.find((h) => h.value === btn.dataset.value);
        const src = hit && (hit.feeds || []).find((s) => s.feed_id === btn.dataset.feedId && s.record_id === btn.dataset.recordId);
        if (!src) setText(pre, 'This record no longer holds the value (a later run or a rollback changed it).');
        else if (src.object == null) setText(pre, 'The stored record has no source object.');
        else { setText(pre, JSON.stringify(src.object, null, 2)); row.dataset.loaded = '1'; }
      } catch (e) {
        setText(pre, 'Could not load the object: ' + (e.message || String(e)) + (e.code ? ' (' + e.code + ')' : ''));
        tf.reportError('STIX object of ' + btn.dataset.recordId, e);
      } finally {
        btn.disabled = false;
      }
    }
    btn.setAttribute('aria-expanded', 'true');
    setHidden(row, false);
    btn.focus();
  }

  /* ===================================================================== */
  /* 3. Search                                                             */
  /* ===================================================================== */

  /** The values in the box: split on white space (no value of any type holds any), each once. */
  function searchValues() {
    const seen = new Set();
    for (const v of ui.searchValues.value.split(/\s+/)) if (v) seen.add(v);
    return Array.from(seen);
  }

  /** [{value, hits}] for the values, in their order. */
  async function lookup(values, type, includeExpired) {
    if (values.length === 1) {
      const { data } = await tf.request('GET', 'indicators/' + query({
        value: values[0], type, include_expired: includeExpired,
      }), { timeoutMs: LOOKUP_TIMEOUT_MS });
      return [{ value: values[0], hits: data && Array.isArray(data.hits) ? data.hits : [] }];
    }
    const out = [];
    for (let i = 0; i < values.length; i += LOOKUP_BATCH) {
      const body = { values: values.slice(i, i + LOOKUP_BATCH), include_expired: includeExpired };
      if (type) body.type = type;
      const { data } = await tf.request('POST', 'indicators/lookup', { body, timeoutMs: LOOKUP_TIMEOUT_MS });
      for (const r of (data && Array.isArray(data.results) ? data.results : [])) {
        out.push({ value: r.value, hits: Array.isArray(r.hits) ? r.hits : [] });
      }
    }
    return out;
  }

  let searchSeq = 0;

  async function onSearch(ev) {
    ev.preventDefault();
    const values = searchValues();
    hideFormError(ui.searchError);
    if (!values.length) {
      ui.searchValues.focus();
      showFormError(ui.searchError, 'Search', 'type or paste at least one value');
      return;
    }
    const e = ui.searchForm.elements;
    const seq = ++searchSeq;
    const submit = ui.searchForm.querySelector('[type="submit"]');
    busy(submit, true, 'Searching…');
    try {
      const results = await lookup(values, e.type.value, e.include_expired.checked);
      if (seq !== searchSeq) return; // a newer search answers instead
      renderSearch(results);
    } catch (err) {
      if (seq !== searchSeq) return;
      setHidden(ui.searchResults, true);
      showFormError(ui.searchError, values.length === 1 ? 'Lookup' : 'Bulk lookup', err);
    } finally {
      if (seq === searchSeq) busy(submit, false);
    }
  }

  function renderSearch(results) {
    ui.searchBody.textContent = '';
    let found = 0;
    for (const r of results) {
      if (r.hits.length) {
        found++;
        for (const h of r.hits) appendRows(ui.searchBody, hitRows(h, r.value));
      } else {
        const tr = el('tr', { class: 'none-row', 'data-testid': 'hit-none', 'data-value': r.value }, [
          el('td', { class: 'cell-value' }, [el('code', { text: r.value })]),
          el('td', { colspan: String(HIT_COLUMNS), class: 'muted', text: 'Not found in any feed.' }),
        ]);
        ui.searchBody.append(tr);
        tf.labelCells(ui.searchBody, tr);
      }
    }
    const n = results.length;
    const summary = n === 1
      ? (found ? '1 value looked up: found.' : '1 value looked up: not found in any feed.')
      : n + ' values looked up: ' + found + ' found, ' + (n - found) + ' not found.';
    setText(ui.searchSummary, summary);
    setHidden(ui.searchResults, false);
  }

  function onSearchKey(ev) {
    // Enter makes a new line (many values); Ctrl/Cmd+Enter searches.
    if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) {
      ev.preventDefault();
      ui.searchForm.requestSubmit();
    }
  }

  function clearSearch() {
    searchSeq++;
    ui.searchValues.value = '';
    hideFormError(ui.searchError);
    ui.searchBody.textContent = '';
    setHidden(ui.searchResults, true);
    busy(ui.searchForm.querySelector('[type="submit"]'), false);
    ui.searchValues.focus();
  }

  /* ===================================================================== */
  /* 4. Browse                                                             */
  /* ===================================================================== */

  // The API pages forward only (next_cursor); the cursors of the pages seen
  // so far make "Previous" possible. cursors[i] opens page i (0: null).
  const browse = { params: null, cursors: [null], index: 0, next: null, seq: 0, shown: 0 };

  function onBrowse(ev) {
    ev.preventDefault();
    const e = ui.browseForm.elements;
    browse.params = {
      type: e.type.value, feed_id: e.feed_id.value, limit: e.limit.value, include_expired: e.include_expired.checked,
    };
    browse.cursors = [null];
    browse.index = 0;
    loadPage(false);
  }

  async function loadPage(focusPager) {
    const seq = ++browse.seq;
    const submit = ui.browseForm.querySelector('[type="submit"]');
    hideFormError(ui.browseError);
    busy(submit, true, 'Loading…');
    ui.browsePrev.disabled = true;
    ui.browseNext.disabled = true;
    try {
      const cursor = browse.cursors[browse.index];
      const { data } = await tf.request('GET', 'indicators/' + query(Object.assign({}, browse.params, { cursor })),
        { timeoutMs: LOOKUP_TIMEOUT_MS });
      if (seq !== browse.seq) return;
      browse.next = data && typeof data.next_cursor === 'string' ? data.next_cursor : null;
      renderBrowse(data && Array.isArray(data.indicators) ? data.indicators : []);
      if (focusPager) {
        // Keep the keyboard where it was: the button pressed, or its
        // neighbour when it is now disabled (first or last page).
        const target = [focusPager, focusPager === ui.browseNext ? ui.browsePrev : ui.browseNext].find((b) => !b.disabled);
        (target || ui.browseBody.closest('.table-wrap')).focus();
      }
    } catch (err) {
      if (seq !== browse.seq) return;
      showFormError(ui.browseError, 'Browse', err);
      updatePager();
    } finally {
      if (seq === browse.seq) busy(submit, false);
    }
  }

  function renderBrowse(hits) {
    ui.browseBody.textContent = '';
    for (const h of hits) appendRows(ui.browseBody, hitRows(h));
    if (!hits.length) {
      const p = browse.params;
      const what = [p.type ? 'of this type' : '', p.feed_id ? 'in ' + tf.feedName(p.feed_id) : ''].filter(Boolean).join(' ');
      ui.browseBody.append(el('tr', { class: 'empty-row', 'data-testid': 'browse-empty' }, [el('td', {
        colspan: String(HIT_COLUMNS),
        text: browse.index ? 'No more values.' : 'No indicators' + (what ? ' ' + what : '') +
          (p.include_expired ? '.' : ' (expired and revoked ones are left out).'),
      })]));
    }
    browse.shown = hits.length;
    updatePager();
    setHidden(ui.browseResults, false);
  }

  function updatePager() {
    const limit = Number(browse.params.limit);
    const first = browse.index * limit + 1;
    const text = browse.shown
      ? 'Page ' + (browse.index + 1) + ' · values ' + first + '–' + (first + browse.shown - 1) + (browse.next ? '' : ' (last page)')
      : 'Page ' + (browse.index + 1);
    setText(ui.browsePage, text);
    ui.browsePrev.disabled = browse.index === 0;
    ui.browseNext.disabled = !browse.next;
  }

  function browseNext() {
    if (!browse.next) return;
    browse.cursors[browse.index + 1] = browse.next;
    browse.cursors.length = browse.index + 2;
    browse.index++;
    loadPage(ui.browseNext);
  }

  function browsePrev() {
    if (!browse.index) return;
    browse.index--;
    loadPage(ui.browsePrev);
  }

  /* ===================================================================== */
  /* 5. Run detail (#task/ID)                                              */
  /* ===================================================================== */

  let runOpener = null;   // the link that opened the view: focus goes back to it
  let runSeq = 0;

  function taskFromHash() {
    const m = /^#task\/([0-9a-fA-F-]{1,64})$/.exec(location.hash);
    return m ? m[1] : null;
  }

  function fact(dt, dd, testid) {
    if (dd == null || dd === '') return [];
    const node = dd instanceof Node ? dd : document.createTextNode(String(dd));
    return [el('dt', { text: dt }), el('dd', { 'data-testid': testid || null }, [node])];
  }

  async function openRun(id) {
    const seq = ++runSeq;
    resetRunCharts();
    setText(ui.runId, id);
    ui.runFacts.textContent = '';
    ui.runFacts.append(...fact('Status', 'Loading…'));
    setHidden(ui.run, false);
    ui.run.scrollIntoView({ block: 'nearest' });
    ui.runHeading.focus();
    try {
      const { data: t } = await tf.taskStatus(id);
      if (seq !== runSeq) return;
      renderRun(t);
      showRunCharts(t, seq);
    } catch (e) {
      if (seq !== runSeq) return;
      ui.runFacts.textContent = '';
      const msg = e instanceof ApiError && e.status === 404
        ? 'This run is no longer in the history (history_keep, or cleared).'
        : (e.message || String(e));
      ui.runFacts.append(...fact('Error', msg, 'run-error'));
    }
  }

  function renderRun(t) {
    const f = ui.runFacts;
    f.textContent = '';
    const p = t.progress || {};
    const outcome = tf.badge(t.status);
    setText(outcome, tf.outcomeText(t));
    outcome.classList.add('badge-wrap');
    const start = tf.parseTime(t.started_at), end = tf.parseTime(t.finished_at);
    const c = t.cancel;
    const warnings = Array.isArray(t.warnings) ? t.warnings : [];
    f.append(
      ...fact('Feed', el('a', { href: '#feed-' + t.feed_id, text: tf.feedName(t.feed_id) + ' (' + t.feed_id + ')' })),
      ...fact('Outcome', outcome, 'run-status'),
      ...fact('Stage', t.stage && t.stage !== t.status ? t.stage : null),
      ...fact('Message', t.message || null),
      ...fact('Created', fmtTime(t.created_at)),
      ...fact('Started', fmtTime(t.started_at)),
      ...fact('Finished', fmtTime(t.finished_at)),
      ...fact('Duration', start != null && end != null ? tf.fmtDuration(end - start) : null),
      ...fact('Counts', tf.progressCounts(t).replace(/\u00a0/g, ' '), 'run-counts'),
      ...fact('Pages', tf.progressPages(t).replace(/\u00a0/g, ' ') +
        (Number.isFinite(p.bytes_received) ? ' · ' + p.bytes_received + ' bytes' : '')),
      ...fact('Rolled back', t.status === 'cancelled' || t.rolled_back ? tf.count(t.rolled_back) : null),
      ...fact('Cancel', c ? [c.mode, c.requested_by && 'by ' + c.requested_by, c.requested_at && 'at ' + fmtTime(c.requested_at),
        c.forced ? 'worker killed after the grace period' : null].filter(Boolean).join(', ') : null),
      ...fact('Error', t.error || null),
    );
    if (warnings.length) {
      const list = el('ul', { class: 'warnings' });
      for (const w of warnings) list.append(el('li', { text: w }));
      f.append(...fact(warnings.length === 1 ? '1 warning' : warnings.length + ' warnings', list));
    }
  }

  function onHash() {
    const id = taskFromHash();
    if (id) {
      const a = document.activeElement;
      runOpener = a && a.matches && a.matches('a[href^="#task/"]') ? a : null;
      openRun(id);
    }
  }

  function closeRun() {
    runSeq++;
    resetRunCharts();
    setHidden(ui.run, true);
    if (taskFromHash()) history.replaceState(null, '', location.pathname + location.search);
    const back = runOpener && runOpener.isConnected ? runOpener : $('#main');
    runOpener = null;
    back.focus();
  }

  /* ===================================================================== */
  /* 5b. Run charts: objects/s of the run, indicator count over the runs    */
  /* ===================================================================== */

  // The API keeps no progress history: a task holds its counters as of its
  // last write (updated_at). While the view is open on an active run it
  // samples task-status this often and keeps every distinct write it sees;
  // a run opened after it ended has only its start and end (its average).
  const RATE_SAMPLE_MS = 1000;
  // Every run the history keeps (history_keep, 50 by default) fits in one
  // page of the task list (at most TF_MAX_LIST_LIMIT, 1000).
  const COUNT_RUNS_LIMIT = 1000;
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const CHART = { w: 560, h: 190, left: 64, right: 16, top: 14, bottom: 34 };

  const chartUi = {
    box: $('#run-charts'),
    rateSvg: $('#rate-svg'), rateNote: $('#rate-note'), rateBody: $('#rate-body'),
    countSvg: $('#count-svg'), countNote: $('#count-note'), countBody: $('#count-body'), countFeed: $('#count-feed'),
  };

  // samples: [{t: ms of the write (server clock), objects}], oldest first.
  const rate = { id: null, started: null, samples: [], timer: null };
  let chartSeq = 0;

  function svg(tag, attrs, children) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null) continue;
      if (k === 'text') node.textContent = String(v); else node.setAttribute(k, String(v));
    }
    for (const c of children || []) if (c) node.append(c);
    return node;
  }

  /** 0, 1.5, 12.3, 1234: a rate with the precision that matters at its size. */
  function fmtRate(v) {
    if (!Number.isFinite(v)) return '—';
    return v >= 100 ? String(Math.round(v)) : String(Math.round(v * 10) / 10);
  }

  /** An axis label: 0.25 stays 0.25 (fmtRate would print 0.3 for it). */
  function fmtTick(v) { return String(Math.round(v * 100) / 100); }

  /** Seconds: 0.13, 4.56, 72.3 (a short run keeps two decimals, so its rate can be checked). */
  function fmtSecs(ms) {
    return ms < 10000 ? String(Math.round(ms / 10) / 100) : String(Math.round(ms / 100) / 10);
  }

  /** The smallest 1, 2 or 5 × 10^n at or above v (an axis top that reads well). */
  function niceCeil(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  /**
   * A line chart with one marked point per value: points [{x, y, label,
   * current}], x and y numbers; names {id, title, desc, xLabel, yLabel,
   * xTicks: [[x, text]…] (optional)}. Screen readers get the title and the
   * description (role img); the numbers are in the table next to it.
   */
  function lineChart(points, o) {
    const { w, h, left, right, top, bottom } = CHART;
    const pw = w - left - right, ph = h - top - bottom;
    const xs = points.map((p) => p.x), ys = points.map((p) => p.y);
    // A rate is over the interval before its point: its axis starts at the run's start.
    const x0 = o.xFromZero ? 0 : Math.min(...xs);
    const x1 = Math.max(...xs) > x0 ? Math.max(...xs) : x0 + 1;
    const y1 = niceCeil(Math.max(0, ...ys));
    const px = (x) => left + (points.length === 1 && !o.xFromZero ? pw / 2 : ((x - x0) / (x1 - x0)) * pw);
    const py = (y) => top + ph - (y / y1) * ph;
    const r2 = (v) => Math.round(v * 10) / 10;
    const kids = [svg('title', { id: o.id + '-title', text: o.title }), svg('desc', { id: o.id + '-desc', text: o.desc })];
    for (let i = 0; i <= 4; i++) {
      const v = (y1 * i) / 4, y = r2(py(v));
      kids.push(svg('line', { class: 'chart-grid', x1: left, x2: w - right, y1: y, y2: y }));
      kids.push(svg('text', { class: 'chart-tick', x: left - 6, y: y + 4, 'text-anchor': 'end', text: fmtTick(v) }));
    }
    for (const [x, text] of o.xTicks || [[x0, fmtTick(x0)], [x1, fmtTick(x1)]]) {
      kids.push(svg('text', { class: 'chart-tick', x: r2(px(x)), y: h - bottom + 16, 'text-anchor': 'middle', text }));
    }
    kids.push(svg('text', { class: 'chart-axis', x: left + pw / 2, y: h - 3, 'text-anchor': 'middle', text: o.xLabel }));
    kids.push(svg('text', { class: 'chart-axis', x: 12, y: top + ph / 2, 'text-anchor': 'middle',
      transform: 'rotate(-90 12 ' + (top + ph / 2) + ')', text: o.yLabel }));
    kids.push(svg('line', { class: 'chart-base', x1: left, x2: w - right, y1: top + ph, y2: top + ph }));
    if (o.xFromZero && points.length) {
      // A rate holds over the interval before its point: draw it as steps from 0.
      let d = 'M' + r2(px(x0)) + ',' + r2(py(points[0].y));
      points.forEach((p, i) => {
        d += ' H' + r2(px(p.x));
        if (i + 1 < points.length) d += ' V' + r2(py(points[i + 1].y));
      });
      kids.push(svg('path', { class: 'chart-line', d }));
    } else if (points.length > 1) {
      kids.push(svg('polyline', { class: 'chart-line', points: points.map((p) => r2(px(p.x)) + ',' + r2(py(p.y))).join(' ') }));
    }
    for (const p of points) {
      kids.push(svg('circle', {
        class: 'chart-point' + (p.current ? ' chart-current' : ''), cx: r2(px(p.x)), cy: r2(py(p.y)), r: p.current ? 5 : 3.5,
        'data-testid': 'chart-point', 'data-x': p.x, 'data-y': p.y,
      }, [svg('title', { text: p.label })]));
    }
    return svg('svg', {
      id: o.id, class: 'chart', viewBox: '0 0 ' + w + ' ' + h, role: 'img', 'aria-labelledby': o.id + '-title ' + o.id + '-desc',
      'data-testid': o.id, preserveAspectRatio: 'xMinYMin meet',
    }, kids);
  }

  function tableRow(tbody, cells, attrs) {
    const tr = el('tr', attrs || null, cells.map((c) => el('td', null, [c instanceof Node ? c : String(c)])));
    tbody.append(tr);
    tf.labelCells(tbody, tr);
  }

  /* ----- a run's objects per second ----- */

  /** Keep the task's counters as one sample when they are a write not seen yet. */
  function addSample(t) {
    const started = tf.parseTime(t.started_at);
    if (started == null) return;
    rate.started = started;
    const terminal = tf.parseTime(t.finished_at);
    const at = terminal != null ? terminal : tf.parseTime(t.updated_at);
    const objects = Number((t.progress || {}).objects_processed);
    if (at == null || !Number.isFinite(objects)) return;
    const last = rate.samples[rate.samples.length - 1];
    if (last && at <= last.t) {
      if (at === last.t) last.objects = objects; // the same write, read again
      return;
    }
    rate.samples.push({ t: at, objects });
  }

  /** [{x: s after start, y: objects/s since the point before, objects}], from the samples. */
  function ratePoints() {
    const out = [];
    let prev = { t: rate.started, objects: 0 };
    for (const s of rate.samples) {
      if (s.t <= prev.t) continue; // same instant as the start: no interval to divide by
      out.push({ x: (s.t - rate.started) / 1000, y: (s.objects - prev.objects) / ((s.t - prev.t) / 1000), objects: s.objects });
      prev = s;
    }
    return out;
  }

  function renderRate(t) {
    chartUi.rateSvg.textContent = '';
    chartUi.rateBody.textContent = '';
    const active = !TERMINAL_STATES.has(t.status);
    if (rate.started == null) {
      setText(chartUi.rateNote, 'The run has not started: no objects yet.');
      return;
    }
    const pts = ratePoints();
    const last = rate.samples[rate.samples.length - 1];
    const avg = last && last.t > rate.started ? last.objects / ((last.t - rate.started) / 1000) : null;
    for (const p of pts) {
      p.label = fmtSecs(p.x * 1000) + ' s: ' + p.objects + ' objects, ' + fmtRate(p.y) + ' objects/s';
      tableRow(chartUi.rateBody, [fmtSecs(p.x * 1000), p.objects, fmtRate(p.y)], { 'data-testid': 'rate-row' });
    }
    const watched = pts.length > 1 || active;
    const summary = last && avg != null
      ? (active ? 'So far ' : 'Average over the run: ') + last.objects + ' objects in ' + fmtSecs(last.t - rate.started) +
        ' s = ' + fmtRate(avg) + ' objects/s.'
      : 'The run ' + (active ? 'has processed no objects yet.' : 'was too short to measure (start and end at the same instant).');
    const how = watched
      ? ' Points: the progress writes this view saw while it was open (sampled every ' + RATE_SAMPLE_MS / 1000 +
        ' s), each the rate since the point before' + (active ? '; updating while the run is active.' : '.')
      : ' The run ended before this view was opened: the server keeps no progress history, so the one point is its average.';
    setText(chartUi.rateNote, summary + how);
    if (!pts.length) return;
    chartUi.rateSvg.append(lineChart(pts, {
      id: 'rate-chart-svg', xFromZero: true,
      title: 'Objects per second of run ' + t.task_id,
      desc: summary + ' ' + pts.length + (pts.length === 1 ? ' point.' : ' points.'),
      xLabel: 'seconds after the start', yLabel: 'objects/s',
    }));
  }

  function stopSampling() {
    if (rate.timer) clearTimeout(rate.timer);
    rate.timer = null;
  }

  /** Sample task-status while the run is active and its view open. */
  function sampleLater(id, seq) {
    stopSampling();
    rate.timer = setTimeout(async () => {
      rate.timer = null;
      if (seq !== runSeq) return;
      try {
        const { data: t } = await tf.taskStatus(id);
        if (seq !== runSeq) return;
        // The facts are rebuilt with each sample: keep the keyboard on the feed link.
        const hadFocus = ui.runFacts.contains(document.activeElement);
        renderRun(t);
        if (hadFocus) (ui.runFacts.querySelector('a') || ui.runHeading).focus();
        showRunCharts(t, seq);
      } catch (e) {
        if (seq !== runSeq) return;
        // A missed sample is only a wider interval: say so, try again.
        setText(chartUi.rateNote, 'Sampling paused: ' + (e.message || String(e)) + ' (retrying).');
        sampleLater(id, seq);
      }
    }, RATE_SAMPLE_MS);
  }

  /* ----- a feed's indicator count over its runs ----- */

  /**
   * The feed's indicator_count after each run of its history. A run adds its
   * indicators_created unless it ended cancelled (rolled back; README
   * "counts": indicator_count = the sum of created of the runs not
   * cancelled), so counting back from today's indicator_count gives the
   * count after each run, also when older runs left the history.
   */
  function countPoints(feed, tasks, currentId) {
    const runs = tasks.filter((x) => tf.parseTime(x.started_at) != null)
      .sort((a, b) => tf.parseTime(a.started_at) - tf.parseTime(b.started_at));
    let after = Number(feed.indicator_count) || 0;
    const out = [];
    for (let i = runs.length - 1; i >= 0; i--) {
      const r = runs[i], p = r.progress || {};
      const created = Number(p.indicators_created) || 0;
      out.unshift({ run: r, x: i + 1, y: after, created, updated: Number(p.indicators_updated) || 0, current: r.task_id === currentId });
      after -= r.status === 'cancelled' ? 0 : created;
    }
    return { points: out, before: after };
  }

  async function loadCounts(t, seq) {
    const feedId = t.feed_id;
    setText(chartUi.countFeed, tf.feedName(feedId));
    try {
      // The list first: a run committing between the two answers then shows
      // in the count as well, not in neither.
      const { data: list } = await tf.request('GET', 'threat-feeds/tasks/' + query({ feed_id: feedId, limit: COUNT_RUNS_LIMIT }));
      const { data: feed } = await tf.request('GET', 'threat-feeds/' + tf.enc(feedId) + '/');
      if (seq !== chartSeq) return;
      renderCounts(feed, list && Array.isArray(list.tasks) ? list.tasks : [], t.task_id);
    } catch (e) {
      if (seq !== chartSeq) return;
      chartUi.countSvg.textContent = '';
      chartUi.countBody.textContent = '';
      setText(chartUi.countNote, e instanceof ApiError && e.status === 404
        ? 'The feed has been removed: its count is gone.'
        : 'Could not load the feed\'s runs: ' + (e.message || String(e)) + (e.code ? ' (' + e.code + ')' : ''));
    }
  }

  function renderCounts(feed, tasks, currentId) {
    chartUi.countSvg.textContent = '';
    chartUi.countBody.textContent = '';
    const { points, before } = countPoints(feed, tasks, currentId);
    for (const p of points) {
      const r = p.run, active = !TERMINAL_STATES.has(r.status);
      p.label = 'run ' + p.x + ' (' + r.task_id + '), ' + tf.outcomeText(r) + ': ' + p.y + ' indicators after it';
      tableRow(chartUi.countBody, [
        el('a', { href: '#task/' + r.task_id, class: 'mono', 'aria-label': 'run ' + r.task_id, text: tf.shortId(r.task_id) }),
        active ? 'running' : (fmtTime(r.finished_at) || '—'), r.status, p.created, p.updated,
        p.y + (active ? ' so far' : ''),
      ], { 'data-testid': 'count-row', 'data-task-id': r.task_id, 'aria-current': p.current ? 'true' : null });
    }
    const name = feed.name || feed.id;
    const summary = points.length
      ? name + ': ' + feed.indicator_count + ' indicators now, over ' + points.length + (points.length === 1 ? ' run' : ' runs') +
        ' in the history; ' + before + ' before the oldest of them.'
      : name + ': no run has started yet.';
    setText(chartUi.countNote, summary + ' Each point is the count after a run: today\'s indicator_count less what ' +
      'the later runs created (a cancelled run adds nothing, its records were rolled back).');
    if (!points.length) return;
    const ticks = points.length <= 12 ? points.map((p) => [p.x, String(p.x)]) : [[1, '1'], [points.length, String(points.length)]];
    chartUi.countSvg.append(lineChart(points, {
      id: 'count-chart-svg', xTicks: ticks,
      title: 'Indicator count of ' + name + ' after each run',
      desc: summary, xLabel: 'run (oldest first; the open run is the large point)', yLabel: 'indicators',
    }));
  }

  /** Draw both charts for task t (another sample, or the view just opened). */
  function showRunCharts(t, seq) {
    setHidden(chartUi.box, false);
    if (rate.id !== t.task_id) { rate.id = t.task_id; rate.started = null; rate.samples = []; }
    addSample(t);
    renderRate(t);
    const active = !TERMINAL_STATES.has(t.status);
    // The count chart when the view opens and once more when the run ends.
    if (!rate.countsFor || rate.countsFor !== t.task_id + ':' + active) {
      rate.countsFor = t.task_id + ':' + active;
      chartSeq++;
      loadCounts(t, chartSeq);
    }
    if (active) sampleLater(t.task_id, seq);
  }

  function resetRunCharts() {
    stopSampling();
    setHidden(chartUi.box, true);
    chartSeq++;
    rate.id = null; rate.started = null; rate.samples = []; rate.countsFor = null;
    for (const n of [chartUi.rateSvg, chartUi.rateBody, chartUi.countSvg, chartUi.countBody]) n.textContent = '';
    setText(chartUi.rateNote, '');
    setText(chartUi.countNote, '');
    setText(chartUi.countFeed, 'the feed');
  }

  /* ===================================================================== */
  /* 6. Exports                                                            */
  /* ===================================================================== */

  const FORMATS = [
    { format: 'txt', label: 'txt', ext: 'txt', what: 'plain text, one value per line' },
    { format: 'csv', label: 'csv', ext: 'csv', what: 'CSV' },
    { format: 'stix', label: 'stix', ext: 'json', what: 'STIX 2.1 bundle' },
  ];
  let exportsKey = null;

  function exportPath(feedId, format) {
    const base = feedId ? 'threat-feeds/' + tf.enc(feedId) + '/export' : 'export';
    return base + query({ format, type: ui.exportType.value, include_expired: ui.exportExpired.checked });
  }

  /** Rebuilt only when what it shows changed: a poll must not move the focus. */
  function renderExports() {
    const feeds = tf.feeds();
    const key = JSON.stringify([ui.exportType.value, ui.exportExpired.checked, feeds.map((f) => [f.id, f.name])]);
    if (key === exportsKey) return;
    exportsKey = key;
    const focusedTestId = ui.exportsBody.contains(document.activeElement) ? document.activeElement.dataset.testid : null;
    ui.exportsBody.textContent = '';
    const rows = [{ id: null, name: 'All feeds', note: 'a value several feeds hold is one line' }]
      .concat(feeds.map((f) => ({ id: f.id, name: f.name || f.id, note: f.id })));
    for (const r of rows) {
      const slug = r.id || 'all';
      const links = FORMATS.map((fm) => el('a', {
        class: 'btn btn-small', href: tf.apiUrl(exportPath(r.id, fm.format)),
        download: 'threatfeed-' + slug + (ui.exportType.value ? '-' + ui.exportType.value : '') + '.' + fm.ext,
        'data-export': fm.format, 'data-feed-id': r.id || '', 'data-testid': 'export-' + slug + '-' + fm.format,
        'aria-label': r.name + ': ' + fm.what, text: fm.label,
      }));
      const tr = el('tr', { 'data-testid': 'export-row-' + slug }, [
        el('td', null, [el('span', { class: 'feed-name', text: r.name }), el('div', { class: 'muted small', text: r.note })]),
        el('td', { class: 'actions' }, [el('div', { class: 'btn-row' }, links)]),
      ]);
      ui.exportsBody.append(tr);
      tf.labelCells(ui.exportsBody, tr);
    }
    if (focusedTestId) {
      const again = ui.exportsBody.querySelector('[data-testid="' + focusedTestId + '"]');
      if (again) again.focus();
    }
  }

  /**
   * Download an export. The link is the URL a device would poll, but a plain
   * navigation cannot carry the tab's token (Authorization header), so the
   * dashboard fetches it and saves the answer; an error is shown, not saved.
   */
  async function downloadExport(a) {
    if (a.getAttribute('aria-busy') === 'true') return;
    const name = a.getAttribute('download');
    const path = exportPath(a.dataset.feedId || null, a.dataset.export);
    a.setAttribute('aria-busy', 'true');
    try {
      const { data, headers } = await tf.request('GET', path, { raw: true, timeoutMs: EXPORT_TIMEOUT_MS });
      const type = (headers && headers.get('Content-Type')) || 'text/plain';
      const url = URL.createObjectURL(new Blob([data], { type }));
      const save = el('a', { href: url, download: name, hidden: true });
      document.body.append(save);
      save.click();
      save.remove();
      // The download has started from the URL by now; keep it a while for slow disks.
      setTimeout(() => URL.revokeObjectURL(url), 60000);
      const lines = data ? data.split('\n').filter(Boolean).length : 0;
      tf.announce('Downloaded ' + name + (a.dataset.export === 'stix' ? '.' : ': ' + lines + (lines === 1 ? ' line.' : ' lines.')));
      tf.clearAlerts('export');
    } catch (e) {
      tf.reportError('Export ' + name, e, 'export');
    } finally {
      a.removeAttribute('aria-busy');
    }
  }

  /* ===================================================================== */
  /* 7. Boot                                                               */
  /* ===================================================================== */

  function syncFeedOptions() {
    const sel = ui.browseFeed;
    const want = [['', 'every feed']].concat(tf.feeds().map((f) => [f.id, (f.name || f.id) + ' (' + f.id + ')']));
    const have = Array.from(sel.options).map((o) => [o.value, o.textContent]);
    if (JSON.stringify(want) === JSON.stringify(have)) return;
    const keep = sel.value;
    sel.textContent = '';
    for (const [value, text] of want) sel.append(el('option', { value, text }));
    sel.value = want.some(([v]) => v === keep) ? keep : '';
  }

  function onClick(ev) {
    const a = ev.target.closest('a[data-export]');
    if (a) {
      // Let a modified click (new tab, save link as…) do what the user asked.
      if (ev.button !== 0 || ev.ctrlKey || ev.metaKey || ev.shiftKey || ev.altKey) return;
      ev.preventDefault();
      downloadExport(a);
      return;
    }
    const btn = ev.target.closest('button[data-action]');
    if (!btn || btn.disabled) return;
    switch (btn.dataset.action) {
      case 'hit-object': toggleObject(btn); break;
      case 'search-clear': clearSearch(); break;
      case 'browse-next': browseNext(); break;
      case 'browse-prev': browsePrev(); break;
      case 'run-close': closeRun(); break;
      default: break;
    }
  }

  function boot() {
    document.addEventListener('click', onClick);
    ui.searchForm.addEventListener('submit', onSearch);
    ui.searchValues.addEventListener('keydown', onSearchKey);
    ui.browseForm.addEventListener('submit', onBrowse);
    ui.exportType.addEventListener('change', renderExports);
    ui.exportExpired.addEventListener('change', renderExports);
    ui.run.addEventListener('keydown', (ev) => { if (ev.key === 'Escape') closeRun(); });
    document.addEventListener('threatfeed:feeds', () => { syncFeedOptions(); renderExports(); });
    window.addEventListener('hashchange', onHash);
    renderExports();
    onHash();
  }

  boot();
})();
