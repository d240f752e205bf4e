"""A small keep-alive HTTP/1.1 load generator (raw asyncio streams: far cheaper per request than a
full client library, so the generator is not what is measured). Run as its own process."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson

T = TypeVar("T")


async def paced(
    items: Sequence[T], rate: float, start: Callable[[int, T, float], Coroutine[Any, Any, None]]
) -> None:
    """Runs `start(index, item, due)` for each item, `rate` per second, each started when it
    falls due (not all scheduled up front: creating thousands of sleeping tasks at once stalls
    the loop for a few hundred milliseconds, and the first items' latency would then be the
    generator's own); returns once all have finished."""
    loop = asyncio.get_running_loop()
    in_flight: set[asyncio.Task[None]] = set()
    begin = loop.time()
    for i, item in enumerate(items):
        due = begin + i / rate
        await asyncio.sleep(max(0.0, due - loop.time()))
        task = asyncio.create_task(start(i, item, due))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    await asyncio.gather(*in_flight)


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)
    settling: list[float] = field(default_factory=list)  # the open loop's first requests
    statuses: dict[int, int] = field(default_factory=dict)
    elapsed: float = 0.0


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


def _request(path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: bench", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def closed_loop(port: int, requests: list[bytes], connections: int) -> Result:
    """Each connection sends its next request as soon as the previous one is answered."""
    result = Result()
    queue = iter(requests)

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for raw in queue:
            started = time.perf_counter()
            writer.write(raw)
            status = await _read_response(reader)
            result.latencies.append(time.perf_counter() - started)
            result.statuses[status] = result.statuses.get(status, 0) + 1
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*[worker() for _ in range(connections)])
    result.elapsed = time.perf_counter() - started
    return result


async def open_loop(
    port: int, requests: list[bytes], rate: float, connections: int, settle: int = 0
) -> Result:
    """Requests start on a fixed schedule (`rate` per second), whatever the server's pace, and
    latency counts from the scheduled start: no coordinated omission. The latencies of the first
    `settle` requests are kept apart."""
    result = Result()
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    loop = asyncio.get_running_loop()

    async def one(i: int, raw: bytes, due: float) -> None:
        conn = await pool.get()
        conn[1].write(raw)
        status = await _read_response(conn[0])
        (result.latencies if i >= settle else result.settling).append(loop.time() - due)
        result.statuses[status] = result.statuses.get(status, 0) + 1
        pool.put_nowait(conn)

    started = time.perf_counter()
    await paced(requests, rate, one)
    result.elapsed = time.perf_counter() - started
    return result


def main() -> None:
    """stdin: {"port", "mode", "connections", "rate"?, "settle"?,
    "requests": [[path, body, headers], ...]}"""
    spec = orjson.loads(sys.stdin.buffer.read())
    requests = [_request(p, b.encode(), h) for p, b, h in spec["requests"]]
    import uvloop

    if spec["mode"] == "closed":
        result = uvloop.run(closed_loop(spec["port"], requests, spec["connections"]))
    else:
        result = uvloop.run(
            open_loop(
                spec["port"],
                requests,
                spec["rate"],
                spec["connections"],
                spec.get("settle", 0),
            )
        )
    sys.stdout.buffer.write(
        orjson.dumps(
            {
                "latencies": result.latencies,
                "settling": result.settling,
                "statuses": result.statuses,
                "elapsed": result.elapsed,
            },
            option=orjson.OPT_NON_STR_KEYS,
        )
    )


if __name__ == "__main__":
    main()
