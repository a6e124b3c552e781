"""Pieces the two fused samplers (topk_sample.py, sort_sample.py) share inside their kernels: the
repetition penalty, the raw logits' finite flag per chunk and the step's non-finite record made of
them, the noise (sampler.gumbel_noise: a counter-based hash of seed, position and token id, so any
subset of a row sees the numbers the whole vocabulary would), and a chunk's first best with the
merge of a row's chunks."""

from __future__ import annotations

from runtime.kernels._triton import jit, tl

_LOW = tl.constexpr(0xFFFFFFFF) if tl is not None else 0xFFFFFFFF
# larger than any index: the neutral element of a "first index" minimum
_BIG = tl.constexpr(2**62) if tl is not None else 2**62


@jit
def penalised(x, seen_ptr, penalty_ptr, row, seen_stride, cols, live):
    """sampler.apply_repetition_penalty on a chunk of row `row`: seen logits divided (if > 0) or
    multiplied by the row's penalty."""
    seen = tl.load(seen_ptr + row * seen_stride + cols, mask=live, other=0) != 0
    p = tl.load(penalty_ptr + row)
    return tl.where(seen, tl.where(x > 0, x / p, x * p), x)


@jit
def chunk_flag(x, live):
    """A chunk's flag of its raw logits, for record_nonfinite: 2 a NaN or +inf, else 1 a value
    above -inf, else 0."""
    odd = (x != x) | (x == float("inf"))
    return tl.max(tl.where(odd, 2, tl.where(live & (x > float("-inf")), 1, 0)), axis=0)


@jit
def record_nonfinite(flags_ptr, nonfinite_ptr, row, parts, position, PARTS: tl.constexpr):
    """The step's non-finite record (runner.step_tail_ref's) from the row's chunk flags (B, parts):
    a bad row (a NaN or +inf anywhere, or nothing above -inf: argmax_checked_ref's) takes
    `position` where nothing is recorded yet (< 0), so the first bad position stays."""
    c = tl.arange(0, PARTS)
    flag = tl.max(tl.load(flags_ptr + row * parts + c, mask=c < parts, other=0), axis=0)
    recorded = tl.load(nonfinite_ptr + row)
    tl.store(nonfinite_ptr + row, position, mask=(flag != 1) & (recorded < 0))


@jit
def _mix(h):
    """sampler._mix: a 32-bit avalanche in int64 arithmetic."""
    h = h ^ (h >> 16)
    h = (h * 0x7FEB352D) & _LOW
    h = h ^ (h >> 15)
    h = (h * 0x2C1B3C6D) & _LOW
    return h ^ (h >> 16)


@jit
def gumbel(seed, position, ids):
    """sampler.gumbel_noise for one row: int64 seed and position, int64 ids -> fp32 noise."""
    row = _mix((seed * 0x27D4EB2F + position * 0x165667B1) & _LOW)
    h = _mix((ids * 0x3C6EF372 + row) & _LOW)
    h = _mix(h ^ row)
    u = ((h >> 8).to(tl.float32) + 0.5) * (1.0 / 16777216.0)
    return -tl.log(-tl.log(u))


@jit
def store_first_best(ptr, values, cols, live):
    """A chunk's first best of `values` (its live columns) as the pair (float bits as int64,
    column) at ptr, for first_best to merge."""
    best = tl.max(values, axis=0)
    tl.store(ptr, best.to(tl.int32, bitcast=True).to(tl.int64))
    tl.store(ptr + 1, tl.min(tl.where((values == best) & live, cols, _BIG), axis=0))


@jit
def first_best(ptr, row, parts, PARTS: tl.constexpr):
    """The first column of a row's best over its chunks' pairs (B, parts, 2) at ptr: chunks lie
    in column order, so the smallest column among the best chunks is the row's first best."""
    c = tl.arange(0, PARTS)
    at = (row * parts + c) * 2
    bits = tl.load(ptr + at, mask=c < parts, other=0).to(tl.int32)
    value = tl.where(c < parts, bits.to(tl.float32, bitcast=True), float("-inf"))
    first = tl.load(ptr + at + 1, mask=c < parts, other=_BIG)
    best = tl.max(value, axis=0)
    return tl.min(tl.where(value == best, first, _BIG), axis=0)
