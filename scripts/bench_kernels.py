"""GPU micro-benchmark: each Triton kernel against its plain-torch reference at the dev models'
decode shapes (bf16, batch 1 by default).

Timing: triton.testing.do_bench, median, L2 flushed before every call (so bytes come from HBM,
as they would inside a decode step whose 2+ GB of weights evict everything). The printed GB/s
is the bytes the op must move / median time; floor_us is those bytes at the copy bandwidth
(2.96 TB/s measured on an H100, or --copy-gbs). Per model, the last rows estimate the per-step
time of these ops on the decoder's path (layers x (2 add+norm, fused q/k-norm + rope + cache write
+ attention, activation) + 1 norm), at each live length.
At batch 1 the fused GEMVs (fused_linear.py) are timed too, against what the decoder runs today: the
Triton add+norm / activation kernel, then cuBLAS F.linear (or F.linear alone); their GB/s is the
weight's bytes / time (--tune runs gemv_tuning.tune first; the shape then names the chosen blocks).
Scope: not in the per-step estimate are the matrix products, the embedding, the LM head and sampling.
Prints a markdown table last; --out writes the rows as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from runtime.kernels.activation import gated_act_ref, gated_act_triton
from runtime.kernels.decode_attention import decode_attention_ref, decode_attention_triton
from runtime.kernels.fused_linear import act_linear_triton, linear_triton, norm_linear_triton
from runtime.kernels.gemv_tuning import tune
from runtime.kernels.qkv_attention import qkv_decode_attention_ref, qkv_decode_attention_triton
from runtime.kernels.qkv_rope import qkv_rope_to_cache_ref, qkv_rope_to_cache_triton
from runtime.kernels.rmsnorm import add_rms_norm_ref, add_rms_norm_triton, rms_norm_ref, rms_norm_triton


@dataclass(frozen=True)
class Shape:
    """The decode-time numbers of one dev model (DESIGN.md section 12)."""

    layers: int
    hidden: int
    inter: int
    heads: int
    kv_heads: int
    head_dim: int
    qk_norm: bool
    offset: float
    activation: str
    window: int | None = None  # sliding layers' ring length
    global_every: int = 1  # one global layer in every `global_every`


MODELS = {
    "llama-3.2-1b": Shape(16, 2048, 8192, 32, 8, 64, False, 0.0, "silu"),
    "qwen3-1.7b": Shape(28, 2048, 6144, 16, 8, 128, True, 0.0, "silu"),
    "gemma-3-1b": Shape(26, 1152, 6912, 4, 1, 256, True, 1.0, "gelu_tanh", window=512, global_every=6),
}


# the CPU path is a smoke run of this script under TRITON_INTERPRET=1 (times meaningless there)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def bench(fn: Callable[[], object]) -> float:
    """Median microseconds of fn, L2 flushed before each call (on the CPU: a smoke run's wall time)."""
    if not torch.cuda.is_available():
        times = []
        for _ in range(3):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return 1e6 * statistics.median(times)
    import triton.testing

    return 1000.0 * triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median")


def measure(op: str, model: str, shape: str, nbytes: int, ref, tri, copy_gbs: float) -> dict:
    ref_us, tri_us = bench(ref), bench(tri)
    return {
        "model": model,
        "op": op,
        "shape": shape,
        "bytes": nbytes,
        "ref_us": round(ref_us, 2),
        "triton_us": round(tri_us, 2),
        "speedup": round(ref_us / tri_us, 2),
        "ref_gbs": round(nbytes / ref_us / 1e3, 1),
        "triton_gbs": round(nbytes / tri_us / 1e3, 1),
        "floor_us": round(nbytes / copy_gbs / 1e3, 2),
    }


def model_rows(
    name: str, s: Shape, batch: int, capacity: int, lengths: list[int], copy_gbs: float, tuned: bool = False
) -> list[dict]:
    dev, dt, B, e = DEVICE, torch.bfloat16, batch, 2
    H, Hkv, D = s.heads, s.kv_heads, s.head_dim
    rows = []

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, device=dev, dtype=dt)

    x, res, w = randn(B, 1, s.hidden), randn(B, 1, s.hidden), randn(s.hidden)
    pre = w if s.offset else None  # Gemma's sandwich norm rides along in the same kernel
    n_w = 2 if pre is not None else 1
    rows.append(measure(
        "rms_norm", name, f"{B}x{s.hidden}", e * (2 * B * s.hidden + s.hidden),
        lambda: rms_norm_ref(x, w, 1e-6, s.offset), lambda: rms_norm_triton(x, w, 1e-6, s.offset), copy_gbs,
    ))  # fmt: skip
    rows.append(measure(
        "add_rms_norm", name, f"{B}x{s.hidden}" + (" +pre" if pre is not None else ""),
        e * (4 * B * s.hidden + n_w * s.hidden),
        lambda: add_rms_norm_ref(x, res, w, 1e-6, s.offset, pre),
        lambda: add_rms_norm_triton(x, res, w, 1e-6, s.offset, pre), copy_gbs,
    ))  # fmt: skip

    gu = randn(B, 1, 2 * s.inter)
    rows.append(measure(
        "gated_act", name, f"{B}x{2 * s.inter} {s.activation}", e * 3 * B * s.inter,
        lambda: gated_act_ref(gu, s.activation), lambda: gated_act_triton(gu, s.activation), copy_gbs,
    ))  # fmt: skip

    width = (H + 2 * Hkv) * D
    qkv, cos, sin = randn(B, 1, width), randn(B, 1, D), randn(B, 1, D)
    qw, kw = (randn(D), randn(D)) if s.qk_norm else (None, None)
    norm_args = (qw, kw, 1e-6, s.offset)
    qkv_bytes = e * (B * width + 2 * B * D + (2 * D if s.qk_norm else 0))  # the qkv row, cos/sin, weights
    kc = torch.zeros(B, Hkv, capacity, D, device=dev, dtype=dt)
    vc = torch.zeros_like(kc)
    pos = torch.full((B,), capacity // 2, device=dev, dtype=torch.int64)
    args = (qkv, H, Hkv, cos, sin, *norm_args, kc, vc, pos)
    rows.append(measure(
        "qkv_rope_to_cache", name, f"{B}x({H}+2x{Hkv})x{D}" + (" qk-norm" if s.qk_norm else ""),
        qkv_bytes + e * B * width, lambda: qkv_rope_to_cache_ref(*args), lambda: qkv_rope_to_cache_triton(*args),
        copy_gbs,
    ))  # fmt: skip

    # attention at each live length of a global cache, and over a full sliding ring: alone (q given)
    # and fused with q/k-norm + rope + cache write (what the decoder runs)
    q = randn(B, H, D)
    attn_cases = [(capacity, L) for L in lengths if L <= capacity]
    if s.window:
        attn_cases.append((s.window, s.window))
    for S, L in attn_cases:
        k, v = randn(B, Hkv, S, D), randn(B, Hkv, S, D)
        lens = torch.full((B,), L, device=dev, dtype=torch.int64)
        kv_bytes = e * 2 * B * Hkv * L * D
        where = f"{B}x{H}/{Hkv}x{D} len {L} of {S}"
        rows.append(measure(
            "decode_attention", name, where, kv_bytes + e * 2 * B * H * D,
            lambda k=k, v=v, lens=lens: decode_attention_ref(q, k, v, lens, D**-0.5),
            lambda k=k, v=v, lens=lens: decode_attention_triton(q, k, v, lens, D**-0.5), copy_gbs,
        ))  # fmt: skip
        fused = (qkv, H, Hkv, cos, sin, *norm_args, k, v, lens - 1, D**-0.5)  # position L - 1: length L
        rows.append(measure(
            "qkv_decode_attention", name, where, kv_bytes + qkv_bytes + e * B * H * D,
            lambda fused=fused: qkv_decode_attention_ref(*fused),
            lambda fused=fused: qkv_decode_attention_triton(*fused), copy_gbs,
        ))  # fmt: skip

    # per-step estimate of these ops at each global length (sliding layers at a full ring), with the
    # decoder's decode path: 2 add+norm, fused attention, activation per layer; one plain norm
    by_op = {r["op"]: r for r in rows}
    attn = {r["shape"]: r for r in rows if r["op"] == "qkv_decode_attention"}
    sliding = next((r for sh, r in attn.items() if s.window and sh.endswith(f"of {s.window}")), None)
    n_global = s.layers // s.global_every if s.window else s.layers
    for L in lengths:
        glob = next((r for sh, r in attn.items() if sh.endswith(f"len {L} of {capacity}")), None)
        if glob is None:
            continue
        per_step = {}
        for kind in ("ref_us", "triton_us", "floor_us"):
            layer = 2 * by_op["add_rms_norm"][kind] + by_op["gated_act"][kind]
            total = s.layers * layer + by_op["rms_norm"][kind] + n_global * glob[kind]
            total += (s.layers - n_global) * (sliding[kind] if sliding else 0.0)
            per_step[kind] = round(total, 1)
        rows.append({
            "model": name, "op": "per step (these ops)", "shape": f"{s.layers} layers, global len {L}",
            "bytes": None, **per_step, "speedup": round(per_step["ref_us"] / per_step["triton_us"], 2),
            "triton_gbs": None,
        })  # fmt: skip
    if B == 1:
        rows += gemv_rows(name, s, x, res, w, pre, gu, copy_gbs, tuned)
    return rows


def gemv_rows(name, s: Shape, x, res, w, pre, gu, copy_gbs: float, tuned: bool) -> list[dict]:
    """Batch 1: each fused GEMV against today's decode path for it; bytes and GB/s: the weight's."""
    dt, e = torch.bfloat16, 2
    H, Hkv, D = s.heads, s.kv_heads, s.head_dim
    attn_out = torch.randn(1, 1, H * D, device=DEVICE, dtype=dt)
    rows = []

    def weight(op: str, n: int, k: int) -> tuple[torch.Tensor, str]:
        n = n if DEVICE == "cuda" else min(n, 64)  # the interpreter smoke run: a few rows do
        where = f"{n}x{k}"
        if tuned:
            where += " blocks {}x{} w{}".format(*tune(op, n, k, dt, DEVICE))
        return torch.randn(n, k, device=DEVICE, dtype=dt) * k**-0.5, where

    for what, n in (("qkv", (H + 2 * Hkv) * D), ("gate_up", 2 * s.inter)):
        wt, where = weight("norm_linear", n, s.hidden)
        rows.append(measure(
            "norm_linear", name, f"{what} {where}" + (" +pre" if pre is not None else ""), e * wt.numel(),
            lambda wt=wt: F.linear(add_rms_norm_triton(x, res, w, 1e-6, s.offset, pre)[0], wt),
            lambda wt=wt: norm_linear_triton(x, res, w, 1e-6, s.offset, pre, wt), copy_gbs,
        ))  # fmt: skip
    wt, where = weight("act_linear", s.hidden, s.inter)
    rows.append(measure(
        "act_linear", name, f"down {where} {s.activation}", e * wt.numel(),
        lambda: F.linear(gated_act_triton(gu, s.activation), wt),
        lambda: act_linear_triton(gu, s.activation, wt), copy_gbs,
    ))  # fmt: skip
    wo, where = weight("linear", s.hidden, H * D)
    rows.append(measure(
        "linear", name, f"o {where}", e * wo.numel(),
        lambda: F.linear(attn_out, wo), lambda: linear_triton(attn_out, wo), copy_gbs,
    ))  # fmt: skip
    return rows


def table(rows: list[dict]) -> str:
    cols = ["model", "op", "shape", "ref_us", "triton_us", "speedup", "ref_gbs", "triton_gbs", "floor_us"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join("" if r.get(c) is None else str(r[c]) for c in cols) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--capacity", type=int, default=4096, help="KV slots of a global layer")
    ap.add_argument("--lengths", type=int, nargs="*", default=[300, 2000, 4096], help="live lengths to time")
    ap.add_argument("--copy-gbs", type=float, default=2960.0, help="measured copy bandwidth, GB/s")
    ap.add_argument("--tune", action="store_true", help="tune the fused GEMVs' blocks first (GPU)")
    ap.add_argument("--out", help="write the rows here as JSON")
    args = ap.parse_args()
    if DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        raise SystemExit("bench_kernels needs a CUDA GPU (or TRITON_INTERPRET=1 for a CPU smoke run)")
    torch.manual_seed(0)
    rows = []
    for name in args.models:
        rows += model_rows(
            name, MODELS[name], args.batch, args.capacity, args.lengths, args.copy_gbs, args.tune
        )
    gpu = torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu (interpreter smoke run)"
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"gpu": gpu, "batch": args.batch, "rows": rows}, f, indent=1)
    print(f"\n{gpu}, batch {args.batch}, bf16, do_bench median (L2 flushed), us\n")
    print(table(rows))


if __name__ == "__main__":
    main()
