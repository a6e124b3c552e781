"""Decode attention over the static KV cache: plain-torch reference and a split-KV Triton kernel.

One query per row; keys are cache slots [0, length) of that row. A sliding layer's cache is a
ring of `window` slots (position p lives at p % window); softmax does not care about slot order,
so a ring row is attended exactly like a global one, with length = min(pos + 1, window).

The Triton version (flash-decoding) runs on a grid fixed by the shapes alone, (B * Hkv, P):
program (b, h, p) walks KV blocks p, p + P, p + 2P, ... below lengths[b], keeping a running
max / sum / weighted V for all G = H / Hkv query heads of kv head h, so each K and V block is
read once for the whole group. Programs with no block below the length leave at once, so the
work tracks the live length, not the capacity. A second kernel merges the P partial results
of each (b, head) with a log-sum-exp rescale. # graph: no host reads, grid independent of data.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from runtime.kernels._triton import INTERPRETING, cdiv, jit, next_pow2, pdl_release, pdl_wait, tl
from runtime.kernels.attention_plan import (
    merge_block,
    merge_block_d,
    merge_launch,
    merge_warps,
    split_plan,
    split_stages,
    split_warps,
)


def decode_attention_ref(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, lengths: torch.Tensor, scale: float
) -> torch.Tensor:
    """q (B, H, D); k/v_cache (B, Hkv, S, D); lengths (B,) live slots -> (B, H, D)."""
    slots = torch.arange(k_cache.shape[2], device=q.device)
    mask = (slots < lengths[:, None])[:, None, None, :]  # (B, 1, 1, S)
    out = F.scaled_dot_product_attention(
        q.unsqueeze(2),
        k_cache,
        v_cache,
        attn_mask=mask,
        scale=scale,
        enable_gqa=q.shape[1] != k_cache.shape[1],
    )
    return out.squeeze(2)


@jit
def block_dot(a, b, F32: tl.constexpr):
    """a @ b with fp32 accumulation; F32 upcasts first (the CPU interpreter cannot multiply bf16)."""
    if F32:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    return tl.dot(a, b, input_precision="ieee")


@jit
def _split_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    len_ptr,
    acc_ptr,
    ml_ptr,
    qk_scale,
    n_kv_heads,
    n_splits,
    q_sb,
    q_sh,
    k_sb,
    k_sh,
    k_ss,
    v_sb,
    v_sh,
    v_ss,
    G: tl.constexpr,
    BLOCK_G: tl.constexpr,
    D: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr,
    DOT_F32: tl.constexpr,
):
    bh = tl.program_id(0)
    split = tl.program_id(1)
    b = bh // n_kv_heads
    h = bh % n_kv_heads
    length = tl.load(len_ptr + b).to(tl.int32)
    n_blocks = tl.cdiv(length, BLOCK_N)
    if split >= n_blocks:  # graph: the grid is fixed; past the live length there is nothing to do
        return
    g = tl.arange(0, BLOCK_G)
    d = tl.arange(0, BLOCK_D)
    n = tl.arange(0, BLOCK_N)
    g_ok = g < G
    d_ok = d < D
    # the G query heads of this kv head, padded to BLOCK_G >= 16 rows for tl.dot: (BLOCK_G, BLOCK_D)
    q_rows = q_ptr + b.to(tl.int64) * q_sb + (h * G + g).to(tl.int64)[:, None] * q_sh
    q = tl.load(q_rows + d[None, :], mask=g_ok[:, None] & d_ok[None, :], other=0.0)
    k_base = k_ptr + b.to(tl.int64) * k_sb + h.to(tl.int64) * k_sh
    v_base = v_ptr + b.to(tl.int64) * v_sb + h.to(tl.int64) * v_sh
    m_i = tl.full([BLOCK_G], float("-inf"), tl.float32)  # running max of scores (log2 units)
    l_i = tl.zeros([BLOCK_G], tl.float32)  # running sum of exp2(score - m_i)
    acc = tl.zeros([BLOCK_G, BLOCK_D], tl.float32)  # running sum of exp2(score - m_i) * v
    for blk in range(split, n_blocks, n_splits):
        slots = blk * BLOCK_N + n
        live = slots < length
        kv_ok = live[:, None] & d_ok[None, :]
        k = tl.load(k_base + slots.to(tl.int64)[:, None] * k_ss + d[None, :], mask=kv_ok, other=0.0)
        s = block_dot(q, tl.trans(k), DOT_F32) * qk_scale  # (BLOCK_G, BLOCK_N)
        s = tl.where(live[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = tl.load(v_base + slots.to(tl.int64)[:, None] * v_ss + d[None, :], mask=kv_ok, other=0.0)
        acc = acc * alpha[:, None] + block_dot(p.to(v.dtype), v, DOT_F32)
        m_i = m_new
    # partials (B, H, P, D) and (B, H, P, 2), unnormalised; rows past G are padding
    row = ((b * n_kv_heads + h) * G + g).to(tl.int64) * n_splits + split
    tl.store(acc_ptr + row[:, None] * D + d[None, :], acc, mask=g_ok[:, None] & d_ok[None, :])
    tl.store(ml_ptr + row * 2, m_i, mask=g_ok)
    tl.store(ml_ptr + row * 2 + 1, l_i, mask=g_ok)


@jit
def merge_head(
    acc_ptr, ml_ptr, bh, n_live, n_splits, D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_P: tl.constexpr, d0=0
):
    """The n_live partials of row-and-head bh (= b * H + head) merged -> (BLOCK_D,) fp32 output of
    columns [d0, d0 + BLOCK_D). Loads skip L1 (.cg): other programs of the same launch may have
    written the partials."""
    p = tl.arange(0, BLOCK_P)
    d = d0 + tl.arange(0, BLOCK_D)
    d_ok = d < D
    m_run = tl.max(tl.full([BLOCK_P], float("-inf"), tl.float32), axis=0)
    l_run = tl.sum(tl.zeros([BLOCK_P], tl.float32), axis=0)
    o = tl.zeros([BLOCK_D], tl.float32)
    for start in range(0, n_live, BLOCK_P):
        idx = start + p
        ok = idx < n_live
        row = bh.to(tl.int64) * n_splits + idx
        m = tl.load(ml_ptr + row * 2, mask=ok, other=float("-inf"), cache_modifier=".cg")
        part_l = tl.load(ml_ptr + row * 2 + 1, mask=ok, other=0.0, cache_modifier=".cg")
        part = tl.load(
            acc_ptr + row[:, None] * D + d[None, :],
            mask=ok[:, None] & d_ok[None, :],
            other=0.0,
            cache_modifier=".cg",
        )
        m_new = tl.maximum(m_run, tl.max(m, axis=0))
        keep = tl.exp2(m_run - m_new)
        w = tl.exp2(m - m_new)  # 0 for the masked rows (m = -inf)
        l_run = l_run * keep + tl.sum(w * part_l, axis=0)
        o = o * keep + tl.sum(w[:, None] * part, axis=0)
        m_run = m_new
    return o / l_run


@jit
def _combine_kernel(
    acc_ptr,
    ml_ptr,
    len_ptr,
    out_ptr,
    n_heads,
    n_splits,
    n_slots,
    o_sb,
    o_sh,
    D: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_N: tl.constexpr,
    FROM_POSITIONS: tl.constexpr,
    PDL: tl.constexpr,
):
    bh = tl.program_id(0)  # b * H + head
    d0 = tl.program_id(1) * BLOCK_D  # the head's columns [d0, d0 + BLOCK_D)
    b = bh // n_heads
    head = bh % n_heads
    # the lengths are read before the wait: the split kernel before this one does not write them
    if FROM_POSITIONS:  # len_ptr holds positions: the live length is min(pos + 1, S)
        length = tl.minimum(tl.load(len_ptr + b) + 1, n_slots).to(tl.int32)
    else:
        length = tl.load(len_ptr + b).to(tl.int32)
    n_live = tl.minimum(tl.cdiv(length, BLOCK_N), n_splits)  # splits that wrote a partial
    pdl_wait(PDL)
    out = merge_head(acc_ptr, ml_ptr, bh, n_live, n_splits, D, BLOCK_D, BLOCK_P, d0)
    pdl_release(PDL)
    d = d0 + tl.arange(0, BLOCK_D)
    tl.store(out_ptr + b.to(tl.int64) * o_sb + head * o_sh + d, out.to(out_ptr.dtype.element_ty), mask=d < D)


def decode_attention_triton(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    lengths: torch.Tensor,
    scale: float,
    num_splits: int | None = None,
) -> torch.Tensor:
    """Same contract as decode_attention_ref. Every row needs 1 <= lengths[b] <= S.
    num_splits overrides P (tests use it to force many partials on short caches)."""
    B, H, D = q.shape
    _, Hkv, S, _ = k_cache.shape
    if H % Hkv:
        raise ValueError(f"query heads ({H}) must be a multiple of kv heads ({Hkv})")
    if k_cache.stride(-1) != 1 or v_cache.stride(-1) != 1 or q.stride(-1) != 1:
        raise ValueError("decode_attention_triton needs unit stride along head_dim")
    G = H // Hkv
    block_n, splits = split_plan(B, Hkv, S, D, k_cache.element_size(), q.device)
    if num_splits is not None:
        splits = num_splits
    block_d = max(16, next_pow2(D))
    acc = torch.empty((B, H, splits, D), dtype=torch.float32, device=q.device)
    ml = torch.empty((B, H, splits, 2), dtype=torch.float32, device=q.device)
    out = torch.empty((B, H, D), dtype=q.dtype, device=q.device)
    _split_kernel[(B * Hkv, splits)](
        q, k_cache, v_cache, lengths, acc, ml, scale * math.log2(math.e), Hkv, splits,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        G=G, BLOCK_G=max(16, next_pow2(G)), D=D, BLOCK_D=block_d, BLOCK_N=block_n,
        DOT_F32=INTERPRETING, num_warps=split_warps(D, k_cache.element_size(), B), num_stages=split_stages(B, splits),
    )  # fmt: skip
    merge_partials(acc, ml, lengths, out, block_n, S, from_positions=False)
    return out


def merge_partials(
    acc: torch.Tensor,
    ml: torch.Tensor,
    lengths: torch.Tensor,
    out: torch.Tensor,
    block_n: int,
    n_slots: int,
    from_positions: bool,
    launch: dict | None = None,
) -> None:
    """acc (B, H, P, D), ml (B, H, P, 2) partials of the live splits -> out (B, H, D).
    lengths (B,): live lengths, or with from_positions the positions (length = min(pos + 1, S)).
    Each head's columns are merged by one program or a few (attention_plan.merge_block_d)."""
    B, H, splits, D = acc.shape
    block_d, block_p = merge_block_d(B * H, D, acc.device), merge_block(D, splits)
    _combine_kernel[(B * H, cdiv(D, block_d))](
        acc, ml, lengths, out, H, splits, n_slots, out.stride(0), out.stride(1),
        D=D, BLOCK_D=block_d, BLOCK_P=block_p, BLOCK_N=block_n,
        FROM_POSITIONS=from_positions, num_warps=merge_warps(block_p, block_d),
        **merge_launch(launch or {"PDL": 0}),
    )  # fmt: skip
