"""Decode attention straight from the packed qkv row: q/k-norm + rope + KV-cache write + split-KV
attention in one kernel (then the usual merge). Plain-torch reference and the Triton launch (the
kernel: qkv_attention_kernel.py).

qkv (B, 1, (H + 2 Hkv) D), positions (B,) -> (B, H, D); on the way, k and v of the new token go
to cache slot positions[b] % S of row b, and the live length is min(pos + 1, S) (a ring for a
sliding layer). It is exactly qkv_rope_to_cache followed by decode_attention, one launch shorter,
and without the per-step length tensor.

How the new token avoids a race inside the one launch: every program rebuilds its query group
and the new key from the qkv row (a few hundred values, from L2), reads the cache with the new
token's slot masked out (it may still hold an older token), and program 0 of each (row, kv head)
starts its running softmax from the new key and is the one that writes k and v to the cache. No
program reads what another writes. # graph: grid fixed by shapes, no host reads.
"""

from __future__ import annotations

import math

import torch

from runtime.kernels._triton import INTERPRETING, cdiv, next_pow2, pdl
from runtime.kernels.arrival import arrival_counters
from runtime.kernels.attention_plan import (
    early_row_scale,
    early_tables,
    grouped_loads,
    l2_ahead,
    late_v,
    merge_block,
    merge_in_kernel,
    prefetch_enabled,
    split_plan,
    split_stages,
    split_warps,
)
from runtime.kernels.decode_attention import decode_attention_ref, merge_partials
from runtime.kernels.l2_prefetch import LINE_BYTES
from runtime.kernels.phase_clock import clock_buffer
from runtime.kernels.qkv_attention_kernel import _qkv_split_kernel
from runtime.kernels.qkv_rope import qkv_rope_to_cache_ref
from runtime.kernels.rmsnorm import scale_rows_ref


def qkv_decode_attention_ref(
    qkv: torch.Tensor,
    heads: int,
    kv_heads: int,
    cos: torch.Tensor,
    sin: torch.Tensor,
    q_weight: torch.Tensor | None,
    k_weight: torch.Tensor | None,
    eps: float,
    offset: float,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    positions: torch.Tensor,
    scale: float,
    norm_source: torch.Tensor | None = None,
    norm_eps: float = 0.0,
) -> torch.Tensor:
    """qkv (B, 1, ...) -> (B, H, D); writes k/v_cache[b, :, positions[b] % S] on the way.
    norm_source (B, K): qkv was projected from these un-normed rows through a matrix holding the
    norm's weight, so each qkv row is first divided by rms(norm_source[b]) (scale_rows_ref; the
    batch buckets' folded norm, runtime/models/folded_norms.py)."""
    if norm_source is not None:
        qkv = scale_rows_ref(qkv, norm_source[:, None], norm_eps)
    q = qkv_rope_to_cache_ref(
        qkv, heads, kv_heads, cos, sin, q_weight, k_weight, eps, offset, k_cache, v_cache, positions
    )
    lengths = torch.clamp(positions + 1, max=k_cache.shape[2])
    return decode_attention_ref(q[:, 0], k_cache, v_cache, lengths, scale)


