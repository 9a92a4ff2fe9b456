"""Where a nats-server node's read loops stalled, and what the Go runtime's
collector was doing then (issue 14 item 2). Never run in CI.

nats-server logs `Readloop processing time: D` when one pass of a
connection's read loop (parsing what it read and handing the messages on)
took 2 s or more. At 100,000 agents on this VM the nodes did that for
hundreds of connections at once, every pass ending within a second of the
others: the whole process stood still, not one connection (stop 52). This
module merges those lines into **freezes** (stalled passes that overlap
in time or come within `GAP` seconds of each other: one freeze, from the
earliest pass's start to the latest end) and, when the node ran with `GODEBUG=gctrace=1`
(`bench/cluster --node-env GODEBUG=gctrace=1`), lines up each freeze with
the collections that ran across it: each `gc N @T s P%: a+b+c ms clock,
x+assist/background/idle+y ms cpu, h0->h1->h2 MB, G MB goal, ... N P`
line, placed on the wall clock from the node's `Starting nats-server` line.
(Stop 53: all 65 freezes of three traced runs had a collection across
them. gctrace's processor times count time holding a processor, so on a
starved node they include waiting for a core.)

`python3 bench/node_stalls.py LOGDIR` prints the table for a kept run's
logs (`logs-*` under a bench/cluster --out); bench/cluster calls
`summarize` at the end of every run.
"""

import datetime
import glob
import os
import re
import sys

GAP = 1.0  # seconds between two stalled passes of one freeze

# A line of nats-server's own log. It writes each line whole; the Go
# runtime prints a gctrace line in pieces, so where hundreds of read loops
# log their warnings the moment a collection ends (as they do: the
# collection is what held them) a gctrace line is cut by whole log lines.
_LOGLINE = re.compile(r"\[\d+\] (\d{4}/\d\d/\d\d \d\d:\d\d:\d\d\.\d+) ([^\n]*)\n")
_READLOOP = re.compile(r"( rid:| cid:).* Readloop processing time: ([0-9.]+)(ms|s|µs|m)")
_GC = re.compile(r"gc (\d+) @([0-9.]+)s \d+%: ([0-9.]+)\+([0-9.]+)\+([0-9.]+) ms clock, "
                 r"([0-9.]+)\+([0-9.]+)/([0-9.]+)/([0-9.]+)\+([0-9.]+) ms cpu, "
                 r"(\d+)->(\d+)->(\d+) MB, (\d+) MB goal")
_UNIT = {"ms": 1e-3, "s": 1.0, "µs": 1e-6, "m": 60.0}


def _ts(s):
    return datetime.datetime.strptime(s, "%Y/%m/%d %H:%M:%S.%f").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def parse(path):
    """One node's log: its stalled passes and its collections on the wall
    clock. The log's own lines are taken out first, wherever they begin;
    what is left joins the runtime's gctrace lines back together."""
    with open(path, errors="replace") as f:
        text = f.read()
    passes, rest, bases, pos = [], [], [], 0
    for m in _LOGLINE.finditer(text):
        rest.append(text[pos:m.start()])
        pos = m.end()
        t = _ts(m.group(1))
        if "Starting nats-server" in m.group(2):
            # the line comes a few ms after the process began: close enough;
            # collections printed after it count from it
            bases.append((sum(len(x) for x in rest), t))
            continue
        r = _READLOOP.search(m.group(2))
        if r:
            d = float(r.group(2)) * _UNIT[r.group(3)]
            passes.append({"end": t, "start": t - d, "route": r.group(1) == " rid:"})
    rest.append(text[pos:])
    rest = "".join(rest)
    gcs = []
    for g in _GC.finditer(rest):
        b = None
        for at, t in bases:
            if at <= g.start():
                b = t
        if b is None:
            continue  # before the first start line: no clock to place it on
        start = b + float(g.group(2))
        sweep, mark, term = (float(g.group(i)) / 1000 for i in (3, 4, 5))
        gcs.append({"n": int(g.group(1)), "start": start, "end": start + sweep + mark + term,
                    "mark_s": mark, "stw_ms": (sweep + term) * 1000,
                    "assist_cpu_ms": float(g.group(7)),
                    "background_cpu_ms": float(g.group(8)),
                    "heap_mb": (int(g.group(11)), int(g.group(12)), int(g.group(13))),
                    "goal_mb": int(g.group(14))})
    return passes, gcs


