"""Batched-decode GEMM y = x @ W.T for 2..MAX_ROWS rows with the small op before it folded in: the
entry points and launch of one Triton kernel (rows_kernel.py).

fused_linear.py's three ops (norm_linear, act_linear, linear; its references are the contract here)
for a batch bucket of M = 2..16 rows, and linear_rows_add (out += x @ W.T in place, rounded once, as
addmm_ with cuBLAS's beta = 1: the folded batch step's residual adds). At M <= 16 the product is still bound by reading W once per
step, so one kernel streams W once for all M rows and recomputes the prologue (residual add + RMSNorm,
or the gated activation) tile by tile in the references' rounding, where the unfused path launches
the prologue kernel, then cuBLAS (and often its split-K reduce).

Kernel: program (n, k) owns output columns [n * BLOCK_N, (n + 1) * BLOCK_N) and K slice k of SPLIT.
It walks its slice in BLOCK_K steps: the prologue builds the input tile (BLOCK_M = 16 rows, rows past
M masked to zero) in the dtype, and tl.dot multiplies it with the (BLOCK_N, BLOCK_K) weight tile into
a (BLOCK_M, BLOCK_N) fp32 accumulator. norm first takes each row's statistics over the whole of K in
one or two passes over K chunks (the rows come from L2), and program (0, 0) writes residual + h' to a
separate buffer during them (the others still read the old residual). With SPLIT > 1 each program
stores its fp32 partial, and the last of a column block's SPLIT programs to arrive (an arrival counter
per column block, left at zero for the next launch) sums the partials in split order, so the result
does not depend on which program finished last. Results are rounded to the weights' dtype, then to
the output dtype, as F.linear(...).to(out_dtype) rounds.

Why split K at all: at 16 rows every program recomputes the prologue for 16 x (its K) elements, so
the activation's two MUFU ops per element (16 per clock per SM) cost ~7 us per program at K = 6144:
as long as the down projection's whole weight read. Splitting K divides that by SPLIT;
fused_rows_config.rows_config weighs it against the extra partial traffic with a rough model, and
gemv_tuning.tune_rows() times the candidates on the card and wins from then on (before capture).
Opt-in (ops.py: RUNTIME_BATCH_ROWS=fused): on the H100 the batch-16 step was slower this way than
the norm kernel + cuBLAS (notes/kernels.md).

# graph: grid fixed by the shapes; the split path's partials are a per-call buffer and its counters
# (arrival.py) are made on the device's first split launch (the warm-up before capture).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from runtime.kernels import mma_rows
from runtime.kernels._triton import INTERPRETING, cdiv, pdl
from runtime.kernels.activation import ACTIVATIONS, gated_act_ref
from runtime.kernels.arrival import arrival_counters
from runtime.kernels.fused_linear import _ACT, _NONE, _NORM, act_linear_ref, linear_ref, norm_linear_ref
from runtime.kernels.fused_rows_config import BLOCK_M, MAX_ROWS, MIN_ROWS, _slices, config_for
from runtime.kernels.rmsnorm import _rows
from runtime.kernels.rows_kernel import _rows_kernel

# ---------------------------------------------------------------- launch configuration


def rows_of(t: torch.Tensor) -> int:
    """The rows t (..., K) holds: the product of its leading dims."""
    return math.prod(t.shape[:-1])


def fits_rows(t: torch.Tensor) -> bool:
    """Whether t (..., K) holds 2..MAX_ROWS rows: what the kernel here takes."""
    return MIN_ROWS <= rows_of(t) <= MAX_ROWS


def _one_dtype(weight: torch.Tensor, *tensors: torch.Tensor | None) -> bool:
    """Whether every tensor given shares the weights' dtype (the kernel's tl.dot needs one dtype)."""
    return all(t.dtype == weight.dtype for t in tensors if t is not None)


def _launch(
    prologue, x, res, norm_w, pre_w, weight, y, res_out, eps, offset, gelu, config, accumulate=False,
    gated=False, row_scale=False, release_early=False, op="linear",
) -> None:  # fmt: skip
    """x, res: (M, K) rows of unit column stride (x is (M, 2K) for act); y (M, N) and res_out (M, K)
    contiguous (res_out None: nothing to write); accumulate: y += the product, in place. gated: W is
    (2N, K) = [gate | up], y (M, N) = act(gate) * up (K unsplit), each gate and up row first divided
    by rms of x's row (eps) with row_scale. release_early: under PDL the next kernel may launch
    right after this one's wait (the qkv product: the attention's programs then load their first
    cache block and tables while this one streams W), not only when it exits. op: the launch's name
    ("logits": the batch LM head), which mma_rows.enabled reads."""
    assert weight.dim() == 2 and weight.is_contiguous(), "W must be a contiguous (N, K) nn.Linear weight"
    if prologue == _NONE and x is not None and mma_rows.enabled(op) and mma_rows.takes(x, weight, y):
        mma_rows.launch(
            x, weight, y, accumulate=accumulate, gated=gated, gelu=gelu, row_scale=row_scale, eps=eps,
            release_early=release_early, op=op,
        )  # fmt: skip
        return
    N, K = weight.shape
    N = N // 2 if gated else N
    M = (x if x is not None else res).shape[0]
    block_n, block_k, split, num_warps, num_stages = config
    splits, k_split = _slices(K, block_k, 1 if gated else split)
    n_blocks = cdiv(N, block_n)
    part, counters = y, y  # unused pointer arguments unless K is split
    if splits > 1:
        part = torch.empty((splits, M, N), dtype=torch.float32, device=weight.device)
        counters = arrival_counters(n_blocks, weight.device)
    dummy = weight
    _rows_kernel[(n_blocks, splits)](
        x if x is not None else dummy, x.stride(0) if x is not None else 0,
        res if res is not None else dummy, res.stride(0) if res is not None else 0,
        norm_w if norm_w is not None else dummy, pre_w if pre_w is not None else dummy,
        weight, y, res_out if res_out is not None else y, part, counters, M, N, K, k_split, eps,
        PROLOGUE=prologue, OFFSET=float(offset), HAS_H=prologue == _NORM and x is not None,
        HAS_PRE=prologue == _NORM and x is not None and pre_w is not None, GELU=gelu, SPLIT=splits,
        BLOCK_M=BLOCK_M, BLOCK_N=block_n, BLOCK_K=block_k, DOT_F32=INTERPRETING, ACCUMULATE=accumulate,
        GATED=gated, ROW_SCALE=row_scale, num_warps=num_warps, num_stages=num_stages,
        **pdl(weight.device, early=release_early),
    )  # fmt: skip


# ---------------------------------------------------------------- Triton entry points (2..16 rows)


def norm_linear_rows_triton(
    h: torch.Tensor | None,
    residual: torch.Tensor,
    norm_w: torch.Tensor,
    eps: float,
    offset: float,
    pre_w: torch.Tensor | None,
    weight: torch.Tensor,
    out_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as norm_linear_ref (one dtype throughout); one kernel for 2..MAX_ROWS rows, the
    reference for other row counts or mixed dtypes."""
    if not fits_rows(residual) or not _one_dtype(weight, h, residual, norm_w, pre_w):
        return norm_linear_ref(h, residual, norm_w, eps, offset, pre_w, weight, out_dtype)
    N, K = weight.shape
    assert residual.shape[-1] == K and (h is None or h.shape == residual.shape), (
        residual.shape,
        weight.shape,
    )
    y = torch.empty((*residual.shape[:-1], N), dtype=out_dtype or weight.dtype, device=weight.device)
    new_residual = (
        residual if h is None else torch.empty(residual.shape, dtype=residual.dtype, device=weight.device)
    )
    cost = "norm_first" if h is None else "norm_add" if pre_w is None else "norm_sandwich"
    op = "norm_linear" if y.dtype == weight.dtype else "lm_head"
    _launch(
        _NORM, _rows(h) if h is not None else None, _rows(residual), norm_w, pre_w, weight, y,
        new_residual if h is not None else None, eps, offset, False,
        config_for(op, rows_of(residual), N, K, weight.dtype, cost),
    )  # fmt: skip
    return y, new_residual


