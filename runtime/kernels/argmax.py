"""Greedy pick with the non-finite check: plain-torch reference and a two-stage Triton kernel.

argmax_checked(logits (B, V) float) -> (ids (B,) int64, bad (B,) bool): the first index of each
row's maximum (torch.argmax's tie rule) and whether the row's maximum is not finite (a NaN
anywhere, a +inf, or nothing but -inf), which is what the decode step reports as non-finite.
The reference is two full-vocabulary reductions; on an H100 they cost 14 to 40 us per step at
batch 1 (one thread block walks a 128k-262k row). The kernel splits the row over CHUNK-wide
programs (stage 1: partial max, its first index, a NaN flag) and merges the partials in one
program per row (stage 2): two launches, each reading its inputs once.

argmax_step_triton runs the decode step's tail after the LM head in those same two launches: the
merge also records a non-finite row's position on the runner's fixed buffers and, in the greedy
step, writes the token, advances the position and marks the token seen, where the step used to
spend seven small torch kernels on it. The reference is runner.step_tail_ref. The record alone
(two launches) serves the steps whose sampler cannot record: the "sample" variant, and "topk"
where the fused sampler does not run; the fused topk sampler records in its own launches.
"""

from __future__ import annotations

import torch

from runtime.kernels._triton import cdiv, jit, next_pow2, pdl, pdl_wait, tl

CHUNK = 4096  # logits per stage-1 program: 32 programs for a 128k vocabulary, 64 for 262k
# larger than any index: the neutral element of the "first index" minimum (a constexpr, so kernels may read it)
_BIG = tl.constexpr(2**62) if tl is not None else 2**62


