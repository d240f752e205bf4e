"""A real single-node Apache Kafka broker (KRaft, combined broker+controller) from Maven artifacts.

The jars are pinned by `local/kafka/pom.xml` and fetched once by Maven into `.local/kafka/lib-<pom
digest>` (a changed pom fetches afresh). Storage is formatted once; the broker listens on loopback.
The quorum is the static `controller.quorum.voters` form so that a different port on a later start
does not conflict with what was formatted.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import shutil
import signal
import socket
import subprocess
import uuid
from base64 import urlsafe_b64encode
from pathlib import Path

from devstack.process import ManagedProcess, wait_for
from service.paths import project_root

_POM = project_root() / "local" / "kafka" / "pom.xml"
_LOG4J = project_root() / "local" / "kafka" / "log4j2.properties"


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def new_cluster_id() -> str:
    """A KRaft cluster id: URL-safe base64 of a random UUID. Like Kafka's own Uuid.randomUuid(),
    it never starts with '-', which the storage tool would read as an option (1 id in 64)."""
    while True:
        cluster_id = urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(consecutive: int = 1) -> int:
    """A port `p` such that `p` .. `p + consecutive - 1` are all free now (a broker and its
    controller take two).

    Taken below the kernel's ephemeral range, not by binding port 0: a port the kernel hands out
    and we release can be given again to any outgoing connection before our server binds it (and
    `p + 1` would not be reserved at all). Below that range nothing takes a port by chance."""
    rng = random.SystemRandom()
    high = max(10_000 + consecutive, _ephemeral_low() - consecutive)
    for _ in range(200):
        port = rng.randrange(10_000, high)
        sockets = [socket.socket() for _ in range(consecutive)]
        try:
            for offset, sock in enumerate(sockets):
                sock.bind(("127.0.0.1", port + offset))
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
        return port
    raise RuntimeError(f"no {consecutive} consecutive free ports found")


async def _answers_metadata(bootstrap: str) -> bool:
    from aiokafka.client import AIOKafkaClient

    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
    try:
        await client.bootstrap()
        return bool(client.cluster.brokers())
    except Exception:
        return False
    finally:
        await client.close()


def answers_metadata(bootstrap: str) -> bool:
    host, _, port = bootstrap.rpartition(":")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        if sock.connect_ex((host, int(port))) != 0:
            return False  # not listening yet: skip the client, which logs every refused connection
    return asyncio.run(_answers_metadata(bootstrap))


class LocalKafka:
    def __init__(
        self, home: Path, port: int, *, controller_port: int | None = None, heap: str = "384m"
    ) -> None:
        digest = hashlib.sha256(_POM.read_bytes()).hexdigest()[:12]
        self.root = home / "kafka"
        # The jars are a cache shared by every home (dev, tests): fetched once per pinned pom.
        self.lib_dir = project_root() / ".local" / "kafka" / f"lib-{digest}"
        self.data_dir = self.root / "data"
        self.log_path = self.root / "broker.log"
        self.port = port
        self.controller_port = controller_port if controller_port is not None else port + 1
        self.heap = heap

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def ensure_installed(self) -> None:
        """Fetches the pinned broker jars with Maven, once."""
        if (self.lib_dir / ".complete").exists():
            return
        if shutil.which("mvn") is None:
            raise RuntimeError("Maven (mvn) is needed to fetch the local Kafka broker")
        staging = self.lib_dir.with_name(self.lib_dir.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        result = subprocess.run(
            [
                "mvn",
                "-q",
                "-B",
                "-f",
                str(_POM),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={staging}",
                "-DincludeScope=runtime",
            ],
            check=False,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(f"fetching Kafka with Maven failed:\n{result.stdout[-4000:]}")
        (staging / ".complete").touch()
        staging.rename(self.lib_dir)

    def _java(self, main: str, *args: str, heap: str = "256m", tool: bool = False) -> list[str]:
        # A one-shot tool starts faster with only the C1 compiler; the broker wants full JIT.
        jit = ["-XX:TieredStopAtLevel=1"] if tool else []
        return [
            "java",
            f"-Xmx{heap}",
            "-XX:+UseSerialGC",
            *jit,
            f"-Dlog4j2.configurationFile={_LOG4J}",
            "-cp",
            f"{self.lib_dir}/*",
            main,
            *args,
        ]

    def _write_properties(self) -> Path:
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},"
            f"CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "12",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
        }
        path = self.root / "server.properties"
        self.root.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{key}={value}\n" for key, value in props.items()))
        return path

    def _ensure_formatted(self, properties: Path) -> None:
        if (self.data_dir / "meta.properties").exists():
            return
        cluster_id = new_cluster_id()
        result = subprocess.run(
            self._java(
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(properties),
                tool=True,
            ),
            check=False,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(f"formatting Kafka storage failed:\n{result.stdout}{result.stderr}")

    def start(self, timeout: float = 90.0) -> ManagedProcess:
        """Fetches and formats (once each), starts the broker, returns when it answers metadata."""
        for port in (self.port, self.controller_port):
            if not _port_free(port):
                raise RuntimeError(
                    f"port {port} on 127.0.0.1 is in use; stop what holds it or set "
                    "ROSTER_LOCAL_KAFKA_PORT (the controller takes the next port)"
                )
        self.ensure_installed()
        properties = self._write_properties()
        self._ensure_formatted(properties)
        proc = ManagedProcess(
            "kafka",
            self._java("kafka.Kafka", str(properties), heap=self.heap),
            log_path=self.log_path,
            stop_signal=signal.SIGTERM,
        )
        wait_for(
            lambda: answers_metadata(self.bootstrap_servers),
            timeout=timeout,
            what="Kafka broker",
            interval=0.25,
            alive=proc,
        )
        return proc
