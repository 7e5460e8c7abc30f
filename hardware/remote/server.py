"""``serve-device``: the measurement service that runs on the target device.

The device (a Jetson, a Raspberry Pi, a GPU server) runs :class:`DeviceServer`;
it needs only the ONNX runtime it times with, ``onnx`` and numpy, never torch
(``pip install ./device`` installs just that; see ``device/README.md``).
Start it with ``hwnas serve-device``, ``hwnas-device`` or ``python -m hardware.remote``.

Security, against a client that holds the token and sends hostile models:

* every request carries ``Authorization: Bearer <token>`` (constant-time
  compare; missing -> 401, wrong -> 403).  The token comes from ``--token``,
  ``--token-file`` (refused unless mode 600 or stricter) or
  ``$HWNAS_DEVICE_TOKEN``; only a generated one is ever printed.
* only self-contained ONNX is accepted (:mod:`hardware.remote.validation`):
  external data anywhere in the model, foreign operator domains and deep
  nesting are refused; nothing is unpickled or executed as code.
* every model is validated and timed in a separate, warm child process
  (:mod:`hardware.remote.sandbox`) that works in an empty scratch folder, under
  an address-space (CPU runner) or resident-memory limit, a CPU-time limit and
  the wall-clock cap ``max_measure_s``; past a limit the child is killed and
  replaced, the client gets a 422 naming the limit, and the server serves on.
* request size (413), model count (413), input elements (413, overflow-safe),
  protocol options (400) are bounded; one lock times one request at a time
  (others wait, 503 after ``max_wait_s``); at most ``max_pending`` bodies are
  held (503); at most ``max_connections`` connections are served at once
  (503 past it), with a listen backlog of :data:`LISTEN_BACKLOG`.
* TLS (``--certfile/--keyfile``): the handshake runs in the connection's own
  thread with a ``max_handshake_s`` timeout, so an idle client holds one
  connection slot, never the accept loop.
* error answers are the server's own sentences; a runtime's message (which
  could carry data) goes only to the server's log.
"""
from __future__ import annotations

import argparse
import hmac
import json
import signal
import socket
import ssl
import sys
import threading
import time
import urllib.parse
from dataclasses import asdict, replace
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, Callable, Mapping

from hardware.base import Fingerprint
from hardware.remote.sandbox import Sandbox
from hardware.remote.wire import (MIN_TOKEN_CHARS, TOKEN_ENV, WIRE_VERSION, Limits, RequestError,
                                  decode_measure, fingerprint_from_dict, fingerprint_json, resolve_token)

#: connections the kernel queues before the server accepts them
LISTEN_BACKLOG = 128
#: connections past max_connections that still get a 503 answer (more are closed at once)
REJECT_SLOTS = 16
#: seconds a rejected connection may take to send its request line and headers
REJECT_TIMEOUT_S = 5.0


