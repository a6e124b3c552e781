"""The batch-1 MLP in one kernel (fused_mlp.py's op): norm, gate/up, the gated activation and the
down projection, the down product split over the intermediate dimension.

Launch: grid (cdiv(I, BLOCK_J),). Program p owns intermediates [p * BLOCK_J, (p + 1) * BLOCK_J):
  1. its 2 * BLOCK_J rows of W_gu (gate row j, then up row I + j, alternating: gemv_kernel's gated
     layout) times the normed input, BLOCK_K columns at a time, as norm_linear_act's GEMV does;
  2. a (BLOCK_J,) = act(gate) * up, rounded to the dtype as gated_act_ref rounds it;
  3. W_d[:, its BLOCK_J columns] (hidden, BLOCK_J) times a, BLOCK_H outputs at a time, each
     (BLOCK_H,) partial added into the fixed-point row acc (hidden,) int64 (fixed_point.py).
So the down weights stream in the same grid as gate/up's: no boundary between the two products, and
no program waits for another. The reader of acc (the next norm GEMV) converts it; acc must be zero
when the kernel starts, and program 0 zeroes `zero` (another layer's row, read by a kernel that has
ended) for the step after.
"""

from __future__ import annotations

from runtime.kernels._triton import jit, pdl_release, pdl_wait, tl
from runtime.kernels.activation import _gated
from runtime.kernels.fixed_point import to_fixed
from runtime.kernels.gemv_kernel import _input_chunk, _load_pair, _normed_chunk, _weight_tile
from runtime.kernels.rmsnorm import _inv_rms, apply_norm_loaded


@jit
def _down_tile(d_rows, j_mask, h_start, K, stride_dh, BLOCK_H: tl.constexpr):
    """W_d's (BLOCK_J, BLOCK_H) tile of outputs [h_start, h_start + BLOCK_H) (zero past K)."""
    hs = h_start + tl.arange(0, BLOCK_H)
    mask = j_mask & (hs < K)[None, :]
    return tl.load(d_rows + hs.to(tl.int64)[None, :] * stride_dh, mask=mask, other=0.0, eviction_policy="evict_first")


