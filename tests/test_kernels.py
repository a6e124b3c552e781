"""Triton kernels against their plain-torch references, on fresh random inputs of awkward sizes.

On a GPU (`cuda` marker) every kernel runs over the full case lists. Without one, a small subset
runs on the CPU under the Triton interpreter: test_kernels_under_the_cpu_interpreter re-runs this
file in a child process with TRITON_INTERPRET=1 (the interpreter is chosen when kernels are
decorated, so it cannot be switched on inside a process that already imported them). Outputs and
scratch buffers are poisoned (NaN) before each call, and KV slots past the live length hold NaN,
so an element left unwritten or a slot read past the length fails the comparison.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

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
    kernel_test,
    needs_triton,
    poisoned_fixture,
    rand,
    tol,
)

from runtime.kernels import _triton, arrival, gemv_blocks, ops
from runtime.kernels import activation as activation_mod
from runtime.kernels import decode_attention as attention_mod
from runtime.kernels import qkv_attention as qkv_attention_mod
from runtime.kernels import qkv_rope as qkv_rope_mod
from runtime.kernels import rmsnorm as rmsnorm_mod
from runtime.kernels.activation import gated_act_ref, gated_act_triton
from runtime.kernels.decode_attention import decode_attention_ref, decode_attention_triton
from runtime.kernels.qkv_attention import qkv_decode_attention_ref, qkv_decode_attention_triton
from runtime.kernels.qkv_rope import (
    qkv_rope_ref,
    qkv_rope_to_cache_ref,
    qkv_rope_to_cache_triton,
    qkv_rope_triton,
)
from runtime.kernels.rmsnorm import add_rms_norm_ref, add_rms_norm_triton, rms_norm_ref, rms_norm_triton
from runtime.kernels.rope import rope_cos_sin

# the interpreter evaluates sigmoid's exp(-x) in NumPy, which warns on overflow (the result is right)
pytestmark = [pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")]
if INTERPRET:
    pytestmark.append(needs_triton)


poisoned = poisoned_fixture(rmsnorm_mod, activation_mod, qkv_rope_mod, attention_mod, qkv_attention_mod)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1234)


# ---------------------------------------------------------------- RMSNorm and residual add + RMSNorm

NORM_CASES = cases(
    full=[((1, 1, 2048), BF16), ((3, 5, 1152), BF16), ((2, 7, 2048), F16), ((4, 77), F32), ((1, 1, 128), BF16),
          ((5, 3, 1000), F32), ((513, 1152), BF16), ((2, 16, 256), F16)],
    small=[((3, 5, 77), F32), ((2, 3, 100), BF16), ((1, 1, 64), F16)],
)  # fmt: skip


@kernel_test
@pytest.mark.parametrize("offset", [0.0, 1.0])
@pytest.mark.parametrize("shape,dtype", NORM_CASES)
def test_rms_norm(poisoned, shape, dtype, offset):
    x, w = rand(*shape, dtype=dtype, scale=3.0), rand(shape[-1], dtype=dtype)
    assert_matches(rms_norm_triton(x, w, 1e-6, offset), rms_norm_ref(x, w, 1e-6, offset), dtype)


@kernel_test
@pytest.mark.parametrize("pre", [False, True], ids=["plain", "sandwich"])
@pytest.mark.parametrize("offset", [0.0, 1.0])
@pytest.mark.parametrize("shape,dtype", NORM_CASES)
def test_add_rms_norm(poisoned, shape, dtype, offset, pre):
    x, res = rand(*shape, dtype=dtype), rand(*shape, dtype=dtype, scale=4.0)
    w = rand(shape[-1], dtype=dtype)
    pre_w = rand(shape[-1], dtype=dtype) if pre else None
    normed, new_res = add_rms_norm_triton(x, res, w, 1e-5, offset, pre_w)
    want_normed, want_res = add_rms_norm_ref(x, res, w, 1e-5, offset, pre_w)
    assert_matches(new_res, want_res, dtype)
    assert_matches(normed, want_normed, dtype)


# ---------------------------------------------------------------- gated activation

ACT_CASES = cases(
    full=[((1, 1, 2 * 8192), BF16), ((1, 1, 2 * 6144), BF16), ((1, 1, 2 * 6912), BF16), ((3, 5, 2 * 77), F32),
          ((7, 2 * 1000), F16), ((2, 33, 2 * 6912), BF16)],
    small=[((3, 5, 2 * 77), F32), ((2, 3, 2 * 1100), BF16), ((1, 1, 2 * 64), F16)],
)  # fmt: skip


@kernel_test
@pytest.mark.parametrize("activation", ["silu", "gelu_tanh"])
@pytest.mark.parametrize("shape,dtype", ACT_CASES)
def test_gated_act(poisoned, shape, dtype, activation):
    x = rand(*shape, dtype=dtype, scale=3.0)
    assert_matches(gated_act_triton(x, activation), gated_act_ref(x, activation), dtype)


FOLDED_ACT_CASES = cases(
    full=[((16, 1, 2 * 8192), BF16), ((4, 1, 2 * 6144), BF16), ((3, 2 * 77), F32), ((5, 1, 2 * 6912), F16)],
    small=[((3, 2 * 77), F32), ((2, 1, 2 * 100), BF16)],
)  # fmt: skip


@kernel_test
@pytest.mark.parametrize("shape,dtype", FOLDED_ACT_CASES)
def test_gated_act_with_folded_norm(poisoned, shape, dtype):
    """gate_up projected from un-normed rows (the batch buckets' folded norm): each row is divided by
    the rms of its own source row; the first row's source is 10x the others', so a factor shared
    between rows, or none, fails."""
    x = rand(*shape, dtype=dtype, scale=3.0)
    source = rand(*shape[:-1], 300, dtype=dtype)
    source[0] *= 10
    want = gated_act_ref(x, "silu", source, 1e-6)
    assert_matches(gated_act_triton(x, "silu", source, 1e-6), want, dtype)
    assert not torch.allclose(want.float(), gated_act_ref(x, "silu").float(), atol=1e-2, rtol=1e-2)


# ---------------------------------------------------------------- q/k norm + rope (+ cache write)


def _rope_tables(positions: torch.Tensor, head_dim: int, dtype: torch.dtype):
    inv = 1.0 / (10000.0 ** (torch.arange(0, head_dim, 2, device=DEVICE).float() / head_dim))
    return rope_cos_sin(positions, inv, dtype)


# (B, T, H, Hkv, D, qk_norm, offset, dtype): Llama, Qwen3 and Gemma 3 shapes, then odd ones
QKV_CASES = cases(
    full=[(1, 1, 32, 8, 64, False, 0.0, BF16), (1, 1, 16, 8, 128, True, 0.0, BF16), (1, 1, 4, 1, 256, True, 1.0, BF16),
          (3, 17, 32, 8, 64, False, 0.0, F16), (2, 9, 16, 8, 128, True, 0.0, F32), (5, 3, 4, 1, 256, True, 1.0, F32),
          (1, 33, 6, 3, 40, True, 1.0, BF16), (4, 1, 14, 2, 64, True, 0.0, F16)],
    small=[(2, 3, 4, 2, 64, False, 0.0, F32), (1, 2, 4, 1, 256, True, 1.0, BF16), (3, 1, 6, 3, 40, True, 0.0, F16)],
)  # fmt: skip


@kernel_test
@pytest.mark.parametrize("B,T,H,Hkv,D,norm,offset,dtype", QKV_CASES)
def test_qkv_rope(poisoned, B, T, H, Hkv, D, norm, offset, dtype):
    qkv = rand(B, T, (H + 2 * Hkv) * D, dtype=dtype, scale=2.0)
    cos, sin = _rope_tables(torch.randint(0, 5000, (B, T), device=DEVICE), D, dtype)
    qw, kw = (rand(D, dtype=dtype), rand(D, dtype=dtype)) if norm else (None, None)
    got = qkv_rope_triton(qkv, H, Hkv, cos, sin, qw, kw, 1e-6, offset)
    want = qkv_rope_ref(qkv, H, Hkv, cos, sin, qw, kw, 1e-6, offset)
    for g, w in zip(got, want):
        assert_matches(g, w.contiguous(), dtype)


# (B, H, Hkv, D, S, ring, qk_norm, offset, dtype); a ring gets positions well past S (wrapped slots)
CACHE_CASES = cases(
    full=[(1, 32, 8, 64, 4096, False, False, 0.0, BF16), (1, 16, 8, 128, 300, False, True, 0.0, BF16),
          (1, 4, 1, 256, 512, True, True, 1.0, BF16), (3, 4, 1, 256, 512, True, True, 1.0, F32),
          (5, 16, 8, 128, 17, True, True, 0.0, F16), (2, 6, 3, 40, 33, False, False, 0.0, F32)],
    small=[(3, 4, 2, 64, 13, True, True, 1.0, F32), (2, 4, 1, 256, 50, False, False, 0.0, BF16)],
)  # fmt: skip


@kernel_test
@pytest.mark.parametrize("B,H,Hkv,D,S,ring,norm,offset,dtype", CACHE_CASES)
def test_qkv_rope_to_cache(poisoned, B, H, Hkv, D, S, ring, norm, offset, dtype):
    qkv = rand(B, 1, (H + 2 * Hkv) * D, dtype=dtype)
    positions = torch.randperm(3 * S if ring else S, device=DEVICE)[:B]  # distinct rows, distinct slots
    cos, sin = _rope_tables(positions[:, None], D, dtype)
    qw, kw = (rand(D, dtype=dtype), rand(D, dtype=dtype)) if norm else (None, None)
    # B + 1 rows: the row past B must stay untouched; NaN everywhere the step must not write
    caches = [torch.full((B + 1, Hkv, S, D), math.nan, dtype=dtype, device=DEVICE) for _ in range(4)]
    k_got, v_got, k_want, v_want = caches
    q_got = qkv_rope_to_cache_triton(
        qkv, H, Hkv, cos, sin, qw, kw, 1e-6, offset, k_got[:B], v_got[:B], positions
    )
    q_want = qkv_rope_to_cache_ref(
        qkv, H, Hkv, cos, sin, qw, kw, 1e-6, offset, k_want[:B], v_want[:B], positions
    )
    assert_matches(q_got, q_want, dtype)
    for got, want in ((k_got, k_want), (v_got, v_want)):
        assert torch.equal(got.isnan(), want.isnan()), "written slots differ"
        torch.testing.assert_close(got.float(), want.float(), equal_nan=True, **tol(dtype))
        assert got[B].isnan().all()


# ---------------------------------------------------------------- decode attention


# (B, H, Hkv, D, S, dtype, num_splits or None for the shape-based plan)
ATTN_CASES = cases(
    full=[(1, 32, 8, 64, 4096, BF16, None), (1, 16, 8, 128, 4096, BF16, None), (1, 4, 1, 256, 512, BF16, None),
          (1, 4, 1, 256, 32768, BF16, None), (3, 32, 8, 64, 2001, F16, None), (5, 8, 1, 128, 77, F32, None),
          (2, 16, 16, 64, 1, BF16, None), (4, 24, 4, 128, 999, BF16, 3), (1, 8, 8, 256, 1000, F16, 7),
          (8, 16, 8, 128, 700, BF16, None), (3, 12, 2, 256, 4099, F32, None), (1, 16, 2, 64, 32768, BF16, None),
          (2, 10, 5, 40, 130, F32, 2)],
    small=[(3, 8, 2, 64, 77, F32, None), (1, 4, 1, 256, 300, BF16, 3), (2, 6, 6, 128, 50, F16, 5),
           (2, 8, 1, 40, 33, F32, 1), (1, 2, 1, 64, 1, F32, None)],
)  # fmt: skip


def _lengths(B: int, S: int) -> torch.Tensor:
    """Random live lengths in [1, S], with the extremes 1 and S among them when B allows."""
    lengths = torch.randint(1, S + 1, (B,))
    lengths[0] = S
    if B > 1:
        lengths[1] = 1
    return lengths.to(DEVICE)


def _nan_past(k: torch.Tensor, v: torch.Tensor, lengths: torch.Tensor, new_slots: torch.Tensor | None = None):
    """Copies of the caches k, v (B, Hkv, S, D) with NaN in every slot at or past each row's length
    (B,) and, given new_slots (B,), in the slot each row's new token takes (it may hold an older
    token, which must not be read): a kernel that reads any of them poisons its output."""
    B, S = k.shape[0], k.shape[2]
    dead = torch.arange(S, device=k.device)[None, :] >= lengths[:, None]  # (B, S)
    if new_slots is not None:
        dead[torch.arange(B, device=k.device), new_slots] = True
    dead = dead[:, None, :, None]
    return k.masked_fill(dead, math.nan), v.masked_fill(dead, math.nan)


@kernel_test
@pytest.mark.parametrize("B,H,Hkv,D,S,dtype,splits", ATTN_CASES)
def test_decode_attention(poisoned, B, H, Hkv, D, S, dtype, splits):
    q = rand(B, H, D, dtype=dtype)
    k, v = rand(B, Hkv, S, D, dtype=dtype, scale=2.0), rand(B, Hkv, S, D, dtype=dtype)
    lengths = _lengths(B, S)
    want = decode_attention_ref(q, k, v, lengths, D**-0.5)
    k_nan, v_nan = _nan_past(k, v, lengths)
    got = decode_attention_triton(q, k_nan, v_nan, lengths, D**-0.5, num_splits=splits)
    assert_matches(got, want, dtype, scale=3.0)  # softmax weights are rounded to the dtype before P @ V


@kernel_test
def test_decode_attention_work_tracks_the_live_length(poisoned):
    """A cache view over the first rows of a larger cache (as the decoder passes it), lengths from
    a ring (min(pos + 1, window)), and rows past B never touched even when they hold NaN."""
    B, H, Hkv, D, S = 2, 8, 2, 64, 40
    k, v = rand(B + 2, Hkv, S, D), rand(B + 2, Hkv, S, D)
    k[B:], v[B:] = math.nan, math.nan
    positions = torch.tensor([7, 1000], device=DEVICE)
    lengths = torch.clamp(positions + 1, max=S)
    q = rand(B, H, D)
    got = decode_attention_triton(q, k[:B], v[:B], lengths, 0.125)
    assert_matches(got, decode_attention_ref(q, k[:B], v[:B], lengths, 0.125), F32)


# (B, H, Hkv, D, S, ring, qk_norm, offset, dtype, num_splits): the fused q/k-norm + rope + cache + attention
QKV_ATTN_CASES = cases(
    full=[(1, 32, 8, 64, 4096, False, False, 0.0, BF16, None), (1, 16, 8, 128, 4096, False, True, 0.0, BF16, None),
          (1, 4, 1, 256, 512, True, True, 1.0, BF16, None), (1, 4, 1, 256, 4096, False, True, 1.0, BF16, None),
          (3, 32, 8, 64, 2001, False, False, 0.0, F16, None), (5, 16, 8, 128, 17, True, True, 0.0, F32, None),
          (4, 24, 4, 128, 999, True, True, 1.0, BF16, 3), (8, 16, 8, 128, 700, False, True, 0.0, BF16, None),
          (2, 10, 5, 40, 130, True, True, 1.0, F32, 2), (16, 16, 8, 128, 400, False, True, 0.0, BF16, 1),
          (4, 32, 8, 64, 300, False, False, 0.0, BF16, 1), (2, 4, 1, 256, 600, True, True, 1.0, BF16, 1)],
    small=[(3, 8, 2, 64, 77, False, False, 0.0, F32, None), (2, 4, 1, 256, 50, True, True, 1.0, BF16, 3),
           (3, 6, 3, 40, 33, True, True, 0.0, F32, 2), (3, 8, 2, 64, 77, True, True, 0.0, F32, 1)],
)  # fmt: skip
# splits 1: one program per (row, kv head) walks every block and writes the output, no merge launch


@kernel_test
@pytest.mark.parametrize("merge", ["last", "separate", "chunks"])
@pytest.mark.parametrize("B,H,Hkv,D,S,ring,norm,offset,dtype,splits", QKV_ATTN_CASES)
def test_qkv_decode_attention(
    poisoned, monkeypatch, merge, B, H, Hkv, D, S, ring, norm, offset, dtype, splits
):
    """merge: the last split program merges the partials (one launch), or a second launch does,
    one program per head or ("chunks") four per head, each over a quarter of D."""
    monkeypatch.setenv("RUNTIME_ATTN_MERGE", "separate" if merge == "chunks" else merge)
    monkeypatch.setenv("RUNTIME_ATTN_MERGE_CHUNKS", "4" if merge == "chunks" else "1")
    qkv = rand(B, 1, (H + 2 * Hkv) * D, dtype=dtype)
    # rows at the first position, at the last slot, and random (wrapped for a ring)
    positions = torch.randint(0, 3 * S if ring else S, (B,))
    positions[0] = 0
    if B > 1:
        positions[1] = S - 1
    positions = positions.to(DEVICE)
    cos, sin = _rope_tables(positions[:, None], D, dtype)
    qw, kw = (rand(D, dtype=dtype), rand(D, dtype=dtype)) if norm else (None, None)
    k_want, v_want = rand(B, Hkv, S, D, dtype=dtype, scale=2.0), rand(B, Hkv, S, D, dtype=dtype)
    lengths = torch.clamp(positions + 1, max=S)
    k_got, v_got = _nan_past(k_want, v_want, lengths, positions % S)  # the kernel's copy
    args = (qkv, H, Hkv, cos, sin, qw, kw, 1e-6, offset)
    got = qkv_decode_attention_triton(*args, k_got, v_got, positions, D**-0.5, num_splits=splits)
    want = qkv_decode_attention_ref(*args, k_want, v_want, positions, D**-0.5)
    assert_matches(got, want, dtype, scale=3.0)  # softmax weights are rounded to the dtype before P @ V
    if (
        merge == "last" and splits != 1
    ):  # every launch leaves the arrival counters at zero (one split: none used)
        assert not arrival._COUNTERS[got.device].any()
        again = qkv_decode_attention_triton(*args, k_got, v_got, positions, D**-0.5, num_splits=splits)
        torch.testing.assert_close(again, got, atol=0, rtol=0)
    # the new token's k and v are in the cache; every other live slot is untouched
    live = ~(torch.arange(S, device=DEVICE)[None, :] >= lengths[:, None])
    for c_got, c_want in ((k_got, k_want), (v_got, v_want)):
        sel = live[:, None, :, None].expand_as(c_want)
        torch.testing.assert_close(c_got[sel].float(), c_want[sel].float(), **tol(dtype))


FOLDED_ATTN_CASES = cases(
    full=[(16, 32, 8, 64, 300, False, BF16), (16, 16, 8, 128, 400, True, BF16), (3, 6, 3, 40, 33, True, F32)],
    small=[(3, 6, 3, 40, 33, True, F32), (2, 8, 2, 64, 20, False, BF16)],
)  # fmt: skip


@kernel_test
@pytest.mark.parametrize("B,H,Hkv,D,S,norm,dtype", FOLDED_ATTN_CASES)
def test_qkv_decode_attention_with_folded_norm(poisoned, monkeypatch, B, H, Hkv, D, S, norm, dtype):
    """qkv projected from un-normed rows: q, the new k and v are each divided by their row's
    rms(source) before the q/k-norm and rope; the cache gets the scaled k and v. The row's 1 / rms
    taken after the kernel's wait (RUNTIME_ATTN_EARLY_ROW_SCALE=0) matches the reference too (not
    bit for bit the early order's: on the H100 the bf16 D = 64 case differs in the last bits)."""
    qkv = rand(B, 1, (H + 2 * Hkv) * D, dtype=dtype)
    source = rand(B, 300, dtype=dtype)
    source[0] *= 10  # rows of different rms: a factor shared between rows fails
    positions = torch.randint(0, S, (B,)).to(DEVICE)
    cos, sin = _rope_tables(positions[:, None], D, dtype)
    qw, kw = (rand(D, dtype=dtype), rand(D, dtype=dtype)) if norm else (None, None)
    k_want, v_want = rand(B, Hkv, S, D, dtype=dtype), rand(B, Hkv, S, D, dtype=dtype)
    k_got, v_got = k_want.clone(), v_want.clone()
    args = (qkv, H, Hkv, cos, sin, qw, kw, 1e-6, 0.0)
    got = qkv_decode_attention_triton(*args, k_got, v_got, positions, D**-0.5, source, 1e-6)
    want = qkv_decode_attention_ref(*args, k_want, v_want, positions, D**-0.5, source, 1e-6)
    assert_matches(got, want, dtype, scale=3.0)
    rows = torch.arange(B, device=DEVICE)
    for c_got, c_want in ((k_got, k_want), (v_got, v_want)):
        new_got, new_want = c_got[rows, :, positions % S], c_want[rows, :, positions % S]
        torch.testing.assert_close(new_got.float(), new_want.float(), **tol(dtype))
    unscaled = qkv_decode_attention_ref(*args, k_want.clone(), v_want.clone(), positions, D**-0.5)
    assert not torch.allclose(want.float(), unscaled.float(), atol=1e-2, rtol=1e-2)
    monkeypatch.setenv("RUNTIME_ATTN_EARLY_ROW_SCALE", "0")
    k_late, v_late = k_want.clone(), v_want.clone()
    late = qkv_decode_attention_triton(*args, k_late, v_late, positions, D**-0.5, source, 1e-6)
    assert_matches(late, want, dtype, scale=3.0)
    late_new = k_late[rows, :, positions % S].float()
    torch.testing.assert_close(late_new, k_want[rows, :, positions % S].float(), **tol(dtype))


