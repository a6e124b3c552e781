"""Long-position graphs (runtime/engine/long_graphs.py, runtime/kernels/position_plan.py): which
steps replay them, which models capture them, the attention plan they launch, and on the GPU the
same tokens as the step's own plan."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import pytest
import torch

from runtime.engine import long_graphs
from runtime.engine.generate import generate
from runtime.engine.runner import VARIANTS, Runner
from runtime.engine.sampler import SamplingParams
from runtime.kernels import attention_plan as plan
from runtime.kernels import position_plan
from runtime.kernels.position_plan import long_positions

GPU = torch.device("cuda", 0)  # never touched: sm_count is stood in for
ARCHS = ["meta-llama/Llama-3.2-1B-Instruct", "Qwen/Qwen3-1.7B", "google/gemma-3-1b-it"]


@pytest.fixture(autouse=True)
def _h100(monkeypatch):
    monkeypatch.setattr(plan, "sm_count", lambda device: 132 if device.type != "cpu" else 4)
    for name in ("RUNTIME_LONG_GRAPHS", "RUNTIME_ATTN_LONG_BLOCK_N", "RUNTIME_ATTN_BLOCK_N"):
        monkeypatch.delenv(name, raising=False)


def test_the_long_plan_halves_batch_one_blocks_of_256_byte_rows(monkeypatch):
    """Inside long_positions a batch-1 step with 256-byte K/V rows (Qwen3's D = 128, and Llama's
    D = 64 in fp32) takes 32-slot blocks, 64 outside; Llama's and Gemma's bf16 rows keep their
    blocks, batch buckets theirs, and the split count keeps its rule. RUNTIME_ATTN_LONG_BLOCK_N
    gives every row width its size."""
    assert plan.split_plan(1, 8, 2048, 128, 2, GPU) == (64, 32)
    with long_positions():
        assert plan.split_plan(1, 8, 2048, 128, 2, GPU) == (32, 33)
        assert plan.split_plan(1, 8, 2048, 64, 4, GPU) == (32, 33)
        assert plan.split_plan(1, 8, 2048, 64, 2, GPU) == (64, 32)
        assert plan.split_plan(1, 1, 2048, 256, 2, GPU) == (32, 64)
        assert plan.split_plan(16, 8, 2048, 128, 2, GPU) == (64, 1)
        monkeypatch.setenv("RUNTIME_ATTN_LONG_BLOCK_N", "16")
        assert plan.split_plan(1, 8, 2048, 128, 2, GPU) == (16, 33)
        assert plan.split_plan(1, 8, 2048, 64, 2, GPU) == (16, 33)
    assert plan.split_plan(1, 8, 2048, 128, 2, GPU) == (64, 32)
    assert position_plan.long_block_n(256) is None


def _model(kv_heads: int, head_dim: int, spill: int):
    spec = SimpleNamespace(kv_heads=kv_heads, head_dim=head_dim)
    return SimpleNamespace(spec=spec, dtype=torch.bfloat16, cache_spill_position=lambda device: spill)


def test_long_graphs_start_at_the_spill_where_the_plan_differs(monkeypatch):
    """auto: Qwen3's cache (8 x 128, spilling L2 at 458 on the H100) from 458 where the capacity
    passes it; never below; never for Llama's or Gemma's heads (their blocks stay), even where
    their caches spill; "0" never; a position forces it; anything else is refused."""
    qwen3, llama, gemma = _model(8, 128, 458), _model(8, 64, 1600), _model(1, 256, 100)
    assert long_graphs.long_graphs_from(qwen3, 2048, GPU) == 458
    assert long_graphs.long_graphs_from(qwen3, 458, GPU) == plan.NEVER
    assert long_graphs.long_graphs_from(llama, 4096, GPU) == plan.NEVER
    assert long_graphs.long_graphs_from(gemma, 2048, GPU) == plan.NEVER
    monkeypatch.setenv("RUNTIME_LONG_GRAPHS", "0")
    assert long_graphs.long_graphs_from(qwen3, 2048, GPU) == plan.NEVER
    monkeypatch.setenv("RUNTIME_LONG_GRAPHS", "40")
    assert long_graphs.long_graphs_from(gemma, 2048, GPU) == 40
    monkeypatch.setenv("RUNTIME_LONG_GRAPHS", "yes")
    with pytest.raises(ValueError, match="RUNTIME_LONG_GRAPHS"):
        long_graphs.long_graphs_from(qwen3, 2048, GPU)


def test_graph_keys_by_position():
    """A batch-1 step at or past long_from replays its variant's long graph; batch buckets and
    earlier positions their own; the long graphs exist only where a position reaches long_from."""
    assert long_graphs.graph_key(1, "greedy", 457, 458) == (1, "greedy")
    assert long_graphs.graph_key(1, "topk", 458, 458) == (1, "topk", "long")
    assert long_graphs.graph_key(2, "greedy", 2000, 458) == (2, "greedy")
    assert long_graphs.long_keys(VARIANTS, 2048, 458) == [(1, v, "long") for v in VARIANTS]
    assert long_graphs.long_keys(VARIANTS, 2048, plan.NEVER) == []


def test_generate_runs_the_long_plan_from_its_position(smollm2_fp32, monkeypatch):
    """Eager on the CPU: steps whose row feeds position 12 or later run under the long plan (and
    only they), and the tokens are those of a runner without long graphs."""
    monkeypatch.setenv("RUNTIME_LONG_GRAPHS", "12")
    runner = Runner(smollm2_fp32, capacity=32, mode="eager")
    assert runner.long_from == 12
    seen = []
    decode = runner.model.decode

    def spy(tokens, positions, *args, **kwargs):
        seen.append((int(positions[0]), position_plan.inside_long_positions()))
        return decode(tokens, positions, *args, **kwargs)

    monkeypatch.setattr(runner.model, "decode", spy)
    prompt = list(range(20, 28))  # 8 tokens: step i feeds position 7 + i
    got = generate(runner, [prompt], SamplingParams(), 10).tokens
    assert seen == [(p, p >= 12) for p in range(8, 17)]
    monkeypatch.setenv("RUNTIME_LONG_GRAPHS", "0")
    plain = Runner(smollm2_fp32, capacity=32, mode="eager")
    assert plain.long_from == plan.NEVER
    assert generate(plain, [prompt], SamplingParams(), 10).tokens == got


@pytest.mark.cuda
@pytest.mark.parametrize("arch", ARCHS)
def test_long_graphs_equal_eager_and_the_short_plan(arch, monkeypatch):
    """On the GPU, long graphs from position 300 (forced for every model): graph and eager decode
    give the same tokens, each step past 300 replays a long graph, and the logits of a step at 330
    match the short plan's (only the blocks' order of the online softmax differs)."""
    from runtime.models.loader import load_model

    loaded = load_model(arch, weights="random", device="cuda", dtype="bfloat16")
    monkeypatch.setenv("RUNTIME_PREFILL_GRAPHS", "0")
    monkeypatch.setenv("RUNTIME_LONG_GRAPHS", "300")
    graph = Runner(loaded, capacity=700, mode="graph")
    eager = Runner(loaded, capacity=700, mode="eager")
    assert graph.mode == "graph", graph.capture_error
    assert {(1, v, "long") for v in VARIANTS} <= {s.key for s in graph.pool.stats}
    g = torch.Generator().manual_seed(5)
    prompt = torch.randint(3, loaded.spec.vocab - 1, (290,), generator=g).tolist()
    want = generate(eager, [prompt], SamplingParams(), 48).tokens
    assert generate(graph, [prompt], SamplingParams(), 48).tokens == want
    # one step at position 330 under each plan, from the same cache
    logits = {}
    for long in (False, True):
        graph.prefill(0, prompt + want[0][:40], 0, "greedy")
        buf = graph.buffers
        with torch.inference_mode(), long_positions() if long else contextlib.nullcontext():
            logits[long] = graph.model.decode(buf.tokens[:1], buf.positions[:1], graph.cache)
    graph.release()
    short, long = logits[False], logits[True]
    torch.testing.assert_close(long, short, atol=0.05 * short.abs().max().item(), rtol=0)
