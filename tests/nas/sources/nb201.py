"""What the nb201 source tests share: three architectures and an in-memory run context."""
from pathlib import Path

from hardware.store import MeasurementStore
from nas.sources import RunContext
from search_spaces import make_space

A = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
B = "|none~0|+|skip_connect~0|nor_conv_1x1~1|+|none~0|none~1|avg_pool_3x3~2|"
C = "|avg_pool_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|"


def memory_context(tmp_path: Path, space=None) -> RunContext:
    """A nb201 (or ``space``) context whose store lives in memory; paths resolve in ``tmp_path``."""
    return RunContext(space=space or make_space("nb201"), store=MeasurementStore(":memory:"), run_dir=tmp_path,
                      base_dir=tmp_path, progress=False)
