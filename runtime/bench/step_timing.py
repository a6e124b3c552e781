"""Device time of a decode step, two ways (the GPU scripts' step columns):
isolated  each call between two CUDA events and waited for: the launch latency shows;
queued    calls back to back between two events, the host far ahead: what a decode loop sees.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from runtime.bench.bandwidth import median_ms


def isolated_ms(step: Callable[[], object], steps: int) -> float:
    """Median device ms of step() over `steps` calls, each timed alone and waited for."""
    return median_ms(step, steps, warmup=0, wait_each=True)


def queued_ms(step: Callable[[], object], steps: int, warmup: int = 3) -> float:
    """Mean device ms per call of `steps` calls queued back to back, after `warmup` untimed ones
    (so the host is ahead when timing starts)."""
    for _ in range(warmup):
        step()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(steps):
        step()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / steps
