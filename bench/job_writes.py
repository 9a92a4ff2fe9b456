#!/usr/bin/env python3
"""The jobs table alone (issue 14): what a batch of 256 new jobs and of their
results costs in the jobs table and its indexes, on a copy of a seeded store
(bench/fleet-ui seeds one: 10,000 hosts, ~1,000,000 jobs). Not run in CI.

  cp /tmp/rm-fleet-bench/restic-manager.db /tmp/copy.db
  python3 bench/job_writes.py /tmp/copy.db 30

Each batch inserts 256 jobs as 'running' (one per random host) and commits,
then marks them 'succeeded' (finished_at, summary) and commits; WAL,
synchronous=FULL, default autocheckpoint. Prints per-batch ms."""
import sqlite3, sys, time, random, statistics, uuid
db, batches = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 40
c = sqlite3.connect(db, isolation_level=None)
c.execute("PRAGMA journal_mode=WAL"); c.execute("PRAGMA synchronous=FULL")
c.execute("PRAGMA cache_size=-65536")
cols = [r[1] for r in c.execute("PRAGMA table_info(jobs)")]
hosts = [r[0] for r in c.execute("SELECT id FROM hosts WHERE status='online'")]
tmpl = {}
for h, in [(h,) for h in random.Random(1).sample(hosts, 256 * 4)]:
    r = c.execute(f"SELECT {','.join(cols)} FROM jobs WHERE host_id=? AND kind='backup' LIMIT 1", (h,)).fetchone()
    if r: tmpl[h] = dict(zip(cols, r))
keys = list(tmpl)
rng = random.Random(2)
summary = '{"files_new":12,"files_changed":3,"files_unmodified":20000,"dirs_new":0,"dirs_changed":2,"data_added":123456,"total_files_processed":20015,"total_bytes_processed":987654321,"snapshot_id":"%s"}'
ins_t, upd_t = [], []
now = int(time.time())
for b in range(batches):
    batch = rng.sample(keys, 256)
    ids = []
    t0 = time.perf_counter()
    c.execute("BEGIN IMMEDIATE")
    for h in batch:
        row = dict(tmpl[h]); jid = "job-" + uuid.uuid4().hex; ids.append(jid)
        row.update(id=jid, status='running', created_at=now + b, started_at=now + b, dispatched_at=now + b,
                   finished_at=None, summary_json=None, exit_code=None)
        c.execute(f"INSERT INTO jobs ({','.join(cols)}) VALUES ({','.join('?' * len(cols))})", [row[k] for k in cols])
    c.execute("COMMIT")
    t1 = time.perf_counter()
    c.execute("BEGIN IMMEDIATE")
    for jid in ids:
        c.execute("UPDATE jobs SET status='succeeded', finished_at=?, exit_code=0, summary_json=? WHERE id=? AND +status IN ('queued','dispatched','running','lost')",
                  (now + b + 30, summary % uuid.uuid4().hex, jid))
    c.execute("COMMIT")
    t2 = time.perf_counter()
    ins_t.append((t1 - t0) * 1000); upd_t.append((t2 - t1) * 1000)
med = statistics.median
print(f"{db}: insert median {med(ins_t):.1f} ms, update median {med(upd_t):.1f} ms per 256; "
      f"insert mean {statistics.mean(ins_t):.1f}, update mean {statistics.mean(upd_t):.1f}; batches {batches}")
