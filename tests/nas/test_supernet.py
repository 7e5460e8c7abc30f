"""Weight-sharing supernet: extraction parity, exact resume after SIGKILL, the accuracy source."""
import json
import logging
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml

from nas.data import load_dataset
from nas.supernet.config import parse_supernet_config
from nas.supernet.elastic import build_skeleton, build_supernet
from nas.supernet.evaluate import recalibrate_bn
from nas.supernet.train import (MultiResolution, ResolutionBatches, check_resumable, load_checkpoint,
                                supernet_from_checkpoint, train_supernet)
from search_spaces import make_space
from tests.conftest import REPO, tiny_recipe

SPACES = {
    "mbv3": {"resolutions": [16, 24], "widths": [0.5, 0.75], "depths": [1, 2, 3], "kernels": [3, 5, 7],
             "expansions": [3, 6], "num_classes": 10},
    "mobiledet": {"resolutions": [32], "layers_per_stage": 3, "num_classes": 10},
}
# small enough for a few seconds per epoch on one core: 5 steps of 256 digits
TINY_SPACES = {
    "mbv3": {"resolutions": [12, 16], "widths": [0.5], "depths": [1, 2], "kernels": [3, 5],
             "expansions": [3, 4], "num_classes": 10},
    "mobiledet": {"resolutions": [12, 16], "layers_per_stage": 2, "kernels": [3, 5], "expansions": [4, 8],
                  "num_classes": 10},
}
# with a moving average of the weights, so resume, DDP and the accuracy source cover it (a decay
# this low moves it visibly away from the last weights in 10 steps)
TINY_SUPERNET = {"epochs": 2, "batch_size": 256, "num_random": 1, "threads": 1, "validate": False,
                 "calib_batches": 2, "warmup_epochs": 0.5, "ema_decay": 0.9}



def _tiny_space(space_name="mbv3"):
    return make_space(space_name, **TINY_SPACES[space_name])


def _randomise_bn_statistics(module, seed=0):
    # fresh running stats are 0/1, which would hide a wrong slice of them
    g = torch.Generator().manual_seed(seed)
    for name, buf in module.named_buffers():
        if buf.dtype.is_floating_point:
            buf.copy_(torch.rand(buf.shape, generator=g) + 0.5)


# (space, share_block_types): mobiledet's block types share convolutions or keep their own
FORMS = [(name, True) for name in sorted(SPACES)] + [("mobiledet", False)]


@pytest.mark.parametrize("space_name,share", FORMS)
def test_extracted_network_equals_supernet_path(space_name, share):
    space = make_space(space_name, **SPACES[space_name])
    supernet = build_supernet(space, seed=0, share_block_types=share)
    with torch.no_grad():
        for p in supernet.parameters():  # the zero-initialised BN scales would mask residual branches
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.1)
    _randomise_bn_statistics(supernet)
    supernet.eval()
    rng = np.random.default_rng(0)
    archs = [supernet.largest(), supernet.smallest()] + [space.sample(rng) for _ in range(3)]
    for arch in archs:
        x = space.example_input(arch, batch_size=2, seed=1)
        with torch.no_grad():
            via_string = supernet(x, str(arch))  # activation by canonical string
            extracted = supernet.extract(arch)
            standalone = extracted(x)
        assert (via_string - standalone).abs().max().item() <= 1e-5, str(arch)
        assert via_string.shape == (2, 10)


@pytest.mark.parametrize("space_name", sorted(SPACES))
def test_skeleton_has_the_built_networks_modules_and_shapes(space_name):
    space = make_space(space_name, **SPACES[space_name])
    for arch in [build_supernet(space).largest(), space.sample(np.random.default_rng(3))]:
        skeleton, built = build_skeleton(space, arch), space.build(arch)
        assert [type(m) for m in skeleton.modules()] == [type(m) for m in built.modules()]
        built_tensors = {**dict(built.named_parameters()), **dict(built.named_buffers())}
        tensors = {**dict(skeleton.named_parameters()), **dict(skeleton.named_buffers())}
        assert {k: v.shape for k, v in tensors.items()} == {k: v.shape for k, v in built_tensors.items()}
        assert all(v.is_meta for v in tensors.values())


