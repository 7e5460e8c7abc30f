"""The ``lm`` accuracy source: deterministic corpora, real short LM training."""
import math
from dataclasses import replace

import pytest
import torch

from hardware.store import MeasurementStore
from nas.accuracy import arch_seed
from nas.lm_accuracy import (LMSettings, build_seeded, evaluate_lm, load_corpus, train_lm, validation_starts,
                             _as_tensor, _lr_at)
from nas.sources import ACCURACY_SOURCES, RunContext, make_source
from search_spaces import make_space

TINY = {"tokens": 4096, "seq_len": 32, "batch_size": 8, "val_tokens": 1024, "max_bytes": 60000,
        "warmup_tokens": 1024, "threads": 1}



@pytest.fixture(scope="module")
def space():
    return make_space("hybrid_slm", widths=[32], heads=[2], kv_heads=[1], depths=[2], chunk_size=16)


def test_stdlib_corpus_is_deterministic():
    a = load_corpus("stdlib", max_bytes=200_000)
    b = load_corpus("stdlib", max_bytes=200_000)
    assert a == b and a.digest == b.digest
    assert len(a.train) >= 150_000 and len(a.val) > 10_000
    assert b"def " in a.train and b"import" in a.val


def test_text_file_and_folder(tmp_path):
    text = tmp_path / "book.txt"
    text.write_text("the quick brown fox. " * 500)
    corpus = load_corpus(text, val_fraction=0.2)
    assert len(corpus.val) == pytest.approx(0.2 * len(text.read_bytes()), abs=1)
    assert corpus.train + corpus.val == text.read_bytes()
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(40):
        (folder / f"f{i:02d}.md").write_text(f"document {i} " * 50)
    (folder / "blob.bin").write_bytes(b"\x00\x01" * 100)
    split = load_corpus(folder, val_fraction=0.2)
    assert b"\x00" not in split.train + split.val  # binary file skipped
    train_docs = {int(w) for w in split.train.split() if w.isdigit()}
    val_docs = {int(w) for w in split.val.split() if w.isdigit()}
    assert train_docs and val_docs and not train_docs & val_docs  # files never straddle the split


def test_missing_path_is_named(tmp_path, space):
    with pytest.raises(FileNotFoundError, match="no_such_corpus"):
        load_corpus(tmp_path / "no_such_corpus")
    with MeasurementStore(tmp_path / "m.db") as store:
        ctx = RunContext(space, store, tmp_path, base_dir=tmp_path, progress=False)
        with pytest.raises(FileNotFoundError, match="missing.txt"):
            make_source({"lm": "missing.txt"}, ACCURACY_SOURCES, ctx, "accuracy")
        with pytest.raises(ValueError, match=r"accuracy\.epochs: unknown key"):
            make_source({"lm": "stdlib", "epochs": 2}, ACCURACY_SOURCES, ctx, "accuracy")


def test_training_lowers_validation_loss_and_is_seeded(space):
    corpus = load_corpus("stdlib", max_bytes=TINY["max_bytes"])
    settings = LMSettings(**TINY)
    arch = space.parse("v256_d32_h2_g1:mamba-ffn2")
    untrained = evaluate_lm(build_seeded(space, arch, 7), _as_tensor(corpus.val), 32, 1024)
    assert untrained == pytest.approx(math.log(256), rel=0.05)  # near-uniform at init
    first = train_lm(build_seeded(space, arch, 7), corpus, settings, seed=7)
    second = train_lm(build_seeded(space, arch, 7), corpus, settings, seed=7)
    assert first == second
    assert first["val_loss"] < untrained - 0.5
    assert first["perplexity"] == pytest.approx(math.exp(first["val_loss"]))


def test_source_evaluates_and_caches(tmp_path, space):
    with MeasurementStore(tmp_path / "m.db") as store:
        ctx = RunContext(space, store, tmp_path, seed=3, base_dir=tmp_path, progress=False)
        source = make_source({"lm": "stdlib", **TINY}, ACCURACY_SOURCES, ctx, "accuracy")
        archs = [space.parse("v256_d32_h2_g1:attn-ffn2"), space.parse("v256_d32_h2_g1:delta-mamba")]
        results = source.evaluate(archs)
        assert all(set(r) == {"val_loss", "perplexity"} and r["val_loss"] < math.log(256) for r in results)
        assert store.count(source.key) == 2
        assert make_source({"lm": "stdlib", **TINY}, ACCURACY_SOURCES, ctx, "accuracy").key == source.key
        assert source.evaluate(archs[:1]) == results[:1]
        # weights from the candidate's own seed, training batches from the run seed:
        # every candidate sees the same text in the same order
        corpus = load_corpus("stdlib", max_bytes=TINY["max_bytes"])
        again = train_lm(build_seeded(space, archs[1], arch_seed(3, str(archs[1]))), corpus,
                         LMSettings(**TINY), seed=3)
        assert again == results[1]


