"""A throwaway PostgreSQL server on 127.0.0.1, for trying several workers on one
machine, for the tests and for ``benchmarks/scale_out.py``.

It runs the distribution's own server binaries (Debian: ``apt-get install
postgresql``; they live in ``/usr/lib/postgresql/VERSION/bin``): ``initdb`` a
cluster in a fresh temporary folder, ``pg_ctl start`` it listening on
127.0.0.1 at a free port (its socket in the same folder, so it never meets a
system server), and on :meth:`ThrowawayPostgres.stop` stop it by its
postmaster's pid and delete the folder.  PostgreSQL refuses to run as root, so
under root the cluster belongs to the ``postgres`` user the package creates.

Production users point hwnas at their own server instead (README, "Scaling out").
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from hardware.store import store_url

#: the cluster's only role and database
USER = "hwnas"
DATABASE = "hwnas"
START_TIMEOUT_S = 60


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL server binaries are not installed."""


def server_binary(name: str) -> str:
    """Path of a PostgreSQL server binary (``initdb``, ``pg_ctl``): on ``PATH``, else the
    newest ``/usr/lib/postgresql/*/bin``."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                        key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0)
    if not candidates:
        raise PostgresUnavailable(f"PostgreSQL's {name} is not installed; on Debian/Ubuntu: "
                                  f"apt-get install -y postgresql")
    return candidates[-1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThrowawayPostgres:
    """``with ThrowawayPostgres() as pg: pg.url(...)``: a server for the ``with`` block."""

    def __init__(self, databases: tuple[str, ...] = ()):
        self.extra_databases = databases
        self.folder: Path | None = None
        self.port = 0
        self.pid: int | None = None

    def _run_as(self) -> dict:
        # initdb and postgres refuse root: run them as the package's postgres user
        if os.geteuid() != 0:
            return {}
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise PostgresUnavailable("running as root, and there is no 'postgres' user to own the "
                                      "throwaway cluster (install the postgresql package)") from None
        return {"user": "postgres"}

    def start(self) -> "ThrowawayPostgres":
        as_user = self._run_as()
        initdb, pg_ctl = server_binary("initdb"), server_binary("pg_ctl")
        # not pytest's tmp_path: its parents are private to root, and the server runs as postgres
        self.folder = Path(tempfile.mkdtemp(prefix="hwnas-pg-"))
        if as_user:
            shutil.chown(self.folder, "postgres")
        data = self.folder / "data"
        self.port = free_port()
        subprocess.run([initdb, "-D", str(data), "-U", USER, "--auth=trust", "--encoding=UTF8",
                        "--no-sync"], check=True, capture_output=True, timeout=120, **as_user)
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.folder} "
                   f"-c fsync=off -c max_connections=200")
        try:
            subprocess.run([pg_ctl, "-D", str(data), "-o", options, "-l", str(self.folder / "server.log"),
                            "-w", "-t", str(START_TIMEOUT_S), "start"],
                           check=True, capture_output=True, timeout=START_TIMEOUT_S + 10, **as_user)
        except subprocess.CalledProcessError as exc:
            log = (self.folder / "server.log").read_text(errors="replace")[-2000:]
            shutil.rmtree(self.folder, ignore_errors=True)
            raise RuntimeError(f"PostgreSQL did not start: {exc.stderr.decode(errors='replace')}\n{log}") from None
        self.pid = int((data / "postmaster.pid").read_text().split()[0])
        for name in self.extra_databases:
            self.create_database(name)
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A fresh database on the server; returns its URL."""
        engine = sa.create_engine(store_url(self.url()), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        finally:
            engine.dispose()
        return self.url(name)

    def stop(self) -> None:
        """Stop the server by its postmaster pid (fast shutdown), then delete its folder."""
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGINT)  # PostgreSQL's "fast" shutdown
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    os.kill(self.pid, 0)
                    time.sleep(0.1)
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.pid = None
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def __enter__(self) -> "ThrowawayPostgres":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
