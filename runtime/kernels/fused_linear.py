"""Batch-1 GEMV y = x @ W.T with the small op before it folded in: plain-torch references and one Triton kernel.

At M == 1 a decode step is memory-bound and cuBLAS leaves small kernels around each matrix product.
Three ops fold them into the product (W is nn.Linear's (N, K), row-major; no bias):
  norm_linear  (residual add +) RMSNorm, then the product: the qkv and gate/up projections
  act_linear   the gated activation of [gate | up], then the product: the down projection
  linear       the product alone (o projection)
The kernel recomputes the prologue chunk by chunk in the references' rounding (see rmsnorm.py and
activation.py, whose jit helpers it shares), so it differs from them only by the order of fp32 sums.
The Triton entry points take one row (leading dims whose product is 1); more rows take the reference
here, and ops.py sends them to the prologue kernels and cuBLAS (prefill, batched decode: cuBLAS GEMM
is the right tool there).

Launch: grid (cdiv(N, BLOCK_N),); each program owns BLOCK_N output rows, streams their W rows in
(BLOCK_N, BLOCK_K) tiles and keeps a (BLOCK_N, BLOCK_K) fp32 accumulator, reduced once at the end.
gemv_config picks the blocks from the shape; gemv_tuning.tune() times CANDIDATE_CONFIGS on the GPU
and its choice wins from then on (call it before graph capture: it allocates and synchronises).
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F

from runtime.kernels._triton import INTERPRETING, cdiv, jit, next_pow2, pdl, pdl_release, pdl_wait, tl
from runtime.kernels.activation import ACTIVATIONS, _gated, gated_act_ref
from runtime.kernels.rmsnorm import _apply_norm, _inv_rms, add_rms_norm_ref, rms_norm_ref

MAX_NORM_K = 16384  # norm_linear holds a whole row in registers for its statistics
SMS = 132  # H100 SXM; the heuristic only needs the order of magnitude

# (BLOCK_N, BLOCK_K, num_warps) that tune() times; each compiles once per op and dtype
# (short BLOCK_K tiles waste no lanes on K = 1152 = 9 x 128, Gemma's hidden size)
CANDIDATE_CONFIGS = [
    (1, 2048, 4), (2, 1024, 4), (4, 512, 4), (4, 1024, 4), (8, 512, 4), (8, 1024, 8), (16, 256, 4), (16, 512, 8),
    (16, 128, 4), (32, 128, 4), (32, 256, 8), (2, 2048, 8), (1, 4096, 8),
]  # fmt: skip
# K-long vectors each op's prologue reloads per K step (norm: residual, h, norm_w; act: gate, up)
# ("lm_head": norm_linear with a wider output dtype, the float32 logits, compiled and tuned apart)
_PROLOGUE_VECTORS = {"linear": 0, "norm_linear": 3, "act_linear": 2, "lm_head": 3}
_TUNED: dict[tuple[str, int, int, torch.dtype], tuple[int, int, int]] = {}

_NONE, _NORM, _ACT = 0, 1, 2  # the kernel's PROLOGUE


# ---------------------------------------------------------------- references (today's unfused math)


def norm_linear_ref(
    h: torch.Tensor | None,
    residual: torch.Tensor,
    norm_w: torch.Tensor,
    eps: float,
    offset: float,
    pre_w: torch.Tensor | None,
    weight: torch.Tensor,
    out_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """h, residual (..., K), weight (N, K) -> (linear(rms_norm(residual + h')), residual + h') with
    h' = h or rms_norm(h, pre_w); h None (first layer): nothing to add, the residual comes back as is.
    out_dtype (the LM head's float32): the product in the weights' dtype, then cast."""
    if h is None:
        normed, new_residual = rms_norm_ref(residual, norm_w, eps, offset), residual
    else:
        normed, new_residual = add_rms_norm_ref(h, residual, norm_w, eps, offset, pre_w)
    y = F.linear(normed, weight)
    return (y if out_dtype is None else y.to(out_dtype)), new_residual


def act_linear_ref(gate_up: torch.Tensor, activation: str, weight: torch.Tensor) -> torch.Tensor:
    """gate_up (..., 2I) = [gate | up], weight (N, I) -> linear(act(gate) * up) (..., N)."""
    return F.linear(gated_act_ref(gate_up, activation), weight)


def linear_ref(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x (..., K), weight (N, K) -> (..., N)."""
    return F.linear(x, weight)


# ---------------------------------------------------------------- the kernel


@jit
def _input_chunk(
    x_ptr, res_ptr, norm_w_ptr, pre_w_ptr, cols, mask, K, inv, inv_pre,
    PROLOGUE: tl.constexpr, OFFSET: tl.constexpr, HAS_H: tl.constexpr, HAS_PRE: tl.constexpr, GELU: tl.constexpr,
):  # fmt: skip
    """The GEMV's input at columns `cols` (BLOCK_K,), in the dtype, with the prologue applied."""
    if PROLOGUE == 1:
        # the normed chunk again, from L2, in the reference's rounding
        s = tl.load(res_ptr + cols, mask=mask, other=0.0)
        if HAS_H:
            h = tl.load(x_ptr + cols, mask=mask, other=0.0)
            if HAS_PRE:
                h = _apply_norm(h, inv_pre, pre_w_ptr, cols, mask, OFFSET).to(h.dtype)
            s = (s.to(tl.float32) + h.to(tl.float32)).to(s.dtype)
        x = _apply_norm(s, inv, norm_w_ptr, cols, mask, OFFSET).to(s.dtype)
    elif PROLOGUE == 2:
        gate = tl.load(x_ptr + cols, mask=mask, other=0.0)
        up = tl.load(x_ptr + K + cols, mask=mask, other=0.0)
        x = _gated(gate, up, GELU).to(gate.dtype)
    else:
        x = tl.load(x_ptr + cols, mask=mask, other=0.0)
    return x


@jit
def _gemv_kernel(
    x_ptr,
    res_ptr,
    norm_w_ptr,
    pre_w_ptr,
    w_ptr,
    y_ptr,
    res_out_ptr,
    N,
    K,
    eps,
    PROLOGUE: tl.constexpr,
    OFFSET: tl.constexpr,
    HAS_H: tl.constexpr,
    HAS_PRE: tl.constexpr,
    GELU: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK: tl.constexpr,
    PDL: tl.constexpr,
):
    # x: the input row (K,) (norm: h; act: gate_up (2K,)); W (N, K); y (N,). Program p owns rows
    # [p * BLOCK_N, (p + 1) * BLOCK_N); int64 row offsets since N * K may pass 2^31
    pid = tl.program_id(0)
    rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    row_mask = rows < N
    w_rows = w_ptr + rows.to(tl.int64)[:, None] * K  # (BLOCK_N, 1)
    # W is read once per step: don't let it push the activations out of L2. The first tile is
    # loaded before the wait: no kernel writes weights, so under PDL this load overlaps the
    # previous kernel's tail (for the small projections, most of the weight is in flight then)
    cols = tl.arange(0, BLOCK_K)
    mask = cols < K
    w = tl.load(
        w_rows + cols[None, :],
        mask=row_mask[:, None] & mask[None, :],
        other=0.0,
        eviction_policy="evict_first",
    )
    pdl_wait(PDL)

    inv = 0.0
    inv_pre = 0.0
    if PROLOGUE == 1:
        # row statistics over the whole of K (BLOCK >= K): s = residual + h' in the dtype, its 1 / rms,
        # and h's own 1 / rms for the sandwich norm (names differ from the loop's, which would be loop-carried)
        row_cols = tl.arange(0, BLOCK)
        row_mask_k = row_cols < K
        s_row = tl.load(res_ptr + row_cols, mask=row_mask_k, other=0.0)
        if HAS_H:
            h_row = tl.load(x_ptr + row_cols, mask=row_mask_k, other=0.0)
            if HAS_PRE:
                inv_pre = _inv_rms(h_row, K, eps)
                h_row = _apply_norm(h_row, inv_pre, pre_w_ptr, row_cols, row_mask_k, OFFSET).to(h_row.dtype)
            s_row = (s_row.to(tl.float32) + h_row.to(tl.float32)).to(s_row.dtype)
            if pid == 0:  # a separate buffer: the other programs still read the old residual
                tl.store(res_out_ptr + row_cols, s_row, mask=row_mask_k)
        inv = _inv_rms(s_row, K, eps)

    x = _input_chunk(
        x_ptr, res_ptr, norm_w_ptr, pre_w_ptr, cols, mask, K, inv, inv_pre, PROLOGUE, OFFSET, HAS_H, HAS_PRE, GELU
    )  # fmt: skip
    # (BLOCK_N, BLOCK_K), summed over K once, after the loop
    acc = w.to(tl.float32) * x.to(tl.float32)[None, :]
    for k0 in range(BLOCK_K, K, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        mask = cols < K
        x = _input_chunk(
            x_ptr, res_ptr, norm_w_ptr, pre_w_ptr, cols, mask, K, inv, inv_pre, PROLOGUE, OFFSET, HAS_H, HAS_PRE, GELU
        )  # fmt: skip
        w = tl.load(
            w_rows + cols[None, :],
            mask=row_mask[:, None] & mask[None, :],
            other=0.0,
            eviction_policy="evict_first",
        )
        acc += w.to(tl.float32) * x.to(tl.float32)[None, :]
    pdl_release(PDL)
    y = tl.sum(acc, axis=1)
    # rounded to the weights' dtype first, as F.linear(...).to(y's dtype) rounds (float32 logits)
    tl.store(y_ptr + rows, y.to(w_ptr.dtype.element_ty).to(y_ptr.dtype.element_ty), mask=row_mask)


# ---------------------------------------------------------------- launch configuration


def gemv_config(N: int, K: int, elem_bytes: int, vectors: int = 0) -> tuple[int, int, int]:
    """(BLOCK_N, BLOCK_K, num_warps) for an (N, K) weight of elem_bytes per element.

    Memory-bound: the bytes in flight are about (resident programs) x (tile bytes), so
    - BLOCK_N: the largest power of 2 <= 16 leaving >= 4 programs per SM (>= 2 when the prologue
      reloads `vectors` K-long vectors from L2 per step: fewer, taller programs reload them less often);
    - BLOCK_K: a ~8 KB weight tile (128 threads x four 16-byte loads in flight each), at least 512 B
      of each row (one warp's contiguous 16-byte loads), at most 4096 and next_pow2(K);
    - 4 warps, 8 when the tile ends up wider than 8 KB.
    """
    min_programs = (2 if vectors else 4) * SMS
    block_n = 16
    while block_n > 1 and cdiv(N, block_n) < min_programs:
        block_n //= 2
    block_k = max(512 // elem_bytes, 8192 // (block_n * elem_bytes))
    block_k = max(16, min(block_k, 4096, next_pow2(K)))
    num_warps = 8 if block_n * block_k * elem_bytes > 8192 else 4
    return block_n, block_k, num_warps


def _config(op: str, N: int, K: int, dtype: torch.dtype) -> tuple[int, int, int]:
    """tune()'s choice for this shape, else the heuristic; BLOCK_K never past next_pow2(K)."""
    config = _TUNED.get((op, N, K, dtype)) if tuning_enabled() else None
    if config is None and INTERPRETING:
        # NumPy runs the programs one after another: a few big ones (the tests plant GPU-like blocks)
        return min(64, next_pow2(N)), max(16, min(512, next_pow2(K))), 4
    if config is None:
        return gemv_config(N, K, dtype.itemsize, _PROLOGUE_VECTORS[op])
    block_n, block_k, num_warps = config
    return block_n, max(16, min(block_k, next_pow2(K))), num_warps


def _row(t: torch.Tensor) -> torch.Tensor:
    """(..., K) holding one row -> (K,) with unit stride."""
    t = t.reshape(t.shape[-1])
    return t if t.stride(0) == 1 else t.contiguous()


def one_row(t: torch.Tensor) -> bool:
    """Whether t (..., K) holds a single row: what the kernels here take."""
    return math.prod(t.shape[:-1]) == 1


def _launch(prologue, x, res, norm_w, pre_w, weight, y, res_out, eps, offset, gelu, config) -> None:
    """x, res: (K,) rows (x is (2K,) for act); y (N,); res_out (K,) or None."""
    assert weight.dim() == 2 and weight.is_contiguous(), "W must be a contiguous (N, K) nn.Linear weight"
    N, K = weight.shape
    block_n, block_k, num_warps = config
    block = next_pow2(K) if prologue == _NORM else 1  # the statistics' whole-row block (norm only)
    dummy = weight  # unused pointer arguments
    _gemv_kernel[(cdiv(N, block_n),)](
        x if x is not None else dummy, res if res is not None else dummy,
        norm_w if norm_w is not None else dummy, pre_w if pre_w is not None else dummy,
        weight, y, res_out if res_out is not None else y, N, K, eps,
        PROLOGUE=prologue, OFFSET=float(offset), HAS_H=x is not None, HAS_PRE=pre_w is not None, GELU=gelu,
        BLOCK_N=block_n, BLOCK_K=block_k, BLOCK=block, num_warps=num_warps, **pdl(weight.device),
    )  # fmt: skip


# ---------------------------------------------------------------- Triton entry points (M == 1)


def norm_linear_triton(
    h: torch.Tensor | None,
    residual: torch.Tensor,
    norm_w: torch.Tensor,
    eps: float,
    offset: float,
    pre_w: torch.Tensor | None,
    weight: torch.Tensor,
    out_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as norm_linear_ref (one dtype throughout); one kernel for one row, the reference
    for more rows or K > MAX_NORM_K."""
    K = residual.shape[-1]
    if not one_row(residual) or K > MAX_NORM_K:
        return norm_linear_ref(h, residual, norm_w, eps, offset, pre_w, weight, out_dtype)
    N = weight.shape[0]
    y = torch.empty((*residual.shape[:-1], N), dtype=out_dtype or weight.dtype, device=weight.device)
    new_residual = (
        residual if h is None else torch.empty_like(residual, memory_format=torch.contiguous_format)
    )
    _launch(
        _NORM, _row(h) if h is not None else None, _row(residual), norm_w, pre_w, weight, y,
        new_residual if h is not None else None, eps, offset, False,
        _config("norm_linear" if y.dtype == weight.dtype else "lm_head", N, K, weight.dtype),
    )  # fmt: skip
    return y, new_residual


def act_linear_triton(gate_up: torch.Tensor, activation: str, weight: torch.Tensor) -> torch.Tensor:
    """Same contract as act_linear_ref; one kernel for one row, the reference for more."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation {activation!r} is not one of {ACTIVATIONS}")
    if not one_row(gate_up):
        return act_linear_ref(gate_up, activation, weight)
    N, K = weight.shape
    assert gate_up.shape[-1] == 2 * K, (gate_up.shape, weight.shape)
    y = torch.empty((*gate_up.shape[:-1], N), dtype=weight.dtype, device=weight.device)
    _launch(
        _ACT, _row(gate_up), None, None, None, weight, y, None, 0.0, 0.0, activation == "gelu_tanh",
        _config("act_linear", N, K, weight.dtype),
    )  # fmt: skip
    return y


def linear_triton(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Same contract as linear_ref; one kernel for one row, the reference for more."""
    if not one_row(x):
        return linear_ref(x, weight)
    N, K = weight.shape
    y = torch.empty((*x.shape[:-1], N), dtype=weight.dtype, device=weight.device)
    _launch(
        _NONE, _row(x), None, None, None, weight, y, None, 0.0, 0.0, False, _config("linear", N, K, weight.dtype)
    )  # fmt: skip
    return y


# ---------------------------------------------------------------- which blocks to launch


def tuning_enabled() -> bool:
    """RUNTIME_GEMV_TUNE=0 launches the heuristic's blocks even where tune() chose others."""
    return os.environ.get("RUNTIME_GEMV_TUNE", "1") != "0"
