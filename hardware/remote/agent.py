"""The device agent of the pull farm: ``hwnas device-agent`` / ``python -m hardware.remote.agent``.

It runs on the device (a phone, a board, a server behind NAT) and needs no
inbound connection: it connects out to the shared database (``--store``, the
PostgreSQL the search uses; see :mod:`hardware.remote.queue`), registers under
a device kind (``--device``, default the host name) with the fingerprint of
its runner, and then, one job at a time: leases the oldest job of its kind,
measures it, writes the answer back, and sleeps ``--poll-s`` when the queue is
empty.  A background thread reports a heartbeat and renews the lease of the
job being measured, so a long measurement keeps its job while a dead agent
loses it after ``--lease-s`` and another agent (or this one, restarted) takes
it over.

A job's request is a ``serve-device`` ``POST /measure`` body, and it goes
through serve-device's own path (:meth:`hardware.remote.server.DeviceServer.run_measure`):
the same bound checks, the same model validation in the same sandboxed,
limited child process (:mod:`hardware.remote.sandbox`), the same answer and
the same error sentences.  A refused or failed model fails its job with that
sentence and the agent serves on.

SIGTERM or SIGINT: the agent puts a leased, unfinished job back in the queue
(it does not count as a try), marks itself stopped and exits 0.

Like ``serve-device`` it never imports torch; it needs ``sqlalchemy`` (and
``psycopg`` for PostgreSQL) besides ONNX Runtime: ``pip install './device[agent]'``.
"""
from __future__ import annotations

import argparse
import copy
import signal
import socket
import sys
import threading
import time
from typing import Any, Callable, Mapping

from hardware.remote.queue import HEARTBEAT_S, Job, JobQueue
from hardware.remote.sandbox import Sandbox
from hardware.remote.server import DeviceServer, _key_values, add_serve_arguments, limits_from_args
from hardware.remote.wire import Limits, RequestError, fingerprint_from_dict
from hardware.store import MeasurementStore, StoreError

#: serve-device options that also apply to an agent (the runner and the request limits;
#: not the HTTP, TLS and token ones)
SHARED_OPTIONS = ("runner", "threads", "dtype", "runner_option", "max_request_mb", "max_models",
                  "max_measure_s", "max_memory_mb", "max_cpu_s")
#: help of the shared options that add_serve_arguments leaves without one (every hwnas option has help)
MISSING_HELP = {"runner": "runner that measures the models (default onnxruntime)",
                "threads": "inference threads (default 1)", "dtype": "inference dtype (default float32)",
                "runner_option": "extra runner option, JSON value or plain text (repeatable)",
                "max_request_mb": "largest job request accepted, MiB (default 256)",
                "max_models": "most models per job (default 16)",
                "max_measure_s": "wall-clock seconds per job", "max_memory_mb": "memory of the measuring process",
                "max_cpu_s": "CPU seconds per job"}
#: refusals no retry can change (a malformed request, a model the validation refuses)
FINAL_STATUSES = (400, 413)


class _Stop(BaseException):
    """Raised in the main thread by SIGTERM/SIGINT while a measurement runs."""


class HeadlessDevice(DeviceServer):
    """serve-device's measuring side without its HTTP server: the sandbox, the lock and
    :meth:`DeviceServer.run_measure` (checks, validation, limits, answer) are inherited
    unchanged, so a job is measured exactly as a ``POST /measure`` would be."""

    def __init__(self, runner: str, runner_options: Mapping[str, Any], limits: Limits,
                 log: Callable[[str], None] | None = None):
        # DeviceServer.__init__ also binds a socket and needs a token; neither applies here
        self.limits = limits
        self.runner_name = runner
        self.lock = threading.Lock()
        self.log = log or (lambda message: None)
        self.sandbox = Sandbox(runner, runner_options, limits, self.log)
        self.base_fingerprint = fingerprint_from_dict(self.sandbox.fingerprint)

    def measure(self, body: bytes) -> dict[str, Any]:
        """The ``POST /measure`` answer for ``body``, or raises :class:`RequestError`."""
        if len(body) > self.limits.max_request_bytes:  # the HTTP handler checks this before run_measure
            raise RequestError(413, f"request of {len(body)} bytes exceeds the limit of "
                                    f"{self.limits.max_request_bytes} bytes")
        return self.run_measure(body)

    def close(self) -> None:
        self.sandbox.close()


