"""Start-up: the GEMV blocks the start-up tuner timed alone, chosen again inside the decode step.

gemv_tuning.tune() times each candidate block alone, with L2 flushed. Inside the step a block also
decides how the GEMV shares the card with its neighbours under PDL (how many of its programs are
still resident when the next kernel's programs launch, how its first tiles overlap the previous
kernel's tail), and the fastest alone lost inside the step by 4-50 us per step on an H100 and an H200
(notes/kernels.md, twenty-fifth session). The shipped choices were picked in the step by hand;
this does the same at start-up on a card without them.

For each shape tune() timed in this start, its finalists (at most FINALISTS candidates, each
within MARGIN of the fastest alone) are captured into a batch-1 greedy decode graph each, the
model's other GEMVs at their current choice, and timed in ROUNDS interleaved rounds (median of
the rounds' medians); the step's fastest goes into fused_linear._TUNED and the user's store (source
"step"), so the next start reads it and times nothing. Shapes go one at a time, the largest
first. On a card that ships no role lists, the options of step_roles.py (the down GEMV adding the
residual, the gate/up and down GEMVs releasing early) are chosen with the blocks of the shapes
they name (each finalist timed with them off and on) and stored with the blocks.
RUNTIME_STEP_TUNE=blocks times the blocks only, 0 keeps tune()'s picks. CUDA graph mode only;
elsewhere a no-op.
"""

from __future__ import annotations

import functools
import statistics
import time
import warnings
from collections.abc import Callable, Hashable, Iterable

import torch

from graphs.pool import GraphPool
from runtime.bench.step_timing import isolated_ms
from runtime.engine import step_roles
from runtime.kernels import fused_linear, gemv_blocks, gemv_tuning, prebuild, tuning_store
from runtime.kernels.switches import env_choice
from runtime.kernels.tuning_store import Config, Key

FINALISTS = 3
MARGIN = 0.10  # a candidate this much slower alone than the fastest is not timed in the step
ROUNDS = 5
REPLAYS = 16  # isolated replays per round and finalist
POSITION = 256  # where the timed steps start (their attention reads this many slots), capacity allowing

# every step timing taken: key -> {config: median step ms (its fastest variant's)}
STEP_TIMINGS: dict[Key, dict[Config, float]] = {}
# the keys timed with role options: key -> {variant: median step ms}
VARIANT_TIMINGS: dict[Key, dict] = {}

TimeVariants = Callable[[Key, list[step_roles.Variant]], dict[step_roles.Variant, float]]


def setting() -> str:
    """RUNTIME_STEP_TUNE: "1" (the default) times the finalists in the step with the role options
    of step_roles.py, "blocks" the finalists alone, "0" keeps tune()'s picks."""
    return env_choice("RUNTIME_STEP_TUNE", ("1", "blocks", "0"), "1")


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


def choose(
    keys: list[Key],
    time_variants: TimeVariants,
    chosen: dict | None = None,
    found: list[step_roles.Option] = (),
) -> dict[Key, Config]:
    """Each key in turn: its finalists, each with the options of `found` that name the key off and
    on (step_roles.variants), timed in the step by time_variants(key, variants) -> {variant: ms},
    with the keys before it at their step choice; the fastest (step_roles.best) kept: its block in
    _TUNED (source "step") and in `chosen` (returned; filled as it goes, so a failure part-way keeps
    what was chosen), its options in force."""
    chosen = {} if chosen is None else chosen
    for key in keys:
        configs, here = finalists(gemv_tuning.TIMINGS[key]), step_roles.naming(found, key)
        times = time_variants(key, step_roles.variants(configs, here))
        config, on = step_roles.best(times)
        fused_linear._TUNED[key] = config
        gemv_tuning.SOURCES[key] = "step"
        step_roles.apply(here, on)
        STEP_TIMINGS[key] = {c: min(ms for (c2, _), ms in times.items() if c2 == c) for c in configs}
        step_roles.record(here, times)
        if here:
            VARIANT_TIMINGS[key] = times
        chosen[key] = config
    return chosen


def remember(card: tuning_store.Card | None, chosen: dict[Key, Config], roles: dict | None = None) -> None:
    """The step's choices into the user's store for this card, with what each measured alone, and
    the role lists the step chose (None: the store keeps its own)."""
    if card is not None and (chosen or roles is not None):
        measured = {k: (c, gemv_tuning.TIMINGS.get(k, {}).get(c)) for k, c in chosen.items()}
        tuning_store.save(card, {**tuning_store.load(card), **measured}, roles)


