// Stopping and cancelling runs from the dashboard (issue 5, tests 1, 2, 4, 5).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {
  REPO, SCREENSHOT_DIR, armStall, cancelButtons, consumeViaUi, dashTest, deferred, isCancelRequest,
  openDashboard, pagesShown, textOf, waitOutcome, waitPages, waitText, waitUntil,
} from './lib.mjs';

const UPSTREAM = ['--objects', '1000', '--page-size', '100', '--page-delay-ms', '300'];

/**
 * Hold every cancel request the page sends until release() (the server sees
 * nothing meanwhile). `sent` resolves when the first one is on the wire.
 */
async function holdCancels(page) {
  const sent = deferred();
  const gate = deferred();
  const requests = [];
  const handler = async (route) => {
    const req = route.request();
    if (!isCancelRequest(req)) return route.fallback();
    requests.push({ url: req.url(), body: req.postData() });
    sent.resolve();
    await gate.promise;
    try { await route.continue(); } catch (_) { /* page closed meanwhile */ }
  };
  await page.route('**/api/threat-feeds/**', handler);
  return {
    requests,
    sent: sent.promise,
    release: async () => { gate.resolve(); await page.unroute('**/api/threat-feeds/**', handler); },
  };
}

/** Wait for at least one complete poll round (a task-list answer) after now. */
function nextPoll(page) {
  return page.waitForResponse((r) => /\/api\/threat-feeds\/tasks\/\?limit=/.test(r.url()), { timeout: 30_000 });
}

dashTest('Stop Now: the task row shows its ID and advancing progress, every stop button locks at once, the run ends stopped with the exact kept count',
  { shot: 'stop-now', stack: { upstream: UPSTREAM } }, async ({ t, stack, page, d, step }) => {
    const feedId = 'demo';
    await step('set up: a second feed with a completed run (for a realistic page)', async () => {
      await stack.createFeed('partner', { name: 'Partner sharing group' });
      await stack.createFeed(feedId);
      await stack.faults({ page_delay_ms: 20 });
      const { task_id: tid } = await stack.apiOk('POST', '/api/threat-feeds/partner/consume/', {}, 202);
      const done = await stack.waitTask(tid);
      assert.equal(done.status, 'completed', 'the set-up run of "partner" completed');
    });
    await step('keep the next run going: pages every 300 ms, page 4 stalls', () => armStall(stack, { stallAt: 4 }));
    await step('open the dashboard', () => openDashboard(page, stack, { feedId }));

    const taskId = await step('click Consume: the active task row appears with its task ID',
      () => consumeViaUi(page, feedId));
    await step('the task ID shown is the run the API knows', async () => {
      const f = await stack.feed(feedId);
      assert.equal(f.active_task_id, taskId, 'feed.active_task_id equals the ID in the task row');
    });

    await step('the progress (pages and counts) advances', async () => {
      const first = await waitPages(page, taskId, 1);
      const later = await waitPages(page, taskId, first + 1);
      assert.ok(later > first, `pages went from ${first} to ${later}`);
      const counts = await textOf(d.taskCell(taskId, 'counts'));
      const created = Number((counts.match(/(\d+)\s+new/) || [])[1]);
      assert.ok(created > 0, `the counts cell shows records created: "${counts}"`);
      const label = await d.taskCell(taskId, 'progress').evaluate((p) => p.tagName);
      assert.equal(label, 'PROGRESS', 'the progress cell is a <progress>');
    });

    const hold = await holdCancels(page);
    await step('click Stop Now in the feed row (the cancel request is held back)', async () => {
      await d.feedBtn(feedId, 'stop').click();
      await hold.sent;
    });

    await step('before the API answers, all four stop/cancel buttons are disabled and Stop reads "Stopping…"', async () => {
      const b = await cancelButtons(page, feedId, taskId);
      assert.deepEqual(b, {
        feedStop: { disabled: true, text: 'Stopping…' },
        feedCancel: { disabled: true, text: 'Cancel Job' },
        taskStop: { disabled: true, text: 'Stopping…' },
        taskCancel: { disabled: true, text: 'Cancel Job' },
      });
      const task = await stack.task(taskId);
      assert.equal(task.cancel, null, 'the server has not seen the cancel yet (the UI did not wait for it)');
    });

    await step('screenshot for the README (1280×800, buttons showing "Stopping…")', async () => {
      // Always under build/screenshots/; docs/dashboard-cancelling.png (tracked)
      // only when it is missing or TF_DOCS_SCREENSHOT=1, so a test run does
      // not leave a modified file in the checkout.
      await page.evaluate(() => window.scrollTo(0, 0));
      const file = path.join(SCREENSHOT_DIR, 'dashboard-cancelling.png');
      fs.mkdirSync(SCREENSHOT_DIR, { recursive: true });
      await page.screenshot({ path: file, fullPage: false });
      const docs = path.join(REPO, 'docs', 'dashboard-cancelling.png');
      if (process.env.TF_DOCS_SCREENSHOT === '1' || !fs.existsSync(docs)) {
        fs.mkdirSync(path.dirname(docs), { recursive: true });
        fs.copyFileSync(file, docs);
        t.diagnostic(`saved ${path.relative(REPO, docs)}`);
      }
    });

    await step('a poll round while the request is held does not unlock the buttons', async () => {
      await nextPoll(page);
      const b = await cancelButtons(page, feedId, taskId);
      for (const [k, v] of Object.entries(b)) assert.equal(v.disabled, true, `${k} still disabled after a poll`);
      assert.equal(b.feedStop.text, 'Stopping…');
    });

    await step('release the cancel request', () => hold.release());
    assert.equal(hold.requests.length, 1, 'exactly one cancel request was sent');
    assert.match(hold.requests[0].url, new RegExp(`/api/threat-feeds/${feedId}/cancel_consumption/`),
      'the feed row uses the feed-level cancel endpoint');
    assert.deepEqual(JSON.parse(hold.requests[0].body), { mode: 'stop_now' });

    const outcome = await step('the run ends "stopped: N kept" in the recent tasks',
      () => waitOutcome(page, taskId, /stopped: (\d+) kept/));
    await step('N equals the API\'s indicators_created + indicators_updated', async () => {
      const task = await stack.waitTask(taskId);
      assert.equal(task.status, 'stopped');
      const p = task.progress;
      assert.equal(Number(outcome[1]), p.indicators_created + p.indicators_updated,
        `shown "${outcome[0]}", API progress ${JSON.stringify(p)}`);
      assert.ok(Number(outcome[1]) > 0, 'something was kept');
      const f = await stack.feed(feedId);
      await waitText(d.feedCell(feedId, 'indicator-count'), new RegExp(`^\\s*${f.indicator_count}\\s*$`),
        { what: `the feed's indicator count to show ${f.indicator_count}` });
      await waitText(d.feedCell(feedId, 'feed-status'), /stopped: \d+ kept/, { what: 'the feed status' });
    });
    await step('afterwards the monitor is hidden and the feed can run again', async () => {
      await d.activeSection.waitFor({ state: 'hidden' });
      await waitUntil(async () => {
        const b = await cancelButtons(page, feedId, taskId);
        const consume = await d.feedBtn(feedId, 'consume').isEnabled();
        return consume && b.feedStop.disabled && b.feedStop.text === 'Stop Now' && b.feedCancel.text === 'Cancel Job';
      }, { what: 'Consume enabled again, Stop Now/Cancel Job disabled with their normal labels' });
    });
  });

