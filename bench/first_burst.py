#!/usr/bin/env python3
"""A burst's writes alone, burst after burst (issue 14 item 1): is the first
burst into a store with history slow because of the store or because of the
machine? Not run in CI.

On a copy of a store `bench/capacity --history K` left (before or after its
bursts), each burst writes, as a 19,000-agent burst does, one running backup
job per host (the bench's setup, in transactions of 1,024) and then finishes
them in batches of 1,024: the job's row (status, finished time, summary),
its snapshot in the snapshot cache and the host's summary row, one
transaction per batch, WAL, synchronous=FULL, a 64 MiB page cache (the
control plane's writer's). Prints the setup's and the results' seconds per
burst and, with --fill, the leaf-page fill of the indexes the burst writes
(SQLite's dbstat) before the first burst and after the last.

  cp -r RUN/n19000-*/server /tmp/copy && python3 bench/first_burst.py /tmp/copy/restic-manager.db 3 --fill

With --wal-pages it also counts the pages each results batch writes to the
WAL (how many pages a result dirties) and times the checkpoints apart.

With --wal-pages --by-tree it also names the b-tree (table or index, from
SQLite's dbstat before the burst) of every page each commit wrote; pages
the burst allocated (split leaves, the burst's new rows) count as "new".
A store whose page size is to be compared is made by VACUUM on a copy
(journal_mode=DELETE, page_size=N, VACUUM, journal_mode=WAL); a VACUUM
alone, at the same page size, is its control (stop 61).

With --checkpointer the writing connection never checkpoints
(wal_autocheckpoint=0; with --guard N, only past N pages): a thread with a
connection of its own runs a PASSIVE checkpoint after each commit, while
the next batch is written. Without it, the writing connection checkpoints
itself every 1,000 pages (SQLite's default), inside its commits, as the
control plane's does (stop 59 measured the thread in the whole system:
slower there).

The jobs are finished in the hosts' order unless --shuffle (a fleet's
results arrive in any order, and then fewer of a batch's results share a
page); --only writes one part of each result, to count its pages alone.

The statements are this script's, shaped like the control plane's (one
statement per row, not its set-based ones): compare the bursts of one run
and stores with each other, not these seconds with the control plane's."""
import argparse, os, random, sqlite3, threading, time

INDEXES = ("jobs_host_created_id", "jobs_key_finished", "jobs_repo_created", "snapshots_repo_host_time",
           "snapshots_repo_time", "sqlite_autoindex_snapshots_1",
           "snapshots_repo_host_time_id", "snapshots_repo_time_id")  # the last two: before migration 34
SUMMARY = ('{"snapshot_id":"%s","files_new":12,"files_changed":3,"files_unmodified":20000,'
           '"data_added":123456,"total_bytes_processed":987654321,"total_files_processed":20015}')


def fill(c):
    out = {}
    for name in INDEXES:
        pages, size, unused = c.execute(
            "SELECT count(*), sum(pgsize), sum(unused) FROM dbstat WHERE name = ? AND pagetype = 'leaf'",
            (name,)).fetchone()
        out[name] = (pages, round(100 * (1 - unused / size), 1) if size else None)
    return out


def wal_trees(wal, page, owner):
    """The b-tree of each frame in a WAL file (its 32-byte header, then
    frames of a 24-byte header, whose first 4 bytes are the page number,
    and the page)."""
    with open(wal, "rb") as f:
        f.seek(32)
        while True:
            head = f.read(24)
            if len(head) < 24:
                return
            yield owner.get(int.from_bytes(head[:4], "big"), "new")
            f.seek(page, 1)


