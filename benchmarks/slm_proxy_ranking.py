"""Does a short training budget rank SLM architectures like a 4x longer one?

Samples ``--archs`` distinct architectures (seeded) from the space of
``recipes/slm_cpu.yaml`` and trains each twice from the same initial weights
with that recipe's ``lm`` accuracy settings (byte-level LM on the Python
standard library's sources): once on the recipe's short token budget, once on
``--factor`` x that budget.  Prints both validation losses, the ranks, and the
Kendall tau between the two rankings.  Target: tau >= 0.7 (Nemotron-Flash:
rankings settle early in training, which is what makes the short budget a
usable search proxy).

As in the search, every candidate trains on the same batches (drawn from the
run seed) and is scored on the same validation windows, spread over the whole
validation split.  The recipe's ``constant`` schedule (fixed warm-up, then a
constant LR) makes the short run exactly the first 1/factor of the long one,
so the benchmark measures precisely the claim above: how well a candidate's
position part-way through training predicts its position later.  Pass
``--set schedule=cosine`` for the alternative where each budget decays over its
own length.

    python benchmarks/slm_proxy_ranking.py [--archs 8] [--seed 0] [--set tokens=32768 ...]
"""
from __future__ import annotations

import argparse
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
import yaml
from scipy.stats import kendalltau, rankdata

from nas.accuracy import arch_seed
from nas.lm_accuracy import LMSettings, build_seeded, load_corpus, train_lm
from nas.recipe import load_recipe
from search_spaces import make_space

TARGET = 0.7
RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "slm_cpu.yaml"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default=str(RECIPE))
    parser.add_argument("--archs", type=int, default=8)
    parser.add_argument("--factor", type=int, default=4, help="long budget = factor x short")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override an lm setting, e.g. --set tokens=32768 (repeatable)")
    args = parser.parse_args(argv)
    if args.archs < 2 or args.factor < 2:
        parser.error("--archs and --factor must be >= 2")

    recipe = load_recipe(args.recipe)
    space = make_space(recipe.space.name, **recipe.space.options)
    options = {k: v for k, v in recipe.accuracy.items() if k != "lm"}
    for item in args.overrides:
        key, _, raw = item.partition("=")
        options[key] = yaml.safe_load(raw)
    short = LMSettings(corpus=str(recipe.accuracy["lm"]), **options)
    settings = {"short": short, "long": replace(short, tokens=args.factor * short.tokens)}
    if short.threads:
        torch.set_num_threads(short.threads)

    rng = np.random.default_rng(args.seed)
    archs: list = []
    for _ in range(100 * args.archs):  # bounded: distinct samples from a large space
        arch = space.sample(rng)
        if arch not in archs:
            archs.append(arch)
        if len(archs) == args.archs:
            break
    corpus = load_corpus(short.corpus, short.max_bytes, short.val_fraction, short.glob)
    shown = {k: v for k, v in asdict(short).items() if k in ("tokens", "seq_len", "batch_size", "lr", "schedule",
                                                           "warmup_tokens", "val_tokens")}
    print(f"{len(archs)} archs from {Path(args.recipe).name} (seed {args.seed}); short {shown}, long "
          f"tokens={settings['long'].tokens}; corpus {short.corpus}: {len(corpus.train)} train / "
          f"{len(corpus.val)} val bytes; {torch.get_num_threads()} thread(s)")

    losses: dict[str, list[float]] = {name: [] for name in settings}
    params = []
    start = time.perf_counter()
    for arch in archs:
        seed = arch_seed(args.seed, str(arch))
        for name, s in settings.items():
            model = build_seeded(space, arch, seed)
            losses[name].append(train_lm(model, corpus, s, args.seed)["val_loss"])
        params.append(sum(p.numel() for p in model.parameters()))
    elapsed = time.perf_counter() - start

    loss_s, loss_l = np.array(losses["short"]), np.array(losses["long"])
    rank_s, rank_l = rankdata(loss_s), rankdata(loss_l)
    width = max(len(str(a)) for a in archs) + 2
    print(f"\n{'arch':<{width}}{'params':>9}{'loss@short':>12}{'loss@long':>11}{'rank s':>8}{'rank l':>8}")
    for i in np.argsort(loss_l):
        print(f"{str(archs[i]):<{width}}{params[i]:>9}{loss_s[i]:12.4f}{loss_l[i]:11.4f}"
              f"{rank_s[i]:8.0f}{rank_l[i]:8.0f}")
    tau = kendalltau(loss_s, loss_l).statistic
    print(f"\nKendall tau (short vs {args.factor}x budget): {tau:.3f}   target >= {TARGET}   "
          f"{'PASS' if tau >= TARGET else 'BELOW TARGET'}")
    print(f"training time: {elapsed:.0f} s total")


if __name__ == "__main__":
    main()
