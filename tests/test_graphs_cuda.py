"""CUDA-graph decode against eager decode on the GPU: identical tokens for every dev architecture
(random weights, bf16), greedy and seeded sampling, batches 1, 3 (padded to 4) and 8; poisoned
buffers, back-to-back prompts and the capacity edge."""

from __future__ import annotations

import os

import pytest
import torch

from runtime.engine.generate import generate
from runtime.engine.runner import VARIANTS, Runner
from runtime.engine.sampler import SamplingParams
from runtime.engine.spill_graphs import spill_keys
from runtime.errors import CapacityError

pytestmark = pytest.mark.cuda
ARCHS = ["meta-llama/Llama-3.2-1B-Instruct", "Qwen/Qwen3-1.7B", "google/gemma-3-1b-it"]
SAMPLED = SamplingParams(temperature=0.8, top_k=50, top_p=0.9, repetition_penalty=1.1, seed=42)


@pytest.fixture(scope="module", params=ARCHS)
def runners(request):
    from runtime.models.loader import load_model

    loaded = load_model(request.param, weights="random", device="cuda", dtype="bfloat16")
    # decode graphs against eager decode from the same eager prefill: the prefill graphs pad the
    # prompt, so their GEMMs may round differently (tests/test_prefill_graphs.py checks them)
    os.environ["RUNTIME_PREFILL_GRAPHS"] = "0"
    try:
        graph = Runner(loaded, capacity=700, max_batch=8, mode="graph")
    finally:
        del os.environ["RUNTIME_PREFILL_GRAPHS"]
    eager = Runner(loaded, capacity=700, max_batch=8, mode="eager")
    assert graph.mode == "graph", graph.capture_error
    yield loaded, graph, eager
    graph.release()


def _prompts(spec, lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, spec.vocab - 1, (n,), generator=g).tolist() for n in lengths]


@pytest.mark.parametrize("lengths", [[17], [5, 40, 23], [8, 3, 30, 12, 9, 50, 1, 21]], ids=["b1", "b3", "b8"])
@pytest.mark.parametrize("params", [SamplingParams(), SAMPLED], ids=["greedy", "sampled"])
def test_graph_equals_eager(runners, lengths, params):
    loaded, graph, eager = runners
    prompts = _prompts(loaded.spec, lengths)
    want = generate(eager, prompts, params, 64).tokens
    got = generate(graph, prompts, params, 64).tokens
    assert got == want
    assert all(len(t) == 64 for t in got)


def test_poisoned_buffers_do_not_leak(runners):
    """Garbage in every input buffer and in the whole KV cache before a request changes nothing."""
    loaded, graph, _ = runners
    prompts = _prompts(loaded.spec, [33, 7], seed=1)
    clean = generate(graph, prompts, SAMPLED, 48).tokens
    buf = graph.buffers
    buf.tokens.fill_(loaded.spec.vocab - 1)
    buf.positions.fill_(123)
    buf.temperature.fill_(5.0)
    buf.top_k.fill_(3)
    buf.seen.fill_(True)
    for t in graph.cache.k + graph.cache.v:
        t.normal_(0, 100)
    assert generate(graph, prompts, SAMPLED, 48).tokens == clean


def test_back_to_back_prompts(runners):
    loaded, graph, eager = runners
    a, b = _prompts(loaded.spec, [300, 11], seed=2)
    generate(graph, [a], SamplingParams(), 200)
    after_a = generate(graph, [b], SamplingParams(), 40).tokens
    fresh = generate(eager, [b], SamplingParams(), 40).tokens
    assert after_a == fresh


def test_generation_up_to_exact_capacity(runners):
    loaded, graph, eager = runners
    (prompt,) = _prompts(loaded.spec, [636], seed=3)
    got = generate(graph, [prompt], SamplingParams(), 64).tokens  # 636 + 64 == 700
    assert got == generate(eager, [prompt], SamplingParams(), 64).tokens
    with pytest.raises(CapacityError, match="700"):
        generate(graph, [prompt], SamplingParams(), 65)


def test_seeded_sampling_reproduces(runners):
    loaded, graph, _ = runners
    prompts = _prompts(loaded.spec, [20], seed=4)
    first = generate(graph, prompts, SAMPLED, 32).tokens
    assert generate(graph, prompts, SAMPLED, 32).tokens == first
    other = SamplingParams(temperature=0.8, top_k=50, top_p=0.9, repetition_penalty=1.1, seed=43)
    assert generate(graph, prompts, other, 32).tokens != first


def test_capture_stats_are_recorded(runners):
    _, graph, _ = runners
    keys = {s.key for s in graph.pool.stats}
    # Qwen3's cache spills the H100's L2 at 458 slots: its spill graphs too (spill_graphs.py)
    spill = set(spill_keys(VARIANTS, graph.spill_window))
    assert {(b, v) for b in (1, 2, 4, 8) for v in VARIANTS} | spill == keys
    assert graph.capture_s > 0