class Checkpointer:
    """PASSIVE checkpoints on a connection and thread of their own, one
    after each commit it is told of (sqlite3 releases the GIL while SQLite
    works, so the writer's next batch runs meanwhile)."""

    def __init__(self, db):
        self.event, self.done, self.runs, self.seconds = threading.Event(), False, 0, 0.0
        self.c = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        self.c.execute("PRAGMA synchronous=FULL")
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def kick(self):
        self.event.set()

    def loop(self):
        while True:
            self.event.wait()
            self.event.clear()
            if self.done:
                return
            t = time.perf_counter()
            self.c.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            self.seconds += time.perf_counter() - t
            self.runs += 1

    def stop(self):
        self.done = True
        self.event.set()
        self.thread.join()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("db")
    ap.add_argument("bursts", type=int, nargs="?", default=3)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--fill", action="store_true")
    ap.add_argument("--cache-mib", type=int, default=64,
                    help="the writing connection's page cache (the control plane's writer's: 64 MiB until stop 60)")
    ap.add_argument("--wal-pages", action="store_true",
                    help="count the WAL pages each results batch writes: no automatic checkpoint in the "
                         "results, a checkpoint after each batch, outside the timed results")
    ap.add_argument("--by-tree", action="store_true",
                    help="with --wal-pages: name the b-tree (table or index, SQLite's dbstat before the burst) "
                         "of each page the results' commits write; pages the burst allocates count as 'new'")
    ap.add_argument("--shuffle", action="store_true",
                    help="finish the jobs in a random order (as a fleet's results arrive), not the hosts' order")
    ap.add_argument("--only", choices=("job", "snapshot", "summary"),
                    help="write only this part of each result (with --wal-pages: the pages that part dirties alone)")
    ap.add_argument("--checkpointer", action="store_true",
                    help="checkpoint from a thread of its own after each commit, not in the writer's commits")
    ap.add_argument("--guard", type=int, default=0, metavar="PAGES",
                    help="with --checkpointer: the writer still checkpoints (its wal_autocheckpoint) once the WAL "
                         "holds this many pages, which copies what the thread has not and lets the next "
                         "transaction start the WAL over (0: never)")
    ap.add_argument("--autocheckpoint", type=int, default=1000, metavar="PAGES",
                    help="the writing connection's wal_autocheckpoint (SQLite's default and the control "
                         "plane's until stop 62: 1,000 pages)")
    a = ap.parse_args()
    c = sqlite3.connect(a.db, isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("PRAGMA synchronous=FULL")
    c.execute(f"PRAGMA cache_size=-{a.cache_mib * 1024}")
    c.execute(f"PRAGMA wal_autocheckpoint={a.autocheckpoint}")
    if a.fill:
        print("fill before:", fill(c), flush=True)
    ckpt = None
    if a.checkpointer:
        c.execute(f"PRAGMA wal_autocheckpoint={a.guard}")
        ckpt = Checkpointer(a.db)
    owner = {}
    if a.by_tree:
        owner = dict(c.execute("SELECT pageno, name FROM dbstat"))
    hosts = [(h, r) for h, r in c.execute(
        "SELECT h.id, hr.repo_id FROM hosts h JOIN host_repositories hr ON hr.host_id = h.id "
        "WHERE h.status <> 'revoked' ORDER BY h.id")]
    params = '{"kind":"backup","paths":["/data"],"excludes":[],"tags":[],"host_name":null}'
    for b in range(a.bursts):
        now = int(time.time() * 1000)
        jobs = [(f"jb{now:013x}{i:06x}{os.urandom(3).hex()}", h, r) for i, (h, r) in enumerate(hosts)]
        t0 = time.perf_counter()
        for k in range(0, len(jobs), a.batch):
            c.execute("BEGIN IMMEDIATE")
            c.executemany(
                "INSERT INTO jobs (id, host_id, exec_host_id, repo_id, kind, params_json, origin, status, "
                "timeout_secs, created_by, created_at, dispatched_at, started_at) "
                "VALUES (?, ?, ?, ?, 'backup', ?, 'operator', 'running', 3600, 'first_burst', ?, ?, ?)",
                [(j, h, h, r, params, now, now, now) for j, h, r in jobs[k:k + a.batch]])
            c.execute("COMMIT")
            if ckpt:
                ckpt.kick()
        if a.wal_pages:
            c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            c.execute("PRAGMA wal_autocheckpoint=0")
        page = c.execute("PRAGMA page_size").fetchone()[0]
        commit_s, ckpt_s, wal_pages = 0.0, 0.0, 0
        trees = {}
        if a.shuffle:
            random.shuffle(jobs)
        t1 = time.perf_counter()
        for k in range(0, len(jobs), a.batch):
            at = int(time.time() * 1000)
            rows = [(j, h, r, os.urandom(32).hex()) for j, h, r in jobs[k:k + a.batch]]
            c.execute("BEGIN IMMEDIATE")
            part = lambda name: a.only in (None, name)
            part("job") and c.executemany(
                "UPDATE jobs SET status = 'succeeded', exit_code = 0, finished_at = ?, summary_json = ?, "
                "restic_version = '0.18.0' WHERE id = ? AND +status IN ('queued', 'dispatched', 'running', 'lost')",
                [(at, SUMMARY % s, j) for j, _, _, s in rows])
            part("snapshot") and c.executemany(
                "INSERT INTO snapshots (repo_id, snapshot_id, short_id, hostname, time, paths_json, tags_json, "
                "summary_json, seen_at) VALUES (?, ?, ?, ?, ?, '[\"/data\"]', '[]', ?, ?)",
                [(r, s, s[:8], h, at, SUMMARY % s, at) for _, h, r, s in rows])
            part("summary") and c.executemany(
                "UPDATE host_summary SET last_job_id = ?, last_job_kind = 'backup', last_job_status = 'succeeded', "
                "last_job_finished_at = ?, last_backup_status = 'succeeded', last_backup_at = ?, "
                "last_backup_success_at = ?, last_snapshot_id = ? WHERE host_id = ?",
                [(j, at, at, at, s, h) for j, h, _, s in rows])
            tc = time.perf_counter()
            c.execute("COMMIT")
            commit_s += time.perf_counter() - tc
            if ckpt:
                ckpt.kick()
            if a.wal_pages:
                # every page of the batch's commit is in the WAL now (one frame each: header + page)
                wal_pages += os.path.getsize(a.db + "-wal") // (page + 24)
                if a.by_tree:
                    for tree in wal_trees(a.db + "-wal", page, owner):
                        trees[tree] = trees.get(tree, 0) + 1
                tk = time.perf_counter()
                c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                ckpt_s += time.perf_counter() - tk
        t2 = time.perf_counter() - ckpt_s
        print(f"burst {b}: {len(jobs)} jobs; setup {t1 - t0:.2f} s, results {t2 - t1:.2f} s "
              f"({len(jobs) / (t2 - t1):.0f} a second), of which commits {commit_s:.2f} s"
              + (f"; WAL {wal_pages} pages of {page} bytes ({wal_pages / len(jobs):.1f} a result), "
                 f"checkpoints {ckpt_s:.2f} s (not in the results)" if a.wal_pages else ""), flush=True)
        if trees:
            print("  pages a result, by b-tree: " + ", ".join(
                f"{name} {n / len(jobs):.2f}" for name, n in sorted(trees.items(), key=lambda kv: -kv[1])),
                flush=True)
        if ckpt:
            print(f"  checkpointer: {ckpt.runs} checkpoints, {ckpt.seconds:.2f} s, "
                  f"WAL {os.path.getsize(a.db + '-wal') / 1e6:.0f} MB at the end", flush=True)
            ckpt.runs, ckpt.seconds = 0, 0.0
        if a.wal_pages:
            c.execute(f"PRAGMA wal_autocheckpoint={a.guard if ckpt else a.autocheckpoint}")
    if ckpt:
        ckpt.stop()
    wal_mb = os.path.getsize(a.db + "-wal") / 1e6 if os.path.exists(a.db + "-wal") else 0.0
    tf = time.perf_counter()
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    print(f"final checkpoint: {time.perf_counter() - tf:.2f} s, the WAL {wal_mb:.0f} MB before it", flush=True)
    if a.fill:
        print("fill after:", fill(c), flush=True)


if __name__ == "__main__":
    main()
