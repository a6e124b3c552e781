"""The ops the model calls. Each resolves, per call, to a Triton kernel or to the plain-torch
reference with the same signature.

RUNTIME_KERNELS (read at every call, so a benchmark can A/B both in one process):
  auto   (default) Triton for CUDA tensors when Triton imports, the reference elsewhere
  torch  always the references
  triton always Triton when it imports (on the CPU only under TRITON_INTERPRET=1: tests)
Inside a captured graph the choice made at capture time is what replays.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import torch

from runtime.kernels import _triton

# the <op>_ref / <op>_triton pairs below are module attributes on purpose: _dispatch looks them up
# by name at call time (so a test can stand in for one)
# ruff: noqa: F401
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


def _dispatch(name: str) -> Callable:
    """The op `name`: `<name>_triton` when its first tensor argument qualifies (use_triton), else
    `<name>_ref`, both looked up here at call time; the op keeps the reference's signature."""
    reference = globals()[f"{name}_ref"]

    @functools.wraps(reference)
    def op(first: torch.Tensor, *args, **kwargs):
        fn = globals()[f"{name}_triton" if use_triton(first) else f"{name}_ref"]
        return fn(first, *args, **kwargs)

    return op


rms_norm = _dispatch("rms_norm")
gated_act = _dispatch("gated_act")
qkv_rope = _dispatch("qkv_rope")
qkv_rope_to_cache = _dispatch("qkv_rope_to_cache")
decode_attention = _dispatch("decode_attention")
qkv_decode_attention = _dispatch("qkv_decode_attention")


def add_rms_norm(
    x: torch.Tensor,
    residual: torch.Tensor,
    weight: torch.Tensor,
    eps: float,
    offset: float = 0.0,
    pre_weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (rms_norm(residual + x'), residual + x'), x' = x or rms_norm(x, pre_weight).
    The kernel needs one dtype throughout; mixed dtypes take the reference."""
    same = x.dtype == residual.dtype == weight.dtype and (pre_weight is None or pre_weight.dtype == x.dtype)
    fn = add_rms_norm_triton if same and use_triton(x) else add_rms_norm_ref
    return fn(x, residual, weight, eps, offset, pre_weight)


apply_rope = apply_rope_ref
prefill_attention = prefill_attention_ref
