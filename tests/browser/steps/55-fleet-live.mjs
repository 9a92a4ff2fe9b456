// Live fleet fragment (issue 11): a dashboard kept open with a filter
// follows real events without a reload. A host tagged from another tab
// enters a tag filter (in the page's sort, once), leaves it when the tag
// is removed; a host added from another tab appears in a text filter.
import { base, step, assert, context, login, shots, admin, hostId } from '../lib.mjs';

// Marks the page so a reload (a new document) would be noticed.
async function mark(page) { await page.evaluate(() => { window.__rmNoReload = true; }); }
async function notReloaded(page, what) {
  assert(await page.evaluate(() => window.__rmNoReload === true), `${what}: the page was not reloaded`);
}
async function ids(page) {
  return page.locator('#fleet > tbody > tr').evaluateAll((trs) => trs.map((tr) => tr.getAttribute('data-host')));
}

await step('a-filtered-dashboard-drops-and-brings-rows-live', async () => {
  const ctx = await context();
  const dash = await ctx.newPage();
  const other = await ctx.newPage();
  await login(dash, admin);

  // A tag nobody carries yet: the empty note, no rows.
  await dash.goto(`${base}/?tag=live-x&sort=name`);
  await dash.locator('[data-live][data-state="live"]').waitFor();
  assert(await dash.locator('#fleet-empty').isVisible(), 'the empty note is shown for a filter nobody matches');
  assert((await ids(dash)).length === 0, 'no rows');
  await mark(dash);

  // Tag the host in another tab (a real host.changed over the bus).
  await other.goto(`${base}/hosts/${hostId}`);
  const before = await other.locator('#tags-input').inputValue();
  const tagged = before.trim() ? `${before}, live-x` : 'live-x';
  await other.fill('#tags-input', tagged);
  await Promise.all([other.waitForURL(/\/hosts\/[^/]+#tags$/), other.click('text=Save tags')]);

  await dash.locator(`#host-${hostId}`).waitFor({ timeout: 15000 });
  await notReloaded(dash, 'a host entering the filter');
  assert(!(await dash.locator('#fleet-empty').isVisible()), 'the empty note is hidden once a row is there');
  assert(await dash.locator('#fleet').isVisible(), 'the table is shown');
  assert(JSON.stringify(await ids(dash)) === JSON.stringify([hostId]), `exactly the tagged host: ${await ids(dash)}`);
  assert((await dash.locator('#fleet-pager').textContent()).includes('1–1 of 1 hosts'), 'the pager follows');

  // A new host named to sort first enters the filter too (added, then
  // tagged, from the other tab): it comes before, once.
  await other.goto(`${base}/hosts/new`);
  await other.fill('#name', 'aaa-live-new');
  await Promise.all([other.waitForSelector('#enroll-cmd'), other.click('button[type=submit].primary')]);
  const newId = new URL(await other.locator('a.button', { hasText: 'Go to' }).getAttribute('href'), base).pathname.split('/').pop();
  await other.goto(`${base}/hosts/${newId}`);
  await other.fill('#tags-input', 'live-x');
  await Promise.all([other.waitForURL(/\/hosts\/[^/]+#tags$/), other.click('text=Save tags')]);
  await dash.locator(`#host-${newId}`).waitFor({ timeout: 15000 });
  await dash.waitForFunction(() => document.querySelectorAll('#fleet > tbody > tr').length === 2);
  const two = await ids(dash);
  assert(JSON.stringify(two) === JSON.stringify([newId, hostId]), `in the page's sort (by name), no duplicates: ${two}`);
  await notReloaded(dash, 'a new host entering the filter');

  // The first host leaves the filter: its row goes, the other stays.
  await other.goto(`${base}/hosts/${hostId}`);
  await other.fill('#tags-input', before);
  await Promise.all([other.waitForURL(/\/hosts\/[^/]+#tags$/), other.click('text=Save tags')]);
  await dash.locator(`#host-${hostId}`).waitFor({ state: 'detached', timeout: 15000 });
  assert(JSON.stringify(await ids(dash)) === JSON.stringify([newId]), `only the host still tagged: ${await ids(dash)}`);
  assert((await dash.locator('#fleet-pager').textContent()).includes('1–1 of 1 hosts'), 'the pager follows');
  await notReloaded(dash, 'a host leaving the filter');

  // A text filter: a host added in the other tab appears (a pending host).
  await dash.goto(`${base}/?q=live-added`);
  await dash.locator('[data-live][data-state="live"]').waitFor();
  await mark(dash);
  assert((await ids(dash)).length === 0, 'nothing matches yet');
  await other.goto(`${base}/hosts/new`);
  await other.fill('#name', 'live-added-1');
  await Promise.all([other.waitForSelector('#enroll-cmd'), other.click('button[type=submit].primary')]);
  await dash.locator('#fleet > tbody > tr', { hasText: 'live-added-1' }).waitFor({ timeout: 15000 });
  assert((await ids(dash)).length === 1, 'one row for the new host');
  assert((await dash.locator('#fleet > tbody > tr [data-field="state"]').textContent()).includes('awaiting enrollment'),
    'the new host is shown awaiting enrollment');
  await notReloaded(dash, 'a new host appearing');
  await ctx.close();
  shots.push(['dashboard-live-filter', '/?tag=live-x&sort=name']);
});
