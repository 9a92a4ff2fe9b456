// Settings (issue 12, part B): notification channels with a real signed
// webhook receiver (green tick) and a failing one (red cross), a test of
// unsaved values saving nothing (with and without script), a viewer
// refused by the server, the last admin kept, an API token used with curl
// and revoked, the audit log showing all of it, and the account page.
// Receivers come from tests/cli/browser_settings.rs (cfg.settings).
import { execFileSync } from 'node:child_process';
import { cfg, base, step, assert, context, login, axe, shots, admin } from '../lib.mjs';

const hooks = cfg.settings;
let channelId = null;

async function received() {
  const r = await fetch(hooks.ok_count);
  return (await r.json()).verified;
}

async function fillWebhook(page, name, url, secret) {
  await page.fill('#name', name);
  await page.selectOption('#kind', 'webhook');
  await page.fill('#url', url);
  if (secret) await page.fill('#secret', secret);
}

// Waits for the inline result; fails with its text unless it is `want` (ok|fail).
async function testResult(page, want) {
  await page.locator('#test-result .test-ok, #test-result .test-fail').waitFor({ timeout: 20000 });
  const text = await page.locator('#test-result').innerText();
  assert(await page.locator(`#test-result .test-${want}`).count() === 1, `expected a ${want === 'ok' ? 'green tick' : 'red cross'}: ${text}`);
  return text;
}

async function channelNames(page) {
  await page.goto(`${base}/settings/notifications`);
  return page.locator('#channels tbody tr td:first-child').allTextContents();
}

await step('settings-webhook-test-unsaved-green-tick-saves-nothing', async () => {
  const ctx = await context();
  const page = await ctx.newPage();
  await login(page, admin);
  await page.goto(`${base}/settings/notifications`);
  const before = await received();
  await fillWebhook(page, 'ops-hook', hooks.ok, hooks.secret);
  const url = page.url();
  await page.click('button[name=action][value=test]');
  await testResult(page, 'ok');
  assert(page.url() === url, 'the test result came inline, without leaving the page');
  assert(await page.inputValue('#url') === hooks.ok, 'the form keeps its values');
  assert(await received() === before + 1, 'the receiver verified one signed test delivery');
  assert(!(await channelNames(page)).some((n) => n.includes('ops-hook')), 'testing unsaved values saved nothing');
  await axe(page, 'notifications page');
  await ctx.close();
});

await step('settings-webhook-test-without-script', async () => {
  const ctx = await context({ javaScriptEnabled: false });
  const page = await ctx.newPage();
  await login(page, admin);
  await page.goto(`${base}/settings/notifications`);
  await fillWebhook(page, 'no-script-hook', hooks.fail, '');
  await Promise.all([page.waitForLoadState(), page.click('button[name=action][value=test]')]);
  await page.locator('#test-result .test-fail').waitFor();
  const text = await page.locator('#test-result').innerText();
  assert(/500/.test(text), `the red cross says what the receiver answered: ${text}`);
  assert(await page.inputValue('#name') === 'no-script-hook', 'the posted form comes back with its values');
  assert(!(await channelNames(page)).some((n) => n.includes('no-script-hook')), 'nothing saved');
  await ctx.close();
});

await step('settings-webhook-saved-green-then-red-on-500', async () => {
  const ctx = await context();
  const page = await ctx.newPage();
  await login(page, admin);
  await page.goto(`${base}/settings/notifications`);
  await fillWebhook(page, 'ops-hook', hooks.ok, hooks.secret);
  await Promise.all([page.waitForURL(/\/settings\/notifications\/c/), page.click('button[name=action][value=save]')]);
  channelId = new URL(page.url()).pathname.split('/').pop();
  const html = await page.content();
  assert(!html.includes(hooks.secret) && !html.includes('/hooks/restic'), 'the saved secret and URL path are not shown again');
  const before = await received();
  await page.click('button[name=action][value=test]');
  await testResult(page, 'ok');
  assert(await received() === before + 1, 'the saved channel signed its test delivery');
  // replace the destination with a receiver that answers 500
  await page.fill('#url', hooks.fail);
  await Promise.all([page.waitForURL(/done=saved/), page.click('button[name=action][value=save]')]);
  await page.click('button[name=action][value=test]');
  const text = await testResult(page, 'fail');
  assert(/500/.test(text) && /receiver says no|500/.test(text), `red cross with the error: ${text}`);
  // disable and enable from the list
  await page.goto(`${base}/settings/notifications`);
  await Promise.all([page.waitForURL(/done=disabled/), page.locator(`#channel-${channelId} button`, { hasText: 'Disable' }).click()]);
  await page.locator(`#channel-${channelId} .status`, { hasText: 'disabled' }).waitFor();
  await Promise.all([page.waitForURL(/done=enabled/), page.locator(`#channel-${channelId} button`, { hasText: 'Enable' }).click()]);
  await ctx.close();
});

