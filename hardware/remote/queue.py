"""The pull farm's queue: measurement jobs and device agents in the shared database.

``serve-device`` needs inbound HTTP, which a phone or a board behind NAT cannot
accept.  In the pull farm the device side connects out instead: a *device
agent* (:mod:`hardware.remote.agent`, ``hwnas device-agent``) on each device
takes jobs from the ``jobs`` table of the measurement store
(:mod:`hardware.store`; PostgreSQL when the devices and the search are on
different machines) and writes the answers back; the ``farm`` runner
(:mod:`hardware.remote.farm`) enqueues and waits.

A job is one batch: ``request`` is exactly the body a ``serve-device`` gets on
``POST /measure`` (:func:`hardware.remote.wire.encode_measure`) and ``answer``
exactly its JSON reply, so the agent runs it through the very checks and
sandbox serve-device uses.  States: ``queued`` -> ``running`` (leased by one
agent until ``lease_until``, renewed while it measures) -> ``done`` | ``failed``.

Exactly once: :meth:`JobQueue.lease` takes the oldest queued job, or a running
one whose lease ran out (its agent died), under ``SELECT ... FOR UPDATE SKIP
LOCKED`` on PostgreSQL (two agents never take the same row, and neither waits
for the other); on SQLite the store's ``BEGIN IMMEDIATE`` transactions
serialise instead.  :meth:`JobQueue.complete` and :meth:`JobQueue.fail` only
take effect while the calling agent still holds the lease (``UPDATE ... WHERE
agent = ? AND state = 'running'``), so an agent that lost its lease cannot
overwrite the result of the agent that took the job over.

A job whose measurement fails ``max_attempts`` times, or whose agent dies
while measuring it that often (a model that crashes the device), ends
``failed`` with the reason; a refusal that no retry can change (a malformed
request or a model the validation refuses) ends it at once.

A device kind (``--device pixel7``) binds to one fingerprint the first time an
agent registers under it (the store's ``devices`` table, as name
``farm:KIND``); an agent with another fingerprint under that kind is refused
with :class:`~hardware.store.FingerprintMismatch` naming the kind.
"""
from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import sqlalchemy as sa

from hardware.store import FingerprintMismatch, MeasurementStore, agents, jobs

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
FINISHED = (DONE, FAILED)
#: how often an agent reports (and renews its job's lease, if that is sooner)
HEARTBEAT_S = 5.0
#: an agent that has not reported for this long counts as gone
STALE_S = 6 * HEARTBEAT_S
#: longest sleep of :meth:`JobQueue.wait` between two looks at the table
MAX_POLL_S = 2.0
#: prefix of a device kind's row in the store's ``devices`` table (kept apart from the
#: names the ``runner`` latency source binds, which include the protocol)
DEVICE_PREFIX = "farm:"


@dataclass(frozen=True)
class Job:
    """A leased job: what the agent measures."""

    id: int
    request: bytes
    attempts: int


