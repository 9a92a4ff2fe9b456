#!/usr/bin/env python3
"""Load generator of bench/fleet-ui: asks the running web role for the
dashboard, host, jobs, alerts and restore pages and their API twins over
one keep-alive HTTPS connection per worker, and reports the server time
(the `Server-Timing: app;dur=` header the web role sets around each
handler) and the client-side round trip, p50 / p95 / max per endpoint.

Standard library only. Ids (a host with a long history, a deep job
cursor, ...) are read from the seeded database itself.
"""

import argparse
import base64
import http.client
import json
import sqlite3
import ssl
import statistics
import sys
import threading
import time


def pct(values, p):
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def targets(db):
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    one = lambda sql, *a: c.execute(sql, a).fetchone()
    online = one("SELECT COUNT(*) FROM hosts WHERE status = 'online'")[0]
    host, restic_host = one(
        "SELECT h.id, h.restic_host FROM hosts h JOIN host_summary s ON s.host_id = h.id "
        "WHERE h.status = 'online' AND s.last_backup_status = 'succeeded' ORDER BY h.id LIMIT 1 OFFSET ?",
        online // 2,
    )
    repo = one("SELECT repo_id FROM host_repositories WHERE host_id = ?", host)[0]
    total_jobs = one("SELECT COUNT(*) FROM jobs")[0]
    at, jid = one(
        "SELECT created_at, id FROM jobs ORDER BY created_at DESC, id DESC LIMIT 1 OFFSET ?",
        total_jobs * 9 // 10,
    )
    deep = f"{at}:{jid}"
    deep_api = base64.urlsafe_b64encode(deep.encode()).decode().rstrip("=")
    hat, hjid = one(
        "SELECT created_at, id FROM jobs WHERE host_id = ? ORDER BY created_at DESC, id DESC LIMIT 1 OFFSET 80",
        host,
    )
    host_deep = f"{hat}:{hjid}"
    hosts = one("SELECT COUNT(*) FROM hosts WHERE status != 'revoked'")[0]
    deep_page = max(1, (hosts // 50) * 9 // 10)
    c.close()
    return [
        # (name, path)
        ("dashboard: first page", "/"),
        ("dashboard: filtered (state=failed)", "/?state=failed"),
        ("dashboard: filtered (tag=site-3)", "/?tag=site-3"),
        ("dashboard: text filter (q=host-04)", "/?q=host-04"),
        ("dashboard: sorted by name", "/?sort=name"),
        ("dashboard: sorted by last backup", "/?sort=last_backup"),
        (f"dashboard: deep page ({deep_page})", f"/?page={deep_page}"),
        ("api hosts: first page", "/api/v1/hosts"),
        ("api hosts: filtered (state=failed)", "/api/v1/hosts?state=failed"),
        ("api hosts: filtered (tag=site-3)", "/api/v1/hosts?tag=site-3"),
        ("api hosts: sorted by last backup", "/api/v1/hosts?sort=last_backup"),
        (f"api hosts: deep page ({deep_page})", f"/api/v1/hosts?page={deep_page}"),
        ("host page", f"/hosts/{host}"),
        ("api host", f"/api/v1/hosts/{host}"),
        ("jobs: first page", "/jobs"),
        ("jobs: filtered (host)", f"/jobs?host={host}"),
        ("jobs: filtered (status=failed)", "/jobs?status=failed"),
        ("jobs: filtered (host, deep cursor)", f"/jobs?host={host}&before={host_deep}"),
        ("jobs: deep cursor (90 %)", f"/jobs?before={deep}"),
        ("api jobs: filtered (host)", f"/api/v1/jobs?host={host}"),
        ("api jobs: filtered (status=failed)", "/api/v1/jobs?status=failed"),
        ("api jobs: deep cursor (90 %)", f"/api/v1/jobs?cursor={deep_api}"),
        ("alerts: open", "/alerts"),
        ("alerts: all", "/alerts?state=all"),
        ("api alerts: open", "/api/v1/alerts?state=open"),
        ("restore: snapshot list", f"/restore?host={host}&repo={repo}"),
        ("api snapshots (host, repo)", f"/api/v1/snapshots?host={host}&repo={repo}"),
    ]


class Client:
    def __init__(self, host, port, token):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=60)
        self.headers = {"Authorization": f"Bearer {token}", "Accept-Encoding": "identity"}

    def get(self, path):
        t0 = time.perf_counter()
        self.conn.request("GET", path, headers=self.headers)
        r = self.conn.getresponse()
        body = r.read()
        rt = (time.perf_counter() - t0) * 1000
        st = r.getheader("server-timing") or ""
        server = float(st.split("dur=")[1].split(",")[0]) if "dur=" in st else float("nan")
        if r.status != 200:
            raise SystemExit(f"GET {path}: {r.status} {body[:300]!r}")
        return server, rt, len(body)


def run(args):
    tgs = targets(args.db)
    if args.only:
        tgs = [t for t in tgs if any(o in t[0] for o in args.only.split(","))]
    host, port = args.addr.rsplit(":", 1)
    rows = []
    for name, path in tgs:
        cl = Client(host, int(port), args.token)
        for _ in range(args.warmup):
            cl.get(path)
        server, rtt = [], []
        size = 0
        for _ in range(args.requests):
            s, r, size = cl.get(path)
            server.append(s)
            rtt.append(r)
        # a few concurrent clients on the same endpoint
        cserver = []
        lock = threading.Lock()

        def worker():
            c = Client(host, int(port), args.token)
            for _ in range(args.concurrent_requests):
                s, _, _ = c.get(path)
                with lock:
                    cserver.append(s)

        ths = [threading.Thread(target=worker) for _ in range(args.concurrency)]
        for t in ths:
            t.start()
        for t in ths:
            t.join()
        row = {
            "name": name,
            "path": path,
            "bytes": size,
            "n": len(server),
            "p50": statistics.median(server),
            "p95": pct(server, 95),
            "max": max(server),
            "rtt_p50": statistics.median(rtt),
            "conc_n": len(cserver),
            "conc_p50": statistics.median(cserver) if cserver else float("nan"),
            "conc_p95": pct(cserver, 95),
        }
        rows.append(row)
        print(
            f"{name:42s} p50 {row['p50']:7.1f}  p95 {row['p95']:7.1f}  max {row['max']:7.1f} ms"
            f" | {args.concurrency}x p95 {row['conc_p95']:7.1f} | rtt p50 {row['rtt_p50']:7.1f} | {size} B",
            file=sys.stderr,
            flush=True,
        )
    return rows


def markdown(rows, args):
    out = [
        f"| endpoint | sequential p50 / p95 (ms) | {args.concurrency} concurrent p50 / p95 (ms) | round trip p50 (ms) | body |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        mark = "" if r["p95"] < 50 and r["conc_p95"] < 50 else " ✗"
        out.append(
            f"| {r['name']}{mark} | {r['p50']:.1f} / {r['p95']:.1f} | {r['conc_p50']:.1f} / {r['conc_p95']:.1f}"
            f" | {r['rtt_p50']:.1f} | {r['bytes'] // 1024} KiB |"
        )
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--addr", required=True, help="host:port of the web role (HTTPS)")
    ap.add_argument("--token", required=True)
    ap.add_argument("--db", required=True)
    ap.add_argument("--requests", type=int, default=60, help="sequential requests per endpoint")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--concurrent-requests", type=int, default=15, help="requests per concurrent client")
    ap.add_argument("--only", help="comma-separated substrings of endpoint names")
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args()
    rows = run(args)
    print(markdown(rows, args))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
