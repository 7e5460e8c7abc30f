"""Supernet training on 2 processes (torchrun, gloo on CPU) against the 1-process run."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from tests.conftest import REPO

# (the training modules are imported inside the tests: the spawned ranks of the batch-norm
# test import this module, and need only torch, timm and nas.supernet.distributed)

# SGD at a small lr keeps float rounding from growing fast: the 2-process curve stays within
# 1e-7 (relative) of the 1-process one for the first epoch and parts by up to 1.6e-5 by step
# 10 (torch 2.14, timm 1.0.31; the same with or without the kill and resume).  With AdamW at lr 0.01 (the tiny
# default) both runs still agree to ~1e-6 for three steps and then part by up to 1e-2,
# exactly as far as one process parts from itself when its initial weights are perturbed
# by 1e-7: Adam normalises near-zero gradients, so any rounding difference grows.
SGD = {"optimizer": "sgd", "lr": 0.01}
RTOL = 1e-4  # on every logged loss; observed <= 1.6e-5
LOSS_KEYS = ("loss", "largest", "smallest", "random")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(tmp_path, recipe, log_name):
    """``torchrun --nproc_per_node 2 -m nas.cli train-supernet RECIPE`` in the background."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           "-m", "nas.cli", "train-supernet", str(recipe), "--no-progress"]
    out = open(tmp_path / f"{log_name}.out", "w")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT), out


def _finish(proc, out, timeout=240):
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # torchrun takes its workers down with it
        proc.wait(timeout=60)
        pytest.fail(f"torchrun still running after {timeout} s")
    finally:
        out.close()
    return proc.returncode


