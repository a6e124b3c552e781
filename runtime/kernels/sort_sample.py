"""The sampler's "sample" variant (any top-k, top-p alone, plain temperature) as Triton kernels
around one sort; the plain-torch reference and the contract are sampler.sample(candidates=0).

The reference spends ~275 us of a batch-1 step on an H200 in ~40 small torch kernels (softmax
over the whole row on one thread block, the noise hash as a dozen full-row elementwise ops, the
reductions), of which the sort is ~45-60 us. Here, over (B, V) logits:
  scale, grid (B, V / CHUNK): the penalised logits, divided by the temperature, go out as
    `scaled` (B, V) float32; per chunk: the raw logits' finite flag and the penalised maximum
    with its first index (the greedy pick);
  torch.sort of `scaled`, descending: the ranked values only;
  block mass, grid (B, V / BLOCK): each block's sum of exp(ranked - best) over the top-k ranks;
  cutoff, grid (B,): the reference's top_k_top_p_cutoff on the ranked values: the blocks' sums
    give the top-k mass and the block where the running mass reaches top_p, whose ranks are
    then counted one by one (the same work however wide the nucleus);
  pick, grid (B, V / CHUNK): per chunk, the first best of scaled + Gumbel noise among the values
    >= the cutoff;
  finish, grid (B,): the row's first best of the chunks, or the greedy pick at temperature 0;
    the token goes out, and in the decode step the row's position advances, the token is marked
    seen and a non-finite row is recorded (as topk_sample's last stage does).
The ranked mass is summed in another order than torch's softmax and cumsum, so where top_p falls
within float32 rounding of a prefix's mass the two may keep one token more or fewer.
"""

from __future__ import annotations

import torch

from runtime.kernels._triton import cdiv, jit, next_pow2, pdl, pdl_wait, tl
from runtime.kernels.sample_parts import (
    chunk_flag,
    first_best,
    gumbel,
    penalised,
    record_nonfinite,
    store_first_best,
)

CHUNK = 4096  # logits per scale / pick program
BLOCK = 1024  # ranked values per step of the cutoff's walk


@jit
def _scale_kernel(
    x_ptr, seen_ptr, penalty_ptr, temp_ptr, scaled_ptr, best_ptr, flags_ptr, vocab, x_stride,
    seen_stride, parts, CHUNK: tl.constexpr, PDL: tl.constexpr,
):  # fmt: skip
    # grid (B, parts). best (B, parts, 2) int64: the penalised maximum's float bits, its first index
    pdl_wait(PDL)
    row, part = tl.program_id(0).to(tl.int64), tl.program_id(1)
    cols = (part * CHUNK + tl.arange(0, CHUNK)).to(tl.int64)
    live = cols < vocab
    x = tl.load(x_ptr + row * x_stride + cols, mask=live, other=float("-inf")).to(tl.float32)
    tl.store(flags_ptr + row * parts + part, chunk_flag(x, live))
    x = penalised(x, seen_ptr, penalty_ptr, row, seen_stride, cols, live)
    scaled = x / tl.maximum(tl.load(temp_ptr + row), 1e-5)
    tl.store(scaled_ptr + row * vocab + cols, scaled, mask=live)
    x = tl.where(x != x, float("-inf"), x)  # the greedy pick skips NaN, as argmax.py's kernels
    store_first_best(best_ptr + (row * parts + part) * 2, x, cols, live)


@jit
def _top_k(top_k_ptr, row, vocab):
    """The row's k: its top-k setting, or the whole row where top-k is off (0) or wider."""
    top_k = tl.load(top_k_ptr + row)
    return tl.where((top_k > 0) & (top_k < vocab), top_k, vocab)


