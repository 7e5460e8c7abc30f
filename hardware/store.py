"""SQLite measurement store: nothing is measured twice across runs.

Results are keyed by ``(source key, space, canonical arch string)``.  The
source key is a hash of the measurement conditions (a runner's device
fingerprint plus protocol, or an accuracy estimator's settings), so numbers
taken under different conditions never mix.  Device names map to exactly one
fingerprint: registering a second fingerprint under a known name is refused.

WAL journaling lets a search process write while a dashboard or a second
process reads; every ``put_many`` is one transaction, so a killed process
loses at most the batch it was writing.
"""
from __future__ import annotations

import json
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


class FingerprintMismatch(ValueError):
    """A device name already stands for other measurement conditions."""


class MeasurementStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(self.path), timeout=60)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.executescript(SCHEMA)
        self._conn.commit()

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
    def get_many(self, source_key: str, space: str, archs: Iterable[str]) -> dict[str, dict[str, float]]:
        archs = list(archs)
        found: dict[str, dict[str, float]] = {}
        for start in range(0, len(archs), 500):  # stay under SQLite's variable limit
            chunk = archs[start:start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._conn.execute(
                f"SELECT arch, metrics FROM results WHERE source_key=? AND space=? AND arch IN ({marks})",
                (source_key, space, *chunk))
            found.update({arch: json.loads(m) for arch, m in rows})
        return found

    def put_many(self, source_key: str, space: str, results: Mapping[str, Mapping[str, float]]) -> None:
        now = time.time()
        with self._conn:
            self._conn.executemany(
                "INSERT OR REPLACE INTO results(source_key, space, arch, metrics, created) VALUES (?,?,?,?,?)",
                [(source_key, space, arch, json.dumps(dict(m), sort_keys=True), now)
                 for arch, m in results.items()])

    def all_results(self, source_key: str, space: str | None = None) -> list[tuple[str, str, dict, float]]:
        """``(space, arch, metrics, created)`` rows of one source, oldest first."""
        query = "SELECT space, arch, metrics, created FROM results WHERE source_key=?"
        params: tuple = (source_key,)
        if space is not None:
            query += " AND space=?"
            params += (space,)
        rows = self._conn.execute(query + " ORDER BY created, rowid", params)
        return [(s, a, json.loads(m), c) for s, a, m, c in rows]

    def count(self, source_key: str | None = None) -> int:
        if source_key is None:
            return self._conn.execute("SELECT COUNT(*) FROM results").fetchone()[0]
        return self._conn.execute("SELECT COUNT(*) FROM results WHERE source_key=?",
                                  (source_key,)).fetchone()[0]
