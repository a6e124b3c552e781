"""Engines a benchmark case can run on, behind one small interface: `run` one request of a batch
of prompts and report what it measured; `release` before the next engine is built.

runtime          our runner: CUDA graphs on a GPU, eager elsewhere
runtime_graph    our runner, graphs only (skipped off CUDA)
runtime_eager    our runner, the same step without graphs
transformers_*   baselines on the same weights (runtime/bench/baselines.py)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch

from runtime.bench.metrics import Measurement
from runtime.engine.generate import generate
from runtime.engine.runner import Runner
from runtime.engine.sampler import SamplingParams
from runtime.models.loader import LoadedModel

RUNNER_MODES = {"runtime": "auto", "runtime_graph": "graph", "runtime_eager": "eager"}


class Engine(Protocol):
    mode: str  # what actually ran: graph | eager | compile
    capture_s: float
    kv_cache_mb: float | None
    note: str | None  # e.g. why graphs fell back to eager

    def run(
        self,
        prompts: Sequence[Sequence[int]],
        params: SamplingParams,
        max_new_tokens: int,
        stop_ids: Sequence[int],
    ) -> Measurement: ...

    def release(self) -> None: ...


def unsupported(engine: str, device: torch.device) -> str | None:
    """Why `engine` cannot run on `device` (the case is skipped with this note), or None."""
    if engine == "runtime_graph" and device.type != "cuda":
        return "runtime_graph needs a CUDA GPU (CUDA graphs); skipped on the CPU"
    if engine == "transformers_compile" and device.type != "cuda":
        return "transformers_compile needs a CUDA GPU (static cache + reduce-overhead CUDA graphs); skipped on the CPU"
    return None


class RuntimeEngine:
    def __init__(self, loaded: LoadedModel, engine: str, capacity: int, max_batch: int):
        self.runner = Runner(loaded, capacity=capacity, max_batch=max_batch, mode=RUNNER_MODES[engine])
        self.mode = self.runner.mode
        self.capture_s = self.runner.capture_s
        self.gemv_blocks = self.runner.gemv_blocks
        self.kv_cache_mb = self.runner.cache.nbytes / 2**20
        error = self.runner.capture_error
        self.note = f"graph capture failed ({error}); ran eager" if error else None

    def run(
        self,
        prompts: Sequence[Sequence[int]],
        params: SamplingParams,
        max_new_tokens: int,
        stop_ids: Sequence[int],
    ) -> Measurement:
        r = generate(self.runner, prompts, params, max_new_tokens, stop_ids=stop_ids)
        return Measurement(r.tokens, r.ttft_ms, r.step_ms, r.decode_ms, r.total_ms)

    def release(self) -> None:
        self.runner.release()


def open_engine(engine: str, loaded: LoadedModel, capacity: int, max_batch: int) -> Engine:
    if engine in RUNNER_MODES:
        return RuntimeEngine(loaded, engine, capacity, max_batch)
    from runtime.bench.baselines import TransformersEngine

    return TransformersEngine(loaded, compiled=engine == "transformers_compile")
