"""The ``table`` latency source: strict lookups of a device's latency column."""
import pytest

from nas.sources import LATENCY_SOURCES, TableLatency, make_source
from tests.nas.sources.nb201 import A, B, C, memory_context


@pytest.fixture
def ctx(tmp_path):
    (tmp_path / "lat.csv").write_text(f"index,arch,pixel2,fpga\n0,{A},17,5.3\n1,{B},9,2.5\n")
    return memory_context(tmp_path)


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
