// Alerts, mutes, channels and users (issue 12, the gaps): a refused mute
// or maintenance-window form comes back with the field named and the
// input kept; "until" is read in the browser's time zone and the mute's
// end shown in it; the dashboard's row follows a mute live; replacing a
// webhook's URL keeps its signing secret (the checking receiver from
// tests/cli/browser_settings.rs verifies it) and the test send is in the
// channel's delivery log marked as a test; an admin deletes a user after
// a confirmation naming them, and that user's session ends.
import { cfg, base, step, assert, context, login, axe, shots, admin, hostId } from '../lib.mjs';

const zone = 'Asia/Tokyo';
const hooks = cfg.settings;

// `ms` as a datetime-local value in `tz` (sv-SE reads 2026-12-02 00:30).
function localValue(ms, tz) {
  const s = new Intl.DateTimeFormat('sv-SE', { timeZone: tz, year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit' }).format(new Date(ms));
  return s.replace(' ', 'T');
}

await step('a-refused-mute-keeps-its-input-until-is-read-in-the-browsers-zone-and-the-dashboard-follows', async () => {
  const ctx = await context({ timezoneId: zone });
  const page = await ctx.newPage();
  await login(page, admin);
  const dash = await ctx.newPage();
  await dash.goto(`${base}/`);
  await dash.locator('[data-live][data-state="live"]').waitFor();
  const row = dash.locator(`#host-${hostId}`);
  await row.waitFor();
  assert(await row.locator('[data-field="muted"]').count() === 0, 'not muted before');

  await page.goto(`${base}/hosts/${hostId}`);
  const form = page.locator('#mute-form');
  assert((await form.locator('[data-tz-name]').textContent()) === zone, 'the form names the browser\'s zone');
  // A time in the past is refused: the same page, the field named, the input kept.
  await form.locator('input[name=until]').fill('2020-01-01T09:00');
  await form.locator('input[name=reason]').fill('kernel update');
  const [resp] = await Promise.all([page.waitForResponse((r) => r.url().endsWith('/alerts/mute')), form.locator('button[type=submit]').click()]);
  assert(resp.status() === 422, `refused with 422, got ${resp.status()}`);
  await page.locator('#until-error').waitFor();
  assert(await page.locator('#mute-form input[name=until]').inputValue() === '2020-01-01T09:00', 'the time is kept');
  assert(await page.locator('#mute-form input[name=reason]').inputValue() === 'kernel update', 'the reason is kept');
  assert(await page.locator('#mute-form input[name=until]').getAttribute('aria-invalid') === 'true', 'the field is marked');
  assert((await page.locator('h2#mutes-h').count()) === 1, 'the host page, not an error page');
  await axe(page, 'host page with a refused mute');

  // A time three hours ahead, typed as the operator reads it in Tokyo.
  const until = Math.floor((Date.now() + 3 * 3600e3) / 60000) * 60000;
  const typed = localValue(until, zone);
  await page.locator('#mute-form input[name=until]').fill(typed);
  await Promise.all([page.waitForURL(/\/hosts\//), page.locator('#mute-form button[type=submit]').click()]);
  await page.locator('#mute-state', { hasText: 'muted' }).waitFor();
  const shown = await page.locator('#mute-state time[data-local]').textContent();
  assert(shown === `${typed.replace('T', ' ')} ${zone}`, `the end is shown in the browser's zone: ${shown} (typed ${typed})`);
  const mutes = await page.evaluate(async (u) => (await fetch(u, { credentials: 'same-origin' })).json(), `/api/v1/hosts/${hostId}/mutes`);
  assert(mutes.muted && mutes.muted.until === until, `stored as the UTC instant: ${JSON.stringify(mutes.muted)} want ${until}`);

  // The dashboard opened before the mute marks the row without a reload.
  await row.locator('[data-field="muted"]').waitFor({ timeout: 30000 });
  shots.push(['host-muted', `/hosts/${hostId}#mutes`]);

  // A refused maintenance window keeps its input too.
  const win = page.locator('#window-form');
  await win.locator('input[name=cron]').fill('0 25 * * *');
  await win.locator('input[name=timezone]').fill('Europe/Berlin');
  await win.locator('input[name=reason]').fill('nightly reboot');
  await Promise.all([page.waitForResponse((r) => r.url().includes('/maintenance')), win.locator('button[type=submit]').click()]);
  await page.locator('#cron-error').waitFor();
  assert(await page.locator('#window-form input[name=cron]').inputValue() === '0 25 * * *', 'the cron is kept');
  assert(await page.locator('#window-form input[name=timezone]').inputValue() === 'Europe/Berlin', 'the zone is kept');
  assert(await page.locator('#window-form input[name=reason]').inputValue() === 'nightly reboot', 'the reason is kept');

  // End the mute; the dashboard follows again.
  await page.goto(`${base}/hosts/${hostId}`);
  await Promise.all([page.waitForURL(/\/hosts\//), page.click('#mute-state button:text-is("End the mute now")')]);
  await page.locator('#mute-state', { hasText: 'notifying' }).waitFor();
  await row.locator('[data-field="muted"]').waitFor({ state: 'detached', timeout: 30000 });
  await ctx.close();
});

await step('replacing-a-webhook-url-keeps-its-secret-and-the-test-send-is-logged-as-a-test', async () => {
  const ctx = await context();
  const page = await ctx.newPage();
  await login(page, admin);
  await page.goto(`${base}/settings/notifications`);
  await page.fill('#name', 'kept-secret-hook');
  await page.selectOption('#kind', 'webhook');
  await page.fill('#url', hooks.ok);
  await page.fill('#secret', hooks.secret);
  // Disabled: later steps' alerts are not sent to it.
  await page.locator('input[type=checkbox][name=enabled]').uncheck();
  await Promise.all([page.waitForURL(/\/settings\/notifications\/c/), page.click('button[name=action][value=save]')]);
  const id = new URL(page.url()).pathname.split('/').pop();
  // A new URL, the secret field left empty.
  await page.fill('#url', `${hooks.ok}?replaced=1`);
  await Promise.all([page.waitForURL(/done=saved/), page.click('button[name=action][value=save]')]);
  const summary = await page.locator('.hint-block code').first().textContent();
  assert(summary.endsWith('· signed'), `the summary still says signed: ${summary}`);
  const count = async () => (await (await fetch(hooks.ok_count)).json()).verified;
  const before = await count();
  await page.click('button[name=action][value=test]');
  await page.locator('#test-result .test-ok, #test-result .test-fail').waitFor({ timeout: 20000 });
  assert(await page.locator('#test-result .test-ok').count() === 1, `green tick: ${await page.locator('#test-result').innerText()}`);
  assert(await count() === before + 1, 'the receiver verified the signature made with the kept secret');
  await page.goto(`${base}/settings/notifications/${id}#log`);
  const logged = page.locator('#deliveries tbody tr', { has: page.locator('.tag:text-is("test")') });
  assert(await logged.count() === 1, 'the test send is in the delivery log, marked as a test');
  assert((await logged.textContent()).includes('delivered'), 'with its outcome');
  await axe(page, 'channel page with a logged test');
  shots.push(['channel-log', `/settings/notifications/${id}#log`]);
  await ctx.close();
});

await step('an-admin-deletes-a-user-after-a-confirmation-naming-them-and-their-session-ends', async () => {
  const name = 'leaving-ops';
  const password = 'leaving-ops-password';
  const ctx = await context();
  const page = await ctx.newPage();
  await login(page, admin);
  await page.goto(`${base}/settings/users`);
  await page.fill('#new-name', name);
  await page.selectOption('#new-role', 'operator');
  await page.fill('#new-password', password);
  await Promise.all([page.waitForURL(/done=added/), page.click('#add-user ~ form button[type=submit]')]);
  const theirs = await context();
  const them = await theirs.newPage();
  await login(them, { name, password });
  await them.goto(`${base}/account`);
  assert(new URL(them.url()).pathname === '/account', 'signed in');

  const mine = page.locator('#users tbody tr', { has: page.locator('.tag:text-is("you")') });
  assert(await mine.locator('form[action$="/delete"]').count() === 0, 'no delete for yourself');
  const row = page.locator('#users tbody tr', { hasText: name });
  await row.locator('summary', { hasText: 'Delete' }).click();
  await row.locator('input[name=confirm]').check();
  let asked = '';
  page.once('dialog', (d) => { asked = d.message(); d.accept(); });
  await Promise.all([page.waitForURL(/done=deleted/), row.locator('button.danger').click()]);
  assert(asked.includes(name), `the confirmation names the user: ${asked}`);
  assert(await page.locator('#users tbody tr', { hasText: name }).count() === 0, 'gone from the list');
  await them.goto(`${base}/account`);
  assert(new URL(them.url()).pathname === '/login', `their session ended: ${them.url()}`);
  await page.goto(`${base}/settings/audit?action=user.delete`);
  assert((await page.locator('main').textContent()).includes(name), 'the deletion is audited');
  await theirs.close();
  await ctx.close();
});
