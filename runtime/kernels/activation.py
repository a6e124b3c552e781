"""Gated activation of the packed gate/up projection: plain-torch reference and a Triton kernel.

gate_up (..., 2I) holds [gate | up]; the result is act(gate) * up (..., I), act = silu or
gelu-tanh. The kernel keeps the reference's rounding: act(gate) is computed in fp32 and rounded
to the dtype, then the product is rounded again, as two separate torch ops would do.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from runtime.kernels._triton import cdiv, jit, next_pow2, pdl, pdl_wait, tl
from runtime.kernels.rmsnorm import row_inv_rms, scale_row, scale_rows_ref

ACTIVATIONS = ("silu", "gelu_tanh")


def gated_act_ref(
    gate_up: torch.Tensor, activation: str, norm_source: torch.Tensor | None = None, norm_eps: float = 0.0
) -> torch.Tensor:
    """gate_up (..., 2I) -> act(gate) * up (..., I). With norm_source (..., K), gate_up was projected
    from those un-normed rows through a matrix holding the norm's weight: each row is first divided
    by rms(norm_source) (scale_rows_ref; the batch buckets' folded norm)."""
    if norm_source is not None:
        gate_up = scale_rows_ref(gate_up, norm_source, norm_eps)
    gate, up = gate_up.chunk(2, dim=-1)
    if activation == "silu":
        return F.silu(gate) * up
    return F.gelu(gate, approximate="tanh") * up


@jit
def _gated(gate, up, GELU: tl.constexpr):
    """gate, up (BLOCK,) in the dtype -> fp32 act(gate) * up whose cast to the dtype is the reference's result."""
    g = gate.to(tl.float32)
    if GELU:
        # 0.5 * (1 + tanh(u)) == sigmoid(2u), u = sqrt(2 / pi) * (g + 0.044715 g^3)
        act = g * tl.sigmoid(1.5957691216057308 * (g + 0.044715 * g * g * g))
    else:
        act = g * tl.sigmoid(g)
    # act(gate) is rounded to the dtype before the product, as F.silu / F.gelu return it
    return act.to(gate.dtype).to(tl.float32) * up.to(tl.float32)


@jit
def _gated_act_kernel(
    x_ptr, out_ptr, src_ptr, inter, x_stride, src_stride, n_src, eps,
    GELU: tl.constexpr, ROW_SCALE: tl.constexpr, BLOCK: tl.constexpr, BLOCK_SRC: tl.constexpr, PDL: tl.constexpr,
):  # fmt: skip
    # grid (rows, cdiv(I, BLOCK)): each program turns BLOCK gate and BLOCK up values into BLOCK outputs;
    # ROW_SCALE: each also reads its row of the norm source (K values) for the row's 1 / rms
    pdl_wait(PDL)
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < inter
    gate = tl.load(x_ptr + row * x_stride + cols, mask=mask, other=0.0)
    up = tl.load(x_ptr + row * x_stride + inter + cols, mask=mask, other=0.0)
    inv = 1.0
    if ROW_SCALE:
        inv = row_inv_rms(src_ptr + row * src_stride, n_src, eps, BLOCK_SRC)
    gate, up = scale_row(gate, inv, ROW_SCALE), scale_row(up, inv, ROW_SCALE)
    tl.store(out_ptr + row * inter + cols, _gated(gate, up, GELU).to(out_ptr.dtype.element_ty), mask=mask)


def gated_act_triton(
    gate_up: torch.Tensor, activation: str, norm_source: torch.Tensor | None = None, norm_eps: float = 0.0
) -> torch.Tensor:
    """Same contract as gated_act_ref; one kernel."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation {activation!r} is not one of {ACTIVATIONS}")
    two_i = gate_up.shape[-1]
    inter = two_i // 2
    x2 = gate_up.reshape(-1, two_i)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    out = torch.empty((*gate_up.shape[:-1], inter), dtype=gate_up.dtype, device=gate_up.device)
    src = x2 if norm_source is None else norm_source.reshape(-1, norm_source.shape[-1])
    if src.stride(-1) != 1 or src.shape[0] != x2.shape[0]:
        raise ValueError(f"norm_source {tuple(norm_source.shape)} needs one unit-stride row per gate_up row")
    block = 1024 if inter >= 1024 else max(16, next_pow2(inter))
    grid = (x2.shape[0], cdiv(inter, block))
    _gated_act_kernel[grid](
        x2, out, src, inter, x2.stride(0), src.stride(0), src.shape[-1], norm_eps,
        GELU=activation == "gelu_tanh", ROW_SCALE=norm_source is not None, BLOCK=block,
        BLOCK_SRC=next_pow2(src.shape[-1]) if norm_source is not None else 16,
        num_warps=int(os.environ.get("RUNTIME_ACT_WARPS") or 4), **pdl(x2.device),
    )  # fmt: skip
    return out
