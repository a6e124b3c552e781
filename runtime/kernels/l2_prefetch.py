"""Weights pulled into L2 ahead of the GEMV that reads them, while the decode step is latency-bound.

At batch 1 a layer's attention (split kernel + merge, ~6 us on an H100) moves well under a megabyte,
so the card's DRAM idles there; the o projection after it then streams its weight from DRAM with
a short kernel that never reaches copy speed. A prefetch kernel on a side stream, forked after the
qkv projection, issues `prefetch.global.L2` for the next weights (the o projection, then the first
rows of gate/up) while attention runs: the GEMVs after it find those lines in L2. It reads nothing
into registers and writes nothing, so results do not change (the reference is to do nothing).

Portable PTX (prefetch.global.L2 exists on every CUDA card Triton supports); elsewhere (the CPU
interpreter, no Triton) a no-op.
"""

from __future__ import annotations

import torch

from runtime.kernels._triton import AVAILABLE, INTERPRETING, cdiv, jit, tl

LINE = 128  # bytes per prefetch: one L2 line
THREADS = 128  # lanes per program (4 warps); each issues LINES_PER_LANE prefetches
LINES_PER_LANE = 8


@jit
def _prefetch_kernel(
    base_ptr, lines, sink_ptr, LINE_BYTES: tl.constexpr, BLOCK: tl.constexpr, STEPS: tl.constexpr
):
    # base_ptr: uint8 view of the region, `lines` L2 lines long; program p takes BLOCK * STEPS lines,
    # each lane a line per step; addresses past the region are clamped to its last line
    pid = tl.program_id(0)
    got = tl.zeros((BLOCK,), dtype=tl.int32)
    for step in range(STEPS):
        line = pid * (BLOCK * STEPS) + step * BLOCK + tl.arange(0, BLOCK)
        line = tl.minimum(line, lines - 1)
        ptrs = base_ptr + line.to(tl.int64) * LINE_BYTES
        got += tl.inline_asm_elementwise(
            "prefetch.global.L2 [$1];\n\tmov.u32 $0, 0;",
            "=r,l",
            [ptrs],
            dtype=tl.int32,
            is_pure=False,
            pack=1,
        )
    # never true (every lane's asm yields 0): keeps the prefetches from being optimised away
    tl.store(sink_ptr + tl.arange(0, BLOCK), got, mask=got != 0)


def can_prefetch(t: torch.Tensor) -> bool:
    """Compiled Triton and a CUDA tensor (or a meta one: the compile test records the launch)."""
    return AVAILABLE and not INTERPRETING and t.device.type in ("cuda", "meta")


def prefetch_l2(region: torch.Tensor, sink: torch.Tensor) -> None:
    """Issue L2 prefetches for every line of `region` (a contiguous tensor or slice of one); sink:
    an int32 device tensor of >= THREADS elements that is never written. No-op off CUDA."""
    if not can_prefetch(region) or region.numel() == 0:
        return
    assert region.is_contiguous(), "prefetch a contiguous region"
    raw = region.view(-1).view(torch.uint8)
    lines = cdiv(raw.numel(), LINE)
    per_program = THREADS * LINES_PER_LANE
    _prefetch_kernel[(cdiv(lines, per_program),)](
        raw, lines, sink, LINE_BYTES=LINE, BLOCK=THREADS, STEPS=LINES_PER_LANE, num_warps=THREADS // 32
    )
