// Fleet scale (scale branch): tag a host from its page, filter the
// dashboard by that tag (only tagged hosts, the filter kept in the URL),
// tags shown as text.
import { base, step, assert, context, login, axe, shots, admin, hostId } from '../lib.mjs';

await step('tag-a-host-and-filter-the-fleet-by-it', async () => {
  const ctx = await context();
  const page = await ctx.newPage();
  await login(page, admin);
  await page.goto(`${base}/hosts/${hostId}`);
  await page.fill('#tags-input', 'e2e-tag, <i>x</i>');
  await Promise.all([page.waitForURL(/\/hosts\/[^/]+#tags$/), page.click('text=Save tags')]);
  const chips = await page.locator('#host-tags .tag').allTextContents();
  assert(chips.includes('e2e-tag') && chips.includes('<i>x</i>'), `the host page lists the tags as text: ${chips}`);
  assert((await page.locator('#host-tags i').count()) === 0, 'markup in a tag is not rendered');
  assert((await page.locator('#tags-input').inputValue()).includes('e2e-tag'), 'the form shows the saved tags');

  // A refused list keeps what was typed and names the problem.
  const long = 'y'.repeat(41);
  await page.fill('#tags-input', `keep-me, ${long}`);
  await page.click('text=Save tags');
  await page.locator('#tags-error').waitFor();
  assert((await page.locator('#tags-input').inputValue()) === `keep-me, ${long}`, 'the input is kept');

  // The dashboard filters by the tag through its select; the URL keeps it.
  await page.goto(`${base}/`);
  await page.locator(`#host-${hostId}`).waitFor();
  const before = await page.locator('#fleet tbody tr').count();
  assert(before >= 2, `the unfiltered fleet shows more than the tagged host (${before} rows)`);
  await Promise.all([page.waitForURL(/[?&]tag=e2e-tag/), page.selectOption('select[name=tag]', 'e2e-tag')]);
  await page.locator(`#host-${hostId}`).waitFor();
  const rows = await page.locator('#fleet tbody tr').count();
  assert(rows === 1, `only the tagged host is listed (${rows} rows)`);
  assert((await page.locator('select[name=tag]').inputValue()) === 'e2e-tag', 'the filter stays selected');
  // A tag on a row links to the same filter.
  const href = await page.locator(`#host-${hostId} a.tag`, { hasText: 'e2e-tag' }).getAttribute('href');
  assert(href === '/?tag=e2e-tag', `the row's tag links to its filter: ${href}`);
  await page.locator('[data-live][data-state="live"]').waitFor();
  await axe(page, 'dashboard filtered by tag');
  await page.reload();
  assert((await page.locator('#fleet tbody tr').count()) === 1, 'a reload keeps the filter (it is in the URL)');
  await ctx.close();
  shots.push(['dashboard-tag', '/?tag=e2e-tag'], ['host-tags', `/hosts/${hostId}#tags`]);
});
