#!/usr/bin/env python3
"""When a fleet's periodic repository refreshes fall due (issue 14, stop 63).
Not run in CI.

A store of N repositories, each with one online host, all created a week
ago and never refreshed: an upgraded store, or a fleet added in one go
(with --wave-hours-ago H: all last refreshed together H hours ago, a store
upgraded after such a wave). The
control plane's sweep runs every tick (15 s, the heartbeat interval) and
queues the refresh of at most 256 due repositories a tick. This script runs
that sweep's statement, tick after tick over a simulated clock, on two
copies of the store:

- `phase` (this build): `DUE_SQL`, read from store/src/refresh.rs — each
  repository due once a period at its own place in it, and no sooner than
  half a period after its last refresh;
- `last` (the rule before stop 63, kept here): due a period after its last
  refresh, the longest unrefreshed first.

A queued refresh is recorded as the sweep records it (`repo_refresh`); the
four jobs a refresh queues, and the restic runs they are, are not written
(stop 59 and 62 measured those: 2.9–6.7 s of the writer a burst while a
fleet's refreshes are being queued). Prints, per period, how many ticks
queued a refresh, how many were at the 256 cap, the largest tick, and the
statement's time; writes the per-tick counts to the JSON named by --out.

  cargo build --release -p restic-manager
  python3 bench/refresh_cadence.py --bin target/release/restic-manager \\
      --repos 18900 --periods 3 --out /tmp/cadence.json --svg /tmp/cadence.svg
"""