class Agent:
    """One device agent: registered in ``store`` under ``device`` until :meth:`close`."""

    def __init__(self, store: str, device: str, runner: str = "onnxruntime",
                 runner_options: Mapping[str, Any] | None = None, limits: Limits = Limits(),
                 lease_s: float = 60.0, poll_s: float = 2.0, max_attempts: int = 3,
                 log: Callable[[str], None] | None = None):
        if lease_s <= 0 or poll_s <= 0:
            raise ValueError("device-agent: --lease-s and --poll-s must be > 0")
        if not device:
            raise ValueError("device-agent: --device must not be empty")
        self.log = log or (lambda message: None)
        self.device_kind = device
        self.lease_s = float(lease_s)
        self.poll_s = float(poll_s)
        self.store = MeasurementStore(store)
        self.id = self.store.owner
        self._stop = threading.Event()
        self._current: Job | None = None
        self._measuring = False
        self._beating: threading.Thread | None = None
        try:
            self.queue = JobQueue(self.store, max_attempts)
            self.device = HeadlessDevice(runner, runner_options or {}, limits, self.log)
        except BaseException:
            self.store.close()
            raise
        try:
            self.queue.register_agent(self.id, device, self.device.info(1))
        except BaseException:
            self.device.close()
            self.store.close()
            raise

    def describe(self) -> str:
        return f"{self.device.base_fingerprint.describe()} as device kind {self.device_kind!r}"

    # heartbeat and lease renewal --------------------------------------------------------
    def _beat(self) -> None:
        interval = min(HEARTBEAT_S, self.lease_s / 3)
        while not self._stop.wait(interval):
            try:
                self.queue.heartbeat(self.id)
                job = self._current
                if job is not None and not self.queue.renew(job.id, self.id, self.lease_s):
                    self.log(f"job {job.id}: lease lost (another agent took it over); its result will be dropped")
            except StoreError as exc:  # a passing outage: the next beat or the lease decides
                self.log(f"heartbeat failed: {exc}")

    # the loop ----------------------------------------------------------------------------
    def run(self, max_jobs: int | None = None) -> int:
        """Serve jobs until :meth:`stop` (or a signal) or ``max_jobs`` handled; returns how many."""
        self._beating = threading.Thread(target=self._beat, name="hwnas-agent-heartbeat", daemon=True)
        self._beating.start()
        handled = 0
        try:
            while not self._stop.is_set() and (max_jobs is None or handled < max_jobs):
                try:
                    job = self.queue.lease(self.id, self.device_kind, self.lease_s)
                except StoreError as exc:
                    self.log(f"cannot lease a job: {exc}; retrying in {self.poll_s:g} s")
                    job = None
                if job is None:
                    self._stop.wait(self.poll_s)
                    continue
                self._current = job
                if self._stop.is_set():  # signalled while leasing: the finally puts it back
                    break
                self._serve(job)
                self._current = None
                handled += 1
        except _Stop:
            pass
        finally:
            self._stop.set()
            job, self._current = self._current, None
            try:
                if job is not None and self.queue.release(job.id, self.id):
                    self.log(f"job {job.id}: put back in the queue")
                self.queue.stop_agent(self.id)
            except StoreError as exc:  # its lease runs out instead
                self.log(f"could not sign off: {exc}")
        return handled

    def _serve(self, job: Job) -> None:
        started = time.monotonic()
        self._measuring = True
        try:
            if self._stop.is_set():  # signalled just before: do not start a measurement
                raise _Stop()
            answer = self.device.measure(job.request)
        except RequestError as exc:
            self._measuring = False
            final = exc.status in FINAL_STATUSES
            recorded = self._record(job, self.queue.fail, job.id, self.id, exc.reason, final)
            print(f"job {job.id}: {'failed' if recorded else 'dropped (lease lost)'} "
                  f"(HTTP {exc.status}: {exc.reason})", flush=True)
            return
        except Exception as exc:  # noqa: BLE001 - one bad job must never stop the agent
            self._measuring = False
            self.log(f"job {job.id}: internal error: {type(exc).__name__}: {exc}")
            self._record(job, self.queue.fail, job.id, self.id,
                         "internal error on the device agent (details are in its log)")
            return
        finally:
            self._measuring = False
        recorded = self._record(job, self.queue.complete, job.id, self.id, answer)
        print(f"job {job.id}: {'done' if recorded else 'dropped (lease lost)'} "
              f"({len(answer['results'])} model(s), {time.monotonic() - started:.1f} s, "
              f"attempt {job.attempts})", flush=True)

    def _record(self, job: Job, write: Callable[..., bool], *args) -> bool:
        try:
            return write(*args)
        except StoreError as exc:  # its lease runs out and another agent measures it again
            self.log(f"job {job.id}: cannot record the result: {exc}")
            return False

    def stop(self) -> None:
        """Stop after the current job (from another thread); see :meth:`interrupt` for signals."""
        self._stop.set()

    def interrupt(self, signum=None, frame=None) -> None:
        """Signal handler: stop now; a measurement in progress is abandoned and its job put back."""
        self._stop.set()
        if self._measuring:
            raise _Stop()

    def close(self) -> None:
        self._stop.set()
        if self._beating is not None:
            self._beating.join(timeout=HEARTBEAT_S * 2)
        self.device.close()
        self.store.close()

    def __enter__(self) -> "Agent":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --- command line -----------------------------------------------------------------------------
