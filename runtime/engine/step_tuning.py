"""Start-up: the GEMV blocks the start-up tuner timed alone, chosen again inside the decode step.

gemv_tuning.tune() times each candidate block alone, with L2 flushed. Inside the step a block also
decides how the GEMV shares the card with its neighbours under PDL (how many of its programs are
still resident when the next kernel's launch, how its first tiles overlap the previous kernel's
tail), and the fastest alone lost inside the step by 4-50 us per step on an H100 and an H200
(notes/kernels.md, twenty-fifth session). The shipped choices were picked in the step by hand;
this does the same at start-up on a card without them.

For each shape tune() timed in this start, its finalists (at most FINALISTS candidates, each
within MARGIN of the fastest alone) are captured into a batch-1 greedy decode graph each, the
model's other GEMVs at their current choice, and timed in ROUNDS interleaved rounds (median of
the rounds' medians); the step's fastest goes into fused_linear._TUNED and the user's store (source
"step"), so the next start reads it and times nothing. Shapes go one at a time, the largest
first. RUNTIME_STEP_TUNE=0 keeps tune()'s picks. CUDA graph mode only; elsewhere a no-op.
"""

from __future__ import annotations

import statistics
import time
import warnings
from collections.abc import Callable, Iterable

import torch

from graphs.pool import GraphPool
from runtime.bench.step_timing import isolated_ms
from runtime.kernels import fused_linear, gemv_blocks, gemv_tuning, prebuild, tuning_store
from runtime.kernels.switches import env_choice
from runtime.kernels.tuning_store import Config, Key

FINALISTS = 3
MARGIN = 0.10  # a candidate this much slower alone than the fastest is not timed in the step
ROUNDS = 5
REPLAYS = 16  # isolated replays per round and finalist
POSITION = 256  # where the timed steps start (their attention reads this many slots), capacity allowing

# every step timing taken: key -> {config: median step ms}
STEP_TIMINGS: dict[Key, dict[Config, float]] = {}

TimeConfigs = Callable[[Key, list[Config]], dict[Config, float]]


def enabled() -> bool:
    """RUNTIME_STEP_TUNE: "1" (the default) times the finalists in the step, "0" keeps tune()'s picks."""
    return env_choice("RUNTIME_STEP_TUNE", ("1", "0"), "1") == "1"


def finalists(timings: dict[Config, float], limit: int = FINALISTS, margin: float = MARGIN) -> list[Config]:
    """The candidates worth a step timing, fastest alone first: at most `limit`, each within
    `margin` of the fastest."""
    ranked = sorted(timings, key=timings.get)
    best = timings[ranked[0]]
    return [c for c in ranked[:limit] if timings[c] <= best * (1 + margin)]


def pending(shapes: Iterable[tuple[str, int, int]], dtype: torch.dtype) -> list[Key]:
    """The keys of `shapes` that tune() timed in this start (not yet timed in a step) and that have
    two finalists or more, the most weight bytes first; a shape RUNTIME_GEMV_BLOCKS forces is left
    alone (the launch takes the override whatever is chosen)."""
    keys = []
    for op, N, K in dict.fromkeys(shapes):
        key = (op, N, K, dtype)
        timings = gemv_tuning.TIMINGS.get(key)
        if gemv_tuning.SOURCES.get(key) != "tuned" or gemv_blocks.block_override(op, N, K) is not None:
            continue
        if timings and len(finalists(timings)) > 1:
            keys.append(key)
    return sorted(keys, key=lambda k: -k[1] * k[2])


def choose(keys: list[Key], time_configs: TimeConfigs, chosen: dict | None = None) -> dict[Key, Config]:
    """Each key in turn: its finalists timed in the step by time_configs(key, finalists) -> {config:
    ms}, with the keys before it at their step choice; the fastest kept in _TUNED (source "step")
    and in `chosen` (returned; filled as it goes, so a failure part-way keeps what was chosen)."""
    chosen = {} if chosen is None else chosen
    for key in keys:
        times = time_configs(key, finalists(gemv_tuning.TIMINGS[key]))
        best = min(times, key=times.get)
        fused_linear._TUNED[key] = best
        gemv_tuning.SOURCES[key] = "step"
        STEP_TIMINGS[key] = times
        chosen[key] = best
    return chosen


def remember(card: tuning_store.Card | None, chosen: dict[Key, Config]) -> None:
    """The step's choices into the user's store for this card, with what each measured alone."""
    if card is not None and chosen:
        measured = {k: (c, gemv_tuning.TIMINGS.get(k, {}).get(c)) for k, c in chosen.items()}
        tuning_store.save(card, {**tuning_store.load(card), **measured})


def refine(runner) -> float:
    """The step choice for each of the runner's pending shapes, before its graphs are captured
    (runner: runtime.engine.runner.Runner). Returns the seconds spent."""
    model = runner.model
    capacity = runner.capacity
    if not enabled() or runner.device.type != "cuda" or capacity < 2 * REPLAYS:
        return 0.0
    keys = pending(model.gemv_shapes(), model.dtype)
    if not keys:
        return 0.0
    start = time.perf_counter()
    position = min(POSITION, capacity - REPLAYS - 1)
    picks = {key: fused_linear._TUNED[key] for key in keys}

    def record() -> None:  # every finalist's kernels, built on all cores before the captures
        for key in keys:
            for config in finalists(gemv_tuning.TIMINGS[key]):
                fused_linear._TUNED[key] = config
                runner._unlaunched_steps([(1, "greedy")])
            fused_linear._TUNED[key] = picks[key]

    prebuild.compile_ahead(record, runner.device)
    chosen: dict[Key, Config] = {}
    try:
        with runner.kept_state():
            choose(keys, lambda key, configs: _time_in_step(runner, key, configs, position), chosen)
    except (torch.cuda.OutOfMemoryError, RuntimeError) as e:  # the capture's own failures, as _capture's
        for key in keys:
            if key not in chosen:
                fused_linear._TUNED[key] = picks[key]
        warnings.warn(
            f"timing GEMV blocks inside the decode step failed ({str(e).splitlines()[0]}); the shapes "
            f"not yet chosen keep the blocks timed alone (RUNTIME_STEP_TUNE=0 skips this step)",
            stacklevel=2,
        )
    remember(tuning_store.card(runner.device), chosen)
    return time.perf_counter() - start


def _time_in_step(runner, key: Key, configs: list[Config], position: int) -> dict[Config, float]:
    """Median ms of the batch-1 greedy step captured once per config of `key`, timed in interleaved
    rounds from `position` (each round puts row 0 back there: a replay advances it)."""

    def captured(config: Config) -> None:
        fused_linear._TUNED[key] = config
        runner._step((1, "greedy"))

    pool = GraphPool(captured, warmup=1)
    try:
        pool.capture(configs)
        rounds: dict[Config, list[float]] = {c: [] for c in configs}
        for _ in range(ROUNDS):
            for config in configs:
                runner.buffers.positions[:1].fill_(position)
                rounds[config].append(isolated_ms(lambda c=config: pool.replay(c), REPLAYS))
    finally:
        pool.release()
    return {c: statistics.median(ms) for c, ms in rounds.items()}
