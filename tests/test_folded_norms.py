"""Batch buckets with the norm weights folded into the qkv and gate/up matrices (folded_norms.py):
the same logits as transformers row by row, no norm launch but the final one, and a fold that
follows weights changed after loading. fp32 on the CPU; the kernels' row scale is tested against
its reference in test_kernels.py."""

from __future__ import annotations

import pytest
import torch
from tiny_configs import hf_and_ours

from runtime.engine.state import KVCache
from runtime.kernels import fused_rows as fr
from runtime.kernels import ops
from runtime.models import folded_norms


def _prefill_rows(model, spec):
    """Three rows of different prompt lengths, each prefilled -> (the token sequences so far, cache)."""
    g = torch.Generator().manual_seed(3)
    prompts = [torch.randint(3, spec.vocab, (1, n), generator=g) for n in (5, 9, 3)]
    cache = KVCache(spec, 3, 48, "cpu", torch.float32)
    seqs = []
    for row, prompt in enumerate(prompts):
        token = model.prefill(prompt, cache, row=row)[0].argmax()
        seqs.append(torch.cat([prompt[0], token[None]]))
    return seqs, cache


def _decode_steps(model, seqs, cache, steps: int):
    """`steps` greedy decode steps of all rows at once -> (the sequences, logits (steps, rows, V))."""
    all_logits = []
    for _ in range(steps):
        logits = model.decode(
            torch.stack([s[-1] for s in seqs]), torch.tensor([len(s) - 1 for s in seqs]), cache
        )
        all_logits.append(logits)
        seqs = [torch.cat([s, logits[r].argmax()[None]]) for r, s in enumerate(seqs)]
    return seqs, torch.stack(all_logits)


def _decode_rows(model, spec, steps: int = 6):
    return _decode_steps(model, *_prefill_rows(model, spec), steps)


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_batch_rows_match_transformers(family):
    hf, spec, ours = hf_and_ours(family)
    assert ours.norms_folded and folded_norms.folded_rows(ours, 3)
    seqs, logits = _decode_rows(ours, spec)
    for r, seq in enumerate(seqs):
        with torch.no_grad():
            ref = hf(seq[None, :-1]).logits[0, -logits.shape[0] :]  # the positions each step scored
        assert (logits[:, r] - ref).abs().max() < 1e-4, f"row {r}"


@pytest.mark.parametrize("family", ["gemma3", "qwen2"])
def test_families_that_cannot_fold_keep_their_norms(family):
    """Gemma's sandwich norms and Qwen2's qkv bias keep the norm kernels: weights as loaded."""
    hf, spec, ours = hf_and_ours(family)
    assert not folded_norms.can_fold(spec) and not ours.norms_folded
    hf_norm = hf.state_dict()["model.layers.0.input_layernorm.weight"]
    torch.testing.assert_close(ours.layers[0].attn_norm.weight, hf_norm)
    seqs, logits = _decode_rows(ours, spec, steps=3)
    with torch.no_grad():
        ref = hf(seqs[0][None, :-1]).logits[0, -3:]
    assert (logits[:, 0] - ref).abs().max() < 1e-4


