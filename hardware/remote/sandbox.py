"""The serving process's side of the measuring child (:mod:`hardware.remote.worker`).

:class:`Sandbox` keeps one child warm: started with the server, reused for
every request (so a request pays no interpreter or runtime start-up), and
restarted in the background after it is killed or dies.  Each child runs in a
fresh, empty scratch folder (its working directory, removed when it ends), so
a runtime that resolves a relative path finds nothing.

While a job runs the serving thread waits on the child's answer and, every
0.1 s, checks the wall clock (kill past ``max_measure_s`` + :data:`GRACE_S`)
and the child's resident memory (kill past ``max_memory_mb``; this is the
memory limit for GPU runners, whose address space cannot be capped).  A child
that dies of ``SIGXCPU`` ran past its CPU-time limit.  Every such end becomes
a 422 whose reason says which limit was hit; the device is free again as soon
as the replacement child is up (about the time of one ``import onnxruntime``).
"""
from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Mapping

from hardware.remote.wire import TOKEN_ENV, Limits, RequestError

#: seconds past max_measure_s before the child is killed (it normally stops itself at the cap)
GRACE_S = 1.0
#: seconds a new child may take to import its runtime and build the backend
STARTUP_TIMEOUT_S = 300.0
_POLL_S = 0.1
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
_WORKER = "import sys; from hardware.remote.worker import main; sys.exit(main())"


