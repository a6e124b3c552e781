"""The attention plan of a spill graph: a batch-1 step past the position where its row's cache
outgrows L2 (attention_plan.l2_spill_position) reads every K/V block from DRAM, and while the
step's own plan leaves SMs without a block to read (kv heads x live blocks < SMs), halving the
blocks puts twice the programs to work. H100, Qwen3's batch-1 step (8 kv heads, 64-slot blocks of
256-byte rows, spill at 458, the card full from 1024), 32-slot blocks against 64, same process, us
per step: near 470 -19 / -10, 600 -21 / -30 / -17 / -29, 800 -17 / -22; past the window near 1100
-11 / +5 / +5 / +6, 1400 -3 / +2, 1900 +1 / -4 / +10 / +3 / -7; below it near 256 +5 / +7; 16-slot
blocks +31..+61 over 32; Llama's 128-byte rows near 1900 +25 / +7 / +10 (notes/kernels.md). A
captured graph keeps its grid, so the runner captures a second batch-1 graph per variant under
`spill_positions()` and replays it inside that window (runtime/engine/spill_graphs.py).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator

SPILL_BLOCK_N = 32  # K/V slots per block in a spill graph ...
SPILL_ROW_BYTES = 256  # ... for K/V rows of this many bytes (D = 128 in 16 bits), the ones measured

_inside = contextvars.ContextVar("spill_positions", default=False)


@contextlib.contextmanager
def spill_positions() -> Iterator[None]:
    """Inside: split_plan gives batch-1 steps the spill graph's block (what is launched, recorded or
    captured here)."""
    token = _inside.set(True)
    try:
        yield
    finally:
        _inside.reset(token)


def inside_spill_positions() -> bool:
    return _inside.get()


def spill_block_n(row_bytes: int) -> int | None:
    """K/V slots per block for a batch-1 step inside `spill_positions()` whose K/V rows are
    `row_bytes` wide, else None (the plan's own). RUNTIME_ATTN_SPILL_BLOCK_N (an A/B knob) gives
    every row width that many."""
    if not inside_spill_positions():
        return None
    forced = os.environ.get("RUNTIME_ATTN_SPILL_BLOCK_N")
    if forced:
        return int(forced)
    return SPILL_BLOCK_N if row_bytes == SPILL_ROW_BYTES else None
