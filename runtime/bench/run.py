"""Execute a Plan: per model, load once; per engine, build one runner (graphs captured once); per
case, warm up, then time each trial and write its row the moment it finishes.

Scope of the numbers: model load, graph capture and warm-ups are not timed into any row's
throughput (load_s and capture_s are recorded beside it). A trial is one request of batch_size
prompts of exactly prompt_tokens ids; EOS is ignored unless the config says otherwise. Python's
cyclic garbage collector is run before each trial and paused during it (timed_trial), so a
collection pass cannot land inside a wall-clock time such as TTFT.
"""

from __future__ import annotations

import contextlib
import gc
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from runtime.bench.engines import Engine, open_engine, unsupported
from runtime.bench.matrix import Case, Plan
from runtime.bench.metrics import live_kv_bytes, trial_metrics
from runtime.bench.prompts import make_prompts, special_ids, usable_vocab
from runtime.bench.rows import RowSink
from runtime.engine.sampler import SamplingParams
from runtime.models.loader import LoadedModel, load_model

# (description, runs finished) -> None; the command draws it as a progress bar
ProgressFn = Callable[[str, int], None]


@contextlib.contextmanager
def timed_trial():
    """A trial without garbage-collector pauses: collected before, the collector off during (a pass
    over a run's objects can stall the host for milliseconds, which the wall-clock TTFT and the
    host loop would absorb), and back as it was afterwards, whatever the trial raised."""
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@dataclass
class Outcome:
    bandwidth_gbs: float | None = None
    completed: set[str] = field(default_factory=set)  # case ids with every trial measured
    failed: int = 0
    skipped: int = 0
    interrupted: bool = False


def case_fields(case: Case) -> dict[str, Any]:
    c = case.config
    return {
        "case_id": case.case_id,
        "model": case.model.id,
        "model_name": case.model.name,
        "weights_requested": case.model.weights,
        "config": c.name,
        "engine": case.engine,
        "batch_size": case.batch_size,
        "prompt_tokens": c.prompt_tokens,
        "max_new_tokens": c.max_new_tokens,
        "temperature": c.temperature,
        "top_k": c.top_k,
        "top_p": c.top_p,
        "repetition_penalty": c.repetition_penalty,
        "ignore_eos": c.ignore_eos,
        "seed": case.seed,
    }


def runs_needed(plan: Plan, sink: RowSink, case: Case) -> int:
    """Warm-ups plus missing trials (0 when the case is complete)."""
    missing = plan.trials - len(sink.done_trials(case.case_id) & set(range(plan.trials)))
    return plan.warmup + missing if missing > 0 else 0


