"""Throwaway database servers for tests: a real PostgreSQL cluster on a free loopback port.

    from services import start_postgres   # or the `postgres` fixture in the hub tests
    pg = start_postgres()                 # skips if PostgreSQL is not installed (fails on CI)
    pg.url    # postgresql+psycopg://postgres@127.0.0.1:PORT/postgres
    pg.restart(); pg.stop()

The cluster is made with the Debian binaries (`/usr/lib/postgresql/*/bin`: initdb, pg_ctl) in a
fresh folder under /tmp, trust authentication, loopback only. PostgreSQL refuses to run as
root, so as root every command runs as user `postgres` (`runuser -u postgres --`) on a folder
that user owns.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Postgres:
    bin: Path
    data: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *args], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.data} -c fsync=off"
        log = self.data / "server.log"
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data / "db"),
            "-o",
            options,
            "-l",
            str(log),
            "-w",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data / "db"), "-m", mode, "-w", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop("immediate")
        shutil.rmtree(self.data, ignore_errors=True)


def start_postgres() -> Postgres:
    """A running throwaway cluster; skips when PostgreSQL is absent, unless CI=true."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL is not installed (apt-get install postgresql) and CI=true")
        pytest.skip("PostgreSQL binaries not found in /usr/lib/postgresql/*/bin")
    bin_dir = Path(found[-1]).parent
    # Not under pytest's tmp folder: that is private to root, and the server runs as postgres.
    data = Path(tempfile.mkdtemp(prefix="gemmaforge-pg-", dir="/tmp"))
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
    pg = Postgres(bin_dir, data, _free_port())
    pg._run(
        str(bin_dir / "initdb"),
        "-D",
        str(data / "db"),
        "-A",
        "trust",
        "-U",
        "postgres",
        "--no-sync",
    )
    pg.start()
    return pg
