"""The ``runner`` latency source: anchors put batches on one scale, a disturbed batch is
measured again and never stored as a fact, and one machine times one batch at a time."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from hardware.store import MeasurementStore, space_key
from nas.sources import LATENCY_SOURCES, RunContext, make_source
from search_spaces import make_space
from tests.conftest import REPO

SPACE = {"resolutions": [32], "widths": [0.5], "depths": [2], "kernels": [3, 5], "expansions": [3, 4],
         "num_classes": 10}
FAST = {"runner": "onnxruntime", "threads": 1, "rounds": 3, "repeats": 1, "target_ms": 2.0,
        "drift_pause_s": 0.0}


def distinct(space, count, seed):
    rng, seen = np.random.default_rng(seed), {}
    while len(seen) < count:
        arch = space.sample(rng)
        seen.setdefault(str(arch), arch)
    return list(seen.values())


@pytest.fixture
def ctx(tmp_path):
    with MeasurementStore(tmp_path / "m.db") as store:
        yield RunContext(make_space("mbv3", **SPACE), store, tmp_path, progress=False)


def test_every_row_records_its_conditions_and_anchors_set_the_scale(ctx):
    source = make_source(FAST, LATENCY_SOURCES, ctx, "latency")
    anchors = source.anchor_archs()
    assert len(anchors) == 3 and list(anchors) == list(source.anchor_archs())  # fixed per space
    archs = [a for a in distinct(ctx.space, 6, seed=1) if str(a) not in anchors][:4]
    source.evaluate(archs)
    skey = space_key(ctx.space)
    assert set(ctx.store.anchors(source.key, skey)) == set(anchors)
    meta, reliable = ctx.store.row_meta(source.key, skey, str(archs[0]))
    assert reliable and meta["anchor_drift"] == 1.0 and meta["end"] > meta["start"] and "load_1m" in meta
    assert source.measured == [str(a) for a in archs]  # anchors are not results of the run


def test_a_disturbed_batch_is_measured_again_and_never_stored_as_reliable(ctx):
    # rounds of 20 ms: a 2 ms round often fits in one scheduler slice, and a median of such
    # rounds can miss the load (the failure this test had once in a while)
    source = make_source({**FAST, "drift_retries": 1, "target_ms": 20.0}, LATENCY_SOURCES, ctx, "latency")
    skey = space_key(ctx.space)
    archs = [a for a in distinct(ctx.space, 8, seed=2) if str(a) not in source.anchor_archs()]
    source.evaluate(archs[:2])  # a quiet batch: the anchors' references
    references = ctx.store.anchors(source.key, skey)
    # a real load generator, four busy processes per core, for the whole second batch
    load = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(4 * os.cpu_count())]
    try:
        got = source.evaluate(archs[2:4])
    finally:
        for proc in load:
            proc.kill()
            proc.wait()
    for arch in archs[2:4]:
        meta, reliable = ctx.store.row_meta(source.key, skey, str(arch))
        assert not reliable and meta["attempts"] == 2 and meta["anchor_drift"] > 1.15
    assert ctx.store.get_many(source.key, skey, [str(a) for a in archs[2:4]]) == {}
    assert all(m["latency_ms"] > 0 for m in got)
    assert ctx.store.anchors(source.key, skey) == references  # a busy batch never becomes the reference
    # the next run measures those archs afresh instead of serving the flagged rows
    again = make_source({**FAST, "drift_retries": 1}, LATENCY_SOURCES, ctx, "latency")
    again.evaluate(archs[2:4])
    assert again.measured == [str(a) for a in archs[2:4]]


WORKER = textwrap.dedent("""
    import json, sys
    import numpy as np
    from hardware.store import MeasurementStore
    from nas.sources import LATENCY_SOURCES, RunContext, make_source
    from search_spaces import make_space
    space = make_space("mbv3", **json.loads(sys.argv[1]))
    rng, archs = np.random.default_rng(int(sys.argv[3])), {}
    while len(archs) < 3:
        a = space.sample(rng)
        archs.setdefault(str(a), a)
    with MeasurementStore(sys.argv[2]) as store:
        ctx = RunContext(space, store, ".", progress=False)
        source = make_source(json.loads(sys.argv[4]), LATENCY_SOURCES, ctx, "latency")
        for batch in ([*archs.values()][:2], [*archs.values()][2:]):
            source.evaluate(batch)
        print(json.dumps(source.measured))
""")


def test_two_processes_never_time_at_the_same_moment(tmp_path):
    store_path = tmp_path / "shared.db"
    options = {**FAST, "anchors": 0}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(SPACE), str(store_path), str(seed),
                               json.dumps(options)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for seed in (10, 11)]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        outputs.append((json.loads(out.strip().splitlines()[-1]), err))
    assert all(len(measured) == 3 for measured, _ in outputs)  # both got results
    skey = space_key(make_space("mbv3", **SPACE))
    with MeasurementStore(store_path) as store:
        (key,) = store.source_keys()
        windows = sorted({(meta["start"], meta["end"]) for measured, _ in outputs for a in measured
                          for meta, _ in [store.row_meta(key, skey, a)]})
    assert len(windows) == 4  # two batches per process
    for (s1, e1), (s2, e2) in zip(windows, windows[1:]):
        assert e1 <= s2, f"timings overlap: {windows}"
