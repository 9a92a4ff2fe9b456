#!/usr/bin/env node
// Real Chromium pages on restic-manager's UI, counting what their live
// stream brings them (bench/capacity --browsers; never run in CI). The
// pages are those an operator leaves open: each signs in in a context of
// its own and opens its page, whose own script (web/static/app.js) keeps
// it live. An init script counts every SSE connection the page opens and
// closes and every event by name (`refetch` is the server telling a page
// that fell more than 1,024 events behind to fetch itself again); a
// request listener counts the page's own re-fetches (whole page, dashboard
// fragment).
//
// Configuration: RM_BROWSERS, JSON {url, user, password, pages, paths,
// chromium}; `paths` is a list of page paths the pages take in turn
// (default ["/"]). Prints {"ready": N} once every page is up; then, one
// JSON line per command read on stdin: `count` ({"pages": [counters]}),
// `quit`. playwright-core comes from tests/browser (npm ci there); it
// drives Debian's Chromium and never downloads a browser.
import { createRequire } from 'node:module';
import { createInterface } from 'node:readline';

const require_ = createRequire(new URL('../tests/browser/package.json', import.meta.url));
const { chromium } = require_('playwright-core');

const cfg = JSON.parse(process.env.RM_BROWSERS || '{}');
const base = cfg.url.replace(/\/$/, '');
const paths = cfg.paths && cfg.paths.length ? cfg.paths : ['/'];

// Runs in each page before its own scripts: EventSource, counted.
const INSTRUMENT = `(() => {
  const c = window.__rmLive = { opened: 0, errors: 0, events: {} };
  const Native = window.EventSource;
  if (!Native) return;
  window.EventSource = class extends Native {
    constructor(url, opts) {
      super(url, opts);
      this.addEventListener('open', () => { c.opened++; });
      this.addEventListener('error', () => { c.errors++; });
      for (const t of ['job', 'host', 'alert', 'schedule', 'repo', 'refetch']) {
        this.addEventListener(t, () => { c.events[t] = (c.events[t] || 0) + 1; });
      }
    }
  };
})();`;

const browser = await chromium.launch({
  executablePath: cfg.chromium || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync'],
});

const pages = [];
for (let i = 0; i < cfg.pages; i++) {
  const ctx = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 900 } });
  await ctx.addInitScript(INSTRUMENT);
  const page = await ctx.newPage();
  const fetches = { page: 0, fragment: 0 };
  page.on('request', (r) => {
    const u = new URL(r.url());
    if (u.pathname.startsWith('/fragments/')) fetches.fragment++;
    else if ((r.headers()['x-requested-with'] || '') === 'fetch') fetches.page++;
  });
  await page.goto(`${base}/login`);
  await page.fill('#username', cfg.user);
  await page.fill('#password', cfg.password);
  await Promise.all([page.waitForURL((u) => !u.pathname.startsWith('/login')),
                     page.click('button[type=submit]')]);
  const path = paths[i % paths.length];
  await page.goto(`${base}${path}`);
  await page.waitForFunction(() => window.__rmLive && window.__rmLive.opened > 0, null, { timeout: 60000 });
  pages.push({ page, path, fetches });
}
console.log(JSON.stringify({ ready: pages.length }));

async function count() {
  const out = [];
  for (const p of pages) {
    let live = null;
    try {
      live = await p.page.evaluate(() => window.__rmLive);
    } catch (e) {
      live = { error: String(e) };
    }
    out.push({ path: p.path, ...live, fetches: { ...p.fetches } });
  }
  return out;
}

const rl = createInterface({ input: process.stdin });
for await (const line of rl) {
  const cmd = line.trim();
  if (cmd === 'count') {
    console.log(JSON.stringify({ pages: await count() }));
  } else if (cmd === 'quit') {
    break;
  } else if (cmd) {
    console.log(JSON.stringify({ error: `unknown command ${cmd}` }));
  }
}
await browser.close();
console.log(JSON.stringify({ closed: true }));
