"""Which blocks a batch-1 GEMV (fused_linear.py) launches, apart from the choices tune() stored:
the candidates it times, the heuristic for the rest, the tuning name of a launch, and the launch
switches read at each call, among them which projections add the residual in their epilogue or
release the next kernel early (the environment's roles, else the card's shipped lists).
"""

from __future__ import annotations

import os
import re

import torch

from runtime.kernels._triton import cdiv, next_pow2
from runtime.kernels.switches import env_choice

SMS = 132  # H100 SXM; the heuristic only needs the order of magnitude

# (BLOCK_N, BLOCK_K, num_warps) that tune() times; each compiles once per op and dtype
# (short BLOCK_K tiles waste no lanes on K = 1152 = 9 x 128, Gemma's hidden size)
CANDIDATE_CONFIGS = [
    (1, 2048, 4), (2, 1024, 4), (4, 512, 4), (4, 1024, 4), (8, 512, 4), (8, 1024, 8), (16, 256, 4), (16, 512, 8),
    (16, 128, 4), (32, 128, 4), (32, 256, 8), (2, 2048, 8), (1, 4096, 8), (2, 2048, 4), (8, 2048, 8),
]  # fmt: skip
# the last two: the blocks of the H100's o projection and LM heads inside the step, where a
# same-process A/B under PDL preferred them (shipped: runtime/kernels/tuned/)
# K-long vectors each op's prologue reloads per K step (norm: residual, h, norm_w; act: gate, up)
# ("lm_head": norm_linear with a wider output dtype, the float32 logits, compiled and tuned apart)
# "_pre" ops: the same with Gemma's sandwich pre-norm of h (two more row reductions and one more
# vector per step), tuned apart since their best blocks differ (gemv_op)
_PROLOGUE_VECTORS = {
    "linear": 0, "norm_linear": 3, "act_linear": 2, "lm_head": 3, "norm_linear_act": 3,
    "norm_linear_pre": 4, "lm_head_pre": 4, "norm_linear_act_pre": 4,
}  # fmt: skip
GATED_OPS = ("norm_linear_act", "norm_linear_act_pre")  # BLOCK_N >= 2: (gate, up) row pairs