let viewerName = 'reader';
await step('settings-viewer-sees-no-settings-and-gets-403', async () => {
  const ctx = await context();
  const page = await ctx.newPage();
  await login(page, admin);
  await page.goto(`${base}/settings/users`);
  await page.fill('#new-name', viewerName);
  await page.selectOption('#new-role', 'viewer');
  await page.fill('#new-password', 'reader-password-e2e');
  await Promise.all([page.waitForURL(/done=added/), page.click('#add-user ~ form button[type=submit]')]);
  await page.locator('#users tbody tr', { hasText: viewerName }).waitFor();
  await axe(page, 'users page');
  const vctx = await context();
  const v = await vctx.newPage();
  await login(v, { name: viewerName, password: 'reader-password-e2e' });
  await v.goto(`${base}/settings`);
  assert((await v.locator('a[href="/settings/users"], a[href="/settings/notifications"], a[href="/settings/tokens"], a[href="/settings/audit"]').count()) === 0,
    'a viewer sees no links to the admin settings');
  for (const p of ['/settings/notifications', '/settings/users', '/settings/tokens', '/settings/audit']) {
    const r = await v.goto(`${base}${p}`);
    assert(r.status() === 403, `GET ${p} as a viewer: ${r.status()}`);
  }
  await v.goto(`${base}/account`);
  const statuses = await v.evaluate(async (id) => {
    const csrf = document.querySelector('meta[name="csrf-token"]').content;
    const post = (path, body) => fetch(path, { method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ _csrf: csrf, ...body }) }).then((r) => r.status);
    return [
      await post('/settings/users', { name: 'mallory', role: 'admin', password: 'mallory-password-long' }),
      await post('/settings/notifications', { name: 'x', kind: 'webhook', url: 'https://example.com', action: 'save' }),
      await post(`/settings/notifications/${id}/delete`, { confirm: '1' }),
      await post('/settings/tokens', { name: 'x', role: 'viewer', expires_in_days: '1' }),
    ];
  }, channelId);
  assert(statuses.every((s) => s === 403), `posting anyway as a viewer is refused: ${statuses}`);
  await vctx.close();
  await ctx.close();
});

await step('settings-last-admin-cannot-be-demoted', async () => {
  const ctx = await context();
  const page = await ctx.newPage();
  await login(page, admin);
  await page.goto(`${base}/settings/users`);
  const row = page.locator('#users tbody tr', { has: page.locator('td:first-child strong', { hasText: new RegExp(`^${admin.name}$`) }) });
  await row.locator('select[name=role]').selectOption('operator');
  await row.locator('.role-form button').click();
  await page.locator('.row-error').waitFor();
  const msg = await page.locator('.row-error').innerText();
  assert(/last enabled admin/.test(msg), `a clear refusal: ${msg}`);
  await page.goto(`${base}/settings/users`);
  const role = await page.locator('#users tbody tr', { has: page.locator('td:first-child strong', { hasText: new RegExp(`^${admin.name}$`) }) })
    .locator('select[name=role]').inputValue();
  assert(role === 'admin', `still an admin: ${role}`);
  await ctx.close();
});

function curlStatus(token) {
  return execFileSync('curl', ['-sk', '-o', '/dev/null', '-w', '%{http_code}', '-H', `Authorization: Bearer ${token}`, `${base}/api/v1/hosts`],
    { encoding: 'utf8' }).trim();
}

await step('settings-api-token-works-once-revoked-401', async () => {
  const ctx = await context();
  const page = await ctx.newPage();
  await login(page, admin);
  await page.goto(`${base}/settings/tokens`);
  await page.fill('#token-name', 'e2e-curl');
  await page.selectOption('#token-role', 'viewer');
  await page.fill('#token-days', '7');
  await page.click('#new-token ~ form button[type=submit]');
  const secret = (await page.locator('#token-secret').innerText()).trim();
  assert(secret.startsWith('rmt_'), 'the new token is shown');
  assert(curlStatus(secret) === '200', 'curl with the token gets the fleet');
  await page.goto(`${base}/settings/tokens`);
  assert(!(await page.content()).includes(secret), 'the secret is never shown again');
  const row = page.locator('#tokens tbody tr', { hasText: 'e2e-curl' });
  assert((await row.locator('.mono').innerText()).startsWith(secret.slice(0, 12)), 'the list shows its prefix');
  // the last use is written off the request path, a moment after the call
  for (let i = 0; i < 50 && /never/.test(await row.innerText()); i++) {
    await page.waitForTimeout(100);
    await page.goto(`${base}/settings/tokens`);
  }
  assert(!/never/.test(await row.innerText()), 'its last use is recorded');
  await row.locator('input[name=confirm]').check();
  await Promise.all([page.waitForURL(/done=revoked/), row.locator('button', { hasText: 'Revoke' }).click()]);
  assert(curlStatus(secret) === '401', 'after revoking, the next call gets 401');
  await ctx.close();
});

await step('settings-audit-log-shows-all-of-it', async () => {
  const ctx = await context();
  const page = await ctx.newPage();
  await login(page, admin);
  await page.goto(`${base}/settings/audit`);
  const text = await page.locator('#audit').innerText();
  for (const a of ['channel.create', 'channel.update', 'user.create', 'token.create', 'token.revoke']) {
    assert(text.includes(a), `the audit log shows ${a}`);
  }
  await page.goto(`${base}/settings/audit?actor=${admin.name}&action=token.`);
  const rows = await page.locator('#audit tbody tr').count();
  assert(rows === 2, `filtered to the admin's token actions: ${rows} rows`);
  await page.goto(`${base}/settings/audit?target_kind=channel&target_id=${channelId}`);
  assert((await page.locator('#audit tbody tr').count()) >= 3, 'the channel page\'s audit link lists its entries');
  await axe(page, 'audit page');
  await page.goto(`${base}/account`);
  await page.locator('#sessions tr.current', { hasText: 'this browser' }).waitFor();
  await axe(page, 'account page');
  await ctx.close();
  shots.push(
    ['settings', '/settings'],
    ['settings-notifications', '/settings/notifications'],
    ['settings-channel', `/settings/notifications/${channelId}`],
    ['settings-users', '/settings/users'],
    ['settings-tokens', '/settings/tokens'],
    ['settings-audit', '/settings/audit'],
    ['account', '/account'],
  );
});
