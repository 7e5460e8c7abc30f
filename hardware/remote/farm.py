"""The ``farm`` runner: measure on device agents that pull jobs from the shared database.

``latency: {runner: farm, kind: pixel7, store: postgresql://hwnas@db.lab/hwnas}``

The search side of the pull farm (:mod:`hardware.remote.queue`).  Instead of
calling ``serve-device`` servers (the ``remote`` runner, which needs inbound
HTTP on every device), it writes each batch as a job into the ``jobs`` table
of the database ``store`` and waits for the device agents of device kind
``kind`` (``hwnas device-agent --store URL --device KIND``) to measure it.
Candidates are exported and linked exactly as :class:`~hardware.remote.client.RemoteRunner`
does (its export, size split and anchor linking are reused); a batch larger
than the agents' ``max_models`` becomes several jobs, each carrying the first
candidate as an anchor, so several agents of the kind measure one batch in
parallel.

The fingerprint is the one the kind's agents registered (a kind is bound to
one fingerprint); :meth:`FarmRunner.fingerprint` waits up to ``timeout_s`` for
a first agent.  While jobs are waiting the runner waits as long as some agent
of the kind keeps reporting; when none has reported for ``timeout_s`` it stops
with a message that says how to start one.  A job that failed (a model the
device refused, or one that failed ``max_attempts`` times) stops the
measurement with the device's own reason.

The anchors, drift check, measurement store and claims come from the
``runner`` latency source (:mod:`nas.sources.runner`) as for any runner.
(The option is ``kind``, not ``device``: ``device`` is the latency section's
own key, which binds a name to the measurement conditions.)
"""
from __future__ import annotations

import contextlib
import shlex
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from hardware.base import Runner
from hardware.protocol import Candidate, Measurement, Protocol
from hardware.remote.client import RemoteRunner, link_by_anchor, split_by_bytes
from hardware.remote.wire import RemoteError, encode_measure, fingerprint_from_dict

#: longest wait for the jobs of a batch between two looks at their progress and the agents
WAIT_WINDOW_S = 4.0


@dataclass(frozen=True)
class FarmOptions:
    """Options of the ``farm`` runner: exactly :class:`FarmRunner`'s keyword arguments, in order."""

    #: the device kind: the ``--device`` name its agents were started with
    kind: str = ""
    #: the shared database URL (postgresql://USER@HOST/DB; a SQLite file for one machine)
    store: str = ""
    threads: int | None = None
    batch_size: int = 1
    dtype: str | None = None
    opset: int = 17
    #: seconds to wait for a device agent to report before giving up
    timeout_s: float = 900.0
    #: first pause between two looks at the queue (grows to a few seconds)
    poll_s: float = 0.5

    def __post_init__(self):
        # checked here too, so a recipe's mistake is named with its key before anything runs
        _check(self.kind, self.store, self.timeout_s, self.poll_s)


def _check(kind: Any, store: Any, timeout_s: float, poll_s: float) -> None:
    if not isinstance(kind, str) or not kind:
        raise ValueError("runner 'farm' needs kind: the device kind its agents serve "
                         "(hwnas device-agent --device KIND)")
    if not isinstance(store, str) or not store:
        raise ValueError("runner 'farm' needs store: the database URL the device agents poll "
                         "(postgresql://USER@HOST/DATABASE)")
    if not float(timeout_s) > 0 or not float(poll_s) > 0:
        raise ValueError("runner 'farm': timeout_s and poll_s must be > 0")


