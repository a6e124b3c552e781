"""The attention plan of a long-position graph. Past the position where a row's cache outgrows L2
(attention_plan.l2_spill_position) each K/V block comes from DRAM; there, while the live blocks are
fewer than the split programs (33 per kv head on an H100 at batch 1), halving the blocks puts twice
the programs to work. H100, Qwen3's batch-1 step, 32-slot blocks against 64 (16 KB tiles of 256-byte
rows), same process, us per step: near position 600 -21 / -30 (topk -23 / -21), near 1900 +1 / -4
/ +10, near 256 (below the spill) +5 / +7; Llama's 128-byte rows (8 KB tiles) near 1900 +25 / +7 /
+10, so its blocks stay (notes/kernels.md). A captured graph keeps its grid, so the runner captures
a second batch-1 graph per variant under `long_positions()` and replays it past that position
(runtime/engine/long_graphs.py).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator

LONG_BLOCK_N = 32  # K/V slots per block in a long-position graph ...
LONG_ROW_BYTES = 256  # ... for K/V rows of this many bytes (D = 128 in 16 bits), the ones measured

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


def inside_long_positions() -> bool:
    return _long.get()


def long_block_n(row_bytes: int) -> int | None:
    """K/V slots per block for a batch-1 step inside `long_positions()` whose K/V rows are
    `row_bytes` wide, else None (the plan's own). RUNTIME_ATTN_LONG_BLOCK_N (an A/B knob) gives
    every row width that many."""
    if not inside_long_positions():
        return None
    forced = os.environ.get("RUNTIME_ATTN_LONG_BLOCK_N")
    if forced:
        return int(forced)
    return LONG_BLOCK_N if row_bytes == LONG_ROW_BYTES else None
