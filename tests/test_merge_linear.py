"""The batch-1 attention merged inside the o projection (runtime/kernels/merge_linear.py) against the
attention reference followed by F.linear, on fresh random inputs of awkward sizes; its merge
reference against plain softmax attention; and a decode step with it against one without.

On a GPU the kernel tests carry the `cuda` marker; without one this file re-runs itself under the
Triton interpreter (small cases). Buffers from torch.empty hold NaN and cache slots past the live
length hold NaN, so a chunk left unwritten or a slot read past the length fails.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from kernel_testing import (
    BF16,
    DEVICE,
    F16,
    F32,
    INTERPRET,
    assert_linear_close,
    assert_matches,
    assert_passes_under_interpreter,
    cases,
    kernel_test,
    needs_triton,
    poisoned_fixture,
    rand,
)

from runtime.kernels import arrival, merge_linear
from runtime.kernels import qkv_attention as qkv_attention_mod
from runtime.kernels.decode_attention import merge_partials_ref
from runtime.kernels.merge_linear import (
    AttentionPartials,
    merge_linear_ref,
    merge_linear_triton,
    rows_per_program,
)
from runtime.kernels.qkv_attention import qkv_decode_attention_ref, qkv_decode_attention_triton
from runtime.kernels.rope import rope_cos_sin

pytestmark = [pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")]
if INTERPRET:
    pytestmark.append(needs_triton)

poisoned = poisoned_fixture(merge_linear, qkv_attention_mod)


def _rope_tables(positions: torch.Tensor, head_dim: int, dtype: torch.dtype):
    inv = 1.0 / (10000.0 ** (torch.arange(0, head_dim, 2, device=DEVICE).float() / head_dim))
    return rope_cos_sin(positions, inv, dtype)


def _partials(acc_scores: torch.Tensor, values: torch.Tensor, block_n: int, splits: int):
    """Split partials as the split kernel leaves them, from scores (B, H, L) in log2 units and values
    (B, H, L, D): split p takes blocks p, p + splits, ...; NaN in the splits past the live blocks."""
    B, H, L = acc_scores.shape
    D = values.shape[-1]
    acc = torch.full((B, H, splits, D), math.nan, dtype=F32)
    ml = torch.full((B, H, splits, 2), math.nan, dtype=F32)
    blocks = -(-L // block_n)
    for p in range(min(splits, blocks)):
        slots = torch.cat(
            [torch.arange(b * block_n, min(L, (b + 1) * block_n)) for b in range(p, blocks, splits)]
        )
        s = acc_scores[..., slots]
        m = s.amax(dim=-1)
        w = torch.exp2(s - m[..., None])
        acc[:, :, p] = (w[..., None] * values[:, :, slots]).sum(dim=2)
        ml[:, :, p, 0], ml[:, :, p, 1] = m, w.sum(dim=-1)
    return acc, ml


@pytest.mark.parametrize("L,block_n,splits", [(1, 16, 4), (37, 16, 4), (64, 16, 4), (200, 32, 3), (5, 64, 1)])
def test_merge_partials_ref_is_softmax_attention(L, block_n, splits):
    """The merge reference over split partials equals softmax(scores) @ values over the live slots,
    and reads no split past the live blocks (they hold NaN)."""
    g = torch.Generator().manual_seed(L)
    scores = torch.randn(1, 3, L, generator=g, dtype=torch.float64).float() * 4
    values = torch.randn(1, 3, L, 8, generator=g, dtype=torch.float64).float()
    acc, ml = _partials(scores, values, block_n, splits)
    got = merge_partials_ref(acc, ml, torch.tensor([L]), block_n)
    want = torch.softmax(scores * math.log(2), dim=-1)[..., None].mul(values).sum(dim=2)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


# (H, Hkv, D, S, N, splits, residual, dtype): Llama, Qwen3 and Gemma 3 shapes, then odd ones
MERGE_O_CASES = cases(
    full=[(32, 8, 64, 700, 2048, None, True, BF16), (16, 8, 128, 2048, 2048, None, True, BF16),
          (4, 1, 256, 512, 1152, None, False, BF16), (6, 3, 40, 90, 100, 5, True, F16),
          (10, 5, 48, 33, 77, 3, False, F32), (32, 8, 64, 2048, 2048, 32, True, BF16)],
    small=[(4, 2, 32, 40, 48, 3, True, F32), (6, 3, 40, 33, 20, 2, False, BF16), (2, 1, 64, 20, 70, 4, True, F16)],
)  # fmt: skip


@kernel_test
@pytest.mark.parametrize("H,Hkv,D,S,N,splits,residual,dtype", MERGE_O_CASES)
def test_merge_linear(poisoned, H, Hkv, D, S, N, splits, residual, dtype):
    """The attention's partials merged in the o projection: what the reference's attention, rounded,
    then F.linear (and the residual's add) give, at the row's first position, its last slot and
    between; the arrival counters back at zero and a second launch bit for bit the first."""
    for position in (0, S - 1, S // 2 + 1):
        positions = torch.tensor([position], device=DEVICE)
        qkv = rand(1, 1, (H + 2 * Hkv) * D, dtype=dtype)
        cos, sin = _rope_tables(positions[:, None], D, dtype)
        k, v = rand(1, Hkv, S, D, dtype=dtype, scale=2.0), rand(1, Hkv, S, D, dtype=dtype)
        dead = torch.arange(S, device=DEVICE) > position  # NaN in every slot past the live length
        k_got, v_got = (c.masked_fill(dead[None, None, :, None], math.nan) for c in (k, v))
        weight = rand(N, H * D, dtype=dtype, scale=H**-0.5 * D**-0.5)
        res = rand(1, 1, N, dtype=dtype) if residual else None
        args = (qkv, H, Hkv, cos, sin, None, None, 1e-6, 0.0)
        partials = qkv_decode_attention_triton(
            *args, k_got, v_got, positions, D**-0.5, into_o=True, num_splits=splits
        )
        if splits == 1 or (splits is None and not isinstance(partials, AttentionPartials)):
            continue  # one split writes the output itself: nothing to merge
        assert isinstance(partials, AttentionPartials)
        got = merge_linear_triton(partials, weight, res).reshape(1, 1, N)
        attn = qkv_decode_attention_ref(*args, k, v, positions, D**-0.5).reshape(1, 1, H * D)
        want_ref = merge_linear_ref(partials, weight, res).reshape(got.shape)
        if res is None:
            assert_linear_close(got, attn, weight)
            assert_linear_close(want_ref, attn, weight)
        else:  # the sum rounds at the residual's scale
            want = (res.double() + F.linear(attn.double(), weight.double())).to(dtype)
            assert_matches(got, want, dtype)
            assert_matches(want_ref, want, dtype)
        assert not arrival._COUNTERS[got.device].any()
        assert torch.equal(merge_linear_triton(partials, weight, res).reshape(1, 1, N), got)


@pytest.mark.parametrize("H,D,N", [(32, 64, 2048), (16, 128, 2048), (4, 256, 1152), (8, 64, 64)])
def test_rows_per_program_fills_the_card_within_the_tile(H, D, N):
    """BN keeps the W_o tile within TILE_BYTES and, where it can, two programs per SM (the CPU's
    stand-in SM count is 4); RUNTIME_MERGE_O_ROWS overrides it."""
    bn = rows_per_program(H, D, N, 2, torch.device("cpu"))
    assert 16 <= bn and bn * D * 2 <= merge_linear.TILE_BYTES
    assert bn == 16 or H * -(-N // bn) >= 8


def test_merge_o_switch_refuses_typos(monkeypatch):
    monkeypatch.setenv("RUNTIME_MERGE_O", "yes")
    with pytest.raises(ValueError, match="RUNTIME_MERGE_O"):
        merge_linear.merges_into_o()


@kernel_test
@pytest.mark.parametrize("family", ["llama", "qwen3", "gemma3"])
def test_decode_step_with_the_merge_in_o(monkeypatch, family):
    """A decode step whose o projections merge the attention gives the logits of one that merges in
    its own launch (random tiny model, a cache of several splits)."""
    from tiny_configs import tiny_config

    from runtime.engine.state import KVCache
    from runtime.models.spec import ModelSpec
    from runtime.models.weights import random_model

    torch.manual_seed(0)
    model = random_model(ModelSpec.from_hf(tiny_config(family)), DEVICE, F32)
    logits = {}
    monkeypatch.setenv("RUNTIME_KERNELS", "triton")  # the interpreter's CPU tensors take the kernels too
    for mode in ("off", "on"):
        monkeypatch.setenv("RUNTIME_MERGE_O", mode)
        cache = KVCache(model.spec, 1, 200, DEVICE, F32)  # 64-slot blocks: 4 splits, 2 of them live
        tokens = torch.tensor([[5, 9, 2, 7, 11, 3, 8, 1, 6, 4] * 7], device=DEVICE)
        model.prefill(tokens, cache)
        step = torch.tensor([4], device=DEVICE)
        logits[mode] = model.decode(step, torch.tensor([tokens.shape[1]], device=DEVICE), cache)
    torch.testing.assert_close(logits["on"], logits["off"], atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(INTERPRET, reason="this is the child run")
@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU runs the compiled kernels instead")
@needs_triton
def test_merge_linear_under_the_cpu_interpreter():
    """Runs this file's kernel tests on the CPU through the Triton interpreter (small cases)."""
    assert_passes_under_interpreter(__file__)


def test_reference_merge_linear_is_attention_then_linear():
    """Without Triton: the reference merge then F.linear, on partials built from plain attention."""
    g = torch.Generator().manual_seed(3)
    scores = torch.randn(1, 4, 50, generator=g) * 3
    values = torch.randn(1, 4, 50, 16, generator=g)
    acc, ml = _partials(scores, values, 16, 2)
    weight = torch.randn(24, 64, generator=g)
    partials = AttentionPartials(acc, ml, torch.tensor([49]), 16, 50, F32)
    attn = torch.softmax(scores * math.log(2), dim=-1)[..., None].mul(values).sum(dim=2).reshape(1, 64)
    torch.testing.assert_close(
        merge_linear_ref(partials, weight), F.linear(attn, weight), atol=1e-4, rtol=1e-4
    )
