"""The Triton kernel of qkv_attention.py: q/k-norm + rope + KV-cache write + split-KV attention from
the packed qkv row, one program per (row, kv head, split); see qkv_attention.py for how the new
token avoids a race and how the partials are merged.
"""

from __future__ import annotations

from runtime.kernels._triton import jit, pdl_release, pdl_wait, tl
from runtime.kernels.decode_attention import block_dot, merge_head
from runtime.kernels.l2_prefetch import prefetch_cache_blocks
from runtime.kernels.phase_clock import clock_mark, total_2d
from runtime.kernels.qkv_attention_loads import cache_block, key_value_rows, pinned, query_rows, tables
from runtime.kernels.qkv_rope import cache_slot, norm_rope_loaded
from runtime.kernels.rmsnorm import row_inv_rms, scale_row


@jit
def _attend_block(
    q1, q2, k1, k2, v, live, m_i, l_i, acc, qk_scale, DOT_F32: tl.constexpr, PIN_V: tl.constexpr = False
):
    """One block of the running softmax: scores of the query group against k, then the rescaled
    update of (m_i, l_i, acc) with v. PIN_V moves v to the dot's layout only once the scores are
    taken (see pinned), so a v still on its way from DRAM is waited for after the softmax."""
    s = block_dot(q1, tl.trans(k1), DOT_F32) + block_dot(q2, tl.trans(k2), DOT_F32)
    s = tl.where(live[None, :], s * qk_scale, float("-inf"))  # (BLOCK_G, BLOCK_N)
    m_new = tl.maximum(m_i, tl.max(s, axis=1))
    # a block whose only live slot is the new one leaves m at -inf: subtract 0 there, not -inf
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.exp2(m_i - m_safe)
    p = tl.exp2(s - m_safe[:, None])
    l_i = l_i * alpha + tl.sum(p, axis=1)
    if PIN_V:
        v = pinned(v)
    acc = acc * alpha[:, None] + block_dot(p.to(v.dtype), v, DOT_F32)
    return m_new, l_i, acc