class DeviceServer:
    """The measurement service; ``serve_forever()`` or ``start()`` (background thread)."""

    def __init__(self, token: str, runner: str = "onnxruntime", runner_options: Mapping[str, Any] | None = None,
                 host: str = "127.0.0.1", port: int = 0, limits: Limits = Limits(),
                 certfile: str | None = None, keyfile: str | None = None, log: Callable[[str], None] | None = None):
        if not token or len(token) < MIN_TOKEN_CHARS:
            raise ValueError(f"serve-device: the token must be at least {MIN_TOKEN_CHARS} characters")
        self.token = token.encode()
        self.limits = limits
        self.runner_name = runner
        self.lock = threading.Lock()
        self.pending = threading.BoundedSemaphore(limits.max_pending)
        self.log = log or (lambda message: None)
        context = None
        if certfile:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(certfile, keyfile)
        # the measuring child starts now: a bad runner or option fails at start, not on the first request
        self.sandbox = Sandbox(runner, runner_options or {}, limits, self.log)
        try:
            handler = type("Handler", (_Handler,), {"device": self})
            self.httpd = _HTTPServer((host, int(port)), handler, self, context)
        except BaseException:
            self.sandbox.close()
            raise
        self.base_fingerprint: Fingerprint = fingerprint_from_dict(self.sandbox.fingerprint)
        bound_host, bound_port = self.httpd.server_address[:2]
        self.url = f"{'https' if context else 'http'}://{bound_host}:{bound_port}"
        self._thread: threading.Thread | None = None
        self._closed = False

    def fingerprint(self, batch_size: int) -> Fingerprint:
        return replace(self.base_fingerprint, batch_size=int(batch_size))

    def info(self, batch_size: int) -> dict[str, Any]:
        return {"version": WIRE_VERSION, "runner": self.runner_name, **fingerprint_json(self.fingerprint(batch_size)),
                "limits": asdict(self.limits)}

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def start(self) -> "DeviceServer":
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="hwnas-serve-device", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join(timeout=10)
        self.httpd.server_close()
        self.sandbox.close()

    def __enter__(self) -> "DeviceServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # request handling -------------------------------------------------------------------
    def parse_measure(self, body: bytes):
        return decode_measure(body, self.limits)

    def run_measure(self, body: bytes) -> dict[str, Any]:
        models = self.parse_measure(body)[2]
        if not self.lock.acquire(timeout=self.limits.max_wait_s):
            raise RequestError(503, f"device busy for more than {self.limits.max_wait_s:g} s; retry later")
        try:
            started = time.monotonic()
            results = self.sandbox.run(body)
            elapsed = time.monotonic() - started
        finally:
            self.lock.release()
        self.log(f"measured {len(models)} model(s) in {elapsed:.1f} s")
        return {"results": results, **fingerprint_json(self.fingerprint(models[0][2][0])), "elapsed_s": elapsed}


class _HTTPServer(HTTPServer):
    """One thread per connection, at most ``max_connections`` of them; TLS handshakes in that thread."""

    request_queue_size = LISTEN_BACKLOG
    daemon_threads = True

    def __init__(self, address, handler, device: DeviceServer, context: ssl.SSLContext | None):
        self.device = device
        self.context = context
        self.active = 0
        self._count_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request, client_address) -> None:
        # the accept loop: never reads from or writes to a client here
        cap = self.device.limits.max_connections
        with self._count_lock:
            if self.active >= cap + REJECT_SLOTS:
                busy = None
            else:
                busy = self.active >= cap
                self.active += 1
        if busy is None:
            self.device.log(f"{client_address[0]} connection closed: {self.active} open, all slots taken")
            self.shutdown_request(request)
            return
        threading.Thread(target=self._connection, args=(request, client_address, busy),
                         name="hwnas-serve-device-connection", daemon=True).start()

    def _connection(self, request, client_address, busy: bool) -> None:
        try:
            if self.context is not None:
                request.settimeout(min(self.device.limits.max_handshake_s, REJECT_TIMEOUT_S) if busy
                                   else self.device.limits.max_handshake_s)
                request = self.context.wrap_socket(request, server_side=True, do_handshake_on_connect=False)
                request.do_handshake()
            if busy:
                _BusyHandler(request, client_address, self)
            else:
                self.finish_request(request, client_address)
        except (OSError, ssl.SSLError) as exc:  # handshake timeout, bad client, reset
            self.device.log(f"{client_address[0]} connection dropped: {type(exc).__name__}")
        except Exception as exc:  # noqa: BLE001 - one connection must never stop the service
            self.device.log(f"{client_address[0]} internal error: {type(exc).__name__}: {exc}")
        finally:
            self.shutdown_request(request)
            with self._count_lock:
                self.active -= 1