def gemv_config(N: int, K: int, elem_bytes: int, vectors: int = 0) -> tuple[int, int, int]:
    """(BLOCK_N, BLOCK_K, num_warps) for an (N, K) weight of elem_bytes per element.

    Memory-bound: the bytes in flight are about (resident programs) x (tile bytes), so
    - BLOCK_N: the largest power of 2 <= 16 leaving >= 4 programs per SM (>= 2 when the prologue
      reloads `vectors` K-long vectors from L2 per step: fewer, taller programs reload them less often);
    - BLOCK_K: a ~8 KB weight tile (128 threads x four 16-byte loads in flight each), at least 512 B
      of each row (one warp's contiguous 16-byte loads), at most 4096 and next_pow2(K);
    - 4 warps, 8 when the tile ends up wider than 8 KB.
    """
    min_programs = (2 if vectors else 4) * SMS
    block_n = 16
    while block_n > 1 and cdiv(N, block_n) < min_programs:
        block_n //= 2
    block_k = max(512 // elem_bytes, 8192 // (block_n * elem_bytes))
    block_k = max(16, min(block_k, 4096, next_pow2(K)))
    num_warps = 8 if block_n * block_k * elem_bytes > 8192 else 4
    return block_n, block_k, num_warps


def gemv_op(base: str, pre_w: torch.Tensor | None) -> str:
    """The tuning name of a launch: base ("norm_linear", "lm_head", "norm_linear_act"), "_pre"
    appended under a sandwich pre-norm, unless RUNTIME_GEMV_PRE_BLOCKS=0 (an A/B: the blocks tuned
    without it)."""
    if pre_w is None or os.environ.get("RUNTIME_GEMV_PRE_BLOCKS", "1") == "0":
        return base
    return f"{base}_pre"


def early_first_chunk() -> bool:
    """RUNTIME_GEMV_FIRST_CHUNK: "early" (the default) has the norm GEMVs load their first input
    chunk with the row statistics' loads (and the norm weights before the PDL wait); "late" loads
    it after the statistics' reductions, one more L2 round trip (same-process A/B, H100: Gemma's
    step -16..-29 us, Llama -14..+3, Qwen3 -15..+1; notes/kernels.md)."""
    return env_choice("RUNTIME_GEMV_FIRST_CHUNK", ("early", "late"), "early") == "early"


def tile_after_row() -> bool:
    """RUNTIME_GEMV_FIRST_TILE: "early" (the default) has every GEMV load its first weight tile before
    the PDL wait; "after_row" has the norm GEMVs load it after their row statistics' loads."""
    return env_choice("RUNTIME_GEMV_FIRST_TILE", ("early", "after_row"), "early") == "after_row"


def parse_blocks(
    raw: str, what: str, fields: str = "BLOCK_N/BLOCK_K/warps"
) -> dict[tuple[str, int, int], tuple[int, ...]]:
    """Entries "op:NxK=<fields>" separated by spaces or semicolons -> {(op, N, K): blocks}; a
    malformed entry is refused, naming `what` held it."""
    parsed = {}
    for entry in raw.replace(";", " ").split():
        try:
            key, value = entry.split("=")
            name, shape = key.split(":")
            n, k = (int(v) for v in shape.split("x"))
            blocks = tuple(int(v) for v in value.split("/"))
            if len(blocks) != len(fields.split("/")):
                raise ValueError
        except ValueError:
            raise ValueError(f"{what} entry {entry!r}: write op:NxK={fields}") from None
        parsed[(name, n, k)] = blocks
    return parsed


def block_override(
    op: str, N: int, K: int, variable: str = "RUNTIME_GEMV_BLOCKS", fields: str = "BLOCK_N/BLOCK_K/warps"
) -> tuple[int, ...] | None:
    """An in-graph A/B of block choices: the environment `variable` holds entries "op:NxK=<fields>"
    (parse_blocks; RUNTIME_GEMV_BLOCKS, e.g. "norm_linear_act:12288x2048=16/256/4"; fused_rows_config's
    RUNTIME_ROWS_BLOCKS has five fields); the launch's blocks, whatever tuning chose."""
    return parse_blocks(os.environ.get(variable, ""), variable, fields).get((op, N, K))


# the lists of batch-1 projections a shipped file may hold (tuning_store.shipped_roles) -> the roles
# each may name: whose GEMV adds the residual in its epilogue (ops.residual_epilogue), whose GEMV
# lets the next kernel launch right after its wait (early_release below)
ROLE_LISTS = {"residual_add": ("o", "down"), "early_release": ("o", "gate_up", "down")}
# per list, the switch that names its roles by hand, and the roles it takes at every shape when unset
ROLE_SWITCHES = {"residual_add": "RUNTIME_RESIDUAL_ADD", "early_release": "RUNTIME_GEMV_EARLY"}
DEFAULT_ROLES = {"residual_add": ("o",), "early_release": ()}
# per list, the (role, N, K) the card's shipped or stored choices name (set by gemv_tuning.tune_shapes before
# capture, and by runtime/engine/step_tuning.py where it times the roles in the step)
SHIPPED_ROLES: dict[str, set[tuple[str, int, int]]] = {field: set() for field in ROLE_LISTS}


def shipped_role(field: str, role: str, N: int, K: int) -> bool:
    """Whether the card's shipped `field` list names the (N, K) `role` GEMV."""
    return (role, N, K) in SHIPPED_ROLES[field]


def _env_roles(variable: str, field: str) -> set[str] | None:
    """What an environment `variable` names, comma-separated: roles of ROLE_LISTS[field] ("down":
    every shape), roles at one shape ("down:2048x8192", as a tuning file lists them), or "none";
    None where it is unset (the card's shipped choices decide then)."""
    raw = (os.environ.get(variable) or "").strip()
    if not raw:
        return None
    roles = set() if raw == "none" else {r.strip() for r in raw.split(",") if r.strip()}
    pattern = rf"({'|'.join(ROLE_LISTS[field])})(:\d+x\d+)?"
    unknown = sorted(r for r in roles if re.fullmatch(pattern, r) is None)
    if unknown:
        choices = ", ".join(ROLE_LISTS[field])
        raise ValueError(
            f"{variable}={raw!r}: {unknown} unknown; name roles of {choices} (role:NxK for one shape), or none"
        )
    return roles


def env_names(roles: set[str], role: str, N: int, K: int) -> bool:
    """Whether an _env_roles set names the (N, K) `role` GEMV: by its role alone or at this shape."""
    return role in roles or f"{role}:{N}x{K}" in roles


def residual_add_roles() -> set[str] | None:
    """RUNTIME_RESIDUAL_ADD: the batch-1 projections ("o", "down") whose GEMV adds the residual in its
    epilogue (linear_add), or "none"; None where it is unset (the default: ops.residual_epilogue). In
    same-process A/Bs on the H100 the o GEMV's add was -10..+3 us per step, the down GEMV's -9..-23 us
    on Llama-3.2-1B but +16..+35 us on Qwen3-1.7B (not explained yet; notes/kernels.md), so the
    default takes o everywhere and down where the card's shipped choices name its shape."""
    return _env_roles(ROLE_SWITCHES["residual_add"], "residual_add")


def early_release_roles() -> set[str] | None:
    """RUNTIME_GEMV_EARLY: the batch-1 projections ("o", "gate_up", "down") whose GEMV lets the next
    kernel launch right after its wait instead of after its loop, or "none"; None where it is unset
    (the default: early_release). Released early, the next GEMV's programs take the SM slots this
    one's last wave leaves and load their first weight tile under its tail. In same-process A/Bs on
    the H100 gate_up and down together were -13..-19 us per step on Llama-3.2-1B and -11..-19 us on
    Qwen3-1.7B (either alone +3 us there), +75 us on gemma-3-1b-it; o with them +3..+6 on Llama
    (notes/kernels.md)."""
    return _env_roles(ROLE_SWITCHES["early_release"], "early_release")


def early_release(weight: torch.Tensor, role: str) -> bool:
    """Whether the `role` projection's batch-1 GEMV (W (N, K); gate_up's is [gate | up]) releases the
    next kernel right after its wait: the role named by RUNTIME_GEMV_EARLY, or where that is unset, a
    role and shape the card's shipped choices name. Only the one-row Triton launch reads it."""
    roles = early_release_roles()
    if roles is not None:
        return env_names(roles, role, *weight.shape)
    return role in DEFAULT_ROLES["early_release"] or shipped_role("early_release", role, *weight.shape)


def tuning_enabled() -> bool:
    """RUNTIME_GEMV_TUNE=0 launches the heuristic's blocks even where tune() chose others."""
    return os.environ.get("RUNTIME_GEMV_TUNE", "1") != "0"
