"""The recipe's ``supernet:`` section.

The recipe loader hands this mapping over unvalidated; :func:`parse_supernet_config`
checks it (unknown keys and bad values are rejected with the key named)::

    supernet:
      dataset: digits          # nas.data name (digits, digits_distorted: embedded); others need `root`
      root: null               # dataset folder (relative: against the recipe's folder)
      epochs: 10
      batch_size: 64
      optimizer: adamw         # adamw | sgd (Nesterov); per-step cosine schedule after warm-up
      lr: 0.01
      weight_decay: 0.01       # not applied to norms and biases
      warmup_epochs: 0.5
      num_random: 2            # sandwich rule: largest + smallest + num_random random sub-networks,
                               # all at the batch's resolution (drawn per batch from the space's);
                               # 4 ranked better in benchmarks/supernet_ranking.py (mbv3 and
                               # mobiledet), for 1.5-1.9x the training time
      sandwich_smallest: true  # also train the smallest sub-network every step (the sandwich's
                               # lower bound); false: the largest and the random ones only.
                               # false ranked mobiledet seed 0 as well and seed 1 worse in
                               # benchmarks/supernet_ranking.py
      random_sampler: uniform  # how those are drawn: uniform (every decision on its own; the
                               # networks crowd the middle of the cost range) or size_level
                               # (a size level first, then every decision near it, so small and
                               # large sub-networks train about equally often; it ranked
                               # worse in benchmarks/supernet_ranking.py: mbv3 at 4 epochs,
                               # mobiledet seed 1 at 40)
      resolution_per: batch    # batch: every member of a step at the batch's resolution, drawn per
                               # batch (once-for-all); member: the largest at the space's largest
                               # resolution, the smallest at its smallest and each random one at its
                               # own drawn resolution (AttentiveNAS's min/max sub-networks carry
                               # theirs); the batch then comes at every resolution.  member
                               # ranked worse in benchmarks/supernet_ranking.py: mbv3 at 4
                               # epochs, mobiledet seed 1 at 40
      share_block_types: true  # mobiledet: a layer's block types (fused, regular and Tucker
                               # bottlenecks) share their convolutions; false: each type keeps
                               # its own (SPOS across types), still elastic within its type;
                               # it ranked worse on both mobiledet seeds (40 epochs) in
                               # benchmarks/supernet_ranking.py.  Spaces with one block type
                               # (mbv3) accept only true
      distill: true            # in-place distillation from the largest sub-network; in short
                               # runs a teacher still near chance slows every student (see
                               # benchmarks/supernet_ranking.py, which measures both)
      largest_first_epochs: 0  # train only the largest sub-network this long first (OFA's
                               # first phase), then the full sandwich
      ema_decay: 0             # > 0: also keep an exponential moving average of the weights
                               # (timm's ModelEmaV3, updated every step with this decay, as
                               # BigNAS does); sub-networks are then estimated with the average.
                               # 0.9995 over mobiledet's 5,360 steps ranked better on both seeds
                               # of benchmarks/supernet_ranking.py; over mbv3's 536 steps no
                               # decay from 0.95 to 0.995 helped seed 0
      workers: 0
      output: null             # default: <recipe output>/supernet
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

from nas.options import parse_section

OPTIMIZERS = ("sgd", "adamw")
#: how the sandwich's random sub-networks are drawn (SearchSpace.sample / sample_size_level)
RANDOM_SAMPLERS = ("uniform", "size_level")
#: whose resolution a sandwich member is trained at: the batch's, or its own
RESOLUTION_PER = ("batch", "member")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class SupernetConfig:
    dataset: str = "digits"
    root: str | None = None
    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "adamw"
    lr: float = 0.01
    #: SGD only
    momentum: float = 0.9
    weight_decay: float = 0.01
    warmup_epochs: float = 0.5
    label_smoothing: float = 0.1
    num_random: int = 2
    #: the sandwich's smallest member; without it a step trains the largest and num_random others
    sandwich_smallest: bool = True
    random_sampler: str = "uniform"
    resolution_per: str = "batch"
    #: a layer's block types share their convolutions (false: each keeps its own)
    share_block_types: bool = True
    distill: bool = True
    #: leading epochs (may be fractional) that train only the largest sub-network
    largest_first_epochs: float = 0.0
    #: per-step decay of the weights' exponential moving average (0: none kept)
    ema_decay: float = 0.0
    #: train-time augmentation for folder datasets (the embedded digits have none)
    augment: bool = True
    workers: int = 0
    #: mixed precision; only ever used on CUDA
    amp: bool = True
    device: str = "auto"
    #: training batches used to recalibrate BN before each end-of-epoch validation
    calib_batches: int = 8
    #: validate the largest and smallest sub-networks after every epoch
    validate: bool = True
    #: torch intra-op threads while training (None leaves torch's default)
    threads: int | None = None
    #: default: the recipe's top-level seed
    seed: int | None = None
    output: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: keys that do not change the trained weights (a run may resume with other values)
RUNTIME_KEYS = ("workers", "threads", "device", "validate", "calib_batches", "output")


def parse_supernet_config(data: Mapping[str, Any] | None, where: str = "<recipe>") -> SupernetConfig:
    """Validate a recipe's ``supernet:`` mapping (the recipe's own section parser: unknown
    keys and wrong types are rejected); errors name ``where: supernet.<key>``."""
    config = SupernetConfig() if data is None else parse_section(SupernetConfig, data, where, "supernet.")
    _check(config, f"{where}: supernet")
    return config


def _check(c: SupernetConfig, where: str) -> None:
    positive = {"epochs": c.epochs, "batch_size": c.batch_size, "lr": c.lr,
                "calib_batches": c.calib_batches}
    for key, value in positive.items():
        if value <= 0:
            raise ValueError(f"{where}.{key}: must be > 0, got {value}")
    non_negative = {"num_random": c.num_random, "workers": c.workers, "weight_decay": c.weight_decay,
                    "warmup_epochs": c.warmup_epochs, "momentum": c.momentum,
                    "largest_first_epochs": c.largest_first_epochs}
    for key, value in non_negative.items():
        if value < 0:
            raise ValueError(f"{where}.{key}: must be >= 0, got {value}")
    if not c.sandwich_smallest and c.num_random == 0:
        raise ValueError(f"{where}.sandwich_smallest: false needs num_random >= 1 (else only the largest "
                         "sub-network would train)")
    if not 0 <= c.ema_decay < 1:
        raise ValueError(f"{where}.ema_decay: must be in [0, 1) (0 keeps no average), got {c.ema_decay}")
    if not 0 <= c.label_smoothing < 1:
        raise ValueError(f"{where}.label_smoothing: must be in [0, 1), got {c.label_smoothing}")
    for key in ("warmup_epochs", "largest_first_epochs"):
        if getattr(c, key) >= c.epochs:
            raise ValueError(f"{where}.{key}: must be < epochs ({c.epochs}), got {getattr(c, key)}")
    if c.optimizer not in OPTIMIZERS:
        raise ValueError(f"{where}.optimizer: {c.optimizer!r} is not one of {list(OPTIMIZERS)}")
    if c.random_sampler not in RANDOM_SAMPLERS:
        raise ValueError(f"{where}.random_sampler: {c.random_sampler!r} is not one of {list(RANDOM_SAMPLERS)}")
    if c.resolution_per not in RESOLUTION_PER:
        raise ValueError(f"{where}.resolution_per: {c.resolution_per!r} is not one of {list(RESOLUTION_PER)}")
    if c.device not in DEVICES:
        raise ValueError(f"{where}.device: {c.device!r} is not one of {list(DEVICES)}")
    if c.threads is not None and c.threads < 1:
        raise ValueError(f"{where}.threads: must be >= 1, got {c.threads}")
