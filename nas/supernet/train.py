"""Supernet training: sandwich rule, in-place distillation, exact resume.

Every step (the sandwich rule of BigNAS / AttentiveNAS):

1. the batch comes at one resolution of the space, drawn per batch as in
   once-for-all, and every sub-network of the step uses it (``resolution_per:
   batch``, the default); with ``resolution_per: member`` it comes at every
   resolution and each sub-network takes its own: the largest the space's
   largest, the smallest its smallest, a random one the resolution drawn with
   it;
2. the *largest* sub-network is trained on the labels (label-smoothed CE);
3. the *smallest* (unless ``sandwich_smallest`` is off) and ``num_random``
   random sub-networks are trained on the largest one's soft predictions
   (in-place distillation; plain CE when ``distill`` is off).
   ``random_sampler`` draws them with the space's uniform sampler (the
   default) or a size level first
   (:meth:`search_spaces.base.SearchSpace.sample_size_level`);
4. gradients of all of them are summed into one optimizer step (SGD-Nesterov
   or AdamW, per-step cosine schedule with optional linear warm-up, no weight
   decay on norms and biases).

With ``ema_decay`` > 0 an exponential moving average of the weights (timm's
``ModelEmaV3``, updated after every step) is kept beside them, as BigNAS
does; :func:`supernet_from_checkpoint` hands it out in their place.  It never
feeds back into training: the same run without it trains the same weights.

With ``largest_first_epochs`` > 0 the run starts with once-for-all's first
phase: only the largest sub-network trains, then the full sandwich takes over.
A teacher that is still near chance gives in-place distillation nothing to
pass on, and its students' gradients pull the shared weights toward its
near-uniform outputs instead.

Images come from :func:`nas.data.load_dataset` at the batch's resolution:
exactly what a sub-network is later recalibrated and validated on.  Drawing
the resolution per batch (rather than giving the largest network the largest
resolution every step) trains every resolution with the full sandwich; at
the small resolutions used on CPU, weights trained at one resolution barely
transfer to another.  Per member, the sub-networks next to the sandwich's
ends are no longer trained at every resolution: only the largest ones at the
largest and the smallest ones at the smallest (it ranked worse in
``benchmarks/supernet_ranking.py``).  With per-member resolutions a folder
dataset's augmentations are drawn per resolution, so one image's crops
differ between its resolutions.  Mixed precision (fp16 autocast + gradient
scaling) is used on CUDA only.

Output folder::

    last.pt        full state after the latest finished epoch (atomic write)
    supernet.pt    weights (and their moving average, with ema_decay > 0) + space + config,
                   written when training finishes
    losses.jsonl   one line per step (losses of each sandwich member, lr)
    train.log      epoch summaries
    recipe.yaml    the resolved recipe (written by ``hwnas train-supernet``)

Exact resume: randomness is not carried from one epoch to the next.  Each
epoch draws its data order, augmentations and sampled sub-networks from
generators seeded by ``(seed, epoch)``, so restarting from the checkpoint of
epoch ``e`` replays epoch ``e+1`` exactly as an uninterrupted run would; the
checkpoint holds model, optimizer, scheduler and grad-scaler states, the
epoch/step counters and the loss history.

Several processes (DistributedDataParallel)::

    torchrun --nproc_per_node 2 -m nas.cli train-supernet RECIPE

(``--nnodes``/``--master_addr`` as usual for several machines).  Every rank draws
the same global batch order, resolution and sub-networks from the same
``(seed, epoch)`` generators (never from its rank) and trains on its own
contiguous slice of each global batch: ``supernet.batch_size`` stays the *global*
batch and must be divisible by the number of processes.  The sandwich's
forward/backward passes run under DDP's ``no_sync()`` except the last, whose
backward averages the summed gradients over the ranks, so each update is the
one-process update on the same global batch; batch-norm statistics are taken over
the global batch too (:mod:`nas.supernet.distributed`: gloo on CPU, NCCL with one
GPU per rank).  The logged losses are the ranks' mean, i.e. the global-batch
losses.  What remains is float rounding (sums in another order): with SGD, the
tiny recipe of tests/nas/test_supernet_distributed.py logs the same losses on 2
processes as on 1 to 2.2e-7 (relative) on every step.  AdamW amplifies rounding:
the curves agree to ~1e-6 for three steps, then part by up to 1e-2, exactly as
far as one process parts from itself when its initial weights move by 1e-7.  Rank 0
alone writes the output folder and prints, and runs the end-of-epoch validation
while the others wait; every rank resumes from the same ``last.pt``.  Folder
datasets with augmentation draw their random transforms per rank (rank 0 from the
one-process stream), so only there a multi-process run differs from a
one-process run beyond rounding: in which augmentations, not in how many.
"""
from __future__ import annotations