def test_batch_step_launches_only_the_final_norm(monkeypatch):
    """A 3-row step calls the norm op once (before the LM head), not twice per layer; with
    RUNTIME_BATCH_NORM=kernel (the A/B switch) it is twice per layer again, for the same logits."""
    _, spec, ours = hf_and_ours("llama")
    calls = []
    for name in ("rms_norm", "add_rms_norm"):
        real = getattr(ops, name)
        monkeypatch.setattr(
            ops, name, lambda *a, real=real, name=name, **k: calls.append(name) or real(*a, **k)
        )
    seqs, cache = _prefill_rows(ours, spec)
    calls.clear()
    _, folded = _decode_steps(ours, seqs, cache, 1)
    assert calls == ["rms_norm"]
    calls.clear()
    monkeypatch.setenv("RUNTIME_BATCH_NORM", "kernel")
    _, unfolded = _decode_steps(ours, seqs, cache, 1)
    assert len(calls) == 2 * spec.layers + 1
    torch.testing.assert_close(folded, unfolded, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("choice", ["rows", "rows_mlp", "rows_down", "rows_qkv", "rows_qkv_lm_head"])
def test_rows_kernel_switch_takes_its_products(monkeypatch, choice):
    """RUNTIME_BATCH_GEMM=rows sends each layer's four products of a batch step to the rows kernel
    (here recorders around the references): qkv a product that releases the attention early, gate/up
    with the gated activation as its epilogue, o and down accumulated into the residual rows in
    place; rows_mlp only the MLP's two; rows_down only down (gate/up and its activation stay on
    cuBLAS and the activation op); rows_qkv only qkv; rows_qkv_lm_head qkv and, once a step, the
    LM head (no early release). The logits do not change; an unknown value is refused."""
    _, spec, ours = hf_and_ours("llama")
    seqs, cache = _prefill_rows(ours, spec)
    _, want = _decode_steps(ours, seqs, cache, 1)
    calls = []

    def product(x, w, release_early=False, op="linear"):
        calls.append(("product", *w.shape, release_early, op))
        return torch.nn.functional.linear(x, w)

    def accumulate(out, x, w):
        calls.append(("add", *w.shape))
        return out.addmm_(x, w.t())

    def gated(x, w, activation, eps):
        calls.append(("gated", *w.shape))
        return fr.gated_linear_rows_ref(x, w, activation, eps)

    monkeypatch.setattr(ops, "enabled", lambda name, t: name == "linear_rows")
    monkeypatch.setattr(ops, "linear_rows_triton", product)
    monkeypatch.setattr(ops, "linear_rows_add_triton", accumulate)
    monkeypatch.setattr(ops, "gated_linear_rows_triton", gated)
    monkeypatch.setenv("RUNTIME_BATCH_GEMM", choice)
    _, got = _decode_steps(ours, seqs, cache, 1)
    layer = ours.layers[0]
    attention = [
        ("product", *layer.attn.qkv.weight.shape, True, "linear"),
        ("add", *layer.attn.o_proj.weight.shape),
    ]
    mlp = [("gated", *layer.mlp.gate_up.weight.shape), ("add", *layer.mlp.down.weight.shape)]
    taken = {
        "rows": attention + mlp,
        "rows_mlp": mlp,
        "rows_down": mlp[1:],
        "rows_qkv": attention[:1],
        "rows_qkv_lm_head": attention[:1],
    }[choice]
    lm_head = (
        [("product", *ours.lm_head_weight.shape, False, "logits")] if choice == "rows_qkv_lm_head" else []
    )
    assert calls == taken * spec.layers + lm_head
    torch.testing.assert_close(got, want)
    monkeypatch.setenv("RUNTIME_BATCH_GEMM", "tiles")
    with pytest.raises(ValueError, match="RUNTIME_BATCH_GEMM"):
        _decode_steps(ours, seqs, cache, 1)


def test_rows_qkv_takes_the_qkv_product_of_a_family_that_cannot_fold(monkeypatch):
    """Gemma's batch step keeps its norm kernels; by default (RUNTIME_BATCH_GEMM=rows_qkv_lm_head)
    the qkv product after them goes to the rows kernel, with the early release, and so does the LM
    head, once a step, on its own blocks (not o, gate/up or down); the add + norm kernel before qkv
    releases it early too (not the norms before gate/up or the LM head), for the same logits;
    "cublas" sends none, and RUNTIME_BATCH_NORM_RELEASE=late keeps the norm's late release."""
    _, spec, ours = hf_and_ours("gemma3")
    seqs, cache = _prefill_rows(ours, spec)
    _, want = _decode_steps(ours, seqs, cache, 1)
    calls, norms = [], []

    def product(x, w, release_early=False, op="linear"):
        calls.append((*w.shape, release_early, op))
        return torch.nn.functional.linear(x, w)

    def add_norm(x, residual, weight, eps, offset=0.0, pre_weight=None, release_early=False):
        norms.append(release_early)
        return ops.add_rms_norm_ref(x, residual, weight, eps, offset, pre_weight)

    monkeypatch.setattr(ops, "enabled", lambda name, t: name in ("linear_rows", "add_rms_norm"))
    monkeypatch.setattr(ops, "linear_rows_triton", product)
    monkeypatch.setattr(ops, "add_rms_norm_triton", add_norm)
    monkeypatch.delenv("RUNTIME_BATCH_GEMM", raising=False)
    _, got = _decode_steps(ours, seqs, cache, 1)
    qkv = [(*ours.layers[0].attn.qkv.weight.shape, True, "linear")] * spec.layers
    assert calls == qkv + [(*ours.lm_head_weight.shape, False, "logits")]
    # layer 0's gate/up norm; then each later layer's qkv norm and gate/up norm; the final norm
    before_qkv = [False] + [True, False] * (spec.layers - 1) + [False]
    assert norms == before_qkv
    torch.testing.assert_close(got, want)
    norms.clear()
    monkeypatch.setenv("RUNTIME_BATCH_NORM_RELEASE", "late")
    _decode_steps(ours, seqs, cache, 1)
    assert not any(norms)
    calls.clear()
    monkeypatch.setenv("RUNTIME_BATCH_GEMM", "cublas")
    monkeypatch.delenv("RUNTIME_BATCH_NORM_RELEASE")
    norms.clear()
    _decode_steps(ours, seqs, cache, 1)
    assert calls == [] and not any(norms)


def test_fold_is_idempotent_and_leaves_the_source_state_alone():
    hf, spec, ours = hf_and_ours("qwen3")
    before = {k: v.clone() for k, v in hf.state_dict().items()}
    qkv = ours.layers[1].attn.qkv.weight.clone()
    folded_norms.fold_norm_weights(ours)
    torch.testing.assert_close(ours.layers[1].attn.qkv.weight, qkv, atol=0, rtol=0)
    assert torch.equal(ours.layers[1].attn_norm.weight, torch.ones(spec.hidden))
    assert all(torch.equal(v, hf.state_dict()[k]) for k, v in before.items())


def test_weights_changed_after_loading_are_folded_again():
    """A norm weight set in place after the load counts at batch 3 as at batch 1."""
    _, spec, ours = hf_and_ours("llama", seed=2)
    with torch.no_grad():
        ours.layers[0].mlp_norm.weight.mul_(3.0)
        ours.layers[1].attn_norm.weight.normal_(0, 1)
    _, batch = _decode_rows(ours, spec, steps=2)
    g = torch.Generator().manual_seed(3)
    prompts = [torch.randint(3, spec.vocab, (1, n), generator=g) for n in (5, 9, 3)]
    cache = KVCache(spec, 1, 48, "cpu", torch.float32)
    first = ours.prefill(prompts[0], cache)[0].argmax()
    one_row = ours.decode(first[None], torch.tensor([5]), cache)
    torch.testing.assert_close(batch[0, 0], one_row[0], atol=1e-4, rtol=1e-4)


def test_unknown_switch_value_is_refused(monkeypatch):
    _, _, ours = hf_and_ours("llama")
    monkeypatch.setenv("RUNTIME_BATCH_NORM", "fused")
    with pytest.raises(ValueError, match="RUNTIME_BATCH_NORM='fused': choose folded or kernel"):
        folded_norms.folded_rows(ours, 4)


def test_the_fold_frees_each_replaced_matrix():
    """build_model empties the state dict it was given, so no unfolded matrix outlives its folded
    copy (on a GPU that is a whole model's qkv and gate/up matrices of peak memory)."""
    import weakref

    from runtime.models.weights import build_model, convert

    hf, spec, _ = hf_and_ours("llama")
    hf_state = hf.state_dict()
    state = convert(spec, hf_state.keys(), hf_state.__getitem__, "cpu", torch.float32, "test")
    unfolded = weakref.ref(state["layers.0.attn.qkv.weight"])  # a concatenation: only `state` holds it
    model = build_model(spec, state)
    assert state == {} and model.norms_folded
    assert unfolded() is None


def test_fold_can_be_turned_off_at_load(monkeypatch):
    """RUNTIME_FOLD_NORMS=0: the weights stay as loaded and batch rows take the norm kernels."""
    monkeypatch.setenv("RUNTIME_FOLD_NORMS", "0")
    hf, spec, ours = hf_and_ours("llama")
    assert not ours.norms_folded and not folded_norms.folded_rows(ours, 3)
    hf_norm = hf.state_dict()["model.layers.0.input_layernorm.weight"]
    torch.testing.assert_close(ours.layers[0].attn_norm.weight, hf_norm)
