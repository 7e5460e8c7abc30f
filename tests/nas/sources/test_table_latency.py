"""The ``table`` latency source: strict lookups of a device's latency column."""
import pytest

from hardware.store import MeasurementStore
from nas.sources import LATENCY_SOURCES, RunContext, TableLatency, make_source
from search_spaces import make_space

A = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
B = "|none~0|+|skip_connect~0|nor_conv_1x1~1|+|none~0|none~1|avg_pool_3x3~2|"
C = "|avg_pool_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|"


@pytest.fixture
def ctx(tmp_path):
    (tmp_path / "lat.csv").write_text(f"index,arch,pixel2,fpga\n0,{A},17,5.3\n1,{B},9,2.5\n")
    return RunContext(space=make_space("nb201"), store=MeasurementStore(":memory:"), run_dir=tmp_path,
                      base_dir=tmp_path, progress=False)


def test_looks_up_the_device_column_and_is_cheap(ctx):
    source = make_source({"table": "lat.csv", "column": "fpga"}, LATENCY_SOURCES, ctx, "latency")
    assert isinstance(source, TableLatency) and source.cheap
    space = ctx.space
    assert source.evaluate([space.parse(B), space.parse(A)]) == [{"latency_ms": 2.5}, {"latency_ms": 5.3}]
    assert source.metrics == {"latency_ms": "minimize"}
    assert source.fingerprint()["column"] == "fpga"
    assert LATENCY_SOURCES.get("predictor").cheap and LATENCY_SOURCES.get("device").cheap
    assert not LATENCY_SOURCES.get("runner").cheap


def test_missing_arch_and_bad_tables_are_named(ctx, tmp_path):
    source = make_source({"table": "lat.csv", "column": "pixel2"}, LATENCY_SOURCES, ctx, "latency")
    with pytest.raises(ValueError, match=r"latency table .* has no row for arch \|avg_pool_3x3~0\|"):
        source.evaluate([ctx.space.parse(C)])
    with pytest.raises(ValueError, match="no column 'raspi4'; columns: pixel2, fpga"):
        make_source({"table": "lat.csv", "column": "raspi4"}, LATENCY_SOURCES, ctx, "latency")
    with pytest.raises(FileNotFoundError, match="latency table .* does not exist"):
        make_source({"table": "nope.csv", "column": "fpga"}, LATENCY_SOURCES, ctx, "latency")
    (tmp_path / "neg.csv").write_text(f"arch,fpga\n{A},-1\n")
    with pytest.raises(ValueError, match="negative latencies"):
        make_source({"table": "neg.csv", "column": "fpga"}, LATENCY_SOURCES, ctx, "latency")
    (tmp_path / "fb.csv").write_text("arch,fpga\nk3_e1-skip,5\n")
    with pytest.raises(ValueError, match="line 2: not an arch of space 'nb201'"):
        make_source({"table": "fb.csv", "column": "fpga"}, LATENCY_SOURCES, ctx, "latency")
