"""RMSNorm and residual-add + RMSNorm: plain-torch references and one Triton kernel for both.

Two rounding orders, as the families define them:
offset 0 (Llama, Qwen): normalise in fp32, cast to the input dtype, then multiply by w.
offset 1 (Gemma): multiply by (1 + w) in fp32, then cast.
add_rms_norm fuses the residual add into the next norm: new_residual = residual + x (rounded to
the dtype, as the unfused add would be), normed = rms_norm(new_residual). With `pre_weight`, x is
first normalised itself (Gemma's sandwich norm on a branch output before it joins the residual).
The kernel keeps the references' rounding order, so on the same inputs it differs from them only
by the order of the fp32 sum of squares.
"""

from __future__ import annotations

import os

import torch

from runtime.kernels._triton import jit, next_pow2, pdl, pdl_wait, tl


def rms_norm_ref(x: torch.Tensor, weight: torch.Tensor, eps: float, offset: float = 0.0) -> torch.Tensor:
    """x (..., N), weight (N,) -> (..., N) in x.dtype."""
    xf = x.float()
    normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    if offset:
        return (normed * (offset + weight.float())).to(x.dtype)
    return weight * normed.to(x.dtype)


def add_rms_norm_ref(
    x: torch.Tensor,
    residual: torch.Tensor,
    weight: torch.Tensor,
    eps: float,
    offset: float = 0.0,
    pre_weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """x, residual (..., N) -> (rms_norm(residual + x'), residual + x'), x' = x or rms_norm(x, pre_weight)."""
    if pre_weight is not None:
        x = rms_norm_ref(x, pre_weight, eps, offset)
    new_residual = residual + x
    return rms_norm_ref(new_residual, weight, eps, offset), new_residual


def scale_rows_ref(y: torch.Tensor, source: torch.Tensor, eps: float) -> torch.Tensor:
    """y (..., N) projected from the un-normed rows source (..., K) through a matrix that holds the
    norm's weight (runtime/models/folded_norms.py) -> y / rms(source) per row, in y's dtype: what
    the projection of rms_norm(source) would have given."""
    sf = source.float()
    return (y.float() * torch.rsqrt(sf.pow(2).mean(-1, keepdim=True) + eps)).to(y.dtype)


@jit
def row_inv_rms(row_ptr, n_cols, eps, BLOCK: tl.constexpr):
    """1 / rms of the n_cols values at row_ptr (BLOCK >= n_cols) -> fp32 scalar (scale_rows_ref's factor)."""
    cols = tl.arange(0, BLOCK)
    return _inv_rms(tl.load(row_ptr + cols, mask=cols < n_cols, other=0.0), n_cols, eps)


@jit
def scale_row(x, inv_rms, ON: tl.constexpr):
    """x (any shape, the dtype) times a row's 1 / rms, rounded back to the dtype as scale_rows_ref
    rounds; ON False leaves x as it is."""
    if ON:
        return (x.to(tl.float32) * inv_rms).to(x.dtype)
    return x


@jit
def _inv_rms(x, n_cols, eps):
    """One row x (BLOCK,), zero past n_cols -> the fp32 scalar 1 / rms(x)."""
    xf = x.to(tl.float32)
    return tl.rsqrt(tl.sum(xf * xf, axis=0) / n_cols + eps)


@jit
def _apply_norm(x, inv_rms, w_ptr, cols, mask, OFFSET: tl.constexpr):
    """Any slice x of a row (its columns `cols`), inv_rms the whole row's -> fp32 values whose cast to the
    output dtype is the reference's result (split from the statistics so a caller can go chunk by chunk)."""
    return apply_norm_loaded(x, inv_rms, tl.load(w_ptr + cols, mask=mask, other=0.0), OFFSET)


@jit
def apply_norm_loaded(x, inv_rms, w, OFFSET: tl.constexpr):
    """_apply_norm with the weight's slice w (x's shape) already loaded: a caller can issue that load
    early, before the statistics it waits for."""
    normed = x.to(tl.float32) * inv_rms
    w = w.to(tl.float32)
    if OFFSET != 0:
        return normed * (OFFSET + w)
    # offset 0 rounds the normalised row to the input dtype before the product
    return w * normed.to(x.dtype).to(tl.float32)


@jit
def _normalise(x, w_ptr, cols, mask, n_cols, eps, OFFSET: tl.constexpr):
    """One row x (BLOCK,) -> fp32 values whose cast to the output dtype is the reference's result."""
    return _apply_norm(x, _inv_rms(x, n_cols, eps), w_ptr, cols, mask, OFFSET)


@jit
def _rms_norm_kernel(
    x_ptr,
    res_ptr,
    w_ptr,
    pre_w_ptr,
    out_ptr,
    res_out_ptr,
    n_cols,
    eps,
    x_stride,
    res_stride,
    out_stride,
    res_out_stride,
    OFFSET: tl.constexpr,
    HAS_RES: tl.constexpr,
    HAS_PRE: tl.constexpr,
    BLOCK: tl.constexpr,
    PDL: tl.constexpr,
):
    # one program per row; the whole row (N <= BLOCK) lives in registers
    pdl_wait(PDL)
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(x_ptr + row * x_stride + cols, mask=mask, other=0.0)
    if HAS_PRE:
        x = _normalise(x, pre_w_ptr, cols, mask, n_cols, eps, OFFSET).to(x.dtype)
    if HAS_RES:
        r = tl.load(res_ptr + row * res_stride + cols, mask=mask, other=0.0)
        x = (r.to(tl.float32) + x.to(tl.float32)).to(x.dtype)
        tl.store(res_out_ptr + row * res_out_stride + cols, x, mask=mask)
    y = _normalise(x, w_ptr, cols, mask, n_cols, eps, OFFSET)
    tl.store(out_ptr + row * out_stride + cols, y.to(out_ptr.dtype.element_ty), mask=mask)


def _rows(t: torch.Tensor) -> torch.Tensor:
    """(..., N) -> (R, N) with unit stride along N (a view when the layout allows)."""
    t2 = t.reshape(-1, t.shape[-1])
    return t2 if t2.stride(-1) == 1 else t2.contiguous()


def norm_warps(block: int, rows: int) -> int:
    """Warps per row program. Decode's few rows (<= 64) take 8: each program is then the whole
    step's chain (two dependent reductions with Gemma's sandwich norm), which more threads shorten
    (H100, Gemma's batch-16 step: -36..-45 us against 4 warps; 16 warps -18..-37). Prefill's many
    rows keep one warp per 512 columns, 1..8. RUNTIME_NORM_WARPS overrides it (an A/B knob)."""
    forced = os.environ.get("RUNTIME_NORM_WARPS")
    if forced:
        return int(forced)
    return 8 if rows <= 64 else min(max(block // 512, 1), 8)


def _launch(x, residual, weight, pre_weight, eps, offset, out_dtype, release_early=False):
    """release_early: under PDL the next kernel may launch right after this one's wait (a batch
    step's qkv product on the rows kernel: its programs load their first weight tile meanwhile)."""
    n = x.shape[-1]
    x2 = _rows(x)
    rows = x2.shape[0]
    out = torch.empty(x.shape, dtype=out_dtype, device=x.device)  # contiguous: row stride n
    res2 = _rows(residual) if residual is not None else x2
    res_out = torch.empty(x.shape, dtype=x.dtype, device=x.device) if residual is not None else out
    block = next_pow2(n)
    _rms_norm_kernel[(rows,)](
        x2, res2, weight, pre_weight if pre_weight is not None else weight, out, res_out,
        n, eps, x2.stride(0), res2.stride(0), n, n,
        OFFSET=float(offset), HAS_RES=residual is not None, HAS_PRE=pre_weight is not None,
        BLOCK=block, num_warps=norm_warps(block, rows), **pdl(x.device, early=release_early),
    )  # fmt: skip
    return out, res_out


def rms_norm_triton(x: torch.Tensor, weight: torch.Tensor, eps: float, offset: float = 0.0) -> torch.Tensor:
    """Same contract as rms_norm_ref; one kernel."""
    out_dtype = x.dtype if offset else torch.promote_types(weight.dtype, x.dtype)
    return _launch(x, None, weight, None, eps, offset, out_dtype)[0]


def add_rms_norm_triton(
    x: torch.Tensor,
    residual: torch.Tensor,
    weight: torch.Tensor,
    eps: float,
    offset: float = 0.0,
    pre_weight: torch.Tensor | None = None,
    release_early: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as add_rms_norm_ref (x, residual and the weights share one dtype); one kernel.
    release_early: see _launch."""
    return _launch(x, residual, weight, pre_weight, eps, offset, x.dtype, release_early)