def test_skeleton_builds_write_to_real_tensors_as_usual():
    # only meta tensors' writes are skipped: a constructor touching real memory is unchanged
    class WithRealBuffer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.real = torch.zeros(3, device="cpu").fill_(2.0)
            self.linear = torch.nn.Linear(3, 2)

    class Space:
        def build(self, arch):
            return WithRealBuffer()

    skeleton = build_skeleton(Space(), None)
    assert skeleton.real.tolist() == [2.0, 2.0, 2.0]
    assert skeleton.linear.weight.is_meta and skeleton.linear.weight.shape == (2, 3)


def test_inactive_weights_get_no_gradient():
    space = make_space("mbv3", **SPACES["mbv3"])
    supernet = build_supernet(space, seed=0).train()
    arch = space.parse("r16_w0.5:ir_k3_e3:ir_k3_e3:ir_k3_e3:ir_k3_e3:ir_k3_e3")
    supernet(space.example_input(arch, 4), arch).sum().backward()
    own = dict(supernet.named_parameters())
    # depth 1: the second layer of stage 1 is not on the path
    assert own["net.blocks.1.1.conv_pw.weight"].grad is None
    # kernel 3 is the centre of the 7x7 depthwise kernel; expansion 3 of 6 the first half
    dw = own["net.blocks.1.0.conv_dw.weight"].grad
    used = dw[:, :, 2:5, 2:5]
    assert used.abs().sum() > 0 and dw.abs().sum() == used.abs().sum()
    pw = own["net.blocks.1.0.conv_pw.weight"].grad
    assert pw[pw.shape[0] // 2:].abs().sum() == 0 and pw[:8].abs().sum() > 0


def test_mobiledet_block_types_train_one_set_of_convolutions():
    space = make_space("mobiledet", **TINY_SPACES["mobiledet"])
    supernet = build_supernet(space, seed=0).train()
    own = dict(supernet.named_parameters())
    expand = "layers.s0_l0.expand"  # (16 * 8, 16, 5, 5): the largest fused expansion
    assert own[expand].shape == (128, 16, 5, 5)

    def only(grad, index):
        """Whether ``grad`` is non-zero inside ``index`` and exactly zero outside it (a
        comparison of sums would depend on the machine's order of float additions)."""
        outside = grad.clone()
        outside[index] = 0
        return bool(grad[index].abs().sum() > 0) and not outside.any()

    def grads(arch):
        supernet.zero_grad(set_to_none=True)
        supernet(space.example_input(space.parse(arch), 4), arch).sum().backward()
        return {name: p.grad for name, p in own.items()}

    rest = ":ir_k3_e4-skip" * 4
    # an inverted bottleneck's 1x1 expansion is the centre tap of the leading 64 filters
    g = grads("r16:ir_k3_e4-skip" + rest)
    assert only(g[expand], (slice(None, 64), slice(None), slice(2, 3), slice(2, 3)))
    assert g["layers.s0_l0.depthwise"] is not None and g["layers.s0_l0.tucker"] is None
    assert g["layers.s0_l0.norms.fu.bn1.weight"] is None  # norms stay per type
    # a fused 3x3 expansion by 8 is the centre 3x3 of every filter, feeding the same projection
    g = grads("r16:fu_k3_e8-skip" + rest)
    assert only(g[expand], (slice(None), slice(None), slice(1, 4), slice(1, 4)))
    assert g["layers.s0_l0.project"].abs().sum() > 0 and g["layers.s0_l0.depthwise"] is None
    # a Tucker block compresses with the centre taps and expands with the projection's leading inputs
    g = grads("r16:tu_k5_i0.25_o0.25-skip" + rest)
    assert only(g[expand], (slice(None), slice(None), 2, 2))
    assert only(g["layers.s0_l0.project"], (slice(None), slice(None, 8)))


def test_mobiledet_separate_block_types_train_their_own_convolutions():
    space = make_space("mobiledet", **TINY_SPACES["mobiledet"])
    supernet = build_supernet(space, seed=0, share_block_types=False).train()
    own = dict(supernet.named_parameters())
    layer = "layers.s0_l0.blocks"
    assert not any(name.startswith("layers.s0_l0.norms") or name.endswith(".expand") for name in own)

    def touched(arch):
        supernet.zero_grad(set_to_none=True)
        supernet(space.example_input(space.parse(arch), 4), arch).sum().backward()
        return {name.split(".")[3] for name, p in own.items() if name.startswith(layer) and p.grad is not None}

    rest = ":ir_k3_e4-skip" * 4
    assert touched("r16:tu_k3_i0.25_o0.25-skip" + rest) == {"tu"}
    assert touched("r16:ir_k3_e4-skip" + rest) == {"ir"}
    assert touched("r16:fu_k5_e8-skip" + rest) == {"fu"}
    # within a type the choices are still slices: a 3x3 Tucker core at ratio 0.25 is the centre
    # of the leading filters of the 5x5 one at 0.75
    core = own[f"{layer}.tu.conv.conv.weight"]
    supernet.zero_grad(set_to_none=True)
    arch = "r16:tu_k3_i0.25_o0.25-skip" + rest
    supernet(space.example_input(space.parse(arch), 4), arch).sum().backward()
    index = (slice(None, 8), slice(None, 8), slice(1, 4), slice(1, 4))  # of (24, 16, 5, 5)
    outside = core.grad.clone()
    outside[index] = 0
    assert core.grad[index].abs().sum() > 0 and not outside.any()


def test_bn_recalibration_uses_calibration_statistics():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1, bias=False), torch.nn.BatchNorm2d(4))
    batches = [torch.randn(8, 3, 5, 5, generator=torch.Generator().manual_seed(i)) * (i + 1) for i in range(3)]
    recalibrate_bn(model, batches)
    with torch.no_grad():
        outs = [model[0](b) for b in batches]
    expected = torch.stack([o.mean(dim=(0, 2, 3)) for o in outs]).mean(0)
    assert torch.allclose(model[1].running_mean, expected, atol=1e-5)
    assert not model.training and model[1].momentum == 0.1


