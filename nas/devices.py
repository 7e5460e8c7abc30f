"""Onboarded devices on disk: ``$HWNAS_HOME/devices/NAME/`` (default home ``~/.hwnas``)::

    device.json        runner + options, protocol, space, fingerprint, held-out quality
    predictor.npz      the adapted latency predictor (any ``predictors`` checkpoint)
    measurements.csv   arch,latency_ms of everything measured while onboarding

The device's measurements sit in the measurement store under the runner's
source key, with the name bound to that fingerprint (the store refuses to mix).
``hwnas device add`` (:mod:`nas.onboarding`) writes these folders; the
``device`` latency source (:mod:`nas.sources.device`) reads them.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from hardware.store import hwnas_home

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
PREDICTOR_FILE = "predictor.npz"


def device_dir(name: str, home: Path | None = None) -> Path:
    if not _NAME.match(name or ""):
        raise ValueError(f"bad device name {name!r}: use letters, digits, '_', '-', '.' (max 64)")
    return (home or hwnas_home()) / "devices" / name


def load_record(name: str, home: Path | None = None) -> dict[str, Any]:
    path = device_dir(name, home) / "device.json"
    if not path.is_file():
        known = list_devices(home)
        raise ValueError(f"unknown device {name!r} (no {path}); onboard it with "
                         f"'hwnas device add {name} ...'; known devices: {', '.join(known) or 'none'}")
    return json.loads(path.read_text())


def list_devices(home: Path | None = None) -> list[str]:
    root = (home or hwnas_home()) / "devices"
    return sorted(p.name for p in root.iterdir() if (p / "device.json").is_file()) if root.is_dir() else []
