#!/usr/bin/env python3
"""A slow link in front of a TCP server, for benches (never run in CI).

Listens on 127.0.0.1:--listen and forwards every connection to
127.0.0.1:--to, delaying each direction by half of --rtt milliseconds and
pacing it at --mbit megabits a second: one pace per direction for all
connections together, as one endpoint's uplink and downlink are shared by
every connection it opens. So a request and its answer take at least
--rtt more than on loopback, and a large upload its size over the rate.

What it does not model: loss, jitter, and TCP's own slow start over a long
round trip (the client's TCP sees loopback to this process; the delay is
applied to the data, not to its acknowledgements). For restic against a REST
server that leaves the round trips of its requests and the rate of its
uploads, which is what a remote repository adds to a backup.

Usage: slow_link.py --listen PORT --to PORT --rtt MS --mbit N
Prints "ready" on stdout once listening.
"""

import argparse
import asyncio
import collections
import sys

CHUNK = 64 * 1024
# chunks waiting in one direction of one connection before its reader
# stops reading (the sender's TCP then waits, as behind a full buffer)
QUEUED = 64


class Pace:
    """One direction of the link: when it is next free to send."""

    def __init__(self, mbit):
        self.secs_per_byte = 8 / (mbit * 1e6) if mbit > 0 else 0.0
        self.free_at = 0.0

    def slot(self, now, size):
        """When `size` bytes handed over at `now` have left the link."""
        start = max(now, self.free_at)
        self.free_at = start + size * self.secs_per_byte
        return self.free_at


async def pump(reader, writer, delay, pace):
    loop = asyncio.get_running_loop()
    queue = asyncio.Queue(QUEUED)

    async def read():
        try:
            while True:
                data = await reader.read(CHUNK)
                await queue.put((loop.time() + delay, data))
                if not data:
                    return
        except (ConnectionError, OSError):
            await queue.put((loop.time(), b""))

    async def write():
        try:
            while True:
                due, data = await queue.get()
                now = loop.time()
                if due > now:
                    await asyncio.sleep(due - now)
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                done = pace.slot(loop.time(), len(data))
                wait = done - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            return

    # a writer that failed must not leave the reader blocked on a full queue
    reading = asyncio.ensure_future(read())
    await write()
    reading.cancel()


async def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--listen", type=int, required=True)
    ap.add_argument("--to", type=int, required=True)
    ap.add_argument("--rtt", type=float, default=0.0, help="added round trip, ms")
    ap.add_argument("--mbit", type=float, default=0.0, help="rate of each direction, Mbit/s (0: no limit)")
    a = ap.parse_args()
    delay = a.rtt / 2000.0
    up, down = Pace(a.mbit), Pace(a.mbit)
    stats = collections.Counter()

    async def serve(creader, cwriter):
        stats["connections"] += 1
        try:
            sreader, swriter = await asyncio.open_connection("127.0.0.1", a.to)
        except OSError:
            cwriter.close()
            return
        try:
            await asyncio.gather(pump(creader, swriter, delay, up), pump(sreader, cwriter, delay, down))
        finally:
            for w in (swriter, cwriter):
                w.close()

    server = await asyncio.start_server(serve, "127.0.0.1", a.listen)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
