// Shared by the browser steps: the configuration the Rust test passed
// (RM_BROWSER_CONFIG), the browser, sign-in, the accessibility check, the
// step runner and the screenshot writer. Step files in ./steps/ import
// what they need from here.
import { chromium } from 'playwright-core';
import { readFileSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';

const require_ = createRequire(import.meta.url);
const axeSource = readFileSync(require_.resolve('axe-core/axe.min.js'), 'utf8');
export const cfg = JSON.parse(process.env.RM_BROWSER_CONFIG || '{}');
export const base = cfg.url.replace(/\/$/, '');
export const only = process.env.RM_BROWSER_ONLY ? process.env.RM_BROWSER_ONLY.split(',') : null;
export const tally = { passed: 0, failed: 0 };

export async function step(name, fn) {
  if (only && !only.includes(name)) return;
  const t0 = Date.now();
  try {
    await fn();
    tally.passed++;
    console.log(`ok   ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    tally.failed++;
    console.log(`FAIL ${name}: ${e && e.stack ? e.stack : e}`);
  }
}
export function assert(cond, msg) { if (!cond) throw new Error(msg); }

export const browser = await chromium.launch({
  executablePath: cfg.chromium || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync'],
});

export async function context(opts = {}) {
  return browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 900 }, ...opts });
}
export async function login(page, user) {
  await page.goto(`${base}/login`);
  await page.fill('#username', user.name);
  await page.fill('#password', user.password);
  await Promise.all([page.waitForURL((u) => !u.pathname.startsWith('/login')), page.click('button[type=submit]')]);
}
export async function axe(page, what) {
  // Evaluated through the debugging protocol: the page's CSP (rightly)
  // refuses injected scripts.
  await page.evaluate(axeSource);
  const result = await page.evaluate(async () => await window.axe.run(document, { resultTypes: ['violations'] }));
  const bad = result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  assert(bad.length === 0, `${what}: accessibility violations: ` +
    bad.map((v) => `${v.id} (${v.impact}): ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join('; ')}`).join(' | '));
}
// Every page in both themes at both widths, one sign-in per combination.
export async function shootAll(pages, user) {
  if (!cfg.screenshots) return;
  mkdirSync(cfg.screenshots, { recursive: true });
  for (const scheme of ['light', 'dark']) {
    for (const width of [1280, 390]) {
      const ctx = await context({ colorScheme: scheme, viewport: { width, height: 900 } });
      const page = await ctx.newPage();
      await login(page, user);
      for (const [name, url] of pages) {
        await page.goto(`${base}${url}`);
        // Pages with live updates are ready once their stream is live.
        if (await page.locator('[data-live]').count()) {
          await page.locator('[data-live][data-state="live"]').first().waitFor();
        }
        await page.screenshot({ path: `${cfg.screenshots}/${name}-${scheme}-${width}.png`, fullPage: true });
      }
      await ctx.close();
    }
  }
  // The sign-in page itself.
  for (const scheme of ['light', 'dark']) {
    for (const width of [1280, 390]) {
      const ctx = await context({ colorScheme: scheme, viewport: { width, height: 900 } });
      const page = await ctx.newPage();
      await page.goto(`${base}/login`);
      await page.screenshot({ path: `${cfg.screenshots}/login-${scheme}-${width}.png`, fullPage: true });
      await ctx.close();
    }
  }
}


/// Pages each step file asks to have photographed: [name, url] pairs.
export const shots = [];
export const admin = cfg.admin, viewer = cfg.viewer, hostId = cfg.host_id;

