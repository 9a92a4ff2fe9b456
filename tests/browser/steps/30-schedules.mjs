// Schedules (issue 11) and the retention preview (issue 10): a bad cron is
// a field error with the input kept; the reading and next runs follow the
// typing; the fixed form saves and the host page lists it with its reading
// and next run; the retention preview lists what a policy would remove on
// a repository with several snapshots (browser tests set-up:
// tests/cli/browser_sched.rs), in the form and over the API; disable /
// enable; delete with a confirmation.
import { cfg, base, step, assert, context, login, axe, shots, admin, hostId } from '../lib.mjs';

const sched = cfg.sched || {};
let backupSchedule = null;
let forgetSchedule = null;
let previewJob = null;

await step('schedule-bad-cron-keeps-input-then-saves', async () => {
  const ctx = await context();
  const page = await ctx.newPage();
  await login(page, admin);
  await page.goto(`${base}/hosts/${hostId}`);
  await Promise.all([page.waitForURL(/\/schedules\/new/), page.click('a:has-text("New schedule")')]);
  await page.selectOption('#repo_id', sched.repo_id);
  await page.fill('#paths', '/srv/data\n/etc');
  await page.fill('#tags', 'nightly');
  await page.fill('#cron', '61 * * * *');
  await Promise.all([page.waitForLoadState('load'), page.click('button[type=submit][value=save].primary')]);
  const err = page.locator('#cron-error');
  await err.waitFor();
  assert((await err.textContent()).includes('61'), `the cron error names the value: ${await err.textContent()}`);
  assert((await page.inputValue('#cron')) === '61 * * * *', 'the bad cron is kept');
  assert((await page.inputValue('#paths')) === '/srv/data\n/etc', 'the paths are kept');
  assert((await page.inputValue('#tags')) === 'nightly', 'the tags are kept');
  assert((await page.inputValue('#repo_id')) === sched.repo_id, 'the repository choice is kept');
  assert((await page.getAttribute('#cron', 'aria-invalid')) === 'true', 'the cron field is marked invalid');
  // typing a good expression updates its reading and next runs in place
  await page.fill('#cron', '15 4 * * *');
  await page.fill('#timezone', 'Europe/Berlin');
  await page.waitForFunction(() => {
    const w = document.querySelector('[data-cron-words]');
    return w && w.textContent.includes('04:15') && w.textContent.includes('Europe/Berlin')
      && document.querySelectorAll('[data-cron-next] li').length === 5;
  }, null, { timeout: 10000 });
  const first = await page.locator('[data-cron-next] li').first().textContent();
  assert(/ 04:15 \+0[12]:00$/.test(first), `the next run is 04:15 Berlin time: ${first}`);
  await axe(page, 'schedule form');
  await Promise.all([page.waitForURL(/\/hosts\/[^/]+$/), page.click('button[type=submit][value=save].primary')]);
  const row = page.locator('#host-schedules tr', { hasText: '04:15' });
  await row.waitFor();
  const text = await row.textContent();
  assert(text.includes('Europe/Berlin') && text.includes('backup'), `the host page lists it with its reading: ${text}`);
  assert(await row.locator('time').count() >= 1, 'the row shows its next run as a time');
  assert(text.includes('enabled'), 'the new schedule is enabled');
  backupSchedule = await row.getAttribute('data-schedule');
  assert(backupSchedule, 'the row carries its schedule id');
  await ctx.close();
});

await step('schedule-disable-enable', async () => {
  assert(backupSchedule, 'needs the schedule from the previous step');
  const ctx = await context();
  const page = await ctx.newPage();
  await login(page, admin);
  await page.goto(`${base}/hosts/${hostId}`);
  const row = () => page.locator(`#host-schedules tr[data-schedule="${backupSchedule}"]`);
  await Promise.all([page.waitForLoadState('load'), row().locator('button:has-text("Disable")').click()]);
  await row().locator('.status:has-text("disabled")').waitFor();
  assert((await row().textContent()).includes('none while disabled'), 'a disabled schedule has no next run');
  await Promise.all([page.waitForLoadState('load'), row().locator('button:has-text("Enable")').click()]);
  await row().locator('.status:has-text("enabled")').waitFor();
  assert(await row().locator('time').count() >= 1, 'enabled again, it has a next run');
  await ctx.close();
});

