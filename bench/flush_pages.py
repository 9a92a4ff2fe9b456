#!/usr/bin/env python3
"""One heartbeat flush of a fleet (issue 14, stop 30): what the control
plane's write of last-seen for every online host costs in SQLite, whole or
in parts, with the hosts in hash order (as they come out of a hash map) or
in the order of their rows, and with the hosts_status index as it was
(status, last_seen_at) or as it is (status). Not run in CI.

  python3 bench/flush_pages.py 50000

A fresh database per index variant, every migration of store/migrations
applied, N online hosts with vitals like the simulator's; the statement is
`BEATS_SQL` read from store/src/hosts.rs. WAL, synchronous=FULL, a 64 MiB
page cache, as the control plane's write connection. Prints, per variant,
the time applying and committing one whole flush, and the WAL it wrote
(autocheckpoint off, the WAL truncated before each flush)."""
import glob, json, os, random, sqlite3, sys, tempfile, time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
N = int(sys.argv[1]) if len(sys.argv) > 1 else 50000
src = open(os.path.join(ROOT, "store/src/hosts.rs")).read()
BEATS = src.split('pub const BEATS_SQL: &str =\n    "')[1].split('";')[0]


def fresh(path, index):
    c = sqlite3.connect(path, isolation_level=None)
    for p in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON", "cache_size=-65536"):
        c.execute("PRAGMA " + p)
    for f in sorted(glob.glob(os.path.join(ROOT, "store/migrations/*.sql"))):
        c.executescript(open(f).read())
    c.executescript(f"DROP INDEX hosts_status; CREATE INDEX hosts_status ON hosts ({index});")
    vitals = json.dumps({"disks": [{"path": "/", "total": 10**12, "free": 5 * 10**11}],
                         "running_jobs": [], "next_runs": [{"schedule": "s" * 22, "at": 1796319047167}]})
    rng = random.Random(1)
    c.execute("BEGIN")
    for i in range(N):
        c.execute(
            "INSERT INTO hosts (id, name, status, created_at, created_by, nkey, xkey, last_seen_at,"
            " status_changed_at, agent_version, os, arch, hostname, uptime_secs, vitals_json)"
            " VALUES (?, ?, 'online', 0, 'bench', ?, ?, ?, 0, '0.1.0', 'linux', 'x86_64', ?, 100, ?)",
            ("h%021x" % rng.getrandbits(84), "sim-%06d" % i, "U%055x" % rng.getrandbits(220),
             "X%055x" % rng.getrandbits(220), 1000 + rng.randint(0, 30000), "sim-%06d" % i, vitals))
    c.execute("COMMIT")
    c.execute("PRAGMA wal_autocheckpoint=0")
    return c


def flush(c, wal, order, per, step):
    rows = c.execute("SELECT rowid, id, last_seen_at FROM hosts").fetchall()
    if order == "hash":
        random.Random(step).shuffle(rows)
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    apply_s = commit_s = 0.0
    for i in range(0, len(rows), per):
        part = [{"id": r[1], "seen": r[2] + 30000 * step, "uptime": 130} for r in rows[i:i + per]]
        t0 = time.perf_counter()
        c.execute("BEGIN IMMEDIATE")
        c.execute(BEATS, (json.dumps(part),))
        t1 = time.perf_counter()
        c.execute("COMMIT")
        apply_s += t1 - t0
        commit_s += time.perf_counter() - t1
    return apply_s * 1000, commit_s * 1000, os.path.getsize(wal) / 1e6


print(f"{N} hosts; one flush each (ms applying, ms committing, MB of WAL)")
print("| hosts_status on | order | parts of | apply ms | commit ms | WAL MB |")
print("|---|---|---:|---:|---:|---:|")
for index in ("status, last_seen_at", "status"):
    d = tempfile.mkdtemp(prefix="rm-flush-")
    c = fresh(os.path.join(d, "x.db"), index)
    step = 0
    for per in (N, 10000, 1000):
        for order in ("hash", "rowid"):
            step += 1
            a, m, w = flush(c, os.path.join(d, "x.db-wal"), order, per, step)
            print(f"| ({index}) | {order} | {per} | {a:.0f} | {m:.0f} | {w:.0f} |", flush=True)
    c.close()
    for f in glob.glob(os.path.join(d, "*")):
        os.remove(f)
    os.rmdir(d)