def _log(folder):
    return [json.loads(line) for line in (folder / "losses.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_processes_match_one_process_and_resume(tmp_path):
    from nas.cli import main
    from nas.supernet.train import load_checkpoint
    from tests.nas.test_supernet import _write_recipe

    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["train-supernet", str(_write_recipe(tmp_path, "one", output=str(one), **SGD)),
                 "--no-progress"]) == 0

    recipe = _write_recipe(tmp_path, "two", output=str(two), **SGD)
    proc, out = _torchrun(tmp_path, recipe, "killed")
    deadline = time.monotonic() + 180
    try:
        while not (two / "last.pt").is_file():
            if proc.poll() is not None:
                pytest.fail(f"torchrun exited early: {(tmp_path / 'killed.out').read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail("no checkpoint after 180 s")
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # during epoch 2; torchrun stops its workers
        _finish(proc, out, timeout=120)
    assert load_checkpoint(two / "last.pt")["epoch"] == 1
    assert not (two / "supernet.pt").exists()

    proc, out = _torchrun(tmp_path, recipe, "resumed")
    rc = _finish(proc, out)
    printed = (tmp_path / "resumed.out").read_text()
    assert rc == 0, printed[-3000:]

    # rank 0 alone writes and prints: one set of files, each message once
    assert sorted(p.name for p in two.iterdir()) == ["last.pt", "losses.jsonl", "recipe.yaml",
                                                      "supernet.pt", "train.log"]
    assert printed.count("training a mbv3 supernet") == 1 and printed.count("2 processes") == 1
    assert sum(line.startswith("supernet: ") for line in printed.splitlines()) == 1
    train_log = (two / "train.log").read_text()
    assert train_log.count("resuming") == 1 and train_log.count("epoch 2/2:") == 1

    # the resumed 2-process log is the 1-process log: same steps, resolutions and members,
    # the losses (means over the global batch) equal up to float rounding
    single, double = _log(one), _log(two)
    assert [(h["epoch"], h["step"], h["resolution"]) for h in double] == \
        [(h["epoch"], h["step"], h["resolution"]) for h in single]
    assert len(single) == 2 * 5
    for a, b in zip(single, double):
        assert b["lr"] == pytest.approx(a["lr"], rel=1e-12)
        for key in LOSS_KEYS:
            assert b[key] == pytest.approx(a[key], rel=RTOL), (a["step"], key)
    assert _log(two) == load_checkpoint(two / "last.pt")["history"]  # no duplicated steps

    # and so are the weights, the batch-norm running statistics (global batch on every rank) and
    # their moving average, up to the same rounding drift: after 10 steps they pass rtol 1e-3,
    # atol 1e-4 (measured; largest absolute difference 6.6e-4, every element within 1e-3 of its
    # own size or 1e-4)
    for weights in ("model", "ema"):
        ref, got = load_checkpoint(one / "supernet.pt")[weights], load_checkpoint(two / "supernet.pt")[weights]
        assert ref.keys() == got.keys()
        for key, value in ref.items():
            if value.dtype.is_floating_point:
                assert torch.allclose(got[key], value, rtol=1e-3, atol=1e-4), (weights, key)
            else:
                assert torch.equal(got[key], value), (weights, key)


def test_global_batch_not_divisible_by_the_processes_is_refused(tmp_path, monkeypatch, capsys):
    from nas.cli import main
    from tests.nas.test_supernet import _write_recipe

    # what torchrun --nproc_per_node 2 sets for rank 0: refused before joining any group
    for key, value in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(key, value)
    recipe = _write_recipe(tmp_path, "odd", output=str(tmp_path / "odd"), batch_size=255)
    assert main(["train-supernet", str(recipe), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "supernet.batch_size 255" in err and "not divisible by the 2 training processes" in err
    assert not (tmp_path / "odd").exists()


def _global_norm_rank(rank, init, world_size):
    """One rank of :func:`test_global_batch_norm_equals_one_batch_norm_on_the_whole_batch`."""
    import torch.distributed as dist
    from timm.layers import BatchNormAct2d

    from nas.supernet.distributed import with_global_batch_norm

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world_size)
    try:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(8, 4, 3, 3, generator=g) * 3 + 1
        weights = torch.randn(8, 4, 3, 3, generator=g)  # a loss that is not symmetric in the samples
        reference = BatchNormAct2d(4, act_layer=torch.nn.SiLU)
        with torch.no_grad():
            reference.weight.copy_(torch.rand(4, generator=g) + 0.5)
            reference.bias.copy_(torch.randn(4, generator=g))
        ours = with_global_batch_norm(reference, dist.group.WORLD)
        assert type(ours).__name__ == "GlobalBatchNormAct2d" and type(reference) is BatchNormAct2d

        whole = x.clone().requires_grad_()
        y_whole = reference(whole)
        (y_whole * weights).sum().backward()
        share = slice(rank * 4, rank * 4 + 4)
        part = x[share].clone().requires_grad_()
        y_part = ours(part)
        (y_part * weights[share]).sum().backward()

        assert torch.allclose(y_part, y_whole[share], atol=1e-5)
        assert torch.allclose(part.grad, whole.grad[share], atol=1e-5)
        # the whole-batch loss is the sum of the ranks' losses, so its gradient is the sum of theirs
        for name in ("weight", "bias"):
            local = getattr(ours, name).grad.clone()
            dist.all_reduce(local)
            assert torch.allclose(local, getattr(reference, name).grad, atol=1e-5), name
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            got, want = getattr(ours, name).float(), getattr(reference, name).float()
            assert torch.allclose(got, want, atol=1e-6), name
        ours.eval(), reference.eval()
        assert torch.allclose(ours(x[share]), reference(x[share]), atol=1e-6)  # eval: running stats
    finally:
        dist.destroy_process_group()


def test_global_batch_norm_equals_one_batch_norm_on_the_whole_batch(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_global_norm_rank, args=(f"file://{tmp_path / 'rendezvous'}", 2), nprocs=2, join=True)


def test_batch_norm_of_unknown_behaviour_is_refused():
    from nas.supernet.distributed import with_global_batch_norm

    class OwnNorm(torch.nn.BatchNorm2d):  # its forward might do more than F.batch_norm
        pass

    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
    converted = with_global_batch_norm(plain, None)
    assert type(plain[1]) is torch.nn.BatchNorm2d  # the original is left as it was
    assert type(converted[1]).__name__ == "GlobalBatchNorm2d"
    with pytest.raises(ValueError, match=r"batch norm '1' of type .*OwnNorm"):
        with_global_batch_norm(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), OwnNorm(4)), None)
