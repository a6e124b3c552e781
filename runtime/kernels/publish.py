"""The decode step's last launch: each row's new token written straight into a ring in pinned host
memory, so the host reads it once the step's event has passed, without a copy between two replays.

A device-to-host copy after each replay (what engine/generate.py did) is a copy-engine operation the
next replay must wait for: on the H100 it added ~10 us to every step (scripts/bench_step_overhead.py).
This kernel runs on the compute engine inside the captured step, and its stores cross PCIe as the
step ends. The slot is the row's new position modulo the ring's length, which the host knows
without asking the GPU: the token for position p of row r is ring[p % R, r].
"""

from __future__ import annotations

import torch

from runtime.kernels._triton import jit, next_pow2, pdl, pdl_wait, tl


def publish_tokens_ref(tokens: torch.Tensor, positions: torch.Tensor, ring: torch.Tensor) -> None:
    """tokens (B,) int64, the rows' next tokens, at positions (B,) int64 -> ring (R, B_max) int64:
    ring[positions % R, row] = tokens. Plain torch: the tensors share a device (the CPU here)."""
    rows = torch.arange(tokens.shape[0], device=tokens.device)
    ring[positions % ring.shape[0], rows] = tokens


@jit
def _publish_kernel(
    tokens_ptr, positions_ptr, ring_ptr, B, R, ring_stride, BLOCK: tl.constexpr, PDL: tl.constexpr
):
    # grid (1,): B <= BLOCK rows; ring_ptr may be pinned host memory (stores over PCIe)
    pdl_wait(PDL)
    rows = tl.arange(0, BLOCK)
    live = rows < B
    token = tl.load(tokens_ptr + rows, mask=live, other=0)
    position = tl.load(positions_ptr + rows, mask=live, other=0)
    tl.store(ring_ptr + (position % R) * ring_stride + rows, token, mask=live)


def publish_tokens_triton(tokens: torch.Tensor, positions: torch.Tensor, ring: torch.Tensor) -> None:
    """publish_tokens_ref in one launch; ring may be pinned host memory (tokens on the GPU).  # graph: safe"""
    assert tokens.stride(0) == positions.stride(0) == 1 and ring.stride(1) == 1
    B = tokens.shape[0]
    _publish_kernel[(1,)](
        tokens, positions, ring, B, ring.shape[0], ring.stride(0),
        BLOCK=max(16, next_pow2(B)), num_warps=1, **pdl(tokens.device),
    )  # fmt: skip