class _Handler(BaseHTTPRequestHandler):
    device: DeviceServer  # set on the per-server subclass
    server_version = "hwnas-serve-device"
    protocol_version = "HTTP/1.0"
    #: seconds a client may stall mid-request before its connection is dropped
    timeout = 120

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - BaseHTTPRequestHandler's name
        self.device.log(f"{self.address_string()} {format % args}")

    def _reply(self, status: int, payload: Mapping[str, Any], headers: Mapping[str, str] = {}) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _drain(self, limit: int) -> None:
        """Read and drop up to ``limit`` body bytes so the client can read our answer."""
        try:
            left = min(int(self.headers.get("Content-Length") or 0), limit)
        except ValueError:
            return
        while left > 0:
            chunk = self.rfile.read(min(left, 1 << 20))
            if not chunk:
                break
            left -= len(chunk)

    def _authorize(self) -> None:
        header = self.headers.get("Authorization")
        if not header:
            raise RequestError(401, "missing token: send 'Authorization: Bearer <token>'")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.device.token):
            raise RequestError(403, "wrong token")

    def _error(self, exc: RequestError) -> None:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
        if exc.status == 503:
            headers = {"Retry-After": "5"}
        self._reply(exc.status, {"error": exc.reason}, headers)

    def _handle(self, method: str) -> None:
        limits = self.device.limits
        body_read = False
        try:
            try:
                url = urllib.parse.urlsplit(self.path)
                routes = {("GET", "/info"), ("POST", "/measure")}
                if (method, url.path) not in routes:
                    known = any(path == url.path for _, path in routes)
                    raise RequestError(405 if known else 404, f"no route {method} {url.path[:100]}; "
                                       f"use GET /info or POST /measure")
                self._authorize()
                if method == "GET":
                    query = urllib.parse.parse_qs(url.query)
                    try:
                        batch = int(query.get("batch_size", ["1"])[0])
                    except ValueError:
                        raise RequestError(400, "batch_size must be an integer") from None
                    if not 1 <= batch <= limits.max_input_elements:
                        raise RequestError(400, "batch_size must be >= 1 (and within the input limit)")
                    self._reply(200, self.device.info(batch))
                    return
                length = self.headers.get("Content-Length")
                if length is None:
                    raise RequestError(411, "Content-Length is required")
                try:
                    size = int(length)
                except ValueError:
                    raise RequestError(400, "bad Content-Length") from None
                if size < 0:
                    raise RequestError(400, "bad Content-Length")
                if size > limits.max_request_bytes:
                    raise RequestError(413, f"request of {size} bytes exceeds the limit of "
                                            f"{limits.max_request_bytes} bytes")
                if not self.device.pending.acquire(blocking=False):
                    raise RequestError(503, f"{limits.max_pending} requests already queued; retry later")
                try:
                    body = self.rfile.read(size)
                    body_read = True
                    if len(body) != size:
                        raise RequestError(400, f"body ended after {len(body)} of {size} bytes")
                    answer = self.device.run_measure(body)
                finally:
                    self.device.pending.release()
                self._reply(200, answer)
            except RequestError as exc:
                if not body_read:
                    # an unread body would make the client see a reset instead of the answer;
                    # dropping (never storing) a bounded amount of it keeps that cheap
                    self._drain(limits.max_request_bytes * (4 if exc.status == 413 else 1))
                self._error(exc)
        except (ConnectionError, TimeoutError, OSError) as exc:
            self.device.log(f"connection dropped: {type(exc).__name__}: {exc}")
        except Exception as exc:  # noqa: BLE001 - one bad request must never stop the service
            self.device.log(f"internal error: {type(exc).__name__}: {exc}")
            try:
                self._reply(500, {"error": "internal error (details are in the server's log)"})
            except OSError:
                pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._handle("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")


class _BusyHandler(_Handler):
    """Answers every request on a connection past ``max_connections`` with a 503."""

    timeout = REJECT_TIMEOUT_S

    def _handle(self, method: str) -> None:
        try:
            self._drain(1 << 20)
            self._error(RequestError(503, f"{self.server.device.limits.max_connections} connections already "
                                          f"open; retry later"))
        except (OSError, socket.timeout):
            pass

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        self.server.device.log(f"{self.address_string()} {format % args}")


