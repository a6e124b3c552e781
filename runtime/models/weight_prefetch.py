"""Which weights a decode step pulls into L2 during each layer's attention, and the side stream that
does it (the kernel: runtime/kernels/l2_prefetch.py).

After a layer's qkv projection, the attention kernels move little data for a few microseconds. A
side stream forked there prefetches, in the order the GEMVs after attention read them, the o
projection's weight, then the first rows of gate and of up (the gated GEMV's programs read gate row
o with up row I + o, low o first). The step joins the side stream once, after its last layer, so no
kernel of the main chain waits for a prefetch. RUNTIME_L2_PREFETCH_MB sets the bytes per layer
(read when the step is captured; 0, the default: off); at most half the card's L2. Off by default:
on the H100 every model's batch-1 step got slower with it (+20..+113 us), only Gemma's batch 16
faster (notes/kernels.md).
"""

from __future__ import annotations

import functools
import os

import torch

from runtime.kernels.l2_prefetch import THREADS, can_prefetch, prefetch_l2

DEFAULT_MB = 0  # off: on the H100 the side stream cost more than it saved (notes/kernels.md)


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


class WeightPrefetch:
    """One per model and device: the side stream, an event per layer, and a sink the kernel never writes."""

    def __init__(self, layers: int, device: torch.device):
        self.stream = torch.cuda.Stream(device)
        self.events = [torch.cuda.Event() for _ in range(layers)]
        self.sink = torch.zeros(THREADS, dtype=torch.int32, device=device)
        self.forked = False

    def after_qkv(self, i: int, layer) -> None:
        """Fork the side stream after layer i's qkv projection (just enqueued) and prefetch."""
        budget = budget_bytes(self.sink.device)
        regions = layer_regions(layer.attn.o_proj.weight, layer.mlp.gate_up.weight, budget) if budget else []
        if not regions:
            return
        event = self.events[i]
        event.record(torch.cuda.current_stream(self.sink.device))
        with torch.cuda.stream(self.stream):
            self.stream.wait_event(event)
            for region in regions:
                prefetch_l2(region, self.sink)
        self.forked = True

    def join(self) -> None:
        """The main stream waits for the side stream's prefetches (once per step, after the last layer)."""
        if self.forked:
            torch.cuda.current_stream(self.sink.device).wait_stream(self.stream)
            self.forked = False


def prefetcher(model) -> WeightPrefetch | None:
    """The model's WeightPrefetch on a CUDA card with compiled Triton, else None (nothing to do)."""
    weight = model.embed.weight
    if not weight.is_cuda or not can_prefetch(weight) or budget_bytes(weight.device) == 0:
        return None
    if getattr(model, "_weight_prefetch", None) is None:
        model._weight_prefetch = WeightPrefetch(len(model.layers), weight.device)
    return model._weight_prefetch
