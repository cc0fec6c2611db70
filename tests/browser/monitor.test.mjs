// The "Active Background Tasks" monitor (issue 5, test 3) and the API-down
// banner (test 6).
import assert from 'node:assert/strict';
import {
  armStall, consumeViaUi, dashTest, openDashboard, textOf, waitOutcome, waitPages, waitText, waitUntil,
} from './lib.mjs';

dashTest('the task monitor appears while a run is active and is hidden when none is (runs started in the page or elsewhere)',
  { shot: 'task-monitor', stack: { upstream: ['--objects', '500', '--page-size', '100', '--page-delay-ms', '200'] } },
  async ({ stack, page, d, step }) => {
    await step('create two feeds', async () => {
      await stack.createFeed('demo');
      await stack.createFeed('other', { name: 'Other TAXII feed' });
    });
    await step('open the dashboard: no task is active, the monitor is hidden', async () => {
      await openDashboard(page, stack, { feedId: 'demo' });
      assert.equal(await d.activeSection.isHidden(), true, '#active-tasks is hidden');
      assert.equal(await d.activeSection.getAttribute('hidden'), '', 'it carries the hidden attribute');
    });

    await step('the next run pauses 5 s on its 2nd page, then completes', async () => {
      await stack.upstreamCtl('reset');
      await stack.faults({ page_delay_ms: 200, stall: { page: 1, after_bytes: -1, seconds: 5 } });
    });
    const taskId = await step('click Consume: the monitor is shown with the heading and one task row', async () => {
      const id = await consumeViaUi(page, 'demo');
      assert.equal(await d.activeSection.isVisible(), true);
      assert.equal(await textOf(page.locator('#active-heading')), 'Active Background Tasks');
      assert.equal(await d.taskRows.count(), 1, 'one task row');
      return id;
    });
    await step('the run completes: the monitor is hidden again, the run is in the recent tasks', async () => {
      await waitOutcome(page, taskId, /completed: 500 new, 0 updated/);
      await d.activeSection.waitFor({ state: 'hidden' });
      assert.equal(await d.taskRows.count(), 0, 'no task rows left');
      assert.equal((await stack.task(taskId)).status, 'completed');
      await waitText(page.locator('[data-testid="workers"]'), /Workers: 0 active, 0 queued/,
        { what: 'the workers pill to drop back to 0' });
    });

    const otherId = await step('a run started through the API (not in this page) appears in the monitor by itself', async () => {
      await stack.upstreamCtl('reset');
      await stack.faults({ page_delay_ms: 200, stall: { page: 2, after_bytes: -1, seconds: 600 } });
      const { task_id: id } = await stack.apiOk('POST', '/api/threat-feeds/other/consume/', {}, 202);
      await d.taskRow(id).waitFor({ state: 'visible' });
      assert.equal(await d.activeSection.isVisible(), true);
      assert.equal(await textOf(d.taskCell(id, 'task-id')), id, 'the row shows the full task ID');
      await waitPages(page, id, 1);
      return id;
    });
    await step('while it runs: the header counts a worker, the feed\'s "last run" is not "never"', async () => {
      await waitText(page.locator('[data-testid="workers"]'), /Workers: 1 active/, { what: 'the workers pill to count the run' });
      assert.notEqual(await textOf(d.feedCell('other', 'last-run')), 'never', 'last run of the running feed');
      assert.equal(await d.taskRows.count(), 1, 'one task row');
    });
    await step('it is stopped through the API: the monitor notices and hides', async () => {
      await stack.apiOk('POST', `/api/threat-feeds/cancel-task/${otherId}/`, { mode: 'stop_now' }, 202);
      await waitOutcome(page, otherId, /stopped: \d+ kept/);
      await d.activeSection.waitFor({ state: 'hidden' });
      await waitText(d.feedCell('other', 'feed-status'), /stopped: \d+ kept/, { what: 'the feed status' });
    });
  });

dashTest('API unreachable: a visible offline banner and error, then recovery when the API is back',
  { shot: 'api-down', stack: { upstream: ['--objects', '200', '--page-size', '100'] } },
  async ({ stack, page, d, step }) => {
    await step('create a feed and open the dashboard', async () => {
      await stack.createFeed('demo');
      await openDashboard(page, stack, { feedId: 'demo' });
      assert.equal(await d.offline.isHidden(), true, 'no offline banner while the API answers');
    });

    const abort = (route) => route.abort('connectionrefused');
    await step('the API becomes unreachable: the offline banner appears', async () => {
      await page.route('**/api/**', abort);
      await d.offline.waitFor({ state: 'visible' });
      assert.match(await textOf(d.offline), /API unreachable/);
      await waitText(d.health, /API: unreachable/, { what: 'the health pill to say "API: unreachable"' });
    });
    await step('an action meanwhile shows an error to the user (not only in the console)', async () => {
      await d.feedBtn('demo', 'consume').click();
      const alert = page.locator('[data-testid="alert"]').filter({ hasText: /Consume/ });
      await alert.first().waitFor({ state: 'visible' });
      assert.match(await textOf(alert.first()), /unreachable/i);
      await waitUntil(async () => (await d.feedBtn('demo', 'consume').textContent()).trim() === 'Consume',
        { what: 'the Consume button to recover from the failed request' });
    });
    await step('meanwhile a feed is added elsewhere', () => stack.createFeed('later', { name: 'Added while offline' }));

    await step('the API is back: the banner goes away and fresh data arrives', async () => {
      await page.unroute('**/api/**', abort);
      await d.offline.waitFor({ state: 'hidden' });
      await d.feedRow('later').waitFor({ state: 'visible' });
      await waitText(d.health, /API: ok/, { what: 'the health pill to say "API: ok"' });
      assert.equal(await d.feedRow('demo').isVisible(), true, 'the existing feed is still listed');
    });
    await step('and the dashboard works again: a run completes, the stale Consume error is gone', async () => {
      const id = await consumeViaUi(page, 'demo');
      assert.equal(await page.locator('[data-testid="alert"]').filter({ hasText: /Consume/ }).count(), 0,
        'the "Consume …: API unreachable" alert was taken down by the successful Consume');
      await waitOutcome(page, id, /completed: 200 new/);
    });

    const serverError = (route) => route.fulfill({
      status: 500, contentType: 'application/json',
      body: JSON.stringify({ error: 'store unavailable (simulated)', code: 'internal' }),
    });
    await step('the API answers the feed list with a JSON 500: the error is shown as an alert, not as offline', async () => {
      await page.route('**/api/threat-feeds/', serverError);
      const alert = page.locator('[data-testid="alert"]').filter({ hasText: /store unavailable \(simulated\)/ });
      await alert.first().waitFor({ state: 'visible' });
      assert.match(await textOf(alert.first()), /Loading feeds/);
      assert.equal(await d.offline.isHidden(), true, 'an API error is not "unreachable"');
      assert.equal(await d.feedRow('demo').isVisible(), true, 'the last known feeds stay on screen');
    });
    await step('the feed list works again: the alert goes away by itself', async () => {
      await page.unroute('**/api/threat-feeds/', serverError);
      await page.locator('[data-testid="alert"]').filter({ hasText: /store unavailable/ }).first()
        .waitFor({ state: 'detached' });
    });
  });
