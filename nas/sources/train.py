"""The ``train`` accuracy source: short stand-alone training of each candidate.

``accuracy: {train: digits, epochs: 2, batch_size: 64, lr: 0.005}``

The spec is a dataset name from :mod:`nas.data` (``digits`` is embedded; others
need ``root``); the options are :class:`nas.accuracy.TrainSettings`.  Results
are cached in the measurement store one by one, so a killed search keeps every
finished estimate.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator, Mapping

from hardware.quantize import int8_scheme
from nas.accuracy import (TrainSettings, arch_seed, calibration_inputs, candidate_accuracy, seeded_build,
                          train_candidate)
from nas.data import load_dataset
from nas.sources.base import (ACCURACY_SOURCES, MAXIMIZE, AccuracySource, CachedSource, Chunk, RunContext,
                              int8_identity, make_progress)


class TrainAccuracy(CachedSource, AccuracySource):
    kind = "train"
    metrics = {"accuracy": MAXIMIZE}
    Options = TrainSettings
    spec_field = "dataset"

    def __init__(self, options: TrainSettings, ctx: RunContext):
        if options.root is not None and not Path(options.root).exists():
            raise FileNotFoundError(f"accuracy.train: dataset path {options.root!r} does not exist")
        super().__init__(options, ctx)
        self.settings = options

    def fingerprint(self) -> dict[str, Any]:
        settings = asdict(self.settings)
        settings.pop("workers")  # loader workers do not change results
        settings.pop("threads")
        # part of the scheme below, and only for spaces with int8 layers (float keys stay as they were)
        weights = settings.pop("int8_weights")
        return {"kind": self.kind, "seed": self.ctx.seed, **settings,
                **int8_identity(self.ctx.space, int8_scheme(weights))}

    def int8_weights(self) -> str:
        return self.settings.int8_weights

    def _splits(self, arch):
        resolution = self.ctx.space.input_shape(arch)[-1]
        return load_dataset(self.settings.dataset, resolution, self.settings.root, self.settings.augment)

    def _train(self, arch):
        """``(model, accuracy, splits)``: the float network of ``arch`` trained from its own
        seed on ``splits``.  Precision variants of one network share it: they differ only
        after training."""
        arch = self.ctx.space.float_arch(arch)
        seed = arch_seed(self.ctx.seed, str(arch))
        model = seeded_build(self.ctx.space, arch, seed)
        splits = self._splits(arch)
        accuracy = train_candidate(model, splits, self.settings, seed)
        return model.eval(), accuracy, splits

    def trained_model(self, arch):
        """The candidate's float network trained exactly as during the search (used by export,
        which quantizes its int8 layers the way :meth:`compute` did)."""
        return self._train(arch)[0]

    def calibration_inputs(self, arch) -> list:
        return calibration_inputs(self._splits(arch).train, seed=self.ctx.seed)

    def compute(self, todo: Mapping[str, Any]) -> Iterator[Chunk]:
        space = self.ctx.space
        by_float: dict[str, dict[str, Any]] = {}
        for text, arch in todo.items():
            by_float.setdefault(str(space.float_arch(arch)), {})[text] = arch
        with make_progress(len(todo), "training", self.ctx.progress) as bar:
            for variants in by_float.values():
                model, float_accuracy, splits = self._train(next(iter(variants.values())))
                results = {text: {"accuracy": float_accuracy} for text, arch in variants.items()
                           if not space.int8_modules(arch)}
                quantized = {text: arch for text, arch in variants.items() if text not in results}
                if quantized:
                    calibration = calibration_inputs(splits.train, seed=self.ctx.seed)
                    results.update({text: {"accuracy": candidate_accuracy(
                        space, arch, model, splits, self.settings.batch_size * 4, calibration,
                        self.settings.int8_weights)}
                        for text, arch in quantized.items()})
                yield Chunk(results)
                bar.update(len(variants))


ACCURACY_SOURCES.register("train", TrainAccuracy)
