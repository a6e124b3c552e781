"""The sampler's "topk" variant as Triton kernels on the candidate stages of topk.py; the
plain-torch reference and the contract are runtime/engine/sampler.py's sample(candidates=K).

Stage 1 (topk.py's chunk kernel) first applies the repetition penalty (the seen mask and the row's
penalty); the last stage, instead of writing the K candidates, picks the token from them
(temperature, top-k, top-p, Gumbel noise, the greedy pick for temperature 0): three launches (two
up to 8 chunks) for what the reference does in about forty small ones. Given the runner's tokens
buffer, the last stage also finishes the decode step (sampler.sample_step): token out, position
advanced, token marked seen. Given its nonfinite_at too, stage 1 also checks the raw logits it
reads (one flag a program: a NaN or +inf, else a value above -inf, else none) and the last stage
reduces the row's flags into the step's non-finite record (runner.step_tail_ref's), so the topk
step's tail needs no argmax launches. A plain-temperature row (top-k off, top-p 1) keeps every
token, so the K candidates cannot pick for it: stage 1 also keeps each chunk's first best of
scaled + noise for such rows, and the last stage takes the best chunk's, over the whole row.
"""

from __future__ import annotations

import torch

from runtime.kernels._triton import cdiv, jit, next_pow2, pdl, pdl_wait, tl
from runtime.kernels.sample_parts import first_best, gumbel, record_nonfinite
from runtime.kernels.topk import (
    _best_sorted,
    _candidate_keys,
    _id,
    _value,
    _warps,
    chunk_size,
    skip_shared_digits,
)


@jit
def _sample_kernel(
    keys_ptr, best_ptr, out_ptr, temp_ptr, top_k_ptr, top_p_ptr, seed_ptr, pos_ptr, seen_ptr,
    flags_ptr, nonfinite_ptr, plain_ptr, n_keys, seen_stride, parts, K: tl.constexpr,
    BLOCK: tl.constexpr, PARTS: tl.constexpr, STEP: tl.constexpr, CHECK: tl.constexpr,
    PDL: tl.constexpr, SKIP: tl.constexpr = False,
):  # fmt: skip
    # grid (B,): sampler.sample's steps after the candidate set, on the row's K best (penalised).
    # STEP: out_ptr is the tokens buffer and pos_ptr the rows' current positions, which advance.
    # CHECK (with STEP): stage 1's flags (B, parts) give the row's non-finite record in nonfinite_ptr.
    # A plain-temperature row (top-k off, top-p 1) keeps every token: its pick is the best of
    # stage 1's chunk picks (B, parts, 2) at plain_ptr, not of the K candidates
    pdl_wait(PDL)
    row = tl.program_id(0).to(tl.int64)
    ranked, keys = _best_sorted(keys_ptr, best_ptr, row, n_keys, K, BLOCK, SKIP)
    # single keys by rank come from the scratch (scalar loads), which spares block-wide reductions
    rank = tl.arange(0, K)
    temperature = tl.load(temp_ptr + row)
    t = tl.maximum(temperature, 1e-5)
    scaled = _value(keys) / t
    # top_k_top_p_cutoff: keep the n best, n = min(k, smallest prefix whose mass reaches p)
    top_k = tl.load(top_k_ptr + row)
    k = tl.where(top_k > 0, tl.minimum(top_k, K), K)
    in_k = rank < k
    top = tl.load(ranked)  # the best key: the largest scaled value, and the greedy pick
    e = tl.where(in_k, tl.exp(scaled - _value(top) / t), 0.0)
    probs = e / tl.sum(e, axis=0)
    mass_before = tl.cumsum(probs, axis=0) - probs
    top_p = tl.load(top_p_ptr + row)
    limit = tl.where(top_p >= 1, float("inf"), top_p)  # top_p 1 keeps all k, as the reference
    n_keep = tl.sum((in_k & (mass_before < limit)).to(tl.int32), axis=0)
    n_keep = tl.maximum(tl.minimum(n_keep, k), 1)
    cutoff = _value(tl.load(ranked + n_keep - 1)) / t
    position = tl.load(pos_ptr + row) + STEP  # where the token goes: keys the noise
    noise = gumbel(tl.load(seed_ptr + row), position, _id(keys))
    kept = tl.where(scaled >= cutoff, scaled + noise, float("-inf"))
    choice = tl.argmax(kept, axis=0, tie_break_left=True)  # the first best rank, as torch.argmax
    sampled = _id(tl.load(ranked + choice))
    if (top_k == 0) & (top_p >= 1):
        sampled = first_best(plain_ptr, row, parts, PARTS)
    greedy = _id(top)  # the penalised argmax, first index
    token = tl.where(temperature > 0, sampled, greedy)
    tl.store(out_ptr + row, token)
    if STEP:  # stage 1 has read the seen row already (an earlier launch)
        if CHECK:  # the record takes the row's current position, before the advance
            record_nonfinite(flags_ptr, nonfinite_ptr, row, parts, position - 1, PARTS)
        tl.store(pos_ptr + row, position)
        tl.store(seen_ptr + row * seen_stride + token, 1)