def test_config_rejects_unknown_and_bad_keys():
    with pytest.raises(ValueError, match=r"supernet\.epoch: unknown key \(did you mean 'epochs'\?\)"):
        parse_supernet_config({"epoch": 3})
    with pytest.raises(ValueError, match=r"supernet\.num_random: must be >= 0"):
        parse_supernet_config({"num_random": -1})
    with pytest.raises(ValueError, match=r"supernet\.distill: expected bool"):
        parse_supernet_config({"distill": "yes"})
    assert parse_supernet_config({"lr": 1}).lr == 1.0
    with pytest.raises(ValueError, match=r"supernet\.largest_first_epochs: must be < epochs"):
        parse_supernet_config({"epochs": 2, "largest_first_epochs": 2})
    with pytest.raises(ValueError, match=r"supernet\.random_sampler: 'flops' is not one of"):
        parse_supernet_config({"random_sampler": "flops"})
    with pytest.raises(ValueError, match=r"supernet\.resolution_per: 'step' is not one of \['batch', 'member'\]"):
        parse_supernet_config({"resolution_per": "step"})
    with pytest.raises(ValueError, match=r"supernet\.ema_decay: must be in \[0, 1\)"):
        parse_supernet_config({"ema_decay": 1})
    with pytest.raises(ValueError, match=r"supernet\.sandwich_smallest: false needs num_random >= 1"):
        parse_supernet_config({"sandwich_smallest": False, "num_random": 0})
    with pytest.raises(ValueError, match=r"supernet\.share_block_types: expected bool"):
        parse_supernet_config({"share_block_types": "no"})


