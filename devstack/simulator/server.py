"""Serving a simulator: in-process on a free loopback port (tests, benchmarks) or in the
foreground (`roster simulate`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import uvicorn

from devstack.kafka import free_port
from devstack.simulator.app import create_app
from devstack.simulator.simulator import CleverSimulator


@dataclass(frozen=True)
class RunningSimulator:
    sim: CleverSimulator
    base_url: str  # the API, the OAuth token list and /sim/ all live here

    def settings_values(self) -> dict[str, str]:
        """ROSTER_CLEVER_* settings (as Settings fields) for a client of this simulator."""
        return self.sim.settings_values(self.base_url)


def _config(sim: CleverSimulator, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        create_app(sim),
        host=host,
        port=port,
        lifespan="off",
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=2,  # a hung request must not hold up the test's end
    )


@asynccontextmanager
async def serving(sim: CleverSimulator, host: str = "127.0.0.1") -> AsyncIterator[RunningSimulator]:
    """Serves `sim` on the running event loop until the block ends."""
    port = free_port()
    server = uvicorn.Server(_config(sim, host, port))
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(30):
            while not server.started:
                if task.done():
                    await task  # it failed to start: raise why
                await asyncio.sleep(0.02)
        yield RunningSimulator(sim, f"http://{host}:{port}")
    finally:
        server.should_exit = True
        await task


def run(sim: CleverSimulator, host: str, port: int) -> None:
    """Serves `sim` in the foreground until interrupted."""
    uvicorn.Server(_config(sim, host, port)).run()
