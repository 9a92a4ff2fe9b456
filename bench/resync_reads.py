#!/usr/bin/env python3
"""The config resync's reads per sweeper tick (issue 14, stop 42): what
reading every online host's config versions cost against what the resync
reads now. Not run in CI.

  python3 bench/resync_reads.py 100000

A fresh database, every migration of store/migrations applied (so the
partial index `hosts_config_unconfirmed` of migration 31 exists), N online
hosts of which 20 have a config their agent has not confirmed. Timed,
median and max of 15 repeats, each statement executed and all its rows
fetched (in Python: the control plane's sqlx decodes the same rows):

- before: every online host's (id, desired, confirmed) version, as the
  resync read it each tick until stop 42 (from the covering
  `hosts_status` index);
- now: the unconfirmed hosts (`CONFIG_UNCONFIRMED_ONLINE_SQL`), plus the
  desired versions of K hosts whose reported version changed
  (`CONFIG_VERSIONS_AMONG_SQL`, the list as JSON), for K = 100 (a quiet
  tick) and 10,000 (one chunk, as after a control-plane restart).

Statements are read from store/src/hosts.rs."""
import glob, json, os, random, sqlite3, statistics, sys, tempfile, time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
N = int(sys.argv[1]) if len(sys.argv) > 1 else 100000
src = open(os.path.join(ROOT, "store/src/hosts.rs")).read()


def const(name):
    return src.split(f"pub const {name}: &str =\n    \"")[1].split('";')[0]


BEFORE = "SELECT id, config_version, applied_config_version FROM hosts WHERE status = 'online'"
UNCONFIRMED = const("CONFIG_UNCONFIRMED_ONLINE_SQL")
AMONG = const("CONFIG_VERSIONS_AMONG_SQL")


def fresh(path):
    c = sqlite3.connect(path, isolation_level=None)
    for p in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON", "cache_size=-65536"):
        c.execute("PRAGMA " + p)
    for f in sorted(glob.glob(os.path.join(ROOT, "store/migrations/*.sql"))):
        c.executescript(open(f).read())
    rng = random.Random(1)
    ids = []
    c.execute("BEGIN")
    for i in range(N):
        hid = "h%021x" % rng.getrandbits(84)
        ids.append(hid)
        behind = i < 20
        c.execute(
            "INSERT INTO hosts (id, name, status, created_at, created_by, nkey, xkey, last_seen_at,"
            " status_changed_at, config_version, applied_config_version)"
            " VALUES (?, ?, 'online', 0, 'bench', ?, ?, 1000, 0, ?, 3)",
            (hid, "sim-%06d" % i, "U%055x" % rng.getrandbits(220), "X%055x" % rng.getrandbits(220),
             4 if behind else 3))
    c.execute("COMMIT")
    c.execute("ANALYZE")
    return c, ids


def timed(c, sql, args=()):
    out = []
    rows = 0
    for _ in range(15):
        t0 = time.perf_counter()
        rows = len(c.execute(sql, args).fetchall())
        out.append((time.perf_counter() - t0) * 1000)
    return statistics.median(out), max(out), rows


def main():
    with tempfile.TemporaryDirectory() as d:
        c, ids = fresh(os.path.join(d, "rm.db"))
        rng = random.Random(2)
        print(f"{N} online hosts, 20 unconfirmed; ms per read (median / max of 15), rows")
        print("| read | ms median | ms max | rows |\n|---|---:|---:|---:|")
        for name, sql, args in [
            ("before: every online host's versions", BEFORE, ()),
            ("now: unconfirmed hosts (partial index)", UNCONFIRMED, ()),
            ("now: desired versions of 100 changed hosts", AMONG, (json.dumps(rng.sample(ids, 100)),)),
            ("now: desired versions of 10,000 changed hosts", AMONG,
             (json.dumps(rng.sample(ids, 10000)),)),
        ]:
            med, mx, rows = timed(c, sql, args)
            print(f"| {name} | {med:.2f} | {mx:.2f} | {rows} |")
        plan = c.execute("EXPLAIN QUERY PLAN " + UNCONFIRMED).fetchall()
        print("plan of the unconfirmed read:", [p[-1] for p in plan])


main()
