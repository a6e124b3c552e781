"""The batch-rows GEMM kernel behind fused_rows.py's ops: y = x @ W.T for 2..16 rows through tl.dot,
with the op's prologue (residual add + RMSNorm, or the gated activation) rebuilt tile by tile, an
optional split of K summed by the last program to arrive, an optional in-place accumulate, and an
optional gated epilogue (gate and up rows of the same outputs, act(gate) * up written).
"""

from __future__ import annotations

from runtime.kernels._triton import jit, pdl_wait, tl
from runtime.kernels.activation import _gated
from runtime.kernels.rmsnorm import _apply_norm, scale_row


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
    ACCUMULATE: tl.constexpr = False,
    GATED: tl.constexpr = False,
    ROW_SCALE: tl.constexpr = False,
):
    # x (M, K) rows of stride x_stride (norm: h; act: gate_up (M, 2K)); res (M, K); W (N, K); y, part
    # (M, N) and (SPLIT, M, N), res_out (M, K), all contiguous. int64 W offsets: N * K may pass 2^31.
    # ACCUMULATE: y += x @ W.T in place, rounded once (cuBLAS's beta = 1): each element of y is read
    # and written by the one program that owns it (the last to arrive, with SPLIT > 1).
    # GATED (SPLIT 1, PROLOGUE 0): W is (2N, K) = [gate | up] and y (M, N) = act(gate) * up; the
    # program owning outputs o also multiplies W rows N + o. ROW_SCALE: gate and up are first
    # divided by rms of x's row (the folded norm; the program walks all of K, summing x's squares)
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    rows = tl.arange(0, BLOCK_M)
    row_mask = rows < M
    n_idx = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = n_idx < N
    w_rows = w_ptr + n_idx.to(tl.int64)[:, None] * K  # (BLOCK_N, 1)
    up_rows = w_ptr + (N + n_idx).to(tl.int64)[:, None] * K  # GATED: the up rows of the same outputs
    k_start = pid_k * k_split
    k_end = tl.minimum(K, k_start + k_split)
    # no kernel writes weights: under PDL the first tile's load overlaps the previous kernel's tail.
    # W is read once per step: don't let it push the activations out of L2
    cols = k_start + tl.arange(0, BLOCK_K)
    col_mask = cols < k_end
    w_mask = n_mask[:, None] & col_mask[None, :]
    w = tl.load(w_rows + cols[None, :], mask=w_mask, other=0.0, eviction_policy="evict_first")
    if GATED:
        w_up = tl.load(up_rows + cols[None, :], mask=w_mask, other=0.0, eviction_policy="evict_first")
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
    acc_up = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    sum_sq_x = tl.zeros([BLOCK_M], tl.float32)
    if GATED:
        acc_up = _dot(x, w_up, acc_up, DOT_F32)
    if ROW_SCALE:
        sum_sq_x += tl.sum(x.to(tl.float32) * x.to(tl.float32), axis=1)
    for k0 in range(k_start + BLOCK_K, k_end, BLOCK_K):
        c = k0 + tl.arange(0, BLOCK_K)
        c_mask = c < k_end
        x_c = _input_tile(
            x_ptr, x_stride, res_ptr, res_stride, norm_w_ptr, pre_w_ptr, rows, row_mask, c, c_mask, K, inv, inv_pre,
            PROLOGUE, OFFSET, HAS_H, HAS_PRE, GELU,
        )  # fmt: skip
        wc_mask = n_mask[:, None] & c_mask[None, :]
        w_c = tl.load(w_rows + c[None, :], mask=wc_mask, other=0.0, eviction_policy="evict_first")
        acc = _dot(x_c, w_c, acc, DOT_F32)
        if GATED:
            up_c = tl.load(up_rows + c[None, :], mask=wc_mask, other=0.0, eviction_policy="evict_first")
            acc_up = _dot(x_c, up_c, acc_up, DOT_F32)
        if ROW_SCALE:
            sum_sq_x += tl.sum(x_c.to(tl.float32) * x_c.to(tl.float32), axis=1)

    y_off = rows[:, None] * N + n_idx[None, :]
    y_mask = row_mask[:, None] & n_mask[None, :]
    if GATED:
        # gated_act_ref(F.linear(x, W), act, x)'s roundings: the product to the dtype, the row's
        # 1 / rms applied in fp32 and rounded again, then the activation (activation.py's _gated)
        gate, up = acc.to(w_ptr.dtype.element_ty), acc_up.to(w_ptr.dtype.element_ty)
        inv_x = tl.rsqrt(sum_sq_x / K + eps)[:, None]
        gate, up = scale_row(gate, inv_x, ROW_SCALE), scale_row(up, inv_x, ROW_SCALE)
        tl.store(y_ptr + y_off, _gated(gate, up, GELU).to(y_ptr.dtype.element_ty), mask=y_mask)
    elif SPLIT == 1:
        _store_rows(y_ptr, y_off, y_mask, acc, w_ptr, ACCUMULATE)
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
            _store_rows(y_ptr, y_off, y_mask, total, w_ptr, ACCUMULATE)


@jit
def _store_rows(y_ptr, y_off, y_mask, acc, w_ptr, ACCUMULATE: tl.constexpr):
    """acc (BLOCK_M, BLOCK_N) fp32 into y: rounded to the weights' dtype first, as F.linear(...).to(y's
    dtype) rounds (float32 logits); with ACCUMULATE added to y's values and rounded once."""
    if ACCUMULATE:
        old = tl.load(y_ptr + y_off, mask=y_mask, other=0.0).to(tl.float32)
        tl.store(y_ptr + y_off, (acc + old).to(y_ptr.dtype.element_ty), mask=y_mask)
    else:
        tl.store(y_ptr + y_off, acc.to(w_ptr.dtype.element_ty).to(y_ptr.dtype.element_ty), mask=y_mask)