# ---------------------------------------------------------------- the whole model on Triton kernels


def _tiny_model(family: str, dtype: torch.dtype, device: str = DEVICE):
    """A tiny random model of `family` whose norms are off identity too, so every weight matters."""
    from tiny_configs import tiny_config

    from runtime.models.spec import ModelSpec
    from runtime.models.weights import random_model

    model = random_model(ModelSpec.from_hf(tiny_config(family)), device, dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    return model


def _greedy_logits(model, prompt: torch.Tensor, steps: int) -> list[torch.Tensor]:
    """The prompt's logits (T, V), then each greedy decode step's (1, V), under the current switches."""
    from runtime.engine.state import KVCache

    cache = KVCache(model.spec, 1, 32, prompt.device, model.dtype)
    logits = [model.prefill(prompt, cache, all_logits=True)[0]]
    token = logits[0][-1:].argmax(-1)
    for pos in range(prompt.shape[1], prompt.shape[1] + steps):
        logits.append(model.decode(token, torch.tensor([pos], device=prompt.device), cache))
        token = logits[-1].argmax(-1)
    return logits


@kernel_test
@pytest.mark.parametrize(
    "family", ["gemma3", "qwen3"] if INTERPRET else ["gemma3", "qwen3", "llama", "qwen2"]
)
def test_model_logits_triton_vs_torch(monkeypatch, family):
    """A tiny random model, fp32: prefill + decode steps past Gemma's ring wrap give the same logits
    with every op on Triton as with every op on the references (RUNTIME_KERNELS switched per call)."""
    model = _tiny_model(family, torch.float32)
    prompt = torch.randint(3, model.spec.vocab, (1, 11), device=DEVICE)
    logits = {}
    for backend in ("torch", "triton"):
        monkeypatch.setenv("RUNTIME_KERNELS", backend)
        logits[backend] = _greedy_logits(model, prompt, 10 if INTERPRET else 20)  # gemma3's window is 8
    for got, want in zip(logits["triton"], logits["torch"]):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


@kernel_test
@pytest.mark.parametrize("family", ["qwen3"] if INTERPRET else ["qwen3", "llama", "gemma3"])
@pytest.mark.parametrize("dtype", [torch.float32] if INTERPRET else [torch.float32, BF16])
def test_residual_add_in_the_branch_epilogue_changes_no_bit(monkeypatch, family, dtype):
    """At batch 1 the o (by default) and down GEMVs of a family without sandwich norms add the
    residual in their epilogue (linear_add) and the next norm GEMV reads one row: the same roundings
    as adding it there, so every logit is bit-equal to RUNTIME_RESIDUAL_ADD=none's whichever roles
    add. Gemma's branches are normed before they join: it never takes the epilogue."""
    model = _tiny_model(family, dtype)
    prompt = torch.randint(3, model.spec.vocab, (1, 7), device=DEVICE)
    monkeypatch.setenv("RUNTIME_KERNELS", "triton")
    calls = []
    real = ops.linear_add_triton
    monkeypatch.setattr(ops, "linear_add_triton", lambda *a: calls.append(1) or real(*a))
    logits = {}
    for roles in ("none", "o,down", "down", None):  # None: the default, "o"
        if roles is None:
            monkeypatch.delenv("RUNTIME_RESIDUAL_ADD", raising=False)
        else:
            monkeypatch.setenv("RUNTIME_RESIDUAL_ADD", roles)
        calls.clear()
        logits[roles] = _greedy_logits(model, prompt, 6)
        # each of the 6 decode steps: the roles' projections in every layer (prefill's rows add later)
        per_layer = 0 if model.spec.sandwich_norms else {"none": 0, "o,down": 2}.get(roles, 1)
        assert len(calls) == 6 * per_layer * model.spec.layers, roles
    for roles in ("o,down", "down", None):
        for got, want in zip(logits[roles], logits["none"]):
            assert torch.equal(got, want), roles


@pytest.mark.parametrize("family", ["qwen3", "gemma3"])
def test_only_the_qkv_gemv_may_release_early(monkeypatch, family):
    """At decode each layer's qkv GEMV gets the step's QkvRelease (the row's positions and the
    position where its K/V outgrow L2), which attention_plan.qkv_release turns into a release point
    at launch; no other norm GEMV gets one (gate/up, the LM head), nor does prefill. On the CPU the
    reference runs: the argument is only recorded."""
    from runtime.kernels.attention_plan import NEVER, QkvRelease

    model = _tiny_model(family, torch.float32, "cpu")
    prompt = torch.randint(3, model.spec.vocab, (1, 5))
    seen = []
    real = ops.norm_linear

    def spy(*args, **kwargs):
        seen.append(
            (any(args[6] is w for w in qkv), args[1].numel() == model.spec.hidden, kwargs.get("release"))
        )
        return real(*args, **kwargs)

    monkeypatch.setattr(ops, "norm_linear", spy)
    qkv = [layer.attn.qkv.weight for layer in model.layers]
    _greedy_logits(model, prompt, 2)
    decode_qkv = [r for is_qkv, one_row, r in seen if is_qkv and one_row]
    assert len(decode_qkv) == 2 * model.spec.layers
    assert all(
        isinstance(r, QkvRelease) and r.from_position == NEVER for r in decode_qkv
    )  # no L2 off the GPU
    assert [p for r in decode_qkv for p in r.positions.tolist()] == [5] * model.spec.layers + [
        6
    ] * model.spec.layers
    assert all(r is None for is_qkv, one_row, r in seen if not (is_qkv and one_row))
    assert any(not is_qkv for is_qkv, _, _ in seen)  # the LM head at least


def test_qkv_release_point_from_the_grid(monkeypatch):
    """RUNTIME_QKV_PDL: "auto" releases early up to QKV_EARLY_PER_SM programs per SM (Gemma's 384 qkv
    programs on 132 SMs), up to QKV_LONG_PER_SM (Qwen3's 1024) early once the row's position reaches
    the L2 spill position and late below it ("long"), late past that (Llama's 1536); "early", "long"
    and "late" force one; a typo is refused."""
    from runtime.kernels import attention_plan

    monkeypatch.setattr(attention_plan, "sm_count", lambda device: 132)
    cuda = torch.device("cuda", 0)
    monkeypatch.delenv("RUNTIME_QKV_PDL", raising=False)
    when = lambda programs: attention_plan.qkv_release(programs, cuda)  # noqa: E731
    assert when(384) == when(4 * 132) == "early"
    assert when(4 * 132 + 1) == when(1024) == when(8 * 132) == "long"
    assert when(8 * 132 + 1) == when(1536) == "late"
    for forced in ("early", "long", "late"):
        monkeypatch.setenv("RUNTIME_QKV_PDL", forced)
        assert when(1536) == when(384) == forced
    monkeypatch.setenv("RUNTIME_QKV_PDL", "soon")
    with pytest.raises(ValueError, match="RUNTIME_QKV_PDL"):
        when(384)


def test_l2_spill_position(monkeypatch):
    """The first position whose K/V (all layers without a window) passes the card's L2: Qwen3-1.7B's
    28 layers x 8 kv heads x 128 x 2 (k, v) x 2 bytes = 114688 bytes a position in a 50 MiB L2 -> 458;
    never off the GPU or without such layers."""
    from types import SimpleNamespace

    from runtime.kernels import attention_plan

    monkeypatch.setattr(
        torch.cuda, "get_device_properties", lambda device: SimpleNamespace(L2_cache_size=50 << 20)
    )
    cuda = torch.device("cuda", 0)
    assert attention_plan.l2_spill_position(114688, cuda) == 458
    assert attention_plan.l2_spill_position(0, cuda) == attention_plan.NEVER
    assert attention_plan.l2_spill_position(114688, torch.device("cpu")) == attention_plan.NEVER


@pytest.mark.cuda
@pytest.mark.skipif(INTERPRET, reason="the PDL release points exist on the GPU only")
@pytest.mark.parametrize("family", ["qwen3", "gemma3"])
def test_qkv_release_points_change_no_bit(monkeypatch, family):
    """Where the qkv GEMV lets the attention launch (after its loop, after its wait, or after its wait
    from a position on, read in the kernel, either side of it) changes no logit, and no release
    point leaves the chain hung (each program releases once)."""
    from runtime.models import decoder

    model = _tiny_model(family, BF16)
    prompt = torch.randint(3, model.spec.vocab, (1, 7), device=DEVICE)
    monkeypatch.setenv("RUNTIME_KERNELS", "triton")
    runs = {}
    for name, choice, spill in (("late", "late", None), ("early", "early", None), ("long, past", "long", 0),
                                ("long, before", "long", 1 << 20), ("long, midway", "long", 10)):  # fmt: skip
        monkeypatch.setenv("RUNTIME_QKV_PDL", choice)
        if spill is not None:
            monkeypatch.setattr(decoder, "l2_spill_position", lambda per_position, device, at=spill: at)
        runs[name] = _greedy_logits(model, prompt, 6)
    for name, logits in runs.items():
        for got, want in zip(logits, runs["late"]):
            assert torch.equal(got, want), name


@pytest.mark.cuda
@pytest.mark.skipif(INTERPRET, reason="the PDL release points exist on the GPU only")
@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_gemv_early_release_changes_no_bit(monkeypatch, family):
    """Where the o, gate/up and down GEMVs let the next kernel launch (after their loop, or right
    after their wait: RUNTIME_GEMV_EARLY) changes no logit: the next kernel's own wait still holds
    it until this one has ended, and no role leaves the chain hung. Llama's o and down add the
    residual here (the release then sits in linear_add's launch); Gemma's never do."""
    model = _tiny_model(family, BF16)
    prompt = torch.randint(3, model.spec.vocab, (1, 7), device=DEVICE)
    monkeypatch.setenv("RUNTIME_KERNELS", "triton")
    monkeypatch.setenv("RUNTIME_RESIDUAL_ADD", "o,down")
    runs = {}
    for roles in ("none", "o", "gate_up", "down", "o,gate_up,down"):
        monkeypatch.setenv("RUNTIME_GEMV_EARLY", roles)
        runs[roles] = _greedy_logits(model, prompt, 6)
    for roles, logits in runs.items():
        for got, want in zip(logits, runs["none"]):
            assert torch.equal(got, want), roles


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_gemv_early_release_reaches_the_named_projections(monkeypatch, family):
    """RUNTIME_GEMV_EARLY names the roles whose batch-1 GEMV releases early: every decode step hands
    release_early=True to exactly those projections of every layer (o and down through linear or
    linear_add, gate/up through norm_linear_act), and False to the others. On the CPU the
    references run behind the GEMV's dispatch: the argument is only recorded."""
    from runtime.kernels.fused_linear import linear_add_ref, linear_ref, norm_linear_act_ref

    model = _tiny_model(family, torch.float32, "cpu")
    prompt = torch.randint(3, model.spec.vocab, (1, 5))
    role_of = {}
    for layer in model.layers:
        role_of[id(layer.attn.o_proj.weight)] = "o"
        role_of[id(layer.mlp.gate_up.weight)] = "gate_up"
        role_of[id(layer.mlp.down.weight)] = "down"
    seen = []

    def record(x, weight, early):
        if x.shape[:-1].numel() == 1:  # decode; prefill's rows never take the one-row GEMV
            seen.append((role_of[id(weight)], early))

    def norm_linear_act(h, residual, norm_w, eps, offset, pre_w, weight, activation, release_early=False):
        record(residual, weight, release_early)
        return norm_linear_act_ref(h, residual, norm_w, eps, offset, pre_w, weight, activation)

    # the one-row dispatch as on the GPU: the gated epilogue, the residual add where the branch joins
    monkeypatch.setattr(ops, "gated_epilogue", lambda residual, weight: residual.shape[:-1].numel() == 1)
    monkeypatch.setattr(ops, "residual_epilogue", lambda x, weight, role: x.shape[:-1].numel() == 1)
    monkeypatch.setattr(ops, "norm_linear_act", norm_linear_act)
    monkeypatch.setattr(
        ops, "linear", lambda x, w, release_early=False: record(x, w, release_early) or linear_ref(x, w)
    )
    monkeypatch.setattr(
        ops,
        "linear_add",
        lambda x, w, r, release_early=False: record(x, w, release_early) or linear_add_ref(x, w, r),
    )
    steps, layers = 2, model.spec.layers
    for roles in ("none", "gate_up", "o,down", "o,gate_up,down"):
        monkeypatch.setenv("RUNTIME_GEMV_EARLY", roles)
        seen.clear()
        _greedy_logits(model, prompt, steps)
        assert sorted(seen) == sorted(
            (role, role in roles.split(","))
            for role in ("o", "gate_up", "down")
            for _ in range(steps * layers)
        ), roles


def test_early_release_defaults_to_the_shapes_the_card_ships(monkeypatch):
    """Unset, RUNTIME_GEMV_EARLY means the projections whose role and shape the card's shipped
    choices name (on the H100 Llama's gate/up 16384 x 2048 and down 2048 x 8192, not Gemma's gate/up
    13824 x 1152); set, it names the roles whatever was shipped."""
    shipped = {("gate_up", 16384, 2048), ("down", 2048, 8192)}
    monkeypatch.setitem(gemv_blocks.SHIPPED_ROLES, "early_release", shipped)
    llama_gate_up, gemma_gate_up = torch.empty(16384, 2048), torch.empty(13824, 1152)
    llama_down, o = torch.empty(2048, 8192), torch.empty(2048, 2048)
    monkeypatch.delenv("RUNTIME_GEMV_EARLY", raising=False)
    assert ops.early_release(llama_gate_up, "gate_up") and ops.early_release(llama_down, "down")
    assert not ops.early_release(gemma_gate_up, "gate_up") and not ops.early_release(o, "o")
    assert not ops.early_release(llama_down, "gate_up")  # the role counts, not the shape alone
    monkeypatch.setenv("RUNTIME_GEMV_EARLY", "o")
    assert ops.early_release(o, "o") and not ops.early_release(llama_gate_up, "gate_up")
    monkeypatch.setenv("RUNTIME_GEMV_EARLY", "none")
    assert not ops.early_release(llama_down, "down")
    monkeypatch.setenv("RUNTIME_GEMV_EARLY", "down:2048x8192")  # one shape of a role
    assert ops.early_release(llama_down, "down") and not ops.early_release(torch.empty(2048, 6144), "down")


def test_residual_epilogue_defaults_to_o_and_the_shapes_the_card_ships(monkeypatch):
    """Unset, RUNTIME_RESIDUAL_ADD means the o GEMV everywhere and the down GEMV at the shapes the
    card's shipped choices name (on the H100 Llama's 2048 x 8192, not Qwen3's 2048 x 6144); set, it
    names the roles whatever was shipped."""
    monkeypatch.setattr(ops, "_gemv_row", lambda x, weight: True)
    monkeypatch.setitem(gemv_blocks.SHIPPED_ROLES, "residual_add", {("down", 2048, 8192)})
    x = torch.empty(1, 8)
    llama_down, qwen3_down, o = torch.empty(2048, 8192), torch.empty(2048, 6144), torch.empty(2048, 2048)
    monkeypatch.delenv("RUNTIME_RESIDUAL_ADD", raising=False)
    assert ops.residual_epilogue(x, o, "o") and ops.residual_epilogue(x, llama_down, "down")
    assert not ops.residual_epilogue(x, qwen3_down, "down")
    monkeypatch.setenv("RUNTIME_RESIDUAL_ADD", "o")
    assert not ops.residual_epilogue(x, llama_down, "down")
    monkeypatch.setenv("RUNTIME_RESIDUAL_ADD", "none")
    assert not ops.residual_epilogue(x, o, "o")
    monkeypatch.setattr(ops, "_gemv_row", lambda x, weight: False)  # not a batch-1 GEMV: never
    monkeypatch.delenv("RUNTIME_RESIDUAL_ADD")
    assert not ops.residual_epilogue(x, llama_down, "down")


@pytest.mark.parametrize(
    "variable,read,unknown",
    [("RUNTIME_RESIDUAL_ADD", gemv_blocks.residual_add_roles, "gate_up"),
     ("RUNTIME_GEMV_EARLY", gemv_blocks.early_release_roles, "up")],
)  # fmt: skip
def test_role_variables_name_roles_or_refuse_unknown_ones(monkeypatch, variable, read, unknown):
    """RUNTIME_RESIDUAL_ADD and RUNTIME_GEMV_EARLY: unset, None (the card's shipped choices decide);
    "none", no role; else the comma-separated roles or role:NxK entries, spaces aside, a role outside
    the list or a malformed shape refused."""
    monkeypatch.delenv(variable, raising=False)
    assert read() is None
    monkeypatch.setenv(variable, " down , o ")
    assert read() == {"o", "down"}
    monkeypatch.setenv(variable, "none")
    assert read() == set()
    monkeypatch.setenv(variable, "o, down:2048x8192")  # a role at one shape, as a tuning file lists it
    assert read() == {"o", "down:2048x8192"}
    for bad in (unknown, f"{unknown}:2048x8192", "down:2048", "down:2048x"):
        monkeypatch.setenv(variable, f"o,{bad}")
        with pytest.raises(ValueError, match=f"{variable}.*{bad}"):
            read()


# ---------------------------------------------------------------- dispatcher (CPU, no Triton needed)


def test_merge_launch_releases_early_only_under_pdl(monkeypatch):
    """RUNTIME_MERGE_PDL=early turns the merge's late release into the early one where PDL is on;
    without PDL (older cards, the interpreter) the launch stays as it was."""
    from runtime.kernels.attention_plan import merge_launch

    on, off = {"PDL": 2, "launch_pdl": True}, {"PDL": 0}
    monkeypatch.delenv("RUNTIME_MERGE_PDL", raising=False)
    assert merge_launch(on) == on and merge_launch(off) == off
    monkeypatch.setenv("RUNTIME_MERGE_PDL", "early")
    assert merge_launch(on) == {"PDL": 1, "launch_pdl": True} and merge_launch(off) == off
    assert on == {"PDL": 2, "launch_pdl": True}  # the step's own arguments untouched
    assert _triton.released_early(on) == {"PDL": 1, "launch_pdl": True} and _triton.released_early(off) == off
    monkeypatch.setenv("RUNTIME_MERGE_PDL", "soon")
    with pytest.raises(ValueError, match="RUNTIME_MERGE_PDL"):
        merge_launch(on)


def test_env_choice_reads_a_switch_and_refuses_unknown_values(monkeypatch):
    """The switches' one reader: unset or empty -> the default; a listed value as it is; anything
    else refused with the switch's name and its choices ("a or b" for two)."""
    from runtime.kernels.switches import env_choice

    monkeypatch.delenv("RUNTIME_TEST_SWITCH", raising=False)
    assert env_choice("RUNTIME_TEST_SWITCH", ("early", "late"), "early") == "early"
    monkeypatch.setenv("RUNTIME_TEST_SWITCH", "")
    assert env_choice("RUNTIME_TEST_SWITCH", ("early", "late"), "late") == "late"
    monkeypatch.setenv("RUNTIME_TEST_SWITCH", "late")
    assert env_choice("RUNTIME_TEST_SWITCH", {"early": 1, "late": 2}, "early") == "late"
    monkeypatch.setenv("RUNTIME_TEST_SWITCH", "soon")
    with pytest.raises(ValueError, match=r"^RUNTIME_TEST_SWITCH='soon': choose early or late$"):
        env_choice("RUNTIME_TEST_SWITCH", ("early", "late"), "early")
    with pytest.raises(ValueError, match=r"^RUNTIME_TEST_SWITCH='soon': choose one of a, b, c$"):
        env_choice("RUNTIME_TEST_SWITCH", ("a", "b", "c"), "a")


def test_env_power_of_two_reads_a_size_and_refuses_others(monkeypatch):
    """Unset or empty -> the default; a power of two inside [low, high] as it is; anything else (not
    a number, not a power of two, outside the range) refused with the switch's name and the range."""
    from runtime.kernels.switches import env_power_of_two

    monkeypatch.delenv("RUNTIME_TEST_SIZE", raising=False)
    assert env_power_of_two("RUNTIME_TEST_SIZE", 128, 2, 4096) == 128
    monkeypatch.setenv("RUNTIME_TEST_SIZE", "")
    assert env_power_of_two("RUNTIME_TEST_SIZE", 128, 2, 4096) == 128
    monkeypatch.setenv("RUNTIME_TEST_SIZE", "64")
    assert env_power_of_two("RUNTIME_TEST_SIZE", 128, 2, 4096) == 64
    for bad in ("96", "abc", "-64", "1", "8192", "0"):
        monkeypatch.setenv("RUNTIME_TEST_SIZE", bad)
        with pytest.raises(
            ValueError, match=rf"^RUNTIME_TEST_SIZE='{bad}': choose a power of two from 2 to 4096$"
        ):
            env_power_of_two("RUNTIME_TEST_SIZE", 128, 2, 4096)


def test_pdl_early_is_the_early_release_where_pdl_is_on(monkeypatch):
    """pdl(device, early=True): RUNTIME_PDL's mode changed to the early release on a card that has
    PDL; no PDL (an older card, a CPU tensor) stays off."""
    monkeypatch.setattr(_triton, "INTERPRETING", False)
    monkeypatch.setattr(_triton, "gdc_wait", object())
    monkeypatch.setattr(_triton, "_capability", lambda index: (9, 0))
    monkeypatch.delenv("RUNTIME_PDL", raising=False)
    gpu = torch.device("cuda", 0)
    assert _triton.pdl(gpu) == {"PDL": 2, "launch_pdl": True}
    assert _triton.pdl(gpu, early=True) == {"PDL": 1, "launch_pdl": True}
    assert _triton.pdl(torch.device("cpu"), early=True) == {"PDL": 0}
    monkeypatch.setattr(_triton, "_capability", lambda index: (8, 0))
    assert _triton.pdl(gpu, early=True) == {"PDL": 0}


def test_dispatcher_choice(monkeypatch):
    cpu = torch.zeros(1)
    monkeypatch.delenv("RUNTIME_KERNELS", raising=False)
    assert not ops.use_triton(cpu)  # auto: CPU tensors take the references
    monkeypatch.setattr(_triton, "AVAILABLE", True)
    monkeypatch.setenv("RUNTIME_KERNELS", "torch")
    assert not ops.use_triton(cpu)
    monkeypatch.setenv("RUNTIME_KERNELS", "triton")
    assert ops.use_triton(cpu)
    monkeypatch.setattr(_triton, "AVAILABLE", False)
    assert not ops.use_triton(cpu)  # nothing to force without Triton
    monkeypatch.setenv("RUNTIME_KERNELS", "cuda")
    with pytest.raises(ValueError, match="RUNTIME_KERNELS"):
        ops.use_triton(cpu)


def _op_inputs() -> dict:
    """Small CPU arguments for every dispatched op."""
    H, Hkv, D = 4, 2, 8
    qkv, cos, sin = torch.randn(2, 1, (H + 2 * Hkv) * D), torch.randn(2, 1, D), torch.randn(2, 1, D)
    w, positions = torch.randn(D), torch.tensor([1, 6])
    return {
        "rms_norm": (torch.randn(3, 16), torch.randn(16), 1e-6, 0.0),
        "add_rms_norm": (torch.randn(3, 16), torch.randn(3, 16), torch.randn(16), 1e-6, 1.0, torch.randn(16)),
        "gated_act": (torch.randn(3, 16), "gelu_tanh"),
        "qkv_rope": (qkv, H, Hkv, cos, sin, w, w, 1e-6, 0.0),
        "qkv_rope_to_cache": (qkv, H, Hkv, cos, sin, w, w, 1e-6, 1.0, torch.zeros(2, Hkv, 5, D),
                              torch.zeros(2, Hkv, 5, D), positions),
        "decode_attention": (torch.randn(2, H, D), torch.randn(2, Hkv, 5, D), torch.randn(2, Hkv, 5, D),
                             torch.tensor([5, 2]), 0.3),
        "qkv_decode_attention": (qkv, H, Hkv, cos, sin, w, w, 1e-6, 0.0, torch.randn(2, Hkv, 5, D),
                                 torch.randn(2, Hkv, 5, D), positions, 0.3),
    }  # fmt: skip


def test_dispatcher_routes_every_op(monkeypatch):
    """RUNTIME_KERNELS=torch gives the references' results; =triton calls every Triton entry point."""
    calls = []
    for name in _op_inputs():
        monkeypatch.setattr(ops, f"{name}_triton", lambda *a, _name=name, **k: calls.append(_name))
    monkeypatch.setattr(_triton, "AVAILABLE", True)
    monkeypatch.setenv("RUNTIME_KERNELS", "torch")
    refs = {
        "rms_norm": rms_norm_ref, "add_rms_norm": add_rms_norm_ref, "gated_act": gated_act_ref,
        "qkv_rope": qkv_rope_ref, "qkv_rope_to_cache": qkv_rope_to_cache_ref, "decode_attention": decode_attention_ref,
        "qkv_decode_attention": qkv_decode_attention_ref,
    }  # fmt: skip
    for name, args in _op_inputs().items():
        got, want = getattr(ops, name)(*args), refs[name](*args)
        for g, w in zip(
            got if isinstance(got, tuple) else [got], want if isinstance(want, tuple) else [want]
        ):
            assert torch.equal(g, w), name
    assert calls == []
    monkeypatch.setenv("RUNTIME_KERNELS", "triton")
    for name, args in _op_inputs().items():
        getattr(ops, name)(*args)
    assert calls == list(_op_inputs())


def test_ops_work_without_triton():
    """Where Triton does not import, the kernel modules still import and every op is the reference."""
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch\n"
        "from runtime.kernels import _triton, ops\n"
        "assert not _triton.AVAILABLE\n"
        "x, w = torch.randn(2, 8), torch.randn(8)\n"
        "assert not ops.use_triton(x)\n"
        "assert torch.equal(ops.rms_norm(x, w, 1e-6), ops.rms_norm_ref(x, w, 1e-6))\n"
    )
    env = dict(os.environ, RUNTIME_KERNELS="triton")
    env.pop("TRITON_INTERPRET", None)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]