await step('retention-preview-lists-what-the-policy-removes', async () => {
  const ctx = await context();
  const page = await ctx.newPage();
  await login(page, admin);
  await page.goto(`${base}/hosts/${hostId}/schedules/new?kind=forget`);
  await page.selectOption('#repo_id', sched.repo_id);
  await page.fill('#cron', '0 5 * * 0');
  // a bad policy first: the field is named and the input kept
  await page.fill('#keep_last', 'zero');
  await Promise.all([page.waitForLoadState('load'), page.click('#preview-button')]);
  await page.locator('#keep_last-error').waitFor();
  assert((await page.inputValue('#keep_last')) === 'zero', 'the bad keep value is kept');
  await page.fill('#keep_last', '1');
  await page.uncheck('#enabled');
  await Promise.all([page.waitForLoadState('load'), page.click('#preview-button')]);
  const table = page.locator('#preview-table');
  await table.waitFor({ timeout: 90000 });
  const n = sched.snapshots;
  const removed = await table.locator('tr[data-action="remove"]').count();
  const kept = await table.locator('tr[data-action="keep"]').count();
  assert(kept === 1 && removed === n - 1, `keep-last 1 of ${n} snapshots keeps 1 and removes ${n - 1}: kept ${kept}, removed ${removed}`);
  const keptRow = await table.locator('tr[data-action="keep"]').textContent();
  assert(keptRow.includes('last snapshot'), `the kept snapshot says why: ${keptRow}`);
  assert(keptRow.includes(`v${n - 1}`), `the newest (tag v${n - 1}) is the one kept: ${keptRow}`);
  assert((await page.inputValue('#keep_last')) === '1' && (await page.inputValue('#cron')) === '0 5 * * 0', 'the form keeps its values');
  previewJob = (await page.locator('#retention-preview a[href^="/jobs/"]').first().getAttribute('href')).split('/').pop();
  await axe(page, 'retention preview');
  // save it (disabled: nothing is forgotten by this test)
  await Promise.all([page.waitForURL(/\/hosts\/[^/]+$/), page.click('button[type=submit][value=save].primary')]);
  const row = page.locator('#host-schedules tr', { hasText: 'forget' });
  await row.waitFor();
  assert((await row.textContent()).includes('disabled'), 'saved disabled');
  forgetSchedule = await row.getAttribute('data-schedule');
  // every snapshot is still there: the preview removed nothing
  await ctx.close();
});

await step('retention-preview-over-the-api', async () => {
  const ctx = await context();
  const page = await ctx.newPage();
  await login(page, admin);
  await page.goto(`${base}/hosts/${hostId}`);
  const csrf = await page.locator('meta[name="csrf-token"]').getAttribute('content');
  const resp = await page.request.post(`${base}/api/v1/hosts/${hostId}/retention-preview`, {
    headers: { 'x-csrf-token': csrf, origin: base },
    data: { repo_id: sched.repo_id, retention: { keep_last: 2 }, wait_secs: 90 },
  });
  assert(resp.status() === 200, `the API answers 200: ${resp.status()} ${await resp.text()}`);
  const plan = await resp.json();
  assert(plan.done && plan.status === 'succeeded', `the preview finished: ${JSON.stringify(plan).slice(0, 300)}`);
  assert(plan.exec_host_id === hostId, 'it ran on the maintenance host');
  assert(plan.kept === 2 && plan.removed === sched.snapshots - 2, `keep-last 2: ${plan.kept} kept, ${plan.removed} removed`);
  for (const s of plan.snapshots) {
    assert(s.id && s.time && Array.isArray(s.paths) && Array.isArray(s.tags), `each snapshot has id, time, paths, tags: ${JSON.stringify(s)}`);
    assert(s.action === 'keep' ? s.reasons.includes('last snapshot') : s.reasons.length === 0, `reasons only for kept ones: ${JSON.stringify(s)}`);
  }
  const again = await page.request.get(`${base}/api/v1/jobs/${plan.job_id}/retention-plan`);
  assert(again.status() === 200 && (await again.json()).kept === 2, 'the plan can be fetched again by its job');
  // a policy without a keep rule is refused with the field named
  const bad = await page.request.post(`${base}/api/v1/hosts/${hostId}/retention-preview`, {
    headers: { 'x-csrf-token': csrf, origin: base },
    data: { repo_id: sched.repo_id, retention: {} },
  });
  const body = await bad.json();
  assert(bad.status() === 400 && body.error.field === 'retention', `an empty policy is refused: ${bad.status()} ${JSON.stringify(body)}`);
  await ctx.close();
});

await step('schedule-delete-asks-first', async () => {
  assert(backupSchedule, 'needs the backup schedule');
  const ctx = await context();
  const page = await ctx.newPage();
  await login(page, admin);
  await page.goto(`${base}/schedules/${backupSchedule}`);
  assert((await page.inputValue('#cron')) === '15 4 * * *', 'the edit form shows the saved cron');
  assert((await page.inputValue('#paths')) === '/srv/data\n/etc', 'and the saved paths');
  page.on('dialog', (d) => d.accept());
  // without the box ticked: refused, nothing deleted
  await Promise.all([page.waitForLoadState('load'), page.click('button:has-text("Delete schedule")')]);
  await page.locator('#delete_confirm-error').waitFor();
  await page.check('#delete_confirm');
  await Promise.all([page.waitForURL(/\/hosts\/[^/]+$/), page.click('button:has-text("Delete schedule")')]);
  assert(await page.locator(`#host-schedules tr[data-schedule="${backupSchedule}"]`).count() === 0, 'the schedule is gone');
  await ctx.close();
});

shots.push(['schedule-new', `/hosts/${hostId}/schedules/new?kind=backup`]);
if (forgetSchedule && previewJob) shots.push(['schedule-preview', `/schedules/${forgetSchedule}?preview=${previewJob}`]);
