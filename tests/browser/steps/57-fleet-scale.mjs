// The fleet UI at scale (issue 11): the restore wizard's host steps are a
// search box fed by the paged GET /api/v1/host-names (with a paged list
// and a server-checked name without script), and an empty installation's
// dashboard takes its first host live, without a reload.
import { base, cfg, step, assert, context, login, axe, shots, admin, hostId } from '../lib.mjs';

await step('restore-host-steps-are-a-search-box-with-a-checked-name', async () => {
  const ctx = await context();
  const page = await ctx.newPage();
  await login(page, admin);
  await page.goto(`${base}/restore`);
  // The search box suggests names as they are typed (script, paged API).
  await page.locator('#host[data-host-search]').waitFor();
  const suggested = page.waitForResponse((r) => r.url().includes('/api/v1/host-names?') && r.ok());
  await page.locator('#host').pressSequentially('e2e-h');
  await suggested;
  await page.waitForFunction(() => [...document.querySelectorAll('#host-names option')].some((o) => o.value === 'e2e-host'));
  await axe(page, 'restore: host step');
  // A name typed in full leads to the repository step of that host.
  await page.fill('#host', 'e2e-host');
  await Promise.all([page.waitForURL(/\/restore\?host=/), page.click('button[type=submit].primary')]);
  assert((await page.locator('h2').first().textContent()).includes('Which repository?'), 'the repository step follows');
  assert(await page.locator(`ul.choices a[href*="repo=${cfg.repo_id}"]`).count() === 1, 'the host\'s repository is offered');

  // A name that names no host: the field's error, the input kept, and
  // the hosts whose name contains it listed (what works without script).
  const resp = await page.goto(`${base}/restore?host=e2e`);
  assert(resp.status() === 422, `an unknown host is refused with 422, got ${resp.status()}`);
  assert((await page.locator('#host-error').textContent()).includes('no host is named'), 'the error names the problem');
  assert(await page.inputValue('#host') === 'e2e', 'the typed text is kept');
  await Promise.all([page.waitForURL(/\/restore\?host=[^&]+$/), page.click('ul.choices a:text-is("e2e-host")')]);
  assert((await page.locator('h2').first().textContent()).includes('Which repository?'), 'picking from the list works');

  // The target host: a search box too; an unknown name is refused on
  // submit with the input kept, and no job is made.
  const snaps = await page.request.get(`${base}/api/v1/snapshots?repo=${cfg.repo_id}&host=${hostId}&limit=1`);
  const first = (await snaps.json()).items[0];
  assert(first, 'a snapshot exists (10-core backed up)');
  await page.goto(`${base}/restore?host=${hostId}&repo=${cfg.repo_id}&snapshot=${first.snapshot_id}&step=target&sel=%2Fetc%2Fhostname`);
  assert(await page.inputValue('#target_host') === 'e2e-host', 'the target host defaults to the source host, by name');
  await page.fill('#target_host', 'no-such-host');
  await page.fill('#target_path', '/tmp/rm-nowhere');
  await page.click('button[type=submit].primary');
  await page.locator('#target_host-error').waitFor();
  assert(await page.inputValue('#target_host') === 'no-such-host', 'the refused target host is kept');
  assert(new URL(page.url()).pathname === '/restore', 'no job page: nothing was started');
  await axe(page, 'restore: target refused');
  await ctx.close();
});

await step('an-empty-dashboard-takes-its-first-host-live', async () => {
  assert(cfg.empty, 'the empty installation is configured');
  const url = cfg.empty.url.replace(/\/$/, '');
  const ctx = await context();
  const dash = await ctx.newPage();
  await dash.goto(`${url}/login`);
  await dash.fill('#username', cfg.empty.admin.name);
  await dash.fill('#password', cfg.empty.admin.password);
  await Promise.all([dash.waitForURL((u) => !u.pathname.startsWith('/login')), dash.click('button[type=submit]')]);
  await dash.goto(`${url}/`);
  await dash.locator('[data-live][data-state="live"]').waitFor();
  assert(await dash.locator('#fleet-view[data-until-filled]').isVisible(), 'the empty state teaches how to add a host');
  assert(await dash.locator('#fleet').count() === 0, 'no table yet');
  await dash.evaluate(() => { window.__rmNoReload = true; });

  // The first host is added in another tab.
  const other = await ctx.newPage();
  await other.goto(`${url}/hosts/new`);
  await other.fill('#name', 'first-host');
  await Promise.all([other.waitForSelector('#enroll-cmd'), other.click('button[type=submit].primary')]);

  await dash.locator('#fleet > tbody > tr', { hasText: 'first-host' }).waitFor({ timeout: 15000 });
  assert(await dash.evaluate(() => window.__rmNoReload === true), 'the page was not reloaded');
  assert(await dash.locator('[data-until-filled]').count() === 0, 'the empty state is gone');
  assert((await dash.locator('#fleet > tbody > tr [data-field="state"]').textContent()).includes('awaiting enrollment'),
    'the new host is shown awaiting enrollment');
  assert((await dash.locator('#counters').textContent()).includes('1'), 'the counters are shown');

  // Later events refresh the row narrowly: a second host comes too.
  await other.goto(`${url}/hosts/new`);
  await other.fill('#name', 'second-host');
  await Promise.all([other.waitForSelector('#enroll-cmd'), other.click('button[type=submit].primary')]);
  await dash.waitForFunction(() => document.querySelectorAll('#fleet > tbody > tr').length === 2, null, { timeout: 15000 });
  assert(await dash.evaluate(() => window.__rmNoReload === true), 'still not reloaded');
  await axe(dash, 'dashboard: first host arrived live');
  await ctx.close();
});

shots.push(['restore-hosts', '/restore'], ['restore-host-unknown', '/restore?host=e2e']);