def refine(runner) -> float:
    """The step choice for each of the runner's pending shapes, with its role options (step_roles.py),
    before its graphs are captured (runner: runtime.engine.runner.Runner). Only
    where tune() timed a shape of the model at this start (its first on the card). Returns the
    seconds spent."""
    model = runner.model
    capacity = runner.capacity
    mode = setting()
    if mode == "0" or runner.device.type != "cuda" or capacity < 2 * REPLAYS:
        return 0.0
    shapes = model.gemv_shapes()
    if not any(gemv_tuning.SOURCES.get((*s, model.dtype)) == "tuned" for s in shapes):
        return 0.0
    card = tuning_store.card(runner.device)
    keys = pending(shapes, model.dtype)
    found = step_roles.options(model, card) if mode == "1" else []
    alone = [o for o in found if not any(step_roles.naming([o], key) for key in keys)]  # timed apart
    if not keys and not found:
        return 0.0
    start = time.perf_counter()
    position = min(POSITION, capacity - REPLAYS - 1)
    picks = {key: fused_linear._TUNED[key] for key in keys}
    roles_before = {field: set(named) for field, named in gemv_blocks.SHIPPED_ROLES.items()}

    def record() -> None:  # every variant's kernels, built on all cores before the captures
        for key in keys:
            here = step_roles.naming(found, key)
            for variant in step_roles.variants(finalists(gemv_tuning.TIMINGS[key]), here):
                _set_variant(key, here, variant)
                runner._unlaunched_steps([(1, "greedy")])
            _set_block(key, picks[key])
            _restore_roles(roles_before)
        for field, entries in alone:
            step_roles.set_option(field, entries, True)
            runner._unlaunched_steps([(1, "greedy")])
            _restore_roles(roles_before)

    def time_blocks(key: Key, variants: list[step_roles.Variant]) -> dict[step_roles.Variant, float]:
        here = step_roles.naming(found, key)
        return time_variants(
            runner, {v: functools.partial(_set_variant, key, here, v) for v in variants}, position
        )

    def time_toggle(field: str, entries: step_roles.Entries) -> dict[bool, float]:
        toggles = {on: functools.partial(step_roles.set_option, field, entries, on) for on in (False, True)}
        return time_variants(runner, toggles, position)

    prebuild.compile_ahead(record, runner.device)
    chosen: dict[Key, Config] = {}
    roles = None
    try:
        with runner.kept_state():
            choose(keys, time_blocks, chosen, found)
            roles = step_roles.choose(alone, time_toggle) if found else None
    except (torch.cuda.OutOfMemoryError, RuntimeError) as e:  # the capture's own failures, as _capture's
        for key in keys:
            if key not in chosen:
                fused_linear._TUNED[key] = picks[key]
        _restore_roles(roles_before)
        warnings.warn(
            f"timing GEMV choices inside the decode step failed ({str(e).splitlines()[0]}); the shapes "
            f"not yet chosen keep the blocks timed alone (RUNTIME_STEP_TUNE=0 skips this step)",
            stacklevel=2,
        )
    remember(card, chosen, roles)
    return time.perf_counter() - start


def _set_block(key: Key, config: Config) -> None:
    fused_linear._TUNED[key] = config


def _set_variant(key: Key, here: list[step_roles.Option], variant: step_roles.Variant) -> None:
    _set_block(key, variant[0])
    step_roles.apply(here, variant[1])


def _restore_roles(before: dict[str, set]) -> None:
    for field, named in gemv_blocks.SHIPPED_ROLES.items():
        named.clear()
        named.update(before[field])


def time_variants(
    runner, variants: dict[Hashable, Callable[[], None]], position: int
) -> dict[Hashable, float]:
    """Median ms of the batch-1 greedy step captured once per variant (variants[label]() sets it up
    before the step is traced), timed in ROUNDS interleaved rounds from `position` (each round puts
    row 0 back there: a replay advances it)."""

    def captured(label: Hashable) -> None:
        variants[label]()
        runner._step((1, "greedy"))

    pool = GraphPool(captured, warmup=1)
    try:
        pool.capture(variants)
        rounds: dict[Hashable, list[float]] = {label: [] for label in variants}
        for _ in range(ROUNDS):
            for label in variants:
                runner.buffers.positions[:1].fill_(position)
                rounds[label].append(isolated_ms(lambda v=label: pool.replay(v), REPLAYS))
    finally:
        pool.release()
    return {label: statistics.median(ms) for label, ms in rounds.items()}
