// Repositories (issue 11): the repository page with health, the attached
// host and locks; test connection (works on the real REST repository;
// a wrong password is named as the reason); add an existing repository
// (verified first); a safe unlock behind a confirmation; readable results
// of snapshots and stats jobs; keyboard reach and axe on these pages.
// Relies on 10-core having made a backup (so health and snapshots exist).
import { cfg, base, step, assert, context, login, axe, shots, admin, hostId } from '../lib.mjs';

const repoPage = `/repositories/${cfg.repo_id}`;
let snapshotsJob = null, statsJob = null, addedRepo = null;

// Runs an operation from the host's run form and waits for its job to end ok.
async function runJob(page, kind, fill) {
  await page.goto(`${base}/hosts/${hostId}/run?kind=${kind}`);
  // The host has other repositories too (other steps' set-up): name this one.
  await page.selectOption('#repo_id', cfg.repo_id);
  if (fill) await fill();
  await Promise.all([page.waitForURL(/\/jobs\//), page.click('button[type=submit].primary')]);
  await page.locator('#job-title .status.s-ok').waitFor({ timeout: 120000 });
  return new URL(page.url()).pathname.split('/').pop();
}

await step('repository-page-shows-health-and-the-attached-host', async () => {
  const ctx = await context();
  const page = await ctx.newPage();
  await login(page, admin);
  const streams = [];
  page.on('request', (r) => { if (r.url().includes('/api/v1/events')) streams.push(new URL(r.url())); });
  await page.goto(`${base}/repositories`);
  await Promise.all([page.waitForURL(/\/repositories\/r/), page.click(`#repo-${cfg.repo_id} a`)]);
  assert(new URL(page.url()).pathname === repoPage, `the list links to the repository page, got ${page.url()}`);
  const row = page.locator('#repo-hosts tbody tr', { hasText: 'e2e-host' });
  await row.waitFor();
  assert(await row.locator('.status', { hasText: 'append-only' }).count() === 1, 'the host is attached append-only');
  // The refresh after 10-core's backup fills the health in (live, no reload).
  await page.locator('[data-live][data-state="live"]').waitFor();
  // Its stream asks for this repository's events and its jobs' only (events.rs, Scope::Repo),
  // so the health below arrives through the refresh jobs' events naming the repository.
  const own = streams.filter((u) => u.searchParams.get('repo') === cfg.repo_id);
  assert(own.length > 0 && own.every((u) => u.searchParams.get('progress') === '' && !u.searchParams.has('host')),
    `the repository page's stream is narrowed to it: ${streams.map(String).join(' ')}`);
  await page.locator('#repo-health [data-field="snapshots"]', { hasText: /^[1-9]\d*$/ }).waitFor({ timeout: 120000 });
  const stored = await page.locator('#repo-health dd').first().textContent();
  assert(/iB|\d B/.test(stored), `the stored size has a unit: "${stored}"`);
  assert(await page.locator('#repo-locks').count() === 1, 'the page has a locks section');
  // when its next periodic refresh falls: at its own time in the control plane's period
  const next = (await page.locator('#next-refresh').textContent()).replace(/\s+/g, ' ').trim();
  assert(/^Next periodic refresh in \d+ [hm]\. Every 6 h, at this repository's own time in the period\.$/.test(next),
    `the next periodic refresh is said: "${next}"`);
  await axe(page, 'repository page');
  await ctx.close();
});

await step('test-connection-works-and-a-wrong-password-is-named', async () => {
  const ctx = await context();
  const page = await ctx.newPage();
  await login(page, admin);
  await page.goto(`${base}${repoPage}`);
  await page.selectOption('#test-host', hostId);
  await Promise.all([page.waitForLoadState(), page.click('button:text-is("Test connection")')]);
  const ok = page.locator('#notice.banner.ok');
  await ok.waitFor({ timeout: 60000 });
  assert((await ok.textContent()).includes('Connection from e2e-host works'), `success is said: ${await ok.textContent()}`);

  // An existing repository with a wrong password: refused with the reason, nothing saved.
  await page.goto(`${base}/repositories/new`);
  await axe(page, 'add repository');
  await page.fill('#name', 'offsite-copy');
  await page.check('#mode-verify');
  // the host picker takes a name (suggested as one types) or an id
  await page.fill('#host_id', 'e2e-host');
  await page.fill('#url', cfg.rest_url);
  await page.fill('#password', 'not-the-password');
  await Promise.all([page.waitForLoadState(), page.click('button[type=submit].primary')]);
  const failure = page.locator('#failure');
  await failure.waitFor({ timeout: 60000 });
  const text = await failure.textContent();
  assert(text.includes('wrong repository password'), `the reason is named: ${text}`);
  assert(await page.inputValue('#name') === 'offsite-copy', 'the name is kept');
  assert(await page.inputValue('#password') === '', 'the password is never shown back');
  assert(await page.inputValue('#url') === '', 'a URL with credentials is never shown back');
  await page.goto(`${base}/repositories`);
  assert(await page.locator('a', { hasText: 'offsite-copy' }).count() === 0, 'nothing was saved');

  // The right password: saved, verified.
  await page.goto(`${base}/repositories/new`);
  await page.fill('#name', 'offsite-copy');
  await page.fill('#host_id', hostId);
  await page.fill('#url', cfg.rest_url);
  await page.fill('#password', cfg.repo_password);
  await Promise.all([page.waitForURL(/\/repositories\/r/), page.click('button[type=submit].primary')]);
  addedRepo = new URL(page.url()).pathname;
  assert(await page.locator('h1', { hasText: 'offsite-copy' }).count() === 1, 'the new repository has its page');
  assert(await page.locator('#repo-state .s-ok', { hasText: 'verified' }).count() === 1, 'it is marked verified');
  await ctx.close();
});

await step('unlock-needs-a-confirmation-naming-the-repository', async () => {
  const ctx = await context();
  const page = await ctx.newPage();
  await login(page, admin);
  await page.goto(`${base}${repoPage}`);
  const label = await page.locator('label[for="unlock-confirm"]').textContent();
  assert(label.includes('e2e-repo'), `the confirmation names the repository: ${label}`);
  await Promise.all([page.waitForLoadState(), page.click('button:text-is("Unlock e2e-repo")')]);
  await page.locator('#unlock-confirm-error').waitFor();
  await page.check('#unlock-confirm');
  await Promise.all([page.waitForURL(/\/jobs\//), page.click('button:text-is("Unlock e2e-repo")')]);
  await page.locator('#job-title .status.s-ok').waitFor({ timeout: 120000 });
  const details = await page.locator('#details-h + dl').textContent();
  assert(details.includes('false'), `never --remove-all: ${details}`);
  await ctx.close();
});

await step('snapshots-and-stats-results-read-as-tables-and-figures', async () => {
  const ctx = await context();
  const page = await ctx.newPage();
  await login(page, admin);
  snapshotsJob = await runJob(page, 'snapshots');
  const rows = page.locator('#result table tbody tr');
  await rows.first().waitFor({ timeout: 30000 });
  assert(await rows.count() >= 1, 'the snapshots are listed as table rows');
  const first = await rows.first().textContent();
  assert(first.includes(cfg.backup_path), `a row shows the snapshot's path: ${first}`);
  assert(/[0-9a-f]{8}/.test(first), `a row shows the snapshot id: ${first}`);
  const body = await page.locator('main').textContent();
  assert(!body.includes('"paths"') && !body.includes('"short_id"'), 'no raw JSON on the page');
  await axe(page, 'snapshots job page');

  statsJob = await runJob(page, 'stats', () => page.selectOption('#stats_mode', 'raw-data'));
  const facts = page.locator('#result-h + dl');
  await facts.waitFor({ timeout: 30000 });
  const f = await facts.textContent();
  assert(/Stored\s*[\d.]+ (KiB|MiB|GiB)/.test(f), `stats read as figures with units: ${f}`);
  assert(f.includes('Blobs'), `stats list the blobs: ${f}`);
  await ctx.close();
});

await step('keyboard-reaches-repository-and-job-actions', async () => {
  const ctx = await context();
  const page = await ctx.newPage();
  await login(page, admin);
  const reach = async (url, wants, presses) => {
    await page.goto(`${base}${url}`);
    const reached = new Set();
    for (let i = 0; i < presses; i++) {
      await page.keyboard.press('Tab');
      reached.add(await page.evaluate(() => {
        const a = document.activeElement;
        if (!a) return '';
        const l = a.labels && a.labels[0] ? a.labels[0].textContent : '';
        return `${a.id || ''}|${(a.textContent || '').trim()}|${l.trim()}`;
      }));
    }
    for (const want of wants) {
      assert([...reached].some((t) => t.includes(want)), `Tab reaches "${want}" on ${url}`);
    }
  };
  await reach(repoPage, ['Test connection', 'test-host', 'Attach host', 'attach-password', 'List locks',
    'unlock-confirm', 'Unlock e2e-repo', 'Sign out'], 90);
  if (snapshotsJob) await reach(`/jobs/${snapshotsJob}`, ['Copy', 'Sign out', 'e2e-host'], 40);
  await ctx.close();
});

shots.push(['repository', repoPage], ['repository-new', '/repositories/new']);
if (addedRepo) shots.push(['repository-added', addedRepo]);
if (snapshotsJob) shots.push(['job-snapshots', `/jobs/${snapshotsJob}`]);
if (statsJob) shots.push(['job-stats', `/jobs/${statsJob}`]);
