"""The decode step's L2 weight prefetch: which slices each layer's attention kernel takes, its
setting, and on the GPU that prefetching changes no output bit and no token."""

from __future__ import annotations

import pytest
import torch

from runtime.models import weight_prefetch
from runtime.models.weight_prefetch import budget_bytes, decode_regions, layer_regions

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


def test_decode_regions_per_layer(monkeypatch):
    """Off CUDA nothing; on the meta device (as the compile test records it) each layer's own slices."""
    from tiny_configs import tiny_config

    from runtime.kernels import l2_prefetch
    from runtime.models.spec import ModelSpec
    from runtime.models.weights import random_model

    monkeypatch.setenv("RUNTIME_L2_PREFETCH_MB", "1")
    model = random_model(ModelSpec.from_hf(tiny_config("llama")), "cpu", torch.bfloat16)
    assert decode_regions(model) == [[] for _ in model.layers]
    monkeypatch.setattr(l2_prefetch, "AVAILABLE", True)
    monkeypatch.setattr(l2_prefetch, "INTERPRETING", False)
    meta = model.to("meta")
    regions = decode_regions(meta)
    for layer, got in zip(meta.layers, regions):
        want = layer_regions(layer.attn.o_proj.weight, layer.mlp.gate_up.weight, MB)
        assert [(r.shape, r.storage_offset()) for r in got] == [(r.shape, r.storage_offset()) for r in want]
        assert len(got) == 3  # the whole o_proj, gate rows and up rows
    monkeypatch.setenv("RUNTIME_L2_PREFETCH_MB", "0")
    assert decode_regions(meta) == [[] for _ in model.layers]


# ---------------------------------------------------------------- the GPU


@pytest.mark.cuda
def test_attention_with_prefetch_is_the_same_attention():
    """Prefetch slices that end off a line and sit mid-tensor change no output bit and no cache slot."""
    from runtime.kernels.qkv_attention import qkv_decode_attention_triton

    B, H, Hkv, D, S = 2, 8, 2, 64, 300
    qkv = torch.randn(B, 1, (H + 2 * Hkv) * D, device="cuda", dtype=torch.bfloat16)
    cos, sin = torch.randn(B, 1, D, device="cuda"), torch.randn(B, 1, D, device="cuda")
    positions = torch.tensor([57, 299], device="cuda")
    weight = torch.randn(1000, 77, device="cuda", dtype=torch.bfloat16)
    before = weight.clone()
    outs, caches = [], []
    for regions in ((), (weight[3:4], weight[17:901], weight[999:])):
        k = torch.randn(
            B,
            Hkv,
            S,
            D,
            device="cuda",
            dtype=torch.bfloat16,
            generator=torch.Generator("cuda").manual_seed(1),
        )
        v = torch.randn(
            B,
            Hkv,
            S,
            D,
            device="cuda",
            dtype=torch.bfloat16,
            generator=torch.Generator("cuda").manual_seed(2),
        )
        out = qkv_decode_attention_triton(
            qkv, H, Hkv, cos, sin, None, None, 1e-6, 0.0, k, v, positions, D**-0.5, prefetch=regions
        )
        outs.append(out)
        caches.append((k, v))
    torch.cuda.synchronize()
    assert torch.equal(outs[0], outs[1]) and all(torch.equal(a, b) for a, b in zip(*caches))
    assert torch.equal(weight, before)


@pytest.mark.cuda
@pytest.mark.parametrize("model_id", ["meta-llama/Llama-3.2-1B-Instruct", "google/gemma-3-1b-it"])
def test_captured_step_with_prefetch_keeps_every_token(monkeypatch, model_id):
    """Graph decode with each layer's attention prefetching 16 MB gives the tokens of graph decode
    without it, at one row and at a batch bucket."""
    from runtime.engine.generate import generate
    from runtime.engine.runner import Runner
    from runtime.engine.sampler import SamplingParams
    from runtime.models.loader import load_model

    loaded = load_model(model_id, weights="random", device="cuda", dtype="bfloat16")
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, loaded.spec.vocab - 1, (n,), generator=g).tolist() for n in (21, 5, 40)]
    tokens = {}
    for mb in ("0", "16"):
        monkeypatch.setenv("RUNTIME_L2_PREFETCH_MB", mb)
        runner = Runner(loaded, capacity=256, max_batch=4, mode="graph")
        assert runner.mode == "graph", runner.capture_error
        tokens[mb] = [generate(runner, p, SamplingParams(), 32).tokens for p in (prompts[:1], prompts)]
        runner.release()
    assert tokens["16"] == tokens["0"]