# --- command line -----------------------------------------------------------------------------
def serve_main(token: str | None, runner: str, runner_options: Mapping[str, Any], host: str, port: int,
               limits: Limits, certfile: str | None = None, keyfile: str | None = None,
               token_file: str | None = None) -> int:
    """Run ``serve-device`` in the foreground until interrupted.

    The token is ``token`` (``--token``), else read from ``token_file``, else
    ``$HWNAS_DEVICE_TOKEN``, else generated; only a generated one is printed."""
    token, source = resolve_token(token, token_file)

    def log(message: str) -> None:
        print(f"[serve-device {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    server = DeviceServer(token, runner, runner_options, host, port, limits, certfile, keyfile, log)
    _stop_on_sigterm()
    try:
        print(f"serving {server.base_fingerprint.describe()} at {server.url}", flush=True)
        if source == "generated":
            print(f"token (pass it to the client as {TOKEN_ENV}): {token}", flush=True)
        else:
            where = {"argument": "--token (visible in the process list; prefer --token-file)",
                     "file": f"the file {token_file}", "environment": f"${TOKEN_ENV}"}[source]
            print(f"token: from {where}", flush=True)
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


def _stop_on_sigterm() -> None:
    """SIGTERM (systemd, docker, kill) stops the server like Ctrl-C: the measuring child is ended too."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: the caller handles its own signals
        pass


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``hwnas-device`` (``hwnas serve-device`` declares the same ones)."""
    defaults = Limits()
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 to serve the network)")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--token", default=None,
                        help="shared secret (visible in the process list: prefer --token-file or "
                             f"${TOKEN_ENV}; without any of them a new one is printed)")
    parser.add_argument("--token-file", default=None,
                        help="read the token from this file (must not be readable by group or others)")
    parser.add_argument("--runner", default="onnxruntime", choices=["onnxruntime", "onnxruntime_gpu", "tensorrt"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--runner-option", action="append", default=[], metavar="KEY=VALUE",
                        help="extra runner option, JSON value or plain text, e.g. --runner-option provider=tensorrt")
    parser.add_argument("--max-request-mb", type=float, default=defaults.max_request_bytes / (1 << 20))
    parser.add_argument("--max-models", type=int, default=defaults.max_models)
    parser.add_argument("--max-measure-s", type=float, default=defaults.max_measure_s,
                        help="wall-clock seconds per request; past it the measuring process is killed (422)")
    parser.add_argument("--max-memory-mb", type=int, default=defaults.max_memory_mb,
                        help="memory of the measuring process (address space for the CPU runner)")
    parser.add_argument("--max-cpu-s", type=float, default=defaults.max_cpu_s,
                        help="CPU seconds per request (default 0: max-measure-s x threads + 30)")
    parser.add_argument("--max-connections", type=int, default=defaults.max_connections)
    parser.add_argument("--handshake-timeout-s", type=float, default=defaults.max_handshake_s)
    parser.add_argument("--certfile", default=None, help="serve HTTPS with this certificate (PEM)")
    parser.add_argument("--keyfile", default=None)


def limits_from_args(args: argparse.Namespace) -> Limits:
    if args.max_request_mb <= 0:
        raise ValueError("--max-request-mb must be > 0")
    return Limits(max_request_bytes=int(args.max_request_mb * (1 << 20)), max_models=args.max_models,
                  max_measure_s=args.max_measure_s, max_memory_mb=args.max_memory_mb, max_cpu_s=args.max_cpu_s,
                  max_connections=args.max_connections, max_handshake_s=args.handshake_timeout_s)


def serve_from_args(args: argparse.Namespace, runner_options: Mapping[str, Any]) -> int:
    """Run the server as the parsed options say; ``runner_options`` holds the extra --runner-option ones."""
    options = {"threads": args.threads, "dtype": args.dtype, **runner_options}
    return serve_main(args.token, args.runner, options, args.host, args.port, limits_from_args(args),
                      args.certfile, args.keyfile, token_file=args.token_file)


def _key_values(items: list[str]) -> dict[str, Any]:
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--runner-option {item!r}: expected KEY=VALUE")
        try:
            options[key] = json.loads(value)
        except ValueError:
            options[key] = value
    return options


def main(argv: list[str] | None = None) -> int:
    """``hwnas-device`` / ``python -m hardware.remote``: serve-device without the rest of hwnas."""
    parser = argparse.ArgumentParser(prog="hwnas-device", description="Serve latency measurements of this "
                                     "machine to hwnas' 'remote' runner. Needs only onnxruntime, onnx and numpy.")
    add_serve_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return serve_from_args(args, _key_values(args.runner_option))
    except ValueError as exc:
        print(f"hwnas-device: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