@jit
def _mlp_kernel(
    h_ptr,
    res_ptr,
    norm_w_ptr,
    pre_w_ptr,
    wgu_ptr,
    wd_ptr,
    acc_ptr,
    zero_ptr,
    res_out_ptr,
    I,
    K,
    eps,
    stride_dh,
    stride_dj,
    OFFSET: tl.constexpr,
    HAS_H: tl.constexpr,
    HAS_PRE: tl.constexpr,
    GELU: tl.constexpr,
    BLOCK_J: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK: tl.constexpr,
    PDL: tl.constexpr,
    SUM_BY_STORE: tl.constexpr = False,
):
    # h, residual (K,) (K = hidden); W_gu (2I, K); W_d (K, I) at (stride_dh, stride_dj) (row-major:
    # (I, 1); a transposed copy: (1, K)); acc, zero (K,) int64; res_out (K,): residual + h'
    pid = tl.program_id(0)
    pair = tl.arange(0, 2 * BLOCK_J)
    outs = pid * BLOCK_J + pair // 2
    w_rows = wgu_ptr + (outs + (pair % 2) * I).to(tl.int64)[:, None] * K
    row_mask = outs < I
    cols = tl.arange(0, BLOCK_K)
    mask = cols < K
    # weights (no kernel writes them) before the wait: the first gate/up tile and the norms' first chunk
    w = _weight_tile(w_rows, row_mask, cols, K)
    js = pid * BLOCK_J + tl.arange(0, BLOCK_J)
    d_rows = wd_ptr + js.to(tl.int64)[:, None] * stride_dj  # (BLOCK_J, 1)
    j_mask = (js < I)[:, None]
    wd_next = _down_tile(d_rows, j_mask, 0, K, stride_dh, BLOCK_H)
    nw0, pw0 = _load_pair(norm_w_ptr, pre_w_ptr, cols, mask, HAS_PRE)
    row_cols = tl.arange(0, BLOCK)
    row_mask_k = row_cols < K
    if HAS_PRE:
        pw_row = tl.load(pre_w_ptr + row_cols, mask=row_mask_k, other=0.0)
    pdl_wait(PDL)
    if pid == 0:  # the row the step after adds into; its reader has ended (it ran before this kernel)
        tl.store(zero_ptr + row_cols, tl.zeros([BLOCK], tl.int64), mask=row_mask_k)

    # the row statistics (s = residual + h' in the dtype, its 1 / rms; h's own for the pre-norm),
    # with the first chunk's activations loaded beside the row's
    s_row = tl.load(res_ptr + row_cols, mask=row_mask_k, other=0.0)
    s0, h0 = _load_pair(res_ptr, h_ptr, cols, mask, HAS_H)
    inv_pre = 0.0
    if HAS_H:
        h_row = tl.load(h_ptr + row_cols, mask=row_mask_k, other=0.0)
        if HAS_PRE:
            inv_pre = _inv_rms(h_row, K, eps)
            h_row = apply_norm_loaded(h_row, inv_pre, pw_row, OFFSET).to(s_row.dtype)
        s_row = (s_row.to(tl.float32) + h_row.to(tl.float32)).to(s_row.dtype)
        if pid == 0:  # a separate buffer: the other programs still read the old residual
            tl.store(res_out_ptr + row_cols, s_row, mask=row_mask_k)
    inv = _inv_rms(s_row, K, eps)

    # 1. gate and up: a (2 * BLOCK_J, BLOCK_K) fp32 accumulator, summed over K once; the next tile
    # is asked for before this one is used (two tiles in flight per program)
    x = _normed_chunk(s0, h0, nw0, pw0, inv, inv_pre, OFFSET, HAS_H, HAS_PRE)
    w_next = _weight_tile(w_rows, row_mask, BLOCK_K + tl.arange(0, BLOCK_K), K)
    acc = w.to(tl.float32) * x.to(tl.float32)[None, :]
    for k0 in range(BLOCK_K, K, BLOCK_K):
        w = w_next
        w_next = _weight_tile(w_rows, row_mask, k0 + BLOCK_K + tl.arange(0, BLOCK_K), K)
        cols = k0 + tl.arange(0, BLOCK_K)
        x = _input_chunk(
            h_ptr, res_ptr, norm_w_ptr, pre_w_ptr, cols, cols < K, K, inv, inv_pre, 1, OFFSET, HAS_H, HAS_PRE, GELU
        )  # fmt: skip
        acc += w.to(tl.float32) * x.to(tl.float32)[None, :]
    # 2. the product rounded to the dtype (F.linear's output), then act(gate) * up rounded again
    y = tl.sum(acc, axis=1).to(wgu_ptr.dtype.element_ty)
    gate, up = tl.split(tl.reshape(y, (BLOCK_J, 2)))
    a = _gated(gate, up, GELU).to(wgu_ptr.dtype.element_ty).to(tl.float32)  # (BLOCK_J,)

    # 3. down: W_d[h, j] for this program's j as (BLOCK_J, BLOCK_H) tiles, the first asked for
    # before the wait, each next one before the current is used; partials into the fixed-point row
    wd = wd_next
    for h_start in range(0, K, BLOCK_H):
        wd_next = _down_tile(d_rows, j_mask, h_start + BLOCK_H, K, stride_dh, BLOCK_H)
        part = tl.sum(wd.to(tl.float32) * a[:, None], axis=0)  # (BLOCK_H,)
        hs = h_start + tl.arange(0, BLOCK_H)
        if SUM_BY_STORE:
            tl.store(acc_ptr + hs, to_fixed(part), mask=hs < K)
        else:
            tl.atomic_add(acc_ptr + hs, to_fixed(part), mask=hs < K, sem="relaxed", scope="gpu")
        wd = wd_next
    pdl_release(PDL)
