"""Batch buckets without norm kernels: each layer's two norm weights folded into the matrix after them.

rms_norm(x) W^T = diag(1 / rms(x)) . x (W diag(w))^T, so once a norm's weight w sits in the qkv or
gate/up matrix (fold_norm_weights, once at load), a decode step with B > 1 rows runs cuBLAS on the
residual rows as they are, and the kernel that reads the product (attention, the gated activation)
divides each row by its rms (ops' norm_source argument). The residual adds ride in cuBLAS's
beta = 1: the o and down projections accumulate into the residual in place (addmm_). A layer then
launches qkv GEMM, attention split + merge, o GEMM, gate/up GEMM, activation, down GEMM: the two
norm kernels of the unfolded path are gone.

Left with weights of ones, the norms still run where they are kept: the batch-1 GEMVs fold them as
before, prefill runs the norm kernel then cuBLAS; x * 1.0 is exact, so only the rounding of W diag(w)
to the weights' dtype differs from the unfolded model (one rounding, like the product's own).
Not folded: Gemma (its sandwich norms scale the branch output before the add, so the add cannot be
cuBLAS's beta) and a qkv bias (added after the norm's scale). The final norm stays: the LM head may
be the tied embedding.

RUNTIME_BATCH_NORM=kernel (read per call) sends batch buckets through the norm kernels with the
folded weights: the same-process A/B of this path. RUNTIME_FOLD_NORMS=0 (read at load) keeps the
weights as the checkpoint has them, and with them the norm kernels.
"""

from __future__ import annotations

import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from runtime.kernels import ops
from runtime.kernels.switches import env_choice
from runtime.models.spec import ModelSpec


def can_fold(spec: ModelSpec) -> bool:
    return not spec.sandwich_norms and not spec.qkv_bias


def _pairs(model):
    """(norm, the linear it feeds) for each folded norm."""
    for layer in model.layers:
        yield layer.attn_norm, layer.attn.qkv
        yield layer.mlp_norm, layer.mlp.gate_up


def _stamp(model) -> tuple | None:
    """What tells a weight changed in place since the fold: each tensor's address and version
    counter (None where the weights are inference tensors, which keep no counter)."""
    try:
        return tuple(
            (t.data_ptr(), t._version) for pair in _pairs(model) for t in (pair[0].weight, pair[1].weight)
        )
    except RuntimeError:
        return None


def fold_norm_weights(model) -> None:
    """Scale the qkv and gate/up matrices' columns by their norm's (offset +) weight and set that
    weight to the identity; idempotent (a folded model folds to itself). New tensors, never in
    place: a state dict the weights came from may share them (from_state_dict on matching dtypes).
    Nothing happens for a family that cannot fold or with RUNTIME_FOLD_NORMS=0."""
    if can_fold(model.spec) and os.environ.get("RUNTIME_FOLD_NORMS", "1") != "0":
        _fold(model)


def _fold(model) -> None:
    with torch.inference_mode(False):  # plain tensors even when called from inside decode
        for norm, linear in _pairs(model):
            scale = (norm.weight.float() + norm.offset).to(linear.weight.dtype)
            linear.weight = nn.Parameter(linear.weight * scale, requires_grad=False)
            norm.weight = nn.Parameter(torch.full_like(norm.weight, 1.0 - norm.offset), requires_grad=False)
    model.norms_folded = True
    model.folded_stamp = _stamp(model)


def folded_rows(model, rows: int) -> bool:
    """Whether a decode step of `rows` rows takes decode_rows below. Weights changed in place since
    the fold (a test's perturbation, a merged adapter) are folded again first, so the norm weights
    they set count, at every batch size."""
    choice = env_choice("RUNTIME_BATCH_NORM", ("folded", "kernel"), "folded")
    if not model.norms_folded or rows == 1 or choice == "kernel":
        return False
    if _stamp(model) != model.folded_stamp:
        _fold(model)  # whatever the switch says now: this model's matrices carry the norms
    return True


def decode_rows(model, tokens: torch.Tensor, positions: torch.Tensor, cache) -> torch.Tensor:
    """tokens, positions (B,) -> the residual stream after the last layer (B, hidden), every add
    done (the final norm and LM head are the caller's).  # graph: capture-safe"""
    x, tables = model._inputs(tokens[:, None], positions[:, None])
    x = x[:, 0]  # (B, hidden), accumulated into in place from here on
    for i, layer in enumerate(model.layers):
        cos, sin = tables[model.rope_index[i]]
        attn, mlp = layer.attn, layer.mlp
        qkv = _product(x, attn.qkv.weight, "qkv")  # (B, q + 2 kv): 1 / rms(x) still to apply
        out = attn.attend_decode(qkv[:, None], cos, sin, cache, positions, x, layer.attn_norm.eps)
        _accumulate(x, out.reshape(x.shape[0], -1), attn.o_proj.weight, "o")
        if ops.on_rows_kernel(x, "gate_up"):  # the activation as the gate/up product's epilogue
            act = ops.gated_linear_rows_triton(x, mlp.gate_up.weight, mlp.activation, layer.mlp_norm.eps)
        else:
            gate_up = _product(x, mlp.gate_up.weight, "gate_up")
            act = ops.gated_act(gate_up, mlp.activation, x, layer.mlp_norm.eps)
        _accumulate(x, act, mlp.down.weight, "down")
    return x


def _product(x: torch.Tensor, weight: torch.Tensor, product: str) -> torch.Tensor:
    """x (B, K) @ weight (N, K).T (qkv, gate/up); on the rows kernel, qkv lets the attention launch
    right after its wait (ops.on_rows_kernel)."""
    if ops.on_rows_kernel(x, product):
        return ops.linear_rows_triton(x, weight, release_early=product == "qkv")
    return F.linear(x, weight)


def _accumulate(x: torch.Tensor, h: torch.Tensor, weight: torch.Tensor, product: str) -> None:
    """x (B, N) += h (B, K) @ weight (N, K).T in place, rounded once (the o and down products with
    the residual add as cuBLAS's beta = 1, or the rows kernel's accumulate)."""
    if ops.on_rows_kernel(h, product):
        ops.linear_rows_add_triton(x, h, weight)
    else:
        x.addmm_(h, weight.t())