dashTest('Cancel Job: ends "cancelled" and the feed\'s indicator count returns to its value before the run',
  { shot: 'cancel-job', stack: { upstream: ['--objects', '300', '--page-size', '100', '--page-delay-ms', '200'] } },
  async ({ stack, page, d, step }) => {
    const feedId = 'demo';
    await step('create the feed', () => stack.createFeed(feedId));
    await step('open the dashboard', () => openDashboard(page, stack, { feedId }));

    const first = await step('a first complete run (Consume)', async () => {
      const id = await consumeViaUi(page, feedId);
      await waitOutcome(page, id, /completed: 300 new, 0 updated/);
      return id;
    });
    const before = await step('the table shows the indicator count of the first run', async () => {
      const m = await waitText(d.feedCell(feedId, 'indicator-count'), /^\s*(\d+)\s*$/);
      const n = Number(m[1]);
      assert.equal(n, (await stack.feed(feedId)).indicator_count, 'table count equals the API\'s');
      assert.ok(n > 0, `count before the run is non-zero (${n}), task ${first}`);
      return n;
    });

    await step('the upstream gains 700 new objects; the next run stalls at its 4th page', async () => {
      await stack.upstreamCtl('data', { objects: 1000 });
      await armStall(stack, { stallAt: 3 });
    });
    const taskId = await step('second run: Consume', () => consumeViaUi(page, feedId));
    await step('the second run stores records: the count in the table goes up', async () => {
      await waitPages(page, taskId, 2);
      await waitUntil(async () => Number(await textOf(d.feedCell(feedId, 'indicator-count'))) > before,
        { what: `the indicator count to rise above ${before}` });
    });

    const sent = [];
    page.on('request', (r) => { if (isCancelRequest(r)) sent.push({ url: r.url(), body: r.postData() }); });
    await step('click Cancel Job in the feed row: it reads "Cancelling…" and both buttons are disabled', async () => {
      await d.feedBtn(feedId, 'cancel').click();
      const b = await cancelButtons(page, feedId, taskId);
      assert.deepEqual(b.feedCancel, { disabled: true, text: 'Cancelling…' });
      assert.deepEqual(b.feedStop, { disabled: true, text: 'Stop Now' });
      assert.deepEqual(b.taskCancel, { disabled: true, text: 'Cancelling…' });
      assert.equal(b.taskStop.disabled, true);
    });
    const outcome = await step('the run ends "cancelled: N rolled back"',
      () => waitOutcome(page, taskId, /cancelled: (\d+) rolled back/));
    await step('N is the API\'s rolled_back, and the request asked for cancel_job', async () => {
      const task = await stack.waitTask(taskId);
      assert.equal(task.status, 'cancelled');
      assert.equal(Number(outcome[1]), task.rolled_back, `shown "${outcome[0]}"`);
      assert.ok(task.rolled_back >= 200, `at least the two committed pages were rolled back (${task.rolled_back})`);
      assert.equal(sent.length, 1, 'one cancel request');
      assert.deepEqual(JSON.parse(sent[0].body), { mode: 'cancel_job' });
    });
    await step('the indicator count in the table is back to its value before the run', async () => {
      await waitText(d.feedCell(feedId, 'indicator-count'), new RegExp(`^\\s*${before}\\s*$`),
        { what: `the indicator count to return to ${before}` });
      assert.equal((await stack.feed(feedId)).indicator_count, before, 'API agrees');
      await waitText(d.feedCell(feedId, 'feed-status'), /cancelled: \d+ rolled back/, { what: 'the feed status' });
    });
  });

