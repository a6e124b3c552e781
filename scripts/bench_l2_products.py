"""A batch bucket's products (cuBLAS at M rows) with the weight in L2 against the weight in DRAM: the
ceiling of staging a batch-16 product's weight in L2 while the step's latency-bound phases run.

For each dev-model shape (N, K), x (M, K) @ W.T (N, K) is captured in a CUDA graph REPS times:
  dram  over COPIES distinct copies of W whose bytes together exceed twice the card's L2, so every
        call reads its W from DRAM (the step's case: each layer's weight streams once a step);
  l2    over one W, so after the first call it is read from L2 (W under half of L2 only).
Reports the median us a call over ROUNDS replays, and W's bytes over it (GB/s).
  python scripts/bench_l2_products.py [--rows 16] [--out results/.../l2_products.json]
"""

from __future__ import annotations

import argparse
import json

import torch

from graphs.pool import GraphPool
from runtime.bench.step_timing import isolated_ms

SHAPES = {  # (N, K) of the batch-16 products cuBLAS runs (qkv and the LM head run on Triton)
    "Llama o": (2048, 2048),
    "Llama gate/up": (16384, 2048),
    "Llama down": (2048, 8192),
    "Qwen3 o": (2048, 2048),
    "Qwen3 down": (2048, 6144),
    "Gemma o": (1152, 1024),
    "Gemma down": (1152, 6912),
}
REPS = 20  # calls per graph
ROUNDS = 15  # replays timed


def products(x: torch.Tensor, weights: list[torch.Tensor], out: torch.Tensor):
    """REPS calls of x @ W.T into out, W cycling over `weights`."""
    return lambda: [torch.mm(x, weights[i % len(weights)].t(), out=out) for i in range(REPS)]


def measure(N: int, K: int, rows: int, l2: int) -> dict:
    """us a call (and GB/s of W) from DRAM, and from L2 where W fits under half of it."""
    w_bytes = N * K * 2
    x = torch.randn(rows, K, device="cuda", dtype=torch.bfloat16)
    copies = max(2, -(-2 * l2 // w_bytes) + 1)
    weights = [torch.randn(N, K, device="cuda", dtype=torch.bfloat16) for _ in range(copies)]
    out = torch.empty(rows, N, device="cuda", dtype=torch.bfloat16)
    sources = {"dram": weights, "l2": weights[:1]} if w_bytes < l2 // 2 else {"dram": weights}
    pool = GraphPool(lambda where: products(x, sources[where], out)(), warmup=1)
    pool.capture(sources)
    row = {"N": N, "K": K, "MB": round(w_bytes / 2**20, 1)}
    for where in sources:  # each replay (REPS calls) timed alone: median us a call
        us = isolated_ms(lambda w=where: pool.replay(w), ROUNDS) * 1e3 / REPS
        row[f"{where}_us"], row[f"{where}_gbs"] = round(us, 2), round(w_bytes / us / 1e3, 1)
    pool.release()
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--out")
    args = ap.parse_args()
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    rows = []
    for name, (N, K) in SHAPES.items():
        rows.append({"product": name, **measure(N, K, args.rows, l2)})
        print(rows[-1], flush=True)
    if args.out:
        meta = {
            "gpu": torch.cuda.get_device_name(),
            "torch": torch.__version__,
            "rows": args.rows,
            "l2_bytes": l2,
        }
        with open(args.out, "w") as f:
            json.dump({**meta, "products": rows}, f, indent=1)


if __name__ == "__main__":
    main()
