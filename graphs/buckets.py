"""Buckets: a batch of n rows runs the decode graph captured for the smallest batch bucket >= n,
and a prompt of n tokens the prefill graph of the smallest length bucket >= n (padded)."""

from __future__ import annotations


def make_buckets(max_batch: int) -> list[int]:
    """1, 2, 4, 8, ... up to max_batch (included even when it is not a power of two)."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    buckets, b = [], 1
    while b < max_batch:
        buckets.append(b)
        b *= 2
    return [*buckets, max_batch]


def bucket_for(n: int, buckets: list[int]) -> int:
    for b in buckets:
        if b >= n:
            return b
    raise ValueError(f"batch of {n} exceeds the largest bucket ({buckets[-1]}); raise max_batch")


def prefill_lengths(capacity: int, smallest: int = 16) -> list[int]:
    """16, 24, 32, 48, 64, 96, ... (powers of two and the midpoints between them, so a padded prompt
    is less than 1.5x its length, past 16) up to capacity (included)."""
    lengths, b = [], smallest
    while b < capacity:
        lengths.extend(x for x in (b, b * 3 // 2) if x < capacity)
        b *= 2
    return [*lengths, capacity]
