"""A row summed by many programs in fixed point: exact, so the same bits whatever order they add in.

The fused MLP (fused_mlp.py) splits the down projection over the intermediate dimension: every
program adds its (hidden,) partial into one row with atomics. Float atomics would make the sum's
bits depend on the programs' arrival order, and a graph replay must match eager bit for bit, so
each partial is scaled by 2^FIXED_SHIFT and added as an int64: integer sums do not depend on
order. The reader turns the row back with from_fixed: fp32, then the weights' dtype, which is how
F.linear's float32 accumulator becomes its output.

Range and resolution: |value| < 2^(63 - FIXED_SHIFT) = 2^31 and steps of 2^-32, far inside what a
bf16 activation holds that matters next to the residual (the partials truncate toward zero, an
error of under one step per program).
"""

from __future__ import annotations

import torch

from runtime.kernels._triton import jit, tl

FIXED_SHIFT = 32
FIXED_SCALE = float(2**FIXED_SHIFT)  # 2^32: the value of one unit is 1 / FIXED_SCALE
FIXED_DTYPE = torch.int64


def to_fixed_ref(x: torch.Tensor) -> torch.Tensor:
    """float values -> int64 units of 2^-32, truncated toward zero (the kernel's conversion)."""
    return (x.float() * FIXED_SCALE).to(FIXED_DTYPE)


def from_fixed(q: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """int64 units -> values in `dtype`: fp32 first (round to nearest), then dtype."""
    return (q.to(torch.float32) * (1.0 / FIXED_SCALE)).to(dtype)


def is_fixed(t: torch.Tensor | None) -> bool:
    """Whether t holds a fixed-point row (fused_mlp's pending MLP output) rather than values."""
    return t is not None and t.dtype == FIXED_DTYPE


@jit
def to_fixed(x):
    """fp32 values -> int64 units (truncated toward zero, as to_fixed_ref)."""
    return (x * 4294967296.0).to(tl.int64)


@jit
def from_fixed_loaded(q, dtype: tl.constexpr):
    """int64 units -> values in `dtype`, as from_fixed rounds them."""
    return (q.to(tl.float32) * 2.3283064365386963e-10).to(dtype)