def freezes(passes):
    """Stalled passes merged where they overlap in time (or come within
    `GAP` seconds of each other): one freeze, from the earliest start to the
    latest end."""
    out = []
    for p in sorted(passes, key=lambda p: p["start"]):
        if out and p["start"] <= out[-1]["end"] + GAP:
            f = out[-1]
            f["end"] = max(f["end"], p["end"])
            f["passes"] += 1
            f["routes"] += p["route"]
        else:
            out.append({"start": p["start"], "end": p["end"], "passes": 1, "routes": int(p["route"])})
    for f in out:
        f["secs"] = f["end"] - f["start"]
    return out


def overlapping(f, gcs, slack=0.5):
    """The collections that ran across a freeze (with `slack` seconds either side)."""
    return [g for g in gcs if g["start"] <= f["end"] + slack and g["end"] >= f["start"] - slack]


def summarize(logdir, until=None):
    """Per node, and for the run: freezes, how long, and how many a
    collection ran across. Freezes that began at or after `until` (the
    bench stopping the processes: routes closing, clients leaving) are
    counted apart."""
    nodes, at_stop = {}, 0
    for path in sorted(glob.glob(os.path.join(logdir, "nats-n*.log"))):
        name = os.path.basename(path)[len("nats-"):-len(".log")]
        passes, gcs = parse(path)
        fz = freezes(passes)
        if until is not None:
            at_stop += sum(1 for f in fz if f["start"] >= until)
            fz = [f for f in fz if f["start"] < until]
        for f in fz:
            f["gcs"] = overlapping(f, gcs)
        nodes[name] = {"passes": len(passes), "freezes": fz, "gcs": gcs}
    allf = [f for n in nodes.values() for f in n["freezes"]]
    traced = any(n["gcs"] for n in nodes.values())
    return {
        "nodes": nodes,
        "traced": traced,
        "freezes": len(allf),
        "freezes_at_stop": at_stop,
        "freezes_2s_max_s": round(max((f["secs"] for f in allf), default=0), 1),
        "freezes_total_s": round(sum(f["secs"] for f in allf), 1),
        "freezes_with_gc": sum(1 for f in allf if f["gcs"]) if traced else None,
        "gcs": sum(len(n["gcs"]) for n in nodes.values()),
        "gc_mark_max_s": round(max((g["mark_s"] for n in nodes.values() for g in n["gcs"]), default=0), 2),
    }


def text(s):
    """The summary as lines for a run's log and the reader."""
    hm = lambda t: datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%H:%M:%S")
    out = [f"node read-loop freezes: {s['freezes']} (read-loop passes of 2 s or more, merged where they overlap), "
           f"longest {s['freezes_2s_max_s']} s, {s['freezes_total_s']} s in all"
           + (f"; a collection ran across {s['freezes_with_gc']} of them; {s['gcs']} collections, "
              f"longest mark {s['gc_mark_max_s']} s" if s["traced"] else
              "; the nodes ran without GODEBUG=gctrace=1")
           + (f"; {s['freezes_at_stop']} more once the bench began stopping the processes"
              if s.get("freezes_at_stop") else "")]
    for name, n in s["nodes"].items():
        for f in n["freezes"]:
            line = (f"  {name} {hm(f['start'])}–{hm(f['end'])} {f['secs']:.1f} s, "
                    f"{f['passes']} passes ({f['routes']} routes)")
            for g in f["gcs"]:
                line += (f"; gc {g['n']} from {hm(g['start'])}: mark {g['mark_s']:.1f} s, "
                         f"assist / background CPU {g['assist_cpu_ms']:.0f} / "
                         f"{g['background_cpu_ms']:.0f} ms, heap {g['heap_mb'][0]}→{g['heap_mb'][1]}"
                         f"→{g['heap_mb'][2]} MB (goal {g['goal_mb']})")
            out.append(line)
        if n["gcs"]:
            marks = sorted(g["mark_s"] for g in n["gcs"])
            out.append(f"  {name}: {len(n['gcs'])} collections, mark median {marks[len(marks) // 2]:.2f} s, "
                       f"max {marks[-1]:.2f} s, last heap {n['gcs'][-1]['heap_mb'][2]} MB live")
    return out


def strip(s):
    """The summary without the per-node detail, for a result's JSON."""
    return {k: v for k, v in s.items() if k != "nodes"} | {
        "per_node": {name: {"freezes": len(n["freezes"]),
                            "longest_s": round(max((f["secs"] for f in n["freezes"]), default=0), 1),
                            "with_gc": sum(1 for f in n["freezes"] if f["gcs"]),
                            "gcs": len(n["gcs"])}
                     for name, n in s["nodes"].items()}}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: node_stalls.py LOGDIR (a bench/cluster run's logs-* directory)")
    print("\n".join(text(summarize(sys.argv[1]))))
