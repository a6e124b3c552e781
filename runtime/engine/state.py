"""Static state: the KV cache and the decode step's input/output buffers, allocated once.

Every tensor here keeps its address for the life of the runner, which is what lets one captured
graph serve every request. Capacity is checked on the host before a request starts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from runtime.errors import CapacityError
from runtime.models.spec import ModelSpec


def layer_slots(spec: ModelSpec, capacity: int) -> list[int]:
    """Cache length S per layer: the capacity for global layers, the window for sliding ones."""
    return [capacity if w is None else min(w, capacity) for w in spec.sliding_window]


def kv_cache_bytes(spec: ModelSpec, capacity: int, batch: int, dtype: torch.dtype) -> int:
    elem = torch.empty((), dtype=dtype).element_size()
    return sum(2 * batch * spec.kv_heads * s * spec.head_dim * elem for s in layer_slots(spec, capacity))


class KVCache:
    """Per layer k and v of shape (B_max, Hkv, S_layer, D). Sliding layers are rings."""

    def __init__(self, spec: ModelSpec, max_batch: int, capacity: int, device, dtype: torch.dtype):
        self.capacity, self.max_batch = capacity, max_batch
        shape = lambda s: (max_batch, spec.kv_heads, s, spec.head_dim)  # noqa: E731
        slots = layer_slots(spec, capacity)
        self.k = [torch.zeros(shape(s), device=device, dtype=dtype) for s in slots]
        self.v = [torch.zeros(shape(s), device=device, dtype=dtype) for s in slots]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v)


@dataclass
class DecodeBuffers:
    """The captured step's fixed-address inputs and outputs, one slot per batch row (B_max)."""

    tokens: torch.Tensor  # (B_max,) int64: the token each row feeds next; the step overwrites it
    positions: torch.Tensor  # (B_max,) int64: that token's position; the step advances it
    temperature: torch.Tensor  # (B_max,) float32, 0 = greedy
    top_k: torch.Tensor  # (B_max,) int64, 0 = off
    top_p: torch.Tensor  # (B_max,) float32, 1 = off
    repetition_penalty: torch.Tensor  # (B_max,) float32, 1 = off
    seed: torch.Tensor  # (B_max,) int64: per-row sampling seed
    seen: torch.Tensor  # (B_max, V) bool: tokens already in the row (for the repetition penalty)

    @classmethod
    def allocate(cls, max_batch: int, vocab: int, device) -> DecodeBuffers:
        z = lambda dtype: torch.zeros(max_batch, device=device, dtype=dtype)  # noqa: E731
        return cls(
            tokens=z(torch.int64),
            positions=z(torch.int64),
            temperature=z(torch.float32),
            top_k=z(torch.int64),
            top_p=torch.ones(max_batch, device=device),
            repetition_penalty=torch.ones(max_batch, device=device),
            seed=z(torch.int64),
            seen=torch.zeros(max_batch, vocab, device=device, dtype=torch.bool),
        )


def check_capacity(prompt_lengths: list[int], max_new_tokens: int, capacity: int) -> None:
    """Refuse, before any work, a request that would write past the cache."""
    longest = max(prompt_lengths)
    if longest + max_new_tokens > capacity:
        raise CapacityError(
            f"prompt ({longest} tokens) + max new tokens ({max_new_tokens}) = {longest + max_new_tokens} "
            f"exceeds the KV cache capacity of {capacity} tokens; raise --max-seq-len or shorten the request"
        )
