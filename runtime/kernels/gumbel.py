"""The sampler's noise inside Triton kernels, and the first best over a row's chunks that picks by
it; the reference is sampler.gumbel_noise (a counter-based hash of seed, position and token id, so
any subset of a row sees the numbers the whole vocabulary would)."""

from __future__ import annotations

from runtime.kernels._triton import jit, tl

_LOW = tl.constexpr(0xFFFFFFFF) if tl is not None else 0xFFFFFFFF
# larger than any index: the neutral element of a "first index" minimum
_BIG = tl.constexpr(2**62) if tl is not None else 2**62


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