def _resident_bytes(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class _Child:
    """One running worker process: its pipes and scratch folder."""

    def __init__(self, runner: str, options: Mapping[str, Any], limits: Limits):
        from hardware.remote.worker import FRAME  # noqa: F401 - fail here, not in the child, if missing

        self.scratch = tempfile.mkdtemp(prefix="hwnas-device-")
        to_child_r, self.to_child = os.pipe()
        self.from_child, from_child_w = os.pipe()
        env = dict(os.environ)
        env.pop(TOKEN_ENV, None)  # the child never needs the token
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
        command = [sys.executable, "-c", _WORKER, "--runner", runner, "--options", json.dumps(dict(options)),
                   "--limits", json.dumps(asdict(limits)),
                   "--in-fd", str(to_child_r), "--out-fd", str(from_child_w), "--scratch", self.scratch]
        try:
            self.proc = subprocess.Popen(command, cwd=self.scratch, env=env, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, pass_fds=(to_child_r, from_child_w))
        except BaseException:
            for fd in (to_child_r, from_child_w, self.to_child, self.from_child):
                os.close(fd)
            shutil.rmtree(self.scratch, ignore_errors=True)
            raise
        os.close(to_child_r)
        os.close(from_child_w)
        self.pid = self.proc.pid
        self.killed_for: str | None = None

    def read(self, deadline: float, on_wait: Callable[[], None] | None = None) -> dict[str, Any] | None:
        """The child's next answer, or None if it ended (or ``on_wait`` killed it) first."""
        from hardware.remote.worker import read_frame

        while True:
            # the watch runs before each wait, the first one included: an answer that comes
            # within one poll interval must not skip it
            if on_wait is not None:
                on_wait()
                if self.killed_for is not None:
                    return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([self.from_child], [], [], min(_POLL_S, remaining))
            if ready:
                frame = read_frame(self.from_child)
                return None if frame is None else json.loads(frame)

    def kill(self, reason: str) -> None:
        if self.killed_for is None:
            self.killed_for = reason
        if self.proc.poll() is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def close(self, wait_s: float = 5.0) -> None:
        """End the child (EOF on its input, then SIGKILL) and remove its scratch folder."""
        for fd in (self.to_child, self.from_child):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            self.proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            self.kill("closed")
            self.proc.wait()
        shutil.rmtree(self.scratch, ignore_errors=True)

    def scratch_is_empty(self) -> bool:
        try:
            return not os.listdir(self.scratch)
        except OSError:
            return False


class Sandbox:
    """Measures request bodies in a warm child process under the server's limits."""

    def __init__(self, runner: str, options: Mapping[str, Any], limits: Limits,
                 log: Callable[[str], None] | None = None):
        self.runner = runner
        self.options = dict(options)
        self.limits = limits
        self.log = log or (lambda message: None)
        self._child: _Child | None = None
        self._restarting: threading.Thread | None = None
        self._closed = False
        #: the child is killed when its resident size passes this (the GPU runners' memory limit)
        self.resident_limit_mb = limits.max_memory_mb
        self.starts = 0
        self.hello = self._start()  # a bad runner or options fail here, at server start
        self.fingerprint: dict[str, Any] = self.hello["fingerprint"]

    # child lifecycle ---------------------------------------------------------------------
    def _start(self) -> dict[str, Any]:
        child = _Child(self.runner, self.options, self.limits)
        started = time.monotonic()
        hello = child.read(started + STARTUP_TIMEOUT_S)
        if not hello or not hello.get("ready"):
            child.kill("start-up failed")
            child.close()
            error = (hello or {}).get("error") or f"the measuring process did not start (exit {child.proc.returncode})"
            raise ValueError(f"serve-device: {error}")
        self.starts += 1
        self._child = child
        limits = [f"address space {self.limits.max_memory_mb} MB" if hello.get("address_space_limited")
                  else f"resident memory {self.resident_limit_mb} MB (watched)",
                  f"CPU {hello['cpu_budget_s']:g} s per request" if hello.get("cpu_limited") else "no CPU limit",
                  f"wall clock {self.limits.max_measure_s:g} s per request"]
        self.log(f"measuring process {child.pid} ready in {time.monotonic() - started:.2f} s; "
                 f"limits: {', '.join(limits)}")
        return hello

    def _restart_in_background(self) -> None:
        def restart() -> None:
            try:
                hello = self._start()
            except (ValueError, OSError) as exc:
                self.log(f"could not restart the measuring process: {exc}")
                return
            if hello["fingerprint"] != self.fingerprint:
                self.log(f"warning: the restarted measuring process reports a different device: "
                         f"{hello['fingerprint']}")

        self._restarting = threading.Thread(target=restart, name="hwnas-device-restart", daemon=True)
        self._restarting.start()

    def _ready_child(self) -> _Child:
        if self._restarting is not None:
            self._restarting.join()
            self._restarting = None
        child = self._child
        if child is not None and (child.proc.poll() is not None or not child.scratch_is_empty()):
            self._discard(child)
            child = None
        if child is None:
            try:
                self._start()
            except (ValueError, OSError) as exc:
                self.log(f"could not start the measuring process: {exc}")
                raise RequestError(503, "the device's measuring process is not available; retry later") from None
            child = self._child
        return child

    def _discard(self, child: _Child) -> None:
        child.kill("discarded")
        child.close()
        if self._child is child:
            self._child = None

    # measuring ---------------------------------------------------------------------------
    def run(self, body: bytes) -> dict[str, Any]:
        """Results of one ``POST /measure`` body (already bound-checked), or raises RequestError."""
        from hardware.remote.worker import write_frame

        if self._closed:
            raise RequestError(503, "the server is shutting down")
        child = self._ready_child()
        try:
            write_frame(child.to_child, body)
        except OSError:  # it died while idle: one fresh child, one more try
            self._discard(child)
            child = self._ready_child()
            write_frame(child.to_child, body)
        limits = self.limits
        memory_cap = int(self.resident_limit_mb) << 20

        def watch() -> None:
            resident = _resident_bytes(child.pid)
            if resident is not None and resident > memory_cap:
                child.kill("memory")

        deadline = time.monotonic() + limits.max_measure_s + GRACE_S
        answer = child.read(deadline, watch)
        if answer is None:
            if child.killed_for is None and time.monotonic() >= deadline:
                child.kill("time")
            code = child.proc.wait()
            reason = self._death_reason(child.killed_for, code)
            self.log(f"measuring process {child.pid} ended ({child.killed_for or 'died'}, exit {code}); "
                     f"restarting it")
            child.close(wait_s=0)
            self._child = None
            if not self._closed:
                self._restart_in_background()
            raise RequestError(422, reason)
        if answer.get("log"):
            self.log(answer["log"])
        if "results" in answer:
            return answer["results"]
        raise RequestError(int(answer["status"]), str(answer["reason"]))

    def _death_reason(self, killed_for: str | None, code: int) -> str:
        limits = self.limits
        if killed_for == "time":
            return (f"measurement exceeded the server's cap of {limits.max_measure_s:g} s and was stopped; "
                    f"send fewer models or lower protocol rounds")
        if killed_for == "memory":
            return f"measurement exceeded the server's memory limit of {self.resident_limit_mb} MB and was stopped"
        if code == -getattr(signal, "SIGXCPU", 24):
            return (f"measurement exceeded the server's CPU-time limit of "
                    f"{limits.cpu_seconds(int(self.fingerprint.get('threads', 1))):g} s and was stopped")
        if code == -signal.SIGKILL:  # not ours: the kernel's out-of-memory killer, most likely
            return "the measuring process was killed (out of memory?) while running this request"
        return f"the measuring process crashed (exit {code}) while running this request"

    def pid(self) -> int | None:
        return self._child.pid if self._child is not None else None

    def close(self) -> None:
        self._closed = True
        if self._restarting is not None:
            self._restarting.join(timeout=STARTUP_TIMEOUT_S)
            self._restarting = None
        if self._child is not None:
            self._child.close()
            self._child = None
