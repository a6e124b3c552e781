"""Sampling inside the captured step: every setting is a per-row device tensor, so one graph serves
greedy, temperature, top-k, top-p and repetition penalty alike.

Randomness is a counter-based hash of (row seed, position, token id) turned into Gumbel noise:
no generator state, so eager and graph replay draw the same numbers, a seeded request reproduces
whatever batch it runs in, and nothing here reads the host.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from runtime.errors import RuntimeUserError

_MASK32 = 0xFFFFFFFF


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    repetition_penalty: float = 1.0  # 1 = off
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.temperature >= 0:
            raise RuntimeUserError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise RuntimeUserError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise RuntimeUserError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not self.repetition_penalty > 0:
            raise RuntimeUserError(f"repetition_penalty must be > 0 (1 = off), got {self.repetition_penalty}")

    @property
    def greedy(self) -> bool:
        """Plain argmax suffices: no temperature and no penalty."""
        return self.temperature == 0 and self.repetition_penalty == 1.0


def _mix(h: torch.Tensor) -> torch.Tensor:
    """32-bit avalanche in int64 arithmetic (every product stays below 2**63)."""
    h = h ^ (h >> 16)
    h = (h * 0x7FEB352D) & _MASK32
    h = h ^ (h >> 15)
    h = (h * 0x2C1B3C6D) & _MASK32
    return h ^ (h >> 16)


def gumbel_noise(seed: torch.Tensor, positions: torch.Tensor, vocab: int) -> torch.Tensor:
    """seed (B,), positions (B,) int64 -> (B, V) float32 standard Gumbel noise, deterministic."""
    ids = torch.arange(vocab, device=seed.device, dtype=torch.int64)
    row = _mix((seed * 0x27D4EB2F + positions * 0x165667B1) & _MASK32)  # (B,)
    h = _mix((ids[None, :] * 0x3C6EF372 + row[:, None]) & _MASK32)
    h = _mix(h ^ row[:, None])
    u = ((h >> 8).float() + 0.5) * (1.0 / 16777216.0)  # (0, 1), 24 random bits
    return -torch.log(-torch.log(u))


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: torch.Tensor) -> torch.Tensor:
    """logits (B, V), seen (B, V) bool, penalty (B,): seen logits divided (if > 0) or multiplied."""
    p = penalty[:, None]
    return torch.where(seen, torch.where(logits > 0, logits / p, logits * p), logits)


def filter_top_k_top_p(scaled: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """scaled logits (B, V) -> the same with tokens outside top-k, then top-p, set to -inf.

    One descending sort; each row keeps its n best tokens, n = min(k, smallest prefix whose mass
    reaches p). Kept by value (>= the n-th best), so ties at the cut are kept together."""
    V = scaled.shape[-1]
    ranked, _ = scaled.sort(dim=-1, descending=True)
    k = torch.where(top_k > 0, top_k.clamp(max=V), torch.full_like(top_k, V))  # (B,)
    rank = torch.arange(V, device=scaled.device)
    probs = torch.softmax(ranked.masked_fill(rank[None, :] >= k[:, None], float("-inf")), dim=-1)
    mass_before = probs.cumsum(-1) - probs
    n_keep = torch.minimum((mass_before < top_p[:, None]).sum(-1), k).clamp(min=1)
    cutoff = ranked.gather(1, (n_keep - 1)[:, None])
    return scaled.masked_fill(scaled < cutoff, float("-inf"))


def sample(
    logits: torch.Tensor,
    positions: torch.Tensor,
    temperature: torch.Tensor,
    top_k: torch.Tensor,
    top_p: torch.Tensor,
    repetition_penalty: torch.Tensor,
    seed: torch.Tensor,
    seen: torch.Tensor,
) -> torch.Tensor:
    """logits (B, V) float32 and per-row settings (B,) -> next tokens (B,) int64.  # graph: safe

    positions: the position the sampled token will occupy (keys the noise)."""
    logits = apply_repetition_penalty(logits, seen, repetition_penalty)
    greedy = logits.argmax(-1)
    scaled = logits / temperature.clamp(min=1e-5)[:, None]
    kept = filter_top_k_top_p(scaled, top_k, top_p)
    sampled = (kept + gumbel_noise(seed, positions, logits.shape[-1])).argmax(-1)
    return torch.where(temperature > 0, sampled, greedy)