class FarmRunner(Runner):
    """Client runner of the pull farm; see the module docstring."""

    name = "farm"
    Options = FarmOptions

    # the remote runner's export (dtype from the device, one export at a time) and its
    # fingerprint (the device's, with the exporting side's opset): the same candidate
    # bytes and the same conditions whichever way the models travel
    _export = RemoteRunner._export
    fingerprint = RemoteRunner.fingerprint

    def __init__(self, kind: str = "", store: str = "", threads: int | None = None, batch_size: int = 1,
                 dtype: str | None = None, opset: int = 17, timeout_s: float = 900.0, poll_s: float = 0.5):
        super().__init__(1, batch_size, dtype or "float32")
        _check(kind, store, timeout_s, poll_s)
        from hardware.remote.queue import JobQueue
        from hardware.store import MeasurementStore

        self.kind = kind
        self.store = MeasurementStore(store)
        self.queue = JobQueue(self.store)
        self.requested_threads = None if threads is None else int(threads)
        self.requested_dtype = dtype
        self.opset = int(opset)
        self.timeout_s = float(timeout_s)
        self.poll_s = float(poll_s)
        self._info: dict[str, Any] | None = None

    def _no_agent(self) -> RemoteError:
        return RemoteError(
            f"no device agent for device kind {self.kind!r} is alive (none has reported in the last "
            f"{self.timeout_s:g} s); start one on the device: hwnas device-agent --store "
            f"{shlex.quote(self.store.where)} --device {shlex.quote(self.kind)} --runner onnxruntime")

    def _server_info(self) -> dict[str, Any]:
        """The kind's agent ``/info`` answer at this batch size (the name RemoteRunner's reused
        methods call), with ``limits_min``: the tightest limits among the live agents."""
        if self._info is not None:
            return self._info
        deadline = time.monotonic() + self.timeout_s
        while True:
            alive = self.queue.alive_agents(self.kind, self.timeout_s)
            if alive:
                break
            if time.monotonic() >= deadline:
                raise self._no_agent()
            time.sleep(min(self.poll_s, max(0.0, deadline - time.monotonic())))
        info = dict(alive[0]["info"])
        fp = fingerprint_from_dict({**info["fingerprint"], "batch_size": self.batch_size})
        if self.requested_threads is not None and fp.threads != self.requested_threads:
            raise ValueError(f"runner 'farm': threads={self.requested_threads} requested but the agents of "
                             f"{self.kind!r} measure with {fp.threads}; restart them with --threads")
        if self.requested_dtype is not None and fp.dtype != self.requested_dtype:
            raise ValueError(f"runner 'farm': dtype={self.requested_dtype!r} requested but the agents of "
                             f"{self.kind!r} measure {fp.dtype!r}")
        limits = [a["info"]["limits"] for a in alive]
        info.update(fingerprint=fp.to_dict(), fingerprint_key=fp.key,
                    limits_min={k: min(lim[k] for lim in limits) for k in set.intersection(*map(set, limits))})
        self._info = info
        return info

    def measure_batch(self, candidates: Sequence[Candidate], protocol: Protocol,
                      rng: np.random.Generator, progress: Callable[[int], None] | None = None
                      ) -> dict[str, Measurement]:
        """Queue ``candidates`` as jobs of at most the agents' ``max_models`` (and request size),
        each one interleaved set under ``protocol``; wait for them and link them by their
        shared anchor when there are several (as :meth:`RemoteRunner.measure_batch`)."""
        info = self._server_info()
        limits = info["limits_min"]
        per_job = max(1, int(limits["max_models"]))
        max_bytes = int(limits["max_request_bytes"])
        anchor: Candidate | None = None
        rest = list(candidates)
        if len(candidates) > per_job >= 2:
            anchor, rest = candidates[0], list(candidates[1:])
            per_job -= 1
        models = [self._export(c) for c in rest]
        first = [self._export(anchor)] if anchor is not None else []
        budget = max_bytes - sum(len(m[1]) for m in first)
        requests = [first + group for start in range(0, len(models), per_job)
                    for group in split_by_bytes(models[start:start + per_job], budget)]
        seeds = [int(s) for s in rng.integers(0, 2 ** 62, size=len(requests))]
        ids = [self.queue.enqueue(self.kind, encode_measure(r, protocol, s)) for r, s in zip(requests, seeds)]
        sizes = {i: len(r) - len(first) for i, r in zip(ids, requests)}
        try:
            answers = self._wait(ids, progress, sizes, len(first))
        except BaseException:
            # nobody waits for them any more: an agent that comes later must not measure them
            from hardware.store import StoreError

            with contextlib.suppress(StoreError):
                self.queue.cancel(ids, "abandoned by the search that queued it")
            raise
        done = [{key: Measurement(float(m["latency_ms"]), float(m["spread"]), [float(x) for x in m["round_medians"]])
                 for key, m in answer["results"].items()} for answer in answers]
        results = link_by_anchor(done, None if anchor is None else anchor.key)
        missing = [c.key for c in candidates if c.key not in results]
        if missing:
            raise RemoteError(f"the device agents returned no result for {missing[:3]}")
        return results

    def _wait(self, ids: list[int], progress: Callable[[int], None] | None, sizes: dict[int, int],
              anchors: int) -> list[dict[str, Any]]:
        """The answers of jobs ``ids`` in order; raises on a failed job, a changed fingerprint,
        or when no agent of the kind has reported for ``timeout_s``."""
        key = self._server_info()["fingerprint_key"]
        seen: set[int] = set()
        while True:
            # short windows: progress is reported as jobs finish, and a failed job is seen soon
            rows = self.queue.wait(ids, min(self.timeout_s, WAIT_WINDOW_S), self.poll_s)
            for job_id in ids:
                row = rows[job_id]
                if row["state"] == "failed":
                    raise RemoteError(f"device kind {self.kind!r}: farm job {job_id} failed: {row['error']}")
                if row["state"] == "done" and job_id not in seen:
                    seen.add(job_id)
                    if row["answer"].get("fingerprint_key") != key:
                        raise RemoteError(f"device kind {self.kind!r}: an agent measured with another "
                                          f"fingerprint ({row['answer'].get('fingerprint')})", 409)
                    if progress is not None:
                        # the anchor rides in every job but counts once
                        progress(sizes[job_id] + (anchors if len(seen) == 1 else 0))
            if len(seen) == len(ids):
                return [rows[i]["answer"] for i in ids]
            last = self.queue.last_report(self.kind)
            if not self.queue.alive_agents(self.kind) and (last is None or time.time() - last > self.timeout_s):
                raise self._no_agent()

    def close(self) -> None:
        self.store.close()

