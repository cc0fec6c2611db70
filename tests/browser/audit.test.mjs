// The audit view (README "Audit"): shown to an admin (a stack without
// tokens: everyone is admin, as before roles), loaded on demand, naming who
// did what from where and how it ended.
import assert from 'node:assert/strict';
import { consumeViaUi, dashTest, openDashboard, waitUntil } from './lib.mjs';

dashTest('an admin loads the audit: the feed created and the run started are listed, newest first',
  { shot: 'audit', stack: { upstream: ['--objects', '500', '--page-size', '100', '--page-delay-ms', '200'] } },
  async ({ stack, page, step }) => {
    const panel = page.locator('[data-testid="audit-panel"]');
    const rows = page.locator('[data-testid="audit-row"]');
    await step('create a feed through the API, open the dashboard: the audit panel is shown', async () => {
      await stack.createFeed('demo');
      await openDashboard(page, stack, { feedId: 'demo' });
      await panel.waitFor({ state: 'visible' });
      assert.equal(await rows.count(), 0, 'nothing loaded before asked');
    });
    await step('start a run in the page, then load the audit', async () => {
      await consumeViaUi(page, 'demo');
      await page.locator('[data-testid="audit-load"]').click();
      await waitUntil(async () => (await rows.count()) >= 2, { what: 'two audit rows' });
    });
    await step('the newest row is the consume, the one before it the create; both ok, from 127.0.0.1', async () => {
      const first = (await rows.nth(0).innerText()).replace(/\s+/g, ' ');
      const second = (await rows.nth(1).innerText()).replace(/\s+/g, ' ');
      assert.match(first, /feed_consume/);
      assert.match(first, /demo/);
      assert.match(first, /202 ok/);
      assert.match(first, /127\.0\.0\.1/);
      assert.match(second, /feed_create/);
      assert.match(second, /201 ok/);
    });
  });
