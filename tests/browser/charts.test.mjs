// The run view's charts (README "Dashboard", issue 16): the run view opened
// from the Recent tasks table and from the task monitor, a finished run's
// objects/s (its one average point), a watched run's samples, and a feed's
// indicator count over its runs. Every expected number comes from the API
// of the same stack, read from node, never from the page.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { SCREENSHOT_DIR, armStall, consumeViaUi, dashTest, openDashboard, textOf, waitText, waitUntil } from './lib.mjs';

const UPSTREAM = ['--objects', '400', '--page-size', '100'];

async function runFeed(stack, id) {
  const { task_id: taskId } = await stack.apiOk('POST', `/api/threat-feeds/${id}/consume/`, {}, 202);
  const t = await stack.waitTask(taskId);
  assert.equal(t.status, 'completed', `run ${taskId}: ${JSON.stringify(t)}`);
  return t;
}

/** The chart's points and its table rows, read in one instant. */
function chart(page, which) {
  return page.evaluate((w) => {
    const svg = document.getElementById(w + '-chart-svg');
    const labelled = svg ? svg.getAttribute('aria-labelledby').split(' ').map((id) => {
      const n = document.getElementById(id);
      return n ? n.textContent : null;
    }) : null;
    return {
      role: svg ? svg.getAttribute('role') : null,
      labelled,
      points: svg ? Array.from(svg.querySelectorAll('[data-testid="chart-point"]'))
        .map((c) => ({ x: Number(c.dataset.x), y: Number(c.dataset.y) })) : [],
      rows: Array.from(document.querySelectorAll(`[data-testid="${w}-table"] tbody tr`))
        .map((tr) => Array.from(tr.cells).map((td) => td.textContent.trim())),
      note: document.querySelector(`[data-testid="${w}-note"]`).textContent,
    };
  }, which);
}

/** The feed's count after each of its runs, oldest first, from the API alone. */
function countsAfter(feed, tasks) {
  const runs = tasks.filter((t) => t.started_at).sort((a, b) => Date.parse(a.started_at) - Date.parse(b.started_at));
  let after = feed.indicator_count;
  const out = [];
  for (let i = runs.length - 1; i >= 0; i--) {
    out.unshift({ id: runs[i].task_id, created: runs[i].progress.indicators_created, updated: runs[i].progress.indicators_updated, after });
    if (runs[i].status !== 'cancelled') after -= runs[i].progress.indicators_created;
  }
  return out;
}

const near = (a, b) => Math.abs(a - b) <= 0.05 + Math.abs(b) * 0.01;

