"""L2 prefetch of KV-cache blocks from inside a Triton kernel: `prefetch.global.L2` per 128-byte line,
which writes no register and holds nothing up (the program goes on while L2 fetches).

The decode attention's split program asks for its own later blocks before its PDL wait
(attention_plan.l2_ahead): a batch bucket's program walks several blocks one after another, and the
qkv product before it leaves DRAM time idle that those blocks can use. Portable PTX (every CUDA card
Triton builds for); never under the CPU interpreter.
"""

from __future__ import annotations

from runtime.kernels._triton import jit, tl

LINE_BYTES = 128  # one L2 line


@jit
def _prefetch_lines(ptrs):
    """Ask L2 for the line holding each address; 0 for each (the asm's one output, which the caller
    sums into a value it keeps, so no pass may drop the prefetches as unused)."""
    return tl.inline_asm_elementwise(
        "prefetch.global.L2 [$1];\n\tmov.u32 $0, 0;", "=r,l", [ptrs], dtype=tl.int32, is_pure=False, pack=1
    )


@jit
def prefetch_cache_blocks(
    k_base, v_base, first, end, step, length, k_ss, v_ss, head_dim,
    BLOCK_N: tl.constexpr, ROW_LINES: tl.constexpr, LINE_ELEMS: tl.constexpr,
):  # fmt: skip
    """Every line of K's and V's blocks first, first + step, ... below block `end`, of one (row, kv
    head) whose live length is `length`: a block is BLOCK_N slots, a slot's row head_dim elements in
    ROW_LINES lines of LINE_ELEMS (k_ss, v_ss: elements between slots). Slots past the length ask
    for the last live one again and lines past the row for its last element, so no address leaves
    the cache. Returns 0 (int32), to be kept by the caller."""
    n = tl.arange(0, BLOCK_N)
    lines = tl.minimum(tl.arange(0, ROW_LINES) * LINE_ELEMS, head_dim - 1)[None, :]
    asked = tl.zeros((BLOCK_N, ROW_LINES), tl.int32)
    for blk in range(first, end, step):
        slots = tl.minimum(blk * BLOCK_N + n, length - 1).to(tl.int64)[:, None]
        asked += _prefetch_lines(k_base + slots * k_ss + lines)
        asked += _prefetch_lines(v_base + slots * v_ss + lines)
    return tl.sum(tl.sum(asked, axis=1), axis=0)
