"""Batch-1 GEMV y = x @ W.T with the small op before it folded in: plain-torch references, the
Triton entry points and their launch configuration (the kernel: gemv_kernel.py).

At M == 1 a decode step is memory-bound and cuBLAS leaves small kernels around each matrix product.
Four ops fold them into the product (W is nn.Linear's (N, K), row-major; no bias):
  norm_linear  (residual add +) RMSNorm, then the product: the qkv and gate/up projections
  act_linear   the gated activation of [gate | up], then the product: the down projection
  linear       the product alone (o projection)
  linear_add   residual + the product, the add in the epilogue: the o and down projections of a
               family whose branches join the residual without a norm of their own, so the next
               norm_linear reads one row (the new residual) instead of adding two
  norm_linear_act  norm_linear over the packed [gate | up] weight with the gated activation as its
               epilogue: each program takes gate and up rows of the same outputs, so the down
               projection after it is a plain `linear` (no activation recomputed per program)
The kernel recomputes the prologue chunk by chunk in the references' rounding (see rmsnorm.py and
activation.py, whose jit helpers it shares), so it differs from them only by the order of fp32 sums.
The Triton entry points take one row (leading dims whose product is 1); more rows take the reference
here, and ops.py sends them to the prologue kernels and cuBLAS (prefill, batched decode: cuBLAS GEMM
is the right tool there).

gemv_blocks.gemv_config picks the blocks from the shape; gemv_tuning.tune() times the candidates on the
GPU and its choice wins from then on (call it before graph capture: it allocates and synchronises).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from runtime.kernels._triton import INTERPRETING, PDL_MODES, cdiv, next_pow2, pdl, released_early
from runtime.kernels.activation import ACTIVATIONS, gated_act_ref
from runtime.kernels.attention_plan import QkvRelease, qkv_release
from runtime.kernels.gemv_blocks import (
    _PROLOGUE_VECTORS,
    GATED_OPS,
    block_override,
    early_first_chunk,
    gemv_config,
    gemv_op,
    tile_after_row,
    tuning_enabled,
)
from runtime.kernels.gemv_kernel import _gemv_kernel
from runtime.kernels.phase_clock import clock_buffer
from runtime.kernels.rmsnorm import add_rms_norm_ref, rms_norm_ref

MAX_NORM_K = 16384  # norm_linear holds a whole row in registers for its statistics
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


def norm_linear_act_ref(
    h: torch.Tensor | None,
    residual: torch.Tensor,
    norm_w: torch.Tensor,
    eps: float,
    offset: float,
    pre_w: torch.Tensor | None,
    weight: torch.Tensor,
    activation: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """weight (2I, K) = [gate | up] -> (act(gate) * up (..., I), residual + h'): norm_linear_ref,
    then gated_act_ref."""
    gate_up, new_residual = norm_linear_ref(h, residual, norm_w, eps, offset, pre_w, weight)
    return gated_act_ref(gate_up, activation), new_residual


def act_linear_ref(gate_up: torch.Tensor, activation: str, weight: torch.Tensor) -> torch.Tensor:
    """gate_up (..., 2I) = [gate | up], weight (N, I) -> linear(act(gate) * up) (..., N)."""
    return F.linear(gated_act_ref(gate_up, activation), weight)


def linear_add_ref(x: torch.Tensor, weight: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """x (..., K), weight (N, K), residual (..., N) -> residual + x @ W.T, the product rounded to the
    dtype first (as the unfused add of a linear's output rounds)."""
    return residual + F.linear(x, weight)


def linear_ref(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x (..., K), weight (N, K) -> (..., N)."""
    return F.linear(x, weight)


# ---------------------------------------------------------------- launch configuration


def _config(op: str, N: int, K: int, dtype: torch.dtype) -> tuple[int, int, int]:
    """tune()'s choice for this shape, else the heuristic; BLOCK_K never past next_pow2(K)."""
    config = block_override(op, N, K) or (_TUNED.get((op, N, K, dtype)) if tuning_enabled() else None)
    if config is None and INTERPRETING:
        # NumPy runs the programs one after another: a few big ones (the tests plant GPU-like blocks)
        return min(64, next_pow2(N)), max(16, min(512, next_pow2(K))), 4
    if config is None:
        config = gemv_config(N, K, dtype.itemsize, _PROLOGUE_VECTORS[op])
    block_n, block_k, num_warps = config
    return max(block_n, 2 if op in GATED_OPS else 1), max(16, min(block_k, next_pow2(K))), num_warps


def _row(t: torch.Tensor) -> torch.Tensor:
    """(..., K) holding one row -> (K,) with unit stride."""
    t = t.reshape(t.shape[-1])
    return t if t.stride(0) == 1 else t.contiguous()


def one_row(t: torch.Tensor) -> bool:
    """Whether t (..., K) holds a single row: what the kernels here take."""
    return math.prod(t.shape[:-1]) == 1


def _launch(
    prologue, x, res, norm_w, pre_w, weight, y, res_out, eps, offset, gelu, config, gated=False, add_res=False,
    release: QkvRelease | None = None, release_early: bool = False,
) -> None:  # fmt: skip
    """x, res: (K,) rows (x is (2K,) for act); y (N,) ((N / 2,) gated: weight is [gate | up]);
    res_out (K,) or None; add_res: res is (N,) and y = res + the product (plain prologue only);
    release: the qkv GEMV's, whose attention may launch right after this one's wait (always, or
    from a position on: attention_plan.qkv_release); release_early: the next kernel launches right
    after this one's wait (the plain and gated GEMVs' choice, ops.early_release)."""
    assert weight.dim() == 2 and weight.is_contiguous(), "W must be a contiguous (N, K) nn.Linear weight"
    N, K = weight.shape
    N = N // 2 if gated else N  # the outputs
    block_n, block_k, num_warps = config
    block = next_pow2(K) if prologue == _NORM else 1  # the statistics' whole-row block (norm only)
    dummy = weight  # unused pointer arguments
    programs = cdiv(N, block_n // 2 if gated else block_n)
    kind = (
        ("plain", "norm", "act")[prologue]
        + (" gated" if gated else "")
        + (" pre" if pre_w is not None else "")
        + (" add" if add_res else "")
    )
    clock = clock_buffer("gemv", f"gemv {kind} {weight.shape[0]}x{K}", programs, weight.device)
    launch = pdl(weight.device)
    late = launch["PDL"] == PDL_MODES["late"]
    when = qkv_release(programs, weight.device) if release is not None and late else "late"
    when = "early" if release_early and late else when
    if when == "early":
        launch = released_early(launch)
    release_at = release if when == "long" else None
    _gemv_kernel[(programs,)](
        x if x is not None else dummy, res if res is not None else dummy,
        norm_w if norm_w is not None else dummy, pre_w if pre_w is not None else dummy,
        weight, y, res_out if res_out is not None else y, clock if clock is not None else y,
        release_at.positions if release_at is not None else y, N, K, eps,
        release_at.from_position if release_at is not None else 0,
        PROLOGUE=prologue, OFFSET=float(offset), HAS_H=x is not None, HAS_PRE=pre_w is not None, GELU=gelu,
        GATED=gated, BLOCK_N=block_n, BLOCK_K=block_k, BLOCK=block, EARLY_CHUNK=early_first_chunk(),
        ADD_RES=add_res, CLOCK=clock is not None, TILE_AFTER_ROW=tile_after_row(), RELEASE_AT=release_at is not None,
        num_warps=num_warps, **launch,
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
    release: QkvRelease | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as norm_linear_ref (one dtype throughout); one kernel for one row, the reference
    for more rows or K > MAX_NORM_K. release: see _launch."""
    K = residual.shape[-1]
    if not one_row(residual) or K > MAX_NORM_K:
        return norm_linear_ref(h, residual, norm_w, eps, offset, pre_w, weight, out_dtype)
    op = "norm_linear" if (out_dtype or weight.dtype) == weight.dtype else "lm_head"
    return _norm_launch(h, residual, norm_w, eps, offset, pre_w, weight, out_dtype, op, None, release)


def norm_linear_act_triton(
    h: torch.Tensor | None,
    residual: torch.Tensor,
    norm_w: torch.Tensor,
    eps: float,
    offset: float,
    pre_w: torch.Tensor | None,
    weight: torch.Tensor,
    activation: str,
    release_early: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as norm_linear_act_ref; one kernel for one row, the reference otherwise.
    release_early: see _launch."""
    K = residual.shape[-1]
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation {activation!r} is not one of {ACTIVATIONS}")
    if not one_row(residual) or K > MAX_NORM_K:
        return norm_linear_act_ref(h, residual, norm_w, eps, offset, pre_w, weight, activation)
    return _norm_launch(
        h, residual, norm_w, eps, offset, pre_w, weight, None, "norm_linear_act", activation, release_early=release_early
    )  # fmt: skip


def _norm_launch(
    h, residual, norm_w, eps, offset, pre_w, weight, out_dtype, op: str, activation: str | None,
    release: QkvRelease | None = None, release_early: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """The one-row launch of norm_linear (activation None) and norm_linear_act (the gated epilogue:
    weight (2I, K), I outputs): (y, residual + h'), the residual itself when h is None."""
    N, K = weight.shape
    outputs = N if activation is None else N // 2
    y = torch.empty((*residual.shape[:-1], outputs), dtype=out_dtype or weight.dtype, device=weight.device)
    new_residual = (
        residual if h is None else torch.empty_like(residual, memory_format=torch.contiguous_format)
    )
    _launch(
        _NORM, _row(h) if h is not None else None, _row(residual), norm_w, pre_w, weight, y,
        new_residual if h is not None else None, eps, offset, activation == "gelu_tanh",
        _config(gemv_op(op, pre_w), N, K, weight.dtype), gated=activation is not None, release=release,
        release_early=release_early,
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


def linear_add_triton(
    x: torch.Tensor, weight: torch.Tensor, residual: torch.Tensor, release_early: bool = False
) -> torch.Tensor:
    """Same contract as linear_add_ref; one kernel for one row (one dtype), the reference otherwise.
    Never in place: the residual may still be read by the kernels of this step that follow.
    release_early: see _launch."""
    if not one_row(x) or residual.dtype != weight.dtype:
        return linear_add_ref(x, weight, residual)
    assert residual.shape[-1] == weight.shape[0], (residual.shape, weight.shape)
    return _plain_launch(x, weight, residual, release_early)


def linear_triton(x: torch.Tensor, weight: torch.Tensor, release_early: bool = False) -> torch.Tensor:
    """Same contract as linear_ref; one kernel for one row, the reference for more."""
    if not one_row(x):
        return linear_ref(x, weight)
    return _plain_launch(x, weight, None, release_early)


def _plain_launch(
    x: torch.Tensor, weight: torch.Tensor, residual: torch.Tensor | None, release_early: bool = False
) -> torch.Tensor:
    """The one-row launch of linear and linear_add (residual (..., N) added in the epilogue)."""
    N, K = weight.shape
    shape = (*x.shape[:-1], N) if residual is None else residual.shape
    y = torch.empty(shape, dtype=weight.dtype, device=weight.device)
    res = None if residual is None else _row(residual)
    _launch(
        _NONE, _row(x), res, None, None, weight, y, None, 0.0, 0.0, False, _config("linear", N, K, weight.dtype),
        add_res=residual is not None, release_early=release_early,
    )  # fmt: skip
    return y
