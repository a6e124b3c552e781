"""Attention over the static KV cache, plain torch (SDPA).

Decode: one query per row, keys are cache slots [0, length) of that row. A sliding layer's cache
is a ring of `window` slots (position p lives at p % window); softmax does not care about slot
order, so a ring row is attended exactly like a global one, with length = min(pos + 1, window).
Prefill: T queries of one row against keys whose positions are given explicitly."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def decode_attention_ref(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, lengths: torch.Tensor, scale: float
) -> torch.Tensor:
    """q (B, H, D); k/v_cache (B, Hkv, S, D); lengths (B,) live slots -> (B, H, D)."""
    slots = torch.arange(k_cache.shape[2], device=q.device)
    mask = (slots < lengths[:, None])[:, None, None, :]  # (B, 1, 1, S)
    out = F.scaled_dot_product_attention(
        q.unsqueeze(2), k_cache, v_cache, attn_mask=mask, scale=scale, enable_gqa=q.shape[1] != k_cache.shape[1]
    )
    return out.squeeze(2)


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
    if from_start and (window is None or q.shape[2] <= window):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=gqa)
    visible = (k_pos[None, :] <= q_pos[:, None]) & (k_pos[None, :] >= 0)
    if window is not None:
        visible &= k_pos[None, :] > q_pos[:, None] - window
    return F.scaled_dot_product_attention(q, k, v, attn_mask=visible, scale=scale, enable_gqa=gqa)
