"""Measure on another machine: ``serve-device`` (device side) and the ``remote`` runner.

One role per module:

* :mod:`hardware.remote.wire` - request encoding/decoding, :class:`Limits`,
  fingerprints as JSON, tokens, the errors both sides raise;
* :mod:`hardware.remote.validation` - what a model must be before a runtime sees it;
* :mod:`hardware.remote.worker` - the measuring child process (validation + protocol);
* :mod:`hardware.remote.sandbox` - the server's handle on that child (limits, kill, restart);
* :mod:`hardware.remote.server` - :class:`DeviceServer`, its HTTP handler and the command line;
* :mod:`hardware.remote.client` - :class:`DeviceClient` and :class:`RemoteRunner` (farm scheduling).

Nothing on the server path imports torch; the client imports it only to export.
"""
from hardware.remote.client import DeviceClient, RemoteOptions, RemoteRunner, split_by_bytes
from hardware.remote.server import DeviceServer, serve_main
from hardware.remote.validation import validate_onnx
from hardware.remote.wire import (TOKEN_ENV, WIRE_VERSION, Limits, RemoteError, RequestError, decode_measure,
                                  encode_measure, fingerprint_from_dict, new_token, read_token_file,
                                  resolve_token)

__all__ = ["TOKEN_ENV", "WIRE_VERSION", "DeviceClient", "DeviceServer", "Limits", "RemoteError", "RemoteOptions",
           "RemoteRunner", "RequestError", "decode_measure", "encode_measure", "fingerprint_from_dict",
           "new_token", "read_token_file", "resolve_token", "serve_main", "split_by_bytes", "validate_onnx"]
