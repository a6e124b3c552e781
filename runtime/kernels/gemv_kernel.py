"""The batch-1 GEMV kernel behind fused_linear.py's ops: y = W x with the op's prologue (norm, gated
activation or none) recomputed chunk by chunk, and for norm_linear_act a gated epilogue.

Launch: grid (cdiv(N, BLOCK_N),) (gated: cdiv(N, BLOCK_N / 2)); each program owns BLOCK_N weight rows,
streams them in (BLOCK_N, BLOCK_K) tiles and keeps a (BLOCK_N, BLOCK_K) fp32 accumulator, reduced once
at the end. The prologue keeps the references' rounding (rmsnorm.py's and activation.py's jit helpers).
"""

from __future__ import annotations

from runtime.kernels._triton import jit, pdl_release, pdl_release_if, pdl_wait, tl
from runtime.kernels.activation import _gated
from runtime.kernels.phase_clock import clock_mark
from runtime.kernels.rmsnorm import _apply_norm, _inv_rms, apply_norm_loaded


@jit
def _load_pair(a_ptr, b_ptr, cols, mask, HAS_B: tl.constexpr):
    """(a, b) at `cols`, b being a again where HAS_B is off (unused then). The norm prologue's
    activations (the residual, h) and its weights (the norm's, the sandwich pre-norm's; no kernel
    writes those, so they may be loaded before the PDL wait)."""
    a = tl.load(a_ptr + cols, mask=mask, other=0.0)
    b = a
    if HAS_B:
        b = tl.load(b_ptr + cols, mask=mask, other=0.0)
    return a, b


@jit
def _weight_tile(w_rows, row_mask, cols, K):
    """W's (BLOCK_N, BLOCK_K) tile at `cols` (zero past K). W is read once per step: evict-first, so it
    does not push the activations out of L2."""
    mask = row_mask[:, None] & (cols < K)[None, :]
    return tl.load(w_rows + cols[None, :], mask=mask, other=0.0, eviction_policy="evict_first")


@jit
def _normed_chunk(
    s, h, nw, pw, inv, inv_pre, OFFSET: tl.constexpr, HAS_H: tl.constexpr, HAS_PRE: tl.constexpr
):
    """The norm prologue's chunk from its loads, in the reference's rounding: rms_norm(s + h')."""
    if HAS_H:
        if HAS_PRE:
            h = apply_norm_loaded(h, inv_pre, pw, OFFSET).to(h.dtype)
        s = (s.to(tl.float32) + h.to(tl.float32)).to(s.dtype)
    return apply_norm_loaded(s, inv, nw, OFFSET).to(s.dtype)


