"""The ``supernet`` accuracy source: one evaluation pass per candidate.

``accuracy: {supernet: CKPT, calib_batches: 8, batch_size: 64}``

``CKPT`` is a checkpoint written by ``hwnas train-supernet`` (``supernet.pt``
or ``last.pt``; relative paths resolve against the recipe's folder like every
input path), or the word ``run`` for ``<run folder>/supernet/supernet.pt``,
which is where ``hwnas train-supernet`` puts the supernet of the same recipe
by default.  Each candidate is extracted with its inherited weights, its BN
statistics are recalibrated on ``calib_batches`` fixed training batches, and
its top-1 validation accuracy (%) is the estimate.  ``dataset``/``root``
default to what the supernet was trained on.  Estimates are cached in the
measurement store under the checkpoint's content hash.

``trained_model(arch)`` returns the same recalibrated network, so
``hwnas export`` writes exactly the weights whose accuracy was estimated.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Mapping, Sequence

from nas.sources import ACCURACY_SOURCES, MAXIMIZE, AccuracySource, RunContext, make_progress, reject_unknown

#: spec value meaning "the supernet trained for this recipe's run folder"
RUN_SPEC = "run"
OPTIONS = ("calib_batches", "batch_size", "dataset", "root", "workers", "device")


def default_checkpoint(run_dir: str | Path) -> Path:
    return Path(run_dir) / "supernet" / "supernet.pt"


def file_sha1(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class SupernetAccuracy(AccuracySource):
    kind = "supernet"
    metrics = {"accuracy": MAXIMIZE}

    def __init__(self, checkpoint: Path, ctx: RunContext, *, calib_batches: int = 8,
                 batch_size: int = 64, dataset: str | None = None, root: str | None = None,
                 workers: int = 0, device: str = "cpu"):
        from nas.supernet.evaluate import SubnetEvaluator, select_device
        from nas.supernet.train import load_checkpoint, supernet_from_checkpoint

        state = load_checkpoint(checkpoint)
        if state["space"] != ctx.space.name:
            raise ValueError(f"{checkpoint} is a supernet for space {state['space']!r}, "
                             f"the recipe searches {ctx.space.name!r}")
        self.checkpoint = checkpoint
        self.ctx = ctx
        self.device = select_device(device)
        self.supernet = supernet_from_checkpoint(state).to(self.device)
        if self.supernet.space.network_options() != ctx.space.network_options():
            raise ValueError(f"{checkpoint} was trained with {self.supernet.space.network_options()}, "
                             f"the recipe's space has {ctx.space.network_options()}")
        trained = state["config"]
        self.dataset = dataset or trained["dataset"]
        if root is None and self.dataset == trained["dataset"]:
            root = trained["root"]
        self.root = root
        self.calib_batches, self.batch_size = int(calib_batches), int(batch_size)
        self.evaluator = SubnetEvaluator(self.supernet, self.dataset, self.root,
                                         calib_batches=self.calib_batches, batch_size=self.batch_size,
                                         seed=ctx.seed, workers=workers, device=self.device)
        self._sha1 = file_sha1(checkpoint)
        self.key = None
        if ctx.store is not None:
            from nas.latency import source_key

            self.key = source_key(self.fingerprint())
            ctx.store.register_source(self.key, self.fingerprint())

    @classmethod
    def from_recipe(cls, spec: Any, options: Mapping[str, Any], ctx: RunContext) -> "SupernetAccuracy":
        reject_unknown(options, OPTIONS, "options")
        if not isinstance(spec, str) or not spec:
            raise ValueError(f"expected a checkpoint path or {RUN_SPEC!r}, got {spec!r}")
        checkpoint = default_checkpoint(ctx.run_dir) if spec == RUN_SPEC else ctx.resolve_path(spec)
        if not checkpoint.is_file():
            raise FileNotFoundError(f"accuracy.supernet: checkpoint {str(checkpoint)!r} does not exist "
                                    f"(train it first: hwnas train-supernet RECIPE)")
        kwargs = dict(options)
        for key in ("calib_batches", "batch_size", "workers"):
            if key in kwargs and (not isinstance(kwargs[key], int) or isinstance(kwargs[key], bool)
                                  or kwargs[key] < (0 if key == "workers" else 1)):
                raise ValueError(f"options.{key}: expected an integer >= "
                                 f"{0 if key == 'workers' else 1}, got {kwargs[key]!r}")
        if kwargs.get("root") is not None:
            root = ctx.resolve_path(kwargs["root"])
            if not root.exists():
                raise FileNotFoundError(f"accuracy.supernet: dataset path {str(root)!r} does not exist")
            kwargs["root"] = str(root)
        return cls(checkpoint, ctx, **kwargs)

    def fingerprint(self) -> dict[str, Any]:
        return {"kind": self.kind, "checkpoint_sha1": self._sha1, "calib_batches": self.calib_batches,
                "batch_size": self.batch_size, "dataset": self.dataset, "root": self.root,
                "seed": self.ctx.seed}

    def trained_model(self, arch):
        """The candidate's network with inherited, BN-recalibrated weights (on CPU, eval mode)."""
        return self.evaluator.model(arch).cpu().eval()

    def evaluate(self, archs: Sequence[Any]) -> list[dict[str, float]]:
        from nas.latency import space_key

        texts = [str(a) for a in archs]
        for text in texts:
            # the supernet's own space may be wider than the recipe's, never narrower
            try:
                self.supernet.space.parse(text)
            except ValueError as exc:
                raise ValueError(f"accuracy.supernet: {text} is outside the supernet's space: {exc}") from None
        skey = space_key(self.ctx.space)
        results = self.ctx.store.get_many(self.key, skey, texts) if self.key else {}
        todo = [t for t in dict.fromkeys(texts) if t not in results]
        with make_progress(len(todo), "supernet eval", self.ctx.progress) as bar:
            for text in todo:
                results[text] = {"accuracy": self.evaluator.accuracy(text)}
                if self.key:
                    self.ctx.store.put_many(self.key, skey, {text: results[text]})
                bar.update(1)
        return [results[t] for t in texts]


ACCURACY_SOURCES.register("supernet", SupernetAccuracy)
