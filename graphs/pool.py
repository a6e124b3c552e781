"""GraphPool: capture one CUDA graph per key (e.g. (bucket, variant)), largest first, all sharing
one memory pool, and replay by key. Knows nothing of models: it captures a callable `step(key)`
that must read and write only fixed-address tensors.

Inside a captured step: no .item(), .cpu(), print, host-built tensors, data-dependent Python
branches or data-dependent allocation sizes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class CaptureStats:
    key: Hashable
    capture_s: float
    pool_mb: float  # growth of the shared pool's reserved memory during this capture


class GraphPool:
    def __init__(self, step: Callable[[Hashable], None], warmup: int = 2):
        self._step = step
        self._warmup = warmup
        self._graphs: dict[Hashable, torch.cuda.CUDAGraph] = {}
        self._pool = None
        self.stats: list[CaptureStats] = []

    def __contains__(self, key: Hashable) -> bool:
        return key in self._graphs

    @property
    def capture_s(self) -> float:
        return sum(s.capture_s for s in self.stats)

    def capture(self, keys: Iterable[Hashable], order: Callable[[Hashable], int] | None = None) -> None:
        """Capture every key not yet captured, largest first (by `order`), into the shared pool."""
        todo = [k for k in keys if k not in self._graphs]
        todo.sort(key=order or (lambda k: 0), reverse=True)
        for key in todo:
            start = time.perf_counter()
            reserved = torch.cuda.memory_reserved()
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up off the default stream, as capture needs
                for _ in range(self._warmup):
                    self._step(key)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self._pool):
                self._step(key)
            if self._pool is None:
                self._pool = graph.pool()
            self._graphs[key] = graph
            torch.cuda.synchronize()
            self.stats.append(
                CaptureStats(
                    key, time.perf_counter() - start, (torch.cuda.memory_reserved() - reserved) / 2**20
                )
            )

    def replay(self, key: Hashable) -> None:
        self._graphs[key].replay()

    def release(self) -> None:
        """Drop every graph and the pool (before the process ends or the runner is rebuilt)."""
        for graph in self._graphs.values():
            graph.reset()
        self._graphs.clear()
        self._pool = None
