// Alerts (issue 12 A): a real failing backup raises backup_failed, live on
// the alerts page; acknowledging keeps it open and shows who; the next
// successful backup resolves it live; a muted host's failure is recorded,
// marked muted, and the webhook receiver gets nothing for it. The
// receiver and its channel are set up by tests/cli/browser_alerts.rs.
import { cfg, base, step, assert, context, login, axe, shots, admin, hostId } from '../lib.mjs';

const received = async () => (await fetch(cfg.alerts.received)).json();
// Waits until the receiver holds a delivery matching `pred`.
async function receiverGets(what, pred, timeout = 60000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const got = await received();
    const hit = got.find(pred);
    if (hit) return { hit, got };
    if (Date.now() > deadline) throw new Error(`the webhook receiver never got ${what}: ${JSON.stringify(got).slice(0, 800)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

// Runs a backup of `path` from the host page's form; returns its job id
// once the job page shows the expected word (`ok` or `failed`).
async function backup(page, path, cls) {
  await page.goto(`${base}/hosts/${hostId}/run?kind=backup`);
  // The host has other repositories too (later steps' set-up): name this one.
  await page.selectOption('#repo_id', cfg.repo_id);
  await page.fill('#paths', path);
  await Promise.all([page.waitForURL(/\/jobs\//), page.click('button[type=submit].primary')]);
  const job = new URL(page.url()).pathname.split('/').pop();
  try {
    await page.locator(`#job-title .status.${cls}`).waitFor({ timeout: 180000 });
  } catch (e) {
    // Say where the job stands and what else the fleet was doing.
    const get = async (u) => (await page.request.get(`${base}${u}`)).text();
    throw new Error(`job ${job} never showed ${cls}: ${(await get(`/api/v1/jobs/${job}`)).slice(0, 1500)}\nrecent jobs: ${(await get('/api/v1/jobs?limit=12')).slice(0, 4000)}`);
  }
  return job;
}

const missing = `/nonexistent-rm-e2e/${Date.now()}`;
let alertId = null;

await step('a-failing-backup-raises-backup-failed-live-ack-keeps-it-open-success-resolves-it', async () => {
  const ctx = await context();
  const list = await ctx.newPage();
  await login(list, admin);
  await list.goto(`${base}/alerts?state=open&host=${hostId}&kind=backup_failed`);
  await list.locator('[data-live][data-state="live"]').waitFor();
  const before = await list.locator('#alerts-list tr[data-state]').count();
  assert(before === 0, `no open backup_failed alert before the failure (found ${before})`);

  const runner = await ctx.newPage();
  const job = await backup(runner, missing, 's-fail');

  // Appears on the already open list without a reload.
  const row = list.locator('#alerts-list tr[data-state="open"]', { hasText: 'Backup failed' });
  await row.waitFor({ timeout: 60000 });
  alertId = (await row.getAttribute('id')).replace(/^alert-/, '');
  assert(await row.locator(`a[href="/jobs/${job}"]`).count() === 1, 'the alert links to the failed job');
  assert((await row.textContent()).includes('still happening'), 'the row says it is still happening');
  await receiverGets('the raise', (b) => b.type === 'alert.raised' && b.data.alert.id === alertId);

  // Acknowledge: still open, who is shown.
  await Promise.all([list.waitForURL(/\/alerts\?/), row.locator('button:text-is("Acknowledge")').click()]);
  const acked = list.locator(`#alert-${alertId}`);
  await acked.locator('.ack', { hasText: `acknowledged by ${admin.name}` }).waitFor();
  assert(await acked.getAttribute('data-state') === 'acknowledged', 'acknowledged, and still in the open list');
  await receiverGets('the acknowledgement', (b) => b.type === 'alert.acknowledged' && b.data.alert.id === alertId);

  // The alert's own page: its history and every delivery attempt.
  const detail = await ctx.newPage();
  await detail.goto(`${base}/alerts/${alertId}`);
  await detail.locator('[data-live][data-state="live"]').waitFor();
  const history = await detail.locator('ol.timeline').textContent();
  assert(history.includes('raised') && history.includes(`acknowledged by ${admin.name}`), `history: ${history}`);
  await detail.locator('#alert-deliveries td', { hasText: 'delivered' }).first().waitFor({ timeout: 30000 });
  await axe(detail, 'alert page');
  await axe(list, 'alerts page');

  // The next successful backup resolves it; both pages follow live.
  await backup(runner, cfg.backup_path, 's-ok');
  await detail.locator('#alert-state[data-state="resolved"]').waitFor({ timeout: 60000 });
  await list.locator(`#alert-${alertId}`).waitFor({ state: 'detached', timeout: 60000 });
  assert((await detail.locator('ol.timeline').textContent()).includes('resolved by system'), 'resolved by the system');
  await receiverGets('the resolution', (b) => b.type === 'alert.resolved' && b.data.alert.id === alertId);
  shots.push(['alerts', `/alerts?state=all`], ['alert', `/alerts/${alertId}`]);
  await ctx.close();
});

