"""Start-up: which batch-1 projections add the residual in their GEMV or release the next kernel early,
chosen in the decode step on a card that ships no such lists (step_tuning.py times them).

The shipped files list them per card and shape, because one default served no card: Llama's down
GEMV adding the residual was -8..-17 us per step on the H100 and the H200 and Qwen3's +11..+35; the
gate/up and down GEMVs releasing early were -9..-22 us on Llama, +4..+11 on Qwen3 on the H200, +75..+89
on Gemma (notes/kernels.md). Each option below is captured off and on, the others as chosen so far,
and kept where the step is faster with it by MARGIN. The o projection's add is on everywhere already
(ops.residual_epilogue); gate/up and down release together, since on the H100 either alone lost
where both gained.

Opt-in (RUNTIME_STEP_TUNE=roles): on an H200, after the blocks were chosen without the roles, this
turned down Llama's residual add (+20 us) and early release (+12 us) that the hand-made A/B had
taken (-9..-22 us) with blocks chosen under them (Llama's down GEMV: 2/1024/4 and 8/2048/8 tie
without the add, 0.2 us apart). Blocks and roles interact, so one after the other can settle
short of both; a joint search is the next step (notes/kernels.md, twenty-sixth session).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from runtime.kernels import gemv_blocks, tuning_store

Entries = frozenset[tuple[str, int, int]]  # (role, N, K) of the projections an option names
# an option: the role list it adds to (a gemv_blocks.ROLE_LISTS key) and its entries
Option = tuple[str, Entries]
TimeToggle = Callable[[str, Entries], dict[bool, float]]  # -> {off: ms, on: ms}
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
