"""The step-inputs kernel (embedding + rope tables, one launch) against its plain-torch reference,
and the decoder's routing through ops.embed_rope.

On a GPU (`cuda` marker) the full cases run; without one, test_step_inputs_under_the_cpu_interpreter
re-runs this file under the Triton interpreter with small cases (see kernel_testing.py). Outputs
are poisoned (NaN) before the kernel writes them, so an unwritten element fails.
"""

from __future__ import annotations

import math

import pytest
import torch
from kernel_testing import (
    BF16,
    DEVICE,
    F32,
    INTERPRET,
    assert_passes_under_interpreter,
    assert_same_bits,
    cases,
    kernel_test,
    needs_triton,
    poisoned_fixture,
    rand,
)

from runtime.kernels import ops
from runtime.kernels import step_inputs as step_inputs_mod
from runtime.kernels.rope import inverse_frequencies, rope_cos_sin
from runtime.kernels.step_inputs import embed_rope_ref, embed_rope_triton
from runtime.models.spec import RopeSpec

pytestmark = [needs_triton] if INTERPRET else []

GEMMA_SCALE = torch.tensor(math.sqrt(1152), dtype=BF16).item()  # as DecoderLM.prepare rounds it
MAX_POSITION = 32000
# Gemma 3's local and global tables, and Llama 3's scaled one
ROPES = [RopeSpec(theta=1e4), RopeSpec(theta=1e6), RopeSpec(theta=5e5, kind="llama3", factor=32.0)]


poisoned = poisoned_fixture(step_inputs_mod)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1234)


def _ulps(got: torch.Tensor, want: torch.Tensor) -> torch.Tensor:
    """Elementwise distance in units in the last place of the dtype (bf16 or fp32)."""
    bits = {BF16: torch.int16, F32: torch.int32}[got.dtype]
    sign = torch.iinfo(bits).min

    def ordered(t: torch.Tensor) -> torch.Tensor:  # sign-magnitude bits -> integers in value order
        i = t.contiguous().view(bits).to(torch.int64)
        return torch.where(i < 0, -(i - sign), i)

    return (ordered(got) - ordered(want)).abs()


# (V, hidden, D, tables, B, T, scale, dtype): Llama-3.2-1B and gemma-3-1b decode first, then prefill
# lengths, batch rows and the other dtype; vocabularies that are not powers of 2
STEP_CASES = cases(
    full=[(50021, 2048, 64, 1, 1, 1, 1.0, BF16), (50021, 1152, 256, 2, 1, 1, GEMMA_SCALE, BF16),
          (50021, 1152, 256, 2, 3, 1, GEMMA_SCALE, BF16), (50021, 2048, 64, 1, 3, 1, 1.0, F32),
          (1003, 1152, 256, 2, 1, 37, GEMMA_SCALE, F32), (1003, 2048, 64, 1, 1, 37, GEMMA_SCALE, BF16),
          (1003, 1152, 64, 2, 3, 1, 1.0, F32), (1003, 2048, 256, 1, 1, 37, 1.0, BF16),
          (1003, 2048, 64, 2, 3, 5, GEMMA_SCALE, F32)],
    small=[(1003, 1152, 256, 2, 1, 37, GEMMA_SCALE, BF16), (1003, 2048, 64, 1, 3, 1, 1.0, F32),
           (501, 1152, 64, 2, 1, 1, GEMMA_SCALE, F32), (501, 2048, 256, 1, 1, 1, 1.0, BF16)],
)  # fmt: skip


