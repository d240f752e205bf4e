"""A small keep-alive HTTP/1.1 load generator (raw asyncio streams: far cheaper per request than a
full client library, so the generator is not what is measured). Run as its own process."""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass, field

import orjson


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
    in_flight: set[asyncio.Task[None]] = set()

    async def one(raw: bytes, due: float, latencies: list[float]) -> None:
        conn = await pool.get()
        conn[1].write(raw)
        status = await _read_response(conn[0])
        latencies.append(loop.time() - due)
        result.statuses[status] = result.statuses.get(status, 0) + 1
        pool.put_nowait(conn)

    started = time.perf_counter()
    begin = loop.time()
    # Each request is started when it falls due, not all scheduled up front: creating thousands
    # of sleeping tasks at once stalls this loop for a few hundred milliseconds, and the first
    # requests' latency would then be the generator's own.
    for i, raw in enumerate(requests):
        due = begin + i / rate
        await asyncio.sleep(max(0.0, due - loop.time()))
        task = asyncio.create_task(
            one(raw, due, result.latencies if i >= settle else result.settling)
        )
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    await asyncio.gather(*in_flight)
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
