"""Decode latency vs context length for pure-attention, pure-SSM, pure-DeltaNet
and hybrid SLMs of (nearly) equal parameter count, measured on this machine.

Expected shape: full attention's per-token decode time grows with the context
(it reads a KV cache that grows by one entry per token); Mamba2 and DeltaNet
layers carry a fixed-size state, so their decode time stays flat.  The
analytic decode-FLOPs ratio from ``search_spaces.slm.cost`` is printed beside
the measured ratio.

Timings use the same timer and protocol as the ``slm`` latency source
(PyTorch eager on the CPU, warm-up, interleaved seeded rounds, median of round
medians); each sample starts from a cache of exactly the listed context.

    python benchmarks/slm_latency_shape.py [--threads 1] [--contexts 256 512 1024 2048 4096]
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from hardware.protocol import Candidate, Protocol, measure
from hardware.slm_latency import SLMTimer
from search_spaces import make_space
from search_spaces.slm.cost import model_cost

# width 256, 4 heads, 2 KV heads: attn 3d^2 + ffn4 12d^2 = mamba 6d^2 + ffn3 9d^2 = 15d^2 per pair
MODELS = {
    "attention": "v256_d256_h4_g2:attn-ffn4-attn-ffn4-attn-ffn4-attn-ffn4",
    "mamba2": "v256_d256_h4_g2:mamba-ffn3-mamba-ffn3-mamba-ffn3-mamba-ffn3",
    "deltanet": "v256_d256_h4_g2:delta-ffn3-delta-ffn3-delta-ffn3-delta-ffn3",
    "hybrid": "v256_d256_h4_g2:mamba-ffn3-attn-ffn4-delta-ffn3-swa256-ffn4",
}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--contexts", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    space = make_space("hybrid_slm", widths=[256], heads=[4], kv_heads=[2], depths=[8],
                       windows=[256], ffn_ratios=[3, 4])
    archs = {name: space.parse(text) for name, text in MODELS.items()}
    models = {name: space.build(arch) for name, arch in archs.items()}
    protocol = Protocol(rounds=args.rounds, repeats=3, target_ms=20.0, warmup=3, max_iterations=16)
    rng = np.random.default_rng(args.seed)

    print(f"decode latency per token (ms), batch {args.batch_size}, {args.threads} thread(s), "
          f"torch {torch.__version__}, median of {args.rounds} interleaved rounds")
    for name, text in MODELS.items():
        params = sum(p.numel() for p in models[name].parameters())
        print(f"  {name:<10} {params / 1e6:6.3f} M params  {text}")

    table: dict[str, list[float]] = {name: [] for name in MODELS}
    for context in args.contexts:
        timer = SLMTimer("decode", threads=args.threads, batch_size=args.batch_size,
                         context_len=context, room=protocol.max_iterations, seed=args.seed)
        candidates = [Candidate(name, lambda name=name: (models[name], None)) for name in MODELS]
        for name, m in measure(timer, candidates, protocol, rng).items():
            table[name].append(m.latency_ms)

    first, last = args.contexts[0], args.contexts[-1]
    header = f"{'model':<10}" + "".join(f"{c:>9}" for c in args.contexts)
    header += f"{'ratio ' + str(last) + '/' + str(first):>18}{'FLOPs ratio':>13}{'state MB@' + str(last):>15}"
    print()
    print(header)
    for name in MODELS:
        cfg = space.config(archs[name])
        lo = model_cost(cfg, first, first, args.batch_size)
        hi = model_cost(cfg, first, last, args.batch_size)
        row = f"{name:<10}" + "".join(f"{ms:9.3f}" for ms in table[name])
        row += f"{table[name][-1] / table[name][0]:18.2f}{hi['decode_flops'] / lo['decode_flops']:13.2f}"
        row += f"{hi['state_bytes'] / 2**20:15.2f}"
        print(row)


if __name__ == "__main__":
    main()
