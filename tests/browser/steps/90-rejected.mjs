// Refused results (issue 9): the host page lists what the control plane
// did not accept from the agent — when, job, reason.
import { cfg, base, step, assert, context, login, shots, admin, hostId } from '../lib.mjs';

await step('rejected-results-on-the-host-page', async () => {
  const ctx = await context();
  const page = await ctx.newPage();
  await login(page, admin);
  await page.goto(`${base}/hosts/${hostId}#rejected`);
  const heading = page.locator('h2#rejected');
  await heading.waitFor();
  const row = page.locator('h2#rejected ~ .table-wrap tbody tr', { hasText: cfg.rejected.job });
  await row.waitFor();
  const text = await row.textContent();
  assert(text.includes('started'), `the row names the phase: ${text}`);
  assert(text.includes('deleted while the host was offline'), `the row gives the reason: ${text}`);
  assert((await row.locator('time, [datetime], td').first().textContent()).trim().length > 0, 'the row says when');
  await ctx.close();
  shots.push(['host-rejected', `/hosts/${hostId}#rejected`]);
});