class JobQueue:
    """Jobs and agents of the pull farm in one :class:`MeasurementStore`."""

    def __init__(self, store: MeasurementStore, max_attempts: int = 3):
        if int(max_attempts) < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        self.store = store
        self.max_attempts = int(max_attempts)

    # search side -----------------------------------------------------------------------
    def enqueue(self, device: str, request: bytes) -> int:
        """Queue one batch (a ``POST /measure`` body) for ``device``; returns the job id."""
        with self.store.errors("cannot queue a measurement job"), self.store.engine.begin() as conn:
            result = conn.execute(jobs.insert().values(device=device, request=bytes(request), state=QUEUED,
                                                       attempts=0, created=time.time()))
            return int(result.inserted_primary_key[0])

    def jobs(self, job_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
        """``{id: {state, answer (decoded), error, attempts, agent}}`` of ``job_ids``."""
        ids = [int(i) for i in job_ids]
        columns = (jobs.c.id, jobs.c.state, jobs.c.answer, jobs.c.error, jobs.c.attempts, jobs.c.agent)
        with self.store.errors("cannot read measurement jobs"), self.store.engine.connect() as conn:
            rows = conn.execute(sa.select(*columns).where(jobs.c.id.in_(ids))).all()
        return {r.id: {"state": r.state, "answer": json.loads(r.answer) if r.answer is not None else None,
                       "error": r.error, "attempts": r.attempts, "agent": r.agent} for r in rows}

    def wait(self, job_ids: Iterable[int], timeout_s: float, poll_s: float = 0.5) -> dict[int, dict[str, Any]]:
        """The rows of ``job_ids`` once all are finished, or as they are after ``timeout_s``
        (the caller looks at the states).  Polls with sleeps growing from ``poll_s`` to
        :data:`MAX_POLL_S`: a long wait costs the database little, a short one stays quick."""
        ids = [int(i) for i in job_ids]
        deadline = time.monotonic() + max(0.0, float(timeout_s))
        pause = max(0.01, float(poll_s))
        while True:
            rows = self.jobs(ids)
            if all(rows.get(i, {}).get("state") in FINISHED for i in ids):
                return rows
            left = deadline - time.monotonic()
            if left <= 0:
                return rows
            time.sleep(min(pause, left))
            pause = min(pause * 1.5, max(MAX_POLL_S, poll_s))

    def cancel(self, job_ids: Iterable[int], reason: str) -> int:
        """End the still-queued jobs among ``job_ids`` as ``failed`` with ``reason`` (their
        search gave up on them); returns how many.  Running ones finish and are ignored."""
        ids = [int(i) for i in job_ids]
        with self.store.errors("cannot cancel measurement jobs"), self.store.engine.begin() as conn:
            return conn.execute(jobs.update().where(jobs.c.id.in_(ids), jobs.c.state == QUEUED).values(
                state=FAILED, error=str(reason), finished=time.time())).rowcount

    # agent side ------------------------------------------------------------------------
    def lease(self, agent_id: str, device: str, lease_s: float) -> Job | None:
        """Claim the oldest job of ``device`` that is queued or whose lease ran out, for
        ``lease_s`` seconds; ``None`` when there is none."""
        with self.store.errors("cannot lease a measurement job"), self.store.engine.begin() as conn:
            while True:
                now = time.time()
                row = conn.execute(
                    sa.select(jobs.c.id, jobs.c.request, jobs.c.state, jobs.c.attempts)
                    .where(jobs.c.device == device,
                           sa.or_(jobs.c.state == QUEUED,
                                  sa.and_(jobs.c.state == RUNNING, jobs.c.lease_until < now)))
                    .order_by(jobs.c.id).limit(1)
                    .with_for_update(skip_locked=True)).first()
                if row is None:
                    return None
                if row.state == RUNNING and row.attempts >= self.max_attempts:
                    # its agents kept dying on it: most likely the model takes the device down
                    conn.execute(jobs.update().where(jobs.c.id == row.id).values(
                        state=FAILED, finished=now, lease_until=None,
                        error=f"the device agent measuring it stopped reporting {row.attempts} times "
                              f"(the model may crash the device); not retried"))
                    continue
                conn.execute(jobs.update().where(jobs.c.id == row.id).values(
                    state=RUNNING, agent=agent_id, lease_until=now + float(lease_s),
                    attempts=jobs.c.attempts + 1))
                return Job(int(row.id), bytes(row.request), int(row.attempts) + 1)

    def _held(self, job_id: int, agent_id: str):
        return sa.and_(jobs.c.id == int(job_id), jobs.c.agent == agent_id, jobs.c.state == RUNNING)

    def renew(self, job_id: int, agent_id: str, lease_s: float) -> bool:
        """Extend the lease; False when the agent no longer holds the job."""
        with self.store.errors("cannot renew a job lease"), self.store.engine.begin() as conn:
            return conn.execute(jobs.update().where(self._held(job_id, agent_id))
                                .values(lease_until=time.time() + float(lease_s))).rowcount == 1

    def complete(self, job_id: int, agent_id: str, answer: Mapping[str, Any]) -> bool:
        """Store the answer; False (nothing written) when the agent lost the lease meanwhile."""
        with self.store.errors("cannot complete a measurement job"), self.store.engine.begin() as conn:
            return conn.execute(jobs.update().where(self._held(job_id, agent_id)).values(
                state=DONE, answer=json.dumps(dict(answer)), error=None, lease_until=None,
                finished=time.time())).rowcount == 1

    def fail(self, job_id: int, agent_id: str, error: str, final: bool = False) -> bool:
        """Record a failed measurement: the job ends ``failed`` with ``error`` when ``final``
        or after ``max_attempts`` tries, otherwise it is queued again (another agent, or a
        quieter moment, may manage).  False when the agent lost the lease meanwhile."""
        held = self._held(job_id, agent_id)
        give_up = sa.true() if final else jobs.c.attempts >= self.max_attempts
        with self.store.errors("cannot fail a measurement job"), self.store.engine.begin() as conn:
            return conn.execute(jobs.update().where(held).values(
                state=sa.case((give_up, FAILED), else_=QUEUED),
                finished=sa.case((give_up, time.time()), else_=None),
                agent=sa.case((give_up, jobs.c.agent), else_=None),
                error=str(error), lease_until=None)).rowcount == 1

    def release(self, job_id: int, agent_id: str) -> bool:
        """Put a leased, unfinished job back (the agent is stopping); the try does not count."""
        with self.store.errors("cannot release a measurement job"), self.store.engine.begin() as conn:
            return conn.execute(jobs.update().where(self._held(job_id, agent_id)).values(
                state=QUEUED, agent=None, lease_until=None, attempts=jobs.c.attempts - 1)).rowcount == 1

    # agents ----------------------------------------------------------------------------
    def register_agent(self, agent_id: str, device: str, info: Mapping[str, Any]) -> None:
        """Record an agent serving ``device``; ``info`` is its ``serve-device`` ``/info``
        answer (fingerprint, fingerprint_key, limits, runner).  Refuses a fingerprint that
        differs from the one the device kind is bound to."""
        fingerprint = dict(info["fingerprint"])
        try:
            self.store.register_device(DEVICE_PREFIX + device, str(info["fingerprint_key"]), fingerprint)
        except FingerprintMismatch:
            bound = self.store.device(DEVICE_PREFIX + device)
            raise FingerprintMismatch(
                f"device kind {device!r} is served by agents measuring {json.dumps(bound[1], sort_keys=True)}; "
                f"this agent measures {json.dumps(fingerprint, sort_keys=True)}; start it with another "
                f"--device name (or the same runner options as the others)") from None
        now = time.time()
        row = {"id": agent_id, "device": device, "fingerprint": json.dumps(dict(info), sort_keys=True),
               "host": socket.gethostname(), "pid": os.getpid(), "started": now, "heartbeat": now,
               "stopped": None}
        statement = self.store._insert(agents)
        with self.store.errors("cannot register a device agent"), self.store.engine.begin() as conn:
            conn.execute(statement.on_conflict_do_update(
                index_elements=["id"], set_={k: statement.excluded[k] for k in row if k != "id"}), row)

    def heartbeat(self, agent_id: str) -> None:
        with self.store.errors("cannot record a heartbeat"), self.store.engine.begin() as conn:
            conn.execute(agents.update().where(agents.c.id == agent_id).values(heartbeat=time.time()))

    def stop_agent(self, agent_id: str) -> None:
        now = time.time()
        with self.store.errors("cannot record a stopped agent"), self.store.engine.begin() as conn:
            conn.execute(agents.update().where(agents.c.id == agent_id).values(heartbeat=now, stopped=now))

    def alive_agents(self, device: str, within_s: float = STALE_S) -> list[dict[str, Any]]:
        """Running agents of ``device`` that reported in the last ``within_s`` seconds, newest
        first: ``{id, host, pid, heartbeat, info}`` (``info``: their ``/info`` answer)."""
        with self.store.errors("cannot read device agents"), self.store.engine.connect() as conn:
            rows = conn.execute(sa.select(agents).where(
                agents.c.device == device, agents.c.stopped.is_(None),
                agents.c.heartbeat >= time.time() - float(within_s)).order_by(agents.c.heartbeat.desc())).all()
        return [{"id": r.id, "host": r.host, "pid": r.pid, "heartbeat": r.heartbeat,
                 "info": json.loads(r.fingerprint)} for r in rows]

    def last_report(self, device: str) -> float | None:
        """When an agent of ``device`` last reported (a heartbeat or its stop), or None."""
        with self.store.errors("cannot read device agents"), self.store.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.max(agents.c.heartbeat))
                                .where(agents.c.device == device)).scalar()