dashTest('run charts: a finished run\'s average objects/s and its feed\'s count over its runs, opened from Recent tasks; a watched run sampled, opened from the monitor',
  { shot: 'charts', timeout: 300_000, stack: { upstream: UPSTREAM } },
  async ({ stack, page, d, step }) => {
    const [run1, run2] = await step('create a feed and run it twice to completion', async () => {
      await stack.createFeed('demo');
      return [await runFeed(stack, 'demo'), await runFeed(stack, 'demo')];
    });

    await step('open the dashboard', () => openDashboard(page, stack, { feedId: 'demo' }));

    await step('the task id in Recent tasks opens the run view (the first run: it read the objects)', async () => {
      const link = d.recentRow(run1.task_id).locator('[data-testid="task-link"]');
      await link.waitFor({ state: 'visible' });
      assert.equal(await link.getAttribute('href'), '#task/' + run1.task_id);
      await link.click();
      await page.locator('[data-testid="run-detail"]').waitFor({ state: 'visible' });
      assert.equal(await textOf(page.locator('[data-testid="run-id"]')), run1.task_id);
      assert.equal(await page.evaluate(() => document.activeElement.id), 'run-heading', 'focus moves to the run');
    });

    await step('a finished run: one point, its average = objects / (finished_at − started_at)', async () => {
      const t = await stack.task(run1.task_id);
      assert.ok(t.progress.objects_processed > 0, 'the first run read objects');
      const secs = (Date.parse(t.finished_at) - Date.parse(t.started_at)) / 1000;
      assert.ok(secs > 0, `the run lasted (${t.started_at} → ${t.finished_at})`);
      const want = t.progress.objects_processed / secs;
      const c = await waitUntil(async () => { const x = await chart(page, 'rate'); return x.points.length ? x : null; },
        { what: 'the rate chart to be drawn' });
      assert.equal(c.role, 'img');
      assert.equal(c.labelled.length, 2, 'named by a title and a description');
      assert.ok(c.labelled.every((s) => s && s.length), `title and desc exist: ${JSON.stringify(c.labelled)}`);
      assert.equal(c.points.length, 1, 'one point: the run ended before the view opened');
      assert.ok(near(c.points[0].y, want), `point ${c.points[0].y} objects/s = ${want}`);
      assert.equal(c.rows.length, 1);
      const [at, objects, rate] = c.rows[0];
      assert.ok(near(Number(at), secs), `at ${at} s = ${secs}`);
      assert.equal(Number(objects), t.progress.objects_processed);
      assert.ok(Math.abs(Number(rate) - want) <= Math.max(0.05, want * 0.01), `table rate ${rate} = ${want}`);
      assert.match(c.note, new RegExp(`^Average over the run: ${t.progress.objects_processed} objects in `));
      assert.match(c.note, /keeps no progress history/, 'it says the one point is the average, not a sample');
    });

    await step('the feed\'s indicator count over its runs: a point and a row per run, as the API counts', async () => {
      const feed = await stack.feed('demo');
      const { tasks } = await stack.apiOk('GET', '/api/threat-feeds/tasks/?feed_id=demo&limit=1000', undefined, 200);
      const want = countsAfter(feed, tasks);
      assert.equal(want.length, 2);
      assert.equal(want[0].after, run1.progress.indicators_created, 'the feed started empty: the first run\'s count is what it created');
      const c = await waitUntil(async () => { const x = await chart(page, 'count'); return x.points.length === want.length ? x : null; },
        { what: 'the count chart with a point per run' });
      assert.deepEqual(c.points.map((p) => p.y), want.map((w) => w.after));
      assert.deepEqual(c.rows.map((r) => [Number(r[3]), Number(r[4]), Number(r[5])]),
        want.map((w) => [w.created, w.updated, w.after]));
      assert.deepEqual(c.rows.map((r) => r[2]), ['completed', 'completed']);
      const current = await page.locator('[data-testid="count-row"][aria-current="true"]').getAttribute('data-task-id');
      assert.equal(current, run1.task_id, 'the open run is marked');
      assert.match(c.note, new RegExp(`${feed.indicator_count} indicators now, over 2 runs`));
      fs.mkdirSync(SCREENSHOT_DIR, { recursive: true });
      await page.locator('[data-testid="run-detail"]').screenshot({ path: path.join(SCREENSHOT_DIR, 'charts-finished.png') });
    });

    await step('Escape closes the view, focus back on the task link', async () => {
      await page.keyboard.press('Escape');
      await page.locator('[data-testid="run-detail"]').waitFor({ state: 'hidden' });
      assert.equal(await page.evaluate(() => document.activeElement.dataset.testid), 'task-link');
    });

    const live = await step('a slow run (a page every 1.5 s, then a stall) opened from the task monitor\'s id', async () => {
      await stack.createFeed('live', { name: 'Slow feed' });
      await armStall(stack, { stallAt: 3, delayMs: 1500 });
      const id = await consumeViaUi(page, 'live');
      await d.taskRow(id).locator('[data-testid="task-link"]').click();
      await page.locator('[data-testid="run-detail"]').waitFor({ state: 'visible' });
      assert.equal(await textOf(page.locator('[data-testid="run-id"]')), id);
      return id;
    });

    await step('while it runs, the view samples it: a point per progress write seen', async () => {
      await page.locator('[data-testid="run-facts"] a').first().focus();
      const t = await stack.waitTask(live, (x) => x.progress.pages_done >= 3, { what: 'three pages done' });
      const c = await waitUntil(async () => {
        const x = await chart(page, 'rate');
        const last = x.rows[x.rows.length - 1];
        return x.points.length >= 2 && last && Number(last[1]) === t.progress.objects_processed ? x : null;
      }, { what: `samples up to ${t.progress.objects_processed} objects`, last: () => chart(page, 'rate') });
      assert.equal(c.points.length, c.rows.length, 'a table row per point');
      assert.match(c.note, /^So far /);
      assert.match(c.note, /sampled every 1 s/);
      const objs = c.rows.map((r) => Number(r[1]));
      for (let i = 1; i < objs.length; i++) assert.ok(objs[i] >= objs[i - 1], `objects never go back: ${objs}`);
      assert.equal(await page.evaluate(() => !!document.activeElement.closest('[data-testid="run-facts"]')), true,
        'the samples re-render the facts without dropping the keyboard focus');
      await waitText(page.locator('[data-testid="count-note"]'), /Slow feed: \d+ indicators now, over 1 run/);
    });

    await step('stopped: the last point is the run\'s end, at the API\'s final count', async () => {
      await stack.apiOk('POST', `/api/threat-feeds/cancel-task/${live}/`, { mode: 'stop_now' }, 202);
      const t = await stack.waitTask(live);
      assert.equal(t.status, 'stopped');
      const secs = (Date.parse(t.finished_at) - Date.parse(t.started_at)) / 1000;
      const c = await waitUntil(async () => {
        const x = await chart(page, 'rate');
        return /^Average over the run/.test(x.note) ? x : null;
      }, { what: 'the chart to show the ended run', last: () => chart(page, 'rate') });
      assert.ok(c.points.length >= 2, `the samples are kept: ${c.points.length} points`);
      const last = c.rows[c.rows.length - 1];
      assert.equal(Number(last[1]), t.progress.objects_processed);
      assert.ok(near(Number(last[0]), secs), `the last point is at the end: ${last[0]} s = ${secs}`);
      assert.match(c.note, new RegExp(`${t.progress.objects_processed} objects in `));
      const feed = await stack.feed('live');
      await waitText(page.locator('[data-testid="count-table"] tbody'), new RegExp(`stopped.*${feed.indicator_count}$`),
        { what: 'the count table to show the stopped run' });
      await page.locator('[data-testid="run-detail"]').screenshot({ path: path.join(SCREENSHOT_DIR, 'charts-sampled.png') });
    });
  });
