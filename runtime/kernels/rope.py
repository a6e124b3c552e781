"""Rotary position embedding, plain torch (the half-split convention of HF checkpoints).

Frequencies are built once per RopeSpec (default, linear or llama3 scaling); cos/sin are derived
from device positions at run time, so one captured graph serves every position."""

from __future__ import annotations

import math

import torch

from runtime.models.spec import RopeSpec


def inverse_frequencies(
    rope: RopeSpec, head_dim: int, device: torch.device | str | None = None
) -> torch.Tensor:
    """(D/2,) float32 inverse frequencies for one rope spec."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float() / head_dim
    inv = 1.0 / (rope.theta**exponents)
    if rope.kind == "linear":
        return inv / rope.factor
    if rope.kind == "llama3":
        # Long wavelengths are slowed by `factor`, short ones kept, the band between blended.
        low_wavelen = rope.original_max_positions / rope.low_freq_factor
        high_wavelen = rope.original_max_positions / rope.high_freq_factor
        wavelen = 2 * math.pi / inv
        scaled = torch.where(wavelen > low_wavelen, inv / rope.factor, inv)
        blend = (rope.original_max_positions / wavelen - rope.low_freq_factor) / (
            rope.high_freq_factor - rope.low_freq_factor
        )
        blended = (1 - blend) * scaled / rope.factor + blend * scaled
        in_band = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        return torch.where(in_band, blended, scaled)
    return inv


def rope_cos_sin(
    positions: torch.Tensor, inv_freq: torch.Tensor, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """positions (B, T) int -> cos, sin (B, T, D) in dtype (computed in fp32, then cast)."""
    freqs = positions.float().unsqueeze(-1) * inv_freq  # (B, T, D/2)
    angles = torch.cat((freqs, freqs), dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope_ref(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, T, H, D), cos/sin (B, T, D) -> (B, T, H, D)."""
    cos, sin = cos.unsqueeze(2), sin.unsqueeze(2)
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin
