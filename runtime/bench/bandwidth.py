"""Copy bandwidth of the card, measured in the same run as the benchmark: the denominator of mbu.

A large device-to-device copy timed with CUDA events; each copy counts its bytes twice (read +
write), which is what a decode step's weight streaming is compared against.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch


def copy_bandwidth_gbs(device: torch.device, nbytes: int = 1 << 30, iters: int = 10) -> float | None:
    """GB/s (1e9 bytes) of dst.copy_(src) on `device`, median of `iters` timed copies; None off CUDA."""
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    nbytes = max(1 << 20, min(nbytes, free // 4))  # two buffers, well inside what is free
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    copy = functools.partial(dst.copy_, src)
    ms = median_ms(copy, iters)
    del src, dst, copy  # freed before the cache is emptied
    torch.cuda.empty_cache()
    return 2 * nbytes / (ms / 1e3) / 1e9


def median_ms(fn: Callable[[], object], iters: int, warmup: int = 3, wait_each: bool = False) -> float:
    """Median device milliseconds of fn() over `iters` launches timed with CUDA events, after `warmup`
    untimed ones (first touches and clocks); one wait at the end, on the last event (the launches
    share a stream, so every earlier event has completed too), or with `wait_each` a wait after
    every launch, so each is timed alone and its launch latency shows."""
    for _ in range(warmup):
        fn()
    pairs = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        if wait_each:
            end.synchronize()
        pairs.append((start, end))
    pairs[-1][1].synchronize()
    elapsed = sorted(s.elapsed_time(e) for s, e in pairs)
    return elapsed[len(elapsed) // 2]
