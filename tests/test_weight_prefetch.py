"""The decode step's L2 weight prefetch: which slices it takes, its setting, and on the GPU that the
side stream's kernels run inside the captured step without changing a token."""

from __future__ import annotations

import pytest
import torch

from runtime.kernels import l2_prefetch
from runtime.models import weight_prefetch
from runtime.models.weight_prefetch import budget_bytes, layer_regions, prefetcher

MB = 1 << 20


def _inside(region: torch.Tensor, weight: torch.Tensor) -> tuple[int, int]:
    """(first row, rows) of a contiguous row slice of weight."""
    row = weight.shape[1] * weight.element_size()
    start = region.data_ptr() - weight.data_ptr()
    assert region.is_contiguous() and start % row == 0 and region.shape[1] == weight.shape[1]
    return start // row, region.shape[0]


def test_regions_follow_the_read_order_within_the_budget():
    o = torch.empty(64, 32, dtype=torch.bfloat16)  # 64 B rows, 4 KB
    gate_up = torch.empty(2 * 100, 48, dtype=torch.bfloat16)  # I = 100, 96 B rows
    assert layer_regions(o, gate_up, 0) == []
    (part,) = layer_regions(o, gate_up, 1000)  # 15 rows of o fit, nothing of gate/up
    assert _inside(part, o) == (0, 15)
    whole, gate, up = layer_regions(o, gate_up, 4096 + 10 * 192 + 191)
    assert _inside(whole, o) == (0, 64)
    assert _inside(gate, gate_up) == (0, 10) and _inside(up, gate_up) == (100, 10)  # row o pairs with I + o
    whole, gate, up = layer_regions(o, gate_up, 1 << 30)  # never past the matrices
    assert _inside(gate, gate_up) == (0, 100) and _inside(up, gate_up) == (100, 100)


def test_budget_setting(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.delenv("RUNTIME_L2_PREFETCH_MB", raising=False)
    assert budget_bytes(cpu) == weight_prefetch.DEFAULT_MB * MB
    monkeypatch.setenv("RUNTIME_L2_PREFETCH_MB", "0")
    assert budget_bytes(cpu) == 0
    monkeypatch.setenv("RUNTIME_L2_PREFETCH_MB", "2.5")
    assert budget_bytes(cpu) == int(2.5 * MB)
    monkeypatch.setenv("RUNTIME_L2_PREFETCH_MB", "-1")
    with pytest.raises(ValueError, match="RUNTIME_L2_PREFETCH_MB"):
        budget_bytes(cpu)


def test_nothing_happens_off_cuda():
    from tiny_configs import tiny_config

    from runtime.models.spec import ModelSpec
    from runtime.models.weights import random_model

    model = random_model(ModelSpec.from_hf(tiny_config("llama")), "cpu", torch.float32)
    assert prefetcher(model) is None
    l2_prefetch.prefetch_l2(model.embed.weight, torch.zeros(l2_prefetch.THREADS, dtype=torch.int32))


# ---------------------------------------------------------------- the GPU


@pytest.mark.cuda
def test_prefetch_kernel_covers_odd_regions_and_writes_nothing():
    """Slices that end off a line and sit mid-tensor prefetch without a fault; the sink stays zero."""
    weight = torch.randn(1000, 77, device="cuda", dtype=torch.bfloat16)
    sink = torch.zeros(l2_prefetch.THREADS, dtype=torch.int32, device="cuda")
    before = weight.clone()
    for region in (weight, weight[3:4], weight[17:901], weight[999:]):
        l2_prefetch.prefetch_l2(region, sink)
    torch.cuda.synchronize()
    assert torch.equal(weight, before) and not sink.any()


@pytest.mark.cuda
@pytest.mark.parametrize("model_id", ["meta-llama/Llama-3.2-1B-Instruct", "google/gemma-3-1b-it"])
def test_captured_step_prefetches_and_keeps_every_token(monkeypatch, model_id):
    """Graph decode with the prefetch (on its side stream, joined after the last layer) gives the
    tokens of graph decode without it, at one row and at a batch bucket; the profiler sees the
    prefetch kernels in a replay."""
    from runtime.bench.kernel_times import kernel_times
    from runtime.engine.generate import generate
    from runtime.engine.runner import Runner
    from runtime.engine.sampler import SamplingParams
    from runtime.models.loader import load_model

    loaded = load_model(model_id, weights="random", device="cuda", dtype="bfloat16")
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, loaded.spec.vocab - 1, (n,), generator=g).tolist() for n in (21, 5, 40)]
    tokens, names = {}, {}
    for mb in ("0", "16"):
        monkeypatch.setenv("RUNTIME_L2_PREFETCH_MB", mb)
        runner = Runner(loaded, capacity=256, max_batch=4, mode="graph")
        assert runner.mode == "graph", runner.capture_error
        tokens[mb] = [generate(runner, p, SamplingParams(), 32).tokens for p in (prompts[:1], prompts)]
        names[mb] = set(kernel_times(lambda r=runner: r.step(1, "greedy")))
        runner.release()
    assert tokens["16"] == tokens["0"]
    assert "_prefetch_kernel" in names["16"] and "_prefetch_kernel" not in names["0"]
