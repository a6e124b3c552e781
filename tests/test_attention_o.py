"""The batch-1 attention + o projection launch (runtime/kernels/attention_o.py) against its
reference (the fused attention's reference, then the o projection's), and the decoder's decode
step with it against the step without it.

On a GPU (`cuda` marker) the full cases run, the o programs spinning while the attention programs
finish; on the CPU the small ones run under the Triton interpreter in a child process (programs
one after another, in id order).
"""

from __future__ import annotations

import math

import pytest
import torch
from kernel_testing import (
    BF16,
    DEVICE,
    F16,
    F32,
    INTERPRET,
    assert_matches,
    assert_passes_under_interpreter,
    cases,
    greedy_logits,
    kernel_test,
    needs_triton,
    poisoned_fixture,
    rand,
    tiny_model,
    tol,
)

from runtime.kernels import arrival, ops
from runtime.kernels import attention_o as attention_o_mod
from runtime.kernels import qkv_attention as qkv_attention_mod
from runtime.kernels.attention_o import qkv_attention_o_ref, qkv_attention_o_triton
from runtime.kernels.rope import rope_cos_sin

poisoned = poisoned_fixture(attention_o_mod, qkv_attention_mod)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(4321)


def _inputs(H, Hkv, D, S, hidden, norm, dtype, position):
    qkv = rand(1, 1, (H + 2 * Hkv) * D, dtype=dtype)
    positions = torch.tensor([position], device=DEVICE)
    inv = 1.0 / (10000.0 ** (torch.arange(0, D, 2, device=DEVICE).float() / D))
    cos, sin = rope_cos_sin(positions[:, None], inv, dtype)
    qw, kw = (rand(D, dtype=dtype), rand(D, dtype=dtype)) if norm else (None, None)
    k, v = rand(1, Hkv, S, D, dtype=dtype, scale=2.0), rand(1, Hkv, S, D, dtype=dtype)
    length = min(position + 1, S)
    dead = torch.arange(S, device=DEVICE) >= length  # slots past the live length hold NaN
    dead[position % S] = True  # and so does the new token's slot, which the kernel writes
    k_got, v_got = (
        k.masked_fill(dead[None, None, :, None], math.nan),
        v.masked_fill(dead[None, None, :, None], math.nan),
    )
    o_weight = rand(hidden, H * D, dtype=dtype, scale=H**-0.5)
    residual = rand(1, 1, hidden, dtype=dtype)
    return qkv, positions, cos, sin, qw, kw, (k, v), (k_got, v_got), o_weight, residual


# (H, Hkv, D, S, hidden, qk_norm, offset, dtype, position, splits): Llama, Qwen3 and Gemma 3 shapes at
# positions near 300 and past a short cache's end (a ring), then odd sizes; splits None: the plan's
ATTN_O_CASES = cases(
    full=[(32, 8, 64, 2048, 2048, False, 0.0, BF16, 300, None), (16, 8, 128, 2048, 2048, True, 0.0, BF16, 1999, None),
          (4, 1, 256, 512, 1152, True, 1.0, BF16, 700, None), (4, 1, 256, 4096, 1152, True, 1.0, BF16, 300, None),
          (32, 8, 64, 64, 2048, False, 0.0, BF16, 10, None), (10, 5, 40, 130, 300, True, 1.0, F16, 129, 3),
          (6, 3, 40, 33, 100, True, 0.0, F32, 20, 2)],
    small=[(8, 2, 64, 77, 96, False, 0.0, F32, 40, None), (4, 1, 64, 50, 72, True, 1.0, BF16, 60, 3),
           (6, 3, 40, 33, 100, True, 0.0, F32, 20, 1)],
)  # fmt: skip


