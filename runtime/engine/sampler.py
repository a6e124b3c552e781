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
from runtime.kernels import argmax, ops, sort_sample, topk, topk_sample

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


# the sampled config the goals bench runs (configs/goals.yaml: temperature 0.8, top-k 50, top-p 0.9),
# seeded: the "topk" step the profiling scripts time
BENCH_SAMPLED = SamplingParams(0.8, 50, 0.9, 1.0, 1)
# top-p alone (Llama 3's own generation settings), seeded: the "sample" step the profiling scripts time
BENCH_TOP_P = SamplingParams(0.6, 0, 0.9, 1.0, 1)


def _mix(h: torch.Tensor) -> torch.Tensor:
    """32-bit avalanche in int64 arithmetic (every product stays below 2**63)."""
    h = h ^ (h >> 16)
    h = (h * 0x7FEB352D) & _MASK32
    h = h ^ (h >> 15)
    h = (h * 0x2C1B3C6D) & _MASK32
    return h ^ (h >> 16)


def gumbel_noise(seed: torch.Tensor, positions: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """seed (B,), positions (B,) int64, token ids (V,) or (B, K) -> standard Gumbel noise of the
    same shape as ids broadcast to B rows, float32. A token's noise depends only on (seed,
    position, token id), so any subset of candidates sees the numbers the full vocabulary would."""
    row = _mix((seed * 0x27D4EB2F + positions * 0x165667B1) & _MASK32)[:, None]  # (B, 1)
    h = _mix((ids * 0x3C6EF372 + row) & _MASK32)
    h = _mix(h ^ row)
    u = ((h >> 8).float() + 0.5) * (1.0 / 16777216.0)  # (0, 1), 24 random bits
    return -torch.log(-torch.log(u))


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: torch.Tensor) -> torch.Tensor:
    """logits (B, V), seen (B, V) bool, penalty (B,): seen logits divided (if > 0) or multiplied."""
    p = penalty[:, None]
    return torch.where(seen, torch.where(logits > 0, logits / p, logits * p), logits)


