"""The ops the model calls. Each resolves, per call, to a Triton kernel or to the plain-torch
reference with the same signature.

RUNTIME_KERNELS (read at every call, so a benchmark can A/B both in one process):
  auto   (default) Triton for CUDA tensors when Triton imports, the reference elsewhere
  torch  always the references
  triton always Triton when it imports (on the CPU only under TRITON_INTERPRET=1: tests)
RUNTIME_KERNELS_OFF, a comma-separated list of op names (e.g. "norm_linear,act_linear,linear"),
sends those ops to their references whatever RUNTIME_KERNELS says: a same-process A/B of one
kernel (scripts/profile_step.py --ab).
Inside a captured graph the choice made at capture time is what replays.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import torch
import torch.nn.functional as F

from runtime.kernels import _triton, batch_products

# the <op>_ref / <op>_triton pairs below are module attributes on purpose: _dispatch looks them up
# by name at call time (so a test can stand in for one)
# ruff: noqa: F401
from runtime.kernels.activation import gated_act_ref, gated_act_triton
from runtime.kernels.argmax import argmax_checked_ref, argmax_checked_triton
from runtime.kernels.attention import prefill_attention_ref
from runtime.kernels.attention_plan import QkvRelease
from runtime.kernels.decode_attention import decode_attention_ref, decode_attention_triton
from runtime.kernels.fused_linear import (
    act_linear_triton,
    linear_add_ref,
    linear_add_triton,
    linear_triton,
    norm_linear_act_triton,
    norm_linear_triton,
    one_row,
)
from runtime.kernels.fused_rows import (
    act_linear_rows_triton,
    fits_rows,
    gated_linear_rows_triton,
    linear_rows_add_triton,
    linear_rows_triton,
    norm_linear_rows_triton,
)
from runtime.kernels.gemv_blocks import (
    DEFAULT_ROLES,
    early_release,
    env_names,
    residual_add_roles,
    shipped_role,
)
from runtime.kernels.publish import publish_tokens_ref, publish_tokens_triton
from runtime.kernels.qkv_attention import qkv_decode_attention_ref, qkv_decode_attention_triton
from runtime.kernels.qkv_rope import (
    qkv_rope_ref,
    qkv_rope_to_cache_ref,
    qkv_rope_to_cache_triton,
    qkv_rope_triton,
)
from runtime.kernels.rmsnorm import add_rms_norm_ref, add_rms_norm_triton, rms_norm_ref, rms_norm_triton
from runtime.kernels.rope import apply_rope_ref
from runtime.kernels.step_inputs import embed_rope_ref, embed_rope_triton
from runtime.kernels.switches import env_choice

BACKENDS = ("auto", "torch", "triton")


def use_triton(t: torch.Tensor) -> bool:
    """Whether ops on tensor `t` run as Triton kernels (see RUNTIME_KERNELS above)."""
    choice = env_choice("RUNTIME_KERNELS", BACKENDS, "auto")
    if choice == "torch" or not _triton.AVAILABLE:
        return False
    return choice == "triton" or t.is_cuda


def turned_off(name: str) -> bool:
    """Whether RUNTIME_KERNELS_OFF names op `name`."""
    return name in {o.strip() for o in os.environ.get("RUNTIME_KERNELS_OFF", "").split(",")}


def enabled(name: str, t: torch.Tensor) -> bool:
    """Whether op `name` on tensor `t` runs its Triton kernel: use_triton(t), unless
    RUNTIME_KERNELS_OFF names the op."""
    return use_triton(t) and not turned_off(name)


def _dispatch(name: str) -> Callable:
    """The op `name`: `<name>_triton` when its first tensor argument qualifies (enabled), else
    `<name>_ref`, both looked up here at call time; the op keeps the reference's signature."""
    reference = globals()[f"{name}_ref"]

    @functools.wraps(reference)
    def op(first: torch.Tensor, *args, **kwargs):
        fn = globals()[f"{name}_triton" if enabled(name, first) else f"{name}_ref"]
        return fn(first, *args, **kwargs)

    return op


rms_norm = _dispatch("rms_norm")
gated_act = _dispatch("gated_act")
qkv_rope = _dispatch("qkv_rope")
qkv_rope_to_cache = _dispatch("qkv_rope_to_cache")
decode_attention = _dispatch("decode_attention")
qkv_decode_attention = _dispatch("qkv_decode_attention")
argmax_checked = _dispatch("argmax_checked")
embed_rope = _dispatch("embed_rope")
publish_tokens = _dispatch("publish_tokens")


