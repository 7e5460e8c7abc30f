"""Fixtures of the serve-device tests: one loopback server per module."""
from __future__ import annotations

import pytest

from hardware.remote import DeviceServer, Limits

from tests.hardware.remote.helpers import TOKEN


@pytest.fixture(scope="module")
def server():
    limits = Limits(max_request_bytes=2 << 20, max_models=4, max_measure_s=60, max_wait_s=30)
    with DeviceServer(TOKEN, "onnxruntime", {"threads": 1}, host="127.0.0.1", port=0, limits=limits) as srv:
        yield srv