@kernel_test
@pytest.mark.parametrize("adds", [True, False])
@pytest.mark.parametrize("H,Hkv,D,S,hidden,norm,offset,dtype,position,splits", ATTN_O_CASES)
def test_qkv_attention_o(poisoned, adds, H, Hkv, D, S, hidden, norm, offset, dtype, position, splits):
    """y = (residual +) o(attention) from one launch matches the two references; the cache gets the
    new token; the hand-over counters are zero after the launch, so a second launch (the next
    layer's, or a graph replay) gives the same bits."""
    qkv, positions, cos, sin, qw, kw, want_kv, got_kv, o_weight, residual = _inputs(
        H, Hkv, D, S, hidden, norm, dtype, position
    )
    args = (qkv, H, Hkv, cos, sin, qw, kw, 1e-6, offset)
    res = residual if adds else None
    got = qkv_attention_o_triton(*args, *got_kv, positions, D**-0.5, o_weight, res, num_splits=splits)
    want = qkv_attention_o_ref(*args, *want_kv, positions, D**-0.5, o_weight, res)
    assert_matches(got, want, dtype, scale=3.0)
    assert not arrival.handoff_counters(got.device).any()
    assert not arrival.arrival_counters(1, got.device).any()
    slot = position % S
    for c_got, c_want in zip(got_kv, want_kv):
        torch.testing.assert_close(c_got[:, :, slot].float(), c_want[:, :, slot].float(), **tol(dtype))
    again = qkv_attention_o_triton(*args, *got_kv, positions, D**-0.5, o_weight, res, num_splits=splits)
    torch.testing.assert_close(again, got, atol=0, rtol=0)


@kernel_test
def test_attention_o_switch(monkeypatch):
    """RUNTIME_ATTN_O=fused sends a Triton row to the one launch; the default, more rows than one,
    or a misspelt value do not (the last with an error naming the variable)."""
    qkv = rand(1, 1, 96, dtype=BF16)
    o_weight = rand(40, 32, dtype=BF16)
    monkeypatch.delenv("RUNTIME_ATTN_O", raising=False)
    assert not ops.fused_attention_o(qkv, o_weight)
    monkeypatch.setenv("RUNTIME_ATTN_O", "fused")
    assert ops.fused_attention_o(qkv, o_weight) == ops.enabled("linear", qkv)
    assert not ops.fused_attention_o(rand(2, 1, 96, dtype=BF16), o_weight)
    assert not ops.fused_attention_o(qkv, rand(40, 32, dtype=F16))
    monkeypatch.setenv("RUNTIME_ATTN_O", "yes")
    with pytest.raises(ValueError, match="RUNTIME_ATTN_O"):
        ops.fused_attention_o(qkv, o_weight)


@kernel_test
@pytest.mark.parametrize("family", ["qwen3", "gemma3"] if INTERPRET else ["qwen3", "llama", "gemma3"])
def test_decode_steps_with_the_one_launch(monkeypatch, family):
    """A tiny random model (fp32) decodes past Gemma's ring wrap with RUNTIME_ATTN_O=fused: every layer
    of every decode step takes the one launch (none at prefill), and each logit matches the two
    launches' within fp32 sum-order differences. Qwen3's o projection adds the residual in it, Gemma's
    (sandwich norms) hands its output to the next norm GEMV."""
    model = tiny_model(family, torch.float32)
    prompt = torch.randint(3, model.spec.vocab, (1, 6), device=DEVICE)
    monkeypatch.setenv("RUNTIME_KERNELS", "triton")
    calls = []
    real = ops.qkv_attention_o_triton
    monkeypatch.setattr(
        ops, "qkv_attention_o_triton", lambda *a, **k: calls.append(a[-1] is not None) or real(*a, **k)
    )
    logits = {}
    for mode in ("separate", "fused"):
        monkeypatch.setenv("RUNTIME_ATTN_O", mode)
        logits[mode] = greedy_logits(model, prompt, 10)
    assert len(calls) == 10 * model.spec.layers
    assert set(calls) == {not model.spec.sandwich_norms}  # the residual rides along where o adds it
    for got, want in zip(logits["fused"], logits["separate"]):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


@needs_triton
def test_attention_o_under_the_cpu_interpreter():
    """Runs this file's kernel tests on the CPU through the Triton interpreter (small cases)."""
    assert_passes_under_interpreter(__file__)