def add_rms_norm(
    x: torch.Tensor,
    residual: torch.Tensor,
    weight: torch.Tensor,
    eps: float,
    offset: float = 0.0,
    pre_weight: torch.Tensor | None = None,
    release_early: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (rms_norm(residual + x'), residual + x'), x' = x or rms_norm(x, pre_weight).
    The kernel needs one dtype throughout; mixed dtypes take the reference. release_early: the
    kernel lets the next one launch right after its wait (rmsnorm._launch)."""
    same = x.dtype == residual.dtype == weight.dtype and (pre_weight is None or pre_weight.dtype == x.dtype)
    if same and enabled("add_rms_norm", x):
        return add_rms_norm_triton(x, residual, weight, eps, offset, pre_weight, release_early=release_early)
    return add_rms_norm_ref(x, residual, weight, eps, offset, pre_weight)


# The decode projections with their prologue folded in: one row (batch 1) takes the GEMV of
# runtime/kernels/fused_linear.py. Elsewhere (prefill, batch buckets, the op turned off, mixed
# dtypes) they run unfused: the prologue op as dispatched above (itself a Triton kernel on CUDA),
# then cuBLAS. RUNTIME_BATCH_ROWS=fused sends 2..16 rows to the tl.dot kernel of fused_rows.py
# instead (op names "<op>_rows" for RUNTIME_KERNELS_OFF): opt-in, since on the H100 its batch-16
# step was slower than norm kernel + cuBLAS (notes/kernels.md). The LM head never takes that fused
# path past one row; RUNTIME_BATCH_GEMM (batch_products.py) puts it, after the norm kernel, on the
# plain rows kernel.


def _fused_rows(t: torch.Tensor, name: str) -> bool:
    choice = env_choice("RUNTIME_BATCH_ROWS", ("cublas", "fused"), "cublas")
    return choice == "fused" and fits_rows(t) and enabled(name, t)


def on_rows_kernel(x: torch.Tensor, product: str) -> bool:
    """Whether a batch step's `product` ("qkv", "o", "gate_up", "down", "lm_head") of rows x runs on
    the rows kernel instead of cuBLAS: RUNTIME_BATCH_GEMM names it (batch_products.py) and the kernel
    takes x."""
    return batch_products.rows_products_named(product) and fits_rows(x) and enabled("linear_rows", x)


def norm_linear(
    h: torch.Tensor | None,
    residual: torch.Tensor,
    norm_w: torch.Tensor,
    eps: float,
    offset: float,
    pre_w: torch.Tensor | None,
    weight: torch.Tensor,
    out_dtype: torch.dtype | None = None,
    name: str = "norm_linear",
    widen: bool = True,
    release: QkvRelease | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (linear(rms_norm(residual + h')), residual + h'), h' = h or rms_norm(h, pre_w); h None:
    no add (the residual comes back as it is). Chosen on `residual`, since h may be None.
    out_dtype: the product's dtype after rounding to the weights' (the LM head's float32 logits);
    name: the op name RUNTIME_KERNELS_OFF knows this call by ("lm_head" for the LM head).
    widen False: a product that cuBLAS wrote in the weights' dtype comes back as it is, holding
    the values out_dtype would (for a consumer that widens as it loads: no copy kernel).
    release: the qkv projection's (attention_plan.QkvRelease): its one-row GEMV may let the
    attention launch right after its wait (fused_linear._launch); a batch step's goes to the rows
    kernel with the early release where RUNTIME_BATCH_GEMM puts qkv there (on_rows_kernel)."""
    same = all(t.dtype == weight.dtype for t in (h, residual, norm_w, pre_w) if t is not None)
    if same and one_row(residual) and enabled(name, residual):
        return norm_linear_triton(h, residual, norm_w, eps, offset, pre_w, weight, out_dtype, release)
    if same and name != "lm_head" and _fused_rows(residual, f"{name}_rows"):
        return norm_linear_rows_triton(h, residual, norm_w, eps, offset, pre_w, weight, out_dtype)
    rows_qkv = release is not None and same and out_dtype is None and on_rows_kernel(residual, "qkv")
    rows_lm_head = name == "lm_head" and same and on_rows_kernel(residual, "lm_head")
    if h is None:
        normed, new_residual = rms_norm(residual, norm_w, eps, offset), residual
    else:  # before a batch step's qkv on the rows kernel, the norm releases it early (norm_releases_early)
        release_norm = rows_qkv and batch_products.norm_releases_early()
        normed, new_residual = add_rms_norm(h, residual, norm_w, eps, offset, pre_w, release_norm)
    if rows_qkv:
        return linear_rows_triton(normed, weight, release_early=True), new_residual
    y = linear_rows_triton(normed, weight, op="logits") if rows_lm_head else F.linear(normed, weight)
    return (y if out_dtype is None or not widen else y.to(out_dtype)), new_residual


def gated_epilogue(residual: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether the MLP of this row takes norm_linear_act (the gated activation as the gate/up GEMV's
    epilogue, then a plain down GEMV): one row on Triton, one dtype. RUNTIME_KERNELS_OFF=norm_linear_act
    keeps the activation in the down GEMV's prologue (act_linear; a same-process A/B)."""
    return residual.dtype == weight.dtype and one_row(residual) and enabled("norm_linear_act", residual)


def norm_linear_act(
    h: torch.Tensor | None,
    residual: torch.Tensor,
    norm_w: torch.Tensor,
    eps: float,
    offset: float,
    pre_w: torch.Tensor | None,
    weight: torch.Tensor,
    activation: str,
    release_early: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """weight (2I, K) = [gate | up] -> (act(gate) * up (..., I), residual + h'): one kernel where
    gated_epilogue says so, else norm_linear then gated_act. release_early: fused_linear._launch's."""
    same = all(t.dtype == weight.dtype for t in (h, residual, norm_w, pre_w) if t is not None)
    if same and gated_epilogue(residual, weight):
        return norm_linear_act_triton(
            h, residual, norm_w, eps, offset, pre_w, weight, activation, release_early
        )
    gate_up, new_residual = norm_linear(h, residual, norm_w, eps, offset, pre_w, weight)
    return gated_act(gate_up, activation), new_residual


def act_linear(gate_up: torch.Tensor, activation: str, weight: torch.Tensor) -> torch.Tensor:
    """gate_up (..., 2I) -> down(act(gate) * up) with weight (N, I)."""
    if gate_up.dtype == weight.dtype and one_row(gate_up) and enabled("act_linear", gate_up):
        return act_linear_triton(gate_up, activation, weight)
    if gate_up.dtype == weight.dtype and _fused_rows(gate_up, "act_linear_rows"):
        return act_linear_rows_triton(gate_up, activation, weight)
    return F.linear(gated_act(gate_up, activation), weight)


def _gemv_row(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether x @ weight.T runs as the batch-1 GEMV (linear, linear_add): one row on Triton, one dtype."""
    return x.dtype == weight.dtype and one_row(x) and enabled("linear", x)


def residual_epilogue(x: torch.Tensor, weight: torch.Tensor, role: str) -> bool:
    """Whether the `role` projection ("o" or "down") of this row adds its residual in the GEMV's
    epilogue (linear_add): one row on Triton, one dtype, and the role named by RUNTIME_RESIDUAL_ADD,
    or where that is unset, "o", or a role and shape the card's shipped choices name."""
    if not _gemv_row(x, weight):
        return False
    roles = residual_add_roles()
    if roles is not None:
        return env_names(roles, role, *weight.shape)
    return role in DEFAULT_ROLES["residual_add"] or shipped_role("residual_add", role, *weight.shape)


def linear_add(
    x: torch.Tensor, weight: torch.Tensor, residual: torch.Tensor, release_early: bool = False
) -> torch.Tensor:
    """residual (..., N) + x (..., K) @ weight (N, K).T: one kernel where the GEMV runs (one row on
    Triton, one dtype), else the reference. release_early: fused_linear._launch's."""
    if _gemv_row(x, weight):
        return linear_add_triton(x, weight, residual, release_early)
    return linear_add_ref(x, weight, residual)


def linear(x: torch.Tensor, weight: torch.Tensor, release_early: bool = False) -> torch.Tensor:
    """x (..., K) @ weight (N, K).T. release_early: fused_linear._launch's (one-row GEMV only)."""
    if _gemv_row(x, weight):
        return linear_triton(x, weight, release_early)
    if x.dtype == weight.dtype and _fused_rows(x, "linear_rows"):
        return linear_rows_triton(x, weight)
    return F.linear(x, weight)


apply_rope = apply_rope_ref
prefill_attention = prefill_attention_ref
