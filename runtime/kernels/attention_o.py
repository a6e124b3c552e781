"""Batch-1 decode attention and the o projection in one launch: the split programs of
qkv_attention.py, then programs that each own a few rows of W_o and hand the o GEMV's result
(plus the residual, where the branch joins it: linear_add) to the next kernel.

Why one launch: at batch 1 the attention reads well under a megabyte (its cache sits in L2 near
position 300) while the o projection's 2-8 MB of weights wait for it, and the merge and o GEMV
launches each add a ramp and a tail (notes/kernels.md, the step timelines). Here the o programs
load their weight tiles into registers while the attention runs (DRAM is idle then), and start
multiplying as soon as the attention's output is complete, without a kernel boundary:
  - programs [0, n_attn): the split programs with the in-kernel merge (the last program of each
    (row, kv head) merges its G heads, or one split writes its output), each of which then adds 1
    to a counter with release semantics (_split_program's SIGNAL);
  - programs [n_attn, n_attn + n_o): an o program loads its (BLOCK_N, K) tile of W_o and its
    residual rows, waits until the counter reaches the kv head count (an acquire), reads the
    attention row (H * D,) from L2, and stores y = (residual +) W_o x.
Deadlock: the o programs spin, so every attention program must be able to run while they do. The
attention programs have the lower program ids and the GPU dispatches a grid's programs in order,
so each has its SM slot before any o program takes one; none of them waits for an o program.
The last o program to pass the wait resets the counters (two int32 of arrival.handoff_counters),
so they are zero between launches. Under the CPU interpreter programs run one after another in
id order: the counter is complete when the first o program looks.
"""

from __future__ import annotations

import torch

from runtime.kernels._triton import cdiv, jit, next_pow2, pdl_release_now, tl
from runtime.kernels.arrival import handoff_counters
from runtime.kernels.attention_plan import o_rows_per_program
from runtime.kernels.fused_linear import linear_add_ref, linear_ref
from runtime.kernels.qkv_attention import qkv_decode_attention_ref, split_launch
from runtime.kernels.qkv_attention_kernel import _split_program


def qkv_attention_o_ref(
    qkv: torch.Tensor,
    heads: int,
    kv_heads: int,
    cos: torch.Tensor,
    sin: torch.Tensor,
    q_weight: torch.Tensor | None,
    k_weight: torch.Tensor | None,
    eps: float,
    offset: float,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    positions: torch.Tensor,
    scale: float,
    o_weight: torch.Tensor,
    residual: torch.Tensor | None,
) -> torch.Tensor:
    """qkv (1, 1, (H + 2 Hkv) D) -> (1, 1, hidden): qkv_decode_attention_ref's output (1, H, D) through
    o_weight (hidden, H D), plus residual (1, 1, hidden) where given (linear_add_ref's rounding)."""
    out = qkv_decode_attention_ref(
        qkv, heads, kv_heads, cos, sin, q_weight, k_weight, eps, offset, k_cache, v_cache, positions, scale
    ).reshape(qkv.shape[0], 1, -1)
    return linear_ref(out, o_weight) if residual is None else linear_add_ref(out, o_weight, residual)


def qkv_attention_o_triton(
    qkv: torch.Tensor,
    heads: int,
    kv_heads: int,
    cos: torch.Tensor,
    sin: torch.Tensor,
    q_weight: torch.Tensor | None,
    k_weight: torch.Tensor | None,
    eps: float,
    offset: float,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    positions: torch.Tensor,
    scale: float,
    o_weight: torch.Tensor,
    residual: torch.Tensor | None,
    num_splits: int | None = None,
) -> torch.Tensor:
    """Same contract as qkv_attention_o_ref, one launch; one row (B = 1) and o_weight contiguous in
    qkv's dtype. num_splits overrides the attention's P (tests)."""
    N, K = o_weight.shape
    fits = o_weight.is_contiguous() and o_weight.dtype == qkv.dtype and K == heads * k_cache.shape[3]
    if qkv.shape[0] != 1 or not fits:
        raise ValueError(
            f"attention + o takes one row and a contiguous (hidden, H x D) o weight of qkv's dtype: "
            f"got qkv {tuple(qkv.shape)} {qkv.dtype}, o weight {tuple(o_weight.shape)} {o_weight.dtype}"
        )
    plan = split_launch(
        qkv, heads, kv_heads, cos, sin, q_weight, k_weight, eps, offset, k_cache, v_cache, positions, scale,
        None, 0.0, num_splits, True, "attention",
    )  # fmt: skip
    y = torch.empty((1, 1, N), dtype=o_weight.dtype, device=o_weight.device)
    res = y if residual is None else residual.reshape(N)
    if res.stride(0) != 1:
        res = res.contiguous()
    block_k = next_pow2(K)
    block_n = o_rows_per_program(block_k)
    n_o = cdiv(N, block_n)
    flags = handoff_counters(qkv.device)
    _attention_o_kernel[(plan.programs + n_o,)](
        *plan.args, o_weight, res, y, flags, N, K, plan.programs, n_o, kv_heads,
        **plan.constants, BLOCK_NO=block_n, BLOCK_KO=block_k, ADD_RES=residual is not None,
        num_warps=plan.num_warps, num_stages=plan.num_stages, **plan.launch,
    )  # fmt: skip
    return y