def sample_topk_triton(
    logits: torch.Tensor,
    positions: torch.Tensor,
    temperature: torch.Tensor,
    top_k: torch.Tensor,
    top_p: torch.Tensor,
    repetition_penalty: torch.Tensor,
    seed: torch.Tensor,
    seen: torch.Tensor,
    candidates: int,
    tokens: torch.Tensor | None = None,
    nonfinite_at: torch.Tensor | None = None,
) -> torch.Tensor:
    """sampler.sample(..., candidates=K) in two launches (three above GROUP / K chunks), for float
    logits (B, V) (bf16 and fp16 widened as they load: the float32 values decide) with unit stride
    and K as `supported` requires; per-row settings (B,).
    -> next tokens (B,) int64.
    tokens (B,) int64 given (sampler.sample_step, in place): `positions` are the rows' current
    positions, the token goes at positions + 1; the last launch writes it into tokens, advances
    positions and marks it in seen (B, V) bool, and tokens comes back.
    nonfinite_at (B,) int64 given too: the step's non-finite record in the same launches (no
    argmax): where a row's raw logits have no finite maximum (argmax.argmax_checked_ref) and
    nonfinite_at < 0, it takes the row's current position (before the advance)."""
    B, vocab = logits.shape
    step, check = tokens is not None, nonfinite_at is not None
    assert not step or tokens.stride(0) == positions.stride(0) == seen.stride(-1) == 1
    assert not check or (step and nonfinite_at.stride(0) == 1)
    parts = cdiv(vocab, chunk_size(vocab, candidates))
    plain = torch.empty((B, parts, 2), dtype=torch.int64, device=logits.device)  # stage 1's picks
    settings = (plain, temperature, top_k, top_p, seed, positions, int(step))
    keys, n_keys, flags = _candidate_keys(logits, candidates, seen, repetition_penalty, check, settings)
    best = torch.empty((B, 2, candidates), dtype=torch.int64, device=logits.device)  # scratch
    out = tokens if step else torch.empty(B, dtype=torch.int64, device=logits.device)
    # pointers this launch never touches get any tensor (flags and nonfinite_at when not checking)
    _sample_kernel[(B,)](
        keys, best, out, temperature, top_k, top_p, seed, positions, seen, flags if check else keys,
        nonfinite_at if check else positions, plain, n_keys, seen.stride(0), parts, K=candidates,
        BLOCK=next_pow2(n_keys), PARTS=max(16, next_pow2(parts)), STEP=int(step), CHECK=check,
        SKIP=skip_shared_digits(),
        num_warps=_warps(n_keys, "last"), **pdl(logits.device),
    )  # fmt: skip
    return out
