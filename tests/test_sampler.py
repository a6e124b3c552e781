"""The in-graph sampler: validation, greedy, each transform's effect, the candidate path's
equality with the full sort, and reproducible noise."""

from __future__ import annotations

import pytest
import torch

from runtime.engine.runner import TOPK_CANDIDATES, _candidates, variant_for
from runtime.engine.sampler import SamplingParams, gumbel_noise, sample
from runtime.errors import RuntimeUserError


def _rows(B, V, **kw):
    d = dict(temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=1.0, seed=0)
    d.update(kw)
    return dict(
        temperature=torch.full((B,), float(d["temperature"])),
        top_k=torch.full((B,), int(d["top_k"]), dtype=torch.int64),
        top_p=torch.full((B,), float(d["top_p"])),
        repetition_penalty=torch.full((B,), float(d["repetition_penalty"])),
        seed=torch.arange(B, dtype=torch.int64) + d["seed"],
        seen=torch.zeros(B, V, dtype=torch.bool),
    )


def _draw(logits, steps, candidates=0, **kw):
    B, V = logits.shape
    rows = _rows(B, V, **kw)
    return torch.stack(
        [sample(logits, torch.full((B,), p), **rows, candidates=candidates) for p in range(steps)]
    )  # (steps, B)


def test_validation_names_the_value():
    for bad in (
        dict(temperature=-1),
        dict(top_p=0.0),
        dict(top_p=1.01),
        dict(top_k=-2),
        dict(repetition_penalty=0),
    ):
        with pytest.raises(RuntimeUserError, match=str(list(bad.values())[0]).lstrip("-")):
            SamplingParams(**bad)


def test_greedy_is_argmax():
    logits = torch.randn(5, 300)
    got = _draw(logits, 3, temperature=0.0)
    assert (got == logits.argmax(-1)).all()


def test_top_k_keeps_only_the_k_best():
    logits = torch.randn(3, 500)
    allowed = logits.topk(5).indices
    got = _draw(logits, 200, top_k=5, temperature=3.0)
    for row in range(3):
        assert set(got[:, row].tolist()) <= set(allowed[row].tolist())
        assert len(set(got[:, row].tolist())) == 5  # hot temperature: all five show up


def test_top_p_keeps_the_nucleus():
    logits = torch.tensor([[4.0, 3.0, 2.0, -5.0, -6.0, -7.0]])
    probs = logits.softmax(-1)[0]
    assert probs[:2].sum() < 0.95 < probs[:3].sum()
    got = set(_draw(logits, 400, top_p=0.95).flatten().tolist())
    assert got == {0, 1, 2}


def test_repetition_penalty_discourages_seen_tokens():
    logits = torch.tensor([[2.0, 1.9, -1.0]])
    rows = _rows(1, 3, temperature=0.0, repetition_penalty=2.0)
    rows["seen"][0, 0] = True  # 2.0 -> 1.0, below 1.9
    assert int(sample(logits, torch.tensor([0]), **rows)) == 1


def test_sampling_follows_the_distribution():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2]]))
    got = _draw(logits, 4000).flatten()
    freq = torch.bincount(got, minlength=3).float() / got.numel()
    assert torch.allclose(freq, torch.tensor([0.5, 0.3, 0.2]), atol=0.03)


@pytest.mark.parametrize("top_k,top_p,temp", [(50, 0.9, 0.8), (1, 1.0, 1.0), (128, 0.5, 2.0), (7, 1.0, 0.3)])
def test_candidate_path_equals_full_sort(top_k, top_p, temp):
    logits = torch.randn(4, 3000) * 3
    full = _draw(logits, 60, top_k=top_k, top_p=top_p, temperature=temp)
    fast = _draw(logits, 60, candidates=TOPK_CANDIDATES, top_k=top_k, top_p=top_p, temperature=temp)
    assert torch.equal(full, fast)