def test_validation_windows_span_the_split():
    starts, length = validation_starts(200_001, 64, 32768)
    assert length == 64 and len(starts) == 512
    assert starts[0] == 0 and starts[-1] + length + 1 == 200_001  # reaches the end, targets included
    assert all(b - a >= length for a, b in zip(starts, starts[1:]))  # non-overlapping
    assert validation_starts(100, 64, 4096) == ([0], 64)  # a short split: one window that fits


def test_constant_schedule_makes_the_short_run_a_prefix_of_a_longer_one():
    short = LMSettings(tokens=4096, seq_len=32, batch_size=8, warmup_tokens=1024, schedule="constant")
    long = replace(short, tokens=4 * short.tokens)
    lrs = [_lr_at(step, long) for step in range(long.steps)]
    assert [_lr_at(step, short) for step in range(short.steps)] == lrs[:short.steps]
    # a 4-step warm-up whatever the budget, then constant
    assert lrs[:4] == pytest.approx([short.lr * k / 4 for k in (1, 2, 3, 4)])
    assert lrs[4:] == [short.lr] * (long.steps - 4)
    # cosine decays over each run's own budget, down to 10% of the peak
    cos_short, cos_long = replace(short, schedule="cosine"), replace(long, schedule="cosine")
    assert _lr_at(short.steps - 1, cos_short) < _lr_at(short.steps - 1, cos_long)
    assert _lr_at(long.steps - 1, cos_long) == pytest.approx(0.1 * short.lr, rel=0.01)
    with pytest.raises(ValueError, match="schedule.*'linear'"):
        LMSettings(schedule="linear")
    with pytest.raises(ValueError, match="warmup_tokens"):
        LMSettings(warmup_tokens=0)


def test_vocab_too_small_for_bytes(tmp_path):
    small = make_space("hybrid_slm", vocab_sizes=[128], widths=[32], heads=[2], kv_heads=[1], depths=[2])
    with MeasurementStore(tmp_path / "m.db") as store:
        ctx = RunContext(small, store, tmp_path, progress=False)
        source = make_source({"lm": "stdlib", **TINY}, ACCURACY_SOURCES, ctx, "accuracy")
        with pytest.raises(ValueError, match="vocabulary 128"):
            source.evaluate([small.parse("v128_d32_h2_g1:attn-ffn2")])


def test_slm_recipe_runs_end_to_end(tmp_path):
    """recipes/slm_cpu.yaml through the real search loop, shrunk to seconds, then
    `hwnas export`: the space's config.json rebuilds the model without hwnas."""
    from pathlib import Path

    from nas.export import export_run, load_exported
    from nas.search import run_search
    from search_spaces.slm.export import load_slm

    recipe = Path(__file__).resolve().parents[2] / "recipes" / "slm_cpu.yaml"
    result = run_search(recipe, [
        f"output={tmp_path / 'run'}", f"store={tmp_path / 'm.db'}",
        "space.widths=[32]", "space.depths=[2]", "space.seq_len=32", "space.context_len=64",
        "latency.prompt_len=32", "latency.context_len=64", "latency.rounds=1",
        "latency.repeats=1", "latency.warmup=1", "latency.target_ms=1.0", "latency.max_iterations=2",
        "accuracy.tokens=1024", "accuracy.val_tokens=512", "accuracy.max_bytes=40000",
        "search.trials=4", "search.batch_size=4", "search.constraints={decode_ms: 1000.0}",
    ], progress=False)
    assert result.objectives == ["val_loss", "decode_ms", "prefill_ms"]
    assert result.front
    for row in result.front:
        assert {"val_loss", "perplexity", "decode_ms", "prefill_ms", "memory_mb"} <= set(row)
        assert row["arch"].startswith("v256_d32_")

    [exported] = export_run(result.run_dir, top=1, progress=False)
    assert exported.weights == "lm" and exported.onnx_max_abs_diff <= 1e-4
    framework_model, arch, _ = load_exported(exported.folder)
    standalone = load_slm(exported.folder)
    tokens = torch.randint(0, 256, (1, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(standalone(tokens), framework_model(tokens))
    assert str(arch) == exported.arch
