#!/usr/bin/env python3
"""Watch a SQLite WAL from outside (issue 14, stop 31): whether the WAL ever
starts over, how far the checkpoint lags behind the last commit, and which
processes hold a read mark that keeps it from finishing. Not run in CI; it
takes no lock and writes nothing to the database.

  python3 bench/walwatch.py --db DIR/data/restic-manager.db --out FILE
  python3 bench/walwatch.py --newest '/tmp/rm-cluster-*' --out FILE   # the newest bench data dir
  python3 bench/walwatch.py --report FILE [--from HH:MM:SS --to HH:MM:SS]

Every --every seconds it reads the wal-index header at the start of the
`-shm` file (SQLite's wal.c: `mxFrame` at byte 16 is the last committed
frame, `nBackfill` at 96 the frames the checkpoint has copied into the
database, the five read marks at 100..119) and the POSIX locks on that
file from /proc/locks (a reader holds a shared lock on byte 123+i while it
reads through read mark i; mark 0 means it reads the database file alone
and does not hold the WAL back). One JSON line per sample: time, frames,
backfilled, the WAL file's size, and for each process holding a read lock
on a mark above 0, its role (from its command line) and the frame its mark
stands at. The WAL starts over when a writer finds every frame backfilled
and no reader on a mark above 0; `frames` then falls.

--report summarises a file: samples, restarts seen, the largest `frames`,
the share of samples with the checkpoint behind (`backfilled < frames`),
and per role the share of samples in which it held the WAL (a mark above
0 below `frames`, i.e. the checkpoint may not pass it)."""
import argparse, glob, json, os, struct, sys, time


def role_of(pid, cache):
    if pid in cache:
        return cache[pid]
    try:
        argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        argv = [a.decode(errors="replace") for a in argv if a]
        name = os.path.basename(argv[0]) if argv else "?"
        role = next((a for a in argv[1:] if not a.startswith("-")), "")
        cache[pid] = f"{name} {role}".strip() + f" [{pid}]"
    except OSError:
        cache[pid] = f"? [{pid}]"
    return cache[pid]


def read_locks(inode):
    """{pid: set of lock byte offsets} for POSIX locks on `inode`."""
    held = {}
    try:
        lines = open("/proc/locks").read().splitlines()
    except OSError:
        return held
    for line in lines:
        parts = line.split()
        if len(parts) < 8 or parts[1] == "->" or parts[1] != "POSIX":
            continue
        dev = parts[5].split(":")
        if len(dev) != 3 or int(dev[2]) != inode:
            continue
        pid, start = int(parts[4]), parts[6]
        end = parts[7]
        end = int(start) if end == "EOF" else int(end)
        for off in range(int(start), end + 1):
            held.setdefault(pid, set()).add(off)
    return held


def sample(db, roles):
    shm, wal = db + "-shm", db + "-wal"
    with open(shm, "rb") as f:
        head = f.read(136)
    if len(head) < 136:
        return None
    mx_frame = struct.unpack_from("<I", head, 16)[0]
    backfill = struct.unpack_from("<I", head, 96)[0]
    marks = list(struct.unpack_from("<5I", head, 100))
    attempted = struct.unpack_from("<I", head, 128)[0]
    inode = os.stat(shm).st_ino
    holders = []
    for pid, offs in read_locks(inode).items():
        for i in range(1, 5):
            if 123 + i in offs:
                holders.append({"role": role_of(pid, roles), "mark": i, "at": marks[i]})
        if 120 in offs:
            holders.append({"role": role_of(pid, roles), "mark": "write", "at": mx_frame})
    try:
        wal_bytes = os.stat(wal).st_size
    except OSError:
        wal_bytes = 0
    return {"t": time.strftime("%H:%M:%S"), "ts": round(time.time(), 2), "frames": mx_frame,
            "backfilled": backfill, "attempted": attempted, "wal_bytes": wal_bytes, "readers": holders}


def watch(args):
    roles = {}
    out = open(args.out, "a", buffering=1) if args.out else sys.stdout
    db = args.db
    while True:
        if args.newest:
            dirs = sorted(glob.glob(args.newest), key=os.path.getmtime)
            db = os.path.join(dirs[-1], "data", "restic-manager.db") if dirs else None
        try:
            s = sample(db, roles) if db else None
        except OSError:
            s = None
        if s:
            s["db"] = db
            out.write(json.dumps(s) + "\n")
        time.sleep(args.every)


def report(args):
    rows = [json.loads(l) for l in open(args.report) if l.strip()]
    if args.start:
        rows = [r for r in rows if r["t"] >= args.start]
    if args.to:
        rows = [r for r in rows if r["t"] <= args.to]
    if not rows:
        print("no samples")
        return
    restarts = sum(1 for a, b in zip(rows, rows[1:]) if b["frames"] < a["frames"] and a["db"] == b["db"])
    behind = sum(1 for r in rows if r["backfilled"] < r["frames"])
    held = {}
    for r in rows:
        seen = set()
        for h in r["readers"]:
            if h["mark"] != "write" and h["at"] < r["frames"]:
                seen.add(h["role"].rsplit(" [", 1)[0])
        for role in seen:
            held[role] = held.get(role, 0) + 1
    n = len(rows)
    print(f"{rows[0]['t']}–{rows[-1]['t']}: {n} samples, {restarts} WAL restarts, "
          f"largest frames {max(r['frames'] for r in rows):,}, largest WAL {max(r['wal_bytes'] for r in rows) / 1e6:,.0f} MB, "
          f"checkpoint behind in {100 * behind / n:.0f} % of samples")
    for role, k in sorted(held.items(), key=lambda kv: -kv[1]):
        print(f"  held the WAL below the last frame in {100 * k / n:4.0f} % of samples: {role}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db")
    ap.add_argument("--newest", help="glob of bench data dirs; the newest is watched")
    ap.add_argument("--out")
    ap.add_argument("--every", type=float, default=0.5)
    ap.add_argument("--report")
    ap.add_argument("--from", dest="start")
    ap.add_argument("--to")
    args = ap.parse_args()
    if args.report:
        report(args)
    elif args.db or args.newest:
        watch(args)
    else:
        ap.error("--db, --newest or --report")


if __name__ == "__main__":
    main()
