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
def _rope_half(a, b, cos_ptr, sin_ptr, c, ok):
    """First half of rope: a * cos1 - b * sin1, each product rounded to the dtype, then the sum."""
    cos = tl.load(cos_ptr + c, mask=ok, other=0.0).to(tl.float32)
    sin = tl.load(sin_ptr + c, mask=ok, other=0.0).to(tl.float32)
    return (a * cos).to(a.dtype).to(tl.float32) + (b * sin).to(a.dtype).to(tl.float32)


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
):
    # grid (B * T, H + 2 Hkv): one program per (token, head); heads [0, H) are q, then k, then v
    row = tl.program_id(0).to(tl.int64)
    j = tl.program_id(1)
    b = row // T
    t = row % T
    half = D // 2
    c = tl.arange(0, HALF_BLOCK)
    ok = c < half
    src = qkv_ptr + row * qkv_stride + j * D
    x1 = tl.load(src + c, mask=ok, other=0.0)  # (D/2,) first half of the head
    x2 = tl.load(src + half + c, mask=ok, other=0.0)
    # where k and v land: (B, T, Hkv, D) outputs, or cache slot positions[b] % S (T == 1)
    if TO_CACHE:
        slot = tl.load(pos_ptr + b) % n_slots
        slot = tl.where(slot < 0, slot + n_slots, slot)  # as torch.remainder: never a negative slot
        place = b * kv_sb + slot * kv_st
    else:
        place = b * kv_sb + t * kv_st
    if j < n_heads + n_kv_heads:
        if QK_NORM:
            f1 = x1.to(tl.float32)
            f2 = x2.to(tl.float32)
            inv = tl.rsqrt((tl.sum(f1 * f1, axis=0) + tl.sum(f2 * f2, axis=0)) / D + eps)
            if j < n_heads:
                w1 = tl.load(q_w_ptr + c, mask=ok, other=0.0).to(tl.float32)
                w2 = tl.load(q_w_ptr + half + c, mask=ok, other=0.0).to(tl.float32)
            else:
                w1 = tl.load(k_w_ptr + c, mask=ok, other=0.0).to(tl.float32)
                w2 = tl.load(k_w_ptr + half + c, mask=ok, other=0.0).to(tl.float32)
            if OFFSET != 0:
                x1 = (f1 * inv * (OFFSET + w1)).to(x1.dtype)
                x2 = (f2 * inv * (OFFSET + w2)).to(x2.dtype)
            else:
                x1 = (w1 * (f1 * inv).to(x1.dtype).to(tl.float32)).to(x1.dtype)
                x2 = (w2 * (f2 * inv).to(x2.dtype).to(tl.float32)).to(x2.dtype)
        cs = cos_ptr + row * cos_stride
        sn = sin_ptr + row * cos_stride
        f1 = x1.to(tl.float32)
        f2 = x2.to(tl.float32)
        # rotate(x) = (-x2, x1): out1 = x1 cos1 - x2 sin1, out2 = x2 cos2 + x1 sin2
        o1 = _rope_half(f1, -f2, cs, sn, c, ok).to(x1.dtype)
        o2 = _rope_half(f2, f1, cs + half, sn + half, c, ok).to(x1.dtype)
        if j < n_heads:
            dst = q_ptr + row * n_heads * D + j * D
        else:
            dst = k_ptr + place + (j - n_heads) * kv_sh
        tl.store(dst + c, o1.to(dst.dtype.element_ty), mask=ok)
        tl.store(dst + half + c, o2.to(dst.dtype.element_ty), mask=ok)
    else:
        dst = v_ptr + place + (j - n_heads - n_kv_heads) * kv_sh
        tl.store(dst + c, x1, mask=ok)
        tl.store(dst + half + c, x2, mask=ok)


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
    _qkv_rope_kernel[(B * T, heads + 2 * kv_heads)](
        qkv2, q_weight if norm else qkv2, k_weight if norm else qkv2, cos2, sin2,
        positions if positions is not None else cos2, q, k, v,
        T, heads, kv_heads, k.shape[2] if positions is not None else 1, eps, qkv2.stride(0), D, *kv_strides,
        D=D, HALF_BLOCK=next_pow2(D // 2), QK_NORM=norm, OFFSET=float(offset), TO_CACHE=positions is not None,
        num_warps=1 if D <= 128 else 2,
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
