"""How the decode attention kernels launch, from shapes, the device and the A/B switches only (so a
captured graph keeps its grid): K/V block size and splits per (row, kv head), warps and pipeline
stages of the split kernel, and how the partials are merged. The numbers behind each default are
in notes/kernels.md (H100).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import torch

from runtime.kernels._triton import INTERPRETING, cdiv, next_pow2, released_early
from runtime.kernels.position_plan import spill_block_n
from runtime.kernels.switches import env_choice


@functools.lru_cache(maxsize=8)
def sm_count(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4  # the CPU interpreter: a few splits, so the merge is exercised


def split_plan(
    batch: int, kv_heads: int, slots: int, head_dim: int, elem_bytes: int, device: torch.device
) -> tuple[int, int]:
    """(BLOCK_N, P) from shapes and the device only, so a captured graph keeps its grid.

    P programs per (row, kv head) aim for about RUNTIME_ATTN_PER_SM (default 2) programs per SM
    once the live length has P blocks; a longer sequence makes each program loop over more blocks
    instead of growing the grid. The setting matters for batch buckets only: at batch 1 P is
    capped by the cache's blocks. A batch bucket whose (row, kv head) pairs alone fill the card
    (>= 90% of its SMs) takes one split, no merge, and a deeper loop (split_stages): on the H100,
    Llama's and Qwen3's batch-16 steps -8..-12 / -42..-50 us against 3 splits + merge near position
    300, Llama's +5..+15 us near 1060 (notes/kernels.md); RUNTIME_ATTN_BATCH_PLAN=spread keeps the
    per-SM rule there (the A/B)."""
    # 16 KB K/V tiles at most: larger ones spill registers (checked in the sm_80 / sm_90 builds);
    # RUNTIME_ATTN_WIDE_BLOCKS (an A/B) gives 128-byte rows (D = 64, bf16) 128-slot blocks too: "1"
    # at every batch, "batch" where a batch bucket's pairs fill the card (one program walks a row's
    # whole cache: half the blocks in its chain)
    row_bytes = head_dim * elem_bytes
    block_n = 64 if row_bytes <= 256 else 32 if row_bytes <= 512 else 16
    wide = env_choice("RUNTIME_ATTN_WIDE_BLOCKS", ("0", "1", "batch"), "0")
    if row_bytes <= 128 and (
        wide == "1" or (wide == "batch" and batch > 1 and fills_card(batch, kv_heads, device))
    ):
        block_n = 128
    if batch == 1 and spill_block_n(row_bytes):  # a spill graph's step (position_plan.py)
        block_n = spill_block_n(row_bytes)
    if os.environ.get("RUNTIME_ATTN_BLOCK_N"):  # an A/B knob: slots per K/V block, any D
        block_n = int(os.environ["RUNTIME_ATTN_BLOCK_N"])
    per_sm = int(os.environ.get("RUNTIME_ATTN_PER_SM", "2") or 2)
    splits = max(1, cdiv(per_sm * sm_count(device), batch * kv_heads))
    if batch > 1 and fills_card(batch, kv_heads, device):
        splits = 1
    if batch > 1 and os.environ.get("RUNTIME_ATTN_BATCH_SPLITS"):  # an A/B knob for batch buckets;
        splits = int(os.environ["RUNTIME_ATTN_BATCH_SPLITS"])  # 1: each program writes its output
    if batch == 1 and os.environ.get("RUNTIME_ATTN_ROW_SPLITS"):  # the same A/B knob for one row
        splits = int(os.environ["RUNTIME_ATTN_ROW_SPLITS"])
    return block_n, min(splits, cdiv(slots, block_n))


def fills_card(batch: int, kv_heads: int, device: torch.device) -> bool:
    """Whether a batch bucket's (row, kv head) pairs alone fill a GPU: one program each streams all
    of its cache (RUNTIME_ATTN_BATCH_PLAN=fill, the default; "spread" never). Never on the CPU, so the
    CPU interpreter's stand-in SM count keeps the batch tests' merges."""
    plan = env_choice("RUNTIME_ATTN_BATCH_PLAN", ("fill", "spread"), "fill")
    on_gpu = device.type in ("cuda", "meta")  # meta: the compile tests record launches as for a GPU
    return plan == "fill" and on_gpu and 10 * batch * kv_heads >= 9 * sm_count(device)


def split_warps(head_dim: int, elem_bytes: int, rows: int) -> int:
    """8 warps for one row (a few programs, each one block: more warps shorten its chain; on the
    H100 Gemma's batch-1 step -41..-48 us, Llama and Qwen3 within the noise) and for fp32 tiles at D >= 128
    (registers); 4 for batch buckets (the grid fills the card: Qwen3's batch-16 step was +90..+120
    us with 8). RUNTIME_ATTN_WARPS overrides it (an A/B knob)."""
    forced = os.environ.get("RUNTIME_ATTN_WARPS")
    if forced:
        return int(forced)
    return 8 if rows == 1 or (elem_bytes == 4 and head_dim >= 128) else 4


def split_stages(rows: int = 1, splits: int = 0) -> int:
    """Software-pipeline depth of the split kernel's block loop: RUNTIME_ATTN_STAGES, else 3 where
    a batch bucket runs one split per (row, kv head) (each program loops over the whole cache, one
    program per SM: on the H100 3 stages beat 2 there and matched or beat 4), else 2 (4 stages cost
    batch 1 up to 15 us per step and the split batch-16 step up to 127 us)."""
    forced = os.environ.get("RUNTIME_ATTN_STAGES")
    if forced:
        return int(forced)
    return 3 if rows > 1 and splits == 1 else 2


def merge_block(head_dim: int, splits: int) -> int:
    """Partials merged per step of merge_head: a (BLOCK_P, BLOCK_D) fp32 tile of <= 4096 values."""
    return min(16 if head_dim > 128 else 32, max(16, next_pow2(splits)))


def merge_block_d(heads: int, head_dim: int, device: torch.device) -> int:
    """Columns each merge program takes (BLOCK_D). RUNTIME_ATTN_MERGE_CHUNKS=c gives each head c
    programs, each merging D / c columns: a long cache's many partials are read by c programs instead
    of one. The default, "auto", where the B * H heads alone would leave SMs idle (batch 1; Gemma's 4
    heads up to batch 32): 16-column chunks up to D = 128 (Llama's D = 64: 4, Qwen3's 128: 8), 4
    beyond (Gemma's 256); else 1. On the H100, 4 chunks against 1: Qwen3 at position 2000 -16..-41 us
    per step, Gemma -12..-16 us, Llama and Qwen3 near position 300 within the noise; 8 against 4,
    three trials: Qwen3 near 1900 -18 / -6 / -14, near 256 -6 / -5 / -5, Gemma +7..+20, +4..+9."""
    choice = os.environ.get("RUNTIME_ATTN_MERGE_CHUNKS") or "auto"
    if choice == "auto":
        choice = ("8" if head_dim <= 128 else "4") if heads < sm_count(device) else "1"
    chunks = max(1, min(int(choice), next_pow2(head_dim) // 16))
    return max(16, next_pow2(head_dim) // next_pow2(chunks))


def merge_warps(block_p: int, block_d: int) -> int:
    """Warps per merge program: one where its (BLOCK_P, BLOCK_D) tile holds at most 512 values (16 per
    thread of one warp: batch 1's 16-column chunks of Llama and Qwen3), else 4. RUNTIME_MERGE_WARPS
    overrides it (an A/B knob). H100, one warp against 4, us per step: Qwen3 near 1900 -8 / -11 / -1,
    near 256 -14 / -4; Llama near 256 +1 / +1; 2 warps slower (Qwen3 +3..+13); 8 slower at batch 16."""
    forced = os.environ.get("RUNTIME_MERGE_WARPS")
    if forced:
        return int(forced)
    return 1 if block_p * block_d <= 512 else 4


def merge_launch(launch: dict) -> dict:
    """The merge kernel's PDL arguments: the step's (`launch`, from _triton.pdl), or with
    RUNTIME_MERGE_PDL=early the early release (right after its wait) where PDL is on, so the o
    projection's programs become resident and load their first weight tile while the merge runs
    (the merge is one small wave: they take no SM slot it needs). An A/B knob; default "late"."""
    choice = env_choice("RUNTIME_MERGE_PDL", ("late", "early"), "late")
    return released_early(launch) if choice == "early" else launch


QKV_EARLY_PER_SM = 4  # the most qkv GEMV programs per SM at which it releases the attention early
QKV_LONG_PER_SM = 8  # ... early past the L2 spill position (timed: Qwen3's 7.8 gains, Llama's 11.6 not)
QKV_RELEASES = ("auto", "early", "long", "late")


@dataclass(frozen=True)
class QkvRelease:
    """What the batch-1 qkv GEMV needs to release the attention early past a position: the row's
    position (1,) (read in the kernel: a captured step serves every position) and the first
    position at which one step's K/V reads no longer fit L2 (l2_spill_position)."""

    positions: torch.Tensor
    from_position: int


NEVER = 2**31 - 1  # a position no cache reaches


def l2_bytes(device: torch.device) -> int:
    """The card's L2 size in bytes; 0 off CUDA."""
    if device.type != "cuda":
        return 0
    return torch.cuda.get_device_properties(device).L2_cache_size


def l2_spill_position(kv_bytes_per_position: int, device: torch.device) -> int:
    """The first position at which a row's K/V (kv_bytes_per_position over its layers) outgrows the
    card's L2: below it the cache stays in L2 between steps (the weights stream evict-first)."""
    size = l2_bytes(device)
    if size <= 0 or kv_bytes_per_position <= 0:
        return NEVER
    return cdiv(size, kv_bytes_per_position)


AHEAD_L2_SHARE = 0.5  # the share of L2 the blocks asked for ahead may fill (the rest: weights, rows)
AHEAD_BATCH_BLOCKS = 2  # "batch": blocks asked ahead by a batch bucket's one program per (row, kv head)


def l2_ahead(programs: int, block_bytes: int, device: torch.device, walks_cache: bool) -> int:
    """How many of its later cache blocks each split program asks L2 for before its PDL wait
    (l2_prefetch.prefetch_cache_blocks), so that its block loop after the wait reads them from L2
    while the qkv product before it, which the program overlaps under PDL, leaves DRAM time idle.
    walks_cache: the program walks its row's whole cache one block after another (a batch bucket's
    one split per (row, kv head); block_bytes: one block of K and V). RUNTIME_ATTN_AHEAD: "batch"
    (the default: AHEAD_BATCH_BLOCKS where walks_cache, else none), "auto" (as many blocks as
    AHEAD_L2_SHARE of the card's L2 holds over all `programs`), or a count (0: none); "batch" is
    capped by "auto"'s budget too. On the H100, Qwen3's batch-16 step against none, two trials each:
    2 blocks -12 / -28 and -8 / -25 us near position 300, -9 / -30 near 1050; auto (6) -6 / -18; Llama
    within the noise near 300, +5 / +10 near 1050; Gemma (not one split) unchanged (notes/kernels.md).
    Never under the CPU interpreter (inline PTX)."""
    choice = os.environ.get("RUNTIME_ATTN_AHEAD") or "batch"
    budget = int(AHEAD_L2_SHARE * l2_bytes(device)) // max(1, programs * block_bytes)
    if choice == "batch":
        count = min(AHEAD_BATCH_BLOCKS, budget) if walks_cache else 0
    elif choice == "auto":
        count = budget
    elif choice.isdigit():
        count = int(choice)
    else:
        raise ValueError(f"RUNTIME_ATTN_AHEAD={choice!r}: choose batch, auto or a number of blocks (0: none)")
    return 0 if INTERPRETING else count


def qkv_release(programs: int, device: torch.device) -> str:
    """When the batch-1 qkv GEMV (`programs` of them) lets the attention launch: "early" (right after
    its own wait), "late" (after its loop) or "long" (early once the row's position reaches
    QkvRelease.from_position, else late). Released early, split programs take SM slots as qkv
    programs leave and run their loads (the first K/V block, the norm weights and rope tables) and
    Gemma's long prologue while the GEMV drains. H100, same-process A/Bs against the late release,
    us per step: Gemma (384 programs, 2.9 per SM) -13..-22 near position 300; Qwen3 (1024, 7.8 per
    SM) +12..+15 near 300 but -9..-15 near 2000, where the K/V blocks come from DRAM, not L2; Llama
    (1536, 11.6 per SM, some waiting for a slot) +26. "long", reading the position before the wait,
    against late, Qwen3 near 1900: -26 / -4, -8 / -5, -9 / -5 / -12 us; near 256: +2 / 0, -3 / +6,
    +3 / +3 / +2; Llama near 1900 -3 / +6 / +8, near 256 -3 / +2 / -5 (notes/kernels.md, sixteenth
    session): Llama's grid is about as large as an SM holds at once (~11 programs of 4 warps at
    38-45 registers in its sm_90 builds), so released programs take slots qkv programs still wait
    for. RUNTIME_QKV_PDL: "auto" (the default: early up to QKV_EARLY_PER_SM programs per SM, long up
    to QKV_LONG_PER_SM, else late) or one of the three."""
    choice = env_choice("RUNTIME_QKV_PDL", QKV_RELEASES, "auto")
    if choice != "auto":
        return choice
    if programs <= QKV_EARLY_PER_SM * sm_count(device):
        return "early"
    return "long" if programs <= QKV_LONG_PER_SM * sm_count(device) else "late"


def merge_in_kernel() -> bool:
    """RUNTIME_ATTN_MERGE=last: the last split program of each (row, kv head) to finish merges the
    partials (one launch); by default ("separate") a second launch merges them, one program per
    head. On the H100 the second launch was as fast or faster (notes/kernels.md): the last
    program merges its G heads one after another."""
    return env_choice("RUNTIME_ATTN_MERGE", ("last", "separate"), "separate") == "last"


def prefetch_enabled() -> bool:
    """RUNTIME_ATTN_PREFETCH=0 makes the split kernel wait for the previous kernel before it reads
    the positions and its first cache block (same-process A/B of the prefetch; default on)."""
    return os.environ.get("RUNTIME_ATTN_PREFETCH", "1") != "0"


def early_tables() -> bool:
    """RUNTIME_ATTN_EARLY_TABLES=0 makes the split kernel load the q/k-norm weights and the rope
    tables after its wait, with the qkv row, instead of before it (same-process A/B; default on)."""
    return os.environ.get("RUNTIME_ATTN_EARLY_TABLES", "1") != "0"


def early_row_scale() -> bool:
    """RUNTIME_ATTN_EARLY_ROW_SCALE=0 makes the split kernel take a batch row's 1 / rms (the folded
    norm's row scale) after its wait, with the qkv row, instead of before it (same-process A/B;
    default on)."""
    return os.environ.get("RUNTIME_ATTN_EARLY_ROW_SCALE", "1") != "0"


def late_v(batch: int) -> bool:
    """RUNTIME_ATTN_V_MOVE: "late" moves the split kernel's first cache block's V to the dot's layout
    only after the block's softmax, so that where the block comes from DRAM (past the L2 spill
    position) the scores need not wait for V's bytes; "early" moves K and V together, before the
    scores; "auto" (the default): late at batch 1, early for batch buckets. Same-process A/Bs on
    the H100 (notes/kernels.md): batch 1 near position 1900 Qwen3 -15 / -6 / -13 us per step, Llama
    -2, Gemma -2, near 256 within +-4; batch 16 mixed (Gemma 0 / +19 near 256)."""
    choice = env_choice("RUNTIME_ATTN_V_MOVE", ("auto", "early", "late"), "auto")
    return choice == "late" or (choice == "auto" and batch == 1)


def grouped_loads() -> bool:
    """RUNTIME_ATTN_LOADS: "grouped" (the default) has the split kernel issue its first cache block,
    the q/k-norm weights and the rope tables as one group of loads (the tables in the shape of the
    heads they scale, the block's move to the dot layout held back until after the prologue);
    "serial" issues them one group after another, each waiting for the one before (same-process
    A/B, H200: grouped 5-33 us faster per step at batch 1 and 10-36 us at batch 16, notes/kernels.md).
    Never under the CPU interpreter (inline PTX)."""
    return (
        env_choice("RUNTIME_ATTN_LOADS", ("serial", "grouped"), "grouped") == "grouped" and not INTERPRETING
    )
