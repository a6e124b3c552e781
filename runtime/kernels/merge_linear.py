"""The batch-1 attention's split partials merged inside the o projection: no merge launch, and the
projection's weight loaded while the attention still runs.

The o GEMV splits over the output rows: each program needs every head's merged output, so a merge in
its prologue repeats the whole merge per program (tried: +0.37 ms per step). This kernel splits over
heads instead. Program (head, chunk) holds W_o[chunk rows, head columns] (BN x D, loaded before its
PDL wait: no kernel writes weights, and the split kernel releases it right after its own wait, so
the tile streams in under the attention), merges that one head's partials after the wait, and
multiplies: y_part[head, chunk] (BN,) fp32. The last program of a chunk to arrive (an arrival counter)
sums the H partials in head order, so the sum, and every token, is the same on every run, and
writes y = (residual +) the rounded product, as linear_add / linear round.

partials (acc (1, H, P, D), ml (1, H, P, 2)), weight (N, H * D) -> y (1, N). # graph: grid from shapes
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from runtime.kernels._triton import cdiv, jit, next_pow2, pdl_release, pdl_wait, tl
from runtime.kernels.arrival import arrival_counters
from runtime.kernels.attention_plan import merge_block, sm_count
from runtime.kernels.decode_attention import merge_head, merge_partials_ref
from runtime.kernels.switches import env_choice

TILE_BYTES = 32 * 1024  # the most W_o bytes a program holds in registers (4 warps: 64 registers)


@dataclass(frozen=True)
class AttentionPartials:
    """A decode step's attention before its merge: the split kernel's unnormalised partials
    acc (B, H, P, D) fp32 and ml (B, H, P, 2) (running max in log2 units, running sum), the rows'
    positions (B,) (live length min(pos + 1, n_slots)), the slots per K/V block, and the dtype the
    merged output would have."""

    acc: torch.Tensor
    ml: torch.Tensor
    positions: torch.Tensor
    block_n: int
    n_slots: int
    dtype: torch.dtype

    def merged(self) -> torch.Tensor:
        """(B, H * D) in the dtype: what the attention op returns when no projection takes the merge."""
        B, H, _, D = self.acc.shape
        lengths = torch.clamp(self.positions + 1, max=self.n_slots)
        out = merge_partials_ref(self.acc, self.ml, lengths, self.block_n)
        return out.to(self.dtype).reshape(B, H * D)


def merges_into_o() -> bool:
    """RUNTIME_MERGE_O: "on" has a batch-1 step merge its attention in the o projection (this
    file), "off" (the default until measured) keeps the merge launch and the o GEMV."""
    return env_choice("RUNTIME_MERGE_O", ("off", "on"), "off") == "on"


def merge_linear_ref(
    partials: AttentionPartials, weight: torch.Tensor, residual: torch.Tensor | None = None
) -> torch.Tensor:
    """-> (residual +) F.linear(merged attention, weight), (B, N): the merge, then the o projection
    as linear / linear_add compute it (the product rounded to the dtype before the add)."""
    y = F.linear(partials.merged(), weight)
    return y if residual is None else residual.reshape(y.shape) + y


def rows_per_program(heads: int, head_dim: int, n_out: int, elem_bytes: int, device: torch.device) -> int:
    """BN, the output rows a program takes: a W_o tile of at most TILE_BYTES, halved (down to 16) while
    the heads x chunks grid leaves fewer than two programs per SM. RUNTIME_MERGE_O_ROWS overrides it."""
    forced = os.environ.get("RUNTIME_MERGE_O_ROWS")
    if forced:
        return int(forced)
    rows = max(16, min(next_pow2(n_out), TILE_BYTES // (next_pow2(head_dim) * elem_bytes)))
    while rows > 16 and heads * cdiv(n_out, rows) < 2 * sm_count(device):
        rows //= 2
    return rows


@jit
def _merge_linear_kernel(
    acc_ptr,
    ml_ptr,
    pos_ptr,
    w_ptr,
    res_ptr,
    part_ptr,
    count_ptr,
    y_ptr,
    n_heads,
    n_splits,
    n_slots,
    N,
    K,
    D: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BN: tl.constexpr,
    BLOCK_H: tl.constexpr,
    ADD_RES: tl.constexpr,
    PDL: tl.constexpr,
):
    head = tl.program_id(0)
    chunk = tl.program_id(1)
    rows = chunk * BN + tl.arange(0, BN)
    row_ok = rows < N
    d = tl.arange(0, BLOCK_D)
    d_ok = d < D
    # W_o[rows, head's columns] (BN, BLOCK_D): no kernel writes it, so it streams in before the wait,
    # under the attention; read once per step, evict-first
    w_tile = w_ptr + rows.to(tl.int64)[:, None] * K + head * D + d[None, :]
    w = tl.load(w_tile, mask=row_ok[:, None] & d_ok[None, :], other=0.0, eviction_policy="evict_first")
    # the row's position was written before the step's first kernel: read before the wait too
    length = tl.minimum(tl.load(pos_ptr) + 1, n_slots).to(tl.int32)
    n_live = tl.minimum(tl.cdiv(length, BLOCK_N), n_splits)  # splits that wrote a partial
    pdl_wait(PDL)
    if ADD_RES:  # written two launches back; every program of the chunk loads it, the last one uses it
        res = tl.load(res_ptr + rows, mask=row_ok, other=0.0)
    attn = merge_head(acc_ptr, ml_ptr, head, n_live, n_splits, D, BLOCK_D, BLOCK_P)
    attn = attn.to(w_ptr.dtype.element_ty)  # the attention's output in the dtype, as the reference's
    part = tl.sum(w.to(tl.float32) * attn.to(tl.float32)[None, :], axis=1)  # (BN,)
    tl.store(part_ptr + head * N + rows, part, mask=row_ok)
    pdl_release(PDL)
    # the last of the chunk's heads to arrive sums the partials; the barrier puts all of this
    # program's stores before its release (acq_rel)
    tl.debug_barrier()
    arrived = tl.atomic_add(count_ptr + chunk, 1, sem="acq_rel", scope="gpu")
    if arrived == n_heads - 1:
        tl.store(count_ptr + chunk, 0)  # ready for the next launch: every other program has counted
        h = tl.arange(0, BLOCK_H)
        parts = tl.load(
            part_ptr + h[:, None] * N + rows[None, :],
            mask=(h < n_heads)[:, None] & row_ok[None, :],
            other=0.0,
            cache_modifier=".cg",  # written by other programs of this launch: not from L1
        )
        y = tl.sum(parts, axis=0).to(w_ptr.dtype.element_ty)  # rounded as F.linear's output
        if ADD_RES:  # then the add, rounded once: residual + F.linear(attn, W)
            y = (res.to(tl.float32) + y.to(tl.float32)).to(res.dtype)
        tl.store(y_ptr + rows, y.to(y_ptr.dtype.element_ty), mask=row_ok)


def merge_linear_triton(
    partials: AttentionPartials,
    weight: torch.Tensor,
    residual: torch.Tensor | None = None,
    launch: dict | None = None,
) -> torch.Tensor:
    """Same contract as merge_linear_ref, one row (B = 1). launch: the step's PDL arguments."""
    acc, ml = partials.acc, partials.ml
    B, H, P, D = acc.shape
    N, K = weight.shape
    if B != 1 or K != H * D or weight.stride(-1) != 1:
        raise ValueError(f"merge_linear takes one row of {H} x {D} heads into a ({N}, {H * D}) matrix")
    bn = rows_per_program(H, D, N, weight.element_size(), weight.device)
    chunks = cdiv(N, bn)
    part = torch.empty((H, N), dtype=torch.float32, device=weight.device)
    y = torch.empty((1, N), dtype=weight.dtype, device=weight.device)
    res = residual.reshape(1, N) if residual is not None else y
    _merge_linear_kernel[(H, chunks)](
        acc, ml, partials.positions, weight, res, part, arrival_counters(chunks, weight.device), y,
        H, P, partials.n_slots, N, K,
        D=D, BLOCK_D=max(16, next_pow2(D)), BLOCK_P=merge_block(D, P), BLOCK_N=partials.block_n, BN=bn,
        BLOCK_H=max(2, next_pow2(H)), ADD_RES=residual is not None, num_warps=4, **(launch or {"PDL": 0}),
    )  # fmt: skip
    return y