@jit
def _block_mass_kernel(ranked_ptr, top_k_ptr, sums_ptr, vocab, BLOCK: tl.constexpr, PDL: tl.constexpr):
    # grid (B, blocks): sums (B, blocks) float32, the block's sum of exp(ranked - the row's best)
    # over the ranks below k
    pdl_wait(PDL)
    row, block = tl.program_id(0).to(tl.int64), tl.program_id(1)
    ranked = ranked_ptr + row * vocab
    r = block * BLOCK + tl.arange(0, BLOCK)
    live = r < _top_k(top_k_ptr, row, vocab)
    v = tl.load(ranked + r, mask=live, other=float("-inf"))
    e = tl.where(live, tl.exp(v - tl.load(ranked)), 0.0)
    tl.store(sums_ptr + row * tl.num_programs(1) + block, tl.sum(e, axis=0))


@jit
def _cutoff_kernel(
    ranked_ptr, sums_ptr, top_k_ptr, top_p_ptr, cutoff_ptr, vocab, blocks,
    BLOCKS: tl.constexpr, BLOCK: tl.constexpr, PDL: tl.constexpr,
):  # fmt: skip
    # grid (B,): cutoff (B,) float32, the value of the n_keep-th ranked logit
    pdl_wait(PDL)
    row = tl.program_id(0).to(tl.int64)
    ranked = ranked_ptr + row * vocab
    k = _top_k(top_k_ptr, row, vocab)
    p = tl.load(top_p_ptr + row)
    n_keep = k
    if p < 1:
        b = tl.arange(0, BLOCKS)
        sums = tl.load(sums_ptr + row * blocks + b, mask=b < blocks, other=0.0)
        total = tl.sum(sums, axis=0)
        ends = tl.cumsum(sums, axis=0) / total  # the mass up to each block's end
        # every rank of a block whose end mass is below p has its mass before it below p too;
        # the block where the mass reaches p is walked rank by rank
        crossing = tl.sum(((b < blocks) & (ends < p)).to(tl.int32), axis=0)
        mass = tl.sum(tl.where(b < crossing, sums, 0.0), axis=0) / total
        r = crossing * BLOCK + tl.arange(0, BLOCK)
        live = r < k
        v = tl.load(ranked + r, mask=live, other=float("-inf"))
        probs = tl.where(live, tl.exp(v - tl.load(ranked)) / total, 0.0)
        before = mass + tl.cumsum(probs, axis=0) - probs
        count = crossing.to(tl.int64) * BLOCK + tl.sum((live & (before < p)).to(tl.int64), axis=0)
        n_keep = tl.minimum(count, k)
    n_keep = tl.maximum(n_keep, 1)
    tl.store(cutoff_ptr + row, tl.load(ranked + n_keep - 1))


@jit
def _pick_kernel(
    scaled_ptr, cutoff_ptr, seed_ptr, pos_ptr, part_ptr, vocab, parts,
    CHUNK: tl.constexpr, STEP: tl.constexpr, PDL: tl.constexpr,
):  # fmt: skip
    # grid (B, parts): part (B, parts, 2) int64: the float bits of the chunk's best kept
    # scaled + noise, its first index
    pdl_wait(PDL)
    row, part = tl.program_id(0).to(tl.int64), tl.program_id(1)
    cols = (part * CHUNK + tl.arange(0, CHUNK)).to(tl.int64)
    live = cols < vocab
    scaled = tl.load(scaled_ptr + row * vocab + cols, mask=live, other=float("-inf"))
    position = tl.load(pos_ptr + row) + STEP  # where the token goes: keys the noise
    noise = gumbel(tl.load(seed_ptr + row), position, cols)
    kept = tl.where(live & (scaled >= tl.load(cutoff_ptr + row)), scaled + noise, float("-inf"))
    store_first_best(part_ptr + (row * parts + part) * 2, kept, cols, live)


@jit
def _finish_kernel(
    part_ptr, best_ptr, flags_ptr, temp_ptr, out_ptr, pos_ptr, seen_ptr, nonfinite_ptr, parts,
    seen_stride, PARTS: tl.constexpr, STEP: tl.constexpr, CHECK: tl.constexpr, PDL: tl.constexpr,
):  # fmt: skip
    # grid (B,): as topk_sample's last stage after its pick
    pdl_wait(PDL)
    row = tl.program_id(0).to(tl.int64)
    sampled = first_best(part_ptr, row, parts, PARTS)
    greedy = first_best(best_ptr, row, parts, PARTS)
    token = tl.where(tl.load(temp_ptr + row) > 0, sampled, greedy)
    tl.store(out_ptr + row, token)
    if STEP:
        position = tl.load(pos_ptr + row)
        if CHECK:
            record_nonfinite(flags_ptr, nonfinite_ptr, row, parts, position, PARTS)
        tl.store(pos_ptr + row, position + 1)
        tl.store(seen_ptr + row * seen_stride + token, 1)


