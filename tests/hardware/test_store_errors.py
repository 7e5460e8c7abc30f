import pytest

from hardware.store import MeasurementStore, StoreError


def test_a_corrupt_store_file_is_refused_naming_it(tmp_path):
    path = tmp_path / "measurements.db"
    path.write_bytes(b"\x00not sqlite\xff" * 200)
    with pytest.raises(StoreError, match=str(path)) as err:
        MeasurementStore(path)
    assert "move it aside" in str(err.value)
    # the file is left as it was: the user decides what to do with it
    assert path.read_bytes() == b"\x00not sqlite\xff" * 200
