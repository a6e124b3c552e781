"""Batch buckets: a batch of n rows runs the graph captured for the smallest bucket >= n."""

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
