"""Batched-decode GEMM y = x @ W.T for 2..MAX_ROWS rows with the small op before it folded in: one Triton kernel.

fused_linear.py's three ops (norm_linear, act_linear, linear; its references are the contract here)
for a batch bucket of M = 2..16 rows. At M <= 16 the product is still bound by reading W once per
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

from runtime.kernels._triton import INTERPRETING, cdiv, jit, pdl, pdl_wait, tl
from runtime.kernels.activation import ACTIVATIONS, _gated
from runtime.kernels.arrival import arrival_counters
from runtime.kernels.fused_linear import _ACT, _NONE, _NORM, act_linear_ref, linear_ref, norm_linear_ref
from runtime.kernels.fused_rows_config import BLOCK_M, MAX_ROWS, MIN_ROWS, _slices, config_for
from runtime.kernels.rmsnorm import _apply_norm, _rows

# ---------------------------------------------------------------- the kernel


@jit
def _tile(ptr, stride, rows, row_mask, cols, col_mask):
    """The (BLOCK_M, BLOCK_K) tile of a row-major (M, stride) activation at `cols`, zero where masked."""
    return tl.load(
        ptr + rows[:, None] * stride + cols[None, :], mask=row_mask[:, None] & col_mask[None, :], other=0.0
    )


@jit
def _sum_tile(
    h_ptr, h_stride, res_ptr, res_stride, pre_w_ptr, rows, row_mask, cols, col_mask, inv_pre,
    OFFSET: tl.constexpr, HAS_H: tl.constexpr, HAS_PRE: tl.constexpr,
):  # fmt: skip
    """residual + h' at `cols` in the dtype (h' = h, or h normed by pre_w; inv_pre (BLOCK_M,) h's 1 / rms)."""
    s = _tile(res_ptr, res_stride, rows, row_mask, cols, col_mask)
    if HAS_H:
        h = _tile(h_ptr, h_stride, rows, row_mask, cols, col_mask)
        if HAS_PRE:
            h = _apply_norm(h, inv_pre[:, None], pre_w_ptr, cols, col_mask, OFFSET).to(h.dtype)
        s = (s.to(tl.float32) + h.to(tl.float32)).to(s.dtype)
    return s


@jit
def _input_tile(
    x_ptr, x_stride, res_ptr, res_stride, norm_w_ptr, pre_w_ptr, rows, row_mask, cols, col_mask, K, inv, inv_pre,
    PROLOGUE: tl.constexpr, OFFSET: tl.constexpr, HAS_H: tl.constexpr, HAS_PRE: tl.constexpr, GELU: tl.constexpr,
):  # fmt: skip
    """The product's input (BLOCK_M, BLOCK_K) at `cols`, in the dtype, with the prologue applied."""
    if PROLOGUE == 1:
        s = _sum_tile(
            x_ptr, x_stride, res_ptr, res_stride, pre_w_ptr, rows, row_mask, cols, col_mask, inv_pre,
            OFFSET, HAS_H, HAS_PRE,
        )  # fmt: skip
        x = _apply_norm(s, inv[:, None], norm_w_ptr, cols, col_mask, OFFSET).to(s.dtype)
    elif PROLOGUE == 2:
        gate = _tile(x_ptr, x_stride, rows, row_mask, cols, col_mask)
        up = _tile(x_ptr + K, x_stride, rows, row_mask, cols, col_mask)
        x = _gated(gate, up, GELU).to(gate.dtype)
    else:
        x = _tile(x_ptr, x_stride, rows, row_mask, cols, col_mask)
    return x


@jit
def _dot(x, w, acc, DOT_F32: tl.constexpr):
    """acc + x (BLOCK_M, BLOCK_K) @ w (BLOCK_N, BLOCK_K).T in fp32; DOT_F32 upcasts first (the CPU
    interpreter cannot multiply bf16; on the GPU fp32 inputs take the exact, not the tf32, product)."""
    if DOT_F32:
        return tl.dot(x.to(tl.float32), tl.trans(w.to(tl.float32)), acc, input_precision="ieee")
    return tl.dot(x, tl.trans(w), acc, input_precision="ieee")