def add_agent_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``hwnas device-agent`` and ``python -m hardware.remote.agent``: serve-device's
    runner and limit options (taken from :func:`add_serve_arguments`, so they stay the same) plus
    the queue's."""
    serve = argparse.ArgumentParser(add_help=False)
    add_serve_arguments(serve)
    for action in serve._actions:
        if action.dest in SHARED_OPTIONS:
            action = copy.copy(action)
            action.help = action.help or MISSING_HELP[action.dest]
            parser._add_action(action)
    # limits_from_args reads these HTTP limits too; an agent has no connections to bound
    defaults = Limits()
    parser.set_defaults(max_connections=defaults.max_connections, handshake_timeout_s=defaults.max_handshake_s)
    parser.add_argument("--store", required=True,
                        help="the shared database the search queues jobs in: postgresql://USER@HOST/DB "
                             "(password from ~/.pgpass or $PGPASSWORD) or a SQLite file on this machine")
    parser.add_argument("--device", default=socket.gethostname(),
                        help="the device kind this agent serves; recipes name it as the farm runner's "
                             "'kind' (default: the host name)")
    parser.add_argument("--lease-s", type=float, default=60.0,
                        help="a job whose agent stops reporting for this long goes to another agent "
                             "(default 60)")
    parser.add_argument("--poll-s", type=float, default=2.0, help="pause when the queue is empty (default 2)")
    parser.add_argument("--max-attempts", type=int, default=3,
                        help="tries of a job before it ends failed (default 3)")
    parser.add_argument("--max-jobs", type=int, default=None, help="exit after this many jobs (default: never)")


def agent_from_args(args: argparse.Namespace, runner_options: Mapping[str, Any] | None = None) -> int:
    """Run the agent as the parsed options say until signalled (or ``--max-jobs``)."""
    options = {"threads": args.threads, "dtype": args.dtype,
               **(runner_options if runner_options is not None else _key_values(args.runner_option))}

    def log(message: str) -> None:
        print(f"[device-agent {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    if args.max_jobs is not None and args.max_jobs < 1:
        raise ValueError("device-agent: --max-jobs must be >= 1")
    agent = Agent(args.store, args.device, args.runner, options, limits_from_args(args), args.lease_s,
                  args.poll_s, args.max_attempts, log)
    previous = {}
    try:
        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                previous[signum] = signal.signal(signum, agent.interrupt)
            except ValueError:  # not the main thread: the caller handles its own signals
                pass
        print(f"agent {agent.id} serving {agent.describe()} from {agent.store.where}", flush=True)
        handled = agent.run(args.max_jobs)
        print(f"agent {agent.id} stopped after {handled} job(s)", flush=True)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        agent.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m hardware.remote.agent``: the device agent without the rest of hwnas."""
    parser = argparse.ArgumentParser(prog="hwnas-device-agent",
                                     description="Measure jobs of hwnas' 'farm' runner taken from the shared "
                                                 "database. Needs onnxruntime, onnx, numpy and sqlalchemy.")
    add_agent_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return agent_from_args(args)
    except ValueError as exc:  # bad options, a fingerprint the kind is not bound to, an unusable store
        print(f"hwnas-device-agent: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