# ---------------------------------------------------------------- the references themselves (CPU)


def test_decode_attention_ref_is_softmax_over_live_slots():
    B, H, Hkv, D, S = 3, 6, 2, 8, 10
    q, k, v = torch.randn(B, H, D), torch.randn(B, Hkv, S, D), torch.randn(B, Hkv, S, D)
    lengths = torch.tensor([10, 1, 4])
    got = decode_attention_ref(q, k, v, lengths, 0.3)
    for b in range(B):
        for h in range(H):
            kv = h // (H // Hkv)
            n = int(lengths[b])
            p = torch.softmax(0.3 * k[b, kv, :n] @ q[b, h], dim=0)
            torch.testing.assert_close(got[b, h], p @ v[b, kv, :n])


def test_add_rms_norm_ref_is_add_then_norm():
    x, res, w, pre = torch.randn(4, 32), torch.randn(4, 32), torch.randn(32), torch.randn(32)
    normed, new_res = add_rms_norm_ref(x, res, w, 1e-6, 1.0, pre)
    want_res = res + rms_norm_ref(x, pre, 1e-6, 1.0)
    assert torch.equal(new_res, want_res)
    assert torch.equal(normed, rms_norm_ref(want_res, w, 1e-6, 1.0))


def test_qkv_rope_to_cache_ref_writes_ring_slots():
    H, Hkv, D, S = 4, 2, 8, 5
    qkv = torch.randn(2, 1, (H + 2 * Hkv) * D)
    positions = torch.tensor([3, 12])  # row 1 wraps: slot 12 % 5 = 2
    cos, sin = torch.ones(2, 1, D), torch.zeros(2, 1, D)  # rope at angle 0 is the identity
    k_cache, v_cache = torch.zeros(2, Hkv, S, D), torch.zeros(2, Hkv, S, D)
    q = qkv_rope_to_cache_ref(qkv, H, Hkv, cos, sin, None, None, 1e-6, 0.0, k_cache, v_cache, positions)
    assert torch.equal(q, qkv[:, :, : H * D].view(2, 1, H, D))
    assert torch.equal(k_cache[1, :, 2], qkv[1, 0, H * D : (H + Hkv) * D].view(Hkv, D))
    assert torch.equal(v_cache[0, :, 3], qkv[0, 0, (H + Hkv) * D :].view(Hkv, D))
    assert k_cache[0, :, [0, 1, 2, 4]].abs().sum() == 0