class BenchRun:
    def __init__(
        self,
        plan: Plan,
        sink: RowSink,
        device: torch.device,
        bandwidth_gbs: float | None = None,
        progress: ProgressFn | None = None,
    ):
        """bandwidth_gbs: the card's copy bandwidth, measured in this run (bench/bandwidth.py)."""
        self.plan, self.sink, self.device = plan, sink, device
        self.progress = progress or (lambda description, done: None)
        self.outcome = Outcome(bandwidth_gbs=bandwidth_gbs)
        self.finished_runs = 0

    def total_runs(self) -> int:
        """Warm-ups and trials still to run here (engines this device cannot run are skipped)."""
        runnable = [c for c in self.plan.cases if unsupported(c.engine, self.device) is None]
        return sum(runs_needed(self.plan, self.sink, c) for c in runnable)

    def execute(self) -> Outcome:
        """Run every pending case; Ctrl-C stops it with the rows so far kept (outcome.interrupted)."""
        try:
            for model in self.plan.models:
                self._model(self.plan.cases_of(model))
        except KeyboardInterrupt:
            self.outcome.interrupted = True
        trials = set(range(self.plan.trials))
        self.outcome.completed = {
            c.case_id for c in self.plan.cases if trials <= self.sink.done_trials(c.case_id)
        }
        return self.outcome

    def _note_row(self, case: Case, status: str, note: str) -> None:
        self.sink.write(
            {**case_fields(case), "trial": None, "status": status, "note": note, "device": self.device.type}
        )
        if status == "failed":
            self.outcome.failed += 1
            warnings.warn(f"{case.label}: {note}", stacklevel=2)
        else:
            self.outcome.skipped += 1

    def _model(self, cases: list[Case]) -> None:
        runnable = []
        for case in cases:
            if not runs_needed(self.plan, self.sink, case):
                continue
            reason = unsupported(case.engine, self.device)
            if reason is None:
                runnable.append(case)
            elif not self.sink.skipped(case.case_id):  # noted once per folder, retried on a device that can
                self._note_row(case, "skipped", reason)
        if not runnable:
            return
        model = runnable[0].model
        self.progress(f"{model.name} · loading", self.finished_runs)
        try:
            loaded = load_model(
                model.id, weights=model.weights, device=self.device, dtype=model.dtype, seed=self.plan.seed
            )
        except Exception as e:  # noqa: BLE001 - recorded on every case of the model; the run goes on
            for case in runnable:
                self._note_row(case, "failed", f"loading failed: {_reason(e)}")
            return
        try:
            for engine in dict.fromkeys(c.engine for c in runnable):
                self._engine(loaded, engine, [c for c in runnable if c.engine == engine])
        finally:
            del loaded
            _free(self.device)

    def _engine(self, loaded: LoadedModel, engine: str, cases: list[Case]) -> None:
        max_batch = max(c.batch_size for c in cases)
        self.progress(f"{cases[0].model.name} · {engine} · building", self.finished_runs)
        try:
            built = open_engine(engine, loaded, self.plan.capacity, max_batch)
        except Exception as e:  # noqa: BLE001
            for case in cases:
                self._note_row(case, "failed", f"{engine} could not start: {_reason(e)}")
            _free(self.device)
            return
        try:
            for case in cases:
                self._case(loaded, built, case)
        finally:
            built.release()
            del built
            _free(self.device)

    def _case(self, loaded: LoadedModel, engine: Engine, case: Case) -> None:
        plan, cfg, spec = self.plan, case.config, loaded.spec
        exclude = special_ids(spec.eos_ids, spec.bos_id, loaded.tokenizer)
        prompts = make_prompts(
            case.batch_size, cfg.prompt_tokens, usable_vocab(spec.vocab, loaded.tokenizer), exclude, plan.seed
        )
        params = SamplingParams(cfg.temperature, cfg.top_k, cfg.top_p, cfg.repetition_penalty, plan.seed)
        stop_ids = () if cfg.ignore_eos else loaded.stop_ids
        elem = loaded.model.dtype.itemsize
        weight_bytes = spec.param_bytes(elem)
        kv_step = live_kv_bytes(spec, cfg.prompt_tokens, cfg.max_new_tokens - 1, case.batch_size, elem)
        done = self.sink.done_trials(case.case_id)
        todo = [t for t in range(plan.trials) if t not in done]
        where = f"{case.model.name} · {cfg.name} · b{case.batch_size} · {case.engine}"
        try:
            for w in range(plan.warmup):
                self.progress(f"{where} · warm-up {w + 1}/{plan.warmup}", self.finished_runs)
                engine.run(prompts, params, cfg.max_new_tokens, stop_ids)
                self.finished_runs += 1
            for t in todo:
                self.progress(f"{where} · trial {t + 1}/{plan.trials}", self.finished_runs)
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                    torch.cuda.reset_peak_memory_stats(self.device)
                with timed_trial():
                    m = engine.run(prompts, params, cfg.max_new_tokens, stop_ids)
                peak = (
                    torch.cuda.max_memory_allocated(self.device) / 2**30
                    if self.device.type == "cuda"
                    else None
                )
                metrics = trial_metrics(
                    m,
                    weight_bytes=weight_bytes,
                    kv_bytes_per_step=kv_step,
                    bandwidth_gbs=self.outcome.bandwidth_gbs,
                )
                self.sink.write({
                    **case_fields(case),
                    "trial": t,
                    "status": "ok",
                    "weights": loaded.weights,
                    "dtype": str(loaded.model.dtype).removeprefix("torch."),
                    "device": self.device.type,
                    "gpu": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else None,
                    "mode": engine.mode,
                    "kv_cache_mb": engine.kv_cache_mb,
                    "peak_gb": peak,
                    "load_s": loaded.load_s,
                    "capture_s": engine.capture_s,
                    "gemv_blocks": getattr(engine, "gemv_blocks", None),
                    "bandwidth_gbs": self.outcome.bandwidth_gbs,
                    "weight_bytes": weight_bytes,
                    **metrics,
                    "note": engine.note,
                    "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    "step_ms": [round(s, 5) for s in m.step_ms],
                })  # fmt: skip
                self.finished_runs += 1
            self.progress(f"{where} · done", self.finished_runs)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # noqa: BLE001 - one failing case must not lose the rest of the run
            self._note_row(case, "failed", _reason(e))
            _free(self.device)


def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