def test_a_space_with_one_block_type_refuses_separate_block_types():
    space = make_space("mbv3", **TINY_SPACES["mbv3"])
    with pytest.raises(ValueError, match=r"supernet\.share_block_types: false: the mbv3 supernet has one block"):
        build_supernet(space, share_block_types=False)


def test_largest_first_phase_trains_only_the_largest(tmp_path):
    config = parse_supernet_config({**TINY_SUPERNET, "largest_first_epochs": 1})
    result = train_supernet(_tiny_space(), config, tmp_path / "sn", seed=0, progress=False, log=None)
    steps_per_epoch = len(result.history) // 2
    first, rest = result.history[:steps_per_epoch], result.history[steps_per_epoch:]
    assert all(h["smallest"] is None and h["random"] is None for h in first)
    assert all(h["smallest"] is not None and h["random"] is not None for h in rest)
    assert result.epochs[0]["smallest"] is None and result.epochs[1]["smallest"] is not None


def _write_recipe(tmp_path, name="sn", space_name="mbv3", **supernet):
    recipe = tiny_recipe(tmp_path, space={"name": space_name, **TINY_SPACES[space_name]},
                         supernet={**TINY_SUPERNET, **supernet})
    recipe["name"] = name
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _losses(history):
    return [(h["step"], h["largest"], h["smallest"], h["random"]) for h in history]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Uninterrupted tiny training runs, one per space and ``supernet:`` overrides of
    ``TINY_SUPERNET``, trained on first use (the slow part)."""
    runs = {}

    def get(space_name, **overrides):
        key = (space_name, tuple(sorted(overrides.items())))
        if key not in runs:
            out = tmp_path_factory.mktemp(f"reference_{space_name}") / "supernet"
            config = parse_supernet_config({**TINY_SUPERNET, **overrides})
            runs[key] = train_supernet(_tiny_space(space_name), config, out, seed=0, progress=False, log=None)
        return runs[key]

    return get


@pytest.fixture(scope="module")
def reference(trained):
    return trained("mbv3")


def test_size_level_sampler_draws_other_random_subnetworks(tmp_path, reference):
    config = parse_supernet_config({**TINY_SUPERNET, "epochs": 1, "random_sampler": "size_level"})
    result = train_supernet(_tiny_space(), config, tmp_path / "sn", seed=0, progress=False, log=None)
    first, uniform = result.history[0], reference.history[0]
    # same weights, batch and sandwich ends; only the random member is drawn otherwise
    assert (first["largest"], first["smallest"]) == (uniform["largest"], uniform["smallest"])
    assert first["random"] != uniform["random"]


def test_sandwich_without_its_smallest_member(tmp_path, reference):
    config = parse_supernet_config({**TINY_SUPERNET, "epochs": 1, "sandwich_smallest": False})
    result = train_supernet(_tiny_space(), config, tmp_path / "sn", seed=0, progress=False, log=None)
    assert all(h["smallest"] is None and h["random"] is not None for h in result.history)
    first, sandwich = result.history[0], reference.history[0]
    # the first step sees the same weights, batch and random draw; only its sum lacks the smallest
    assert (first["largest"], first["random"]) == (sandwich["largest"], sandwich["random"])
    assert first["loss"] == pytest.approx(sandwich["loss"] - sandwich["smallest"])
    # after one update without the smallest's gradient the weights differ
    assert result.history[1]["largest"] != reference.history[1]["largest"]


def test_members_train_at_their_own_resolutions(trained):
    history = trained("mbv3", resolution_per="member").history
    low, high = min(TINY_SPACES["mbv3"]["resolutions"]), max(TINY_SPACES["mbv3"]["resolutions"])
    assert all(h["resolution"] is None and h["resolutions"][:2] == [high, low] for h in history)
    # each random member keeps the resolution drawn with it, so both occur
    assert {r for h in history for r in h["resolutions"][2:]} == {low, high}
    batch_history = trained("mbv3").history
    assert all(h["resolutions"] == [h["resolution"]] * 3 for h in batch_history)


def test_every_resolution_key_gives_one_image_per_resolution_and_its_label():
    splits = {r: load_dataset("digits", r).train for r in (12, 16)}
    train_set = MultiResolution(splits)
    (small, large), label = train_set[(None, 5)]
    assert torch.equal(small, splits[12][5][0]) and torch.equal(large, splits[16][5][0])
    assert label == splits[12][5][1] == splits[16][5][1]
    order = [list(b) for b in ResolutionBatches(len(train_set), 64, [12, 16], torch.Generator().manual_seed(0))]
    every = [list(b) for b in ResolutionBatches(len(train_set), 64, [12, 16], torch.Generator().manual_seed(0),
                                                every_resolution=True)]
    # the same batches in the same order, only without a resolution of their own
    assert [[i for _, i in b] for b in every] == [[i for _, i in b] for b in order]
    assert {r for b in every for r, _ in b} == {None}


def test_checkpoint_from_before_a_config_key_resumes_with_its_default(tmp_path, reference):
    state = load_checkpoint(reference.output / "last.pt")
    del state["config"]["random_sampler"]  # as written before the key existed
    (tmp_path / "old").mkdir()
    torch.save(state, tmp_path / "old" / "last.pt")
    assert check_resumable(_tiny_space(), parse_supernet_config(TINY_SUPERNET), tmp_path / "old", 0) == 2
    with pytest.raises(ValueError, match=r"different settings \(supernet\.random_sampler\)"):
        check_resumable(_tiny_space(), parse_supernet_config({**TINY_SUPERNET, "random_sampler": "size_level"}),
                        tmp_path / "old", 0)


@pytest.mark.parametrize("space_name, overrides",
                         [(name, {}) for name in sorted(TINY_SPACES)]
                         + [("mbv3", {"resolution_per": "member"}), ("mobiledet", {"share_block_types": False})])
def test_resume_after_sigkill_reproduces_the_loss_curve(tmp_path, trained, space_name, overrides):
    from nas.cli import main

    reference = trained(space_name, **overrides)
    recipe = _write_recipe(tmp_path, space_name=space_name, output=str(tmp_path / "killed"), **overrides)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "nas.cli", "train-supernet", str(recipe), "--no-progress"],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = tmp_path / "killed" / "last.pt"
    deadline = time.monotonic() + 120
    try:
        while not last.is_file():
            if proc.poll() is not None:
                pytest.fail(f"training exited early: {proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("no checkpoint after 120 s")
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)  # mid-way through epoch 2
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = load_checkpoint(last)["epoch"]
    assert 1 <= killed_at < TINY_SUPERNET["epochs"]
    assert not (tmp_path / "killed" / "supernet.pt").exists()

    assert main(["train-supernet", str(recipe), "--no-progress"]) == 0
    final = load_checkpoint(tmp_path / "killed" / "supernet.pt")
    resumed = load_checkpoint(last)
    assert "resuming" in (tmp_path / "killed" / "train.log").read_text()
    assert _losses(resumed["history"]) == _losses(reference.history)  # bit-for-bit, every step
    uninterrupted = load_checkpoint(reference.checkpoint)
    for weights in ("model", "ema"):
        for key, value in uninterrupted[weights].items():
            assert torch.equal(final[weights][key], value), (weights, key)
    logged = [json.loads(line) for line in (tmp_path / "killed" / "losses.jsonl").read_text().splitlines()]
    assert _losses(logged) == _losses(reference.history)  # no duplicated steps from the killed run
    assert (tmp_path / "killed" / "recipe.yaml").is_file()


def test_checkpoint_rebuilds_the_separate_block_types(trained):
    result = trained("mobiledet", share_block_types=False)
    state = load_checkpoint(result.checkpoint)
    for averaged in (False, True):
        supernet = supernet_from_checkpoint(state, averaged=averaged)
        assert not supernet.share_block_types
        weights = state["ema" if averaged else "model"]
        assert all(torch.equal(value, weights[name]) for name, value in supernet.state_dict().items())


def test_supernet_scores_precision_variants_as_quantized_subnetworks(tmp_path, reference):
    from hardware.store import MeasurementStore
    from nas.accuracy import candidate_accuracy
    from nas.sources import ACCURACY_SOURCES, RunContext, make_source

    space = make_space("mbv3", **TINY_SPACES["mbv3"], precisions=["fp32", "int8"], precision_granularity="suffix")
    with MeasurementStore(tmp_path / "store.db") as store:
        ctx = RunContext(space, store, reference.output.parent, seed=0, base_dir=tmp_path, progress=False)
        source = make_source({"supernet": "run", "calib_batches": 2}, ACCURACY_SOURCES, ctx, "accuracy")
        arch = space.float_arch(space.sample(np.random.default_rng(0)))
        int8 = space.with_precisions(arch, {"s3": "int8", "s4": "int8", "head": "int8"})
        float_row, int8_row = source.evaluate([arch, int8])
        # the float sub-network's weights, quantized: what export ships
        model = source.trained_model(int8)
        splits = source.evaluator.splits(space.input_shape(arch)[-1])
        assert int8_row["accuracy"] == candidate_accuracy(space, int8, model, splits, source.batch_size * 4,
                                                          source.calibration_inputs(int8))
        assert float_row == source.evaluate([str(arch)])[0]


def test_weight_average_never_feeds_back_and_is_what_estimates_use(tmp_path, reference):
    from nas.supernet.train import supernet_from_checkpoint

    config = parse_supernet_config({**TINY_SUPERNET, "ema_decay": 0})
    plain = load_checkpoint(train_supernet(_tiny_space(), config, tmp_path / "sn", seed=0, progress=False,
                                           log=None).checkpoint)
    averaged = load_checkpoint(reference.checkpoint)
    assert plain["ema"] is None
    for key, value in averaged["model"].items():  # the same weights trained with and without it
        assert torch.equal(plain["model"][key], value), key
    assert any(not torch.equal(averaged["ema"][k], v) for k, v in averaged["model"].items())
    for state, use_average in ((averaged, None), (averaged, True), (averaged, False), (plain, None)):
        loaded = supernet_from_checkpoint(state, use_average).state_dict()
        expected = state["model"] if use_average is False or state["ema"] is None else state["ema"]
        assert all(torch.equal(loaded[k], v) for k, v in expected.items())
    with pytest.raises(ValueError, match="no moving average.*ema_decay 0"):
        supernet_from_checkpoint(plain, averaged=True)


def test_checkpoint_of_another_tensor_layout_is_refused_by_name(reference):
    from nas.supernet.train import supernet_from_checkpoint

    state = load_checkpoint(reference.checkpoint)
    assert state["layout"] == 1
    supernet_from_checkpoint(state)
    with pytest.raises(ValueError, match="tensor layout 7; this version of hwnas builds layout 1"):
        supernet_from_checkpoint({**state, "layout": 7})


def test_missing_dataset_path_is_named(tmp_path, capsys):
    from nas.cli import main

    missing = tmp_path / "no" / "cifar10"
    recipe = _write_recipe(tmp_path, dataset="cifar10", root=str(missing))
    assert main(["train-supernet", str(recipe), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "does not exist" in err


def test_supernet_accuracy_source_and_exported_weights(tmp_path, reference):
    from hardware.store import MeasurementStore
    from nas.accuracy import evaluate_accuracy
    from nas.data import load_dataset
    from nas.sources import ACCURACY_SOURCES, RunContext, make_source

    space = _tiny_space()
    # `supernet: run` finds the supernet where train-supernet puts it for a recipe
    run_dir = reference.output.parent
    with MeasurementStore(tmp_path / "store.db") as store:
        ctx = RunContext(space, store, run_dir, seed=0, base_dir=tmp_path, progress=False)
        source = make_source({"supernet": "run", "calib_batches": 2}, ACCURACY_SOURCES, ctx, "accuracy")
        archs = [space.sample(np.random.default_rng(i)) for i in range(3)]
        first = source.evaluate(archs)
        assert all(0.0 <= r["accuracy"] <= 100.0 for r in first)
        assert source.evaluate(archs) == first  # cached in the store, and deterministic
        # the network export writes reproduces the estimate exactly
        model = source.trained_model(archs[0])
        val = load_dataset("digits", archs[0].resolution).val
        assert evaluate_accuracy(model, val) == first[0]["accuracy"]
        outside = "r32" + str(archs[0])[str(archs[0]).index("_"):]
        with pytest.raises(ValueError, match="r32"):
            source.evaluate([outside])
        with pytest.raises(FileNotFoundError, match="nothing.pt"):
            make_source({"supernet": "nothing.pt"}, ACCURACY_SOURCES, ctx, "accuracy")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_mixed_precision_training_on_gpu(tmp_path):
    config = parse_supernet_config({**TINY_SUPERNET, "epochs": 1, "device": "cuda", "validate": True})
    result = train_supernet(_tiny_space(), config, tmp_path / "gpu", seed=0, progress=False, log=None)
    state = load_checkpoint(tmp_path / "gpu" / "last.pt")
    assert state["scaler"], "the fp16 gradient scaler should be active on CUDA"
    assert all(np.isfinite(h["loss"]) for h in result.history)
    assert 0.0 <= result.epochs[0]["val_largest"] <= 100.0


def test_search_with_supernet_accuracy_exports_the_estimated_weights(tmp_path, reference, caplog):
    from nas.accuracy import evaluate_accuracy
    from nas.data import load_dataset
    from nas.export import export_run, load_exported
    from nas.search import run_search

    recipe = tiny_recipe(tmp_path, space={"name": "mbv3", **TINY_SPACES["mbv3"]},
                         accuracy={"supernet": "run", "calib_batches": 2},
                         search={"controller": "random", "trials": 3, "batch_size": 3},
                         output=str(reference.output.parent))
    result = run_search(recipe, progress=False)
    assert len(result.trials) == 3 and result.front
    exported = export_run(result.run_dir, top=1, progress=False)
    model, arch, _ = load_exported(exported[0].folder)
    assert exported[0].weights == "supernet"
    # the exported network (inherited + recalibrated weights, before fine-tuning) scores
    # exactly what the supernet predicted during the search
    acc = evaluate_accuracy(model, load_dataset("digits", arch.resolution).val)
    assert acc == pytest.approx(result.front[0]["accuracy"], abs=1e-9)

    # fine-tuning starts from exactly those weights and records both numbers
    from nas.cli import main

    with caplog.at_level(logging.INFO, logger="nas.commands.supernet"):
        assert main(["finetune", str(result.run_dir), "--epochs", "1", "--rank", "1"]) == 0
    assert "fine-tuning rank 1: epoch 1/1 done" in caplog.text  # not silent for minutes
    record = json.loads((exported[0].folder / "finetune.json").read_text())
    assert record["exported_accuracy"] == pytest.approx(record["predicted_accuracy"], abs=1e-9)
    assert 0.0 <= record["finetuned_accuracy"] <= 100.0
    assert (exported[0].folder / "finetuned.pt").is_file()
    again, _, _ = load_exported(exported[0].folder)  # model.pt itself is left untouched
    assert all(torch.equal(again.state_dict()[k], v) for k, v in model.state_dict().items())
    assert main(["finetune", str(result.run_dir), "--epochs", "1", "--rank", "7"]) == 2