@jit
def _o_program(
    q, w_ptr, x_ptr, res_ptr, y_ptr, flags_ptr, N, K, n_o, target,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, ADD_RES: tl.constexpr, PDL: tl.constexpr,
):  # fmt: skip
    """o program q: rows [q * BLOCK_N, (q + 1) * BLOCK_N) of y = (res +) W x once flags_ptr[0]
    reaches `target`; W (N, K), x (K,) the attention's output, written by this launch."""
    rows = q * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    cols = tl.arange(0, BLOCK_K)
    col_ok = cols < K
    # written by no kernel (W) or by one that ended before this launch began (the residual, last
    # written by the previous layer's down projection, before the qkv GEMV passed its wait)
    w = tl.load(
        w_ptr + rows.to(tl.int64)[:, None] * K + cols[None, :],
        mask=row_ok[:, None] & col_ok[None, :],
        other=0.0,
        eviction_policy="evict_first",
    )
    if ADD_RES:
        res = tl.load(res_ptr + rows, mask=row_ok, other=0.0)
    done = tl.load(flags_ptr, volatile=True)
    while done < target:
        done = tl.load(flags_ptr, volatile=True)
    tl.atomic_add(flags_ptr, 0, sem="acquire", scope="gpu")  # the outputs' stores happen before here
    tl.debug_barrier()  # ... for every thread of the program
    x = tl.load(x_ptr + cols, mask=col_ok, other=0.0, cache_modifier=".cg")  # from L2, not a stale L1
    pdl_release_now(PDL)  # the next kernel waits for this whole launch before it reads
    # rounded to the dtype first, as F.linear rounds, then the add rounded once (linear_add_ref)
    y = tl.sum(w.to(tl.float32) * x.to(tl.float32)[None, :], axis=1).to(w_ptr.dtype.element_ty)
    if ADD_RES:
        y = (res.to(tl.float32) + y.to(tl.float32)).to(res.dtype)
    tl.store(y_ptr + rows, y.to(y_ptr.dtype.element_ty), mask=row_ok)
    # every o program has passed its wait once all have counted here: the last resets both counters
    passed = tl.atomic_add(flags_ptr + 1, 1, sem="relaxed", scope="gpu")
    if passed == n_o - 1:
        tl.store(flags_ptr, 0)
        tl.store(flags_ptr + 1, 0)


@jit
def _attention_o_kernel(
    qkv_ptr, q_w_ptr, k_w_ptr, cos_ptr, sin_ptr, pos_ptr, k_ptr, v_ptr, acc_ptr, ml_ptr, out_ptr,
    count_ptr, src_ptr, clock_ptr, qk_scale, eps, src_eps, n_src, src_stride, n_heads, n_kv_heads,
    n_splits, n_slots, qkv_stride, cos_stride, k_sb, k_sh, k_ss, v_sb, v_sh, v_ss, o_sb,
    w_ptr, res_ptr, y_ptr, flags_ptr, N, K, n_attn, n_o, target,
    G: tl.constexpr, BLOCK_G: tl.constexpr, D: tl.constexpr, HALF_BLOCK: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, QK_NORM: tl.constexpr, OFFSET: tl.constexpr,
    DOT_F32: tl.constexpr, MERGE: tl.constexpr, DIRECT: tl.constexpr, BLOCK_P: tl.constexpr,
    PREFETCH: tl.constexpr, ROW_SCALE: tl.constexpr, BLOCK_SRC: tl.constexpr, PDL: tl.constexpr,
    EARLY_TABLES: tl.constexpr, GROUPED: tl.constexpr, CLOCK: tl.constexpr, EARLY_ROW_SCALE: tl.constexpr,
    BLOCK_NO: tl.constexpr, BLOCK_KO: tl.constexpr, ADD_RES: tl.constexpr,
):  # fmt: skip
    """Grid (n_attn + n_o,): the split programs (bh, split) in order, then the o programs."""
    pid = tl.program_id(0)
    if pid < n_attn:
        _split_program(
            pid // n_splits, pid % n_splits, qkv_ptr, q_w_ptr, k_w_ptr, cos_ptr, sin_ptr, pos_ptr, k_ptr,
            v_ptr, acc_ptr, ml_ptr, out_ptr, count_ptr, src_ptr, clock_ptr, qk_scale, eps, src_eps, n_src,
            src_stride, n_heads, n_kv_heads, n_splits, n_slots, qkv_stride, cos_stride, k_sb, k_sh, k_ss,
            v_sb, v_sh, v_ss, o_sb, G, BLOCK_G, D, HALF_BLOCK, BLOCK_D, BLOCK_N, QK_NORM, OFFSET, DOT_F32,
            MERGE, DIRECT, BLOCK_P, PREFETCH, ROW_SCALE, BLOCK_SRC, PDL, EARLY_TABLES, GROUPED, CLOCK,
            EARLY_ROW_SCALE, flags_ptr, True,
        )  # fmt: skip
    else:
        _o_program(
            pid - n_attn, w_ptr, out_ptr, res_ptr, y_ptr, flags_ptr, N, K, n_o, target,
            BLOCK_NO, BLOCK_KO, ADD_RES, PDL,
        )  # fmt: skip