dashTest('Cancel Job from the task monitor row uses that task\'s cancel endpoint and ends "cancelled"',
  { shot: 'cancel-from-monitor', stack: { upstream: UPSTREAM } }, async ({ stack, page, d, step }) => {
    const feedId = 'demo';
    await step('create the feed; the run will stall at its 4th page', async () => {
      await stack.createFeed(feedId);
      await armStall(stack, { stallAt: 3 });
    });
    await step('open the dashboard', () => openDashboard(page, stack, { feedId }));
    const taskId = await step('Consume', () => consumeViaUi(page, feedId));
    await step('the run is storing pages', () => waitPages(page, taskId, 1));

    const sent = [];
    page.on('request', (r) => { if (isCancelRequest(r)) sent.push({ url: r.url(), body: r.postData() }); });
    await step('click Cancel Job in the monitor row: monitor and feed row lock at once', async () => {
      await d.taskBtn(taskId, 'cancel').click();
      const b = await cancelButtons(page, feedId, taskId);
      assert.deepEqual(b, {
        feedStop: { disabled: true, text: 'Stop Now' },
        feedCancel: { disabled: true, text: 'Cancelling…' },
        taskStop: { disabled: true, text: 'Stop Now' },
        taskCancel: { disabled: true, text: 'Cancelling…' },
      });
    });
    const outcome = await step('the run ends "cancelled: N rolled back"',
      () => waitOutcome(page, taskId, /cancelled: (\d+) rolled back/));
    await step('the request went to cancel-task/{task_id} with mode cancel_job; counts agree with the API', async () => {
      assert.equal(sent.length, 1, `one cancel request (${JSON.stringify(sent)})`);
      assert.match(sent[0].url, new RegExp(`/api/threat-feeds/cancel-task/${taskId}/?$`));
      assert.deepEqual(JSON.parse(sent[0].body), { mode: 'cancel_job' });
      const task = await stack.waitTask(taskId);
      assert.equal(task.status, 'cancelled');
      assert.equal(Number(outcome[1]), task.rolled_back);
      await waitText(d.feedCell(feedId, 'indicator-count'), /^\s*0\s*$/, { what: 'indicator count back to 0' });
      await d.activeSection.waitFor({ state: 'hidden' });
    });
  });

dashTest('a double click on Stop Now sends exactly one cancel request (feed row and monitor row)',
  { shot: 'double-click-stop', stack: { upstream: UPSTREAM } }, async ({ stack, page, d, step }) => {
    const feedId = 'demo';
    const sent = [];
    page.on('request', (r) => { if (isCancelRequest(r)) sent.push(r.url()); });
    await step('create the feed', () => stack.createFeed(feedId));
    await step('open the dashboard', () => openDashboard(page, stack, { feedId }));

    for (const where of ['feed row', 'monitor row']) {
      await step(`${where}: start a run that stalls`, () => armStall(stack, { stallAt: 2 }));
      const taskId = await step(`${where}: Consume`, () => consumeViaUi(page, feedId));
      await step(`${where}: the run is storing pages`, () => waitPages(page, taskId, 1));
      const n0 = sent.length;
      await step(`${where}: double-click Stop Now`, async () => {
        const btn = where === 'feed row' ? d.feedBtn(feedId, 'stop') : d.taskBtn(taskId, 'stop');
        await btn.dblclick();
      });
      await step(`${where}: the run ends stopped`, () => waitOutcome(page, taskId, /stopped: \d+ kept/));
      await step(`${where}: exactly one cancel request was sent`, async () => {
        assert.equal(sent.length - n0, 1, `cancel requests: ${JSON.stringify(sent.slice(n0))}`);
        assert.equal((await stack.task(taskId)).status, 'stopped');
      });
    }
  });
