// Protecting the control plane (issue 13): until a recovery kit was
// exported every admin page shows a calm banner linking to Settings →
// Control-plane backup (viewers do not see it); there the admin chooses
// the repository, runs a control-plane backup through the local agent
// (real restic), downloads the recovery kit, and the banner is gone.
import { readFileSync } from 'node:fs';
import { cfg, base, step, assert, context, login, axe, shots, admin, viewer } from '../lib.mjs';

await step('cp-backup-banner-until-the-recovery-kit-is-exported', async () => {
  const ctx = await context({ acceptDownloads: true });
  const page = await ctx.newPage();
  await login(page, admin);
  await page.goto(`${base}/`);
  const banner = page.locator('#cp-banner');
  assert(await banner.isVisible(), 'an admin sees the banner before any kit was exported');
  if (cfg.screenshots) {
    await page.screenshot({ path: `${cfg.screenshots}/cp-banner-light-1280.png` });
  }
  {
    const vctx = await context();
    const vpage = await vctx.newPage();
    await login(vpage, viewer);
    await vpage.goto(`${base}/`);
    assert(await vpage.locator('#cp-banner').count() === 0, 'viewers do not see the banner');
    await vctx.close();
  }
  await banner.locator('a').click();
  await page.waitForURL(/\/settings\/controlplane-backup$/);
  assert((await page.locator('#cp-kit').innerText()).includes('not exported'), 'the page says the kit is missing');

  // A name no repository has: refused under the field, the input kept.
  await page.fill('#cp-repo', 'no-such-repo');
  await page.click('form[action="/settings/controlplane-backup"] button[type=submit]');
  const refused = await page.locator('#cp-repo-error').innerText();
  assert(refused.startsWith('Repository:') && refused.includes('no-such-repo'), `the error stands under the field: ${refused}`);
  assert(await page.getAttribute('#cp-repo', 'aria-invalid') === 'true', 'the field is marked invalid');
  assert(await page.inputValue('#cp-repo') === 'no-such-repo', 'the name typed is kept');

  // Choose the repository (attached to the local agent) by typing part of
  // its name: the field asks the server for matching repositories (the
  // page lists only the first few, never every one) and offers them.
  await page.fill('#cp-repo', '');
  await page.locator('#cp-repo').pressSequentially('e2e-re');
  await page.waitForFunction(() => {
    const names = [...document.querySelectorAll('#repo-names option')].map((o) => o.value);
    return names.includes('e2e-repo') && names.every((n) => n.includes('e2e-re'));
  }, null, { timeout: 10000 });
  await page.fill('#cp-repo', 'e2e-repo');
  await page.click('form[action="/settings/controlplane-backup"] button[type=submit]');
  await page.waitForURL(/done=repo/);
  assert(await page.inputValue('#cp-repo') === 'e2e-repo', 'the saved repository is shown by name');
  assert(await page.getAttribute('#cp-status a[href^="/repositories/"]', 'href') === `/repositories/${cfg.repo_id}`,
    'the status links the repository chosen');
  // back up now
  await page.click('#cp-run-now');
  await page.waitForURL(/done=run/);
  let text = '';
  for (let i = 0; i < 120; i++) {
    await page.goto(`${base}/settings/controlplane-backup`);
    text = await page.locator('#cp-last-success').innerText();
    if (!text.includes('never')) break;
    // (no runs table until the first run started)
    if (await page.locator('#cp-runs .s-fail').count() > 0) {
      throw new Error(`a control-plane backup failed: ${await page.locator('#cp-runs').innerText()}`);
    }
    await page.waitForTimeout(1000);
  }
  assert(!text.includes('never'), 'a control-plane backup succeeded through the local agent');
  await axe(page, 'control-plane backup page');

  // The kit: a download with the master key and the repository's password.
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#cp-kit-download')]);
  assert(download.suggestedFilename() === 'restic-manager-recovery-kit.env', download.suggestedFilename());
  const kit = readFileSync(await download.path(), 'utf8');
  assert(/^RM_MASTER_KEY='[A-Za-z0-9+/=]{44}'$/m.test(kit), 'the kit holds the master key');
  assert(/^RESTIC_PASSWORD='.+'$/m.test(kit) && /^RESTIC_REPOSITORY='.+'$/m.test(kit), 'and the repository');

  await page.goto(`${base}/`);
  assert(await page.locator('#cp-banner').count() === 0, 'the banner is gone once the kit was exported');
  await page.goto(`${base}/settings/controlplane-backup`);
  assert((await page.locator('#cp-kit').innerText()).includes('exported'), 'the page records the export');
  await ctx.close();
});

await step('cp-backup-page-is-for-admins-only', async () => {
  const ctx = await context();
  const page = await ctx.newPage();
  await login(page, viewer);
  const resp = await page.goto(`${base}/settings/controlplane-backup`);
  assert(resp.status() === 403, `a viewer gets 403, not ${resp.status()}`);
  await ctx.close();
});

shots.push(['controlplane-backup', '/settings/controlplane-backup']);