import json
import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from timm.utils import ModelEmaV3
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from nas.data import load_dataset

from nas.supernet.config import RUNTIME_KEYS, SupernetConfig
from nas.supernet.distributed import SINGLE, World, rank_device, wrap
from nas.supernet.elastic import SUPERNETS, Supernet, build_supernet
from nas.supernet.evaluate import SubnetEvaluator, select_device
from search_spaces import make_space

FORMAT = "hwnas-supernet/1"
LAST, FINAL, LOSSES, LOG = "last.pt", "supernet.pt", "losses.jsonl", "train.log"


@dataclass
class TrainResult:
    output: Path
    checkpoint: Path  # supernet.pt
    history: list[dict[str, Any]]  # one entry per optimizer step
    epochs: list[dict[str, Any]]  # one summary per epoch
    resumed_from: int = 0  # epochs already done when this call started
    seconds: float = 0.0  # wall time of this call
    extra: dict[str, Any] = field(default_factory=dict)


def epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """Independent seeds per (run seed, epoch, stream): data order, augmentation, sampling."""
    return int(np.random.SeedSequence([int(seed), int(epoch), int(stream)]).generate_state(1)[0])


class MultiResolution(torch.utils.data.Dataset):
    """Same-ordered datasets, one per resolution, indexed by ``(resolution, index)``.

    ``(None, index)`` gives the image at every resolution, in ascending order of
    resolution, with its label: ``((image, ...), label)``."""

    def __init__(self, datasets: dict[int, Any]):
        self.datasets = datasets
        sizes = {len(d) for d in datasets.values()}
        if len(sizes) != 1:
            raise ValueError(f"per-resolution datasets differ in size: {sorted(sizes)}")
        self.size = sizes.pop()
        self.resolutions = sorted(datasets)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, key: tuple[int, int]):
        resolution, index = key
        if resolution is not None:
            return self.datasets[resolution][index]
        # every resolution's dataset holds the same images in the same order: one label
        items = [self.datasets[r][index] for r in self.resolutions]
        return tuple(image for image, _ in items), items[0][1]


class ResolutionBatches(torch.utils.data.Sampler):
    """Shuffled full batches, each at one resolution drawn for the whole batch.

    Yields lists of ``(resolution, index)``; every draw comes from ``generator``.
    With ``every_resolution`` the keys are ``(None, index)`` (every resolution, see
    :class:`MultiResolution`); the batches' order is the same either way.
    With ``world_size`` > 1, every rank draws the same global batches and yields
    only its own contiguous share (rank ``r``: the ``r``-th of ``world_size`` equal
    parts), so the ranks' shares put together are the one-process batch.
    """

    def __init__(self, size: int, batch_size: int, resolutions: list[int], generator: torch.Generator,
                 rank: int = 0, world_size: int = 1, every_resolution: bool = False):
        if batch_size % world_size:
            raise ValueError(batch_size_message(batch_size, world_size))
        self.size, self.batch_size = size, batch_size
        self.resolutions, self.generator = list(resolutions), generator
        self.share = batch_size // world_size
        self.offset = rank * self.share
        self.every_resolution = every_resolution

    def __len__(self) -> int:
        return self.size // self.batch_size

    def __iter__(self):
        order = torch.randperm(self.size, generator=self.generator).tolist()
        picks = torch.randint(len(self.resolutions), (len(self),), generator=self.generator).tolist()
        for b, pick in enumerate(picks):
            # drawn either way, so both modes see the same batches in the same order
            resolution = None if self.every_resolution else self.resolutions[pick]
            start = b * self.batch_size + self.offset
            yield [(resolution, i) for i in order[start:start + self.share]]


