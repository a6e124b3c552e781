"""Device time per kernel name while a callable runs, from torch.profiler (the GPU scripts' tables)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile


def kernel_times(fn: Callable[[], None]) -> dict[str, tuple[float, int]]:
    """Runs fn once under the profiler (then synchronises) -> kernel name -> (device us, launches)."""
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    us, calls = defaultdict(float), defaultdict(int)
    for ev in prof.events():
        if ev.device_type == torch.autograd.DeviceType.CUDA and ev.device_time > 0:
            us[ev.name] += ev.device_time
            calls[ev.name] += 1
    return {name: (us[name], calls[name]) for name in us}
