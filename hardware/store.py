"""The measurement store: nothing is measured twice, across runs and across workers.

Results are keyed by ``(source key, space, canonical arch string)``.  The
source key is a hash of the measurement conditions (a runner's device
fingerprint plus protocol, or an accuracy estimator's settings), so numbers
taken under different conditions never mix.  Device names map to exactly one
fingerprint: registering a second fingerprint under a known name is refused.

Where it lives: a path or ``sqlite:///PATH`` (the embedded default,
``$HWNAS_HOME/measurements.db``) or ``postgresql://USER@HOST/DB`` when several
workers or machines share it.  Both go through SQLAlchemy with one schema.
SQLite runs in WAL mode with every transaction ``BEGIN IMMEDIATE``, so two
processes on one file serialise their writes instead of failing on a lock
upgrade; PostgreSQL needs ``psycopg`` 3 (``pip install 'hwnas[postgres]'``).

Every row carries ``meta`` (JSON: what the machine was doing while it was
measured: load, clock, the batch's anchor drift, start and end times) and a
``reliable`` flag.  A row measured while the machine was disturbed is kept,
flagged unreliable with its drift, and never served as a cached fact:
:meth:`MeasurementStore.get_many` returns reliable rows only, so the next run
measures it again.  Each source's anchor references (the quietest timings of
a few fixed architectures, see ``nas.sources.runner``) live in ``anchors``.

Measure once across workers: a worker *claims* the archs it is about to
compute (:meth:`MeasurementStore.claim`, a row per arch with an owner and a
lease it renews while it works); the others wait for the row or take other
work, and take the claim over only when its lease has run out (the owner
died).  Storing results releases their claims in the same transaction.

The device farm's pull queue (tables ``jobs`` and ``agents``; the logic is in
``hardware.remote.queue``) lives in the same database.

Schema versions are rows of ``hwnas_schema``; :data:`MIGRATIONS` brings an
older database up to date when it is opened (SQLite files from before that
table kept their version in ``PRAGMA user_version``).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, NoSuchModuleError

metadata = sa.MetaData()

sources = sa.Table(
    "sources", metadata,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("description", sa.Text, nullable=False))
devices = sa.Table(
    "devices", metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("source_key", sa.Text, nullable=False),
    sa.Column("fingerprint", sa.Text, nullable=False),
    sa.Column("created", sa.Float, nullable=False))
results = sa.Table(
    "results", metadata,
    sa.Column("source_key", sa.Text, primary_key=True),
    sa.Column("space", sa.Text, primary_key=True),
    sa.Column("arch", sa.Text, primary_key=True),
    sa.Column("metrics", sa.Text, nullable=False),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("meta", sa.Text, nullable=False, server_default="{}"),
    sa.Column("reliable", sa.Integer, nullable=False, server_default="1"))
anchors = sa.Table(
    "anchors", metadata,
    sa.Column("source_key", sa.Text, primary_key=True),
    sa.Column("space", sa.Text, primary_key=True),
    sa.Column("arch", sa.Text, primary_key=True),
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("created", sa.Float, nullable=False))
claims = sa.Table(
    "claims", metadata,
    sa.Column("source_key", sa.Text, primary_key=True),
    sa.Column("space", sa.Text, primary_key=True),
    sa.Column("arch", sa.Text, primary_key=True),
    sa.Column("owner", sa.Text, nullable=False),
    sa.Column("expires", sa.Float, nullable=False))
#: device agents of the pull farm (``hwnas device-agent``): one row per agent process
agents = sa.Table(
    "agents", metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("device", sa.Text, nullable=False, index=True),
    sa.Column("fingerprint", sa.Text, nullable=False),
    sa.Column("host", sa.Text, nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("started", sa.Float, nullable=False),
    sa.Column("heartbeat", sa.Float, nullable=False),
    sa.Column("stopped", sa.Float, nullable=True))
#: measurement jobs of the pull farm, one per batch: ``request`` is the body a
#: ``serve-device`` would be sent (models, input shapes, protocol), ``answer`` its reply;
#: state queued -> running (leased by an agent until ``lease_until``) -> done | failed
jobs = sa.Table(
    "jobs", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("device", sa.Text, nullable=False),
    sa.Column("request", sa.LargeBinary, nullable=False),
    sa.Column("state", sa.Text, nullable=False, server_default="queued"),
    sa.Column("agent", sa.Text, nullable=True),
    sa.Column("lease_until", sa.Float, nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("answer", sa.Text, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("finished", sa.Float, nullable=True),
    sa.Index("jobs_by_state", "device", "state"))
schema = sa.Table("hwnas_schema", metadata, sa.Column("version", sa.Integer, nullable=False))


def _legacy_meta_columns(conn: Connection) -> None:
    # files from before version 1 lack the row's meta and reliable flag, and anchors
    conn.exec_driver_sql("ALTER TABLE results ADD COLUMN meta TEXT NOT NULL DEFAULT '{}'")
    conn.exec_driver_sql("ALTER TABLE results ADD COLUMN reliable INTEGER NOT NULL DEFAULT 1")
    anchors.create(conn, checkfirst=True)


def _claims_and_farm(conn: Connection) -> None:
    for table in (claims, agents, jobs, schema):
        table.create(conn, checkfirst=True)


#: schema version -> the step that brings version - 1 to it
MIGRATIONS: dict[int, Callable[[Connection], None]] = {1: _legacy_meta_columns, 2: _claims_and_farm}
SCHEMA_VERSION = max(MIGRATIONS)
SCHEMES = ("sqlite", "postgresql")
#: SQLite's variable limit is 999 on old builds: look rows up in chunks
CHUNK = 500


def hwnas_home() -> Path:
    """hwnas' own folder: ``$HWNAS_HOME``, default ``~/.hwnas``."""
    return Path(os.environ.get("HWNAS_HOME", "~/.hwnas")).expanduser()


