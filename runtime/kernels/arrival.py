"""Arrival counters: int32 zeros at a fixed address, one buffer per device, shared by every kernel
that lets the last of a group of programs finish the group's work (attention's in-kernel merge,
the batch-rows kernel's split-K sum). Each launch counts up and the last program resets its
counter, so the buffer is all zeros between launches; launches on one stream never overlap
(under PDL a kernel touches the counters only after waiting for the previous one).
"""

from __future__ import annotations

import torch

_COUNTERS: dict[torch.device, torch.Tensor] = {}
_MIN = 1 << 16  # enough for any group count the decoder launches, so the buffer never has to grow


def arrival_counters(n: int, device: torch.device) -> torch.Tensor:
    """At least n int32 zeros on device. Made on the first launch (the warm-up before graph capture);
    growing it later would free the buffer a captured graph points at, hence the generous size."""
    counters = _COUNTERS.get(device)
    if counters is None or counters.numel() < n:
        counters = _COUNTERS[device] = torch.zeros(max(n, _MIN), dtype=torch.int32, device=device)
    return counters
