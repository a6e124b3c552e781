"""The attention plan of a long-position graph: past the position where a row's cache outgrows L2
(attention_plan.l2_spill_position) each K/V block comes from DRAM, and smaller blocks win there while
they lose below it, where the cache sits in L2 (H100, Qwen3's batch-1 step, 32-slot blocks against
64: -20 / -7 us near position 1900, +5 / +7 near 256; notes/kernels.md). A captured graph keeps its
grid, so the runner captures a second batch-1 graph per variant under `long_positions()` and replays
it past that position (runtime/engine/long_graphs.py).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator

LONG_BLOCK_N = 32  # K/V slots per block in a long-position graph

_long = contextvars.ContextVar("long_positions", default=False)


@contextlib.contextmanager
def long_positions() -> Iterator[None]:
    """Inside: split_plan gives batch-1 steps the long-position block (what is launched, recorded or
    captured here)."""
    token = _long.set(True)
    try:
        yield
    finally:
        _long.reset(token)


def long_block_n() -> int | None:
    """K/V slots per block for a batch-1 step inside `long_positions()`, else None (the plan's own).
    RUNTIME_ATTN_LONG_BLOCK_N overrides LONG_BLOCK_N (an A/B knob)."""
    if not _long.get():
        return None
    return int(os.environ.get("RUNTIME_ATTN_LONG_BLOCK_N") or LONG_BLOCK_N)
