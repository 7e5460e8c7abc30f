"""The ``lm`` accuracy source: short causal-LM training with a fixed token budget.

``accuracy: {lm: stdlib, tokens: 65536, seq_len: 128, batch_size: 16}``

The options are :class:`nas.lm_accuracy.LMSettings` (see that module for the
corpus, the schedule and why a short budget is a usable proxy).  Scores are
``val_loss`` (nats/byte) and ``perplexity``, both minimized, cached in the
measurement store one candidate at a time.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Any, Iterator, Mapping, Sequence

from nas.accuracy import arch_seed
from nas.lm_accuracy import BYTE_VOCAB, LMSettings, build_seeded, load_corpus, train_lm
from nas.sources.base import (ACCURACY_SOURCES, MINIMIZE, AccuracySource, CachedSource, Chunk, RunContext,
                              make_progress)


class LMAccuracy(CachedSource, AccuracySource):
    kind = "lm"
    metrics = {"val_loss": MINIMIZE, "perplexity": MINIMIZE}
    Options = LMSettings
    spec_field = "corpus"

    def __init__(self, options: LMSettings, ctx: RunContext):
        super().__init__(options, ctx)
        self.settings = options
        self.corpus = load_corpus(options.corpus, options.max_bytes, options.val_fraction, options.glob,
                                  ctx.base_dir)

    def fingerprint(self) -> dict[str, Any]:
        settings = asdict(self.settings)
        settings.pop("threads")  # thread count does not change results
        settings["corpus"] = {"spec": self.settings.corpus, "digest": self.corpus.digest,
                              "train_bytes": len(self.corpus.train), "val_bytes": len(self.corpus.val)}
        return {"kind": self.kind, "seed": self.ctx.seed, "tokenizer": "bytes", **settings}

    def check(self, archs: Sequence[Any]) -> None:
        for arch in archs:
            vocab = getattr(arch, "vocab", None)  # spaces without a vocabulary have no such field
            if vocab is not None and vocab < BYTE_VOCAB:
                raise ValueError(f"accuracy.lm uses byte tokens (ids 0..255) but {arch} has vocabulary "
                                 f"{vocab}; allow vocab_sizes >= {BYTE_VOCAB} in the space")

    def _train(self, arch):
        """``(model, metrics)``: weights from the candidate's own seed, batches from the run seed."""
        model = build_seeded(self.ctx.space, arch, arch_seed(self.ctx.seed, str(arch)))
        metrics = train_lm(model, self.corpus, self.settings, self.ctx.seed)
        return model.eval(), metrics

    def trained_model(self, arch):
        """The candidate trained exactly as during the search (used by export)."""
        self.check([arch])
        return self._train(arch)[0]

    def compute(self, todo: Mapping[str, Any]) -> Iterator[Chunk]:
        with make_progress(len(todo), "training", self.ctx.progress) as bar:
            for text, arch in todo.items():
                yield Chunk({text: self._train(arch)[1]})
                bar.update(1)


ACCURACY_SOURCES.register("lm", LMAccuracy)
