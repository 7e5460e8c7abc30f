"""The search machine's side: :class:`DeviceClient` (HTTP calls to one server) and
:class:`RemoteRunner` (the ``remote`` runner, which spreads batches over a farm).

The runner exports each candidate to ONNX here (torch is imported only then)
and sends batches to ``serve-device`` servers; the device runs the same
interleaved-rounds protocol (:func:`hardware.protocol.measure`) on each batch,
so timing noise is handled exactly as for local runners, and returns latency
statistics with its fingerprint.  Several servers of one device kind form a
farm: one worker thread per server takes batches from a shared queue, and
servers whose fingerprints differ are refused.  A batch that needs several
requests carries its first candidate in each of them as an anchor, and the
requests are rescaled to agree on it (see :meth:`RemoteRunner.measure_batch`).

Failures: a connection that is refused, reset or times out, and a 503 (busy),
are retried ``retries`` times with exponential backoff (``backoff_s``, doubled
each time, at most :data:`MAX_BACKOFF_S`); then that server is dropped, its
batch goes back to the queue for the others, and a warning on the
``hardware.remote`` logger names it.  When no server is left the error names
every server that failed and why.  Any other error answer (4xx, 422, 500)
stops the measurement with the server's reason.
"""
from __future__ import annotations

import http.client
import json
import logging
import os
import queue
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from hardware.base import PATH, SECRET, Fingerprint, Runner
from hardware.protocol import Candidate, Measurement, Protocol
from hardware.quantize import quantize_int8, synthetic_calibration
from hardware.remote.wire import TOKEN_ENV, RemoteError, encode_measure, fingerprint_from_dict

logger = logging.getLogger("hardware.remote")
#: longest wait between two tries of one call
MAX_BACKOFF_S = 30.0
#: statuses after which a server counts as unavailable (None: no answer at all)
UNAVAILABLE = (None, 503)
_EXPORT_LOCK = threading.Lock()


class DeviceClient:
    """HTTP calls to one ``serve-device`` URL, with bounded retries."""

    def __init__(self, url: str, token: str, timeout_s: float = 900.0, cafile: str | None = None,
                 retries: int = 3, backoff_s: float = 1.0):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"remote runner: bad server URL {url!r}; expected http://HOST:PORT")
        if int(retries) < 0 or float(backoff_s) < 0:
            raise ValueError("runner 'remote': retries and backoff_s must be >= 0")
        self.url = url.rstrip("/")
        self.token = token
        self.timeout_s = float(timeout_s)
        self.retries = int(retries)
        self.backoff_s = float(backoff_s)
        self.context = ssl.create_default_context(cafile=cafile) if parts.scheme == "https" else None

    def _call_once(self, method: str, path: str, body: bytes | None = None) -> dict[str, Any]:
        request = urllib.request.Request(self.url + path, data=body, method=method,
                                         headers={"Authorization": f"Bearer {self.token}"})
        if body is not None:
            request.add_header("Content-Type", "application/octet-stream")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s, context=self.context) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            try:
                reason = json.loads(exc.read()).get("error", exc.reason)
            except (ValueError, AttributeError, OSError, http.client.HTTPException):
                reason = exc.reason
            raise RemoteError(f"{self.url}: HTTP {exc.code}: {reason}", exc.code, self.url) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
            # refused, reset, timed out, cut short or garbled: no usable answer
            why = getattr(exc, "reason", None) or exc or type(exc).__name__
            raise RemoteError(f"{self.url}: cannot reach the device: {why}", None, self.url) from None

    def _call(self, method: str, path: str, body: bytes | None = None) -> dict[str, Any]:
        for attempt in range(self.retries + 1):
            try:
                return self._call_once(method, path, body)
            except RemoteError as exc:
                if exc.status not in UNAVAILABLE:
                    raise
                if attempt == self.retries:
                    if attempt:
                        raise RemoteError(f"{exc} (after {attempt + 1} attempts)", exc.status, self.url) from None
                    raise
                delay = min(MAX_BACKOFF_S, self.backoff_s * 2 ** attempt)
                logger.info("%s; retrying in %.1f s (%d of %d)", exc, delay, attempt + 1, self.retries)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def info(self, batch_size: int = 1) -> dict[str, Any]:
        return self._call("GET", f"/info?batch_size={int(batch_size)}")

    def measure(self, models: Sequence[tuple[str, bytes, Sequence[int]]], protocol: Protocol, seed: int
                ) -> dict[str, Any]:
        return self._call("POST", "/measure", encode_measure(models, protocol, seed))


