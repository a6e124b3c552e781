"""Choosing the batch-1 GEMV blocks on the card (fused_linear.py's launch configuration).

tune() times the heuristic's blocks and CANDIDATE_CONFIGS for one (op, N, K) on random tensors,
with L2 flushed before every call (a decode step's weights come from HBM), and remembers the
fastest in fused_linear._TUNED, which the launches consult. The runner calls tune_shapes for a
model's GEMVs before it captures (tuning allocates and synchronises); it takes a choice already
made for this card from tuning_store.py before it times anything. GPU only: elsewhere a no-op.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Iterable

import torch

from runtime.kernels import (
    fused_linear,
    fused_rows,
    fused_rows_config,
    gemv_blocks,
    phase_clock,
    tuning_store,
)
from runtime.kernels._triton import AVAILABLE, INTERPRETING, next_pow2
from runtime.kernels.fused_linear import _ACT, _NONE, _NORM, _launch
from runtime.kernels.fused_rows_config import (
    _OP_COST,
    MAX_ROWS,
    MIN_ROWS,
    _slices,
    rows_config,
)
from runtime.kernels.fused_rows_config import CANDIDATE_CONFIGS as ROWS_CANDIDATES
from runtime.kernels.gemv_blocks import (
    _PROLOGUE_VECTORS,
    CANDIDATE_CONFIGS,
    GATED_OPS,
    gemv_config,
    tuning_enabled,
)

# every timing tune() took: (op, N, K, dtype) -> {(BLOCK_N, BLOCK_K, num_warps): device us}
TIMINGS: dict[tuple[str, int, int, torch.dtype], dict[tuple[int, int, int], float]] = {}
# where tune_shapes found each choice in _TUNED: "tuned", "stored" (the user's cache), "shipped"
SOURCES: dict[tuple[str, int, int, torch.dtype], str] = {}


def describe(shapes: Iterable[tuple[str, int, int]], dtype: torch.dtype) -> str:
    """The blocks a model's GEMVs launch with and where each came from, for a benchmark row:
    "norm_linear 3072x2048 2/1024/4 shipped; ..." (heuristic: nothing chosen for the shape)."""
    parts = []
    for op, N, K in dict.fromkeys(shapes):
        config = fused_linear._config(op, N, K, dtype)
        source = SOURCES.get((op, N, K, dtype), "heuristic") if tuning_enabled() else "heuristic"
        parts.append(f"{op} {N}x{K} {'/'.join(map(str, config))} {source}")
    return "; ".join(parts)


def tune_shapes(
    shapes: Iterable[tuple[str, int, int]], dtype: torch.dtype, device, row_buckets: Iterable[int] = ()
) -> float:
    """Choose the blocks of each (op, N, K) of a model (before its graphs are captured: tuning
    allocates and synchronises), from the first of: this process's choice, the user's store for
    this card, the choices shipped for it, tune() (then saved to the store); the role lists (residual
    add, early release) of both apply. RUNTIME_GEMV_TUNE=fresh skips store and shipped choices and
    role lists and overwrites the store; =0 leaves the heuristic's blocks.
    With RUNTIME_ROWS_TUNE=1 also tune_rows each shape but the LM head for each batch bucket of
    2..16 rows in row_buckets (off by default: the heuristic's blocks otherwise). Returns the
    seconds spent."""
    start = time.perf_counter()
    if tuning_enabled():
        shapes = list(dict.fromkeys(shapes))
        fresh = os.environ.get("RUNTIME_GEMV_TUNE") == "fresh"
        card = tuning_store.card(device)
        if card is not None and not fresh:  # the projections whose residual add or early release
            for field, named in gemv_blocks.SHIPPED_ROLES.items():  # the step preferred on this card
                named.update(tuning_store.shipped_roles(card, field) | tuning_store.stored_roles(card, field))
        # stale entries (a config no longer among the candidates) are dropped: that shape re-tunes
        stored = {} if card is None else {k: v for k, v in tuning_store.load(card).items() if _valid(k, v[0])}
        sources = (
            [] if card is None or fresh else [("stored", stored), ("shipped", tuning_store.shipped(card))]
        )
        measured = {}
        for op, N, K in shapes:
            key = (op, N, K, dtype)
            if key in fused_linear._TUNED and not (fresh and SOURCES.get(key) in ("stored", "shipped")):
                continue
            for source, table in sources:
                if key in table and _valid(key, table[key][0]):
                    fused_linear._TUNED[key], SOURCES[key] = table[key][0], source
                    break
            else:
                best = tune(op, N, K, dtype, device)
                if card is not None:  # tune() timed the candidates: keep the result for the next start
                    SOURCES[key] = "tuned"
                    measured[key] = (best, TIMINGS.get(key, {}).get(best))
        if measured:
            tuning_store.save(card, {**stored, **measured})
        if os.environ.get("RUNTIME_ROWS_TUNE", "0") == "1":
            for M in (b for b in row_buckets if MIN_ROWS <= b <= MAX_ROWS):
                for op, N, K in rows_shapes(shapes):
                    if (op, M, N, K, dtype) not in fused_rows_config._TUNED_ROWS:
                        tune_rows(op, M, N, K, dtype, device)
    return time.perf_counter() - start


def rows_shapes(shapes: Iterable[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    """The batch-rows kernel's (op, N, K) for a model's batch-1 GEMV shapes: the same products, as
    the rows kernel runs them (gate/up as norm_linear, the activation a kernel of its own; no LM
    head), and each norm product once more as the folded norms' raw rows take it
    (RUNTIME_BATCH_GEMM): qkv a plain `linear`, gate/up `gated_linear` of N / 2 outputs."""
    out = []
    for op, N, K in shapes:
        base = op.removesuffix("_pre")
        if base == "lm_head":
            continue
        if base == "norm_linear_act":
            out += [("norm_linear", N, K), ("gated_linear", N // 2, K)]
        elif base == "norm_linear":
            out += [("norm_linear", N, K), ("linear", N, K)]
        else:
            out.append((base, N, K))
    return list(dict.fromkeys(out))


def candidates(op: str, N: int, K: int, dtype: torch.dtype) -> list[tuple[int, int, int]]:
    """The blocks tune() times for op at (N, K): the heuristic's, then CANDIDATE_CONFIGS, with
    BLOCK_K never past next_pow2(K) (as the launch clamps it), duplicates dropped."""
    heuristic = gemv_config(N, K, dtype.itemsize, _PROLOGUE_VECTORS[op])
    least_n = 2 if op in GATED_OPS else 1  # (gate, up) row pairs
    return list(
        dict.fromkeys(
            (max(n, least_n), max(16, min(k, next_pow2(K))), w) for n, k, w in [heuristic, *CANDIDATE_CONFIGS]
        )
    )


def _valid(key: tuple[str, int, int, torch.dtype], config: tuple[int, int, int]) -> bool:
    """Whether a remembered config is one tune() could choose today (files outlive candidate lists)."""
    return tuple(config) in candidates(*key)


# the fastest SM clock a card may run (Hz): a spin of HOST_GAP_CLOCK x seconds cycles lasts at least
# that long on any card
HOST_GAP_CLOCK = 3.5e9


def _time_us(fn, warmup: int = 3, reps: int = 20) -> float:
    """Median device microseconds of fn, L2 flushed before each call (a decode step's weights come
    from HBM). After the flush a spin kernel keeps the GPU busy for twice the host's time to
    enqueue the start event and fn, so the GPU never waits on the host inside the timed span: a
    launch path slower than the flush (~60 us on an H200's host) would otherwise add its wait to
    the kernel's time and make the choice a draw."""
    flush = torch.empty(64 << 20, dtype=torch.int32, device="cuda")  # 256 MB > L2
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    begin = time.perf_counter()
    torch.cuda.Event(enable_timing=True).record()
    fn()
    host_s = time.perf_counter() - begin
    spin_cycles = int(2 * max(host_s, 20e-6) * HOST_GAP_CLOCK)
    times = []
    for _ in range(reps):
        flush.zero_()
        torch.cuda._sleep(spin_cycles)  # touches no memory: L2 stays flushed
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return 1000.0 * statistics.median(times)


def tune(op_name: str, N: int, K: int, dtype: torch.dtype, device) -> tuple[int, int, int]:
    """The fastest of CANDIDATE_CONFIGS and the heuristic for op_name at (N, K), remembered for the
    launches. Off CUDA (or without compiled Triton) a no-op that returns the heuristic."""
    if torch.device(device).type != "cuda" or not AVAILABLE or INTERPRETING:
        return candidates(op_name, N, K, dtype)[0]  # the heuristic's blocks
    key = (op_name, N, K, dtype)
    base = op_name.removesuffix("_pre")
    gated = base == "norm_linear_act"
    weight = torch.randn(N, K, device=device, dtype=dtype) / math.sqrt(K)
    vec = torch.randn(2 * K, device=device, dtype=dtype)
    norm_w = torch.randn(K, device=device, dtype=dtype)
    pre_w = norm_w if op_name.endswith("_pre") else None  # Gemma's sandwich pre-norm of h
    y = torch.empty(
        N // 2 if gated else N, device=device, dtype=torch.float32 if base == "lm_head" else dtype
    )
    res_out = torch.empty(K, device=device, dtype=dtype)
    # the decoder's common case per op: norm with a residual add, offset 0
    prologue, x, res, nw, ro = {
        "linear": (_NONE, vec[:K], None, None, None),
        "norm_linear": (_NORM, vec[:K], vec[K:], norm_w, res_out),
        "norm_linear_act": (_NORM, vec[:K], vec[K:], norm_w, res_out),
        "lm_head": (_NORM, vec[:K], vec[K:], norm_w, res_out),
        "act_linear": (_ACT, vec, None, None, None),
    }[base]
    timings = {}
    with phase_clock.paused():  # candidates are timed as they run, never clocked
        for config in candidates(op_name, N, K, dtype):
            timings[config] = _time_us(
                lambda c=config: _launch(
                    prologue, x, res, nw, pre_w, weight, y, ro, 1e-6, 0.0, False, c, gated
                )
            )
    best = min(timings, key=timings.get)
    TIMINGS[key] = timings
    fused_linear._TUNED[key] = best  # looked up on the module, so a test may swap the table
    return best


# ---------------------------------------------------------------- the batch-rows kernel (fused_rows.py)


def tune_rows(
    op: str, M_bucket: int, N: int, K: int, dtype: torch.dtype, device
) -> tuple[int, int, int, int, int]:
    """The fastest of rows_config's choice and CANDIDATE_CONFIGS for op ("norm_linear", "lm_head",
    "act_linear", "linear", "gated_linear") at M_bucket rows and an (N, K) weight, remembered for
    the launches (timed as gemv_tuning times the batch-1 kernel: L2 flushed, median). Before graph capture: it allocates
    and synchronises. Off CUDA a no-op that returns the heuristic."""
    heuristic = rows_config(N, K, dtype.itemsize, _OP_COST[op])
    if torch.device(device).type != "cuda" or not AVAILABLE or INTERPRETING:
        return heuristic
    gated = op == "gated_linear"  # N outputs of a (2N, K) [gate | up] matrix, as the folded step runs it
    weight = torch.randn(2 * N if gated else N, K, device=device, dtype=dtype) / math.sqrt(K)
    vec = torch.randn(M_bucket, 2 * K, device=device, dtype=dtype)  # gate_up, or h | residual
    norm_w = torch.randn(K, device=device, dtype=dtype)
    y = torch.empty(M_bucket, N, device=device, dtype=torch.float32 if op == "lm_head" else dtype)
    res_out = torch.empty(M_bucket, K, device=device, dtype=dtype)
    # the decoder's common case per op: norm with a residual add, offset 0
    prologue, x, res, nw, ro = {
        "linear": (_NONE, vec[:, :K], None, None, None),
        "norm_linear": (_NORM, vec[:, :K], vec[:, K:], norm_w, res_out),
        "lm_head": (_NORM, vec[:, :K], vec[:, K:], norm_w, res_out),
        "act_linear": (_ACT, vec, None, None, None),
        "gated_linear": (_NONE, vec[:, :K], None, None, None),
    }[op]
    gate = {"gated": gated, "row_scale": gated}  # the gated op as the folded step launches it
    timings = {}
    for block_n, block_k, split, num_warps, num_stages in dict.fromkeys([heuristic, *ROWS_CANDIDATES]):
        block_k = max(16, min(block_k, next_pow2(K)))
        config = (block_n, block_k, 1 if gated else _slices(K, block_k, split)[0], num_warps, num_stages)
        if config not in timings:
            timings[config] = _time_us(
                lambda c=config: fused_rows._launch(
                    prologue, x, res, nw, None, weight, y, ro, 1e-6, 0.0, False, c, **gate
                )
            )
    best = min(timings, key=timings.get)
    fused_rows_config._TUNED_ROWS[(op, M_bucket, N, K, dtype)] = best
    return best
