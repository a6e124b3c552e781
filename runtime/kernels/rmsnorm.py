"""RMSNorm, plain torch. Two rounding orders, as the families define them:
offset 0 (Llama, Qwen): normalise in fp32, cast to the input dtype, then multiply by w.
offset 1 (Gemma): multiply by (1 + w) in fp32, then cast."""

from __future__ import annotations

import torch


def rms_norm_ref(x: torch.Tensor, weight: torch.Tensor, eps: float, offset: float = 0.0) -> torch.Tensor:
    """x (..., N), weight (N,) -> (..., N) in x.dtype."""
    xf = x.float()
    normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    if offset:
        return (normed * (offset + weight.float())).to(x.dtype)
    return weight * normed.to(x.dtype)