def supported(x: torch.Tensor) -> bool:
    """Float rows (bf16 and fp16 widened as they load) of unit stride."""
    return x.dtype in (torch.float32, torch.bfloat16, torch.float16) and x.stride(-1) == 1


def sample_sorted_triton(
    logits: torch.Tensor,
    positions: torch.Tensor,
    temperature: torch.Tensor,
    top_k: torch.Tensor,
    top_p: torch.Tensor,
    repetition_penalty: torch.Tensor,
    seed: torch.Tensor,
    seen: torch.Tensor,
    tokens: torch.Tensor | None = None,
    nonfinite_at: torch.Tensor | None = None,
) -> torch.Tensor:
    """sampler.sample(..., candidates=0) for logits (B, V) as `supported` requires; per-row
    settings (B,). -> next tokens (B,) int64.
    tokens (B,) int64 given (sampler.sample_step, in place): `positions` are the rows' current
    positions, the token goes at positions + 1; the last launch writes it into tokens, advances
    positions and marks it in seen (B, V) bool, and tokens comes back. nonfinite_at (B,) int64
    given too: the step's non-finite record, as sample_topk_triton keeps it."""
    B, vocab = logits.shape
    step, check = tokens is not None, nonfinite_at is not None
    assert not step or tokens.stride(0) == positions.stride(0) == seen.stride(-1) == 1
    assert not check or (step and nonfinite_at.stride(0) == 1)
    dev, parts = logits.device, cdiv(vocab, CHUNK)
    scaled = torch.empty((B, vocab), dtype=torch.float32, device=dev)
    best = torch.empty((B, parts, 2), dtype=torch.int64, device=dev)
    flags = torch.empty((B, parts), dtype=torch.int32, device=dev)
    _scale_kernel[(B, parts)](
        logits, seen, repetition_penalty, temperature, scaled, best, flags, vocab, logits.stride(0),
        seen.stride(0), parts, CHUNK=CHUNK, num_warps=8, **pdl(dev),
    )  # fmt: skip
    ranked = torch.sort(scaled, dim=-1, descending=True).values
    blocks = cdiv(vocab, BLOCK)
    sums = torch.empty((B, blocks), dtype=torch.float32, device=dev)
    _block_mass_kernel[(B, blocks)](ranked, top_k, sums, vocab, BLOCK=BLOCK, num_warps=4, **pdl(dev))
    cutoff = torch.empty(B, dtype=torch.float32, device=dev)
    _cutoff_kernel[(B,)](
        ranked, sums, top_k, top_p, cutoff, vocab, blocks,
        BLOCKS=max(16, next_pow2(blocks)), BLOCK=BLOCK, num_warps=4, **pdl(dev),
    )  # fmt: skip
    PARTS = max(16, next_pow2(parts))
    picks = torch.empty((B, parts, 2), dtype=torch.int64, device=dev)
    _pick_kernel[(B, parts)](
        scaled,
        cutoff,
        seed,
        positions,
        picks,
        vocab,
        parts,
        CHUNK=CHUNK,
        STEP=int(step),
        num_warps=8,
        **pdl(dev),
    )
    out = tokens if step else torch.empty(B, dtype=torch.int64, device=dev)
    # pointers this launch never touches get any tensor (nonfinite_at when not checking)
    _finish_kernel[(B,)](
        picks, best, flags, temperature, out, positions, seen, nonfinite_at if check else positions, parts,
        seen.stride(0), PARTS=PARTS, STEP=int(step), CHECK=check, num_warps=1, **pdl(dev),
    )  # fmt: skip
    return out
