"""The ``supernet`` accuracy source: one evaluation pass per candidate.

``accuracy: {supernet: CKPT, calib_batches: 8, batch_size: 64}``

``CKPT`` is a checkpoint written by ``hwnas train-supernet`` (``supernet.pt``
or ``last.pt``; relative paths resolve against the recipe's folder like every
input path), or the word ``run`` for ``<run folder>/supernet/supernet.pt``,
which is where ``hwnas train-supernet`` puts the supernet of the same recipe
by default.  Each candidate is extracted with its inherited weights (the
moving average of the supernet's weights when it was trained with
``supernet.ema_decay`` > 0), its BN
statistics are recalibrated on ``calib_batches`` fixed training batches, and
its top-1 validation accuracy (%) is the estimate.  ``dataset``/``root``
default to what the supernet was trained on.  Estimates are cached in the
measurement store under the checkpoint's content hash.

``trained_model(arch)`` returns the same recalibrated network, so
``hwnas export`` writes exactly the weights whose accuracy was estimated.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from hardware.quantize import check_weight_granularity, int8_scheme
from nas.accuracy import calibration_inputs, candidate_accuracy
from nas.options import PATH, path_except
from nas.sources.base import (ACCURACY_SOURCES, MAXIMIZE, AccuracySource, CachedSource, Chunk, RunContext,
                              int8_identity, make_progress)
from nas.supernet.evaluate import SubnetEvaluator, select_device
from nas.supernet.train import load_checkpoint, supernet_from_checkpoint

#: spec value meaning "the supernet trained for this recipe's run folder"
RUN_SPEC = "run"


def default_checkpoint(run_dir: str | Path) -> Path:
    return Path(run_dir) / "supernet" / "supernet.pt"


def file_sha1(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class SupernetOptions:
    #: a checkpoint path, or ``run`` for ``<run folder>/supernet/supernet.pt``
    supernet: str = field(metadata=path_except(RUN_SPEC))
    calib_batches: int = 8
    batch_size: int = 64
    #: default: what the supernet was trained on
    dataset: str | None = None
    root: str | None = field(default=None, metadata=PATH)
    workers: int = 0
    device: str = "cpu"
    #: weight scales of int8 layers when scoring a space's int8 variants (the target's scheme)
    int8_weights: str = "per_channel"

    def __post_init__(self):
        if not self.supernet:
            raise ValueError(f"supernet: expected a checkpoint path or {RUN_SPEC!r}")
        check_weight_granularity(self.int8_weights, "int8_weights")
        for key, low in (("calib_batches", 1), ("batch_size", 1), ("workers", 0)):
            if getattr(self, key) < low:
                raise ValueError(f"{key}: expected an integer >= {low}, got {getattr(self, key)!r}")


class SupernetAccuracy(CachedSource, AccuracySource):
    kind = "supernet"
    metrics = {"accuracy": MAXIMIZE}
    Options = SupernetOptions

    def __init__(self, options: SupernetOptions, ctx: RunContext):
        super().__init__(options, ctx)
        checkpoint = default_checkpoint(ctx.run_dir) if options.supernet == RUN_SPEC else Path(options.supernet)
        if not checkpoint.is_file():
            raise FileNotFoundError(f"accuracy.supernet: checkpoint {str(checkpoint)!r} does not exist "
                                    f"(train it first: hwnas train-supernet RECIPE)")
        root = options.root
        if root is not None and not Path(root).exists():
            raise FileNotFoundError(f"accuracy.supernet: dataset path {root!r} does not exist")
        state = load_checkpoint(checkpoint)
        if state["space"] != ctx.space.name:
            raise ValueError(f"{checkpoint} is a supernet for space {state['space']!r}, "
                             f"the recipe searches {ctx.space.name!r}")
        self.checkpoint = checkpoint
        self.device = select_device(options.device)
        self.supernet = supernet_from_checkpoint(state).to(self.device)
        if self.supernet.space.network_options() != ctx.space.network_options():
            raise ValueError(f"{checkpoint} was trained with {self.supernet.space.network_options()}, "
                             f"the recipe's space has {ctx.space.network_options()}")
        trained = state["config"]
        self.dataset = options.dataset or trained["dataset"]
        if root is None and self.dataset == trained["dataset"]:
            root = trained["root"]
        self.root = root
        self.calib_batches, self.batch_size = options.calib_batches, options.batch_size
        self.evaluator = SubnetEvaluator(self.supernet, self.dataset, self.root,
                                         calib_batches=self.calib_batches, batch_size=self.batch_size,
                                         seed=ctx.seed, workers=options.workers, device=self.device)
        self._sha1 = file_sha1(checkpoint)
        self._int8_weights = options.int8_weights

    def fingerprint(self) -> dict[str, Any]:
        return {"kind": self.kind, "checkpoint_sha1": self._sha1, "calib_batches": self.calib_batches,
                "batch_size": self.batch_size, "dataset": self.dataset, "root": self.root,
                "seed": self.ctx.seed, **int8_identity(self.ctx.space, int8_scheme(self._int8_weights))}

    def int8_weights(self) -> str:
        return self._int8_weights

    def _float_text(self, arch) -> str:
        """The string of ``arch``'s float network (``arch`` an arch or its string): the
        supernet trains float weights, which an arch's precision variants share."""
        space = self.ctx.space
        if not space.searches_precision:
            return str(arch)
        return str(space.float_arch(space.parse(arch) if isinstance(arch, str) else arch))

    def trained_model(self, arch):
        """The candidate's float network with inherited, BN-recalibrated weights (on CPU, eval
        mode); export quantizes its int8 layers as :meth:`compute` did."""
        return self.evaluator.model(self._float_text(arch)).cpu().eval()

    def _splits(self, float_text: str):
        return self.evaluator.splits(self.evaluator.resolution(self.supernet.parse(float_text)))

    def calibration_inputs(self, arch) -> list:
        return calibration_inputs(self._splits(self._float_text(arch)).train, seed=self.ctx.seed)

    def check(self, archs: Sequence[Any]) -> None:
        for arch in archs:
            # the supernet's own space may be wider than the recipe's, never narrower
            try:
                self.supernet.space.parse(self._float_text(arch))
            except ValueError as exc:
                raise ValueError(f"accuracy.supernet: {arch} is outside the supernet's space: {exc}") from None

    def compute(self, todo: Mapping[str, Any]) -> Iterator[Chunk]:
        space = self.ctx.space
        with make_progress(len(todo), "supernet eval", self.ctx.progress) as bar:
            for text in todo:
                float_text = self._float_text(text)
                if float_text == text:
                    accuracy = self.evaluator.accuracy(text)
                else:
                    # the float network's data, looked up once for the split and the calibration slice
                    splits = self._splits(float_text)
                    accuracy = candidate_accuracy(space, space.parse(text), self.trained_model(float_text), splits,
                                                  self.batch_size * 4,
                                                  calibration_inputs(splits.train, seed=self.ctx.seed),
                                                  self._int8_weights)
                yield Chunk({text: {"accuracy": accuracy}})
                bar.update(1)


ACCURACY_SOURCES.register("supernet", SupernetAccuracy)
