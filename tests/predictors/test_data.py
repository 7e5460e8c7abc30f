"""Strict reading of measurement files, arch lists and latency tables."""
import pytest

from predictors.data import LatencyTable, read_arch_list, read_measurements
from search_spaces import make_space

A = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
B = "|none~0|+|skip_connect~0|nor_conv_1x1~1|+|none~0|none~1|avg_pool_3x3~2|"


@pytest.fixture(scope="module")
def space():
    return make_space("nb201")


def write(tmp_path, text, name="m.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_reads_valid_measurements(space, tmp_path):
    archs, y = read_measurements(write(tmp_path, f"arch,latency_ms\n{A},12.5\n\n{B},3\n"), space)
    assert [str(a) for a in archs] == [A, B] and y.tolist() == [12.5, 3.0]


@pytest.mark.parametrize("body, message", [
    (f"{A},12.5\n|max_pool_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|,3\n", r"line 3: unknown arch.*max_pool_3x3"),
    (f"{A},nan\n", "line 2: latency_ms is NaN"),
    (f"{A},12\n{B},0\n", "line 3: latency_ms must be a positive"),
    (f"{A},-4.0\n", "line 2: latency_ms must be a positive"),
    (f"{A},\n", "line 2: missing value for 'latency_ms'"),
    (f"{A}\n", "line 2: missing value for 'latency_ms'"),
    (",5\n", "line 2: missing arch"),
    (f"{A},fast\n", "line 2: latency_ms='fast' is not a number"),
    (f"{A},inf\n", "line 2: latency_ms must be a positive finite"),
    (f"{A},1\n{B},2\n{A},3\n", "line 4: arch .* already measured on line 2"),
    (f"{A},1,extra\n", "line 2: expected 2 fields"),
])
def test_bad_measurements_are_rejected_naming_the_line(space, tmp_path, body, message):
    path = write(tmp_path, "arch,latency_ms\n" + body)
    with pytest.raises(ValueError, match=message) as info:
        read_measurements(path, space)
    assert str(path) in str(info.value)


def test_measurement_header_is_checked(space, tmp_path):
    with pytest.raises(ValueError, match="line 1: header must be arch,latency_ms"):
        read_measurements(write(tmp_path, f"arch,ms\n{A},1\n"), space)
    with pytest.raises(ValueError, match="no measurements"):
        read_measurements(write(tmp_path, "arch,latency_ms\n"), space)
    with pytest.raises(FileNotFoundError):
        read_measurements(tmp_path / "missing.csv", space)


def test_arch_lists_plain_or_csv(space, tmp_path):
    assert [str(a) for a in read_arch_list(write(tmp_path, f"{A}\n\n{B}\n", "a.txt"), space)] == [A, B]
    csv_list = write(tmp_path, f"index,arch,acc\n0,{A},90\n1,{B},80\n", "b.csv")
    assert [str(a) for a in read_arch_list(csv_list, space)] == [A, B]
    with pytest.raises(ValueError, match=r"line 2: unknown arch"):
        read_arch_list(write(tmp_path, f"{A}\n|bogus~0|\n", "c.txt"), space)


def test_latency_table_checks_devices_and_values(space, tmp_path):
    path = write(tmp_path, f"index,arch,gpu,cpu\n0,{A},1.5,10\n1,{B},0.5,4\n", "t.csv")
    table = LatencyTable.read(path, space)
    assert table.devices == ["gpu", "cpu"] and table.column("cpu").tolist() == [10.0, 4.0]
    assert LatencyTable.read(path, space, ["cpu"]).values.shape == (2, 1)
    with pytest.raises(ValueError, match=r"\['tpu'\] not found; available: gpu, cpu"):
        LatencyTable.read(path, space, ["tpu"])
    bad = write(tmp_path, f"arch,gpu\n{A},1.5\n{B},nan\n", "u.csv")
    with pytest.raises(ValueError, match="line 3: gpu is NaN"):
        LatencyTable.read(bad, space)