def test_noise_is_reproducible_and_keyed():
    ids = torch.arange(1000)
    a = gumbel_noise(torch.tensor([1]), torch.tensor([5]), ids)
    assert torch.equal(a, gumbel_noise(torch.tensor([1]), torch.tensor([5]), ids))
    assert not torch.equal(a, gumbel_noise(torch.tensor([2]), torch.tensor([5]), ids))
    assert not torch.equal(a, gumbel_noise(torch.tensor([1]), torch.tensor([6]), ids))
    sub = torch.tensor([[3, 999, 10]])
    assert torch.equal(gumbel_noise(torch.tensor([1]), torch.tensor([5]), sub)[0], a[0, [3, 999, 10]])
    assert abs(float(a.mean()) - 0.5772) < 0.1  # the Gumbel mean (Euler's constant)


def test_variant_choice():
    assert variant_for(SamplingParams()) == "greedy"
    assert variant_for(SamplingParams(temperature=0.8, top_k=50, top_p=0.9)) == "topk"
    assert variant_for(SamplingParams(temperature=0.0, repetition_penalty=1.1)) == "topk"
    assert variant_for(SamplingParams(temperature=0.8)) == "topk"  # plain temperature: the whole row
    assert variant_for(SamplingParams(temperature=0.8, top_p=0.9)) == "sample"  # top-p alone
    assert variant_for(SamplingParams(temperature=0.8, top_k=TOPK_CANDIDATES + 1)) == "sample"


def test_plain_temperature_through_candidates_picks_over_the_whole_row():
    """With candidates, a plain-temperature row (top-k off, top-p 1) keeps every token, as the full
    sort does: the same tokens at every position, and some outside the K candidates (near-flat
    logits); the other rows still sample among the candidates."""
    B, V, K = 3, 2000, 16
    x = torch.randn(B, V) * 0.1
    seen = torch.zeros(B, V, dtype=torch.bool)
    rows = dict(
        temperature=torch.tensor([1.0, 1.0, 0.7]),
        top_k=torch.tensor([0, 8, 0]),
        top_p=torch.tensor([1.0, 1.0, 1.0]),
        repetition_penalty=torch.ones(B),
        seed=torch.tensor([3, 4, 5]),
        seen=seen,
    )
    outside = 0
    for pos in range(40):
        p = torch.full((B,), pos)
        got = sample(x, p, candidates=K, **rows)
        want = sample(x, p, **rows)
        assert torch.equal(got[[0, 2]], want[[0, 2]]), pos
        top = x[0].topk(K).indices
        outside += int(got[0] not in top)
        assert got[1] in (x[1] / 1.0).topk(8).indices
    assert outside > 20  # most picks of a near-flat row lie outside its 16 best


def test_the_candidate_switch_moves_the_topk_variants_bound(monkeypatch):
    """RUNTIME_TOPK_CANDIDATES (an A/B knob): the topk variant samples among that many logits and takes
    top-k settings up to it; larger ones go to the full sort; a count that is not a power of two is
    refused by name."""
    x = torch.zeros(1, 1000)
    monkeypatch.delenv("RUNTIME_TOPK_CANDIDATES", raising=False)
    assert _candidates(x, "topk") == TOPK_CANDIDATES and _candidates(x, "sample") == 0
    monkeypatch.setenv("RUNTIME_TOPK_CANDIDATES", "64")
    assert _candidates(x, "topk") == 64
    assert variant_for(SamplingParams(temperature=0.8, top_k=64)) == "topk"
    assert variant_for(SamplingParams(temperature=0.8, top_k=65)) == "sample"
    assert _candidates(torch.zeros(1, 40), "topk") == 40  # never more than the vocabulary
    monkeypatch.setenv("RUNTIME_TOPK_CANDIDATES", "100")
    with pytest.raises(ValueError, match="RUNTIME_TOPK_CANDIDATES"):
        variant_for(SamplingParams(temperature=0.8, top_k=50))
