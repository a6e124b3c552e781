"""Packed QKV -> q, k, v with the optional per-head q/k RMSNorm and rotary embedding applied:
plain-torch reference and one Triton kernel for both variants.

qkv_rope:          qkv (B, T, (H + 2 Hkv) D) -> q (B, T, H, D), k and v (B, T, Hkv, D)   (prefill)
qkv_rope_to_cache: the same for T = 1, but k and v go straight into cache slot
                   positions[b] % S of row b (a ring for sliding layers, plain for global ones,
                   where positions < S); returns q (B, 1, H, D).  # graph: no host reads
cos/sin (B, T, D) come from rope_cos_sin (half-split convention). The kernel keeps the
references' rounding: the norm as rms_norm_ref, then x*cos and rotate(x)*sin rounded to the
dtype and added, as the torch ops do one by one.
"""

from __future__ import annotations

import torch

from runtime.kernels._triton import jit, next_pow2, tl
from runtime.kernels.rmsnorm import rms_norm_ref
from runtime.kernels.rope import apply_rope_ref


def qkv_rope_ref(
    qkv: torch.Tensor,
    heads: int,
    kv_heads: int,
    cos: torch.Tensor,
    sin: torch.Tensor,
    q_weight: torch.Tensor | None = None,
    k_weight: torch.Tensor | None = None,
    eps: float = 1e-6,
    offset: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """qkv (B, T, (H + 2 Hkv) D) -> q (B, T, H, D), k, v (B, T, Hkv, D); q/k normed when weights are given."""
    B, T, width = qkv.shape
    D = width // (heads + 2 * kv_heads)
    q, k, v = qkv.split([heads * D, kv_heads * D, kv_heads * D], dim=-1)
    q, k, v = q.view(B, T, heads, D), k.view(B, T, kv_heads, D), v.view(B, T, kv_heads, D)
    if q_weight is not None:
        q, k = rms_norm_ref(q, q_weight, eps, offset), rms_norm_ref(k, k_weight, eps, offset)
    return apply_rope_ref(q, cos, sin), apply_rope_ref(k, cos, sin), v


def qkv_rope_to_cache_ref(
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
) -> torch.Tensor:
    """qkv (B, 1, ...) -> q (B, 1, H, D); k/v written to k/v_cache[b, :, positions[b] % S]."""
    q, k, v = qkv_rope_ref(qkv, heads, kv_heads, cos, sin, q_weight, k_weight, eps, offset)
    B = qkv.shape[0]
    rows = torch.arange(B, device=qkv.device)
    slots = torch.remainder(positions, k_cache.shape[2])
    k_cache[rows, :, slots] = k[:, 0]
    v_cache[rows, :, slots] = v[:, 0]
    return q


@jit
def _halves(ptr, c, rows, use, D: tl.constexpr, TILE: tl.constexpr):
    """A (D,) vector's two halves in fp32 where `use` (HALF_BLOCK,) holds, zeros elsewhere:
    (1, HALF_BLOCK) rows to broadcast (`rows` unused), or with TILE (R, HALF_BLOCK) tiles, R =
    rows' length, loaded in the shape of the heads they meet (no broadcast then moves them between
    layouts through shared memory)."""
    if TILE:
        at = c[None, :] + 0 * rows[:, None]
        mask = use[None, :] & (rows[:, None] >= 0)
        first = tl.load(ptr + at, mask=mask, other=0.0).to(tl.float32)
        second = tl.load(ptr + D // 2 + at, mask=mask, other=0.0).to(tl.float32)
    else:
        first = tl.load(ptr + c, mask=use, other=0.0).to(tl.float32)[None, :]
        second = tl.load(ptr + D // 2 + c, mask=use, other=0.0).to(tl.float32)[None, :]
    return first, second


@jit
def norm_weight_halves(w_ptr, c, ok, rows, D: tl.constexpr, QK_NORM: tl.constexpr, TILE: tl.constexpr):
    """The q/k-norm weight's two halves (_halves; zeros, never read, without a norm)."""
    return _halves(w_ptr, c, rows, ok & QK_NORM, D, TILE)


@jit
def rope_halves(cos_ptr, sin_ptr, c, ok, rows, D: tl.constexpr, TILE: tl.constexpr):
    """One token's cos and sin tables (D,) as halves (_halves): cos1, cos2, sin1, sin2."""
    cos1, cos2 = _halves(cos_ptr, c, rows, ok, D, TILE)
    sin1, sin2 = _halves(sin_ptr, c, rows, ok, D, TILE)
    return cos1, cos2, sin1, sin2


@jit
def norm_rope_loaded(
    x1, x2, w1, w2, cos1, cos2, sin1, sin2, eps, D: tl.constexpr, QK_NORM: tl.constexpr, OFFSET: tl.constexpr
):
    """norm_rope_rows with the weight and the tables already loaded (norm_weight_halves, rope_halves):
    a kernel can load them before it waits for the rows."""
    dt = x1.dtype
    if QK_NORM:
        f1 = x1.to(tl.float32)
        f2 = x2.to(tl.float32)
        inv = tl.rsqrt((tl.sum(f1 * f1, axis=1) + tl.sum(f2 * f2, axis=1)) / D + eps)[:, None]
        if OFFSET != 0:
            x1 = (f1 * inv * (OFFSET + w1)).to(dt)
            x2 = (f2 * inv * (OFFSET + w2)).to(dt)
        else:
            x1 = (w1 * (f1 * inv).to(dt).to(tl.float32)).to(dt)
            x2 = (w2 * (f2 * inv).to(dt).to(tl.float32)).to(dt)
    f1 = x1.to(tl.float32)
    f2 = x2.to(tl.float32)
    # x * cos + rotate(x) * sin, rotate(x) = (-x2, x1); each product rounded, then the sum
    o1 = (f1 * cos1).to(dt).to(tl.float32) + (-f2 * sin1).to(dt).to(tl.float32)
    o2 = (f2 * cos2).to(dt).to(tl.float32) + (f1 * sin2).to(dt).to(tl.float32)
    return o1.to(dt), o2.to(dt)


@jit
def norm_rope_rows(
    x1, x2, w_ptr, cos_ptr, sin_ptr, c, ok, eps, D: tl.constexpr, QK_NORM: tl.constexpr, OFFSET: tl.constexpr
):
    """Heads as rows: x1, x2 (R, HALF_BLOCK) are the two halves of R heads, in the dtype; w_ptr the
    norm weight (D,), cos/sin_ptr one token's (D,) tables; c = arange(HALF_BLOCK), ok = c < D / 2.
    -> the halves of rope(norm(x)), rounded to the dtype at each step as the references round."""
    w1, w2 = norm_weight_halves(w_ptr, c, ok, c, D, QK_NORM, False)  # (1, HALF_BLOCK), broadcast
    cos1, cos2, sin1, sin2 = rope_halves(cos_ptr, sin_ptr, c, ok, c, D, False)
    return norm_rope_loaded(x1, x2, w1, w2, cos1, cos2, sin1, sin2, eps, D, QK_NORM, OFFSET)


@jit
def cache_slot(pos_ptr, b, n_slots):
    """Slot of row b's new token: positions[b] % S, never negative (as torch.remainder)."""
    slot = tl.load(pos_ptr + b) % n_slots
    return tl.where(slot < 0, slot + n_slots, slot)


@jit
def _qkv_rope_kernel(
    qkv_ptr,
    q_w_ptr,
    k_w_ptr,
    cos_ptr,
    sin_ptr,
    pos_ptr,
    q_ptr,
    k_ptr,
    v_ptr,
    T,
    n_heads,
    n_kv_heads,
    n_slots,
    eps,
    qkv_stride,
    cos_stride,
    kv_sb,
    kv_st,
    kv_sh,
    D: tl.constexpr,
    HALF_BLOCK: tl.constexpr,
    QK_NORM: tl.constexpr,
    OFFSET: tl.constexpr,
    TO_CACHE: tl.constexpr,
    BLOCK_R: tl.constexpr,
):
    # grid (B * T, 3): program (token, part) builds all heads of one part of the token's qkv row
    # (0: the H q heads, 1: the Hkv k heads, 2: the Hkv v heads), heads as the rows of a tile
    row = tl.program_id(0).to(tl.int64)
    part = tl.program_id(1)
    b = row // T
    t = row % T
    half = D // 2
    c = tl.arange(0, HALF_BLOCK)
    ok = c < half
    r = tl.arange(0, BLOCK_R)
    count = tl.where(part == 0, n_heads, n_kv_heads)
    first = tl.where(part == 0, 0, tl.where(part == 1, n_heads, n_heads + n_kv_heads))
    live = (r < count)[:, None] & ok[None, :]
    src = qkv_ptr + row * qkv_stride + (first + r)[:, None] * D + c[None, :]
    x1 = tl.load(src, mask=live, other=0.0)  # (BLOCK_R, D/2): the heads' first halves
    x2 = tl.load(src + half, mask=live, other=0.0)
    # where k and v land: (B, T, Hkv, D) outputs, or cache slot positions[b] % S (T == 1)
    if TO_CACHE:
        place = b * kv_sb + cache_slot(pos_ptr, b, n_slots) * kv_st
    else:
        place = b * kv_sb + t * kv_st
    cs = cos_ptr + row * cos_stride
    sn = sin_ptr + row * cos_stride
    if part == 0:
        o1, o2 = norm_rope_rows(x1, x2, q_w_ptr, cs, sn, c, ok, eps, D, QK_NORM, OFFSET)
        dst = q_ptr + row * n_heads * D + r[:, None] * D + c[None, :]
    elif part == 1:
        o1, o2 = norm_rope_rows(x1, x2, k_w_ptr, cs, sn, c, ok, eps, D, QK_NORM, OFFSET)
        dst = k_ptr + place + r[:, None] * kv_sh + c[None, :]
    else:
        o1, o2 = x1, x2
        dst = v_ptr + place + r[:, None] * kv_sh + c[None, :]
    tl.store(dst, o1.to(dst.dtype.element_ty), mask=live)
    tl.store(dst + half, o2.to(dst.dtype.element_ty), mask=live)


def _launch(qkv, heads, kv_heads, cos, sin, norm_args, outs, positions, kv_strides) -> None:
    """norm_args (q_weight, k_weight, eps, offset); outs (q, k, v): k/v are the caches when positions is given."""
    q_weight, k_weight, eps, offset = norm_args
    q, k, v = outs
    B, T, width = qkv.shape
    D = width // (heads + 2 * kv_heads)
    if D % 2 or width != (heads + 2 * kv_heads) * D:
        raise ValueError(f"qkv width {width} does not split into {heads} + 2 x {kv_heads} heads of even size")
    qkv2 = qkv.reshape(B * T, width)
    if qkv2.stride(-1) != 1:
        qkv2 = qkv2.contiguous()
    cos2, sin2 = cos.reshape(B * T, D).contiguous(), sin.reshape(B * T, D).contiguous()
    norm = q_weight is not None
    block_r = next_pow2(heads)  # the q part has the most heads
    _qkv_rope_kernel[(B * T, 3)](
        qkv2, q_weight if norm else qkv2, k_weight if norm else qkv2, cos2, sin2,
        positions if positions is not None else cos2, q, k, v,
        T, heads, kv_heads, k.shape[2] if positions is not None else 1, eps, qkv2.stride(0), D, *kv_strides,
        D=D, HALF_BLOCK=next_pow2(D // 2), QK_NORM=norm, OFFSET=float(offset), TO_CACHE=positions is not None,
        BLOCK_R=block_r, num_warps=max(1, min(8, block_r * next_pow2(D // 2) // 256)),
    )  # fmt: skip


def qkv_rope_triton(
    qkv: torch.Tensor,
    heads: int,
    kv_heads: int,
    cos: torch.Tensor,
    sin: torch.Tensor,
    q_weight: torch.Tensor | None = None,
    k_weight: torch.Tensor | None = None,
    eps: float = 1e-6,
    offset: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Same contract as qkv_rope_ref (q, k, v come back contiguous); one kernel."""
    B, T, width = qkv.shape
    D = width // (heads + 2 * kv_heads)
    q = torch.empty((B, T, heads, D), dtype=qkv.dtype, device=qkv.device)
    k = torch.empty((B, T, kv_heads, D), dtype=qkv.dtype, device=qkv.device)
    v = torch.empty_like(k)
    norm_args = (q_weight, k_weight, eps, offset)
    _launch(qkv, heads, kv_heads, cos, sin, norm_args, (q, k, v), None, k.stride()[:3])
    return q, k, v


def qkv_rope_to_cache_triton(
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
) -> torch.Tensor:
    """Same contract as qkv_rope_to_cache_ref; one kernel writes q and the two cache slots."""
    B, T, width = qkv.shape
    if T != 1:
        raise ValueError(f"qkv_rope_to_cache takes one token per row, got T={T}")
    if k_cache.stride() != v_cache.stride() or k_cache.stride(-1) != 1:
        raise ValueError("k and v caches need the same strides, unit along head_dim")
    D = width // (heads + 2 * kv_heads)
    q = torch.empty((B, 1, heads, D), dtype=qkv.dtype, device=qkv.device)
    # cache strides (row, slot, head): the kernel adds slot * stride(2) in place of t * stride
    strides = (k_cache.stride(0), k_cache.stride(2), k_cache.stride(1))
    norm_args = (q_weight, k_weight, eps, offset)
    _launch(qkv, heads, kv_heads, cos, sin, norm_args, (q, k_cache, v_cache), positions, strides)
    return q