@kernel_test
@pytest.mark.parametrize("V,hidden,D,n_tables,B,T,scale,dtype", STEP_CASES)
def test_embed_rope(poisoned, V, hidden, D, n_tables, B, T, scale, dtype):
    weight = rand(V, hidden, dtype=dtype)
    tokens = torch.randint(0, V, (B, T), device=DEVICE)
    tokens.view(-1)[0], tokens.view(-1)[-1] = V - 1, 0  # the first and last rows of the table
    positions = torch.randint(0, MAX_POSITION + 1, (B, T), device=DEVICE)
    positions.view(-1)[0] = MAX_POSITION
    if B * T > 1:
        positions.view(-1)[-1] = 0
    inv_freqs = torch.stack(
        [inverse_frequencies(r, D, DEVICE) for r in (ROPES[:2] if n_tables == 2 else ROPES[2:])]
    )
    x, tables = embed_rope_triton(tokens, positions, weight, scale, inv_freqs, dtype)
    want_x, want_tables = embed_rope_ref(tokens, positions, weight, scale, inv_freqs, dtype)
    assert_same_bits(x, want_x)
    assert len(tables) == len(want_tables) == n_tables
    for got_pair, want_pair in zip(tables, want_tables):
        for got, want in zip(got_pair, want_pair):
            assert got.shape == want.shape == (B, T, D) and got.dtype == want.dtype == dtype
            assert not got.isnan().any()
            # fp32 cos/sin of two libraries (or the interpreter's NumPy) may round differently once
            assert _ulps(got, want).max() <= 1, (got - want).abs().max()


@kernel_test
@pytest.mark.parametrize("family", ["gemma3"] if INTERPRET else ["gemma3", "llama"])
def test_decoder_routes_through_embed_rope(monkeypatch, family):
    """A tiny model's prefill and decode call the kernel once per step, and their logits are those of
    the same steps with the op turned off (RUNTIME_KERNELS_OFF=embed_rope)."""
    from tiny_configs import tiny_config

    from runtime.engine.state import KVCache
    from runtime.models.spec import ModelSpec
    from runtime.models.weights import random_model

    spec = ModelSpec.from_hf(tiny_config(family))
    model = random_model(spec, DEVICE, torch.float32)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    calls = []

    def spy(*args, **kwargs):
        calls.append(args[0].shape)
        return embed_rope_triton(*args, **kwargs)

    monkeypatch.setattr(ops, "embed_rope_triton", spy)
    monkeypatch.setenv("RUNTIME_KERNELS", "triton")
    prompt = torch.randint(3, spec.vocab, (1, 9), device=DEVICE)
    logits = {}
    for off in ("", "embed_rope"):
        monkeypatch.setenv("RUNTIME_KERNELS_OFF", off)
        cache = KVCache(spec, 1, 32, DEVICE, torch.float32)
        steps = [model.prefill(prompt, cache)]
        for pos in range(9, 13):
            token = steps[-1].argmax(-1)
            steps.append(model.decode(token, torch.tensor([pos], device=DEVICE), cache))
        logits[off] = torch.cat(steps)
        if not off:
            assert calls == [(1, 9)] + [(1, 1)] * 4
    assert len(calls) == 5  # none with the op turned off
    torch.testing.assert_close(logits[""], logits["embed_rope"], atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- the reference (CPU, no Triton needed)


def test_embed_rope_ref_is_the_decoders_math():
    """The reference is the embedding lookup, `x * scale` and rope_cos_sin per table, bit for bit."""
    weight = torch.randn(37, 24).to(BF16)
    tokens, positions = torch.randint(0, 37, (2, 3)), torch.randint(0, 9000, (2, 3))
    inv_freqs = torch.stack([inverse_frequencies(r, 16) for r in ROPES])
    x, tables = embed_rope_ref(tokens, positions, weight, GEMMA_SCALE, inv_freqs, BF16)
    assert torch.equal(x, torch.nn.Embedding.from_pretrained(weight)(tokens) * GEMMA_SCALE)
    assert torch.equal(
        embed_rope_ref(tokens, positions, weight, 1.0, torch.empty(0, 8), BF16)[0], weight[tokens]
    )
    for (cos, sin), inv in zip(tables, inv_freqs):
        want_cos, want_sin = rope_cos_sin(positions, inv, BF16)
        assert torch.equal(cos, want_cos) and torch.equal(sin, want_sin)


# ---------------------------------------------------------------- the interpreter subset, from the parent


@pytest.mark.skipif(INTERPRET, reason="this is the child run")
@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU runs the compiled kernels instead")
@needs_triton
def test_step_inputs_under_the_cpu_interpreter():
    """Runs this file's kernel tests on the CPU through the Triton interpreter (small cases)."""
    assert_passes_under_interpreter(__file__)