def default_store_path() -> Path:
    return hwnas_home() / "measurements.db"


class FingerprintMismatch(ValueError):
    """A device name already stands for other measurement conditions."""


class StoreError(ValueError):
    """The store cannot be used (corrupt, not SQLite, read-only, server unreachable); names it."""


def is_url(location: str | os.PathLike) -> bool:
    return "://" in str(location)


def store_url(location: str | os.PathLike) -> str:
    """A SQLAlchemy URL for a database location (the measurement store, an Optuna study):
    a file path, ``:memory:``, ``sqlite:///...`` or ``postgresql://...``; anything else
    is refused naming the scheme."""
    text = str(location)
    if text == ":memory:":
        return "sqlite://"
    if not is_url(text):
        return f"sqlite:///{Path(text).expanduser().absolute()}"
    scheme = text.split("://", 1)[0]
    if scheme.split("+", 1)[0] not in SCHEMES:
        raise StoreError(f"{redact(text)}: unsupported database URL scheme {scheme!r}; use a file path, "
                         f"sqlite:///PATH or postgresql://USER@HOST/DATABASE")
    if scheme == "postgresql":
        # the driver hwnas installs (psycopg 3); SQLAlchemy's default for a bare scheme varies by version
        return "postgresql+psycopg://" + text.split("://", 1)[1]
    return text


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return url


def without_password(url: str) -> str:
    """The URL with no password at all (not masked): what a file may keep, since libpq reads
    the password from ``~/.pgpass`` or ``$PGPASSWORD`` when the URL has none."""
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        return url
    if not parsed.password:
        return url
    # URL is a NamedTuple; its set() leaves a field alone when given None
    return parsed._replace(password=None).render_as_string(hide_password=False)


def make_engine(url: str) -> Engine:
    """An engine for one of :data:`SCHEMES`; SQLite gets WAL, a 60 s busy timeout and
    ``BEGIN IMMEDIATE`` transactions (a read that later writes never deadlocks)."""
    if url.startswith("sqlite"):
        memory = url == "sqlite://"
        engine = sa.create_engine(url, connect_args={"timeout": 60, "check_same_thread": False},
                                  poolclass=sa.pool.StaticPool if memory else None)

        @sa.event.listens_for(engine, "connect")
        def _connect(dbapi_conn, _record):
            # the driver's own transaction handling is off; SQLAlchemy's begin event below opens them
            dbapi_conn.isolation_level = None
            if not memory:
                dbapi_conn.execute("PRAGMA journal_mode=WAL")

        @sa.event.listens_for(engine, "begin")
        def _begin(conn):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        return engine
    try:
        return sa.create_engine(url, pool_pre_ping=True)
    except (ModuleNotFoundError, NoSuchModuleError) as exc:
        raise StoreError(f"{redact(url)}: the PostgreSQL driver is not installed ({exc}); "
                         f"pip install 'hwnas[postgres]' (psycopg 3)") from None


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


