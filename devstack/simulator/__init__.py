"""A simulated Clever API (dev only): the OAuth district-token list and the v3.0 Data and Events
APIs with Clever's envelopes, paging, rate limits and injectable faults, over seeded districts.

Tests import `CleverSimulator` and drive it directly (serve it with `serving`); `roster simulate`
runs one as a process, driven through its /sim/ control API.
"""

from devstack.simulator.app import create_app
from devstack.simulator.changes import Change
from devstack.simulator.faults import Fault
from devstack.simulator.seed import Size
from devstack.simulator.server import RunningSimulator, run, serving
from devstack.simulator.simulator import CleverSimulator, LoggedRequest
from devstack.simulator.truth import StudentTruth

__all__ = [
    "Change",
    "CleverSimulator",
    "Fault",
    "LoggedRequest",
    "RunningSimulator",
    "Size",
    "StudentTruth",
    "create_app",
    "run",
    "serving",
]
