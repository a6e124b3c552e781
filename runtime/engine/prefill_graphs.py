"""Captured prefill: one CUDA graph per prompt-length bucket, for prompts that start a row.

Eager prefill is bound by the host: ~300 launches from Python for a 16-layer model cost ~15 ms on
an H100 while its kernels take ~2-5 ms. Here a prompt of n tokens is padded to the smallest
length bucket T >= n (graphs/buckets.prefill_lengths) and replayed from a graph of
DecoderLM.prefill_padded, which reads the tokens, n and the cache row from fixed-address device
buffers. A bucket's graph is captured the first time a prompt needs it (two eager warm-up runs,
then the capture: a few hundred ms, once per bucket and process), so start-up pays nothing for
lengths never used. Prompts that continue a row (start > 0) and buckets past the cache capacity
take the eager path.
"""

from __future__ import annotations

import warnings

import torch

from graphs.buckets import bucket_for, prefill_lengths
from graphs.pool import GraphPool
from runtime.engine.state import KVCache
from runtime.models.decoder import DecoderLM


class PrefillGraphs:
    def __init__(self, model: DecoderLM, cache: KVCache, capacity: int, device: torch.device):
        self.model, self.cache = model, cache
        self.lengths = prefill_lengths(capacity)
        self.tokens = torch.zeros(
            capacity, dtype=torch.int64, device=device
        )  # (capacity,): prompt, then stale padding
        self.n = torch.ones(1, dtype=torch.int64, device=device)  # the prompt's length
        self.row = torch.zeros(1, dtype=torch.int64, device=device)  # the cache row it fills
        self.logits = torch.zeros((1, model.spec.vocab), dtype=torch.float32, device=device)
        self.pool: GraphPool | None = GraphPool(self._step)
        self.error: str | None = None

    def _step(self, T: int) -> None:  # graph: fixed-address buffers only
        self.logits.copy_(self.model.prefill_padded(self.tokens[:T][None], self.n, self.cache, self.row))

    def run(self, row: int, ids: torch.Tensor) -> torch.Tensor | None:
        """ids (n,) on the device, a prompt from position 0 of `row` -> float32 logits (1, V) of its
        last position (the fixed output buffer: read it before the next prefill), or None where
        no graph applies (the caller prefills eagerly)."""
        n = ids.numel()
        if self.pool is None or n > self.lengths[-1]:
            return None
        T = bucket_for(n, self.lengths)
        self.tokens[:n].copy_(ids)
        self.n.fill_(n)
        self.row.fill_(row)
        if T not in self.pool:
            try:
                self.pool.capture([T])
            except (torch.cuda.OutOfMemoryError, RuntimeError) as e:
                self.release()
                self.error = str(e).splitlines()[0]
                warnings.warn(
                    f"prefill graph capture failed ({self.error}); prefilling eagerly", stacklevel=3
                )
                return None
        self.pool.replay(T)
        return self.logits

    @property
    def captured(self) -> list[int]:
        return [s.key for s in self.pool.stats] if self.pool else []

    def release(self) -> None:
        if self.pool is not None:
            self.pool.release()
            self.pool = None