class MeasurementStore:
    """Results, devices, anchors, claims and the farm's queue in one database.

    ``lease_s``: how long a claim stays valid without renewal; a worker renews its
    claims every third of it while it computes, so a claim outlives its owner by at
    most ``lease_s``."""

    def __init__(self, location: str | Path, lease_s: float = 60.0):
        self.url = store_url(location)
        #: how messages name the store: the file for SQLite, the URL without password otherwise
        self.where = str(location) if not is_url(location) else redact(str(location))
        self.path = Path(str(location)) if not is_url(location) and str(location) != ":memory:" else None
        self.lease_s = float(lease_s)
        #: this process' identity in claims and the farm (host, pid, and a nonce: pids recycle)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.engine = make_engine(self.url)
        try:
            with self.errors("cannot open the measurement store"):
                self._migrate()
        except BaseException:
            self.engine.dispose()
            raise

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextlib.contextmanager
    def errors(self, doing: str) -> Iterator[None]:
        """Database errors become :class:`StoreError` naming the store and what to do
        (the driver's messages name neither the file nor the server)."""
        try:
            yield
        except DBAPIError as exc:
            detail = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
            if "full" in detail:
                raise StoreError(f"{self.where}: {doing} ({detail}); free some space and re-run the same "
                                 f"command") from exc
            if self.dialect == "sqlite":
                raise StoreError(f"{self.where}: {doing} ({detail}); if it is corrupt, move it aside "
                                 f"(its measurements are re-taken when needed)") from exc
            raise StoreError(f"{self.where}: {doing} ({detail})") from exc

    def _version(self, conn: Connection) -> int | None:
        """The schema version, ``None`` for an empty database."""
        inspector = sa.inspect(conn)
        if inspector.has_table(schema.name):
            row = conn.execute(sa.select(sa.func.max(schema.c.version))).scalar()
            return int(row or 0)
        if not inspector.has_table(results.name):
            return None
        # a SQLite file written before the version table
        return int(conn.exec_driver_sql("PRAGMA user_version").scalar()) if self.dialect == "sqlite" else 0

    def _migrate(self) -> None:
        with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                # workers starting together: one creates or migrates, the others wait and see it done
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": 0x68776E6173})
            version = self._version(conn)
            if version is None:
                metadata.create_all(conn)
                conn.execute(schema.insert().values(version=SCHEMA_VERSION))
                return
            if version > SCHEMA_VERSION:
                raise StoreError(f"{self.where}: measurement store schema {version} is newer than this "
                                 f"hwnas understands ({SCHEMA_VERSION}); upgrade hwnas")
            for target in range(version + 1, SCHEMA_VERSION + 1):
                MIGRATIONS[target](conn)
                conn.execute(schema.delete())
                conn.execute(schema.insert().values(version=target))

    def schema_version(self) -> int:
        with self.engine.connect() as conn:
            return self._version(conn) or 0

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> "MeasurementStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _insert(self, table: sa.Table):
        """The dialect's INSERT, which has ``on_conflict_do_nothing/update``."""
        return (postgresql if self.dialect == "postgresql" else sqlite).insert(table)

    def _upsert(self, conn: Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        statement = self._insert(table)
        keys = [c.name for c in table.primary_key.columns]
        conn.execute(statement.on_conflict_do_update(
            index_elements=keys,
            set_={c: statement.excluded[c] for c in rows[0] if c not in keys}), rows)

    # sources and devices -----------------------------------------------------------
    def register_source(self, key: str, description: Mapping[str, Any]) -> None:
        with self.errors("cannot register a source"), self.engine.begin() as conn:
            conn.execute(self._insert(sources).on_conflict_do_nothing(),
                         {"key": key, "description": _dumps(description)})

    def source_description(self, key: str) -> dict[str, Any] | None:
        with self.errors("cannot read a source"), self.engine.connect() as conn:
            row = conn.execute(sa.select(sources.c.description).where(sources.c.key == key)).scalar()
        return json.loads(row) if row is not None else None

    def source_keys(self) -> list[str]:
        """Every registered source key (runners, predictors, accuracy estimators)."""
        with self.errors("cannot read sources"), self.engine.connect() as conn:
            return list(conn.execute(sa.select(sources.c.key).order_by(sources.c.key)).scalars())

    def register_device(self, name: str, source_key: str, fingerprint: Mapping[str, Any]) -> None:
        """Bind ``name`` to one fingerprint; refuse to rebind it to another."""
        with self.errors("cannot register a device"), self.engine.begin() as conn:
            conn.execute(self._insert(devices).on_conflict_do_nothing(),
                         {"name": name, "source_key": source_key, "fingerprint": _dumps(dict(fingerprint)),
                          "created": time.time()})
            row = conn.execute(sa.select(devices.c.source_key, devices.c.fingerprint)
                               .where(devices.c.name == name)).one()
        if row[0] != source_key:
            raise FingerprintMismatch(
                f"device {name!r} is registered with fingerprint {row[1]}, which differs from "
                f"{_dumps(dict(fingerprint))}; use a new device name")

    def device(self, name: str) -> tuple[str, dict[str, Any]] | None:
        with self.errors("cannot read devices"), self.engine.connect() as conn:
            row = conn.execute(sa.select(devices.c.source_key, devices.c.fingerprint)
                               .where(devices.c.name == name)).first()
        return (row[0], json.loads(row[1])) if row else None

    def devices(self) -> list[str]:
        with self.errors("cannot read devices"), self.engine.connect() as conn:
            return list(conn.execute(sa.select(devices.c.name).order_by(devices.c.name)).scalars())

    # results ---------------------------------------------------------------------------
    def _where(self, table: sa.Table, source_key: str, space: str):
        return sa.and_(table.c.source_key == source_key, table.c.space == space)

    def get_many(self, source_key: str, space: str, archs: Iterable[str],
                 reliable_only: bool = True) -> dict[str, dict[str, float]]:
        """Stored metrics of ``archs`` (those present); unreliable rows only when asked."""
        archs = list(archs)
        found: dict[str, dict[str, float]] = {}
        with self.errors("cannot read results"), self.engine.connect() as conn:
            for start in range(0, len(archs), CHUNK):
                query = sa.select(results.c.arch, results.c.metrics).where(
                    self._where(results, source_key, space), results.c.arch.in_(archs[start:start + CHUNK]))
                if reliable_only:
                    query = query.where(results.c.reliable == 1)
                found.update({arch: json.loads(m) for arch, m in conn.execute(query)})
        return found

    def put_many(self, source_key: str, space: str, values: Mapping[str, Mapping[str, float]],
                 meta: Mapping[str, Any] | None = None, reliable: bool = True) -> None:
        """Store ``{arch: metrics}`` in one transaction, with the batch's ``meta``; this
        process' claims on them end in the same transaction."""
        now = time.time()
        blob = _dumps(dict(meta or {}))
        rows = [{"source_key": source_key, "space": space, "arch": arch, "metrics": _dumps(dict(m)),
                 "created": now, "meta": blob, "reliable": int(reliable)} for arch, m in values.items()]
        with self.errors("cannot store results"), self.engine.begin() as conn:
            self._upsert(conn, results, rows)
            self._release(conn, source_key, space, list(values))

    def all_results(self, source_key: str, space: str | None = None,
                    reliable_only: bool = True) -> list[tuple[str, str, dict, float]]:
        """``(space, arch, metrics, created)`` rows of one source, oldest first."""
        query = sa.select(results.c.space, results.c.arch, results.c.metrics, results.c.created).where(
            results.c.source_key == source_key)
        if space is not None:
            query = query.where(results.c.space == space)
        if reliable_only:
            query = query.where(results.c.reliable == 1)
        with self.errors("cannot read results"), self.engine.connect() as conn:
            rows = conn.execute(query.order_by(results.c.created, results.c.arch)).all()
        return [(s, a, json.loads(m), c) for s, a, m, c in rows]

    def row_meta(self, source_key: str, space: str, arch: str) -> tuple[dict[str, Any], bool] | None:
        """``(meta, reliable)`` of one stored row."""
        with self.errors("cannot read results"), self.engine.connect() as conn:
            row = conn.execute(sa.select(results.c.meta, results.c.reliable).where(
                self._where(results, source_key, space), results.c.arch == arch)).first()
        return (json.loads(row[0]), bool(row[1])) if row else None

    def delete(self, source_key: str, space: str, archs: Iterable[str]) -> int:
        """Drop rows (``hwnas measure --verify --invalidate``); returns how many went."""
        archs = list(archs)
        gone = 0
        with self.errors("cannot delete results"), self.engine.begin() as conn:
            for start in range(0, len(archs), CHUNK):
                gone += conn.execute(results.delete().where(
                    self._where(results, source_key, space),
                    results.c.arch.in_(archs[start:start + CHUNK]))).rowcount
        return gone

    def count(self, source_key: str | None = None) -> int:
        query = sa.select(sa.func.count()).select_from(results)
        if source_key is not None:
            query = query.where(results.c.source_key == source_key)
        with self.errors("cannot read results"), self.engine.connect() as conn:
            return int(conn.execute(query).scalar())

    # anchors ---------------------------------------------------------------------------
    def anchors(self, source_key: str, space: str) -> dict[str, float]:
        """Reference latency of each anchor arch of a source (its quietest timing)."""
        with self.errors("cannot read anchors"), self.engine.connect() as conn:
            return dict(conn.execute(sa.select(anchors.c.arch, anchors.c.latency_ms)
                                     .where(self._where(anchors, source_key, space))).all())

    def set_anchors(self, source_key: str, space: str, values: Mapping[str, float]) -> None:
        now = time.time()
        with self.errors("cannot store anchors"), self.engine.begin() as conn:
            self._upsert(conn, anchors, [{"source_key": source_key, "space": space, "arch": arch,
                                          "latency_ms": float(v), "created": now} for arch, v in values.items()])

    # claims: measure once across workers ----------------------------------------------
    def claim(self, source_key: str, space: str, archs: Iterable[str]) -> list[str]:
        """Claim ``archs`` for this process; returns those it now holds (free ones, ones
        whose lease ran out, ones it held already), in the given order."""
        archs = list(archs)
        now = time.time()
        held: set[str] = set()
        statement = self._insert(claims)
        take_over = statement.on_conflict_do_update(
            index_elements=["source_key", "space", "arch"],
            set_={"owner": statement.excluded.owner, "expires": statement.excluded.expires},
            where=sa.or_(claims.c.expires < now, claims.c.owner == self.owner))
        with self.errors("cannot claim work"), self.engine.begin() as conn:
            for start in range(0, len(archs), CHUNK):
                chunk = archs[start:start + CHUNK]
                conn.execute(take_over, [{"source_key": source_key, "space": space, "arch": a,
                                          "owner": self.owner, "expires": now + self.lease_s} for a in chunk])
                held.update(conn.execute(sa.select(claims.c.arch).where(
                    self._where(claims, source_key, space), claims.c.arch.in_(chunk),
                    claims.c.owner == self.owner)).scalars())
        return [a for a in archs if a in held]

    def _release(self, conn: Connection, source_key: str, space: str, archs: list[str]) -> None:
        for start in range(0, len(archs), CHUNK):
            conn.execute(claims.delete().where(self._where(claims, source_key, space),
                                               claims.c.arch.in_(archs[start:start + CHUNK]),
                                               claims.c.owner == self.owner))

    def release(self, source_key: str, space: str, archs: Iterable[str]) -> None:
        """End this process' claims on ``archs`` (work it will not do after all)."""
        with self.errors("cannot release claims"), self.engine.begin() as conn:
            self._release(conn, source_key, space, list(archs))

    def renew_claims(self) -> int:
        """Extend every claim this process holds by a lease; returns how many."""
        with self.errors("cannot renew claims"), self.engine.begin() as conn:
            return conn.execute(claims.update().where(claims.c.owner == self.owner)
                                .values(expires=time.time() + self.lease_s)).rowcount

    @contextlib.contextmanager
    def renewing_claims(self) -> Iterator[None]:
        """Renew this process' claims every third of a lease while the block runs (a long
        measurement keeps its archs; a killed process stops renewing and loses them)."""
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(self.lease_s / 3):
                try:
                    self.renew_claims()
                except StoreError:
                    pass  # a passing outage: the next renewal or the lease decides

        thread = threading.Thread(target=renew, name="hwnas-claims", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def claimed_by_others(self, source_key: str, space: str, archs: Iterable[str]) -> dict[str, float]:
        """``{arch: expires}`` of live claims other processes hold on ``archs``."""
        archs = list(archs)
        now = time.time()
        found: dict[str, float] = {}
        with self.errors("cannot read claims"), self.engine.connect() as conn:
            for start in range(0, len(archs), CHUNK):
                found.update(conn.execute(sa.select(claims.c.arch, claims.c.expires).where(
                    self._where(claims, source_key, space), claims.c.arch.in_(archs[start:start + CHUNK]),
                    claims.c.owner != self.owner, claims.c.expires >= now)).all())
        return found


# keys ------------------------------------------------------------------------------------
def space_key(space) -> str:
    """Store column for a space: its name plus the options that change built networks."""
    opts = space.network_options()
    return space.name if not opts else f"{space.name}{json.dumps(opts, sort_keys=True)}"


def source_key(payload: Mapping[str, Any]) -> str:
    """Short content hash of a source's fingerprint (the ``source_key`` column)."""
    return hashlib.sha1(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]