def batch_size_message(batch_size: int, world_size: int) -> str:
    return (f"supernet.batch_size {batch_size} (the global batch) is not divisible by the "
            f"{world_size} training processes; choose a multiple of {world_size}")


def check_world_batch(config: SupernetConfig, world_size: int) -> None:
    """``ValueError`` naming ``supernet.batch_size`` unless every rank gets an equal share."""
    if config.batch_size % world_size:
        raise ValueError(batch_size_message(config.batch_size, world_size))


def at_resolution(space, arch, resolution: int):
    """``arch`` with its input resolution replaced (spaces without that decision: unchanged)."""
    if "resolution" not in space.decisions():
        return arch
    decisions = space.encode(arch)
    decisions["resolution"] = resolution
    return space.decode(decisions)


def space_resolutions(space, supernet: Supernet) -> list[int]:
    """Every input resolution a sub-network of ``space`` can have."""
    values = set(space.decisions().get("resolution", ()))
    values |= {int(space.input_shape(a)[-1]) for a in (supernet.largest(), supernet.smallest())}
    return sorted(int(v) for v in values)


def soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    return -(target_probs * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def make_optimizer(model: torch.nn.Module, config: SupernetConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for param in model.parameters():
        # norm scales/shifts and biases are not weight-decayed (standard for mobile nets)
        (decay if param.dim() > 1 else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum,
                               nesterov=config.momentum > 0)
    return torch.optim.AdamW(groups, lr=config.lr)


def make_schedule(optimizer, total_steps: int, warmup_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"supernet checkpoint {str(path)!r} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path}: not a supernet checkpoint (expected format {FORMAT!r})")
    return state


def supernet_from_checkpoint(state: dict[str, Any], averaged: bool | None = None) -> Supernet:
    """Rebuild the supernet recorded in a checkpoint (``last.pt`` or ``supernet.pt``).

    ``averaged``: the weights' moving average (trained with ``ema_decay`` > 0) instead of the
    last step's weights; None takes the average when the checkpoint holds one."""
    has_average = state.get("ema") is not None
    if averaged and not has_average:
        raise ValueError("this supernet checkpoint holds no moving average of its weights "
                         "(it was trained with supernet.ema_decay 0)")
    space = make_space(state["space"], **state["space_options"])
    supernet = build_supernet(space, state["seed"], _recorded_config(state)["share_block_types"])
    if _layout(state) != supernet.layout:
        raise ValueError(f"this supernet checkpoint holds the {state['space']} supernet's tensor layout "
                         f"{_layout(state)}; this version of hwnas builds layout {supernet.layout}, "
                         f"so the supernet must be trained again")
    use_average = has_average if averaged is None else averaged
    supernet.load_state_dict(state["ema"] if use_average else state["model"])
    return supernet.eval()


def _layout(state: dict[str, Any]) -> int:
    # checkpoints from before layouts were recorded all hold layout 1
    return int(state.get("layout", 1))


def _recorded_config(state: dict[str, Any]) -> dict[str, Any]:
    # keys added since the checkpoint was written held their default's behaviour
    return {**SupernetConfig().to_dict(), **state["config"]}


def _atomic_save(obj: Any, path: Path) -> None:
    # a kill during the write leaves the previous checkpoint intact
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _identity(space, config: SupernetConfig, seed: int) -> dict[str, Any]:
    weights = {k: v for k, v in config.to_dict().items() if k not in RUNTIME_KEYS}
    return {"space": space.name, "space_options": space.options(), "config": weights, "seed": seed,
            "layout": SUPERNETS.get(space.name).layout}


def _check_resumable(state: dict[str, Any], identity: dict[str, Any], path: Path) -> None:
    recorded = _recorded_config(state)
    old = {"space": state["space"], "space_options": state["space_options"], "seed": state["seed"],
           "layout": _layout(state),
           "config": {k: v for k, v in recorded.items() if k not in RUNTIME_KEYS}}
    changed = [k for k in ("space", "space_options", "seed", "layout") if old[k] != identity[k]]
    changed += [f"supernet.{k}" for k in sorted(set(old["config"]) | set(identity["config"]))
                if old["config"].get(k) != identity["config"].get(k)]
    if changed:
        raise ValueError(f"{path} was trained with different settings ({', '.join(changed)}); "
                         f"use another output folder or --restart")


def check_resumable(space, config: SupernetConfig, output: str | Path, seed: int) -> int:
    """Epochs already done in ``output`` (0 if nothing to resume); ``ValueError`` if its
    checkpoint was trained with other settings."""
    last = Path(output) / LAST
    if not last.is_file():
        return 0
    state = load_checkpoint(last)
    _check_resumable(state, _identity(space, config, seed), last)
    return int(state["epoch"])


def train_supernet(space, config: SupernetConfig, output: str | Path, *, seed: int = 0,
                   progress: bool = True, resume: bool = True,
                   log: Callable[[str], None] | None = print, world: World = SINGLE) -> TrainResult:
    """Train (or resume) a supernet for ``space`` into ``output``; see the module docstring.

    ``world`` (from :func:`nas.supernet.distributed.process_group`) makes this one of
    several DDP ranks; every rank calls this with the same arguments."""
    started = time.perf_counter()
    check_world_batch(config, world.size)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    device = rank_device(select_device(config.device), world)
    use_amp = config.amp and device.type == "cuda"
    previous_threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)

    def say(message: str) -> None:
        if not world.main:  # one train.log, one console
            return
        with open(output / LOG, "a") as f:
            f.write(message + "\n")
        if log is not None:
            log(message)

    try:
        # initialisers and in-process augmentations draw from torch's global generator;
        # the fork leaves the caller's state as it was
        with torch.random.fork_rng(devices=[]):
            supernet = build_supernet(space, seed, config.share_block_types).to(device)
            resolutions = space_resolutions(space, supernet)
            per_resolution = {r: load_dataset(config.dataset, r, config.root, augment=config.augment)
                              for r in resolutions}
            splits = per_resolution[resolutions[-1]]
            train_set = MultiResolution({r: s.train for r, s in per_resolution.items()})
            num_classes = space.network_options().get("num_classes")
            if num_classes is not None and splits.num_classes != num_classes:
                raise ValueError(f"dataset {config.dataset!r} has {splits.num_classes} classes but "
                                 f"space {space.name!r} has num_classes={num_classes}")
            steps_per_epoch = len(splits.train) // config.batch_size
            if steps_per_epoch < 1:
                raise ValueError(f"supernet.batch_size {config.batch_size} exceeds the "
                                 f"{len(splits.train)} training images of {config.dataset!r}")
            total_steps = steps_per_epoch * config.epochs
            optimizer = make_optimizer(supernet, config)
            warmup_steps = int(round(config.warmup_epochs * steps_per_epoch))
            schedule = make_schedule(optimizer, total_steps, warmup_steps)
            scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
            identity = _identity(space, config, seed)
            history: list[dict[str, Any]] = []
            epochs: list[dict[str, Any]] = []
            start_epoch = 0
            last = output / LAST
            if not resume and world.main:
                # a restart must not leave an old checkpoint for a later resume to pick up
                for stale in (last, output / FINAL):
                    stale.unlink(missing_ok=True)
            world.barrier()  # no rank looks for last.pt while rank 0 may still remove it
            state = None
            if resume and last.is_file():
                state = load_checkpoint(last)
                _check_resumable(state, identity, last)
                supernet.load_state_dict(state["model"])
                optimizer.load_state_dict(state["optimizer"])
                schedule.load_state_dict(state["scheduler"])
                scaler.load_state_dict(state["scaler"])
                history, epochs = list(state["history"]), list(state["epochs"])
                start_epoch = int(state["epoch"])
                say(f"resuming {output} after epoch {start_epoch}/{config.epochs} "
                    f"(step {state['step']})")
            # every rank keeps the same average: the ranks' weights are equal after each step
            ema = ModelEmaV3(supernet, decay=config.ema_decay) if config.ema_decay else None
            if ema is not None and state is not None:
                ema.module.load_state_dict(state["ema"])
            # the loss log is rewritten from the checkpoint: steps a killed run logged
            # after its last checkpoint are replayed, not duplicated
            if world.main:
                with open(output / LOSSES, "w") as f:
                    f.writelines(json.dumps(entry) + "\n" for entry in history)
            # after loading: DDP's construction checks every rank holds the same weights
            model = wrap(supernet, world, device)

            largest, smallest = supernet.largest(), supernet.smallest()
            evaluator = SubnetEvaluator(supernet, config.dataset, config.root,
                                        calib_batches=config.calib_batches, batch_size=config.batch_size,
                                        seed=seed, workers=config.workers, device=device)
            for epoch in range(start_epoch, config.epochs):
                summary = _train_epoch(model, supernet, train_set, resolutions, config, epoch, seed,
                                       largest, smallest, optimizer, schedule, scaler, use_amp, device,
                                       history, output, progress, steps_per_epoch, world, ema)
                if world.main:
                    # validation touches extracted copies only (no collective), so the other
                    # ranks simply wait for the checkpoint at the barrier below
                    if config.validate:
                        supernet.eval()
                        summary["val_largest"] = evaluator.accuracy(largest)
                        summary["val_smallest"] = evaluator.accuracy(smallest)
                epochs.append(summary)
                if world.main:
                    _atomic_save({"format": FORMAT, **identity, "config": config.to_dict(),
                                  "epoch": epoch + 1, "step": len(history), "model": supernet.state_dict(),
                                  "ema": _average(ema), "optimizer": optimizer.state_dict(),
                                  "scheduler": schedule.state_dict(), "scaler": scaler.state_dict(),
                                  "history": history, "epochs": epochs},
                                 last)
                world.barrier()  # an epoch counts as done on every rank once last.pt is complete
                say(_describe(summary, config.epochs))
            final = output / FINAL
            if world.main:
                _atomic_save({"format": FORMAT, **identity, "config": config.to_dict(),
                              "epoch": config.epochs, "step": len(history), "model": supernet.state_dict(),
                              "ema": _average(ema), "epochs": epochs}, final)
            world.barrier()
    finally:
        torch.set_num_threads(previous_threads)
    return TrainResult(output, final, history, epochs, start_epoch, time.perf_counter() - started)


def _average(ema: ModelEmaV3 | None) -> dict[str, torch.Tensor] | None:
    return None if ema is None else ema.module.state_dict()


def augmentation_seed(seed: int, epoch: int, rank: int) -> int:
    """Seed of a rank's augmentation stream: rank 0 draws the one-process stream; the
    others their own (the same stream would crop every rank's k-th image alike)."""
    if rank == 0:
        return epoch_seed(seed, epoch, 2)
    return int(np.random.SeedSequence([int(seed), int(epoch), 2, int(rank)]).generate_state(1)[0])


def _train_epoch(model, supernet, train_set, resolutions, config, epoch, seed, largest, smallest,
                 optimizer, schedule, scaler, use_amp, device, history, output, progress,
                 steps_per_epoch, world: World = SINGLE, ema: ModelEmaV3 | None = None) -> dict[str, Any]:
    """One epoch; ``model`` is what the forward passes call: ``supernet`` itself, or its
    DDP wrapper on several ranks (see :func:`nas.supernet.distributed.wrap`); ``ema``, when
    given, is updated after every step."""
    space = supernet.space
    # the batch order, resolutions and sub-networks are the same on every rank: never seeded by rank
    generator = torch.Generator().manual_seed(epoch_seed(seed, epoch, 0))
    sampler_rng = np.random.default_rng(epoch_seed(seed, epoch, 1))
    # in-process augmentations draw from the global CPU generator (forked by the caller)
    torch.random.default_generator.manual_seed(augmentation_seed(seed, epoch, world.rank))
    per_member = config.resolution_per == "member"
    batches = ResolutionBatches(len(train_set), config.batch_size, resolutions, generator,
                                world.rank, world.size, every_resolution=per_member)
    loader = DataLoader(train_set, batch_sampler=batches, num_workers=config.workers,
                        pin_memory=device.type == "cuda")
    draw = space.sample if config.random_sampler == "uniform" else space.sample_size_level
    largest_first_steps = int(round(config.largest_first_epochs * steps_per_epoch))
    # the sandwich's fixed members; the random ones follow them in every step's member list
    ends = [largest, smallest] if config.sandwich_smallest else [largest]
    model.train()
    sums = {"loss": 0.0, "largest": 0.0, "smallest": 0.0, "random": 0.0}
    counts = dict.fromkeys(sums, 0)  # steps that trained each member (largest-first steps have one)
    started = time.perf_counter()
    bar = tqdm(loader, total=steps_per_epoch, desc=f"epoch {epoch + 1}/{config.epochs}",
               disable=not (progress and world.main), leave=False, dynamic_ncols=True)
    with open(output / LOSSES, "a") if world.main else nullcontext() as losses_file:
        for images, labels in bar:
            labels = labels.to(device, non_blocking=True)
            by_resolution = dict(zip(resolutions, images)) if per_member else {int(images.shape[-1]): images}
            archs = ends + [draw(sampler_rng) for _ in range(config.num_random)]
            if len(history) < largest_first_steps:
                # drawn and dropped, so the sampler stream is the same whatever the phase length
                archs = archs[:1]
            if per_member:
                # every member keeps its own resolution (the ends': the space's largest and smallest)
                resolution = None
                member_resolutions = [int(space.input_shape(arch)[-1]) for arch in archs]
            else:
                (resolution,) = by_resolution
                archs = [at_resolution(space, arch, resolution) for arch in archs]
                member_resolutions = [resolution] * len(archs)
            by_resolution = {r: by_resolution[r].to(device, non_blocking=True) for r in set(member_resolutions)}
            lr = optimizer.param_groups[0]["lr"]
            optimizer.zero_grad(set_to_none=True)
            teacher = None
            member_losses = []
            for member, arch in enumerate(archs):
                # DDP: gradients accumulate locally until the last member, whose backward
                # averages the step's summed gradients over the ranks once
                last_member = member == len(archs) - 1
                with nullcontext() if last_member or not world.distributed else model.no_sync():
                    with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                        logits = model(by_resolution[member_resolutions[member]], arch)
                    logits = logits.float()
                    if teacher is None or not config.distill:
                        loss = F.cross_entropy(logits, labels, label_smoothing=config.label_smoothing)
                    else:
                        loss = soft_cross_entropy(logits, teacher)
                    scaler.scale(loss).backward()
                if teacher is None:
                    teacher = logits.detach().softmax(dim=1)
                member_losses.append(loss.detach())
            # the local losses are means over equal shares, so their mean over the ranks is
            # the global-batch loss: every rank logs, and judges divergence on, the same values
            member_losses = world.mean(torch.stack(member_losses)).tolist()
            if not all(math.isfinite(v) for v in member_losses):
                raise RuntimeError(f"supernet training diverged at epoch {epoch + 1}, step "
                                   f"{len(history) + 1} (losses {member_losses}); lower supernet.lr")
            scaler.step(optimizer)
            scaler.update()
            schedule.step()
            if ema is not None:
                # the decay depends on the step count alone, so a resumed run averages exactly
                # as an uninterrupted one (timm: the first update copies the weights)
                ema.update(supernet, step=len(history) + 1)
            randoms = member_losses[len(ends):]  # none in the largest-first phase
            entry = {"epoch": epoch + 1, "step": len(history) + 1, "lr": lr, "resolution": resolution,
                     "resolutions": member_resolutions,
                     "loss": sum(member_losses), "largest": member_losses[0],
                     "smallest": member_losses[1] if config.sandwich_smallest and len(member_losses) > 1 else None,
                     "random": sum(randoms) / len(randoms) if randoms else None}
            history.append(entry)
            if world.main:
                losses_file.write(json.dumps(entry) + "\n")
            for key in sums:
                if entry[key] is not None:
                    sums[key] += entry[key]
                    counts[key] += 1
            bar.set_postfix(loss=f"{entry['loss']:.3f}", largest=f"{entry['largest']:.3f}")
    bar.close()
    summary = {"epoch": epoch + 1, "seconds": time.perf_counter() - started,
               **{k: sums[k] / counts[k] if counts[k] else None for k in sums}}
    return summary


def _describe(summary: dict[str, Any], epochs: int) -> str:
    parts = [f"epoch {summary['epoch']}/{epochs}: loss {summary['loss']:.4f} "
             f"(largest {summary['largest']:.4f}"]
    for member in ("smallest", "random"):
        if summary.get(member) is not None:
            parts.append(f", {member} {summary[member]:.4f}")
    parts.append(f"), {summary['seconds']:.1f} s")
    if "val_largest" in summary:
        parts.append(f"; val acc largest {summary['val_largest']:.2f}%, "
                     f"smallest {summary['val_smallest']:.2f}%")
    return "".join(parts)
