"""Weights pulled into L2 by the attention kernel, for the GEMVs after it.

At batch 1 a layer's attention (split kernel + merge, ~6 us on an H100) moves well under a megabyte,
so the card's DRAM idles there, and the o projection after it streams its weight with a short
kernel that never reaches copy speed. The attention split kernel's programs can issue
`prefetch.global.L2` for the next weights (the o projection, then the first rows of gate and up)
first thing, before their PDL wait: fire-and-forget instructions that hold no register and write
nothing, so results do not change (the reference is to do nothing), and the GEMVs after attention
find those lines in L2. Which slices, and how many bytes: runtime/models/weight_prefetch.py.

Portable PTX (prefetch.global.L2 exists on every CUDA card Triton supports); under the CPU
interpreter, which cannot run inline PTX, never compiled in (L2_PREFETCH off).
"""

from __future__ import annotations

import torch

from runtime.kernels._triton import AVAILABLE, INTERPRETING, cdiv, jit, tl

LINE = 128  # bytes per prefetch: one L2 line
REGIONS = 3  # slices the kernel takes: o_proj, gate rows, up rows


@jit
def prefetch_share(base_ptr, lines, program, programs, BLOCK: tl.constexpr):
    """This program's share of the `lines` 128-byte lines from base_ptr (uint8): BLOCK lanes, one
    line each per step; a share past the end is clamped to the last line."""
    per = tl.cdiv(lines, programs)
    for first in range(program * per, tl.minimum((program + 1) * per, lines), BLOCK):
        line = tl.minimum(first + tl.arange(0, BLOCK), lines - 1)
        ptrs = base_ptr + line.to(tl.int64) * 128
        # not pure: kept although its value (always 0) is unused
        tl.inline_asm_elementwise(
            "prefetch.global.L2 [$1];\n\tmov.u32 $0, 0;",
            "=r,l",
            [ptrs],
            dtype=tl.int32,
            is_pure=False,
            pack=1,
        )


def can_prefetch(t: torch.Tensor) -> bool:
    """Compiled Triton and a CUDA tensor (or a meta one: the compile test records the launch)."""
    return AVAILABLE and not INTERPRETING and t.device.type in ("cuda", "meta")


def prefetch_args(regions: list[torch.Tensor] | tuple, dummy: torch.Tensor) -> tuple[list, list[int]]:
    """REGIONS (uint8 pointer, lines) pairs for a kernel taking prefetch_share's arguments: each
    region (a contiguous slice of a weight) as bytes; missing ones point at dummy with 0 lines."""
    if len(regions) > REGIONS:
        raise ValueError(f"at most {REGIONS} prefetch regions, got {len(regions)}")
    ptrs, lines = [], []
    for region in regions:
        assert region.is_contiguous(), "prefetch a contiguous region"
        raw = region.reshape(-1).view(torch.uint8)
        ptrs.append(raw)
        lines.append(cdiv(raw.numel(), LINE))
    while len(ptrs) < REGIONS:
        ptrs.append(dummy)
        lines.append(0)
    return ptrs, lines
