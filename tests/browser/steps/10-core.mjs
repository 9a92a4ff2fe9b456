// The first operator journeys (issue 11): sign in, a live backup, the
// restore wizard, a viewer refused, markup as text, keyboard reach.
import { cfg, base, step, assert, context, login, axe, shots, admin, viewer, hostId } from '../lib.mjs';

let lastJob = null;

await step('login-and-dashboard', async () => {
  const ctx = await context();
  const page = await ctx.newPage();
  await page.goto(`${base}/`);
  assert(page.url().includes('/login'), 'an anonymous visit is sent to the sign-in page');
  await login(page, admin);
  const row = page.locator(`#host-${hostId}`);
  await row.waitFor();
  assert((await row.locator('.strip i').count()) === 30, 'the host row has a 30-day compliance strip');
  const total = await page.locator('[data-count]').allTextContents();
  assert(total.length >= 5, 'the dashboard shows its counters');
  await page.locator('[data-live][data-state="live"]').waitFor();
  await axe(page, 'dashboard');
  await ctx.close();
});

await step('backup-progress-live', async () => {
  const ctx = await context();
  const dash = await ctx.newPage();
  // The dashboard asks for its rows' job progress only (events.rs, OutputOf).
  const streams = [];
  dash.on('request', (r) => { if (r.url().includes('/api/v1/events')) streams.push(new URL(r.url())); });
  await login(dash, admin);
  await dash.locator(`#host-${hostId}`).waitFor();
  await dash.locator('[data-live][data-state="live"]').waitFor();
  assert(streams.length > 0 && streams.every((u) => (u.searchParams.get('progress') || '').split(',').includes(hostId)),
    `the dashboard's stream names its rows' hosts for progress: ${streams.map(String).join(' ')}`);
  // A second stream on the dashboard's own URL counts the row's host's
  // progress events that filter lets through during the backup.
  await dash.evaluate((url) => {
    window.rowProgress = 0;
    const es = new EventSource(url);
    es.addEventListener('job', (ev) => {
      const d = JSON.parse(ev.data);
      if (d.type === 'progress') window.rowProgress++;
    });
  }, (() => { const u = new URL(streams[0]); u.searchParams.delete('since'); return u.toString(); })());
  const page = await ctx.newPage();
  await page.goto(`${base}/hosts/${hostId}`);
  await page.click('text=Back up now');
  // The host has other repositories too (later steps' set-up): name this one.
  await page.selectOption('#repo_id', cfg.repo_id);
  await page.fill('#paths', cfg.backup_path);
  await Promise.all([page.waitForURL(/\/jobs\//), page.click('button[type=submit].primary')]);
  lastJob = new URL(page.url()).pathname.split('/').pop();
  await page.locator('[data-live][data-state="live"]').waitFor();
  // The progress bar takes at least two different values without a reload.
  const seen = new Set();
  const bar = page.locator('#job-state [data-progress-bar]');
  const deadline = Date.now() + 120000;
  while (seen.size < 2 && Date.now() < deadline) {
    const v = await bar.getAttribute('aria-valuenow', { timeout: 1000 }).catch(() => null);
    if (v !== null) seen.add(v);
    if (await page.locator('#job-title .status.s-ok').count()) break;
    await page.waitForFunction((prev) => {
      const b = document.querySelector('#job-state [data-progress-bar]');
      return !b || b.getAttribute('aria-valuenow') !== prev || document.querySelector('#job-title .s-ok');
    }, v, { timeout: 5000 }).catch(() => {});
  }
  assert(seen.size >= 2, `the progress bar showed ${seen.size} distinct value(s): ${[...seen].join(', ')}`);
  await page.locator('#job-title .status.s-ok').waitFor({ timeout: 180000 });
  await axe(page, 'job page');
  // The dashboard row turned ok without a reload, and the dashboard's
  // stream carried the row's host's progress on the way.
  await dash.locator(`#host-${hostId} [data-field="state"].s-ok`).waitFor({ timeout: 30000 });
  const rowProgress = await dash.evaluate(() => window.rowProgress);
  assert(rowProgress >= 1, `the dashboard's stream carried the backup's progress: ${rowProgress} events`);
  await ctx.close();
});

let restoreSnap = null;
await step('restore-two-files-through-the-wizard', async () => {
  const ctx = await context();
  const page = await ctx.newPage();
  await login(page, admin);
  // The listing header of the page a click leads to.
  const via = async (click) => {
    const [resp] = await Promise.all([
      page.waitForResponse((r) => r.request().resourceType() === 'document' && r.url().includes('/restore')),
      click(),
    ]);
    await page.waitForLoadState();
    return resp.headers()['x-rm-listing'];
  };
  await page.goto(`${base}/hosts/${hostId}`);
  await Promise.all([page.waitForURL(/\/restore\?/), page.click('.actions a:text-is("Restore")')]);
  await Promise.all([page.waitForURL(/repo=/), page.click(`ul.choices a[href*="repo=${cfg.repo_id}"]`)]);
  await Promise.all([page.waitForURL(/snapshot=/), page.click('table.data a:text-is("Browse…")')]);
  restoreSnap = new URL(page.url()).searchParams.get('snapshot');
  await axe(page, 'restore: browse');
  // Down one level at a time to the backed-up directory.
  const segs = cfg.backup_path.split('/').filter((x) => x);
  for (const seg of segs) {
    const from = await via(() => page.getByRole('link', { name: `${seg}/`, exact: true }).click());
    assert(from === 'agent', `a first visit of ${seg} asks an agent, header says ${from}`);
  }
  await page.check('input[name=sel][value$="/file-000.bin"]');
  await page.check('input[name=sel][value$="/file-001.bin"]');
  // Up one level and back: the ticked files stay selected, and the
  // visited directory comes from the cache.
  const up = segs[segs.length - 2];
  await via(() => page.locator('nav.crumbs.path a', { hasText: up }).last().click());
  assert((await page.locator('[aria-live]', { hasText: '2 selected' }).count()) === 1, 'the two ticked files are still selected one level up');
  const again = await via(() => page.getByRole('link', { name: `${segs[segs.length - 1]}/`, exact: true }).click());
  assert(again === 'cache', `going back to a visited directory needs no agent query, header says ${again}`);
  assert(await page.isChecked('input[name=sel][value$="/file-001.bin"]'), 'a ticked file is still ticked after going back');
  await Promise.all([page.waitForURL(/step=target/), page.click('button[value=target]')]);
  assert(await page.locator('.confirm ul li').count() === 2, 'the summary lists the two selected files');
  await axe(page, 'restore: target');
  // A relative path is refused with the input kept.
  await page.fill('#target_path', 'relative/dir');
  await page.click('button[type=submit].primary');
  await page.locator('#target_path-error').waitFor();
  assert(await page.inputValue('#target_path') === 'relative/dir', 'the refused input is kept');
  await page.fill('#target_path', cfg.restore_target);
  await Promise.all([page.waitForURL(/\/jobs\//), page.click('button[type=submit].primary')]);
  await page.locator('#job-title .status.s-ok').waitFor({ timeout: 180000 });
  await ctx.close();
});

await step('viewer-sees-no-actions-and-is-refused', async () => {
  const ctx = await context();
  const page = await ctx.newPage();
  await login(page, viewer);
  await page.goto(`${base}/hosts/${hostId}`);
  const who = await page.locator('.topbar .user span').first().textContent();
  assert(who.includes('viewer'), `signed in as the viewer, page says "${who}" at ${page.url()}`);
  assert(await page.locator('.actions a', { hasText: 'Back up now' }).count() === 0, 'no "Back up now" action for a viewer');
  assert(await page.locator('button', { hasText: 'Revoke host' }).count() === 0, 'no revoke button for a viewer');
  const csrf = await page.locator('meta[name="csrf-token"]').getAttribute('content');
  const status = await page.evaluate(async ([url, csrf]) => {
    const r = await fetch(url, { method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ _csrf: csrf, kind: 'backup', repo_id: 'x', paths: '/etc' }) });
    return r.status;
  }, [`${base}/hosts/${hostId}/run`, csrf]);
  assert(status === 403, `a viewer's POST is refused with 403, got ${status}`);
  await ctx.close();
});

await step('markup-in-a-host-name-is-text', async () => {
  const ctx = await context();
  const page = await ctx.newPage();
  let dialogs = 0;
  page.on('dialog', async (d) => { dialogs++; await d.dismiss(); });
  await login(page, admin);
  await page.goto(`${base}/?q=${encodeURIComponent('<script>')}`);
  const link = page.locator('a.host', { hasText: '<script>alert(1)</script>' });
  await link.waitFor();
  assert(dialogs === 0, 'no script ran');
  await ctx.close();
});

await step('keyboard-reaches-actions', async () => {
  const ctx = await context();
  const page = await ctx.newPage();
  await login(page, admin);
  await page.goto(`${base}/hosts/${hostId}`);
  const reached = new Set();
  for (let i = 0; i < 60; i++) {
    await page.keyboard.press('Tab');
    const t = await page.evaluate(() => (document.activeElement && document.activeElement.textContent || '').trim());
    reached.add(t);
  }
  for (const want of ['Back up now', 'Run an operation', 'Restore', 'Sign out']) {
    assert([...reached].some((t) => t.startsWith(want)), `Tab reaches "${want}"`);
  }
  await ctx.close();
});


{
  const pages = [['dashboard', '/'], ['host', `/hosts/${hostId}`], ['jobs', '/jobs'],
    ['run-backup', `/hosts/${hostId}/run?kind=backup`], ['run-forget', `/hosts/${hostId}/run?kind=forget`],
    ['add-host', '/hosts/new'], ['hosts', '/hosts'], ['repositories', '/repositories'],
    ['alerts', '/alerts?state=all'], ['settings', '/settings']];
  if (lastJob) pages.push(['job', `/jobs/${lastJob}`]);
  const wiz = `/restore?host=${hostId}&repo=${cfg.repo_id}`;
  pages.push(['restore-snapshots', wiz]);
  if (restoreSnap) {
    const dir = encodeURIComponent(cfg.backup_path);
    pages.push(['restore-browse', `${wiz}&snapshot=${restoreSnap}&dir=${dir}&sel=${dir}%2Ffile-000.bin`]);
    pages.push(['restore-target', `${wiz}&snapshot=${restoreSnap}&step=target&sel=${dir}%2Ffile-000.bin&sel=${dir}%2Ffile-001.bin`]);
  }
  shots.push(...pages);
}