def qkv_decode_attention_triton(
    qkv: torch.Tensor,
    heads: int,
    kv_heads: int,
    cos: torch.Tensor,
    sin: torch.Tensor,
    q_weight: torch.Tensor | None,
    k_weight: torch.Tensor | None,
    eps: float,
    offset: float,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    positions: torch.Tensor,
    scale: float,
    norm_source: torch.Tensor | None = None,
    norm_eps: float = 0.0,
    num_splits: int | None = None,
) -> torch.Tensor:
    """Same contract as qkv_decode_attention_ref; two launches (split + merge), or one with
    RUNTIME_ATTN_MERGE=last (the last program of each row and kv head merges the partials).
    num_splits overrides P (tests use it to force many partials on short caches)."""
    B, T, width = qkv.shape
    _, Hkv, S, D = k_cache.shape
    if T != 1 or Hkv != kv_heads or width != (heads + 2 * kv_heads) * D or D % 2 or heads % kv_heads:
        raise ValueError(
            f"qkv {tuple(qkv.shape)} does not match {heads} + 2 x {kv_heads} heads of the cache's D={D}"
        )
    if k_cache.stride(-1) != 1 or v_cache.stride(-1) != 1:
        raise ValueError("k and v caches need unit stride along head_dim")
    qkv2 = qkv.reshape(B, width)
    if qkv2.stride(-1) != 1:
        qkv2 = qkv2.contiguous()
    src = qkv2 if norm_source is None else norm_source
    if src.dim() != 2 or src.shape[0] != B or src.stride(-1) != 1:
        raise ValueError(f"norm_source {tuple(src.shape)} needs one unit-stride row per qkv row")
    cos2, sin2 = cos.reshape(B, D).contiguous(), sin.reshape(B, D).contiguous()
    G = heads // kv_heads
    block_n, splits = split_plan(B, Hkv, S, D, k_cache.element_size(), qkv.device)
    if num_splits is not None:
        splits = num_splits
    acc = torch.empty((B, heads, splits, D), dtype=torch.float32, device=qkv.device)
    ml = torch.empty((B, heads, splits, 2), dtype=torch.float32, device=qkv.device)
    out = torch.empty((B, heads, D), dtype=qkv.dtype, device=qkv.device)
    direct = splits == 1  # one program per (row, kv head) writes the output itself
    merge = merge_in_kernel() and not direct
    launch = pdl(qkv.device)
    counters = arrival_counters(B * Hkv, qkv.device) if merge else ml
    norm = q_weight is not None
    clock = clock_buffer("attention", f"attention {B}x{Hkv}x{splits} S{S}", B * Hkv * splits, qkv.device)
    elem = k_cache.element_size()
    walks_cache = direct and B > 1  # a batch bucket's one program per (row, kv head)
    ahead = (
        l2_ahead(B * Hkv * splits, 2 * block_n * D * elem, qkv.device, walks_cache)
        if prefetch_enabled()
        else 0
    )
    _qkv_split_kernel[(B * Hkv, splits)](
        qkv2, q_weight if norm else qkv2, k_weight if norm else qkv2, cos2, sin2, positions, k_cache, v_cache,
        acc, ml, out, counters, src, ml if clock is None else clock, scale * math.log2(math.e), eps, norm_eps,
        src.shape[1], src.stride(0),
        heads, Hkv, splits, S, qkv2.stride(0), D,
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), v_cache.stride(0), v_cache.stride(1),
        v_cache.stride(2), out.stride(0), ahead,
        G=G, BLOCK_G=max(16, next_pow2(G)), D=D, HALF_BLOCK=max(16, next_pow2(D // 2)),
        BLOCK_D=max(16, next_pow2(D)), BLOCK_N=block_n, QK_NORM=norm, OFFSET=float(offset),
        DOT_F32=INTERPRETING, MERGE=merge, DIRECT=direct, BLOCK_P=merge_block(D, splits),
        PREFETCH=prefetch_enabled(), ROW_SCALE=norm_source is not None,
        BLOCK_SRC=next_pow2(src.shape[1]) if norm_source is not None else 16,
        EARLY_TABLES=early_tables(), GROUPED=grouped_loads(), CLOCK=clock is not None,
        EARLY_ROW_SCALE=early_row_scale(), LATE_V=late_v(B), AHEAD=ahead > 0,
        ROW_LINES=next_pow2(cdiv(D * elem, LINE_BYTES)), LINE_ELEMS=max(1, LINE_BYTES // elem),
        num_warps=split_warps(D, elem, B), num_stages=split_stages(B, splits), **launch,
    )  # fmt: skip
    if not merge and not direct:
        merge_partials(acc, ml, positions, out, block_n, S, from_positions=True, launch=launch)
    return out
