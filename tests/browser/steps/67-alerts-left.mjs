// Issue 12, what was left: on a saved, signed webhook channel's page, a
// test of a changed URL that is not saved, with the secret field left
// empty, is signed with the saved secret (the checking receiver verifies
// the signature against it), and saves nothing.
// Receivers come from tests/cli/browser_settings.rs (cfg.settings).
import { cfg, base, step, assert, context, login, admin } from '../lib.mjs';

const hooks = cfg.settings;

async function verified() {
  return (await (await fetch(hooks.ok_count)).json()).verified;
}

await step('an-unsaved-changed-url-with-an-empty-secret-field-is-tested-with-the-saved-secret', async () => {
  const ctx = await context();
  const page = await ctx.newPage();
  await login(page, admin);
  await page.goto(`${base}/settings/notifications`);
  await page.fill('#name', 'unsaved-edit-hook');
  await page.selectOption('#kind', 'webhook');
  // Saved pointing at the receiver that answers 500, with the secret the
  // checking receiver verifies against.
  await page.fill('#url', hooks.fail);
  await page.fill('#secret', hooks.secret);
  // Disabled: later steps' alerts are not sent to it.
  await page.locator('input[type=checkbox][name=enabled]').uncheck();
  await Promise.all([page.waitForURL(/\/settings\/notifications\/c/), page.click('button[name=action][value=save]')]);
  const id = new URL(page.url()).pathname.split('/').pop();
  assert(await page.inputValue('#secret') === '', 'the secret field is empty (never shown again)');

  // The URL changed to the checking receiver, not saved, secret empty.
  const before = await verified();
  await page.fill('#url', `${hooks.ok}?unsaved=1`);
  await page.click('button[name=action][value=test]');
  await page.locator('#test-result .test-ok, #test-result .test-fail').waitFor({ timeout: 20000 });
  const text = await page.locator('#test-result').innerText();
  assert(await page.locator('#test-result .test-ok').count() === 1, `green tick: ${text}`);
  assert(await verified() === before + 1, 'the receiver verified a signature made with the saved secret');

  // Nothing was saved: a test of the saved channel still goes to the 500.
  await page.goto(`${base}/settings/notifications/${id}`);
  await page.click('button[name=action][value=test]');
  await page.locator('#test-result .test-ok, #test-result .test-fail').waitFor({ timeout: 20000 });
  const saved = await page.locator('#test-result').innerText();
  assert(await page.locator('#test-result .test-fail').count() === 1 && /500/.test(saved), `the saved URL is unchanged: ${saved}`);
  await ctx.close();
});
