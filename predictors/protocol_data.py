"""The test-device tables HELP's protocol scores on, shipped with the package.

``hwnas predictor eval`` must work without the original benchmark files, so
the test devices' latencies (only those: predictors never see them in
training) are kept in ``predictors/protocol_data/<space>.npz``, in the
benchmark's own architecture order (HELP's query split depends on it).
``python -m predictors.assets`` regenerates them from the public CSVs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from predictors.data import LatencyTable

PROTOCOL_DIR = Path(__file__).resolve().parent / "protocol_data"


def write_protocol_table(table, devices: Sequence[str], out: str | Path) -> Path:
    """Store ``devices``' columns of a ``LatencyTable`` (float32: ranks and MAPE are
    unaffected at the tables' 6 significant digits)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    columns = {f"latency/{d}": table.column(d).astype(np.float32) for d in devices}
    with open(out, "wb") as f:
        np.savez_compressed(f, archs=np.array("\n".join(str(a) for a in table.archs)), **columns)
    return out


def load_protocol_table(space, devices: Sequence[str], data: str | Path | None = None
                        ) -> tuple[list[Any], dict[str, np.ndarray]]:
    """(archs, device -> latency column) from ``data`` (a wide CSV) or the shipped table."""
    if data is not None:
        table = LatencyTable.read(data, space, devices)
        return table.archs, {d: table.column(d) for d in devices}
    path = PROTOCOL_DIR / f"{space.name}.npz"
    if not path.is_file():
        raise FileNotFoundError(f"no protocol table shipped for space {space.name!r}; pass --data CSV")
    with np.load(path, allow_pickle=False) as blob:
        missing = [d for d in devices if f"latency/{d}" not in blob.files]
        if missing:
            raise ValueError(f"{path} has no column(s) {missing}")
        archs = [space.parse(a) for a in str(blob["archs"]).split("\n")]
        return archs, {d: blob[f"latency/{d}"].astype(float) for d in devices}
