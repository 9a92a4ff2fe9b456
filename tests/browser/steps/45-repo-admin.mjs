// Repository administration (issues 10 and 11), end to end with real
// restic and the real REST server: add a NEW repository through the add
// form's initialise path (`restic init`), attach the host append-only,
// give it full access and choose it as maintenance host, rename the
// repository, change its password to a wrong one (refused on the password
// field, the typed name kept, nothing saved), detach the host (the
// maintenance host needs a successor or "none"), delete the record behind
// a confirmation — and add the same URL again to show the data was not
// touched. The host has several repositories: every select names ours.
import { cfg, base, step, assert, context, login, axe, shots, admin, hostId } from '../lib.mjs';

const ra = cfg.repoadmin;
let repoPath = null;

async function submit(page, button, url) {
  const wait = url ? page.waitForURL(url) : page.waitForLoadState();
  await Promise.all([wait, page.click(button)]);
}

await step('a-new-repository-is-initialised-through-the-add-form', async () => {
  const ctx = await context();
  const page = await ctx.newPage();
  await login(page, admin);
  await page.goto(`${base}/repositories/new`);
  await page.fill('#name', 'admin-e2e');
  await page.check('#mode-init');
  await page.fill('#host_id', 'e2e-host');
  await page.fill('#url', ra.full_url);
  await page.fill('#password', ra.password);
  await submit(page, 'button[type=submit].primary', /\/repositories\/r/);
  repoPath = new URL(page.url()).pathname;
  assert(await page.locator('h1', { hasText: 'admin-e2e' }).count() === 1, 'the new repository has its page');
  assert(await page.locator('#repo-state .s-ok', { hasText: 'verified' }).count() === 1, 'restic init ran: it is verified');
  await ctx.close();
});

await step('the-host-is-attached-append-only-then-made-maintenance-host-through-the-forms', async () => {
  assert(repoPath, 'the repository was added');
  const ctx = await context();
  const page = await ctx.newPage();
  await login(page, admin);
  await page.goto(`${base}${repoPath}`);
  // A name no host has: refused at the field, what was typed kept.
  await page.fill('#attach-host', 'no-such-host');
  await page.check('#access-full');
  await submit(page, 'button:text-is("Attach host")');
  const unknown = await page.locator('#attach-host-error').textContent();
  assert(unknown.includes('no host has the name or id'), `the unknown host is named: ${unknown}`);
  assert(await page.inputValue('#attach-host') === 'no-such-host', 'what was typed is kept');
  assert(await page.locator('#repo-hosts tbody tr').count() === 0, 'nothing was attached');
  // The picker suggests the fleet's names as one types (GET /api/v1/host-names).
  const suggested = () => page.evaluate(() => [...document.querySelectorAll('#host-names option')].map((o) => o.value));
  await page.fill('#attach-host', '');
  await page.locator('#attach-host').pressSequentially('zz-none');
  await page.waitForFunction(() => document.querySelectorAll('#host-names option').length === 0);
  await page.fill('#attach-host', '');
  await page.locator('#attach-host').pressSequentially('e2e-h');
  await page.waitForFunction(() => [...document.querySelectorAll('#host-names option')].some((o) => o.value === 'e2e-host'));
  assert((await suggested()).every((n) => n.includes('e2e-h')), `only matching names are suggested: ${await suggested()}`);
  await page.fill('#attach-host', 'e2e-host');
  await page.check('#access-ao');
  await page.fill('#attach-url', ra.append_only_url);
  await page.fill('#attach-password', ra.password);
  await submit(page, 'button:text-is("Attach host")');
  const row = page.locator('#repo-hosts tbody tr', { hasText: 'e2e-host' });
  await row.waitFor();
  assert(await row.locator('.status', { hasText: 'append-only' }).count() === 1, 'attached append-only');
  // An append-only host cannot be the maintenance host: give it full
  // access (the repository's own credentials), then choose it.
  assert(await page.locator('#maint-host').count() === 0, 'no maintenance choice without a full-access host');
  await page.fill('#attach-host', hostId);
  await page.check('#access-full');
  await submit(page, 'button:text-is("Attach host")');
  await row.locator('.status', { hasText: 'full' }).waitFor();
  await page.selectOption('#maint-host', hostId);
  await submit(page, 'button:text-is("Set maintenance host")');
  await row.locator('td', { hasText: 'maintenance host' }).waitFor();
  const details = await page.locator('#details-h + dl').textContent();
  assert(details.includes('e2e-host'), `the details name the maintenance host: ${details}`);
  // A test from it works with the stored credentials.
  await page.selectOption('#test-host', hostId);
  await submit(page, 'button:text-is("Test connection")');
  await page.locator('#notice.banner.ok').waitFor({ timeout: 60000 });
  await ctx.close();
});

