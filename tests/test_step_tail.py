"""The decode step's tail after the LM head (runner.step_tail): the kernels against today's torch
ops (runner.step_tail_ref) on fresh random logits, and a tiny model generating the same tokens with
the op on and off. Conventions of kernel_testing.py: `cuda` on a GPU, a small list under the CPU
interpreter in a child process, scratch poisoned."""

from __future__ import annotations

import pytest
import torch
from kernel_testing import (
    INTERPRET,
    assert_passes_under_interpreter,
    cases,
    kernel_test,
    needs_triton,
    poisoned_fixture,
)
from tiny_configs import tiny_config, tiny_llama_runner

from runtime.engine.runner import step_tail, step_tail_ref
from runtime.engine.state import DecodeBuffers
from runtime.kernels import argmax as argmax_mod
from runtime.kernels import sort_sample as sort_sample_mod
from runtime.kernels import topk as topk_mod
from runtime.kernels import topk_sample as topk_sample_mod

# an all -inf row: the interpreter's NumPy warns on -inf - -inf in the sampler (NaN, as on the GPU)
pytestmark = [pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")]
if INTERPRET:
    pytestmark.append(needs_triton)
DEVICE = "cpu" if INTERPRET else "cuda"
# the tail as folded into the kernels; today's ops with the kernels they call; plain torch
# the interpreter runs the model's other kernels as their references: the same in both runs, and
# a whole interpreted model costs ~20 s a generation
_BODY = (
    ""
    if not INTERPRET
    else "norm_linear,act_linear,linear,lm_head,qkv_decode_attention,embed_rope,rms_norm,add_rms_norm,gated_act"
)
FUSED = {"RUNTIME_KERNELS": "triton", "RUNTIME_KERNELS_OFF": _BODY}
UNFUSED = {"RUNTIME_KERNELS": "triton", "RUNTIME_KERNELS_OFF": ",".join(filter(None, [_BODY, "step_tail"]))}
TORCH = {"RUNTIME_KERNELS": "torch", "RUNTIME_KERNELS_OFF": ""}


poisoned = poisoned_fixture(argmax_mod, topk_mod, topk_sample_mod, sort_sample_mod)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(2468)


def _state(B: int, V: int) -> tuple[DecodeBuffers, torch.Tensor]:
    """Buffers of B + 1 rows (row B lies outside the bucket: nothing may touch it) with mixed
    per-row settings, and nonfinite_at (B + 1,) where row 0 holds an earlier record."""
    buf = DecodeBuffers.allocate(B + 1, V, DEVICE)
    n = B + 1

    def col(values):
        return torch.tensor([values[i % len(values)] for i in range(n)], device=DEVICE)

    buf.tokens.copy_(torch.randint(0, V, (n,)))
    buf.positions.copy_(torch.randint(0, 500, (n,)))
    buf.seen.copy_(torch.rand(n, V) < 0.05)
    buf.temperature.copy_(col([0.8, 0.0, 1.3]))  # row 1: greedy with the penalty
    buf.top_k.copy_(col([64, 128, 5]))  # the topk variant is exact for 0 < top_k <= 128
    buf.top_p.copy_(col([0.9, 1.0, 0.5]))
    buf.repetition_penalty.copy_(col([1.1, 1.3, 1.0]))
    buf.seed.copy_(7 + torch.arange(n))
    nonfinite_at = torch.full((n,), -1, dtype=torch.int64, device=DEVICE)
    nonfinite_at[0] = 3
    return buf, nonfinite_at


def _logits(B: int, V: int) -> torch.Tensor:
    """(B, V) float32; with three rows: row 1 holds a NaN, row 2 is all -inf (both non-finite)."""
    x = torch.randn(B, V) * 4
    if B >= 3:
        x[1, V // 2] = float("nan")
        x[2] = float("-inf")
    return x.to(DEVICE)


def _run(monkeypatch, env: dict, fn, logits, buf, nonfinite_at, variant) -> None:
    with monkeypatch.context() as m:
        for name, value in env.items():
            m.setenv(name, value)
        fn(logits, buf, nonfinite_at, variant)


def _snapshot(buf: DecodeBuffers, nonfinite_at: torch.Tensor) -> dict:
    return dict(tokens=buf.tokens, positions=buf.positions, seen=buf.seen, nonfinite_at=nonfinite_at)


def _clone(buf: DecodeBuffers, nonfinite_at: torch.Tensor) -> tuple[DecodeBuffers, torch.Tensor]:
    return DecodeBuffers(**{k: v.clone() for k, v in vars(buf).items()}), nonfinite_at.clone()


# 262147: the topk sampler's merge takes two rounds there (65 lists of 128 -> 9 -> 2)
TAIL_CASES = cases(
    full=[(1, 1000), (3, 1000), (1, 32003), (3, 32003), (1, 151936), (3, 151936), (3, 262147)],
    small=[(1, 1000), (3, 1000), (3, 32003), (3, 262147)],
)


@kernel_test
@pytest.mark.parametrize("variant", ["greedy", "topk", "sample"])
@pytest.mark.parametrize("B,V", TAIL_CASES)
def test_step_tail_matches_the_reference(poisoned, monkeypatch, B, V, variant):
    """Two steps on the same rows: ids, tokens, positions, seen and nonfinite_at equal today's ops
    (same kernels) in every row, NaN and -inf rows included, and plain torch on the finite rows;
    a row's record keeps its first position. The folded topk and sample steps record in their
    samplers' own launches: no argmax call."""
    fused, nonfinite_at = _state(B, V)
    start = fused.positions.clone()
    unfused, unfused_nf = _clone(fused, nonfinite_at)
    plain, plain_nf = _clone(fused, nonfinite_at)
    argmax_calls = []
    real_step = argmax_mod.argmax_step_triton

    def counted_step(logits, positions, nonfinite_at, tokens=None, seen=None):
        argmax_calls.append("record" if tokens is None else "step")
        return real_step(logits, positions, nonfinite_at, tokens, seen)

    monkeypatch.setattr(argmax_mod, "argmax_step_triton", counted_step)
    for _ in range(2):
        x = _logits(B, V)
        _run(monkeypatch, FUSED, step_tail, x, fused, nonfinite_at, variant)
        # greedy: the whole step in argmax; topk and sample: none (their samplers record)
        assert argmax_calls == {"greedy": ["step"], "topk": [], "sample": []}[variant]
        argmax_calls.clear()
        _run(monkeypatch, UNFUSED, step_tail, x, unfused, unfused_nf, variant)
        _run(monkeypatch, TORCH, step_tail_ref, x, plain, plain_nf, variant)
        got, same = _snapshot(fused, nonfinite_at), _snapshot(unfused, unfused_nf)
        want = _snapshot(plain, plain_nf)
        for name in got:
            assert torch.equal(got[name], same[name]), name
        finite = torch.isfinite(x).all(-1).tolist() + [True]  # row B: untouched in all three
        for row in (r for r, ok in enumerate(finite) if ok):
            assert torch.equal(got["tokens"][row], want["tokens"][row]), row
            assert torch.equal(got["seen"][row], want["seen"][row]), row
        assert torch.equal(got["positions"], want["positions"])
        assert torch.equal(got["nonfinite_at"], want["nonfinite_at"])
        if B >= 3 and variant == "greedy":  # the NaN row: the first maximum of its other values
            assert got["tokens"][1] == x[1].nan_to_num(nan=float("-inf")).argmax()
            assert got["tokens"][2] == 0  # all -inf: torch.argmax answers 0
        assert all(got["seen"][r, got["tokens"][r]] for r in range(B))
    assert torch.equal(fused.positions, start + torch.tensor([2] * B + [0], device=DEVICE))
    want_nf = [3] + ([start[1].item(), start[2].item()] if B >= 3 else []) + [-1]
    assert nonfinite_at.tolist() == want_nf  # steps 1 and 2 were bad: the first position stays


NARROW_CASES = cases(full=[(3, 1000), (1, 151936), (3, 262147)], small=[(3, 1000), (3, 262147)])


@kernel_test
@pytest.mark.parametrize("variant", ["greedy", "topk", "sample"])
@pytest.mark.parametrize("B,V", NARROW_CASES)
def test_step_tail_takes_bf16_logits_as_their_float32_values(poisoned, monkeypatch, B, V, variant):
    """The batch LM head's bf16 logits, as cuBLAS writes them: the same tokens, positions, seen and
    record as float32 logits holding the same values, NaN and -inf rows included; the topk and
    sample steps stay in their samplers' kernels (no argmax launch) as they do for float32."""
    narrow, narrow_nf = _state(B, V)
    wide, wide_nf = _clone(narrow, narrow_nf)
    argmax_calls = []
    real_step = argmax_mod.argmax_step_triton

    def counted_step(logits, positions, nonfinite_at, tokens=None, seen=None):
        argmax_calls.append(logits.dtype)
        return real_step(logits, positions, nonfinite_at, tokens, seen)

    monkeypatch.setattr(argmax_mod, "argmax_step_triton", counted_step)
    for _ in range(2):
        x = _logits(B, V).to(torch.bfloat16)
        _run(monkeypatch, FUSED, step_tail, x, narrow, narrow_nf, variant)
        assert argmax_calls == {"greedy": [torch.bfloat16], "topk": [], "sample": []}[variant]
        argmax_calls.clear()
        _run(monkeypatch, FUSED, step_tail, x.float(), wide, wide_nf, variant)
        argmax_calls.clear()
        got, want = _snapshot(narrow, narrow_nf), _snapshot(wide, wide_nf)
        for name in got:
            assert torch.equal(got[name], want[name]), name


def test_batch_logits_come_back_unwidened_only_where_asked():
    """decode(widen_logits=False) on a bf16 model, 3 rows: the LM head's bf16 logits, equal to the
    float32 ones; a final softcap (tanh in float32) still gives float32."""
    import dataclasses

    from runtime.engine.state import KVCache
    from runtime.models.spec import ModelSpec
    from runtime.models.weights import random_model

    spec = ModelSpec.from_hf(tiny_config("llama"))
    for softcap in (None, 30.0):
        spec = dataclasses.replace(spec, final_softcap=softcap)
        torch.manual_seed(0)
        model = random_model(spec, "cpu", torch.bfloat16)
        cache = KVCache(spec, 3, 16, "cpu", torch.bfloat16)
        tokens, positions = torch.tensor([5, 7, 9]), torch.tensor([0, 0, 0])
        wide = model.decode(tokens, positions, cache)
        narrow = model.decode(tokens, positions, cache, widen_logits=False)
        assert wide.dtype == torch.float32
        assert narrow.dtype == (torch.float32 if softcap else torch.bfloat16)
        assert torch.equal(narrow.float(), wide) and wide.abs().max() > 0


# ---------------------------------------------------------------- a tiny model through the runner


def _runner(mode: str):
    return tiny_llama_runner(mode, DEVICE, capacity=48)


@kernel_test
@pytest.mark.parametrize("sampled", [False, True], ids=["greedy", "topk"])
def test_generation_is_the_same_with_the_op_on_and_off(monkeypatch, sampled):
    """Three rows (a bucket of 4), 12 tokens: the same tokens and the same buffers afterwards with
    the tail folded into the kernels (on the GPU: replayed from captured graphs) and with today's
    ops (eager)."""
    from runtime.engine.generate import generate
    from runtime.engine.runner import variant_for
    from runtime.engine.sampler import SamplingParams

    params = SamplingParams(temperature=0.9, top_k=20, top_p=0.9, repetition_penalty=1.2, seed=5)
    params = params if sampled else SamplingParams()
    assert variant_for(params) == ("topk" if sampled else "greedy")
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(3, 256, (n,), generator=g).tolist() for n in (5, 11, 2)]
    results = []
    for env, mode in ((FUSED, "eager" if INTERPRET else "graph"), (UNFUSED, "eager")):
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        runner = _runner(mode)
        assert runner.mode == mode, runner.capture_error
        tokens = generate(runner, prompts, params, 12).tokens
        buf = runner.buffers
        results.append((tokens, buf.positions.clone(), buf.seen.clone()))
        runner.release()
    (on_tokens, *on_state), (off_tokens, *off_state) = results
    assert on_tokens == off_tokens and all(len(t) == 12 for t in on_tokens)
    assert all(torch.equal(a, b) for a, b in zip(on_state, off_state))


@kernel_test
def test_nonfinite_logits_reach_generate_with_the_op_on(monkeypatch):
    """NaN logits from decode position 9 on: the record holds 9 (the first), as with today's ops."""
    from runtime.engine.generate import generate
    from runtime.engine.sampler import SamplingParams
    from runtime.errors import RuntimeFailure

    for name, value in FUSED.items():
        monkeypatch.setenv(name, value)
    runner = _runner("eager")
    real_decode = runner.model.decode

    def decode_going_bad(tokens, positions, cache, **kwargs):
        logits = real_decode(tokens, positions, cache, **kwargs)
        return torch.where(positions[:, None] >= 9, torch.nan, logits)

    monkeypatch.setattr(runner.model, "decode", decode_going_bad)
    for params in (SamplingParams(), SamplingParams(temperature=0.7, top_k=8, seed=1)):
        with pytest.raises(RuntimeFailure, match="row 0 at position 9"):
            generate(runner, [[1, 2, 3, 4, 5]], params, 10)


@pytest.mark.skipif(INTERPRET, reason="this is the child run")
@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU runs the compiled kernels instead")
@needs_triton
def test_step_tail_under_the_cpu_interpreter():
    assert_passes_under_interpreter(__file__)