def top_k_top_p_cutoff(ranked: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """ranked (B, K) logits sorted descending (K = V, or a candidate set holding every row's top-k)
    -> (B, 1) cutoff: a row keeps tokens whose logit is >= it. It keeps its n best tokens,
    n = min(k, smallest prefix whose mass reaches p); by value, so ties at the cut stay together.
    top_p >= 1 keeps all k (a float cumsum may reach 1 before the last tokens, which it would drop)."""
    K = ranked.shape[-1]
    k = torch.where(top_k > 0, top_k.clamp(max=K), torch.full_like(top_k, K))  # (B,)
    rank = torch.arange(K, device=ranked.device)
    probs = torch.softmax(ranked.masked_fill(rank[None, :] >= k[:, None], float("-inf")), dim=-1)
    mass_before = probs.cumsum(-1) - probs
    below = (mass_before < top_p[:, None]) | (top_p[:, None] >= 1)
    n_keep = torch.minimum(below.sum(-1), k).clamp(min=1)
    return ranked.gather(1, (n_keep - 1)[:, None])


def sample(
    logits: torch.Tensor,
    positions: torch.Tensor,
    temperature: torch.Tensor,
    top_k: torch.Tensor,
    top_p: torch.Tensor,
    repetition_penalty: torch.Tensor,
    seed: torch.Tensor,
    seen: torch.Tensor,
    candidates: int = 0,
) -> torch.Tensor:
    """logits (B, V) float32 and per-row settings (B,) -> next tokens (B,) int64.  # graph: safe

    positions: the position the sampled token will occupy (keys the noise).
    candidates: 0 sorts the whole vocabulary (any setting); K > 0 works on the K best logits only,
    exact when every sampled row has 0 < top_k <= K or plain temperature (top-k off, top-p 1,
    which keeps every token: its pick is over the whole row), and much cheaper than a full sort.
    Triton-capable tensors take the fused kernels: runtime/kernels/topk_sample.py with
    candidates, runtime/kernels/sort_sample.py (one sort) without."""
    args = (logits, positions, temperature, top_k, top_p, repetition_penalty, seed, seen)
    if fused_sampler(logits, candidates):
        if candidates:
            return topk_sample.sample_topk_triton(*args, candidates)
        return sort_sample.sample_sorted_triton(*args)
    return sample_ref(*args, candidates)


def fused_sampler(logits: torch.Tensor, candidates: int) -> bool:
    """Whether sample(..., candidates) takes the fused kernels."""
    if logits.stride(-1) != 1:
        return False
    if not candidates:
        return ops.enabled("sample_sorted", logits) and sort_sample.supported(logits)
    return ops.enabled("sample_topk", logits) and topk.supported(logits, candidates)


def sample_step(
    logits: torch.Tensor,
    tokens: torch.Tensor,
    positions: torch.Tensor,
    temperature: torch.Tensor,
    top_k: torch.Tensor,
    top_p: torch.Tensor,
    repetition_penalty: torch.Tensor,
    seed: torch.Tensor,
    seen: torch.Tensor,
    candidates: int = 0,
    nonfinite_at: torch.Tensor | None = None,
) -> None:
    """The decode step's pick, in place on the runner's buffers.  # graph: safe
    sample's token for each row at position positions + 1 goes into tokens (B,); positions (B,)
    advance by one; seen (B, V) marks the token. nonfinite_at (B,) int64 given (unit stride):
    runner.step_tail_ref's record too, a row's current position where its logits are not finite
    and nothing is recorded yet (< 0). The fused kernels do it all in their own launches (topk:
    three, two up to 32768 logits; without candidates: five and the sort); otherwise
    argmax_step_triton's two launches record (Triton must be on), then sample, then three torch
    kernels."""
    settings = (temperature, top_k, top_p, repetition_penalty, seed, seen)
    if fused_sampler(logits, candidates):
        record = {"tokens": tokens, "nonfinite_at": nonfinite_at}
        if candidates:
            topk_sample.sample_topk_triton(logits, positions, *settings, candidates, **record)
        else:
            sort_sample.sample_sorted_triton(logits, positions, *settings, **record)
        return
    if nonfinite_at is not None:  # before positions advance: the record wants the current ones
        argmax.argmax_step_triton(logits, positions, nonfinite_at)
    advance(sample(logits, positions + 1, *settings, candidates), tokens, positions, seen)


def advance(nxt: torch.Tensor, tokens: torch.Tensor, positions: torch.Tensor, seen: torch.Tensor) -> None:
    """The step's end in torch ops: the picked tokens nxt (B,) go into tokens (B,), positions (B,)
    advance by one, seen (B, V) marks them."""
    tokens.copy_(nxt)
    positions.add_(1)
    seen.scatter_(1, nxt[:, None], True)


def sample_ref(
    logits: torch.Tensor,
    positions: torch.Tensor,
    temperature: torch.Tensor,
    top_k: torch.Tensor,
    top_p: torch.Tensor,
    repetition_penalty: torch.Tensor,
    seed: torch.Tensor,
    seen: torch.Tensor,
    candidates: int = 0,
) -> torch.Tensor:
    """sample in plain torch: the reference, and the path for any setting (full sort)."""
    logits = apply_repetition_penalty(logits, seen, repetition_penalty)
    greedy = logits.argmax(-1)
    scaled = logits / temperature.clamp(min=1e-5)[:, None]
    if candidates:
        ranked, ids = scaled.topk(candidates, dim=-1)  # (B, K), descending
    else:
        ranked, _ = scaled.sort(dim=-1, descending=True)
        ids = torch.arange(scaled.shape[-1], device=scaled.device)
    cutoff = top_k_top_p_cutoff(ranked, top_k, top_p)
    pool = ranked if candidates else scaled
    kept = pool.masked_fill(pool < cutoff, float("-inf"))
    choice = (kept + gumbel_noise(seed, positions, ids)).argmax(-1)
    sampled = ids.gather(1, choice[:, None])[:, 0] if candidates else choice
    if candidates:  # plain temperature keeps every token: those rows pick over the whole row
        whole = (
            scaled + gumbel_noise(seed, positions, torch.arange(scaled.shape[-1], device=scaled.device))
        ).argmax(-1)
        sampled = torch.where((top_k == 0) & (top_p >= 1), whole, sampled)
    return torch.where(temperature > 0, sampled, greedy)