@jit
def _rows_kernel(
    x_ptr,
    x_stride,
    res_ptr,
    res_stride,
    norm_w_ptr,
    pre_w_ptr,
    w_ptr,
    y_ptr,
    res_out_ptr,
    part_ptr,
    count_ptr,
    M,
    N,
    K,
    k_split,
    eps,
    PROLOGUE: tl.constexpr,
    OFFSET: tl.constexpr,
    HAS_H: tl.constexpr,
    HAS_PRE: tl.constexpr,
    GELU: tl.constexpr,
    SPLIT: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    DOT_F32: tl.constexpr,
    PDL: tl.constexpr,
):
    # x (M, K) rows of stride x_stride (norm: h; act: gate_up (M, 2K)); res (M, K); W (N, K); y, part
    # (M, N) and (SPLIT, M, N), res_out (M, K), all contiguous. int64 W offsets: N * K may pass 2^31
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    rows = tl.arange(0, BLOCK_M)
    row_mask = rows < M
    n_idx = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = n_idx < N
    w_rows = w_ptr + n_idx.to(tl.int64)[:, None] * K  # (BLOCK_N, 1)
    k_start = pid_k * k_split
    k_end = tl.minimum(K, k_start + k_split)
    # no kernel writes weights: under PDL the first tile's load overlaps the previous kernel's tail.
    # W is read once per step: don't let it push the activations out of L2
    cols = k_start + tl.arange(0, BLOCK_K)
    col_mask = cols < k_end
    w = tl.load(
        w_rows + cols[None, :],
        mask=n_mask[:, None] & col_mask[None, :],
        other=0.0,
        eviction_policy="evict_first",
    )
    pdl_wait(PDL)

    inv = tl.zeros([BLOCK_M], tl.float32)
    inv_pre = tl.zeros([BLOCK_M], tl.float32)
    if PROLOGUE == 1:
        # each row's statistics over the whole of K, chunk by chunk (names differ from the main loop's,
        # which would be loop-carried): h's own 1 / rms for the sandwich norm, then s = residual + h'
        if HAS_PRE:
            sum_sq_pre = tl.zeros([BLOCK_M], tl.float32)
            for k0 in range(0, K, BLOCK_K):
                c_pre = k0 + tl.arange(0, BLOCK_K)
                hf = _tile(x_ptr, x_stride, rows, row_mask, c_pre, c_pre < K).to(tl.float32)
                sum_sq_pre += tl.sum(hf * hf, axis=1)
            inv_pre = tl.rsqrt(sum_sq_pre / K + eps)
        writer = (pid_n == 0) & (pid_k == 0)
        sum_sq = tl.zeros([BLOCK_M], tl.float32)
        for k0 in range(0, K, BLOCK_K):
            c_s = k0 + tl.arange(0, BLOCK_K)
            s = _sum_tile(
                x_ptr, x_stride, res_ptr, res_stride, pre_w_ptr, rows, row_mask, c_s, c_s < K, inv_pre,
                OFFSET, HAS_H, HAS_PRE,
            )  # fmt: skip
            if HAS_H:
                if writer:  # a separate buffer, written once: the other programs still read the old residual
                    out_mask = row_mask[:, None] & (c_s < K)[None, :]
                    tl.store(res_out_ptr + rows[:, None] * K + c_s[None, :], s, mask=out_mask)
            sf = s.to(tl.float32)
            sum_sq += tl.sum(sf * sf, axis=1)
        inv = tl.rsqrt(sum_sq / K + eps)

    x = _input_tile(
        x_ptr, x_stride, res_ptr, res_stride, norm_w_ptr, pre_w_ptr, rows, row_mask, cols, col_mask, K, inv, inv_pre,
        PROLOGUE, OFFSET, HAS_H, HAS_PRE, GELU,
    )  # fmt: skip
    acc = _dot(x, w, tl.zeros([BLOCK_M, BLOCK_N], tl.float32), DOT_F32)
    for k0 in range(k_start + BLOCK_K, k_end, BLOCK_K):
        c = k0 + tl.arange(0, BLOCK_K)
        c_mask = c < k_end
        x_c = _input_tile(
            x_ptr, x_stride, res_ptr, res_stride, norm_w_ptr, pre_w_ptr, rows, row_mask, c, c_mask, K, inv, inv_pre,
            PROLOGUE, OFFSET, HAS_H, HAS_PRE, GELU,
        )  # fmt: skip
        w_c = tl.load(
            w_rows + c[None, :],
            mask=n_mask[:, None] & c_mask[None, :],
            other=0.0,
            eviction_policy="evict_first",
        )
        acc = _dot(x_c, w_c, acc, DOT_F32)

    y_off = rows[:, None] * N + n_idx[None, :]
    y_mask = row_mask[:, None] & n_mask[None, :]
    if SPLIT == 1:
        # rounded to the weights' dtype first, as F.linear(...).to(y's dtype) rounds (float32 logits)
        tl.store(y_ptr + y_off, acc.to(w_ptr.dtype.element_ty).to(y_ptr.dtype.element_ty), mask=y_mask)
    else:
        tl.store(part_ptr + pid_k * M * N + y_off, acc, mask=y_mask)
        # the last of this column block's SPLIT programs sums the partials; the barrier puts all of
        # this program's stores before its release
        tl.debug_barrier()
        arrived = tl.atomic_add(count_ptr + pid_n, 1, sem="acq_rel", scope="gpu")
        if arrived == SPLIT - 1:
            tl.store(count_ptr + pid_n, 0)  # ready for the next launch: every other program has counted
            total = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
            for p in range(SPLIT):  # in split order: the sum does not depend on who came last
                total += tl.load(part_ptr + p * M * N + y_off, mask=y_mask, other=0.0, cache_modifier=".cg")
            tl.store(y_ptr + y_off, total.to(w_ptr.dtype.element_ty).to(y_ptr.dtype.element_ty), mask=y_mask)


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


def _launch(prologue, x, res, norm_w, pre_w, weight, y, res_out, eps, offset, gelu, config) -> None:
    """x, res: (M, K) rows of unit column stride (x is (M, 2K) for act); y (M, N) and res_out (M, K)
    contiguous (res_out None: nothing to write)."""
    assert weight.dim() == 2 and weight.is_contiguous(), "W must be a contiguous (N, K) nn.Linear weight"
    N, K = weight.shape
    M = (x if x is not None else res).shape[0]
    block_n, block_k, split, num_warps, num_stages = config
    splits, k_split = _slices(K, block_k, split)
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
        BLOCK_M=BLOCK_M, BLOCK_N=block_n, BLOCK_K=block_k, DOT_F32=INTERPRETING,
        num_warps=num_warps, num_stages=num_stages, **pdl(weight.device),
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


def linear_rows_triton(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Same contract as linear_ref; one kernel for 2..MAX_ROWS rows, else (or mixed dtypes) the reference."""
    if not fits_rows(x) or not _one_dtype(weight, x):
        return linear_ref(x, weight)
    N, K = weight.shape
    assert x.shape[-1] == K, (x.shape, weight.shape)
    y = torch.empty((*x.shape[:-1], N), dtype=weight.dtype, device=weight.device)
    _launch(
        _NONE, _rows(x), None, None, None, weight, y, None, 0.0, 0.0, False,
        config_for("linear", rows_of(x), N, K, weight.dtype, "linear"),
    )  # fmt: skip
    return y