await step('rename-and-a-wrong-password-is-refused-on-its-field-keeping-the-input', async () => {
  const ctx = await context();
  const page = await ctx.newPage();
  await login(page, admin);
  await page.goto(`${base}${repoPath}`);
  await axe(page, 'repository page with edit and delete');
  await page.fill('#edit-name', 'admin-e2e-renamed');
  await submit(page, 'button:text-is("Save changes")');
  await page.locator('#notice.banner.ok').waitFor();
  assert(await page.locator('h1', { hasText: 'admin-e2e-renamed' }).count() === 1, 'renamed');
  assert(await page.inputValue('#edit-name') === 'admin-e2e-renamed', 'the form shows the new name');

  // A wrong password (with another new name): checked on the maintenance
  // host by real restic, refused on the password field, nothing saved.
  await page.fill('#edit-name', 'admin-e2e-third');
  await page.fill('#edit-password', 'not-the-password');
  await submit(page, 'button:text-is("Save changes")');
  const err = page.locator('#edit-password-error');
  await err.waitFor({ timeout: 60000 });
  const text = await err.textContent();
  assert(text.includes('wrong repository password') && text.includes('nothing was changed'), `the reason is named: ${text}`);
  assert(await page.inputValue('#edit-name') === 'admin-e2e-third', 'the typed name is kept');
  assert(await page.inputValue('#edit-password') === '', 'the password is never shown back');
  assert(await page.locator('h1', { hasText: 'admin-e2e-renamed' }).count() === 1, 'the name did not change');
  await page.goto(`${base}${repoPath}`);
  assert(await page.locator('h1', { hasText: 'admin-e2e-renamed' }).count() === 1, 'nothing was saved');
  // the stored password still works
  await page.selectOption('#test-host', hostId);
  await submit(page, 'button:text-is("Test connection")');
  await page.locator('#notice.banner.ok').waitFor({ timeout: 60000 });
  await ctx.close();
});

await step('the-maintenance-host-is-detached-only-with-a-successor-or-none', async () => {
  const ctx = await context();
  const page = await ctx.newPage();
  await login(page, admin);
  await page.goto(`${base}${repoPath}`);
  const row = page.locator('#repo-hosts tbody tr', { hasText: 'e2e-host' });
  await submit(page, `#repo-hosts a[href$="/hosts/${hostId}/detach"]`, /\/detach$/);
  assert((await page.locator('h1').textContent()).includes('Detach e2e-host from admin-e2e-renamed'), 'the page names host and repository');
  await axe(page, 'detach page');
  // neither a confirmation nor a successor
  await submit(page, 'button:text-is("Detach e2e-host")');
  await page.locator('#detach-confirm-error').waitFor();
  await page.check('#detach-confirm');
  await submit(page, 'button:text-is("Detach e2e-host")');
  const maint = page.locator('#detach-maint-error');
  await maint.waitFor({ timeout: 30000 });
  assert((await maint.textContent()).includes('maintenance host'), `the maintenance host is named: ${await maint.textContent()}`);
  await page.selectOption('#detach-maint', 'none');
  await page.check('#detach-confirm');
  await submit(page, 'button:text-is("Detach e2e-host")', new RegExp(`${repoPath}$|${repoPath}#hosts$`));
  await page.locator('#repo-hosts .empty').waitFor();
  assert(await row.count() === 0, 'the host is detached');
  const details = await page.locator('#details-h + dl').textContent();
  assert(details.includes('none'), `no maintenance host any more: ${details}`);
  await ctx.close();
});

await step('delete-needs-a-confirmation-naming-the-repository-and-leaves-its-data', async () => {
  const ctx = await context();
  const page = await ctx.newPage();
  await login(page, admin);
  await page.goto(`${base}${repoPath}`);
  const label = await page.locator('label[for="delete-confirm"]').textContent();
  assert(label.includes('admin-e2e-renamed'), `the confirmation names the repository: ${label}`);
  const card = await page.locator('#delete').textContent();
  assert(card.includes('The data and snapshots in the repository are not touched'), 'the card says the data stays');
  await submit(page, 'button:text-is("Delete admin-e2e-renamed")');
  await page.locator('#delete-confirm-error').waitFor();
  await page.check('#delete-confirm');
  await submit(page, 'button:text-is("Delete admin-e2e-renamed")', /\/repositories(#.*)?$/);
  assert(await page.locator('a', { hasText: 'admin-e2e-renamed' }).count() === 0, 'gone from the list');
  const gone = await page.goto(`${base}${repoPath}`);
  assert(gone.status() === 404, `its page is gone: ${gone.status()}`);

  // The data was not touched: the same URL opens as an existing repository.
  await page.goto(`${base}/repositories/new`);
  await page.fill('#name', 'admin-e2e-again');
  await page.check('#mode-verify');
  await page.fill('#host_id', 'e2e-host');
  await page.fill('#url', ra.full_url);
  await page.fill('#password', ra.password);
  await submit(page, 'button[type=submit].primary', /\/repositories\/r/);
  assert(await page.locator('#repo-state .s-ok', { hasText: 'verified' }).count() === 1, 'it still opens with restic');
  await page.check('#delete-confirm');
  await submit(page, 'button:text-is("Delete admin-e2e-again")', /\/repositories(#.*)?$/);
  await ctx.close();
  shots.push(['repository-detach', `/repositories/${cfg.repo_id}/hosts/${hostId}/detach`]);
});
