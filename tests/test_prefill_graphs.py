"""Captured prefill: the padded, graph-safe prefill against the eager one, and the runner's use of it.

The CPU tests run DecoderLM.prefill_padded eagerly (what the graph replays) against prefill on
tiny float32 models: same logits, and the same decode steps afterwards, so every cache slot a
decode step reads holds the same key and value. The `cuda` tests capture it.
"""

from __future__ import annotations

import pytest
import torch
from tiny_configs import tiny_config

from graphs.buckets import bucket_for, prefill_lengths
from runtime.engine.state import KVCache
from runtime.models.spec import ModelSpec
from runtime.models.weights import random_model


def _model(family: str):
    spec = ModelSpec.from_hf(tiny_config(family))
    model = random_model(spec, "cpu", torch.float32)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    return spec, model


# (family, prompt n, padded length T): gemma3's sliding layers are rings of 8 slots, so n < 8 < T
# and 8 < n < T cover the ring write with padding, and T == n no padding at all
CASES = [("llama", 11, 16), ("qwen3", 5, 24), ("qwen2", 16, 16), ("gemma3", 5, 16), ("gemma3", 13, 24),
         ("gemma3", 8, 8), ("gemma3", 3, 6)]  # fmt: skip


@pytest.mark.parametrize("family,n,T", CASES)
def test_prefill_padded_matches_prefill(family, n, T):
    spec, model = _model(family)
    torch.manual_seed(0)
    prompt = torch.randint(3, spec.vocab, (1, n))
    padded = torch.cat((prompt, torch.randint(3, spec.vocab, (1, T - n))), dim=1)  # junk after the prompt
    row = 2
    want_cache, got_cache = (KVCache(spec, 3, 40, "cpu", torch.float32) for _ in range(2))
    for t in got_cache.k + got_cache.v:
        t.normal_(0, 100)  # stale garbage from an earlier request must not matter either
    others = [t[:row].clone() for t in got_cache.k + got_cache.v]
    want = model.prefill(prompt, want_cache, row=row)
    got = model.prefill_padded(padded, torch.tensor([n]), got_cache, torch.tensor([row]))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert all(
        torch.equal(t[:row], o) for t, o in zip(got_cache.k + got_cache.v, others)
    )  # other rows untouched
    token = want.argmax(-1)
    for pos in range(n, n + 14):  # past the ring's wrap
        tokens = torch.zeros(3, dtype=torch.int64)
        tokens[row] = token
        positions = torch.full((3,), pos)
        want_step = model.decode(tokens, positions, want_cache)[row]
        got_step = model.decode(tokens, positions, got_cache)[row]
        torch.testing.assert_close(got_step, want_step, atol=1e-5, rtol=1e-5)
        token = want_step.argmax()


def test_prefill_lengths():
    lengths = prefill_lengths(4096)
    assert lengths[:6] == [16, 24, 32, 48, 64, 96] and lengths[-1] == 4096
    assert all(b > a for a, b in zip(lengths, lengths[1:]))
    for n in (1, 17, 1000, 1024, 1025, 3000, 4096):
        padded = bucket_for(n, lengths)
        assert n <= padded <= max(16, 1.5 * n)
    assert prefill_lengths(700)[-1] == 700 and prefill_lengths(10) == [10]


# ---------------------------------------------------------------- captured (GPU)


@pytest.fixture(scope="module")
def gpu_runner():
    from runtime.engine.runner import Runner
    from runtime.models.loader import load_model

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    loaded = load_model("google/gemma-3-1b-it", weights="random", device="cuda", dtype="bfloat16")
    runner = Runner(loaded, capacity=1100, max_batch=4, mode="graph")
    assert runner.mode == "graph" and runner.prefill_graphs is not None
    yield loaded, runner
    runner.release()


@pytest.mark.cuda
@pytest.mark.parametrize("n", [7, 100, 513, 1030])  # 1030: the ring of 512 and its wrap, a 1100 bucket
def test_graph_prefill_matches_eager(gpu_runner, n):
    """Replayed prefill: the first token's logits and the next decode steps match an eager prefill
    into another row (bf16: the padded GEMMs may sum in another order)."""
    loaded, runner = gpu_runner
    ids = torch.randint(3, loaded.spec.vocab - 1, (n,), device="cuda")
    graphed = runner.prefill_graphs.run(1, ids).clone()
    assert bucket_for(n, runner.prefill_graphs.lengths) in runner.prefill_graphs.captured
    eager = loaded.model.prefill(ids[None], runner.cache, row=2)
    torch.testing.assert_close(graphed, eager, atol=0.15, rtol=0.05)
    tokens = torch.full((4,), int(eager.argmax()), device="cuda")
    for pos in range(n, n + 8):
        step = loaded.model.decode(tokens, torch.full((4,), pos, device="cuda"), runner.cache)
        torch.testing.assert_close(step[1], step[2], atol=0.15, rtol=0.05)
        tokens.fill_(int(step[2].argmax()))


@pytest.mark.cuda
@pytest.mark.parametrize("n", [1, 16, 300, 700])
def test_graph_prefill_replays_the_eager_padded_prefill_exactly(gpu_runner, n):
    """The replay computes what DecoderLM.prefill_padded computes eagerly on the same padded tokens:
    the same logits bit for bit, and the same cache row."""
    loaded, runner = gpu_runner
    graphs = runner.prefill_graphs
    ids = torch.randint(3, loaded.spec.vocab - 1, (n,), device="cuda")
    graphed = graphs.run(3, ids).clone()
    T = bucket_for(n, graphs.lengths)
    replay_rows = [(k[3].clone(), v[3].clone()) for k, v in zip(runner.cache.k, runner.cache.v)]
    eager = loaded.model.prefill_padded(graphs.tokens[:T][None], graphs.n, runner.cache, graphs.row)
    assert torch.equal(graphed, eager)
    for (k, v), (k_cache, v_cache) in zip(replay_rows, zip(runner.cache.k, runner.cache.v)):
        assert torch.equal(k, k_cache[3]) and torch.equal(v, v_cache[3])


@pytest.mark.cuda
def test_continued_rows_and_the_switch_prefill_eagerly(gpu_runner, monkeypatch):
    from runtime.engine.runner import Runner

    loaded, runner = gpu_runner
    before = list(runner.prefill_graphs.captured)
    runner.prefill(0, [5, 6, 7], start=40)  # continues a row: the eager path, no new graph
    assert runner.prefill_graphs.captured == before
    monkeypatch.setenv("RUNTIME_PREFILL_GRAPHS", "0")
    off = Runner(loaded, capacity=64, max_batch=1, mode="graph")
    assert off.prefill_graphs is None
    off.release()
