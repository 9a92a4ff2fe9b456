"""nats-py against the embedded bus: pub/sub, headers, request/reply,
no-responders, nkey auth with a users file (good and unknown keys)."""
import asyncio
import sys

import nats
from nats.errors import NoRespondersError


async def main(url: str, seed: str, unknown_seed: str) -> None:
    nc = await nats.connect(url, nkeys_seed_str=seed, allow_reconnect=False)
    sub = await nc.subscribe("py.>")
    await nc.flush()
    await nc.publish("py.a", b"hello")
    msg = await sub.next_msg(timeout=5)
    assert (msg.subject, msg.data) == ("py.a", b"hello"), msg
    print("pubsub ok")

    await nc.publish("py.h", b"body", headers={"X-Key": "value"})
    msg = await sub.next_msg(timeout=5)
    assert msg.headers == {"X-Key": "value"}, msg.headers
    print("headers ok")

    async def echo(m):
        await m.respond(b"pong:" + m.data)

    await nc.subscribe("svc.echo", cb=echo)
    await nc.flush()
    reply = await nc.request("svc.echo", b"ping", timeout=5)
    assert reply.data == b"pong:ping", reply.data
    print("request ok")

    try:
        await nc.request("svc.nobody", b"x", timeout=5)
        raise SystemExit("no-responders: got a reply")
    except NoRespondersError:
        print("no responders ok")
    await nc.drain()

    errors = []

    async def on_error(e):
        errors.append(e)

    try:
        bad = await nats.connect(
            url,
            nkeys_seed_str=unknown_seed,
            allow_reconnect=False,
            connect_timeout=2,
            error_cb=on_error,
        )
        await bad.close()
        raise SystemExit("an unknown nkey was admitted")
    except SystemExit:
        raise
    except Exception as e:  # nats-py raises its own error types
        text = f"{e!r} {errors!r}"
        assert "authorization violation" in text.lower(), text
        print("unknown nkey refused ok")
    print("ALL OK")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
