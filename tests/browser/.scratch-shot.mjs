import { chromium } from 'playwright-core';
const [base, user, pass, out, ...paths] = process.argv.slice(2);
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox','--disable-gpu'] });
for (const scheme of ['light','dark']) for (const width of [1280, 390]) {
  const ctx = await browser.newContext({ ignoreHTTPSErrors: true, colorScheme: scheme, viewport: { width, height: 900 } });
  const page = await ctx.newPage();
  page.on('console', m => { if (m.type() === 'error') console.log('console:', m.text()); });
  page.on('pageerror', e => console.log('pageerror:', e.message));
  await page.goto(base + '/login');
  await page.fill('#username', user); await page.fill('#password', pass);
  await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
  for (const p of paths) {
    await page.goto(base + p);
    await page.waitForTimeout(800);
    const name = p.replace(/[^a-z0-9]+/gi, '_') || 'root';
    await page.screenshot({ path: `${out}/${name}-${scheme}-${width}.png`, fullPage: width === 390 ? false : true });
  }
  await ctx.close();
}
await browser.close();
