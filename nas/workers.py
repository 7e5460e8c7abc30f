"""Several ``hwnas search`` workers on one study: Optuna's RDB storage with heartbeats.

Starting ``hwnas search RECIPE`` N times against one ``search.storage:
postgresql://...`` makes N cooperating workers of one study, the way Optuna
distributes ``study.optimize``:

* **Heartbeats.** Each worker records a heartbeat for every trial it runs
  (:class:`TrialHeartbeats`, one thread) every ``search.heartbeat.interval_s``.
  A trial whose heartbeat is older than ``grace_s`` belongs to a dead worker:
  Optuna's ``fail_stale_trials`` marks it FAIL and :func:`retry_callback`
  enqueues it again (at most ``retries`` times), and a live worker's trials
  are never touched.
* **Exact budget.** Proposing is serialised across workers by a PostgreSQL
  advisory lock (:func:`proposal_lock`): under it a worker counts the study's
  complete and running trials and asks for at most what is left of
  ``search.trials``, so the completed trials equal the budget, never N times it.
  Proposals cost milliseconds; evaluations (the expensive part) run outside it.
* **Measure once.** Architectures are claimed in the measurement store before
  they are computed (``MeasurementStore.claim``), so one arch is measured by one
  worker while the others wait for its row.

SQLite is for one process: :class:`RunLock` holds an advisory lock on the study
file for the whole run and refuses a second process with a message pointing to
PostgreSQL.  (SQLite's locking serialises writers but cannot tell a live
worker from a dead one, so the single process recovers interrupted trials at
start instead of waiting for heartbeats.)
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import threading
import warnings
import zlib
from pathlib import Path
from typing import Iterator

import optuna
import sqlalchemy as sa
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from hardware.store import redact, store_url
from nas.recipe import HeartbeatSection, RecipeError

#: the advisory-lock key of a study's proposals (one per study name)
_LOCK_NAMESPACE = 0x68776E


def is_shared(url: str | None) -> bool:
    """Whether a study storage URL is a server several workers can share (not SQLite, not memory)."""
    return url is not None and not url.startswith("sqlite")


def open_storage(url: str, heartbeat: HeartbeatSection) -> optuna.storages.BaseStorage:
    """Optuna storage for ``url``; a shared server gets heartbeats and the retry callback."""
    url = store_url(url)
    if not is_shared(url):
        return optuna.storages.get_storage(url)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = optuna.storages.RDBStorage(
            url, heartbeat_interval=max(1, round(heartbeat.interval_s)),
            grace_period=max(1, round(heartbeat.grace_s)),
            heartbeat_stale_trial_callback=retry_callback(heartbeat.retries))
    return optuna.storages.get_storage(storage)


def retry_callback(retries: int) -> RetryHeartbeatStaleTrialCallback:
    """Re-enqueues a failed (dead worker's, interrupted) trial with its parameters; each
    original trial is retried at most ``retries`` times."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RetryHeartbeatStaleTrialCallback(max_retry=retries)


def retried_from(trial: FrozenTrial | optuna.Trial) -> int | None:
    """The number of the trial ``trial`` retries (Optuna's retry callback records it), or ``None``."""
    attrs = trial.system_attrs if isinstance(trial, FrozenTrial) else trial.study._storage.get_trial_system_attrs(
        trial._trial_id)
    return attrs.get("failed_trial")


def fail_and_retry(study: optuna.Study, trials: list[FrozenTrial], retries: int) -> int:
    """Mark ``trials`` FAIL and enqueue their retries; returns how many were failed here
    (another worker may have got there first)."""
    failed = set()
    for trial in trials:
        try:
            study.tell(trial.number, state=TrialState.FAIL)
        except (optuna.exceptions.UpdateFinishedTrialError, ValueError):
            continue
        failed.add(trial.number)
    if failed:
        # the callback copies the failed trial as stored (its FAIL state and attributes): one read for all
        callback = retry_callback(retries)
        for trial in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
            if trial.number in failed:
                callback(study, trial)
    return len(failed)


def fail_stale_trials(study: optuna.Study) -> None:
    """Optuna's stale-trial check (heartbeats older than the grace period), quietly."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


class TrialHeartbeats:
    """One thread recording heartbeats for every trial this worker is running."""

    def __init__(self, storage: optuna.storages.BaseStorage, interval_s: float):
        self.storage = storage
        self.interval_s = interval_s
        self.enabled = optuna.storages._heartbeat.is_heartbeat_enabled(storage)
        self._trials: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, trial_ids: list[int]) -> None:
        if not self.enabled:
            return
        with self._lock:
            self._trials.update(trial_ids)
        for trial_id in trial_ids:  # at once: a trial without a heartbeat never goes stale
            self.storage.record_heartbeat(trial_id)

    def remove(self, trial_ids: list[int]) -> None:
        with self._lock:
            self._trials.difference_update(trial_ids)

    def running(self) -> list[int]:
        with self._lock:
            return sorted(self._trials)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval_s):
            for trial_id in self.running():
                try:
                    self.storage.record_heartbeat(trial_id)
                except Exception:  # noqa: BLE001 - a passing outage: the grace period decides
                    pass

    def __enter__(self) -> "TrialHeartbeats":
        if self.enabled:
            self._thread = threading.Thread(target=self._beat, name="hwnas-heartbeat", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


@contextlib.contextmanager
def proposal_lock(url: str | None, study_name: str) -> Iterator[None]:
    """Serialise proposals of one study across workers: a PostgreSQL advisory lock held
    on its own connection (released by the server if the worker dies); nothing for a
    single-process storage."""
    if not is_shared(url):
        yield
        return
    engine = _lock_engine(store_url(url))
    key = _LOCK_NAMESPACE * 2**24 + (hash_name(study_name) % 2**24)
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": key})
        try:
            yield
        finally:
            conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            conn.commit()


_ENGINES: dict[str, sa.Engine] = {}


def _lock_engine(url: str) -> sa.Engine:
    # one small pool per process and URL: the lock is taken once per batch
    if url not in _ENGINES:
        _ENGINES[url] = sa.create_engine(url, pool_size=1, max_overflow=0, pool_pre_ping=True)
    return _ENGINES[url]


def hash_name(name: str) -> int:
    """A stable integer for a name (``hash`` is salted per process)."""
    return zlib.crc32(name.encode())


class RunLock:
    """An advisory lock on a SQLite study for the lifetime of a run: a second process
    on the same study is refused (SQLite serves one worker; several need PostgreSQL)."""

    def __init__(self, study_file: Path):
        self.path = study_file.with_name(study_file.name + ".lock")
        self._file = None

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise RecipeError(
                f"{self.path.parent}: this run is in use by {holder}; its SQLite study serves one process. "
                f"To run several workers on one study, give every worker the same "
                f"search.storage: postgresql://USER@HOST/DATABASE (see README, 'Scaling out')") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"hwnas search pid {os.getpid()} on {socket.gethostname()}")
        handle.flush()
        self._file = handle
        return self

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def describe_storage(url: str | None) -> str:
    return "in-memory study" if url is None else redact(url)
