"""The measurement store on a real PostgreSQL server: one schema with SQLite, claims
that let several processes measure each arch once."""
import time

import pytest

from hardware.store import SCHEMA_VERSION, MeasurementStore, StoreError, store_url


def test_round_trip_devices_and_anchors_on_postgres(pg_url):
    with MeasurementStore(pg_url) as store:
        assert store.dialect == "postgresql" and store.schema_version() == SCHEMA_VERSION
        store.put_many("k", "mbv3", {"a": {"latency_ms": 1.5}}, meta={"load": 0.1})
        store.put_many("k", "mbv3", {"b": {"latency_ms": 9.0}}, reliable=False)
        store.register_device("pi4", "k", {"cpu": "a"})
        store.set_anchors("k", "mbv3", {"a": 1.4})
    with MeasurementStore(pg_url) as store:  # reopened: no second migration
        assert store.get_many("k", "mbv3", ["a", "b"]) == {"a": {"latency_ms": 1.5}}
        assert store.get_many("k", "mbv3", ["b"], reliable_only=False) == {"b": {"latency_ms": 9.0}}
        assert store.row_meta("k", "mbv3", "a") == ({"load": 0.1}, True)
        assert store.device("pi4") == ("k", {"cpu": "a"})
        assert store.anchors("k", "mbv3") == {"a": 1.4}
        assert store.delete("k", "mbv3", ["a", "zzz"]) == 1


def test_claims_give_each_arch_to_one_process_until_its_lease_runs_out(pg_url):
    with MeasurementStore(pg_url, lease_s=0.5) as first, MeasurementStore(pg_url, lease_s=30) as second:
        assert first.claim("k", "s", ["a", "b"]) == ["a", "b"]
        assert second.claim("k", "s", ["a", "b", "c"]) == ["c"]
        assert set(second.claimed_by_others("k", "s", ["a", "b", "c"])) == {"a", "b"}
        # storing a result ends its claim in the same transaction
        first.put_many("k", "s", {"a": {"x": 1.0}})
        assert set(second.claimed_by_others("k", "s", ["a", "b"])) == {"b"}
        time.sleep(0.7)  # first stopped renewing (killed): its lease on b runs out
        assert second.claim("k", "s", ["b"]) == ["b"]
        assert first.claim("k", "s", ["b"]) == []


def test_renewing_keeps_a_claim_alive_past_its_lease(pg_url):
    with MeasurementStore(pg_url, lease_s=0.6) as owner, MeasurementStore(pg_url) as other:
        owner.claim("k", "s", ["a"])
        with owner.renewing_claims():
            time.sleep(1.5)
            assert other.claim("k", "s", ["a"]) == []


def test_an_unreachable_server_and_a_bad_scheme_are_named():
    with pytest.raises(StoreError, match="127.0.0.1:1/nodb"):
        MeasurementStore("postgresql://nobody:secret@127.0.0.1:1/nodb")
    with pytest.raises(StoreError, match="unsupported database URL scheme 'mysql'"):
        store_url("mysql://x@y/z")


def test_the_password_never_appears_in_messages():
    with pytest.raises(StoreError) as err:
        MeasurementStore("postgresql://nobody:hunter2@127.0.0.1:1/nodb")
    assert "hunter2" not in str(err.value)
