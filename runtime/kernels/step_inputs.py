"""A step's inputs: token embeddings and the rope tables, plain-torch reference and one Triton kernel.

embed_rope(tokens (B, T), positions (B, T), embed_weight (V, hidden), scale, inv_freqs, dtype)
  -> x (B, T, hidden) in the weight dtype (times scale unless it is 1.0: Gemma's sqrt(hidden)),
     [(cos, sin) (B, T, D) in dtype], one pair per row of the (n_tables, D/2) fp32 inv_freqs.
The reference is the embedding lookup, the scale and rope_cos_sin per table: 8 small kernels for
one table, ~16 for Gemma's two, each ~1.5-2 us of a batch-1 step on an H100. The kernel writes
everything in one launch with the references' rounding: the fp32 angle position * inv_freq, fp32
cos/sin, one cast; the embedding row times scale in fp32, one cast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from runtime.kernels._triton import cdiv, jit, next_pow2, pdl, pdl_release, pdl_wait, tl
from runtime.kernels.rope import rope_cos_sin

BLOCK_H = 1024  # hidden elements per program: 2 programs for hidden 1152 or 2048


def embed_rope_ref(
    tokens: torch.Tensor,
    positions: torch.Tensor,
    embed_weight: torch.Tensor,
    scale: float,
    inv_freqs: torch.Tensor,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
    """tokens, positions (B, T); inv_freqs (n_tables, D/2) fp32 -> x (B, T, hidden),
    [(cos, sin) (B, T, D)] per table."""
    x = F.embedding(tokens, embed_weight)
    if scale != 1.0:
        x = x * scale
    return x, [rope_cos_sin(positions, inv, dtype) for inv in inv_freqs]


@jit
def _embed_rope_kernel(
    tok_ptr, pos_ptr, w_ptr, inv_ptr, x_ptr, cs_ptr,
    T, rows, tok_sb, tok_st, pos_sb, pos_st, w_stride, hidden, h_parts, scale,
    HALF: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_HALF: tl.constexpr, SCALE: tl.constexpr,
    PDL: tl.constexpr,
):  # fmt: skip
    # grid (B*T, h_parts + n_tables): part p < h_parts copies hidden block p of the row's embedding,
    # part h_parts + i writes table i's cos and sin. cs (n_tables, 2, B*T, D) holds all tables.
    # (the two branches name their values apart: Triton wants a name's type equal in both)
    pdl_wait(PDL)  # tokens and positions may come from the kernel before
    r = tl.program_id(0)
    part = tl.program_id(1)
    b, t = r // T, r % T
    if part < h_parts:
        token = tl.load(tok_ptr + b * tok_sb + t * tok_st).to(tl.int64)
        cols = part * BLOCK_H + tl.arange(0, BLOCK_H)
        col_ok = cols < hidden
        row = tl.load(w_ptr + token * w_stride + cols, mask=col_ok)
        if SCALE:  # as `x * scale` in torch: the product in fp32, one rounding
            row = (row.to(tl.float32) * scale).to(x_ptr.dtype.element_ty)
        pdl_release(PDL)
        tl.store(x_ptr + r.to(tl.int64) * hidden + cols, row, mask=col_ok)
    else:
        table = part - h_parts
        c = tl.arange(0, BLOCK_HALF)
        ok = c < HALF
        inv = tl.load(inv_ptr + table * HALF + c, mask=ok, other=0.0)
        pos = tl.load(pos_ptr + b * pos_sb + t * pos_st).to(tl.float32)
        angle = pos * inv  # (D/2,) fp32, the reference's one multiply
        cos = tl.cos(angle).to(cs_ptr.dtype.element_ty)
        sin = tl.sin(angle).to(cs_ptr.dtype.element_ty)
        pdl_release(PDL)
        D = 2 * HALF
        cos_row = cs_ptr + ((2 * table) * rows + r).to(tl.int64) * D
        sin_row = cs_ptr + ((2 * table + 1) * rows + r).to(tl.int64) * D
        # the table is cat((freqs, freqs)): both halves hold the same values
        tl.store(cos_row + c, cos, mask=ok)
        tl.store(cos_row + HALF + c, cos, mask=ok)
        tl.store(sin_row + c, sin, mask=ok)
        tl.store(sin_row + HALF + c, sin, mask=ok)


def embed_rope_triton(
    tokens: torch.Tensor,
    positions: torch.Tensor,
    embed_weight: torch.Tensor,
    scale: float,
    inv_freqs: torch.Tensor,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
    """Same contract as embed_rope_ref; one kernel. The (cos, sin) pairs are views of one buffer."""
    B, T = tokens.shape
    hidden = embed_weight.shape[1]
    rows = B * T
    n_tables, half = inv_freqs.shape
    w = embed_weight if embed_weight.stride(-1) == 1 else embed_weight.contiguous()
    inv = inv_freqs.float().contiguous()  # the model's table is fp32 and contiguous: no copy
    x = torch.empty((B, T, hidden), dtype=w.dtype, device=w.device)
    cs = torch.empty((n_tables, 2, B, T, 2 * half), dtype=dtype, device=w.device)
    h_parts = cdiv(hidden, BLOCK_H)
    if rows:
        _embed_rope_kernel[(rows, h_parts + n_tables)](
            tokens, positions, w, inv, x, cs,
            T, rows, *tokens.stride(), *positions.stride(), w.stride(0), hidden, h_parts, float(scale),
            HALF=half, BLOCK_H=BLOCK_H, BLOCK_HALF=next_pow2(half), SCALE=scale != 1.0,
            num_warps=4, **pdl(w.device),
        )  # fmt: skip
    return x, [(cs[i, 0], cs[i, 1]) for i in range(n_tables)]
