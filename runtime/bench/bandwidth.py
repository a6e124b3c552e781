"""Copy bandwidth of the card, measured in the same run as the benchmark: the denominator of mbu.

A large device-to-device copy timed with CUDA events; each copy counts its bytes twice (read +
write), which is what a decode step's weight streaming is compared against.
"""

from __future__ import annotations

import torch


def copy_bandwidth_gbs(device: torch.device, nbytes: int = 1 << 30, iters: int = 10) -> float | None:
    """GB/s (1e9 bytes) of dst.copy_(src) on `device`, median of `iters` timed copies; None off CUDA."""
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    nbytes = max(1 << 20, min(nbytes, free // 4))  # two buffers, well inside what is free
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    for _ in range(3):  # warm-up: first touches and clocks
        dst.copy_(src)
    pairs = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        pairs.append((start, end))
    torch.cuda.synchronize(device)
    elapsed = sorted(s.elapsed_time(e) for s, e in pairs)
    median_ms = elapsed[len(elapsed) // 2]
    del src, dst
    torch.cuda.empty_cache()
    return 2 * nbytes / (median_ms / 1e3) / 1e9
