"""Launch configuration of the batch-rows kernel (fused_rows.py): a rough cost model that picks the
blocks and split from the shape, the candidates gemv_tuning.tune_rows times on the card, and its
choices (config_for: the tuned blocks where there are, else the model's).
"""

from __future__ import annotations

import torch

from runtime.kernels._triton import INTERPRETING, cdiv, next_pow2
from runtime.kernels.gemv_blocks import block_override, tuning_enabled

MIN_ROWS, MAX_ROWS = 2, 16  # one row is fused_linear's; BLOCK_M = 16 is tl.dot's smallest tile
BLOCK_M = 16

# ---------------------------------------------------------------- launch model (rough H100 SXM figures)
SMS = 132
CLOCK_GHZ = 1.75
HBM_GBPS = 3000.0  # achievable HBM read bandwidth
SM_GBPS = 50.0  # what one SM pulls from L2 with a few tiles in flight
SPLIT_US = 1.0  # the split path's tail: partial stores, the arrival atomic, the last program's sum
L1_BYTES = 128 << 10  # a program's activation rows up to this size are read again from L1, not L2
# per prologue: (K-long activation vectors it reads, passes over the whole K for the row statistics
# before the product, issue cycles per row element over those passes, and in the product's prologue);
# the cycles are guessed from instruction counts (act: two MUFU ops per element at 16 per clock per SM)
_PROLOGUE_COST = {
    "linear": (1, 0, 0.0, 0.01),
    "act": (2, 0, 0.0, 0.15),
    "norm_first": (1, 1, 0.03, 0.07),
    "norm_add": (2, 1, 0.06, 0.10),
    "norm_sandwich": (2, 2, 0.12, 0.15),
}
# what predict_us says of rows_config's choice at 16 bf16 rows (a model, not measured; launch gaps not
# included): Qwen3-1.7B qkv 5.6 us, o 2.8, gate_up 16.8, down 9.4 (split 2); Llama 3.2 1B qkv 5.2, o 2.8,
# gate_up 22.4, down 12.2 (split 2); Gemma 3 1B qkv 2.9, o 1.3, gate_up 10.6, down 6.7 (split 8)
_OP_COST = {
    "linear": "linear",
    "act_linear": "act",
    "norm_linear": "norm_add",
    "lm_head": "norm_add",
    "gated_linear": "gated",
}

# (BLOCK_N, BLOCK_K, SPLIT, num_warps, num_stages) that tune_rows times (SPLIT is capped by K at launch)
CANDIDATE_CONFIGS = [
    (16, 256, 1, 4, 4), (32, 256, 1, 4, 4), (64, 128, 1, 8, 4), (128, 64, 1, 8, 4), (64, 128, 2, 8, 4),
    (64, 128, 4, 8, 4), (128, 64, 4, 8, 4), (32, 256, 4, 4, 4), (128, 64, 8, 8, 4),
]  # fmt: skip
# the batch LM head (op "logits": a plain product over a 128k-262k-row matrix, after the final
# norm's kernel): 32 x 256 blocks, 4 warps, 4 stages. On the H100, batch-16 step against cuBLAS
# (two trials): Llama -6 / -13, Qwen3 -30 / -17, Gemma -22 / -9 us; 64 x 128 on 8 warps within a few
# us of it; the cost model's widest block (128 x 64) a tie with cuBLAS
LOGITS_BLOCKS = (32, 256, 1, 4, 4)
_TUNED_ROWS: dict[tuple[str, int, int, int, torch.dtype], tuple[int, int, int, int, int]] = {}


