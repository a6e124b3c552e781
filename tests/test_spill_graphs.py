"""Spill graphs (runtime/engine/spill_graphs.py, runtime/kernels/position_plan.py): which steps
replay them, which models capture them, the attention plan they launch, and on the GPU the same
tokens as the step's own plan."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import pytest
import torch

from runtime.engine import spill_graphs
from runtime.engine.generate import generate
from runtime.engine.runner import VARIANTS, Runner
from runtime.engine.sampler import SamplingParams
from runtime.kernels import attention_plan as plan
from runtime.kernels import position_plan
from runtime.kernels.position_plan import spill_positions

GPU = torch.device("cuda", 0)  # never touched: sm_count is stood in for
ARCHS = ["meta-llama/Llama-3.2-1B-Instruct", "Qwen/Qwen3-1.7B", "google/gemma-3-1b-it"]


@pytest.fixture(autouse=True)
def _h100(monkeypatch):
    monkeypatch.setattr(plan, "sm_count", lambda device: 132 if device.type != "cpu" else 4)
    for name in ("RUNTIME_SPILL_GRAPHS", "RUNTIME_ATTN_SPILL_BLOCK_N", "RUNTIME_ATTN_BLOCK_N"):
        monkeypatch.delenv(name, raising=False)


def test_the_spill_plan_halves_batch_one_blocks_of_256_byte_rows(monkeypatch):
    """Inside spill_positions a batch-1 step with 256-byte K/V rows (Qwen3's D = 128, and Llama's
    D = 64 in fp32) takes 32-slot blocks, 64 outside; Llama's and Gemma's bf16 rows keep their
    blocks, batch buckets theirs, and the split count keeps its rule. RUNTIME_ATTN_SPILL_BLOCK_N
    gives every row width its size."""
    assert plan.split_plan(1, 8, 2048, 128, 2, GPU) == (64, 32)
    with spill_positions():
        assert plan.split_plan(1, 8, 2048, 128, 2, GPU) == (32, 33)
        assert plan.split_plan(1, 8, 2048, 64, 4, GPU) == (32, 33)
        assert plan.split_plan(1, 8, 2048, 64, 2, GPU) == (64, 32)
        assert plan.split_plan(1, 1, 2048, 256, 2, GPU) == (32, 64)
        assert plan.split_plan(16, 8, 2048, 128, 2, GPU) == (64, 1)
        monkeypatch.setenv("RUNTIME_ATTN_SPILL_BLOCK_N", "16")
        assert plan.split_plan(1, 8, 2048, 128, 2, GPU) == (16, 33)
        assert plan.split_plan(1, 8, 2048, 64, 2, GPU) == (16, 33)
    assert plan.split_plan(1, 8, 2048, 128, 2, GPU) == (64, 32)
    assert position_plan.spill_block_n(256) is None


def _model(kv_heads: int, head_dim: int, spill: int):
    spec = SimpleNamespace(kv_heads=kv_heads, head_dim=head_dim)
    return SimpleNamespace(spec=spec, dtype=torch.bfloat16, cache_spill_position=lambda device: spill)


def test_the_window_runs_from_the_spill_until_the_card_is_full(monkeypatch):
    """auto: Qwen3's cache (8 kv heads of 128, spilling the H100's L2 at 458) from 458 until its own
    plan's live 64-slot blocks give all 132 SMs a block (17 blocks: 1024), or the capacity; an
    11-split plan (700 slots) never fills the card; nothing where the spill is past either, nor for
    Llama's or Gemma's heads (their blocks stay); "0" never; START[:END] forces a window; anything
    else is refused."""
    qwen3, llama, gemma = _model(8, 128, 458), _model(8, 64, 300), _model(1, 256, 100)
    assert spill_graphs.spill_window(qwen3, 2048, GPU) == (458, 1024)
    assert spill_graphs.spill_window(qwen3, 4096, GPU) == (458, 1024)
    assert spill_graphs.spill_window(qwen3, 700, GPU) == (458, 700)
    assert spill_graphs.spill_window(qwen3, 458, GPU) == spill_graphs.NO_WINDOW
    assert spill_graphs.spill_window(_model(8, 128, 1100), 4096, GPU) == spill_graphs.NO_WINDOW
    assert spill_graphs.spill_window(llama, 4096, GPU) == spill_graphs.NO_WINDOW
    assert spill_graphs.spill_window(gemma, 2048, GPU) == spill_graphs.NO_WINDOW
    assert spill_graphs.card_full_position((64, 32), 8, GPU) == 1024
    assert spill_graphs.card_full_position((32, 132), 1, GPU) == 131 * 32
    assert spill_graphs.card_full_position((32, 131), 1, GPU) == plan.NEVER
    assert spill_graphs.card_full_position((64, 11), 8, GPU) == plan.NEVER
    monkeypatch.setenv("RUNTIME_SPILL_GRAPHS", "0")
    assert spill_graphs.spill_window(qwen3, 2048, GPU) == spill_graphs.NO_WINDOW
    monkeypatch.setenv("RUNTIME_SPILL_GRAPHS", "40")
    assert spill_graphs.spill_window(gemma, 2048, GPU) == (40, 2048)
    monkeypatch.setenv("RUNTIME_SPILL_GRAPHS", "40:90")
    assert spill_graphs.spill_window(gemma, 2048, GPU) == (40, 90)
    for bad in ("yes", "40:", "40:x", ":90"):
        monkeypatch.setenv("RUNTIME_SPILL_GRAPHS", bad)
        with pytest.raises(ValueError, match="RUNTIME_SPILL_GRAPHS"):
            spill_graphs.spill_window(qwen3, 2048, GPU)


def test_graph_keys_by_position():
    """A batch-1 step inside the window replays its variant's spill graph; batch buckets and
    positions outside it their own; the spill graphs exist only where the window holds a position."""
    window = (458, 1024)
    assert spill_graphs.graph_key(1, "greedy", 457, window) == (1, "greedy")
    assert spill_graphs.graph_key(1, "topk", 458, window) == (1, "topk", "spill")
    assert spill_graphs.graph_key(1, "sample", 1023, window) == (1, "sample", "spill")
    assert spill_graphs.graph_key(1, "greedy", 1024, window) == (1, "greedy")
    assert spill_graphs.graph_key(2, "greedy", 600, window) == (2, "greedy")
    assert spill_graphs.spill_keys(VARIANTS, window) == [(1, v, "spill") for v in VARIANTS]
    assert spill_graphs.spill_keys(VARIANTS, spill_graphs.NO_WINDOW) == []


def test_generate_runs_the_spill_plan_inside_its_window(smollm2_fp32, monkeypatch):
    """Eager on the CPU: steps whose row feeds a position in [12, 15) run under the spill plan (and
    only they), and the tokens are those of a runner without spill graphs."""
    monkeypatch.setenv("RUNTIME_SPILL_GRAPHS", "12:15")
    runner = Runner(smollm2_fp32, capacity=32, mode="eager")
    assert runner.spill_window == (12, 15)
    seen = []
    decode = runner.model.decode

    def spy(tokens, positions, *args, **kwargs):
        seen.append((int(positions[0]), position_plan.inside_spill_positions()))
        return decode(tokens, positions, *args, **kwargs)

    monkeypatch.setattr(runner.model, "decode", spy)
    prompt = list(range(20, 28))  # 8 tokens: step i feeds position 7 + i
    got = generate(runner, [prompt], SamplingParams(), 10).tokens
    assert seen == [(p, 12 <= p < 15) for p in range(8, 17)]
    monkeypatch.setenv("RUNTIME_SPILL_GRAPHS", "0")
    plain = Runner(smollm2_fp32, capacity=32, mode="eager")
    assert plain.spill_window == spill_graphs.NO_WINDOW
    assert generate(plain, [prompt], SamplingParams(), 10).tokens == got


@pytest.mark.cuda
@pytest.mark.parametrize("arch", ARCHS)
def test_spill_graphs_equal_eager_and_the_own_plan(arch, monkeypatch):
    """On the GPU, spill graphs for positions 300-600 (forced for every model; only Qwen3's plan
    differs): graph and eager decode give the same tokens across the window's edges, and the logits
    of a step at 330 under the spill plan match the step's own plan's (only the order of the online
    softmax's blocks differs)."""
    from runtime.models.loader import load_model

    loaded = load_model(arch, weights="random", device="cuda", dtype="bfloat16")
    monkeypatch.setenv("RUNTIME_PREFILL_GRAPHS", "0")
    monkeypatch.setenv("RUNTIME_SPILL_GRAPHS", "300:330")
    graph = Runner(loaded, capacity=700, mode="graph")
    eager = Runner(loaded, capacity=700, mode="eager")
    assert graph.mode == "graph", graph.capture_error
    assert {(1, v, "spill") for v in VARIANTS} <= {s.key for s in graph.pool.stats}
    g = torch.Generator().manual_seed(5)
    prompt = torch.randint(3, loaded.spec.vocab - 1, (290,), generator=g).tolist()
    want = generate(eager, [prompt], SamplingParams(), 48).tokens
    assert generate(graph, [prompt], SamplingParams(), 48).tokens == want
    # one step at position 330 under each plan, from the same cache
    logits = {}
    for spill in (False, True):
        graph.prefill(0, prompt + want[0][:40], 0, "greedy")
        buf = graph.buffers
        with torch.inference_mode(), spill_positions() if spill else contextlib.nullcontext():
            logits[spill] = graph.model.decode(buf.tokens[:1], buf.positions[:1], graph.cache)
    graph.release()
    own, spill = logits[False], logits[True]
    torch.testing.assert_close(spill, own, atol=0.05 * own.abs().max().item(), rtol=0)
