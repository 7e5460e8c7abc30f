"""Short causal-LM training with a fixed token budget (the ``lm`` accuracy source's engine).

``accuracy: {lm: stdlib, tokens: 65536, seq_len: 128, batch_size: 16}``

Each candidate is trained from scratch on ``tokens`` training tokens (AdamW,
a linear warm-up of ``warmup_tokens``, then a constant LR, or with
``schedule: cosine`` a decay to 10% over the run) and scored on held-out text:
``val_loss`` (mean next-token cross-entropy, nats/byte) and ``perplexity``
(``exp(val_loss)``), both minimized.  Nemotron-Flash observed that rankings of
SLM architectures settle early in training; that is what makes a short budget a
usable proxy (``benchmarks/slm_proxy_ranking.py`` checks it).

Tokens are bytes (ids 0..255), so any text works without a tokenizer and the
architecture's vocabulary must be >= 256.  The spec names the corpus:

* ``stdlib``: the Python standard library's own top-level ``*.py`` sources
  (``Path(os.__file__).parent``), present on every machine, nothing downloaded;
* a path to a text file (its last ``val_fraction`` of bytes is validation), or
  to a folder (files matching ``glob``, binary files skipped, each file put in
  train or validation by a stable hash of its relative path).

File order, split and batch sampling are deterministic.  A candidate's initial
weights derive from the run seed and its canonical string; its training
batches and validation windows are the same for all candidates (drawn from
the run seed), so loss differences come from the architectures, not from the
text each happened to see.  The constant schedule does not depend on the
budget, so a short run is exactly the beginning of a longer one.  The corpus
digest is part of the fingerprint, so results from different corpora (e.g.
another Python version's stdlib) never mix in the measurement store.
"""
from __future__ import annotations

import hashlib
import math
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nas.accuracy import seeded_build
from nas.options import path_except
from search_spaces.slm.model import HybridLM

BYTE_VOCAB = 256
SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class LMSettings:
    corpus: str = field(default="stdlib", metadata=path_except("stdlib"))
    #: training token budget per candidate (steps = tokens // (batch_size * seq_len))
    tokens: int = 65536
    seq_len: int = 128
    batch_size: int = 16
    lr: float = 3e-3
    weight_decay: float = 0.1
    #: linear warm-up length, in tokens (absolute, not a fraction of the budget,
    #: so runs of different budgets share it)
    warmup_tokens: int = 8192
    #: ``constant`` (after warm-up) or ``cosine`` (decay to 10% over the run's own budget)
    schedule: str = "constant"
    grad_clip: float = 1.0
    #: validation tokens scored (fixed windows spread over the whole split)
    val_tokens: int = 32768
    val_fraction: float = 0.1
    #: corpus bytes read at most (train + validation)
    max_bytes: int = 4_000_000
    #: files taken from a folder corpus
    glob: str = "**/*"
    #: torch intra-op threads while training (None leaves torch's default)
    threads: int | None = None

    def __post_init__(self):
        for name in ("tokens", "seq_len", "batch_size", "val_tokens", "max_bytes", "warmup_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {list(SCHEDULES)}, got {self.schedule!r}")
        if self.lr <= 0 or self.weight_decay < 0 or self.grad_clip <= 0:
            raise ValueError("lr and grad_clip must be > 0, weight_decay >= 0")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(f"threads must be an integer >= 1, got {self.threads!r}")

    @property
    def steps(self) -> int:
        return max(1, self.tokens // (self.batch_size * self.seq_len))


@dataclass(frozen=True)
class TextCorpus:
    train: bytes
    val: bytes
    files: int
    source: str

    @property
    def digest(self) -> str:
        return hashlib.sha1(self.train + b"\x00split\x00" + self.val).hexdigest()[:16]


def stdlib_root() -> Path:
    return Path(os.__file__).parent


def _is_text(path: Path) -> bool:
    with open(path, "rb") as f:
        return b"\x00" not in f.read(8192)


def load_corpus(spec: str | Path, max_bytes: int = 4_000_000, val_fraction: float = 0.1,
                glob: str = "**/*", base_dir: Path | None = None) -> TextCorpus:
    """Read a corpus (``stdlib``, a text file or a folder) into train/validation bytes."""
    val_cap = max(1, int(max_bytes * val_fraction))
    train_cap = max(1, max_bytes - val_cap)
    if str(spec) == "stdlib":
        root = stdlib_root()
        files = sorted(root.glob("*.py"))
        source = f"stdlib:{root}"
    else:
        root = Path(spec).expanduser()
        if not root.is_absolute() and base_dir is not None:
            root = base_dir / root
        if not root.exists():
            raise FileNotFoundError(f"corpus path {str(root)!r} does not exist")
        source = str(root)
        if root.is_file():
            data = root.read_bytes()[: max_bytes]
            cut = len(data) - max(1, int(len(data) * val_fraction))
            return _checked(TextCorpus(data[:cut], data[cut:], 1, source))
        files = sorted((p for p in root.glob(glob) if p.is_file()), key=lambda p: p.relative_to(root).as_posix())
    train, val = bytearray(), bytearray()
    used = 0
    for path in files:
        if len(train) >= train_cap and len(val) >= val_cap:
            break
        if not _is_text(path):
            continue
        rel = path.relative_to(root).as_posix()
        # a stable hash of the name, not of the content: adding text to a file
        # never moves it between splits
        to_val = zlib.crc32(rel.encode()) % 1000 < val_fraction * 1000
        target, cap = (val, val_cap) if to_val else (train, train_cap)
        if len(target) >= cap:
            continue
        target += path.read_bytes()[: cap - len(target)] + b"\n"
        used += 1
    return _checked(TextCorpus(bytes(train), bytes(val), used, source))


def _checked(corpus: TextCorpus) -> TextCorpus:
    if len(corpus.train) < 2 or len(corpus.val) < 2:
        raise ValueError(f"corpus {corpus.source!r} is too small: {len(corpus.train)} train and "
                         f"{len(corpus.val)} validation bytes (need text in both splits)")
    return corpus


def _as_tensor(data: bytes):
    return torch.from_numpy(np.frombuffer(data, dtype=np.uint8).astype(np.int64))


def _lr_at(step: int, settings: LMSettings) -> float:
    warm = settings.warmup_tokens // (settings.batch_size * settings.seq_len)
    if step < warm:
        return settings.lr * (step + 1) / warm
    if settings.schedule == "constant":
        return settings.lr
    progress = (step - warm) / max(1, settings.steps - warm)
    return settings.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def validation_starts(val_len: int, seq_len: int, val_tokens: int) -> tuple[list[int], int]:
    """Start offsets and length of the ``val_tokens // seq_len`` validation windows:
    spread evenly over the whole split (non-overlapping while it is long enough),
    so the score samples every part of the validation text, not just its first
    file or two; each window keeps its next-token targets inside the split."""
    length = min(seq_len, val_len - 1)
    windows = max(1, min(val_tokens, val_len - 1) // length)
    last = val_len - 1 - length
    if windows == 1:
        return [0], length
    return torch.linspace(0, last, windows).round().long().tolist(), length


def evaluate_lm(model, val, seq_len: int, val_tokens: int, batch_size: int = 32) -> float:
    """Mean next-token cross-entropy (nats) over the fixed :func:`validation_starts`
    windows: every candidate is scored on the same text."""
    offsets, length = validation_starts(len(val), seq_len, val_tokens)
    starts = torch.tensor(offsets, dtype=torch.long)
    windows = len(offsets)
    total, count = 0.0, 0
    model.eval()
    with torch.inference_mode():
        for i in range(0, windows, batch_size):
            s = starts[i:i + batch_size]
            idx = s[:, None] + torch.arange(length + 1)[None, :]
            chunk = val[idx]
            logits = model(chunk[:, :-1])
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), chunk[:, 1:].reshape(-1),
                                   reduction="sum")
            total += float(loss)
            count += chunk[:, 1:].numel()
    return total / count


