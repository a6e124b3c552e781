"""Which decode graph a step replays by position: a batch-1 step inside the spill window (past the
position where its row's cache outgrows L2, before the step's own attention plan gives every SM a
block to read) replays a graph captured with the spill plan (runtime/kernels/position_plan.py),
where that plan differs from the step's own. Both plans give the same tokens at every position
(only the K/V block size differs), so the choice is one of speed.
"""

from __future__ import annotations

import os

import torch

from runtime.kernels import attention_plan
from runtime.kernels._triton import cdiv
from runtime.kernels.attention_plan import NEVER
from runtime.kernels.position_plan import spill_positions

SPILL = "spill"  # the third element of a spill graph's key: (1, variant, SPILL)
NO_WINDOW = (NEVER, NEVER)


def spill_window(model, capacity: int, device: torch.device) -> tuple[int, int]:
    """[start, end): the positions whose batch-1 step replays a spill graph; NO_WINDOW where none is
    captured. RUNTIME_SPILL_GRAPHS: "auto" (the default) from the model's cache spill position
    (decoder.cache_spill_position) to card_full_position, where the spill plan's block differs; "0"
    never; "START" or "START:END" that window, for every model (the A/B and the tests)."""
    choice = os.environ.get("RUNTIME_SPILL_GRAPHS") or "auto"
    if choice == "0":
        return NO_WINDOW
    if choice != "auto":
        start, colon, end = choice.partition(":")
        if not start.isdigit() or (colon and not end.isdigit()):
            raise ValueError(f"RUNTIME_SPILL_GRAPHS={choice!r}: choose auto, 0 (never), START or START:END")
        return int(start), int(end) if end else capacity
    spec, elem = model.spec, model.dtype.itemsize
    own = attention_plan.split_plan(1, spec.kv_heads, capacity, spec.head_dim, elem, device)
    with spill_positions():
        spill = attention_plan.split_plan(1, spec.kv_heads, capacity, spec.head_dim, elem, device)
    start = model.cache_spill_position(device)
    end = min(capacity, card_full_position(own, spec.kv_heads, device))
    return (start, end) if spill != own and start < end else NO_WINDOW


def card_full_position(plan: tuple[int, int], kv_heads: int, device: torch.device) -> int:
    """The first position at which a batch-1 step under plan (BLOCK_N, P) gives every SM a block:
    kv_heads x live blocks >= SMs, the live blocks cdiv(position + 1, BLOCK_N) up to P; NEVER where
    its P splits never do. Qwen3 on an H100 (8 kv heads, 64-slot blocks, 132 SMs): 1024."""
    block_n, splits = plan
    blocks = cdiv(attention_plan.sm_count(device), kv_heads)
    return NEVER if splits < blocks else (blocks - 1) * block_n


def graph_key(bucket: int, variant: str, position: int, window: tuple[int, int]) -> tuple:
    """The key of the graph a step of `bucket` rows replays; position: the largest position the
    step's rows feed (host-known)."""
    start, end = window
    return (bucket, variant, SPILL) if bucket == 1 and start <= position < end else (bucket, variant)


def spill_keys(variants: tuple[str, ...], window: tuple[int, int]) -> list[tuple]:
    """The spill graphs to capture: one per variant at batch 1 where the window holds a position."""
    return [(1, v, SPILL) for v in variants] if window[0] < window[1] else []