@dataclass(frozen=True)
class RemoteOptions:
    """Options of the ``remote`` runner: exactly :class:`RemoteRunner`'s keyword arguments, in order."""

    servers: str | Sequence[str] = ()
    token: str | None = field(default=None, repr=False, metadata=SECRET)
    token_env: str = TOKEN_ENV
    threads: int | None = None
    batch_size: int = 1
    dtype: str | None = None
    opset: int = 17
    timeout_s: float = 900.0
    retries: int = 3
    backoff_s: float = 1.0
    cafile: str | None = field(default=None, metadata=PATH)


class RemoteRunner(Runner):
    """Client runner: measurements happen on ``serve-device`` servers.

    ``servers`` is one URL or several (a list or a comma-separated string) of
    the same device kind.  The token comes from ``token`` or the environment
    variable named by ``token_env`` (default ``HWNAS_DEVICE_TOKEN``), so it
    need not be written into recipes.  ``threads`` and ``dtype`` are the
    server's; if given here they are checked against it.  ``retries`` and
    ``backoff_s``: see the module docstring.
    """

    name = "remote"
    Options = RemoteOptions

    def __init__(self, servers: str | Sequence[str] = (), token: str | None = None, token_env: str = TOKEN_ENV,
                 threads: int | None = None, batch_size: int = 1, dtype: str | None = None, opset: int = 17,
                 timeout_s: float = 900.0, retries: int = 3, backoff_s: float = 1.0, cafile: str | None = None):
        super().__init__(1, batch_size, dtype or "float32")
        urls = [u.strip() for u in servers.split(",")] if isinstance(servers, str) else [str(u) for u in servers]
        urls = [u for u in urls if u]
        if not urls:
            raise ValueError("runner 'remote' needs servers: a URL or a list of URLs of hwnas serve-device")
        token = token if token is not None else os.environ.get(token_env)
        if not token:
            raise ValueError(f"runner 'remote' needs the device token: set {token_env} or pass token")
        if int(retries) < 0:
            raise ValueError("runner 'remote': retries must be >= 0")
        self.clients = [DeviceClient(u, token, timeout_s, cafile, retries, backoff_s) for u in urls]
        self.requested_threads = None if threads is None else int(threads)
        self.requested_dtype = dtype
        self.opset = int(opset)
        self.retries = int(retries)
        self._info: dict[str, Any] | None = None

    def _server_info(self) -> dict[str, Any]:
        if self._info is not None:
            return self._info
        answered, failed = [], []
        for client in self.clients:
            try:
                answered.append((client, client.info(self.batch_size)))
            except RemoteError as exc:
                if exc.status not in UNAVAILABLE:
                    raise
                failed.append(exc)
        if not answered:
            raise RemoteError("no device server reachable: " + "; ".join(str(e) for e in failed))
        for exc in failed:
            logger.warning("%s; measuring on the other server(s) of the farm", exc)
        clients = [c for c, _ in answered]
        infos = [i for _, i in answered]
        keys = {i["fingerprint_key"] for i in infos}
        if len(keys) > 1:
            described = "; ".join(f"{c.url}: {fingerprint_from_dict(i['fingerprint']).describe()}"
                                  for c, i in answered)
            raise ValueError(f"runner 'remote': the servers are different devices and cannot "
                             f"share one measurement set ({described})")
        info = infos[0]
        fp = info["fingerprint"]
        if self.requested_threads is not None and fp["threads"] != self.requested_threads:
            raise ValueError(f"runner 'remote': threads={self.requested_threads} requested but the "
                             f"server measures with {fp['threads']}; restart serve-device with --threads")
        if self.requested_dtype is not None and fp["dtype"] != self.requested_dtype:
            raise ValueError(f"runner 'remote': dtype={self.requested_dtype!r} requested but the "
                             f"server measures {fp['dtype']!r}")
        common = set.intersection(*(set(i["limits"]) for i in infos))
        info["limits_min"] = {k: min(i["limits"][k] for i in infos) for k in common}
        self.clients = clients
        self._info = info
        return info

    def fingerprint(self) -> Fingerprint:
        info = self._server_info()
        fp = dict(info["fingerprint"])
        # the client exports, so the opset is the client's; the rest is the device's
        extra = dict(fp.get("extra") or {})
        if "opset" in extra:
            extra["opset"] = self.opset
        fp["extra"] = extra
        return fingerprint_from_dict(fp)

    def _export(self, candidate: Candidate) -> tuple[str, bytes, tuple[int, ...]]:
        from hardware.onnx_io import export_onnx

        device = self._server_info()["fingerprint"]
        if candidate.int8_modules and (device["runner"], device["dtype"]) != ("onnxruntime", "float32"):
            # the int8 layers are quantized here, into a QDQ graph only ONNX Runtime's CPU
            # kernels run as int8; anything else would time another network
            raise ValueError(f"{candidate.key} asks for int8 layers, but the device runs "
                             f"{device['runner']} ({device['dtype']}); int8 layers need a device "
                             f"serving runner 'onnxruntime' with dtype float32")
        model, example = candidate.build()
        if device["dtype"] == "float16":
            # token ids stay integers; only float inputs follow the device's dtype
            model = model.half()
            example = example.half() if example.is_floating_point() else example
        # torch.onnx.export keeps process-global state: one export at a time, in any thread
        with _EXPORT_LOCK:
            data = export_onnx(model, example, opset=self.opset)
        if candidate.int8_modules:
            data = quantize_int8(data, synthetic_calibration(example.numpy()), candidate.int8_modules)
        return candidate.key, data, tuple(example.shape)

    def measure_batch(self, candidates: Sequence[Candidate], protocol: Protocol,
                      rng: np.random.Generator, progress: Callable[[int], None] | None = None
                      ) -> dict[str, Measurement]:
        """Send ``candidates`` in requests of at most the servers' ``max_models``; each request is
        measured on the device as one interleaved set under ``protocol``.

        When more than one request is needed, the first candidate rides along in every request
        as an anchor, and each request's results are rescaled so that its anchor matches the
        anchor's median over all requests: load that changes between requests, or farm members
        that differ slightly, would otherwise bias whole requests (the same linking as
        :func:`hardware.protocol.measure` uses for groups)."""
        info = self._server_info()
        limits = info["limits_min"]
        per_request = max(1, int(limits["max_models"]))
        max_bytes = int(limits["max_request_bytes"])
        anchor: Candidate | None = None
        if len(candidates) > per_request >= 2:
            anchor, rest = candidates[0], list(candidates[1:])
            chunks = [rest[i:i + per_request - 1] for i in range(0, len(rest), per_request - 1)]
        else:
            chunks = [list(candidates[i:i + per_request]) for i in range(0, len(candidates), per_request)]
        seeds = [int(s) for s in rng.integers(0, 2 ** 62, size=len(chunks))]
        work: queue.Queue = queue.Queue()
        for item in zip(seeds, chunks):
            work.put(item)
        answers: list[dict[str, Measurement]] = []  # one per request, in completion order
        errors: list[BaseException] = []
        lock = threading.Lock()
        alive = list(self.clients)
        unavailable: list[RemoteError] = []
        anchor_model: list[tuple[str, bytes, tuple[int, ...]]] = []

        def anchored(models: list) -> list[list]:
            if anchor is None:
                return split_by_bytes(models, max_bytes)
            with lock:
                if not anchor_model:
                    anchor_model.append(self._export(anchor))
            first = anchor_model[0]
            return [[first, *group] for group in split_by_bytes(models, max_bytes - len(first[1]))]

        def worker(client: DeviceClient) -> None:
            while not errors:
                try:
                    seed, chunk = work.get_nowait()
                except queue.Empty:
                    return
                try:
                    done = []
                    for request in anchored([self._export(c) for c in chunk]):
                        answer = client.measure(request, protocol, seed)
                        if answer.get("fingerprint_key") != info["fingerprint_key"]:
                            raise RemoteError(f"{client.url}: the device's fingerprint changed during the "
                                              f"search (now {answer.get('fingerprint')})", 409, client.url)
                        done.append({key: Measurement(float(m["latency_ms"]), float(m["spread"]),
                                                      [float(x) for x in m["round_medians"]])
                                     for key, m in answer["results"].items()})
                    with lock:
                        answers.extend(done)
                        if progress is not None:
                            progress(len(chunk) + (1 if anchor is not None and len(answers) == len(done) else 0))
                except RemoteError as exc:
                    with lock:
                        if exc.status in UNAVAILABLE:
                            # this farm member is gone or jammed: hand its batch to the others
                            work.put((seed, chunk))
                            alive.remove(client)
                            unavailable.append(exc)
                            others = ", ".join(c.url for c in alive) or "none left"
                            logger.warning("%s; moving its batch of %d model(s) to the other server(s) (%s)",
                                           exc, len(chunk), others)
                        else:
                            errors.append(exc)
                    return
                except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                    with lock:
                        errors.append(exc)
                    return

        # each pass either empties the queue or loses a server, so this ends
        while not errors and not work.empty() and alive:
            threads = [threading.Thread(target=worker, args=(c,), daemon=True) for c in list(alive)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        self.clients = alive or self.clients
        if errors:
            raise errors[0]
        if not work.empty():
            raise RemoteError("no device server reachable: " + "; ".join(str(e) for e in unavailable))
        results = link_by_anchor(answers, None if anchor is None else anchor.key)
        missing = [c.key for c in candidates if c.key not in results]
        if missing:
            raise RemoteError(f"the device returned no result for {missing[:3]}")
        return results


def link_by_anchor(answers: list[dict[str, Measurement]], anchor: str | None) -> dict[str, Measurement]:
    """Merge per-request results; with an ``anchor`` key present in every request, rescale each
    request so its anchor equals the anchor's median over the requests."""
    results: dict[str, Measurement] = {}
    if anchor is None:
        for answer in answers:
            results.update(answer)
        return results
    anchor_values = [answer[anchor].latency_ms for answer in answers if anchor in answer]
    if len(anchor_values) != len(answers):
        raise RemoteError(f"the device returned no result for the anchor {anchor!r}")
    reference = float(np.median(anchor_values))
    for answer, anchor_ms in zip(answers, anchor_values):
        scale = reference / anchor_ms if anchor_ms > 0 else 1.0
        for key, m in answer.items():
            if key != anchor:
                results[key] = Measurement(m.latency_ms * scale, m.spread, [v * scale for v in m.round_medians])
    results[anchor] = Measurement(reference, answers[0][anchor].spread, anchor_values)
    return results


def split_by_bytes(models: list, max_bytes: int) -> list[list]:
    """Group models so that each request stays under the server's size cap."""
    budget = max_bytes - 64 * 1024  # room for the JSON header
    groups: list[list] = [[]]
    used = 0
    for key, data, shape in models:
        if len(data) > budget:
            raise RemoteError(f"model {key!r} is {len(data)} bytes as ONNX; the device accepts at most "
                              f"{max_bytes} bytes per request (serve-device --max-request-mb)", 413)
        if groups[-1] and used + len(data) > budget:
            groups.append([])
            used = 0
        groups[-1].append((key, data, shape))
        used += len(data)
    return groups
