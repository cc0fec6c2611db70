// The indicator views (README "Dashboard", issue 16): search one value and
// many (bulk lookup), a hit's run and STIX object, browsing with paging, the
// export links, and an API error shown with its message. Every expected
// value comes from the API of the same stack, read from node, never from
// the page.
import assert from 'node:assert/strict';
import { dashTest, deferred, openDashboard, textOf, waitText, waitUntil } from './lib.mjs';

const UPSTREAM = ['--objects', '400', '--page-size', '100'];

/** Run feed `id` to completion through the API; returns the task. */
async function runFeed(stack, id) {
  const { task_id: taskId } = await stack.apiOk('POST', `/api/threat-feeds/${id}/consume/`, {}, 202);
  const t = await stack.waitTask(taskId);
  assert.equal(t.status, 'completed', `run ${taskId}: ${JSON.stringify(t)}`);
  return t;
}

/** The visible hit rows of a table as [{value, feed, record, run, first, last}]. */
function hitRows(page, body) {
  return page.locator(`[data-testid="${body}"] [data-testid="hit-row"]`).evaluateAll((rows) => rows.map((r) => {
    const q = (id) => r.querySelector(`[data-testid="${id}"]`);
    const time = (id) => { const t = q(id) && q(id).querySelector('time'); return t ? t.getAttribute('datetime') : null; };
    return {
      query: q('hit-query') ? q('hit-query').textContent.trim() : null,
      value: q('hit-value').textContent.trim(),
      type: q('hit-type').textContent.trim(),
      feed: q('hit-feed').textContent.trim(),
      record: q('hit-record').textContent.trim(),
      run: q('hit-run') ? q('hit-run').getAttribute('href') : null,
      first: time('hit-first-seen'),
      last: time('hit-last-seen'),
    };
  }));
}

async function search(page, text) {
  await page.locator('[data-testid="search-values"]').fill(text);
  await page.locator('[data-testid="search-submit"]').click();
}