# ---------------------------------------------------------------- the interpreter subset, from the parent


@pytest.mark.skipif(INTERPRET, reason="this is the child run")
@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU runs the compiled kernels instead")
@needs_triton
def test_kernels_under_the_cpu_interpreter():
    """Runs this file's kernel tests on the CPU through the Triton interpreter (small cases)."""
    assert_passes_under_interpreter(__file__)


def _split_inputs(B, H, Hkv, D, S, norm, dtype, first_position):
    """A decode step's inputs for the split attention kernel: the packed qkv row, random positions
    (row 0's at first_position), their rope tables, q/k-norm weights (norm), full random caches and
    the live lengths."""
    qkv = rand(B, 1, (H + 2 * Hkv) * D, dtype=dtype)
    positions = torch.randint(0, S, (B,)).to(DEVICE)
    positions[0] = first_position
    cos, sin = _rope_tables(positions[:, None], D, dtype)
    qw, kw = (rand(D, dtype=dtype), rand(D, dtype=dtype)) if norm else (None, None)
    k, v = rand(B, Hkv, S, D, dtype=dtype), rand(B, Hkv, S, D, dtype=dtype)
    return qkv, positions, cos, sin, qw, kw, k, v, torch.clamp(positions + 1, max=S)


@pytest.mark.cuda
@pytest.mark.parametrize(
    "B,H,Hkv,D,S,norm,dtype,splits",
    [(1, 32, 8, 64, 700, False, BF16, None), (16, 4, 1, 256, 333, True, BF16, None),
     (3, 16, 8, 128, 130, True, F16, 1), (2, 10, 5, 40, 50, True, F32, 2)],
)  # fmt: skip
def test_qkv_decode_attention_grouped_loads(monkeypatch, B, H, Hkv, D, S, norm, dtype, splits):
    """RUNTIME_ATTN_LOADS (the first block, weights and tables loaded as one group, the block's move
    to the dot layout after the prologue; or one group after another): both write the same cache,
    bit for bit, and both attend over exactly the live slots: NaN in every dead slot is never read,
    and against attention in float64 on the kernel's own q and cache each is as close as the other
    (one slot missed or read twice moves the mean error by far more). In 16 bits the two outputs
    differ in the last bits once the first block's tiles come through the opaque move; on an H200
    the grouped order was the closer of the two to float64."""
    qkv, positions, cos, sin, qw, kw, k, v, lengths = _split_inputs(B, H, Hkv, D, S, norm, dtype, S - 1)
    args = (qkv, H, Hkv, cos, sin, qw, kw, 1e-6, 1.0)
    for early in ("1", "0"):
        monkeypatch.setenv("RUNTIME_ATTN_EARLY_TABLES", early)
        got, err = {}, {}
        for loads in ("serial", "grouped"):
            monkeypatch.setenv("RUNTIME_ATTN_LOADS", loads)
            kc, vc = _nan_past(k, v, lengths, positions % S)
            out = qkv_decode_attention_triton(*args, kc, vc, positions, D**-0.5, num_splits=splits)
            got[loads] = (out, kc, vc)
        q = qkv_rope_ref(qkv, H, Hkv, cos, sin, qw, kw, 1e-6, 1.0)[0][:, 0]
        kc, vc = got["serial"][1].nan_to_num(), got["serial"][2].nan_to_num()
        want = decode_attention_ref(q.double(), kc.double(), vc.double(), lengths, D**-0.5)
        for loads, (out, _, _) in got.items():
            assert_matches(out, want.to(dtype), dtype, scale=3.0)
            err[loads] = (out.double() - want).abs().mean().item()
        assert err["grouped"] <= 1.25 * err["serial"] + 1e-7, err
        for a, b in zip(got["serial"][1:], got["grouped"][1:]):
            torch.testing.assert_close(a, b, atol=0, rtol=0, equal_nan=True)


