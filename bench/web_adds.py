#!/usr/bin/env python3
"""Operators adding hosts through the web role's API, for benches (never
run in CI): POST /api/v1/hosts at --per-sec, each timed from the request
to its answer, in a process of its own.

bench/cluster ran these adds on threads of its own process until stop 55,
where they shared one interpreter lock with the 200 event-stream clients'
reader; in a burst an add's time then held the bench's own waits (stop 54:
about half of an add's 0.6-1.5 s lay outside the web role). Here the lock
is this process's alone, so an add's time is HTTP, TLS and the web role.

Each add is sent on schedule from a thread of its own, so one slow add
does not hold up the next; connections are kept and reused.

Usage: web_adds.py --url https://127.0.0.1:PORT --per-sec N (the API token
on standard input, one line). Prints "ready" once it has the token, then a
JSON line per add: {"sent_ms", "took_ms", "ok", "handler_ms", "auth_ms",
"bus_ms", "owner_ms", "why"} (handler_ms: the web role's own time from its
`server-timing` header; auth_ms: its authentication before that (the API
token's lookup; stop 56); bus_ms: of handler_ms, its wait for the control
plane's answer; owner_ms: of bus_ms, the control plane's own time by its
reply's word (stop 56); why: the failure, for failed adds). When standard input closes it sends no
more and waits up to --settle seconds for the adds on their way.
"""

import argparse
import http.client
import json
import queue
import ssl
import sys
import threading
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--per-sec", type=float, required=True)
    ap.add_argument("--prefix", default="web-op-")
    ap.add_argument("--settle", type=float, default=30,
                    help="once standard input closes, seconds the adds on their way have to be answered")
    a = ap.parse_args()
    token = sys.stdin.readline().strip()
    host, port = a.url.split("//")[1].split(":")
    pool = queue.SimpleQueue()
    out = threading.Lock()
    stop = threading.Event()

    def conn():
        try:
            return pool.get_nowait()
        except queue.Empty:  # none kept: a new one
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return http.client.HTTPSConnection(host, int(port), context=ctx, timeout=120)

    def one(i):
        body = json.dumps({"name": f"{a.prefix}{i}"}).encode()
        sent = time.time()
        ok, c, why, timing = False, conn(), None, {}
        try:
            c.request("POST", "/api/v1/hosts", body=body,
                      headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
            r = c.getresponse()
            r.read()
            ok = r.status == 201
            # the web role's own time for it, request in to response out
            # (app), its authentication before that (auth, since stop 56),
            # and of app its wait for the control plane's answer over the
            # bus (bus, since stop 55), of which the control plane's own
            # time by its reply's word (owner, since stop 56): the rest is
            # HTTP and TLS
            for m in (r.getheader("server-timing") or "").split(","):
                name, _, dur = m.strip().partition(";dur=")
                try:
                    timing[name] = float(dur)
                except ValueError:
                    pass
            if not ok:
                why = f"HTTP {r.status}"
            pool.put(c)
        except Exception as e:  # noqa: BLE001 (reported by kind; the adds go on)
            why = f"{type(e).__name__}: {e}"[:120]
            c.close()
        took = (time.time() - sent) * 1000
        line = json.dumps({"sent_ms": int(sent * 1000), "took_ms": round(took, 2), "ok": ok,
                           "handler_ms": timing.get("app"), "auth_ms": timing.get("auth"),
                           "bus_ms": timing.get("bus"), "owner_ms": timing.get("owner"), "why": why})
        with out:
            try:
                print(line, flush=True)
            except (BrokenPipeError, ValueError):
                stop.set()

    def stdin_closed():
        sys.stdin.read()
        stop.set()

    threading.Thread(target=stdin_closed, daemon=True).start()
    print("ready", flush=True)
    t0, sent, threads = time.time(), 0, []
    while not stop.is_set():
        t = threading.Thread(target=one, args=(sent,), daemon=True)
        t.start()
        threads = [x for x in threads if x.is_alive()] + [t]
        sent += 1
        stop.wait(max(0.0, t0 + sent / a.per_sec - time.time()))
    # the adds on their way are answered (or fail) before the process ends
    until = time.time() + a.settle
    for t in threads:
        t.join(timeout=max(0.0, until - time.time()))


if __name__ == "__main__":
    main()