dashTest('indicators: search one value and many, the run and the STIX object of a hit, browse with paging, exports, an API error',
  { shot: 'explore', timeout: 300_000, stack: { upstream: UPSTREAM } },
  async ({ stack, page, d, step }) => {
    const run = await step('create a feed and run it to completion', async () => {
      await stack.createFeed('demo');
      await stack.createFeed('gone', { name: 'Feed to delete' });
      return runFeed(stack, 'demo');
    });

    // One domain and one IPv4 address the index holds for the feed, as the API lists them.
    const known = await step('the API lists a domain and an address of the feed', async () => {
      const dom = await stack.apiOk('GET', '/api/indicators/?type=domain&feed_id=demo&limit=1', undefined, 200);
      const ip = await stack.apiOk('GET', '/api/indicators/?type=ipv4&feed_id=demo&limit=1', undefined, 200);
      assert.equal(dom.indicators.length, 1, 'the feed has a domain');
      assert.equal(ip.indicators.length, 1, 'the feed has an IPv4 address');
      return { domain: dom.indicators[0], ip: ip.indicators[0] };
    });
    const domain = known.domain.value;
    const src = known.domain.feeds[0];

    await step('open the dashboard', () => openDashboard(page, stack, { feedId: 'demo' }));

    await step('search the domain: one hit with its feed, record, times and the run that wrote it', async () => {
      await search(page, domain);
      await waitText(page.locator('[data-testid="search-summary"]'), /1 value looked up: found/);
      const rows = await hitRows(page, 'search-body');
      assert.equal(rows.length, known.domain.feeds.length, 'one row per feed record holding it');
      assert.deepEqual(rows[0], {
        query: domain, value: domain, type: known.domain.type, feed: 'Demo TAXII 2.1demo',
        record: src.record_id, run: '#task/' + src.task_id, first: src.first_seen, last: src.last_seen,
      });
      assert.equal(src.task_id, run.task_id, 'the API names the run that wrote it');
    });

    await step('the run link opens the run: its outcome and counts as the API has them', async () => {
      await page.locator('[data-testid="search-body"] [data-testid="hit-run"]').first().click();
      const panel = page.locator('[data-testid="run-detail"]');
      await panel.waitFor({ state: 'visible' });
      assert.equal(await textOf(page.locator('[data-testid="run-id"]')), run.task_id);
      const created = run.progress.indicators_created;
      await waitText(page.locator('[data-testid="run-status"]'), new RegExp(`completed: ${created} new`));
      assert.equal(await page.evaluate(() => document.activeElement.id), 'run-heading', 'focus moves to the run');
      await page.keyboard.press('Escape');
      await panel.waitFor({ state: 'hidden' });
      assert.equal(await page.evaluate(() => document.activeElement.dataset.testid), 'hit-run', 'focus goes back to the link');
      assert.equal(await page.evaluate(() => location.hash), '', 'the #task/ address is gone');
    });

    await step('"STIX object" shows the record\'s object as the API stores it, on request', async () => {
      const btn = page.locator('[data-testid="search-body"] [data-testid="hit-object-button"]').first();
      const pre = page.locator('[data-testid="search-body"] [data-testid="hit-object"]').first();
      assert.equal(await pre.isVisible(), false, 'not shown before asked');
      await btn.click();
      await waitText(pre, /"type"/);
      assert.equal(await btn.getAttribute('aria-expanded'), 'true');
      const shown = JSON.parse(await pre.textContent());
      const api = await stack.apiOk('GET', `/api/indicators/?value=${encodeURIComponent(domain)}&include_object=1`, undefined, 200);
      assert.deepEqual(shown, api.hits[0].feeds[0].object);
      assert.ok(String(shown.pattern).includes(domain), 'the object is the indicator holding the value');
      await btn.click();
      await pre.waitFor({ state: 'hidden' });
    });

    await step('bulk lookup: a known domain, a known address and an unknown value, in their order', async () => {
      const unknown = 'not-in-any-feed-' + Date.now() + '.invalid';
      await search(page, `${domain}\n${unknown}\n  ${known.ip.value}  `);
      await waitText(page.locator('[data-testid="search-summary"]'), /3 values looked up: 2 found, 1 not found/);
      const rows = await hitRows(page, 'search-body');
      assert.deepEqual(rows.map((r) => [r.query, r.value]), [
        ...known.domain.feeds.map(() => [domain, domain]),
        ...known.ip.feeds.map(() => [known.ip.value, known.ip.value]),
      ]);
      const none = page.locator('[data-testid="search-body"] [data-testid="hit-none"]');
      assert.equal(await none.count(), 1);
      assert.equal(await none.getAttribute('data-value'), unknown);
      assert.match(await textOf(none), /Not found in any feed/);
      const order = await page.locator('[data-testid="search-body"] tr:not(.object-row)').evaluateAll(
        (trs) => trs.map((tr) => tr.dataset.value));
      assert.deepEqual([...new Set(order)], [domain, unknown, known.ip.value], 'results in the order pasted');
    });

    await step('an invalid value: the API\'s 400 message is shown next to the search, with its code', async () => {
      const long = 'x'.repeat(3000) + '.example';
      const api = await stack.api('GET', `/api/indicators/?value=${long}`);
      assert.equal(api.status, 400);
      await search(page, long);
      const box = page.locator('[data-testid="search-error"]');
      await box.waitFor({ state: 'visible' });
      assert.ok((await textOf(box)).includes(api.data.error), `shows "${api.data.error}"`);
      assert.equal(await textOf(box.locator('[data-testid="error-code"]')), api.data.code);
      assert.equal(await page.evaluate(() => document.activeElement.dataset.testid), 'search-error', 'the error gets the focus');
      assert.equal(await page.locator('[data-testid="search-results"]').isVisible(), false, 'no stale results beside it');

      const bulk = await stack.api('POST', '/api/indicators/lookup', { values: [domain, long] });
      assert.equal(bulk.status, 400);
      await search(page, `${domain} ${long}`);
      await waitText(box, new RegExp(bulk.data.error.replace(/[[\]]/g, '\\$&')));
      assert.match(await textOf(box), /^Bulk lookup:/);
    });

    await step('browse the feed\'s domains 25 per page: the pages the API gives, forward and back', async () => {
      await page.locator('[data-testid="browse-type"]').selectOption('domain');
      await page.locator('[data-testid="browse-feed"]').selectOption('demo');
      await page.locator('[data-testid="browse-limit"]').selectOption('25');
      await page.locator('[data-testid="browse-submit"]').click();
      const p1 = await stack.apiOk('GET', '/api/indicators/?type=domain&feed_id=demo&limit=25', undefined, 200);
      assert.ok(p1.next_cursor, 'the feed has more than 25 domains (else this test proves no paging)');
      const values = async () => [...new Set((await hitRows(page, 'browse-body')).map((r) => r.value))];
      await waitUntil(async () => (await values()).length === 25, { what: 'the first page' });
      assert.deepEqual(await values(), p1.indicators.map((h) => h.value));
      await waitText(page.locator('[data-testid="browse-page"]'), /^Page 1 · values 1–25$/);
      assert.equal(await page.locator('[data-testid="browse-prev"]').isDisabled(), true);

      const p2 = await stack.apiOk('GET', `/api/indicators/?type=domain&feed_id=demo&limit=25&cursor=${p1.next_cursor}`, undefined, 200);
      await page.locator('[data-testid="browse-next"]').click();
      await waitText(page.locator('[data-testid="browse-page"]'), /^Page 2/);
      assert.deepEqual(await values(), p2.indicators.map((h) => h.value));
      assert.equal(await page.locator('[data-testid="browse-next"]').isDisabled(), !p2.next_cursor,
        'Next is offered exactly when the API has a next page');
      assert.equal(await page.evaluate(() => document.activeElement.dataset.testid),
        p2.next_cursor ? 'browse-next' : 'browse-prev', 'the keyboard stays on the pager');

      await page.locator('[data-testid="browse-prev"]').click();
      await waitText(page.locator('[data-testid="browse-page"]'), /^Page 1/);
      assert.deepEqual(await values(), p1.indicators.map((h) => h.value));
    });

    await step('browsing a type the feed does not have shows the empty state', async () => {
      await page.locator('[data-testid="browse-type"]').selectOption('sha512');
      await page.locator('[data-testid="browse-submit"]').click();
      const api = await stack.apiOk('GET', '/api/indicators/?type=sha512&feed_id=demo', undefined, 200);
      assert.equal(api.indicators.length, 0, 'the upstream sends no SHA-512 hashes');
      await waitText(page.locator('[data-testid="browse-empty"]'), /No indicators of this type in Demo TAXII 2\.1/);
    });

    await step('export links: the feed\'s domains as text and the global CSV download what the API serves', async () => {
      await page.locator('[data-testid="export-type"]').selectOption('domain');
      const link = page.locator('[data-testid="export-demo-txt"]');
      assert.match(await link.getAttribute('href'), /\/api\/threat-feeds\/demo\/export\?format=txt&type=domain$/,
        'the link is the URL a device polls');
      const want = await stack.api('GET', '/api/threat-feeds/demo/export?format=txt&type=domain');
      const [dl] = await Promise.all([page.waitForEvent('download'), link.click()]);
      assert.equal(dl.suggestedFilename(), 'threatfeed-demo-domain.txt');
      const text = await streamText(await dl.createReadStream());
      assert.equal(text, want.data);
      assert.ok(text.split('\n').includes(domain), 'the searched domain is in the list');

      const all = await stack.api('GET', '/api/export?format=csv&type=domain');
      const [dl2] = await Promise.all([page.waitForEvent('download'), page.locator('[data-testid="export-all-csv"]').click()]);
      assert.equal(await streamText(await dl2.createReadStream()), all.data);
      assert.match(all.data, /^value,type,feeds,/);
    });

    await step('an export the API refuses shows its error instead of saving it', async () => {
      // Feed "gone" is deleted behind the page's back, so its export answers
      // 404. The page's feed-list polls are held back meanwhile (they still
      // reach the server afterwards), or the next one would remove the row.
      const gate = deferred();
      const hold = async (route) => { await gate.promise; await route.continue(); };
      await page.route('**/api/threat-feeds/', hold);
      try {
        await stack.apiOk('DELETE', '/api/threat-feeds/gone/', undefined, 204);
        const api = await stack.api('GET', '/api/threat-feeds/gone/export?format=csv&type=domain');
        assert.equal(api.status, 404);
        let downloaded = false;
        page.on('download', () => { downloaded = true; });
        await page.locator('[data-testid="export-gone-csv"]').click();
        const alert = page.locator('[data-testid="alert"]').filter({ hasText: /Export threatfeed-gone-domain\.csv/ });
        await alert.first().waitFor({ state: 'visible' });
        assert.ok((await textOf(alert.first())).includes(api.data.error), `shows "${api.data.error}"`);
        assert.equal(await textOf(alert.first().locator('[data-testid="alert-code"]')), api.data.code);
        assert.equal(downloaded, false, 'nothing saved');
      } finally {
        gate.resolve();
        await page.unroute('**/api/threat-feeds/', hold);
      }
      await d.feedRow('gone').waitFor({ state: 'detached' });
      await page.locator('[data-testid="export-row-gone"]').waitFor({ state: 'detached' });
    });

    await step('Ctrl+Enter in the box searches; Clear empties the results', async () => {
      const box = page.locator('[data-testid="search-values"]');
      await box.fill(known.ip.value);
      await box.press('Control+Enter');
      await waitText(page.locator('[data-testid="search-summary"]'), /1 value looked up: found/);
      assert.equal((await hitRows(page, 'search-body'))[0].value, known.ip.value);
      await page.locator('[data-testid="search-clear"]').click();
      assert.equal(await page.locator('[data-testid="search-results"]').isVisible(), false);
      assert.equal(await box.inputValue(), '');
      assert.equal(await page.evaluate(() => document.activeElement.dataset.testid), 'search-values');
    });

    await step('a lookup that gets no answer says how long it waited (its own 30 s, not the polls\' 5 s)', async () => {
      const gate = deferred();
      const hold = async (route) => {
        await gate.promise;
        await route.abort().catch(() => { /* the page gave up on it already */ });
      };
      await page.route('**/api/indicators/?value=*', hold);
      try {
        await search(page, domain);
        const box = page.locator('[data-testid="search-error"]');
        await box.waitFor({ state: 'visible', timeout: 90_000 });
        assert.match(await textOf(box), /^Lookup: API unreachable: no answer within 30 s/);
      } finally {
        gate.resolve();
        await page.unroute('**/api/indicators/?value=*', hold);
      }
    });

    await step('end on the search results for the screenshot', async () => {
      await search(page, `${domain}\nnot-in-any-feed.invalid`);
      await waitText(page.locator('[data-testid="search-summary"]'), /2 values looked up: 1 found, 1 not found/);
      await page.locator('[data-testid="search-body"] [data-testid="hit-object-button"]').first().click();
      await waitText(page.locator('[data-testid="search-body"] [data-testid="hit-object"]').first(), /"pattern"/);
      assert.equal(await d.offline.isHidden(), true);
    });
  });

async function streamText(stream) {
  const chunks = [];
  for await (const c of stream) chunks.push(c);
  return Buffer.concat(chunks).toString('utf8');
}