def argmax_checked_ref(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (B, V) -> (argmax (B,) int64, ~isfinite(max) (B,) bool)."""
    return logits.argmax(-1), ~torch.isfinite(logits.amax(-1))


@jit
def _partial_kernel(
    x_ptr, max_ptr, idx_ptr, nan_ptr, vocab, x_stride, parts, CHUNK: tl.constexpr, PDL: tl.constexpr
):
    # grid (B, parts): program (b, p) reduces logits [p * CHUNK, (p + 1) * CHUNK) of row b
    pdl_wait(PDL)
    row, part = tl.program_id(0).to(tl.int64), tl.program_id(1)
    cols = part * CHUNK + tl.arange(0, CHUNK)
    x = tl.load(x_ptr + row * x_stride + cols, mask=cols < vocab, other=float("-inf")).to(tl.float32)
    is_nan = x != x
    x = tl.where(is_nan, float("-inf"), x)
    best = tl.max(x, axis=0)
    first = tl.min(tl.where((x == best) & (cols < vocab), cols.to(tl.int64), _BIG), axis=0)
    out = row * parts + part
    tl.store(max_ptr + out, best)
    tl.store(idx_ptr + out, first)
    tl.store(nan_ptr + out, tl.max(is_nan.to(tl.int32), axis=0))


@jit
def _merge_kernel(
    max_ptr, idx_ptr, nan_ptr, ids_ptr, bad_ptr, pos_ptr, nonfinite_ptr, seen_ptr, parts, seen_stride,
    BLOCK: tl.constexpr, STEP: tl.constexpr, PDL: tl.constexpr,
):  # fmt: skip
    # grid (B,): the partials of one row; parts are in index order, so the smallest index among
    # the parts holding the maximum is the row's first maximum
    pdl_wait(PDL)
    row = tl.program_id(0).to(tl.int64)
    p = tl.arange(0, BLOCK)
    live = p < parts
    best_parts = tl.load(max_ptr + row * parts + p, mask=live, other=float("-inf"))
    first_parts = tl.load(idx_ptr + row * parts + p, mask=live, other=_BIG)
    nan = tl.max(tl.load(nan_ptr + row * parts + p, mask=live, other=0), axis=0)
    best = tl.max(best_parts, axis=0)
    first = tl.min(tl.where(best_parts == best, first_parts, _BIG), axis=0)
    # a row of -inf only: torch.argmax answers 0, and so does this (part 0 holds -inf at index 0)
    bad = (nan > 0) | (best == float("inf")) | (best == float("-inf"))
    if STEP == 0:  # argmax_checked: ids and bad out
        tl.store(ids_ptr + row, first)
        tl.store(bad_ptr + row, bad)
    else:  # the step's tail: the position these logits are for, recorded once per row (the first)
        position = tl.load(pos_ptr + row)
        recorded = tl.load(nonfinite_ptr + row)
        tl.store(nonfinite_ptr + row, position, mask=bad & (recorded < 0))
        if STEP == 2:  # greedy: ids_ptr is the tokens buffer
            tl.store(ids_ptr + row, first)
            tl.store(pos_ptr + row, position + 1)
            tl.store(seen_ptr + row * seen_stride + first, 1)


def _partials(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Stage 1 over x (B, V), unit stride -> (max, its first index, a NaN flag), each (B, parts)."""
    B, vocab = x.shape
    parts = cdiv(vocab, CHUNK)
    maxes = torch.empty((B, parts), dtype=torch.float32, device=x.device)
    firsts = torch.empty((B, parts), dtype=torch.int64, device=x.device)
    nans = torch.empty((B, parts), dtype=torch.int32, device=x.device)
    _partial_kernel[(B, parts)](
        x, maxes, firsts, nans, vocab, x.stride(0), parts, CHUNK=CHUNK, num_warps=8, **pdl(x.device)
    )
    return maxes, firsts, nans, parts


def argmax_checked_triton(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as argmax_checked_ref; two kernels. NaN rows: bad is set and the id is the
    first maximum of the row's other values (the reference answers the NaN's index)."""
    B = logits.shape[0]
    x = logits if logits.stride(-1) == 1 else logits.contiguous()
    maxes, firsts, nans, parts = _partials(x)
    ids = torch.empty(B, dtype=torch.int64, device=x.device)
    bad = torch.empty(B, dtype=torch.bool, device=x.device)
    _merge_kernel[(B,)](
        maxes, firsts, nans, ids, bad, ids, ids, bad, parts, 0,
        BLOCK=max(16, next_pow2(parts)), STEP=0, num_warps=1, **pdl(x.device),
    )  # fmt: skip
    return ids, bad


def argmax_step_triton(
    logits: torch.Tensor,
    positions: torch.Tensor,
    nonfinite_at: torch.Tensor,
    tokens: torch.Tensor | None = None,
    seen: torch.Tensor | None = None,
) -> None:
    """The step's tail in argmax_checked's two launches, in place.  # graph: safe
    logits (B, V); positions (B,) int64: the position these logits are for; nonfinite_at (B,)
    int64 takes it where the row's maximum is not finite and nothing is recorded yet (< 0).
    Greedy step (tokens (B,) int64 and seen (B, V) bool given): the argmax (NaN rows: as in
    argmax_checked_triton) becomes the row's token and is marked seen; positions advance by one.
    positions, nonfinite_at and tokens need unit stride (slices of the runner's buffers)."""
    B = logits.shape[0]
    x = logits if logits.stride(-1) == 1 else logits.contiguous()
    greedy = tokens is not None
    assert positions.stride(0) == nonfinite_at.stride(0) == 1 and (not greedy or tokens.stride(0) == 1)
    assert not greedy or seen.stride(-1) == 1
    maxes, firsts, nans, parts = _partials(x)
    # pointers this STEP never touches get any tensor (ids and bad; tokens and seen when checking only)
    _merge_kernel[(B,)](
        maxes, firsts, nans, tokens if greedy else positions, nans, positions, nonfinite_at,
        seen if greedy else nans, parts, seen.stride(0) if greedy else 0,
        BLOCK=max(16, next_pow2(parts)), STEP=2 if greedy else 1, num_warps=1, **pdl(x.device),
    )  # fmt: skip
