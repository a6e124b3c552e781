"""Our decoder against transformers eager on the same random weights, every family, fp32."""

from __future__ import annotations

import pytest
import torch
from tiny_configs import hf_and_ours

from runtime.engine.state import KVCache

FAMILIES = ["llama", "qwen2", "qwen3", "gemma3"]


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_match_over_prefill_and_decode(family):
    hf, spec, ours = hf_and_ours(family)
    prompt = torch.randint(3, spec.vocab, (1, 11))
    cache = KVCache(spec, 1, 64, "cpu", torch.float32)
    with torch.no_grad():
        ref = hf(prompt).logits
    got = ours.prefill(prompt, cache, all_logits=True)
    assert (got - ref).abs().max() < 1e-4
    seq, token = prompt, int(got[0, -1].argmax())
    for step in range(16):  # gemma3's window is 8: this runs well past it
        seq = torch.cat([seq, torch.tensor([[token]])], dim=1)
        logits = ours.decode(torch.tensor([token]), torch.tensor([seq.shape[1] - 1]), cache)
        with torch.no_grad():
            ref = hf(seq).logits[0, -1]
        assert (logits[0] - ref).abs().max() < 1e-4, f"step {step}"
        token = int(logits[0].argmax())


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_tokens_match_generate(family):
    from runtime.engine.generate import generate
    from runtime.engine.runner import Runner
    from runtime.engine.sampler import SamplingParams
    from runtime.models.loader import LoadedModel

    hf, spec, ours = hf_and_ours(family, seed=1)
    prompt = torch.randint(3, spec.vocab, (1, 9))
    expected = hf.generate(prompt, max_new_tokens=24, do_sample=False, eos_token_id=None)[0, 9:].tolist()
    loaded = LoadedModel(family, ours, spec, None, (), "random", 0.0)
    runner = Runner(loaded, capacity=40, mode="eager")
    got = generate(runner, [prompt[0].tolist()], SamplingParams(), 24).tokens[0]
    assert got == expected


@pytest.mark.parametrize("family", ["gemma3", "llama"])
def test_continuing_prefill_equals_one_prefill(family):
    """A second prefill that continues the cache (chat turns) gives the same logits as one prefill
    of the whole sequence, also when a sliding layer's ring has wrapped in between."""
    _, spec, ours = hf_and_ours(family, seed=2)
    seq = torch.randint(3, spec.vocab, (1, 29))
    whole = ours.prefill(seq, KVCache(spec, 1, 64, "cpu", torch.float32), all_logits=True)
    cache = KVCache(spec, 1, 64, "cpu", torch.float32)
    ours.prefill(seq[:, :12], cache)
    ours.decode(seq[0, 12:13], torch.tensor([12]), cache)  # one decode step in between
    tail = ours.prefill(seq[:, 13:], cache, start=13, all_logits=True)
    assert (tail - whole[:, 13:]).abs().max() < 1e-4


def test_batch_rows_are_independent():
    """Rows of different lengths decode together exactly as they do alone."""
    from runtime.engine.generate import generate
    from runtime.engine.runner import Runner
    from runtime.engine.sampler import SamplingParams
    from runtime.models.loader import LoadedModel

    _, spec, ours = hf_and_ours("gemma3", seed=3)
    loaded = LoadedModel("gemma3", ours, spec, None, (), "random", 0.0)
    prompts = [torch.randint(3, spec.vocab, (n,)).tolist() for n in (5, 13, 2)]
    params = SamplingParams(temperature=0.9, top_k=20, top_p=0.9, repetition_penalty=1.2, seed=7)
    batched = generate(Runner(loaded, capacity=40, max_batch=4, mode="eager"), prompts, params, 16).tokens
    for row, prompt in enumerate(prompts):
        alone = Runner(loaded, capacity=40, max_batch=4, mode="eager")
        # seeds are per row (seed + row): run each prompt in its own row to compare like with like
        padded = [[3]] * row + [prompt]
        assert generate(alone, padded, params, 16).tokens[row] == batched[row]
