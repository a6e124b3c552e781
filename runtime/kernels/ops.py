"""The ops the model calls. Each resolves, per call, to a Triton kernel or to the plain-torch
reference with the same signature.

RUNTIME_KERNELS (read at every call, so a benchmark can A/B both in one process):
  auto   (default) Triton for CUDA tensors when Triton imports, the reference elsewhere
  torch  always the references
  triton always Triton when it imports (on the CPU only under TRITON_INTERPRET=1: tests)
Inside a captured graph the choice made at capture time is what replays.
"""

from __future__ import annotations

import os

import torch

from runtime.kernels import _triton
from runtime.kernels.activation import gated_act_ref, gated_act_triton
from runtime.kernels.attention import prefill_attention_ref
from runtime.kernels.decode_attention import decode_attention_ref, decode_attention_triton
from runtime.kernels.qkv_attention import qkv_decode_attention_ref, qkv_decode_attention_triton
from runtime.kernels.qkv_rope import (
    qkv_rope_ref,
    qkv_rope_to_cache_ref,
    qkv_rope_to_cache_triton,
    qkv_rope_triton,
)
from runtime.kernels.rmsnorm import add_rms_norm_ref, add_rms_norm_triton, rms_norm_ref, rms_norm_triton
from runtime.kernels.rope import apply_rope_ref

BACKENDS = ("auto", "torch", "triton")


def use_triton(t: torch.Tensor) -> bool:
    """Whether ops on tensor `t` run as Triton kernels (see RUNTIME_KERNELS above)."""
    choice = os.environ.get("RUNTIME_KERNELS", "auto") or "auto"
    if choice not in BACKENDS:
        raise ValueError(f"RUNTIME_KERNELS={choice!r}: choose one of {', '.join(BACKENDS)}")
    if choice == "torch" or not _triton.AVAILABLE:
        return False
    return choice == "triton" or t.is_cuda


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, offset: float = 0.0) -> torch.Tensor:
    """x (..., N), weight (N,) -> (..., N)."""
    return (rms_norm_triton if use_triton(x) else rms_norm_ref)(x, weight, eps, offset)


def add_rms_norm(
    x: torch.Tensor,
    residual: torch.Tensor,
    weight: torch.Tensor,
    eps: float,
    offset: float = 0.0,
    pre_weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (rms_norm(residual + x'), residual + x'), x' = x or rms_norm(x, pre_weight)."""
    same = x.dtype == residual.dtype == weight.dtype and (pre_weight is None or pre_weight.dtype == x.dtype)
    fn = add_rms_norm_triton if same and use_triton(x) else add_rms_norm_ref
    return fn(x, residual, weight, eps, offset, pre_weight)


def gated_act(gate_up: torch.Tensor, activation: str) -> torch.Tensor:
    """gate_up (..., 2I) -> act(gate) * up (..., I)."""
    return (gated_act_triton if use_triton(gate_up) else gated_act_ref)(gate_up, activation)


def qkv_rope(
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
    """qkv (B, T, (H + 2 Hkv) D) -> q (B, T, H, D), k, v (B, T, Hkv, D), q/k normed and rotated."""
    fn = qkv_rope_triton if use_triton(qkv) else qkv_rope_ref
    return fn(qkv, heads, kv_heads, cos, sin, q_weight, k_weight, eps, offset)


def qkv_rope_to_cache(
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
    """qkv (B, 1, ...) -> q (B, 1, H, D); k, v written to slot positions[b] % S of cache row b."""
    fn = qkv_rope_to_cache_triton if use_triton(qkv) else qkv_rope_to_cache_ref
    return fn(qkv, heads, kv_heads, cos, sin, q_weight, k_weight, eps, offset, k_cache, v_cache, positions)


def decode_attention(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, lengths: torch.Tensor, scale: float
) -> torch.Tensor:
    """q (B, H, D); k/v_cache (B, Hkv, S, D); lengths (B,) -> (B, H, D)."""
    fn = decode_attention_triton if use_triton(q) else decode_attention_ref
    return fn(q, k_cache, v_cache, lengths, scale)


def qkv_decode_attention(
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
) -> torch.Tensor:
    """qkv (B, 1, ...) -> attention output (B, H, D): qkv_rope_to_cache + decode_attention (length
    min(pos + 1, S)) as one op."""
    fn = qkv_decode_attention_triton if use_triton(qkv) else qkv_decode_attention_ref
    return fn(
        qkv, heads, kv_heads, cos, sin, q_weight, k_weight, eps, offset, k_cache, v_cache, positions, scale
    )


apply_rope = apply_rope_ref
prefill_attention = prefill_attention_ref
