// Adding feeds through the form (issue 5, test 7) and keyboard/screen-reader
// use (test 8).
import assert from 'node:assert/strict';
import {
  COLLECTION, armStall, dashTest, openDashboard, textOf, waitOutcome, waitPages, waitText, waitUntil,
} from './lib.mjs';

dashTest('adding a feed through the form: the new row appears; a server validation error is shown in the page',
  { shot: 'add-feed-form', stack: { upstream: ['--objects', '200', '--page-size', '100'] } },
  async ({ stack, page, d, step }) => {
    await step('open the dashboard (no feeds yet)', async () => {
      await openDashboard(page, stack);
      await waitText(page.locator('[data-testid="feeds-empty"]'), /No feeds yet/, { what: 'the empty-table text' });
    });

    await step('the URL hint of each API type is its base: the run adds /api/v1 or /api/v3 itself', async () => {
      for (const [type, path] of [['otx', /\/api\/v1/], ['virustotal', /\/api\/v3/]]) {
        await page.selectOption('#f-type', type);
        const hint = await page.getAttribute('#f-url', 'placeholder');
        assert.match(hint, /^https:\/\/[^/]+$/, `${type}: "${hint}" is a base URL`);
        assert.doesNotMatch(hint, path, `${type}: "${hint}"`);
      }
    });

    await step('fill in the form for a TAXII 2.1 feed and submit', async () => {
      await page.fill('#f-name', 'Form-made feed');
      await page.fill('#f-id', 'from-form');
      await page.selectOption('#f-type', 'taxii21');
      await page.fill('#f-url', stack.upstreamUrl);
      await page.fill('#f-collection', COLLECTION);
      await page.fill('#f-interval', '0');
      await page.fill('#f-page-size', '100');
      await page.uncheck('#f-enabled');
      await d.submit.click();
    });
    await step('the new feed row appears, the form is reset and the change is announced', async () => {
      await d.feedRow('from-form').waitFor({ state: 'visible' });
      assert.match(await textOf(d.feedRow('from-form')), /Form-made feed/);
      await waitText(d.live, /added/i, { what: 'an announcement in the live region' });
      assert.equal(await page.inputValue('#f-name'), '', 'name field cleared');
      assert.equal(await d.formError.isHidden(), true, 'no form error');
    });
    await step('the server stored what the form said', async () => {
      const f = await stack.feed('from-form');
      assert.equal(f.name, 'Form-made feed');
      assert.equal(f.type, 'taxii21');
      assert.equal(f.url, stack.upstreamUrl);
      assert.equal(f.collection, COLLECTION);
      assert.equal(f.enabled, false);
      assert.equal(f.interval_s, 0);
      assert.equal(f.options.page_size, 100);
    });
    await step('the new feed works: Consume from its row completes', async () => {
      await d.feedBtn('from-form', 'consume').click();
      await waitText(d.feedCell('from-form', 'feed-status'), /completed: 200 new/, { timeout: 90_000 });
    });

    await step('submit a feed with a bad URL (ftp://x)', async () => {
      await page.fill('#f-name', 'Bad URL feed');
      await page.fill('#f-id', 'bad-url');
      await page.fill('#f-url', 'ftp://x');
      await d.submit.click();
    });
    await step('the server\'s validation error is shown next to the form and at the URL field', async () => {
      await d.formError.waitFor({ state: 'visible' });
      const formError = await textOf(d.formError);
      assert.match(formError, /Not added/);
      assert.match(formError, /url/i);
      assert.match(formError, /http/i, `the server's explanation is shown: "${formError}"`);
      const fieldError = page.locator('#f-url-err');
      await fieldError.waitFor({ state: 'visible' });
      assert.match(await textOf(fieldError), /http or https/i);
      assert.equal(await page.getAttribute('#f-url', 'aria-invalid'), 'true', 'the URL input is marked invalid');
      assert.match(await page.getAttribute('#f-url', 'aria-describedby'), /f-url-err/, 'and points at its error');
      assert.equal(await page.evaluate(() => document.activeElement && document.activeElement.id), 'f-url',
        'focus moved to the URL input');
      const alert = page.locator('[data-testid="alert"]').filter({ hasText: /Add feed/ });
      assert.match(await textOf(alert.first()), /http or https/, 'also in the alert region');
      assert.equal(await page.inputValue('#f-name'), 'Bad URL feed', 'what the user typed is kept');
    });
    await step('no feed was created', async () => {
      const r = await stack.api('GET', '/api/threat-feeds/bad-url/');
      assert.equal(r.status, 404);
      assert.equal(await d.feedRow('bad-url').count(), 0);
    });
    await step('correcting the URL clears the error and adds the feed', async () => {
      await page.fill('#f-url', stack.upstreamUrl);
      await page.fill('#f-collection', COLLECTION);
      await d.submit.click();
      await d.feedRow('bad-url').waitFor({ state: 'visible' });
      assert.equal(await d.formError.isHidden(), true, 'form error gone');
      assert.equal(await page.locator('#f-url-err').isHidden(), true, 'field error gone');
      assert.equal(await page.getAttribute('#f-url', 'aria-invalid'), null, 'URL input no longer invalid');
      assert.equal(await page.locator('[data-testid="alert"]').filter({ hasText: /Add feed/ }).count(), 0,
        'the "Add feed" alert of the failed attempt is gone');
    });
  });