import argparse
import importlib.machinery
import importlib.util
import json
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _capacity():
    """bench/capacity as a module (its `refresh_phase`: the product's
    phases, written once for both scripts)."""
    loader = importlib.machinery.SourceFileLoader("capacity", os.path.join(ROOT, "bench/capacity"))
    spec = importlib.util.spec_from_loader("capacity", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


refresh_phase = _capacity().refresh_phase

# The rule before stop 63 (store/src/refresh.rs at 8857385): `?` the time
# a period ago, `?` the limit.
LAST_RULE_SQL = """SELECT r.id FROM repositories r LEFT JOIN repo_refresh f ON f.repo_id = r.id
     WHERE COALESCE(f.queued_at, r.created_at) <= ?
       AND (r.maintenance_host_id IN (SELECT id FROM hosts WHERE status = 'online')
            OR r.id IN (SELECT hr.repo_id FROM host_repositories hr JOIN hosts h ON h.id = hr.host_id
                         WHERE h.status = 'online'))
     ORDER BY COALESCE(f.queued_at, r.created_at), r.id
     LIMIT ?"""


def phase_rule_sql():
    """This build's statement, as the control plane runs it (`?1` now, `?2`
    the period, `?3` the limit)."""
    src = open(os.path.join(ROOT, "store/src/refresh.rs")).read()
    m = re.search(r'pub const DUE_SQL: &str = "(.*?)";', src, re.S)
    if not m:
        sys.exit("DUE_SQL not found in store/src/refresh.rs")
    return m.group(1)


def make_store(bin_path, db, repos, now):
    """An empty store migrated by the product (`seed` with no history), then
    `repos` hosts, each online with a repository of its own created a week
    ago."""
    subprocess.run([bin_path, "seed", "--db", db, "--hosts", "1", "--jobs-per-host", "0",
                    "--snapshots-per-host", "0"], check=True, stdout=subprocess.DEVNULL)
    c = sqlite3.connect(db, isolation_level=None)
    c.execute("PRAGMA foreign_keys=ON")
    c.execute("BEGIN")
    c.execute("DELETE FROM repositories")
    c.execute("DELETE FROM hosts")
    week = now - 7 * 86_400_000
    host_cols = [r[1] for r in c.execute("PRAGMA table_info(hosts)")]
    assert "status" in host_cols
    for i in range(repos):
        h = f"hcad{i:06d}"
        r = f"rcad{i:06d}"
        c.execute("INSERT INTO hosts (id, name, created_by, created_at, status) "
                  "VALUES (?, ?, 'bench', ?, 'online')", (h, h, week))
        c.execute("INSERT INTO repositories (id, name, url_display, secrets_enc, created_at, created_by, "
                  "refresh_phase) VALUES (?1, ?1, 'rest:https://bench.invalid/' || ?1, x'00', ?2, "
                  "'bench cadence', ?3)", (r, week, refresh_phase(r)))
        c.execute("INSERT INTO host_repositories (host_id, repo_id, access, secrets_enc, created_at) "
                  "VALUES (?, ?, 'append_only', x'00', ?)", (h, r, week))
    c.execute("COMMIT")
    c.execute("ANALYZE")
    c.close()


def wave(db, at):
    """Every repository last refreshed at `at`, as after a sweep that queued
    the whole fleet together (an upgraded store's history)."""
    c = sqlite3.connect(db, isolation_level=None)
    c.execute("INSERT INTO repo_refresh (repo_id, queued_at) SELECT id, ? FROM repositories WHERE true "
              "ON CONFLICT (repo_id) DO UPDATE SET queued_at = excluded.queued_at", (at,))
    c.close()


def simulate(db, rule, start, period_ms, tick_ms, limit, periods):
    sql = phase_rule_sql() if rule == "phase" else LAST_RULE_SQL
    c = sqlite3.connect(db, isolation_level=None)
    ticks = []
    now = start
    end = start + periods * period_ms
    while now < end:
        t0 = time.perf_counter()
        if rule == "phase":
            due = [r[0] for r in c.execute(sql, (now, period_ms, limit))]
        else:
            due = [r[0] for r in c.execute(sql, (now - period_ms, limit))]
        took = time.perf_counter() - t0
        if due:
            c.execute("BEGIN")
            c.executemany("INSERT INTO repo_refresh (repo_id, queued_at) VALUES (?, ?) "
                          "ON CONFLICT (repo_id) DO UPDATE SET queued_at = excluded.queued_at",
                          [(r, now) for r in due])
            c.execute("COMMIT")
        ticks.append((now - start, len(due), took))
        now += tick_ms
    c.close()
    return ticks


def summary(ticks, period_ms, limit, periods):
    out = []
    for p in range(periods):
        part = [t for t in ticks if p * period_ms <= t[0] < (p + 1) * period_ms]
        counts = [n for _, n, _ in part]
        busy = [n for n in counts if n]
        out.append({
            "period": p + 1,
            "ticks": len(part),
            "refreshes": sum(counts),
            "ticks_with_refreshes": len(busy),
            "ticks_at_cap": sum(1 for n in counts if n >= limit),
            "largest_tick": max(counts) if counts else 0,
            "median_busy_tick": statistics.median(busy) if busy else 0,
            "statement_ms_median": round(statistics.median(t for _, _, t in part) * 1000, 2),
            "statement_ms_max": round(max(t for _, _, t in part) * 1000, 2),
        })
    return out


def write_svg(path, result, bin_minutes=10):
    """Refreshes queued per `bin_minutes` over the simulated hours, one line
    per rule."""
    tick_ms = result["tick_ms"]
    per_bin = max(1, int(bin_minutes * 60_000 / tick_ms))
    series = []
    for rule, colour in (("last", "#c0392b"), ("phase", "#2471a3")):
        pt = result["rules"][rule]["per_tick"]
        series.append((rule, colour, [(i * tick_ms / 3_600_000, sum(pt[i:i + per_bin]))
                                      for i in range(0, len(pt), per_bin)]))
    W, H, L, R, T, B = 640, 320, 64, 16, 52, 44
    xmax = max(x for _, _, s in series for x, _ in s) or 1
    ymax = max(y for _, _, s in series for _, y in s) or 1
    sx = lambda x: L + (W - L - R) * x / xmax  # noqa: E731
    sy = lambda y: H - B - (H - T - B) * y / ymax  # noqa: E731
    title = (f"Refreshes queued per {bin_minutes} min, {result['repos']:,} repositories, "
             f"period {result['period_ms'] / 3_600_000:g} h, at most {result['limit']} a {tick_ms / 1000:g} s tick")
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" '
         'font-family="sans-serif" font-size="11">',
         '<rect width="100%" height="100%" fill="white"/>',
         f'<text x="{W / 2}" y="18" text-anchor="middle" font-size="12">{title}</text>',
         f'<line x1="{L}" y1="{H - B}" x2="{W - R}" y2="{H - B}" stroke="#333"/>',
         f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H - B}" stroke="#333"/>',
         f'<text x="{(L + W - R) / 2}" y="{H - 8}" text-anchor="middle">hours from the start</text>',
         f'<text x="14" y="{(T + H - B) / 2}" text-anchor="middle" '
         f'transform="rotate(-90 14 {(T + H - B) / 2})">refreshes queued</text>']
    for i in range(5):
        y = ymax * i / 4
        o.append(f'<line x1="{L}" y1="{sy(y):.1f}" x2="{W - R}" y2="{sy(y):.1f}" stroke="#ddd"/>')
        o.append(f'<text x="{L - 4}" y="{sy(y) + 4:.1f}" text-anchor="end">{y:,.0f}</text>')
    for h in range(0, int(xmax) + 1, 3):
        o.append(f'<text x="{sx(h):.1f}" y="{H - B + 14}" text-anchor="middle">{h}</text>')
    for j, (name, colour, pts) in enumerate(series):
        label = {"last": "a period after the last refresh (before)",
                 "phase": "at its own place in the period (now)"}[name]
        o.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="'
                 + " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts) + '"/>')
        o.append(f'<rect x="{L + 280 * j}" y="33" width="12" height="3" fill="{colour}"/>')
        o.append(f'<text x="{L + 280 * j + 18}" y="38">{label}</text>')
    o.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(o) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/restic-manager"))
    ap.add_argument("--repos", type=int, default=18_900)
    ap.add_argument("--period-hours", type=float, default=6)
    ap.add_argument("--tick-secs", type=float, default=15)
    ap.add_argument("--limit", type=int, default=256)
    ap.add_argument("--periods", type=int, default=3)
    ap.add_argument("--wave-hours-ago", type=float,
                    help="start from a fleet last refreshed together this long ago (an upgrade "
                         "after a wave) instead of never refreshed")
    ap.add_argument("--out")
    ap.add_argument("--svg", help="a chart of refreshes queued per 10 minutes, both rules")
    ap.add_argument("--from-json", help="only draw --svg from an earlier run's --out")
    a = ap.parse_args()
    if a.from_json:
        if a.svg:
            write_svg(a.svg, json.load(open(a.from_json)))
        return
    period_ms = int(a.period_hours * 3_600_000)
    tick_ms = int(a.tick_secs * 1000)
    now = int(time.time() * 1000)
    work = tempfile.mkdtemp(prefix="rm-cadence-")
    try:
        base = os.path.join(work, "base.db")
        t0 = time.perf_counter()
        make_store(a.bin, base, a.repos, now)
        if a.wave_hours_ago is not None:
            wave(base, now - int(a.wave_hours_ago * 3_600_000))
        print(f"store of {a.repos} repositories in {time.perf_counter() - t0:.1f} s", flush=True)
        result = {"repos": a.repos, "period_ms": period_ms, "tick_ms": tick_ms, "limit": a.limit,
                  "wave_hours_ago": a.wave_hours_ago, "rules": {}}
        for rule in ("last", "phase"):
            db = os.path.join(work, f"{rule}.db")
            shutil.copy(base, db)
            t0 = time.perf_counter()
            ticks = simulate(db, rule, now, period_ms, tick_ms, a.limit, a.periods)
            s = summary(ticks, period_ms, a.limit, a.periods)
            result["rules"][rule] = {"summary": s, "per_tick": [n for _, n, _ in ticks]}
            print(f"rule {rule} ({time.perf_counter() - t0:.0f} s):")
            for row in s:
                print("  period {period}: {refreshes} refreshes in {ticks_with_refreshes} of {ticks} ticks, "
                      "{ticks_at_cap} at the cap, largest {largest_tick}, median busy tick "
                      "{median_busy_tick}; statement {statement_ms_median} ms median, "
                      "{statement_ms_max} ms max".format(**row), flush=True)
        if a.out:
            with open(a.out, "w") as f:
                json.dump(result, f)
        if a.svg:
            write_svg(a.svg, result)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
