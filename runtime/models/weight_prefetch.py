"""Which weights each layer's attention kernel pulls into L2 during a decode step (the kernel side:
runtime/kernels/l2_prefetch.py).

The slices follow the order in which the GEMVs after attention read them: the o projection's
weight, then the first rows of gate and of up (the gated GEMV's programs read gate row o with up
row I + o, low o first). RUNTIME_L2_PREFETCH_MB sets the bytes per layer (read when the step is
captured; 0: off), at most half the card's L2.
"""

from __future__ import annotations

import functools
import os

import torch

from runtime.kernels.l2_prefetch import can_prefetch

DEFAULT_MB = 0


@functools.lru_cache(maxsize=8)
def _l2_bytes(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).L2_cache_size


def budget_bytes(device: torch.device) -> int:
    """Bytes to prefetch per layer: RUNTIME_L2_PREFETCH_MB (default DEFAULT_MB), capped at half the L2."""
    mb = float(os.environ.get("RUNTIME_L2_PREFETCH_MB") or DEFAULT_MB)
    if mb < 0:
        raise ValueError(f"RUNTIME_L2_PREFETCH_MB={mb}: give megabytes >= 0 (0 turns the prefetch off)")
    want = int(mb * (1 << 20))
    return min(want, _l2_bytes(device) // 2) if device.type == "cuda" else want


def layer_regions(o_weight: torch.Tensor, gate_up_weight: torch.Tensor, budget: int) -> list[torch.Tensor]:
    """Contiguous weight slices to prefetch, in the order the GEMVs after attention read them, up to
    `budget` bytes: o_proj (N, K) rows first, then gate rows [0, r) and up rows [I, I + r) of
    gate_up (2I, K)."""
    regions = []
    row = o_weight.shape[1] * o_weight.element_size()
    o_rows = min(o_weight.shape[0], budget // row)
    if o_rows:
        regions.append(o_weight[:o_rows])
    budget -= o_rows * row
    inter = gate_up_weight.shape[0] // 2
    row = gate_up_weight.shape[1] * gate_up_weight.element_size()
    r = min(inter, budget // (2 * row))
    if r:
        regions += [gate_up_weight[:r], gate_up_weight[inter : inter + r]]
    return regions


def decode_regions(model) -> list[list[torch.Tensor]]:
    """Per layer, the slices its decode attention prefetches: none off CUDA, under the interpreter
    or with the setting at 0."""
    weight = model.embed.weight
    budget = budget_bytes(weight.device) if can_prefetch(weight) else 0
    return [
        layer_regions(layer.attn.o_proj.weight, layer.mlp.gate_up.weight, budget) if budget else []
        for layer in model.layers
    ]
