"""Start-up: which batch-1 projections add the residual in their GEMV or release the next kernel early,
chosen in the decode step on a card that ships no such lists (step_tuning.py times them).

The shipped files list them per card and shape, because one default served no card: Llama's down
GEMV adding the residual was -8..-17 us per step on the H100 and the H200 and Qwen3's +11..+35; the
gate/up and down GEMVs releasing early were -9..-22 us on Llama, +4..+11 on Qwen3 on the H200, +75..+89
on Gemma (notes/kernels.md). The o projection's add is on everywhere already (ops.residual_epilogue);
gate/up and down release together, since on the H100 either alone lost where both gained.

Blocks and options are chosen together: where step_tuning times a shape's block finalists, every
option naming that shape is timed off and on with each of them (Variant), and the step's fastest
pair wins, each option on charged MARGIN. Chosen one after the other, they had settled short of
both on an H200: blocks first (without the options), Llama's down GEMV took 2/1024/4 over 8/2048/8
by 0.2 us, and the residual add then lost 20 us on 2/1024/4 where on 8/2048/8 it gains 8-17
(notes/kernels.md, twenty-sixth session). An option naming no shape timed at this start is
timed alone, off and on (choose).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable

from runtime.kernels import gemv_blocks, tuning_store
from runtime.kernels.tuning_store import Config, Key

Entries = frozenset[tuple[str, int, int]]  # (role, N, K) of the projections an option names
# an option: the role list it adds to (a gemv_blocks.ROLE_LISTS key) and its entries
Option = tuple[str, Entries]
TimeToggle = Callable[[str, Entries], dict[bool, float]]  # -> {off: ms, on: ms}
# a shape's block with the options naming it that are on
Variant = tuple[Config, frozenset[Option]]
# the GEMV ops (model.gemv_shapes) that may serve a role an option names (gate/up and down without
# the activation as gate/up's epilogue: norm_linear, act_linear)
ROLE_OPS = {
    "gate_up": ("norm_linear_act", "norm_linear_act_pre", "norm_linear", "norm_linear_pre"),
    "down": ("linear", "act_linear"),
}
MARGIN = 0.002  # an option is kept only where the step is this fraction faster with it (~1.5-2.5 us)

# every option timed: (field, entries) -> {off: ms, on: ms}
TIMINGS: dict[Option, dict[bool, float]] = {}
# the switch that names a list's roles by hand (then nothing is chosen for that list)
SWITCHES = {"residual_add": gemv_blocks.residual_add_roles, "early_release": gemv_blocks.early_release_roles}


def options(model, card: tuning_store.Card | None) -> list[Option]:
    """The options worth a step timing for `model` (a DecoderLM) on `card`: none where the card ships
    its own lists (RUNTIME_GEMV_TUNE=fresh aside) or a switch names the roles. The down GEMV's
    residual add only where the MLP joins the residual without a norm of its own (Llama, Qwen)."""
    fresh = os.environ.get("RUNTIME_GEMV_TUNE") == "fresh"
    if card is None or (tuning_store.shipped(card) and not fresh):
        return []
    s = model.spec
    down = ("down", s.hidden, s.intermediate)
    found: list[Option] = []
    if model.layers[-1].mlp_out_norm is None:
        found.append(("residual_add", frozenset({down})))
    found.append(("early_release", frozenset({("gate_up", 2 * s.intermediate, s.hidden), down})))
    return [(field, entries) for field, entries in found if SWITCHES[field]() is None]


def set_option(field: str, entries: Entries, on: bool) -> None:
    """Turn an option on or off for the launches traced from now on."""
    if on:
        gemv_blocks.SHIPPED_ROLES[field].update(entries)
    else:
        gemv_blocks.SHIPPED_ROLES[field].difference_update(entries)


def choose(found: list[Option], time_toggle: TimeToggle) -> dict[str, list[str]]:
    """Each option in turn timed off and on by time_toggle(field, entries), kept where on is faster
    by MARGIN; -> the role lists now in force, {field: ["role:NxK", ...]}, as a store keeps them."""
    for field, entries in found:
        times = TIMINGS[(field, entries)] = time_toggle(field, entries)
        set_option(field, entries, times[True] < times[False] * (1 - MARGIN))
    return {field: tuning_store.role_list(named) for field, named in gemv_blocks.SHIPPED_ROLES.items()}


def naming(found: list[Option], key: Key) -> list[Option]:
    """The options of `found` that name the GEMV of `key` ((op, N, K, dtype)): one of their entries
    has its shape and a role its op serves."""
    op, N, K, _ = key
    return [
        (field, entries)
        for field, entries in found
        if any((n, k) == (N, K) and op in ROLE_OPS.get(role, ()) for role, n, k in entries)
    ]


def variants(configs: list[Config], here: list[Option]) -> list[Variant]:
    """Each config with each subset of the options `here` on, all off first."""
    subsets = [frozenset(c) for r in range(len(here) + 1) for c in itertools.combinations(here, r)]
    return [(config, on) for config in configs for on in subsets]


def apply(here: list[Option], on: frozenset[Option]) -> None:
    """The options `here` on where `on` holds them, off elsewhere."""
    for field, entries in here:
        set_option(field, entries, (field, entries) in on)


def best(times: dict[Variant, float]) -> Variant:
    """The step's fastest variant, each option on charged MARGIN of its time."""
    return min(times, key=lambda v: times[v] * (1 + MARGIN * len(v[1])))


def record(here: list[Option], times: dict[Variant, float]) -> None:
    """Each option's fastest step off and on among `times` into TIMINGS."""
    for option in here:
        TIMINGS[option] = {
            on: min(ms for (_, states), ms in times.items() if (option in states) == on)
            for on in (False, True)
        }
