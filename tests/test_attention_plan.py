"""The decode attention's launch plan (runtime/kernels/attention_plan.py): splits per (row, kv head)
and the loop's pipeline depth, from shapes, the device and the A/B switches only."""

from __future__ import annotations

import pytest
import torch

from runtime.kernels import attention_plan as plan

GPU = torch.device("cuda", 0)  # never touched: sm_count is stood in for
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _h100(monkeypatch):
    monkeypatch.setattr(plan, "sm_count", lambda device: 132 if device.type != "cpu" else 4)
    for name in ("RUNTIME_ATTN_BATCH_PLAN", "RUNTIME_ATTN_BATCH_SPLITS", "RUNTIME_ATTN_STAGES"):
        monkeypatch.delenv(name, raising=False)


def test_batch_buckets_whose_pairs_fill_the_card_take_one_split():
    """16 rows x 8 kv heads (Llama, Qwen3) fill 132 SMs: one program per pair; 8 rows, or Gemma's
    one kv head at 16 rows, spread over splits as before; one row is never a batch bucket."""
    assert plan.split_plan(16, 8, 4096, 128, 2, GPU) == (64, 1)
    assert plan.split_plan(32, 8, 4096, 64, 2, GPU) == (64, 1)
    assert plan.split_plan(8, 8, 4096, 128, 2, GPU) == (64, 5)  # cdiv(2 * 132, 64)
    assert plan.split_plan(16, 1, 4096, 256, 2, GPU) == (32, 17)
    assert plan.split_plan(1, 8, 4096, 64, 2, GPU) == (64, 33)
    assert plan.fills_card(15, 8, GPU) and not plan.fills_card(14, 8, GPU)  # 120 >= 0.9 * 132 > 112


def test_the_spread_plan_and_the_cpu_keep_the_splits(monkeypatch):
    """RUNTIME_ATTN_BATCH_PLAN=spread (the A/B) keeps the per-SM rule; on the CPU (the interpreter's
    stand-in of 4 SMs) batch tests keep their merges; a bad value is refused."""
    assert plan.split_plan(16, 8, 4096, 128, 2, CPU) == (64, 1)  # cdiv(2 * 4, 128): per-SM rule
    assert plan.split_plan(2, 2, 4096, 128, 2, CPU) == (64, 2)
    assert not plan.fills_card(2, 2, CPU)
    monkeypatch.setenv("RUNTIME_ATTN_BATCH_PLAN", "spread")
    assert plan.split_plan(16, 8, 4096, 128, 2, GPU) == (64, 3)
    monkeypatch.setenv("RUNTIME_ATTN_BATCH_PLAN", "wide")
    with pytest.raises(ValueError, match="RUNTIME_ATTN_BATCH_PLAN"):
        plan.split_plan(16, 8, 4096, 128, 2, GPU)


def test_one_split_batch_buckets_pipeline_deeper(monkeypatch):
    """3 stages where a batch bucket's one program per pair loops over the whole cache; 2 for one row
    and for split batch buckets; RUNTIME_ATTN_STAGES overrides both."""
    assert plan.split_stages(16, 1) == 3
    assert plan.split_stages(16, 3) == 2 and plan.split_stages(1, 1) == 2 and plan.split_stages() == 2
    monkeypatch.setenv("RUNTIME_ATTN_STAGES", "4")
    assert plan.split_stages(16, 1) == 4 and plan.split_stages(1, 33) == 4


def test_the_first_layers_that_fit_the_l2_share_keep_their_cache(monkeypatch):
    """RUNTIME_ATTN_KV_L2: the first layers whose caches fit together in that share of the L2 read
    them evict-last; none by default, none off CUDA; a share outside [0, 1] is refused by name."""
    monkeypatch.setattr(plan, "l2_bytes", lambda device: 50 * 2**20 if device.type == "cuda" else 0)
    qwen3 = [8 * 2**20] * 28  # K and V of a 2048-slot cache per layer, one row
    monkeypatch.delenv("RUNTIME_ATTN_KV_L2", raising=False)
    assert not any(plan.kv_kept_in_l2(qwen3, GPU))
    monkeypatch.setenv("RUNTIME_ATTN_KV_L2", "0.5")
    assert plan.kv_kept_in_l2(qwen3, GPU) == [True] * 3 + [False] * 25  # 24 MB of 25
    assert plan.kv_kept_in_l2([2**20, 30 * 2**20, 2**20], GPU) == [True, False, False]  # the first ones only
    assert not any(plan.kv_kept_in_l2(qwen3, CPU))
    monkeypatch.setenv("RUNTIME_ATTN_KV_L2", "1.5")
    with pytest.raises(ValueError, match="RUNTIME_ATTN_KV_L2"):
        plan.kv_kept_in_l2(qwen3, GPU)
