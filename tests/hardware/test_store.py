import pytest

from hardware.store import FingerprintMismatch, MeasurementStore


def test_put_get_round_trip_and_persistence(tmp_path):
    path = tmp_path / "m.db"
    with MeasurementStore(path) as store:
        store.put_many("fp1", "mbv3", {"a": {"latency_ms": 1.5}, "b": {"latency_ms": 2.0}})
    with MeasurementStore(path) as store:
        assert store.get_many("fp1", "mbv3", ["a", "b", "c"]) == {"a": {"latency_ms": 1.5},
                                                                  "b": {"latency_ms": 2.0}}
        assert store.get_many("fp2", "mbv3", ["a"]) == {}  # other conditions never mix
        assert store.count("fp1") == 2


def test_device_name_refuses_a_second_fingerprint(tmp_path):
    with MeasurementStore(tmp_path / "m.db") as store:
        store.register_device("pi4", "key1", {"cpu": "a"})
        store.register_device("pi4", "key1", {"cpu": "a"})  # same: fine
        with pytest.raises(FingerprintMismatch, match="pi4"):
            store.register_device("pi4", "key2", {"cpu": "b"})
        assert store.devices() == ["pi4"]


def test_large_lookup_spans_sqlite_variable_limit(tmp_path):
    with MeasurementStore(tmp_path / "m.db") as store:
        store.put_many("k", "s", {str(i): {"x": float(i)} for i in range(1200)})
        assert len(store.get_many("k", "s", [str(i) for i in range(1200)])) == 1200
