"""L2 prefetch of KV-cache blocks from inside a Triton kernel: `prefetch.global.L2` per 128-byte line,
which writes no register and holds nothing up (the program goes on, or ends, while L2 fetches).
The decode attention uses it to ask for the next layer's blocks (attention_plan.next_kv_prefetch).
Portable PTX (every CUDA card Triton builds for); never under the CPU interpreter.
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
    k_base, v_base, first, step, length, k_ss, v_ss,
    BLOCK_N: tl.constexpr, ROW_LINES: tl.constexpr, LINE_ELEMS: tl.constexpr,
):  # fmt: skip
    """Every line of K's and V's blocks first, first + step, ... below the live `length` of one
    (row, kv head): a block is BLOCK_N slots, a slot's row ROW_LINES lines of LINE_ELEMS elements
    (k_ss, v_ss: elements between slots). Slots past the length ask for the last live one again.
    Returns 0 (int32), to be kept by the caller."""
    n = tl.arange(0, BLOCK_N)
    lines = (tl.arange(0, ROW_LINES) * LINE_ELEMS)[None, :]
    asked = tl.zeros((BLOCK_N, ROW_LINES), tl.int32)
    for blk in range(first, tl.cdiv(length, BLOCK_N), step):
        slots = tl.minimum(blk * BLOCK_N + n, length - 1).to(tl.int64)[:, None]
        asked += _prefetch_lines(k_base + slots * k_ss + lines)
        asked += _prefetch_lines(v_base + slots * v_ss + lines)
    return tl.sum(tl.sum(asked, axis=1), axis=0)


@jit
def prefetch_next_layer(
    nk_ptr, nv_ptr, b, h, split, n_splits, pos_ptr, next_slots, nk_sb, nk_sh, nk_ss, nv_sb, nv_sh, nv_ss,
    BLOCK_N: tl.constexpr, ROW_LINES: tl.constexpr, LINE_ELEMS: tl.constexpr,
):  # fmt: skip
    """The decode attention's split program (row b, kv head h, split): the next layer's cache blocks
    split, split + n_splits, ... of its (row, kv head), below that layer's live length (min(position
    + 1, next_slots): its cache may be a ring of another size), asked of L2. Returns 0."""
    length = tl.minimum(tl.load(pos_ptr + b) + 1, next_slots).to(tl.int32)
    nk_base = nk_ptr + b.to(tl.int64) * nk_sb + h.to(tl.int64) * nk_sh
    nv_base = nv_ptr + b.to(tl.int64) * nv_sb + h.to(tl.int64) * nv_sh
    return prefetch_cache_blocks(
        nk_base, nv_base, split, n_splits, length, nk_ss, nv_ss, BLOCK_N, ROW_LINES, LINE_ELEMS
    )
