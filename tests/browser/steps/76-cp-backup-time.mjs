// The control-plane backup at a time of day (issue 13): the page shows the
// daily time (02:00 in the server's zone unless set) and the next run; an
// admin sets another time and zone, a zone the server does not know is
// refused naming the field with the input kept, and the page and its JSON
// twin then show the next run at that time in that zone.
import { cfg, base, step, assert, context, login, axe, admin } from '../lib.mjs';

await step('cp-backup-runs-at-the-time-of-day-the-admin-sets', async () => {
  const ctx = await context();
  const page = await ctx.newPage();
  await login(page, admin);
  await page.goto(`${base}/settings/controlplane-backup`);
  const time = await page.locator('#cp-time').innerText();
  assert(time.includes('02:00') && time.includes("the server's zone"), `default time: ${time}`);
  assert(await page.inputValue('#cp-run-at') === '02:00', 'the form holds the saved time');

  // A zone the server does not know: refused, the field named, input kept.
  await page.fill('#cp-run-at', '04:30');
  await page.fill('#cp-zone', 'Mars/Olympus_Mons');
  await page.click('form[action="/settings/controlplane-backup"] button[type=submit]');
  const error = await page.locator('#cp-zone-error').innerText();
  assert(error.startsWith('Time zone:') && error.includes('Mars/Olympus_Mons'), `the error stands under its field: ${error}`);
  assert(await page.getAttribute('#cp-zone', 'aria-invalid') === 'true', 'the field is marked invalid');
  assert((await page.getAttribute('#cp-zone', 'aria-describedby')).includes('cp-zone-error'), 'the field is described by its error');
  assert((await page.locator('.banner.fail').innerText()).includes('correct the field marked below'), 'the banner points to the field');
  assert(await page.inputValue('#cp-zone') === 'Mars/Olympus_Mons', 'the zone typed is kept');
  assert(await page.inputValue('#cp-run-at') === '04:30', 'the time typed is kept');
  assert(await page.inputValue('#cp-repo') === 'e2e-repo', 'the repository is kept');
  if (cfg.screenshots) {
    await page.screenshot({ path: `${cfg.screenshots}/cp-backup-time-error-light-1280.png`, fullPage: true });
  }
  // (nothing was saved)
  await page.goto(`${base}/settings/controlplane-backup`);
  assert((await page.locator('#cp-time').innerText()).includes('02:00'), 'the refused form saved nothing');

  // A real zone: saved; the next run is at that time in Tokyo. The hour is
  // half a day away from now, so the last run (the step before) is never
  // within a minute of it whenever the suite runs.
  const utcHour = (new Date().getUTCHours() + 12) % 24;
  const tokyo = `${String((utcHour + 9) % 24).padStart(2, '0')}:30`;
  await page.fill('#cp-run-at', tokyo);
  await page.fill('#cp-zone', 'Asia/Tokyo');
  await page.click('form[action="/settings/controlplane-backup"] button[type=submit]');
  await page.waitForURL(/done=repo/);
  const saved = await page.locator('#cp-time').innerText();
  assert(saved.includes(tokyo) && saved.includes('Asia/Tokyo'), `saved time: ${saved}`);
  const next = await page.locator('#cp-next-run').innerText();
  assert(new RegExp(`at \\d{4}-\\d{2}-\\d{2} ${tokyo} Asia/Tokyo`).test(next), `next run at ${tokyo} Tokyo: ${next}`);
  await axe(page, 'control-plane backup page with a time of day');

  // The JSON twin says the same.
  const api = await (await page.request.get(`${base}/api/v1/controlplane-backup`)).json();
  assert(api.run_at === tokyo && api.time_zone === 'Asia/Tokyo', JSON.stringify(api));
  assert(api.effective_time_zone === 'Asia/Tokyo', JSON.stringify(api));
  assert(next.includes(api.next_run_local), `page and API agree: ${next} / ${api.next_run_local}`);
  const utc = new Date(api.next_run_at);
  assert(utc.getUTCHours() === utcHour && utc.getUTCMinutes() === 30, `${tokyo} JST (UTC+9) is ${utcHour}:30 UTC: ${utc.toISOString()}`);
  await ctx.close();
});