def _runs_under(monkeypatch, variable, values, H, Hkv, D, S, inputs, splits):
    """The split kernel's (output, k cache, v cache) on _split_inputs' `inputs` under each value of
    the switch `variable`, each on its own copy of the caches with NaN past the live length, and
    attention in float64 on the kernel's own q and the first run's cache."""
    qkv, positions, cos, sin, qw, kw, k, v, lengths = inputs
    got = {}
    for value in values:
        monkeypatch.setenv(variable, value)
        kc, vc = _nan_past(k, v, lengths, positions % S)
        args = (qkv, H, Hkv, cos, sin, qw, kw, 1e-6, 1.0, kc, vc, positions, D**-0.5)
        got[value] = (qkv_decode_attention_triton(*args, num_splits=splits), kc, vc)
    q = qkv_rope_ref(qkv, H, Hkv, cos, sin, qw, kw, 1e-6, 1.0)[0][:, 0]
    kc, vc = got[values[0]][1].nan_to_num(), got[values[0]][2].nan_to_num()
    return got, decode_attention_ref(q.double(), kc.double(), vc.double(), lengths, D**-0.5)


@pytest.mark.cuda
@pytest.mark.parametrize(
    "B,H,Hkv,D,S,norm,dtype,splits",
    [(1, 16, 8, 128, 2048, True, BF16, None), (1, 32, 8, 64, 700, False, BF16, None),
     (16, 4, 1, 256, 333, True, BF16, None), (3, 10, 5, 40, 50, True, F16, 2)],
)  # fmt: skip
def test_qkv_decode_attention_late_v_move(monkeypatch, B, H, Hkv, D, S, norm, dtype, splits):
    """RUNTIME_ATTN_V_MOVE=late moves the first block's V to the dot's layout after the scores
    instead of with K: the same products in the same order, so output and caches equal the early
    move's bit for bit, and the output matches attention in float64."""
    inputs = _split_inputs(B, H, Hkv, D, S, norm, dtype, S - 50)
    # batch 1 takes "late" by default
    got, want = _runs_under(
        monkeypatch, "RUNTIME_ATTN_V_MOVE", ("early", "late"), H, Hkv, D, S, inputs, splits
    )
    assert_matches(got["late"][0], want.to(dtype), dtype, scale=3.0)
    for a, b in zip(got["early"], got["late"]):
        torch.testing.assert_close(a, b, atol=0, rtol=0, equal_nan=True)