def train_lm(model, corpus: TextCorpus, settings: LMSettings, seed: int) -> dict[str, float]:
    """Train ``model`` in place on ``settings.tokens`` tokens; return ``val_loss`` and ``perplexity``.

    ``seed`` draws the training windows (the weights are the caller's).  The
    search passes its run seed, so every candidate sees the same batches in the
    same order: differences between their losses then come from the
    architectures, not from which text each happened to be trained on."""
    previous_threads = torch.get_num_threads()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    try:
        train, val = _as_tensor(corpus.train), _as_tensor(corpus.val)
        length = min(settings.seq_len, len(train) - 1)
        generator = torch.Generator().manual_seed(seed)
        decay = [p for p in model.parameters() if p.dim() >= 2]
        no_decay = [p for p in model.parameters() if p.dim() < 2]
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": settings.weight_decay},
                                       {"params": no_decay, "weight_decay": 0.0}],
                                      lr=settings.lr, betas=(0.9, 0.95))
        offsets = torch.arange(length + 1)[None, :]
        model.train()
        for step in range(settings.steps):
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(step, settings)
            starts = torch.randint(0, len(train) - length, (settings.batch_size, 1), generator=generator)
            chunk = train[starts + offsets]
            logits = model(chunk[:, :-1])
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), chunk[:, 1:].reshape(-1))
            if not torch.isfinite(loss):
                # a diverged candidate is a bad candidate, not a crashed search
                return {"val_loss": math.inf, "perplexity": math.inf}
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            optimizer.step()
        val_loss = evaluate_lm(model, val, settings.seq_len, settings.val_tokens)
    finally:
        torch.set_num_threads(previous_threads)
    return {"val_loss": val_loss, "perplexity": math.exp(min(val_loss, 700.0))}


def build_seeded(space, arch, seed: int):
    """``space.build(arch)`` with initial weights drawn from ``seed`` alone."""
    model = seeded_build(space, arch, seed)
    if isinstance(model, HybridLM):
        # HybridLM initialises from its own generator; re-draw it from this seed
        model.reset_parameters(torch.Generator().manual_seed(seed))
    return model