def act_linear_rows_triton(gate_up: torch.Tensor, activation: str, weight: torch.Tensor) -> torch.Tensor:
    """Same contract as act_linear_ref; one kernel for 2..MAX_ROWS rows, else (or mixed dtypes) the reference."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation {activation!r} is not one of {ACTIVATIONS}")
    if not fits_rows(gate_up) or not _one_dtype(weight, gate_up):
        return act_linear_ref(gate_up, activation, weight)
    N, K = weight.shape
    assert gate_up.shape[-1] == 2 * K, (gate_up.shape, weight.shape)
    y = torch.empty((*gate_up.shape[:-1], N), dtype=weight.dtype, device=weight.device)
    _launch(
        _ACT, _rows(gate_up), None, None, None, weight, y, None, 0.0, 0.0, activation == "gelu_tanh",
        config_for("act_linear", rows_of(gate_up), N, K, weight.dtype, "act"),
    )  # fmt: skip
    return y


def linear_rows_triton(
    x: torch.Tensor, weight: torch.Tensor, release_early: bool = False, op: str = "linear"
) -> torch.Tensor:
    """Same contract as linear_ref; one kernel for 2..MAX_ROWS rows, else (or mixed dtypes) the
    reference. release_early: see _launch (the batch step's qkv product). op: the launch's name for
    its blocks (config_for; "logits": the LM head's own)."""
    if not fits_rows(x) or not _one_dtype(weight, x):
        return linear_ref(x, weight)
    N, K = weight.shape
    assert x.shape[-1] == K, (x.shape, weight.shape)
    y = torch.empty((*x.shape[:-1], N), dtype=weight.dtype, device=weight.device)
    _launch(
        _NONE, _rows(x), None, None, None, weight, y, None, 0.0, 0.0, False,
        config_for(op, rows_of(x), N, K, weight.dtype, "linear"), release_early=release_early, op=op,
    )  # fmt: skip
    return y


def linear_rows_add_ref(out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """out (M, N) += x (M, K) @ weight (N, K).T in place, rounded once (addmm_, cuBLAS's beta = 1)."""
    return out.addmm_(x, weight.t())


def linear_rows_add_triton(out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Same contract as linear_rows_add_ref; one kernel for 2..MAX_ROWS rows (out contiguous, one
    dtype), else the reference."""
    if not fits_rows(x) or not _one_dtype(weight, x, out) or not out.is_contiguous() or out.dim() != 2:
        return linear_rows_add_ref(out, x, weight)
    N, K = weight.shape
    assert x.shape == (out.shape[0], K) and out.shape[1] == N, (x.shape, out.shape, weight.shape)
    _launch(
        _NONE, _rows(x), None, None, None, weight, out, None, 0.0, 0.0, False,
        config_for("linear", rows_of(x), N, K, weight.dtype, "linear"), accumulate=True,
    )  # fmt: skip
    return out


def gated_linear_rows_ref(
    x: torch.Tensor, weight: torch.Tensor, activation: str, norm_eps: float | None = None
) -> torch.Tensor:
    """x (M, K), weight (2I, K) = [gate | up] -> act(gate) * up (M, I) of x @ weight.T, in the
    dtype. norm_eps: x holds un-normed rows whose norm weight the matrix holds (folded_norms.py),
    so gate and up are first divided by rms(x) per row (gated_act_ref's norm_source)."""
    return gated_act_ref(
        F.linear(x, weight), activation, x if norm_eps is not None else None, norm_eps or 0.0
    )


def gated_linear_rows_triton(
    x: torch.Tensor, weight: torch.Tensor, activation: str, norm_eps: float | None = None
) -> torch.Tensor:
    """Same contract as gated_linear_rows_ref; one kernel for 2..MAX_ROWS rows (the activation as the
    product's epilogue: no gate_up tensor, no activation launch), else (or mixed dtypes) the reference."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation {activation!r} is not one of {ACTIVATIONS}")
    if not fits_rows(x) or not _one_dtype(weight, x) or x.dim() != 2:
        return gated_linear_rows_ref(x, weight, activation, norm_eps)
    two_i, K = weight.shape
    assert x.shape[-1] == K and two_i % 2 == 0, (x.shape, weight.shape)
    y = torch.empty((x.shape[0], two_i // 2), dtype=weight.dtype, device=weight.device)
    _launch(
        _NONE, _rows(x), None, None, None, weight, y, None, norm_eps or 0.0, 0.0, activation == "gelu_tanh",
        config_for("gated_linear", rows_of(x), two_i // 2, K, weight.dtype, "gated"),
        gated=True, row_scale=norm_eps is not None,
    )  # fmt: skip
    return y