dashTest('keyboard: Tab reaches Consume and Enter starts the run; the progress bar has an accessible name',
  { shot: 'keyboard', stack: { upstream: ['--objects', '1000', '--page-size', '100', '--page-delay-ms', '300'] } },
  async ({ t, stack, page, d, step }) => {
    const feedId = 'demo';
    await step('create the feed; its run will stall at the 3rd page', async () => {
      await stack.createFeed(feedId);
      await armStall(stack, { stallAt: 2 });
    });
    await step('open the dashboard', () => openDashboard(page, stack, { feedId }));

    const focused = () => page.evaluate(() => {
      const a = document.activeElement;
      if (!a || a === document.body) return null;
      const row = a.closest('[data-testid]');
      return { tag: a.tagName, action: a.dataset.action || null, feed: a.dataset.feedId || null,
        text: a.textContent.trim().slice(0, 40), row: row ? row.dataset.testid : null };
    });
    const seen = [];
    await step('the first Tab stop is the "Skip to content" link', async () => {
      assert.equal(await page.evaluate(() => document.activeElement === document.body), true,
        'nothing has focus after loading');
      await page.keyboard.press('Tab');
      const f = await focused();
      assert.ok(f && f.tag === 'A' && /Skip to content/.test(f.text), `first Tab stop: ${JSON.stringify(f)}`);
      seen.push('A:skip-link');
    });
    await step('further Tabs reach the feed\'s Consume button', async () => {
      for (let i = 0; i < 60; i++) {
        await page.keyboard.press('Tab');
        const f = await focused();
        seen.push(f ? `${f.tag}:${f.action || f.text}` : 'body');
        if (f && f.action === 'consume' && f.feed === feedId) {
          t.diagnostic(`Tab path: ${seen.join(' → ')}`);
          return;
        }
      }
      assert.fail(`Consume not reached in 60 Tabs; focus went: ${seen.join(' → ')}`);
    });
    await step('the focused Consume button shows a visible focus outline', async () => {
      const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
      assert.notEqual(outline, 'none', 'focus is visible');
    });

    const taskId = await step('Enter starts the run: the task row appears', async () => {
      await page.keyboard.press('Enter');
      const row = d.taskRows.first();
      await row.waitFor({ state: 'visible' });
      return (await textOf(row.locator('[data-testid="task-id"]')));
    });
    await step('keyboard focus is not lost: it moves to this feed\'s Stop Now', async () => {
      const f = await waitUntil(async () => {
        const x = await focused();
        return x && x.action === 'stop' ? x : null;
      }, { what: 'focus on Stop Now', last: focused });
      assert.equal(f.feed, feedId);
    });

    await step('the <progress> has an accessible name in Chromium\'s accessibility tree', async () => {
      await waitPages(page, taskId, 1);
      const cdp = await page.context().newCDPSession(page);
      try {
        const { nodes } = await cdp.send('Accessibility.getFullAXTree');
        const bars = nodes.filter((n) => n.role && n.role.value === 'progressbar' && !n.ignored);
        assert.ok(bars.length >= 1, 'a progressbar is in the accessibility tree');
        const names = bars.map((n) => (n.name && n.name.value) || '');
        assert.ok(names.some((n) => n.includes(taskId) || /progress/i.test(n)),
          `the progressbar is named (names: ${JSON.stringify(names)})`);
        for (const n of names) assert.notEqual(n.trim(), '', 'no unnamed progressbar');
      } finally {
        await cdp.detach().catch(() => {});
      }
      const byRole = page.getByRole('progressbar', { name: new RegExp(`Progress of task ${taskId}`) });
      assert.equal(await byRole.count(), 1, 'getByRole finds it by its name');
    });
    await step('the live region announces the run', async () => {
      assert.equal(await d.live.getAttribute('aria-live'), 'polite');
      await waitText(d.live, new RegExp(`${taskId.slice(0, 8)}.*(queued|running)`), { what: 'an announcement of the run' });
    });

    await step('Enter on the focused Stop Now stops the run', async () => {
      await page.keyboard.press('Enter');
      await waitOutcome(page, taskId, /stopped: \d+ kept/);
      const f = await focused();
      assert.ok(f, 'focus is still on a control after the run ended (not dropped to <body>)');
    });
  });