def _block_k(block_n: int, K: int, elem_bytes: int) -> int:
    """A ~16 KB weight tile, 64..256 columns (each W row chunk >= 128 B), never past next_pow2(K)."""
    return max(16, min(next_pow2(K), 256, max(64, 16384 // (block_n * elem_bytes))))


def _slices(K: int, block_k: int, split: int) -> tuple[int, int]:
    """(splits, columns per split): whole BLOCK_K chunks per slice and no empty slice."""
    chunks = cdiv(K, block_k)
    per = cdiv(chunks, max(1, min(split, chunks)))
    return cdiv(chunks, per), per * block_k


def predict_us(N: int, K: int, elem_bytes: int, cost: str, block_n: int, block_k: int, split: int) -> float:
    """A rough model of the kernel's microseconds at 16 rows (a prediction, not a measurement): the busiest
    SM runs ceil(programs / SMS) programs, each limited by its prologue's issue cycles or by the bytes it
    pulls at SM_GBPS (its W slice, and the activation rows: the statistics read them over the whole K, once
    if they fit L1_BYTES, else once a pass), and the whole never beats W / HBM bandwidth."""
    vectors, passes, stats_cycles, main_cycles = _PROLOGUE_COST[cost]
    splits, k_split = _slices(K, block_k, split)
    k_len = min(K, k_split)
    programs = cdiv(N, block_n) * splits
    row_bytes = BLOCK_M * vectors * elem_bytes  # per column of K
    if passes == 0:
        activations = row_bytes * k_len
    elif row_bytes * K <= L1_BYTES:
        activations = row_bytes * K  # the later passes hit L1
    else:
        activations = row_bytes * (passes * K + k_len)
    issue_us = BLOCK_M * (stats_cycles * K + main_cycles * k_len) / (CLOCK_GHZ * 1e3)
    program_us = max(issue_us, (block_n * k_len * elem_bytes + activations) / (SM_GBPS * 1e3))
    t = max(cdiv(programs, SMS) * program_us, N * K * elem_bytes / (HBM_GBPS * 1e3))
    return t + (SPLIT_US if splits > 1 else 0.0)


def rows_config(
    N: int, K: int, elem_bytes: int, cost: str = "linear", splits: tuple[int, ...] = (1, 2, 4, 8)
) -> tuple[int, int, int, int, int]:
    """(BLOCK_N, BLOCK_K, SPLIT, num_warps, num_stages) for an (N, K) weight at up to 16 rows.

    BLOCK_N and SPLIT minimise predict_us over BLOCK_N 16..128 and SPLIT in splits (each slice keeps
    >= 4 chunks for the pipeline); within 5% of the best, the fewest splits, then the widest BLOCK_N
    (fewer programs reread the activations). BLOCK_K: a ~16 KB weight tile. 8 warps where the prologue
    has real work per element (more warps to hide the MUFU / ALU latency), else 4; 4 stages of
    (W tile + input tile) within 96 KB of shared memory, else 3 or 2.
    """
    if cost == "gated":
        return _gated_config(N, K, elem_bytes)
    scored = []
    for block_n in (16, 32, 64, 128):
        block_k = _block_k(block_n, K, elem_bytes)
        for split in splits:
            if split > 1 and cdiv(K, block_k) < 4 * split:
                break
            scored.append(
                (predict_us(N, K, elem_bytes, cost, block_n, block_k, split), split, block_n, block_k)
            )
    best = min(t for t, *_ in scored)
    near = [c for c in scored if c[0] <= 1.05 * best]
    _, split, block_n, block_k = min(near, key=lambda c: (c[1], -c[2]))
    num_warps = 8 if _PROLOGUE_COST[cost][3] >= 0.05 else 4
    stage_bytes = (block_n + BLOCK_M) * block_k * elem_bytes
    num_stages = 4 if 4 * stage_bytes <= 96 << 10 else 3 if 3 * stage_bytes <= 144 << 10 else 2
    return block_n, block_k, split, num_warps, num_stages


def _gated_config(N: int, K: int, elem_bytes: int) -> tuple[int, int, int, int, int]:
    """gated_linear (N outputs of a (2N, K) [gate | up] matrix, K never split: the epilogue needs
    whole sums): the plain product's choice for the whole matrix at one split, its BLOCK_N weight
    rows per program shared half and half between gate and up rows of the same outputs."""
    block_n, block_k, _, num_warps, num_stages = rows_config(2 * N, K, elem_bytes, "linear", splits=(1,))
    return max(16, block_n // 2), block_k, 1, num_warps, num_stages


def config_for(
    op: str, M: int, N: int, K: int, dtype: torch.dtype, cost: str
) -> tuple[int, int, int, int, int]:
    """RUNTIME_ROWS_BLOCKS' entry for this launch (an in-graph A/B, "op:NxK=BLOCK_N/BLOCK_K/SPLIT/
    warps/stages"), else tune_rows()'s choice for this shape, else LOGITS_BLOCKS for the LM head,
    else the heuristic; BLOCK_K never past next_pow2(K)."""
    config = block_override(op, N, K, "RUNTIME_ROWS_BLOCKS", "BLOCK_N/BLOCK_K/SPLIT/warps/stages")
    if config is None and tuning_enabled():
        config = _TUNED_ROWS.get((op, M, N, K, dtype))
    if config is None and INTERPRETING:
        # NumPy runs the programs one after another: a few big ones (the tests plant GPU-like blocks)
        return min(64, max(16, next_pow2(N))), max(16, min(256, next_pow2(K))), 1, 4, 1
    if config is None and op == "logits":
        config = LOGITS_BLOCKS
    if config is None:
        return rows_config(N, K, dtype.itemsize, cost)
    block_n, block_k, split, num_warps, num_stages = config
    return block_n, max(16, min(block_k, next_pow2(K))), split, num_warps, num_stages