await step('a-muted-host-records-its-alert-marked-muted-and-nobody-is-told', async () => {
  const ctx = await context();
  const page = await ctx.newPage();
  await login(page, admin);
  await page.goto(`${base}/hosts/${hostId}`);
  const form = page.locator('#mutes form[action="/alerts/mute"]');
  await form.locator('select[name=for_mins]').selectOption('60');
  await form.locator('input[name=reason]').fill('planned maintenance');
  await Promise.all([page.waitForURL(/\/hosts\//), form.locator('button[type=submit]').click()]);
  await page.locator('#mute-state', { hasText: 'muted' }).waitFor();
  assert((await page.locator('#mute-state').textContent()).includes('planned maintenance'), 'the reason is shown');

  await backup(page, missing, 's-fail');
  await page.goto(`${base}/alerts?state=open&host=${hostId}&kind=backup_failed`);
  const row = page.locator('#alerts-list tr[data-state="open"]', { hasText: 'Backup failed' });
  await row.waitFor({ timeout: 60000 });
  const muted = (await row.getAttribute('id')).replace(/^alert-/, '');
  assert(muted !== alertId, 'a new alert');
  assert(await row.locator('.tag:text-is("muted")').count() === 1, 'the alert is marked muted');
  await page.goto(`${base}/alerts/${muted}`);
  assert((await page.locator('#alert-facts').textContent()).includes('raised while the host was muted'), 'its page says nobody was told');
  // Resolve it by hand (an alert nobody was told about is closed quietly)
  // and end the mute.
  await Promise.all([page.waitForURL(/\/alerts\//), page.click('#alert-actions button:text-is("Resolve")')]);
  await page.locator('#alert-state[data-state="resolved"]').waitFor();
  await Promise.all([page.waitForURL(/\/alerts\//), page.click('#mute-state button:text-is("End the mute now")')]);
  await page.locator('#mute-state', { hasText: 'notifying' }).waitFor();

  // Unmuted, the next failure is told: once the receiver has that one,
  // anything the muted alert had queued would have arrived before it.
  await backup(page, missing, 's-fail');
  await page.goto(`${base}/alerts?state=open&host=${hostId}&kind=backup_failed`);
  const next = page.locator('#alerts-list tr[data-state="open"]', { hasText: 'Backup failed' });
  await next.waitFor({ timeout: 60000 });
  const told = (await next.getAttribute('id')).replace(/^alert-/, '');
  const { got } = await receiverGets('the unmuted raise', (b) => b.type === 'alert.raised' && b.data.alert.id === told);
  const leaked = got.filter((b) => b && b.data && b.data.alert && b.data.alert.id === muted);
  assert(leaked.length === 0, `the receiver got nothing for the muted alert: ${JSON.stringify(leaked)}`);
  // Leave the host healthy for the steps after this one.
  await backup(page, cfg.backup_path, 's-ok');
  await page.goto(`${base}/alerts/${told}`);
  await page.locator('#alert-state[data-state="resolved"]').waitFor({ timeout: 60000 });
  shots.push(['host-mutes', `/hosts/${hostId}#mutes`]);
  await ctx.close();
});
