// Drives the operator UI in Debian's headless Chromium against a running
// restic-manager (real server, real agent, real restic). Started by the
// Rust test tests/cli/browser.rs, which prepares the installation and
// passes what it made in RM_BROWSER_CONFIG (JSON). The checks live in
// ./steps/*.mjs, run in file-name order (one file per area, so work on
// different pages never edits the same file); every wait is on page
// state, never a sleep. Then every page the steps listed is photographed
// (light and dark, 1280 and 390 px) when `screenshots` is set. Prints one
// line per check and "N passed, M failed"; exits non-zero on any failure.
// RM_BROWSER_STEPS=a,b limits the run to those step files (by name
// without .mjs); RM_BROWSER_ONLY=x,y to those checks.
import { readdirSync } from 'node:fs';
import { browser, step, shootAll, shots, admin, tally } from './lib.mjs';

const dir = new URL('./steps/', import.meta.url);
const want = process.env.RM_BROWSER_STEPS ? process.env.RM_BROWSER_STEPS.split(',') : null;
for (const file of readdirSync(dir).filter((f) => f.endsWith('.mjs')).sort()) {
  if (want && !want.includes(file.replace(/\.mjs$/, ''))) continue;
  await import(new URL(file, dir));
}
await step('screenshots', async () => { await shootAll(shots, admin); });

await browser.close();
console.log(`${tally.passed} passed, ${tally.failed} failed`);
process.exit(tally.failed === 0 ? 0 : 1);
