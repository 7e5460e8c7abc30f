"""SQLite measurement store: nothing is measured twice across runs.

Results are keyed by ``(source key, space, canonical arch string)``.  The
source key is a hash of the measurement conditions (a runner's device
fingerprint plus protocol, or an accuracy estimator's settings), so numbers
taken under different conditions never mix.  Device names map to exactly one
fingerprint: registering a second fingerprint under a known name is refused.

WAL journaling lets a search process write while a dashboard or a second
process reads; every ``put_many`` is one transaction, so a killed process
loses at most the batch it was writing.

Every row carries ``meta`` (JSON: what the machine was doing while it was
measured: load, clock, the batch's anchor drift, start and end times) and a
``reliable`` flag.  A row measured while the machine was disturbed is kept,
flagged unreliable with its drift, and never served as a cached fact:
:meth:`MeasurementStore.get_many` returns reliable rows only, so the next run
measures it again.  Each source's anchor references (the quietest timings of
a few fixed architectures, see ``nas.sources.runner``) live in ``anchors``.

The schema version is SQLite's ``user_version``; :data:`MIGRATIONS` brings an
older file up to date when it is opened.
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

SCHEMA = """
CREATE TABLE IF NOT EXISTS sources (
    key TEXT PRIMARY KEY,
    description TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS devices (
    name TEXT PRIMARY KEY,
    source_key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS results (
    source_key TEXT NOT NULL,
    space TEXT NOT NULL,
    arch TEXT NOT NULL,
    metrics TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (source_key, space, arch)
);
"""

#: schema version -> statements that bring version - 1 to it
MIGRATIONS = {
    1: ["ALTER TABLE results ADD COLUMN meta TEXT NOT NULL DEFAULT '{}'",
        "ALTER TABLE results ADD COLUMN reliable INTEGER NOT NULL DEFAULT 1",
        """CREATE TABLE IF NOT EXISTS anchors (
               source_key TEXT NOT NULL,
               space TEXT NOT NULL,
               arch TEXT NOT NULL,
               latency_ms REAL NOT NULL,
               created REAL NOT NULL,
               PRIMARY KEY (source_key, space, arch))"""],
}
SCHEMA_VERSION = max(MIGRATIONS)


def hwnas_home() -> Path:
    """hwnas' own folder: ``$HWNAS_HOME``, default ``~/.hwnas``."""
    return Path(os.environ.get("HWNAS_HOME", "~/.hwnas")).expanduser()


def default_store_path() -> Path:
    return hwnas_home() / "measurements.db"


class FingerprintMismatch(ValueError):
    """A device name already stands for other measurement conditions."""


class StoreError(ValueError):
    """The store's file cannot be used (corrupt, not SQLite, read-only); names the path."""


class MeasurementStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(self.path), timeout=60)
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.executescript(SCHEMA)
            self._conn.commit()
            self._migrate()
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            # sqlite3 errors do not name the file: say which one and what to do
            raise StoreError(f"{self.path}: cannot open the measurement store ({exc}); if it is corrupt, "
                             "move it aside (its measurements are re-taken when needed)") from exc

    def _migrate(self) -> None:
        with self._conn:
            # BEGIN IMMEDIATE: two processes opening an old file migrate it once
            self._conn.execute("BEGIN IMMEDIATE")
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise ValueError(f"{self.path}: measurement store schema {version} is newer than this "
                                 f"hwnas understands ({SCHEMA_VERSION}); upgrade hwnas")
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[target]:
                    self._conn.execute(statement)
                self._conn.execute(f"PRAGMA user_version = {target}")

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "MeasurementStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # sources and devices -----------------------------------------------------------
    def register_source(self, key: str, description: Mapping[str, Any]) -> None:
        with self._conn:
            self._conn.execute("INSERT OR IGNORE INTO sources(key, description) VALUES (?, ?)",
                               (key, json.dumps(description, sort_keys=True)))

    def source_description(self, key: str) -> dict[str, Any] | None:
        row = self._conn.execute("SELECT description FROM sources WHERE key=?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def source_keys(self) -> list[str]:
        """Every registered source key (runners, predictors, accuracy estimators)."""
        return [r[0] for r in self._conn.execute("SELECT key FROM sources ORDER BY key")]

    def register_device(self, name: str, source_key: str, fingerprint: Mapping[str, Any]) -> None:
        """Bind ``name`` to one fingerprint; refuse to rebind it to another."""
        row = self._conn.execute("SELECT source_key, fingerprint FROM devices WHERE name=?",
                                 (name,)).fetchone()
        if row is not None:
            if row[0] != source_key:
                raise FingerprintMismatch(
                    f"device {name!r} is registered with fingerprint {row[1]}, which differs from "
                    f"{json.dumps(dict(fingerprint), sort_keys=True)}; use a new device name")
            return
        with self._conn:
            self._conn.execute("INSERT INTO devices(name, source_key, fingerprint, created) VALUES (?,?,?,?)",
                               (name, source_key, json.dumps(dict(fingerprint), sort_keys=True), time.time()))

    def device(self, name: str) -> tuple[str, dict[str, Any]] | None:
        row = self._conn.execute("SELECT source_key, fingerprint FROM devices WHERE name=?", (name,)).fetchone()
        return (row[0], json.loads(row[1])) if row else None

    def devices(self) -> list[str]:
        return [r[0] for r in self._conn.execute("SELECT name FROM devices ORDER BY name")]

    # results ---------------------------------------------------------------------------
    def get_many(self, source_key: str, space: str, archs: Iterable[str],
                 reliable_only: bool = True) -> dict[str, dict[str, float]]:
        """Stored metrics of ``archs`` (those present); unreliable rows only when asked."""
        archs = list(archs)
        found: dict[str, dict[str, float]] = {}
        only = " AND reliable=1" if reliable_only else ""
        for start in range(0, len(archs), 500):  # stay under SQLite's variable limit
            chunk = archs[start:start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._conn.execute(
                f"SELECT arch, metrics FROM results WHERE source_key=? AND space=? AND arch IN ({marks}){only}",
                (source_key, space, *chunk))
            found.update({arch: json.loads(m) for arch, m in rows})
        return found

    def put_many(self, source_key: str, space: str, results: Mapping[str, Mapping[str, float]],
                 meta: Mapping[str, Any] | None = None, reliable: bool = True) -> None:
        """Store ``{arch: metrics}`` in one transaction, with the batch's ``meta``."""
        now = time.time()
        blob = json.dumps(dict(meta or {}), sort_keys=True)
        with self._conn:
            self._conn.executemany(
                "INSERT OR REPLACE INTO results(source_key, space, arch, metrics, created, meta, reliable) "
                "VALUES (?,?,?,?,?,?,?)",
                [(source_key, space, arch, json.dumps(dict(m), sort_keys=True), now, blob, int(reliable))
                 for arch, m in results.items()])

    def all_results(self, source_key: str, space: str | None = None,
                    reliable_only: bool = True) -> list[tuple[str, str, dict, float]]:
        """``(space, arch, metrics, created)`` rows of one source, oldest first."""
        query = "SELECT space, arch, metrics, created FROM results WHERE source_key=?"
        params: tuple = (source_key,)
        if space is not None:
            query += " AND space=?"
            params += (space,)
        if reliable_only:
            query += " AND reliable=1"
        rows = self._conn.execute(query + " ORDER BY created, rowid", params)
        return [(s, a, json.loads(m), c) for s, a, m, c in rows]

    def row_meta(self, source_key: str, space: str, arch: str) -> tuple[dict[str, Any], bool] | None:
        """``(meta, reliable)`` of one stored row."""
        row = self._conn.execute("SELECT meta, reliable FROM results WHERE source_key=? AND space=? AND arch=?",
                                 (source_key, space, arch)).fetchone()
        return (json.loads(row[0]), bool(row[1])) if row else None

    def delete(self, source_key: str, space: str, archs: Iterable[str]) -> int:
        """Drop rows (``hwnas measure --verify --invalidate``); returns how many went."""
        with self._conn:
            return sum(self._conn.execute("DELETE FROM results WHERE source_key=? AND space=? AND arch=?",
                                          (source_key, space, a)).rowcount for a in archs)

    # anchors ---------------------------------------------------------------------------
    def anchors(self, source_key: str, space: str) -> dict[str, float]:
        """Reference latency of each anchor arch of a source (its quietest timing)."""
        rows = self._conn.execute("SELECT arch, latency_ms FROM anchors WHERE source_key=? AND space=?",
                                  (source_key, space))
        return dict(rows.fetchall())

    def set_anchors(self, source_key: str, space: str, values: Mapping[str, float]) -> None:
        now = time.time()
        with self._conn:
            self._conn.executemany(
                "INSERT OR REPLACE INTO anchors(source_key, space, arch, latency_ms, created) VALUES (?,?,?,?,?)",
                [(source_key, space, arch, float(v), now) for arch, v in values.items()])

    def count(self, source_key: str | None = None) -> int:
        if source_key is None:
            return self._conn.execute("SELECT COUNT(*) FROM results").fetchone()[0]
        return self._conn.execute("SELECT COUNT(*) FROM results WHERE source_key=?",
                                  (source_key,)).fetchone()[0]


# keys ------------------------------------------------------------------------------------
def space_key(space) -> str:
    """Store column for a space: its name plus the options that change built networks."""
    opts = space.network_options()
    return space.name if not opts else f"{space.name}{json.dumps(opts, sort_keys=True)}"


def source_key(payload: Mapping[str, Any]) -> str:
    """Short content hash of a source's fingerprint (the ``source_key`` column)."""
    return hashlib.sha1(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]
