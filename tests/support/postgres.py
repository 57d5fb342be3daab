"""A real, throw-away PostgreSQL server for tests and benchmarks (Debian's ``postgresql`` package).

``initdb`` in a temporary directory, ``postgres`` on 127.0.0.1 at a free port with trust auth,
one database, stopped and deleted on exit. PostgreSQL refuses to run as root, so under root (CI
containers) the server runs as the ``postgres`` system user the Debian package creates.

    with PostgresServer() as server:
        server.url   # postgresql://postgres@127.0.0.1:54321/workhorse
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def find_binaries() -> Path:
    """The newest installed ``/usr/lib/postgresql/<version>/bin``; a clear error when none is."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if not found:
        raise RuntimeError("PostgreSQL is not installed: `apt-get install postgresql` (make test does it)")
    return Path(found[-1]).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    """Start on ``__enter__`` (about 2 s), stop with ``-m immediate`` and delete on ``__exit__``."""

    def __init__(self, database: str = "workhorse"):
        self.database = database
        self.bin = find_binaries()
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="workhorse-pg-"))
        self.data = self.root / "data"
        self.user = "postgres"

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        command = [str(self.bin / args[0]), *args[1:]]
        if os.geteuid() == 0:  # initdb and postgres refuse root
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)

    def _check(self, result: subprocess.CompletedProcess, what: str) -> None:
        if result.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"PostgreSQL {what} failed: {result.stderr.strip()[-2000:]}\n{tail}")

    def start(self) -> "PostgresServer":
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        self._check(
            self._run(
                "initdb",
                "-D",
                str(self.data),
                "-U",
                self.user,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ),
            "initdb",
        )
        # fsync off: a test server's data is thrown away, and fsync would dominate on CI disks.
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.root} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._check(
            self._run(
                "pg_ctl",
                "-D",
                str(self.data),
                "-l",
                str(self.root / "server.log"),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
            ),
            "start",
        )
        self._check(
            self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, self.database),
            "createdb",
        )
        return self

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "PostgresServer":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()