@pytest.mark.cuda
@pytest.mark.parametrize(
    "B,H,Hkv,D,S,norm,dtype,splits",
    [(16, 16, 8, 128, 400, True, BF16, 1), (16, 32, 8, 64, 333, False, BF16, 1),
     (16, 4, 1, 256, 333, True, BF16, None), (3, 10, 5, 40, 150, True, F32, 2), (2, 16, 8, 128, 700, True, F16, 3)],
)  # fmt: skip
def test_qkv_decode_attention_blocks_asked_ahead(monkeypatch, B, H, Hkv, D, S, norm, dtype, splits):
    """RUNTIME_ATTN_AHEAD: each program asks L2 for its later cache blocks before its wait (a hint:
    nothing it computes may change). Against none, two blocks ahead and "auto" (the default "batch"
    is one of these: two at the one-split batch cases, none elsewhere) give the same output
    and caches bit for bit, with NaN in every dead slot (a prefetch reads no data, but a wrong bound
    on its blocks or a kept value that is not 0 would show), and the output matches float64."""
    inputs = _split_inputs(B, H, Hkv, D, S, norm, dtype, S - 3)
    got, want = _runs_under(
        monkeypatch, "RUNTIME_ATTN_AHEAD", ("0", "2", "auto"), H, Hkv, D, S, inputs, splits
    )
    assert_matches(got["auto"][0], want.to(dtype), dtype, scale=3.0)
    for ahead in ("2", "auto"):
        for a, b in zip(got["0"], got[ahead]):
            torch.testing.assert_close(a, b, atol=0, rtol=0, equal_nan=True)