@jit
def _qkv_split_kernel(
    qkv_ptr,
    q_w_ptr,
    k_w_ptr,
    cos_ptr,
    sin_ptr,
    pos_ptr,
    k_ptr,
    v_ptr,
    acc_ptr,
    ml_ptr,
    out_ptr,
    count_ptr,
    src_ptr,
    clock_ptr,
    qk_scale,
    eps,
    src_eps,
    n_src,
    src_stride,
    n_heads,
    n_kv_heads,
    n_splits,
    n_slots,
    qkv_stride,
    cos_stride,
    k_sb,
    k_sh,
    k_ss,
    v_sb,
    v_sh,
    v_ss,
    o_sb,
    ahead,
    G: tl.constexpr,
    BLOCK_G: tl.constexpr,
    D: tl.constexpr,
    HALF_BLOCK: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr,
    QK_NORM: tl.constexpr,
    OFFSET: tl.constexpr,
    DOT_F32: tl.constexpr,
    MERGE: tl.constexpr,
    DIRECT: tl.constexpr,
    BLOCK_P: tl.constexpr,
    PREFETCH: tl.constexpr,
    ROW_SCALE: tl.constexpr,
    BLOCK_SRC: tl.constexpr,
    PDL: tl.constexpr,
    EARLY_TABLES: tl.constexpr,
    GROUPED: tl.constexpr,
    CLOCK: tl.constexpr = False,
    EARLY_ROW_SCALE: tl.constexpr = False,
    LATE_V: tl.constexpr = False,
    AHEAD: tl.constexpr = False,
    ROW_LINES: tl.constexpr = 1,
    LINE_ELEMS: tl.constexpr = 64,
):
    # With PREFETCH, before the wait (PDL: the previous kernel, the qkv GEMV, may still run) only
    # what no kernel of this layer writes: the positions, the cache slots but the new one, and with
    # EARLY_TABLES the q/k-norm weights and the token's rope tables (written at the step's start,
    # by a kernel that finished before the previous one passed its own wait). GROUPED: those loads
    # go out as one group, each paying its latency at once (see tables and pinned)
    if not PREFETCH:
        pdl_wait(PDL)
    bh = tl.program_id(0)
    split = tl.program_id(1)
    program = bh * n_splits + split  # CLOCK (a diagnostic, phase_clock.py): this program's row
    clock_mark(clock_ptr, program, 3, split, CLOCK)
    b = bh // n_kv_heads
    h = bh % n_kv_heads
    length = tl.minimum(tl.load(pos_ptr + b) + 1, n_slots).to(tl.int32)
    n_blocks = tl.cdiv(length, BLOCK_N)
    clock_mark(clock_ptr, program, 4, length, CLOCK)
    if split >= n_blocks:  # graph: the grid is fixed; past the live length there is nothing to do
        return
    new_slot = cache_slot(pos_ptr, b, n_slots)
    half = D // 2
    c = tl.arange(0, HALF_BLOCK)
    c_ok = c < half
    g = tl.arange(0, BLOCK_G)
    g_ok = g < G
    d = tl.arange(0, BLOCK_D)
    d_ok = d < D
    n = tl.arange(0, BLOCK_N)
    k_base = k_ptr + b.to(tl.int64) * k_sb + h.to(tl.int64) * k_sh
    v_base = v_ptr + b.to(tl.int64) * v_sb + h.to(tl.int64) * v_sh
    # the first cache block's K and V are loaded before the wait, so their latency overlaps the
    # qkv GEMV's tail (at short lengths a program has one block only)
    k1, k2, v, live = cache_block(
        k_base, v_base, split, BLOCK_N, n, c, c_ok, d, d_ok, length, new_slot, half, k_ss, v_ss
    )
    cs = cos_ptr + b.to(tl.int64) * cos_stride
    sn = sin_ptr + b.to(tl.int64) * cos_stride
    if EARLY_TABLES:
        qw1, qw2, kw1, kw2, qcos1, qcos2, qsin1, qsin2, kcos1, kcos2, ksin1, ksin2 = tables(
            q_w_ptr, k_w_ptr, cs, sn, c, c_ok, g, D, QK_NORM, GROUPED
        )
    # AHEAD (attention_plan.l2_ahead): the program's next `ahead` blocks after its first asked of L2
    # (cache slots only, which no kernel of this layer writes), so its loop after the wait finds
    # them there. `asked` is 0; it joins l_i so that the prefetches are kept
    ahead_on: tl.constexpr = AHEAD and PREFETCH
    asked = 0
    if ahead_on:
        first = split + n_splits
        asked = prefetch_cache_blocks(
            k_base, v_base, first, tl.minimum(n_blocks, first + ahead * n_splits), n_splits, length,
            k_ss, v_ss, D, BLOCK_N, ROW_LINES, LINE_ELEMS,
        )  # fmt: skip
    # ROW_SCALE: the row's 1 / rms(norm source), applied to q, k and v before anything else. With
    # EARLY_ROW_SCALE (and PREFETCH) it is taken before the wait: the source (the residual rows the
    # qkv product read) was last written two launches back, by a kernel that had ended before the
    # product passed its own wait, and so before this launch began
    early_scale: tl.constexpr = ROW_SCALE and EARLY_ROW_SCALE and PREFETCH
    inv = 1.0
    if early_scale:
        inv = row_inv_rms(src_ptr + b.to(tl.int64) * src_stride, n_src, src_eps, BLOCK_SRC)
    if PREFETCH:
        pdl_wait(PDL)
    clock_mark(clock_ptr, program, 5, length, CLOCK)
    if not EARLY_TABLES:
        qw1, qw2, kw1, kw2, qcos1, qcos2, qsin1, qsin2, kcos1, kcos2, ksin1, ksin2 = tables(
            q_w_ptr, k_w_ptr, cs, sn, c, c_ok, g, D, QK_NORM, GROUPED
        )

    row = qkv_ptr + b.to(tl.int64) * qkv_stride
    if GROUPED:  # the new token's rows as one group, before any reduction's barrier
        q1, q2 = query_rows(row, h, g, c, g_ok, c_ok, half, G, D)
        kn1, kn2, vn = key_value_rows(row, h, c, c_ok, d, d_ok, half, n_heads, n_kv_heads, D)
    if ROW_SCALE and not early_scale:
        inv = row_inv_rms(src_ptr + b.to(tl.int64) * src_stride, n_src, src_eps, BLOCK_SRC)
    # the query group (BLOCK_G, D/2) x 2 halves and the new key (1, D/2) x 2, normed and rotated
    if not GROUPED:
        q1, q2 = query_rows(row, h, g, c, g_ok, c_ok, half, G, D)
    else:  # where q meets them: without the norm's reductions in between, the layout q takes in
        # the dot reaches back to its tables, whose move would otherwise follow their loads
        qw1, qw2, qcos1, qcos2 = pinned(qw1), pinned(qw2), pinned(qcos1), pinned(qcos2)
        qsin1, qsin2 = pinned(qsin1), pinned(qsin2)
    q1, q2 = scale_row(q1, inv, ROW_SCALE), scale_row(q2, inv, ROW_SCALE)
    q1, q2 = norm_rope_loaded(q1, q2, qw1, qw2, qcos1, qcos2, qsin1, qsin2, eps, D, QK_NORM, OFFSET)
    if not GROUPED:
        kn1, kn2, vn = key_value_rows(row, h, c, c_ok, d, d_ok, half, n_heads, n_kv_heads, D)
    kn1, kn2 = scale_row(kn1, inv, ROW_SCALE), scale_row(kn2, inv, ROW_SCALE)
    kn1, kn2 = norm_rope_loaded(kn1, kn2, kw1, kw2, kcos1, kcos2, ksin1, ksin2, eps, D, QK_NORM, OFFSET)
    vn = scale_row(vn, inv, ROW_SCALE)
    if CLOCK:  # after the query group, the new key and value are all computed
        clock_mark(clock_ptr, program, 6, total_2d(q1) + total_2d(kn2) + total_2d(vn), CLOCK)

    if split == 0:
        # program 0 owns the new token: it writes it and starts the softmax from it (p = 1)
        k_new = k_base + new_slot * k_ss + c[None, :]
        tl.store(k_new, kn1.to(k_ptr.dtype.element_ty), mask=c_ok[None, :])
        tl.store(k_new + half, kn2.to(k_ptr.dtype.element_ty), mask=c_ok[None, :])
        tl.store(v_base + new_slot * v_ss + d[None, :], vn.to(v_ptr.dtype.element_ty), mask=d_ok[None, :])
        s_new = tl.sum(q1.to(tl.float32) * kn1.to(tl.float32), axis=1)
        s_new += tl.sum(q2.to(tl.float32) * kn2.to(tl.float32), axis=1)
        m_i = s_new * qk_scale
        l_i = tl.full([BLOCK_G], 1.0, tl.float32)
        acc = tl.zeros([BLOCK_G, BLOCK_D], tl.float32) + vn.to(tl.float32)
    else:
        m_i = tl.full([BLOCK_G], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_G], tl.float32)
        acc = tl.zeros([BLOCK_G, BLOCK_D], tl.float32)

    # the first block's tiles move to the dot's layout only now (see pinned); with LATE_V, v only
    # after the block's scores (its bytes, issued after k's, may still be arriving from DRAM)
    late_v: tl.constexpr = GROUPED and LATE_V
    if GROUPED:
        k1, k2 = pinned(k1), pinned(k2)
        if not late_v:
            v = pinned(v)
    m_i, l_i, acc = _attend_block(q1, q2, k1, k2, v, live, m_i, l_i, acc, qk_scale, DOT_F32, late_v)
    for blk in range(split + n_splits, n_blocks, n_splits):
        k1, k2, v, live = cache_block(
            k_base, v_base, blk, BLOCK_N, n, c, c_ok, d, d_ok, length, new_slot, half, k_ss, v_ss
        )
        m_i, l_i, acc = _attend_block(q1, q2, k1, k2, v, live, m_i, l_i, acc, qk_scale, DOT_F32)

    clock_mark(clock_ptr, program, 7, tl.sum(l_i, axis=0), CLOCK)
    pdl_release(PDL)
    if ahead_on:
        l_i += asked.to(tl.float32)  # + 0.0: l_i >= 0, unchanged bit for bit
    if DIRECT:
        # one program per (row, kv head): its running softmax is the whole one, so it writes the
        # output (l_i >= 1: it started from the new token) and no merge follows
        dst = out_ptr + b.to(tl.int64) * o_sb + (h * G + g)[:, None] * D + d[None, :]
        out = (acc / l_i[:, None]).to(out_ptr.dtype.element_ty)
        tl.store(dst, out, mask=g_ok[:, None] & d_ok[None, :])
        clock_mark(clock_ptr, program, 8, tl.sum(l_i, axis=0), CLOCK)
        return
    # partials (B, H, P, D) and (B, H, P, 2), unnormalised; rows past G are padding
    out_row = ((b * n_kv_heads + h) * G + g).to(tl.int64) * n_splits + split
    tl.store(acc_ptr + out_row[:, None] * D + d[None, :], acc, mask=g_ok[:, None] & d_ok[None, :])
    tl.store(ml_ptr + out_row * 2, m_i, mask=g_ok)
    tl.store(ml_ptr + out_row * 2 + 1, l_i, mask=g_ok)
    clock_mark(clock_ptr, program, 8, tl.sum(l_i, axis=0), CLOCK)
    if MERGE:
        # the last of the n_live programs of this (row, kv head) to finish merges the partials of
        # its G heads; the barrier puts all of this program's stores before its release
        tl.debug_barrier()
        finished = tl.atomic_add(count_ptr + bh, 1, sem="acq_rel", scope="gpu")
        if finished == tl.minimum(n_blocks, n_splits) - 1:
            tl.store(count_ptr + bh, 0)  # ready for the next launch: every other program has counted
            for gi in range(G):
                head = (b * n_kv_heads + h) * G + gi  # b * H + the head's index
                out = merge_head(
                    acc_ptr, ml_ptr, head, tl.minimum(n_blocks, n_splits), n_splits, D, BLOCK_D, BLOCK_P
                )
                dst = out_ptr + b.to(tl.int64) * o_sb + (h * G + gi) * D + d
                tl.store(dst, out.to(out_ptr.dtype.element_ty), mask=d_ok)
