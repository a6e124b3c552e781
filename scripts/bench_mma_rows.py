"""GPU: the batch-rows products at 16 rows, each implementation on the dev models' shapes: time per
launch and the weight's achieved GB/s against the copy bandwidth measured in the same process.

  python3 scripts/bench_mma_rows.py [--blocks 8/128,4/128,...] [--out results.json]

Implementations: cuBLAS (F.linear / addmm_, the gated activation kernel after gate/up), the tl.dot
rows kernel (rows_kernel.py) and the register-MMA kernel (mma_rows.py) under each --blocks choice.
Each is captured in one CUDA graph as back-to-back launches over enough copies of W to pass 200 MB
(so no launch finds its weight in L2), replayed, and the median per launch reported.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

import torch

from runtime.bench.bandwidth import copy_bandwidth_gbs
from runtime.kernels import fused_rows as fr
from runtime.kernels import ops

ROWS = 16
# (model, product, N, K, kind): kind "linear" y = x W^T, "add" y += x W^T, "gated" act(gate) * up
SHAPES = [
    ("Llama", "qkv", 3072, 2048, "linear"), ("Llama", "o", 2048, 2048, "add"),
    ("Llama", "gate_up", 8192, 2048, "gated"), ("Llama", "down", 2048, 8192, "add"),
    ("Qwen3", "qkv", 4096, 2048, "linear"), ("Qwen3", "o", 2048, 2048, "add"),
    ("Qwen3", "gate_up", 6144, 2048, "gated"), ("Qwen3", "down", 2048, 6144, "add"),
    ("Qwen3", "lm_head", 151936, 2048, "linear"),
    ("Gemma", "qkv", 1536, 1152, "linear"), ("Gemma", "gate_up", 6912, 1152, "gated"),
    ("Gemma", "down", 1152, 6912, "add"),
]  # fmt: skip


def _call(impl: str, kind: str, x, w, y):
    """One launch of impl on (x, w) into y (gated: w is (2N, K))."""
    if impl == "cublas":
        if kind == "linear":
            return torch.nn.functional.linear(x, w)
        if kind == "add":
            return y.addmm_(x, w.t())
        return ops.gated_act(torch.nn.functional.linear(x, w), "silu", x, 1e-6)
    if kind == "linear":
        return fr.linear_rows_triton(x, w)
    if kind == "add":
        return fr.linear_rows_add_triton(y, x, w)
    return fr.gated_linear_rows_triton(x, w, "silu", 1e-6)


def time_launch(impl: str, kind: str, N: int, K: int, env: dict[str, str], replays: int = 20) -> float:
    """Median us per launch of impl over a graph of back-to-back launches, each on its own copy of W."""
    rows_out = 2 * N if kind == "gated" else N
    bytes_w = rows_out * K * 2
    copies = max(2, min(64, -(-200_000_000 // bytes_w)))
    weights = [torch.randn(rows_out, K, device="cuda", dtype=torch.bfloat16) * K**-0.5 for _ in range(copies)]
    x = torch.randn(ROWS, K, device="cuda", dtype=torch.bfloat16)
    y = torch.zeros(ROWS, N, device="cuda", dtype=torch.bfloat16)
    os.environ.update(env)
    try:
        for w in weights[:2]:  # compile, tune and warm outside the capture
            _call(impl, kind, x, w, y)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for w in weights:
                _call(impl, kind, x, w, y)
    finally:
        for key in env:
            del os.environ[key]
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(replays):
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1000 / copies)
    del weights, graph
    torch.cuda.empty_cache()
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--blocks", default="8/128,8/64,4/128,4/64,2/256,1/512", help="mma_rows warps/BLOCK_K list"
    )
    ap.add_argument("--only", help="comma-separated products to keep (e.g. qkv,o)")
    ap.add_argument("--out")
    args = ap.parse_args()
    copy = copy_bandwidth_gbs(torch.device("cuda"))
    impls = [("cublas", {}), ("rows", {"RUNTIME_ROWS_MMA": "off"})] + [
        (f"mma {b}", {"RUNTIME_ROWS_MMA": "on", "RUNTIME_MMA_ROWS_BLOCKS": b}) for b in args.blocks.split(",")
    ]
    only = set(args.only.split(",")) if args.only else None
    results = []
    for model, product, N, K, kind in SHAPES:
        if only and product not in only:
            continue
        gb = (2 * N if kind == "gated" else N) * K * 2 / 1e9
        for impl, env in impls:
            try:
                us = time_launch(impl.split()[0], kind, N, K, env)
            except Exception as e:  # one failing build must not cost the others
                print(f"{model} {product} {impl}: {type(e).__name__}: {str(e)[:200]}")
                continue
            results.append(dict(model=model, product=product, N=N, K=K, impl=impl, us=us, gbs=gb / us * 1e6))
    print(f"\ncopy bandwidth {copy:.0f} GB/s; 16 rows; us per launch (GB/s of W)\n")
    names = [i for i, _ in impls]
    print("| model | product | N x K | " + " | ".join(names) + " |")
    print("|---|---|---|" + "---|" * len(names))
    for model, product, N, K, _ in SHAPES:
        got = {r["impl"]: r for r in results if r["model"] == model and r["product"] == product}
        if got:
            cells = [f"{got[n]['us']:.2f} ({got[n]['gbs']:.0f})" if n in got else "-" for n in names]
            print(f"| {model} | {product} | {N} x {K} | " + " | ".join(cells) + " |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(dict(copy_gbs=copy, results=results), f, indent=2)


if __name__ == "__main__":
    main()
