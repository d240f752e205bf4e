"""`roster simulate` as a process, driven through its /sim/ control API (no Kafka, no database)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from devstack.kafka import free_port
from service.paths import project_root


@pytest.fixture(scope="module")
def simulator() -> Iterator[tuple[str, str]]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "service",
            "simulate",
            "--port",
            str(port),
            "--seed",
            "3",
            "--districts",
            "2",
            "--students",
            "40",
            "--schools",
            "3",
            "--sections",
            "6",
        ],
        cwd=project_root(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{base}/sim/", timeout=1).raise_for_status()
                break
            except httpx.TransportError:
                assert process.poll() is None, process.communicate()
                assert time.monotonic() < deadline, "the simulator did not start"
                time.sleep(0.1)
        yield base, process.stdout.readline() if process.stdout else ""
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_it_prints_where_to_point_the_service(simulator: tuple[str, str]) -> None:
    base, first_line = simulator
    assert first_line.startswith(f"Clever simulator on {base} (seed 3, 2 district(s)")


def test_the_control_api_drives_changes_faults_truth_and_the_log(
    simulator: tuple[str, str],
) -> None:
    base, _ = simulator
    with httpx.Client(base_url=base, timeout=10) as sim:
        info = sim.get("/sim/").json()
        district = info["districts"][0]
        api = {"Authorization": f"Bearer {district['token']}", "X-Roster-Process": "p-1"}
        tokens = sim.get(
            "/oauth/tokens",
            params={"owner_type": "district"},
            auth=(info["client_id"], info["client_secret"]),
        ).json()
        assert [t["owner"]["id"] for t in tokens["data"]] == [d["id"] for d in info["districts"]]

        done = sim.post(
            "/sim/changes",
            json={"district_id": district["id"], "change": "new_student", "args": {}},
        ).json()["changes"]
        student = done[0]["record_id"]
        feed = sim.get("/v3.0/events", headers=api, params={"limit": "100"}).json()
        assert [e["data"]["id"] for e in feed["data"]] == done[0]["event_ids"]
        assert feed["data"][0]["data"]["type"] == "users.created"
        truth = sim.get("/sim/truth", params={"district_id": district["id"]}).json()["students"]
        assert truth[student]["deleted"] is False and len(truth[student]["sections"]) >= 1

        sim.delete("/sim/requests")
        fault = {"kind": "server_error", "count": 1, "district_id": district["id"]}
        assert sim.post("/sim/faults", json=fault).status_code == 200
        assert sim.get("/v3.0/schools", headers=api).status_code == 500
        assert sim.get("/v3.0/schools", headers=api).status_code == 200
        log = sim.get("/sim/requests").json()["requests"]
        assert [(r["status"], r["process"], r["district_id"]) for r in log] == [
            (500, "p-1", district["id"]),
            (200, "p-1", district["id"]),
        ]

        newest = sim.get("/sim/events", params={"district_id": district["id"]}).json()["newest"]
        sim.post("/sim/clock", json={"advance_seconds": 31 * 86400})
        refused = sim.get("/v3.0/events", headers=api, params={"starting_after": newest})
        assert refused.status_code == 404 and "error" in refused.json()

        sim.post(f"/sim/tokens/{district['id']}/revoke")
        assert sim.get("/v3.0/schools", headers=api).status_code == 401

        bad = sim.post("/sim/changes", json={"district_id": district["id"], "change": "nope"})
        assert bad.status_code == 400 and "unknown change" in bad.json()["error"]
        unknown = sim.post("/sim/changes", json={"district_id": "x", "change": "unshare"})
        assert unknown.status_code == 404
