"""The batch-1 MLP as one kernel: (residual add +) RMSNorm, gate/up, the gated activation and the
down projection (the kernel: mlp_kernel.py). The reference and the launch.

Unfused, a step runs the MLP as two GEMVs (norm_linear_act, then linear), and the down GEMV cannot
start its rows' sums before gate/up has ended. Here each program takes a slice of the intermediate
dimension through both products, so all three weights stream in one grid. The down product's sum
over the slices is a fixed-point row (fixed_point.py) that the next norm GEMV reads as its pending h:
the op returns that int64 row, and from_fixed gives its values.

Buffers: `acc` (hidden,) int64 must be zero at the launch; the kernel zeroes `zero` (hidden,) for a
later launch, a row whose reader has ended before this one starts (DecoderLM: layer i zeroes layer
i - 1's, which layer i's qkv GEMV read).
"""

from __future__ import annotations

import torch

from runtime.kernels._triton import INTERPRETING, cdiv, next_pow2, pdl
from runtime.kernels.activation import ACTIVATIONS
from runtime.kernels.fixed_point import FIXED_DTYPE
from runtime.kernels.fused_linear import MAX_NORM_K, _row, linear_ref, norm_linear_act_ref, one_row
from runtime.kernels.gemv_blocks import block_override
from runtime.kernels.mlp_kernel import _mlp_kernel

_T = {}
MLP_BLOCK_FIELDS = "BLOCK_J/BLOCK_K/BLOCK_H/warps"


def fused_mlp_ref(
    h: torch.Tensor | None,
    residual: torch.Tensor,
    norm_w: torch.Tensor,
    eps: float,
    offset: float,
    pre_w: torch.Tensor | None,
    w_gate_up: torch.Tensor,
    w_down: torch.Tensor,
    activation: str,
    acc: torch.Tensor | None = None,
    zero: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """h, residual (..., K); w_gate_up (2I, K) = [gate | up]; w_down (K, I) -> (down(act(gate) * up)
    of rms_norm(residual + h') (..., K), residual + h'): norm_linear_act_ref, then linear_ref.
    acc, zero: the kernel's buffers, unused here."""
    act, new_residual = norm_linear_act_ref(h, residual, norm_w, eps, offset, pre_w, w_gate_up, activation)
    return linear_ref(act, w_down), new_residual


def mlp_config(I: int, K: int) -> tuple[int, int, int, int]:
    """(BLOCK_J, BLOCK_K, BLOCK_H, num_warps): RUNTIME_MLP_BLOCKS's "mlp:IxK=J/K/H/warps" where it names
    this shape, else 16 intermediates a program (32 gate/up rows on ~16 KB tiles, then 16 KB of W_d
    columns a step); the interpreter takes small blocks (NumPy runs programs one by one)."""
    chosen = block_override("mlp", I, K, "RUNTIME_MLP_BLOCKS", MLP_BLOCK_FIELDS)
    if chosen is not None:
        return chosen
    if INTERPRETING:
        return min(8, next_pow2(I)), max(16, min(64, next_pow2(K))), max(16, min(64, next_pow2(K))), 4
    return 16, min(256, next_pow2(K)), min(512, next_pow2(K)), 4


def fused_mlp_triton(
    h: torch.Tensor | None,
    residual: torch.Tensor,
    norm_w: torch.Tensor,
    eps: float,
    offset: float,
    pre_w: torch.Tensor | None,
    w_gate_up: torch.Tensor,
    w_down: torch.Tensor,
    activation: str,
    acc: torch.Tensor | None = None,
    zero: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """fused_mlp_ref's contract, except that the MLP's output comes back as the fixed-point row acc
    (reshaped as residual) for one row; more rows, a missing buffer or K > MAX_NORM_K take the
    reference. acc (K,) int64, zero on entry; zero (K,) int64, zeroed here for a later launch."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation {activation!r} is not one of {ACTIVATIONS}")
    K = residual.shape[-1]
    if not one_row(residual) or K > MAX_NORM_K or acc is None or zero is None:
        return fused_mlp_ref(h, residual, norm_w, eps, offset, pre_w, w_gate_up, w_down, activation)
    two_i, k_in = w_gate_up.shape
    I = two_i // 2
    assert k_in == K and w_down.shape == (K, I), (w_gate_up.shape, w_down.shape, K)
    assert acc.dtype == zero.dtype == FIXED_DTYPE and acc.numel() == zero.numel() == K
    assert acc.data_ptr() != zero.data_ptr(), "the row to zero must not be the one summed into"
    new_residual = residual if h is None else torch.empty_like(residual, memory_format=torch.contiguous_format)
    block_j, block_k, block_h, num_warps = mlp_config(I, K)
    dummy = w_gate_up
    import os
    if os.environ.get("RUNTIME_Y") == "1":
        key = (w_down.data_ptr(), tuple(w_down.shape), w_down.float().sum().item()) if w_down.device.type == "cpu" else w_down.data_ptr()
        if key not in _T:
            _T[key] = w_down.t().contiguous()
        w_down = _T[key].t()
    _mlp_kernel[(cdiv(I, block_j),)](
        _row(h) if h is not None else dummy, _row(residual), norm_w, pre_w if pre_w is not None else dummy,
        w_gate_up, w_down, acc, zero, new_residual if h is not None else dummy, I, K, eps,
        w_down.stride(0), w_down.stride(1),
        OFFSET=float(offset), HAS_H=h is not None, HAS_PRE=pre_w is not None, GELU=activation == "gelu_tanh",
        BLOCK_J=block_j, BLOCK_K=min(block_k, next_pow2(K)), BLOCK_H=min(block_h, next_pow2(K)),
        BLOCK=next_pow2(K), num_warps=num_warps, SUM_BY_STORE=os.environ.get("RUNTIME_X") == "1", **pdl(w_gate_up.device),
    )  # fmt: skip
    return acc.view(residual.shape), new_residual
