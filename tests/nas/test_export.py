"""`hwnas export` of a hybrid_slm run: the space's extra config rebuilds the model alone."""
from pathlib import Path

import torch

from nas.export import export_run, load_exported
from nas.search import run_search
from search_spaces.slm.export import load_slm

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "slm_cpu.yaml"


def test_slm_export_writes_a_config_that_rebuilds_the_model(tmp_path):
    result = run_search(RECIPE, [
        f"output={tmp_path / 'run'}", f"store={tmp_path / 'm.db'}",
        "space.widths=[32]", "space.depths=[2]", "space.seq_len=32", "space.context_len=64",
        "latency.prompt_len=32", "latency.context_len=64", "latency.rounds=1",
        "latency.repeats=1", "latency.warmup=1", "latency.target_ms=1.0", "latency.max_iterations=2",
        "accuracy.tokens=512", "accuracy.val_tokens=256", "accuracy.max_bytes=20000",
        "search.trials=2", "search.batch_size=2", "search.constraints={decode_ms: 1000.0}",
    ], progress=False)
    [exported] = export_run(result.run_dir, top=1, progress=False)
    assert exported.weights == "lm" and exported.onnx_max_abs_diff <= 1e-4
    assert (exported.folder / "config.json").is_file()
    framework_model, arch, _ = load_exported(exported.folder)
    standalone = load_slm(exported.folder)
    tokens = torch.randint(0, 256, (1, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(standalone(tokens), framework_model(tokens))
    assert str(arch) == exported.arch