@jit
def _input_chunk(
    x_ptr, res_ptr, norm_w_ptr, pre_w_ptr, cols, mask, K, inv, inv_pre,
    PROLOGUE: tl.constexpr, OFFSET: tl.constexpr, HAS_H: tl.constexpr, HAS_PRE: tl.constexpr, GELU: tl.constexpr,
):  # fmt: skip
    """The GEMV's input at columns `cols` (BLOCK_K,), in the dtype, with the prologue applied."""
    if PROLOGUE == 1:
        # the normed chunk again, from L2, in the reference's rounding
        s, h = _load_pair(res_ptr, x_ptr, cols, mask, HAS_H)
        nw, pw = _load_pair(norm_w_ptr, pre_w_ptr, cols, mask, HAS_PRE)
        x = _normed_chunk(s, h, nw, pw, inv, inv_pre, OFFSET, HAS_H, HAS_PRE)
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
    clock_ptr,
    pos_ptr,
    N,
    K,
    eps,
    release_from,
    PROLOGUE: tl.constexpr,
    OFFSET: tl.constexpr,
    HAS_H: tl.constexpr,
    HAS_PRE: tl.constexpr,
    GELU: tl.constexpr,
    GATED: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK: tl.constexpr,
    PDL: tl.constexpr,
    EARLY_CHUNK: tl.constexpr = False,
    ADD_RES: tl.constexpr = False,
    CLOCK: tl.constexpr = False,
    TILE_AFTER_ROW: tl.constexpr = False,
    RELEASE_AT: tl.constexpr = False,
):
    # x: the input row (K,) (norm: h; act: gate_up (2K,)); W (N, K); y (N,). Program p owns rows
    # [p * BLOCK_N, (p + 1) * BLOCK_N); int64 row offsets since N * K may pass 2^31.
    # GATED: W is (2N, K) = [gate | up] and y (N,) = act(gate) * up; program p owns outputs
    # [p * BLOCK_N / 2, (p + 1) * BLOCK_N / 2), its tile rows alternate gate row o, up row N + o
    # ADD_RES (plain product only): y = residual + W x, the residual's add in the epilogue (res_ptr (N,))
    # RELEASE_AT (PDL late): the next kernel launches right after the wait where the row's position
    # (pos_ptr, a scalar written steps before) is >= release_from, else after the loop
    pid = tl.program_id(0)
    clock_mark(clock_ptr, pid, 3, pid, CLOCK)  # CLOCK (a diagnostic, phase_clock.py): the marks
    if GATED:
        pair = tl.arange(0, BLOCK_N)
        outs = pid * (BLOCK_N // 2) + pair // 2
        row_mask = outs < N
        rows = outs + (pair % 2) * N
    else:
        rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
        row_mask = rows < N
    w_rows = w_ptr + rows.to(tl.int64)[:, None] * K  # (BLOCK_N, 1)
    # W is read once per step: don't let it push the activations out of L2. The first tile is
    # loaded before the wait: no kernel writes weights, so under PDL this load overlaps the
    # previous kernel's tail (for the small projections, most of the weight is in flight then)
    cols = tl.arange(0, BLOCK_K)
    mask = cols < K
    # TILE_AFTER_ROW (norm prologue): the first tile goes out after the row statistics' loads
    # instead, so those L2 reads do not queue behind its DRAM reads (a program's wait returns at
    # once, the previous kernel having ended as it became resident: nothing overlaps the tile)
    tile_after_row: tl.constexpr = PROLOGUE == 1 and TILE_AFTER_ROW
    if not tile_after_row:
        w = _weight_tile(w_rows, row_mask, cols, K)
    # EARLY_CHUNK (norm prologue): the norm weights the statistics and the first chunk need are
    # loaded before the wait (no kernel writes them), the first chunk's activations with the row's,
    # so no load waits behind the statistics' reductions (each a barrier, then one more round trip)
    early: tl.constexpr = PROLOGUE == 1 and EARLY_CHUNK
    row_cols = tl.arange(0, BLOCK)
    row_mask_k = row_cols < K
    if early:
        nw0, pw0 = _load_pair(norm_w_ptr, pre_w_ptr, cols, mask, HAS_PRE)
        if HAS_PRE:  # the sandwich pre-norm's weight over the whole row, for h's statistics
            pw_row = tl.load(pre_w_ptr + row_cols, mask=row_mask_k, other=0.0)
    clock_mark(clock_ptr, pid, 4, pid, CLOCK)
    if RELEASE_AT:  # written steps before (by the host or an earlier step's tail): read before the wait
        position = tl.load(pos_ptr)
    pdl_wait(PDL)
    if RELEASE_AT:  # the early release from the row's position release_from on, else the late one
        pdl_release_if(position >= release_from, PDL)
    clock_mark(clock_ptr, pid, 5, pid, CLOCK)
    if ADD_RES:  # written by an earlier kernel; loaded now, so it has arrived by the epilogue
        res_rows = tl.load(res_ptr + rows, mask=row_mask, other=0.0)

    inv = 0.0
    inv_pre = 0.0
    if PROLOGUE == 1:
        # row statistics over the whole of K (BLOCK >= K): s = residual + h' in the dtype, its 1 / rms,
        # and h's own 1 / rms for the sandwich norm (names differ from the loop's, which would be loop-carried)
        s_row = tl.load(res_ptr + row_cols, mask=row_mask_k, other=0.0)
        if HAS_H:
            h_row = tl.load(x_ptr + row_cols, mask=row_mask_k, other=0.0)
        if early:
            s0, h0 = _load_pair(res_ptr, x_ptr, cols, mask, HAS_H)
        if tile_after_row:
            w = _weight_tile(w_rows, row_mask, cols, K)
        if HAS_H:
            if HAS_PRE:
                inv_pre = _inv_rms(h_row, K, eps)
                if early:
                    h_row = apply_norm_loaded(h_row, inv_pre, pw_row, OFFSET).to(s_row.dtype)
                else:
                    h_row = _apply_norm(h_row, inv_pre, pre_w_ptr, row_cols, row_mask_k, OFFSET).to(
                        s_row.dtype
                    )
            s_row = (s_row.to(tl.float32) + h_row.to(tl.float32)).to(s_row.dtype)
            if pid == 0:  # a separate buffer: the other programs still read the old residual
                tl.store(res_out_ptr + row_cols, s_row, mask=row_mask_k)
        inv = _inv_rms(s_row, K, eps)
    clock_mark(clock_ptr, pid, 6, inv + inv_pre + pid, CLOCK)  # the row statistics

    if early:
        x = _normed_chunk(s0, h0, nw0, pw0, inv, inv_pre, OFFSET, HAS_H, HAS_PRE)
    else:
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
        w = _weight_tile(w_rows, row_mask, cols, K)
        acc += w.to(tl.float32) * x.to(tl.float32)[None, :]
    if CLOCK:  # once the whole tile is summed
        clock_mark(clock_ptr, pid, 7, tl.sum(tl.sum(acc, axis=1), axis=0), CLOCK)
    if RELEASE_AT:
        pdl_release_if(position < release_from, PDL)
    else:
        pdl_release(PDL)
    # rounded to the weights' dtype first, as F.linear(...).to(y's dtype) rounds (float32 logits)
    y = tl.sum(acc, axis=1).to(w_ptr.dtype.element_ty)
    if GATED:  # (BLOCK_N,) = gate, up, gate, up, ... -> BLOCK_N / 2 outputs, gated_act_ref's rounding
        gate, up = tl.split(tl.reshape(y, (BLOCK_N // 2, 2)))
        outs = pid * (BLOCK_N // 2) + tl.arange(0, BLOCK_N // 2)
        tl.store(y_ptr + outs, _gated(gate, up, GELU).to(y_ptr.dtype.element_ty), mask=outs < N)
    else:
        if ADD_RES:  # the product rounded first, then the add rounded once: residual + F.linear(x, W)
            y = (res_rows.to(tl.float32) + y.to(tl.float32)).to(res_rows.dtype)
        tl.store(y_ptr + rows, y.to(y_ptr.dtype.element_ty), mask=row_mask)
    clock_mark(clock_ptr, pid, 8, pid, CLOCK)
