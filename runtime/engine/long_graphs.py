"""Which decode graph a step replays by position: batch-1 steps past the position where the row's
cache outgrows L2 replay graphs captured with the long-position attention plan
(runtime/kernels/position_plan.py), where that plan differs from the step's own. Both plans give the
same tokens at every position (only the K/V block size differs), so the choice is one of speed.
"""

from __future__ import annotations

import os

import torch

from runtime.kernels.attention_plan import NEVER, split_plan
from runtime.kernels.position_plan import long_positions

LONG = "long"  # the third element of a long-position graph's key: (1, variant, LONG)


def long_graphs_from(model, capacity: int, device: torch.device) -> int:
    """The first position whose batch-1 step replays a long-position graph; NEVER where none is
    captured. RUNTIME_LONG_GRAPHS: "auto" (the default) the model's cache spill position
    (decoder.cache_spill_position) where the capacity passes it and the long plan's block differs;
    "0" never; a position n >= 1: from n (the A/B and the tests)."""
    choice = os.environ.get("RUNTIME_LONG_GRAPHS") or "auto"
    if choice == "0":
        return NEVER
    if choice.isdigit():
        return int(choice)
    if choice != "auto":
        raise ValueError(f"RUNTIME_LONG_GRAPHS={choice!r}: choose auto, 0 (never) or a position")
    spec, elem = model.spec, model.dtype.itemsize
    short = split_plan(1, spec.kv_heads, capacity, spec.head_dim, elem, device)
    with long_positions():
        long = split_plan(1, spec.kv_heads, capacity, spec.head_dim, elem, device)
    spill = model.cache_spill_position(device)
    return spill if long != short and spill < capacity else NEVER


def graph_key(bucket: int, variant: str, position: int, long_from: int) -> tuple:
    """The key of the graph a step of `bucket` rows replays; position: the largest position the
    step's rows feed (host-known)."""
    return (bucket, variant, LONG) if bucket == 1 and position >= long_from else (bucket, variant)


def long_keys(variants: tuple[str, ...], capacity: int, long_from: int) -> list[tuple]:
    """The long-position graphs to capture: one per variant at batch 1 where a position reaches
    long_from."""
    return [(1, v, LONG) for v in variants] if long_from < capacity else []
