"""The raw one-hop ceiling: a plain aiokafka consume → produce loop (our virtualenv) with the
running sums in a dict, no repartition hop and no durable state (bench/peers/raw_loop.py's
relay: orjson decode/encode, murmur2 partition, one batch per partition per fetch, flush +
commit every BENCH_COMMIT_INTERVAL). At-least-once only."""

from __future__ import annotations

import asyncio
import signal

import orjson

from bench.peers.raw_loop import Step, consumer, env, producer, relay


def running_sum() -> Step:
    """Pipeline A's state step: the user's running total in a dict."""
    totals: dict[str, float] = {}

    def step(value: bytes) -> tuple[bytes, bytes]:
        p = orjson.loads(value)
        user = p["user_id"]
        total = totals[user] = totals.get(user, 0.0) + p["amount"]
        return user.encode(), orjson.dumps({"user_id": user, "total": total})

    return step


async def main() -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    source, sink = consumer(env["BENCH_INPUT"], env["BENCH_GROUP"]), producer()
    await source.start()
    await sink.start()
    try:
        await relay(source, sink, env["BENCH_OUTPUT"], running_sum(), stop)
    finally:
        await source.stop()
        await sink.stop()


if __name__ == "__main__":
    asyncio.run(main())
