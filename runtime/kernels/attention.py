"""Prefill attention, plain torch (SDPA): T queries of one row against keys whose positions are
given explicitly. Decode attention lives in decode_attention.py (re-exported here)."""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from runtime.kernels.decode_attention import decode_attention_ref

__all__ = ["decode_attention_ref", "prefill_attention_ref"]


def prefill_attention_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_pos: torch.Tensor,
    k_pos: torch.Tensor,
    scale: float,
    window: int | None,
    from_start: bool = False,
) -> torch.Tensor:
    """q (1, H, T, D); k/v (1, Hkv, Tk, D); q_pos (T,), k_pos (Tk,) (-1 = empty) -> (1, H, T, D).

    Causal, and for a sliding layer a key is visible only while q_pos - k_pos < window.
    from_start: keys are exactly the queries' tokens from position 0 (a plain causal mask)."""
    gqa = q.shape[1] != k.shape[1]
    if gqa and q.is_cuda and os.environ.get("RUNTIME_SDPA_GQA", "native") == "copy":
        # by default SDPA takes the kv heads as they are (enable_gqa: on the H100 its fused kernel
        # did, 0.1-0.3 ms faster per prompt than a copy); RUNTIME_SDPA_GQA=copy repeats K and V to
        # H heads first, for a card or torch whose fused kernels need equal head counts (the math
        # fallback would build (H, T, Tk) scores, far dearer than one (1, H, Tk, D) copy)
        group = q.shape[1] // k.shape[1]
        k, v, gqa = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1), False
    if from_start and (window is None or q.shape[2] <= window):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=gqa)
    visible = (k_pos[None, :] <= q_pos[:, None]) & (k_pos[None, :] >= 0)
    if window is not None:
        visible &= k_pos[None, :] > q_pos[:, None] - window
    return F.scaled_dot_product_attention(q, k, v, attn_mask=visible, scale=scale, enable_gqa=gqa)
