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


def test_the_merge_takes_16_column_chunks_up_to_d_128_where_heads_leave_sms_idle(monkeypatch):
    """auto: at batch 1 Llama's 32 heads of D = 64 in 4 chunks, Qwen3's 16 of D = 128 in 8, Gemma's 4
    of D = 256 in 4 (8 timed slower there); heads that fill the card in one; a forced count wins."""
    monkeypatch.delenv("RUNTIME_ATTN_MERGE_CHUNKS", raising=False)
    assert plan.merge_block_d(32, 64, GPU) == 16
    assert plan.merge_block_d(16, 128, GPU) == 16
    assert plan.merge_block_d(4, 256, GPU) == 64
    assert plan.merge_block_d(16 * 16, 128, GPU) == 128  # batch 16: 256 heads
    monkeypatch.setenv("RUNTIME_ATTN_MERGE_CHUNKS", "4")
    assert plan.merge_block_d(16, 128, GPU) == 32


def test_a_merge_tile_of_512_values_takes_one_warp(monkeypatch):
    """One warp for batch 1's 16-column chunks (32 partials x 16 columns), 4 for wider tiles (Gemma's
    16 x 64); RUNTIME_MERGE_WARPS forces a count."""
    monkeypatch.delenv("RUNTIME_MERGE_WARPS", raising=False)
    assert plan.merge_warps(plan.merge_block(128, 32), 16) == 1
    assert plan.merge_warps(plan.merge_block(256, 64), 64) == 4
    monkeypatch.setenv("RUNTIME_MERGE_WARPS", "8")
    assert plan.merge_warps(32, 16) == 8


def test_v_moves_late_at_batch_one_by_default(monkeypatch):
    """RUNTIME_ATTN_V_MOVE: "auto" moves the first block's V after the scores at batch 1 only;
    "early" and "late" force either order at every batch; other values are refused by name."""
    monkeypatch.delenv("RUNTIME_ATTN_V_MOVE", raising=False)
    assert plan.late_v(1) and not plan.late_v(16)
    monkeypatch.setenv("RUNTIME_ATTN_V_MOVE", "early")
    assert not plan.late_v(1) and not plan.late_v(16)
    monkeypatch.setenv("RUNTIME_ATTN_V_MOVE", "late")
    assert plan.late_v(1) and plan.late_v(16)
    monkeypatch.setenv("RUNTIME_ATTN_V_MOVE", "later")
    with pytest.raises(ValueError, match="RUNTIME_ATTN_V_MOVE"):
        plan.late_v(1)


def test_blocks_asked_ahead(monkeypatch):
    """RUNTIME_ATTN_AHEAD: by default ("batch") 2 blocks where a batch bucket's program walks its
    row's whole cache, none elsewhere, and never more than half the card's L2 holds over the grid;
    "auto" asks for that budget (Qwen3 at batch 16: 128 programs of 32 KB blocks on a 50 MB L2 -> 6;
    Llama's 16 KB blocks -> 12; nothing without an L2); a count is taken as given; a bad value is
    refused by name."""
    monkeypatch.setattr(plan, "INTERPRETING", False)
    monkeypatch.setattr(plan, "l2_bytes", lambda device: 50 * 2**20 if device.type != "cpu" else 0)
    qwen3, llama = 2 * 64 * 128 * 2, 2 * 64 * 64 * 2
    monkeypatch.delenv("RUNTIME_ATTN_AHEAD", raising=False)
    assert plan.l2_ahead(128, qwen3, GPU, True) == 2
    assert plan.l2_ahead(128, qwen3, GPU, False) == 0
    assert plan.l2_ahead(600, qwen3, GPU, True) == 1  # 600 x 32 KB: one block each fits half of L2, two not
    assert plan.l2_ahead(128, qwen3, CPU, True) == 0
    monkeypatch.setenv("RUNTIME_ATTN_AHEAD", "auto")
    assert plan.l2_ahead(128, qwen3, GPU, False) == 6
    assert plan.l2_ahead(128, llama, GPU, True) == 12
    assert plan.l2_ahead(128, qwen3, CPU, True) == 0
    monkeypatch.setenv("RUNTIME_ATTN_AHEAD", "3")
    assert plan.l2_ahead(128, qwen3, GPU, False) == 3
    monkeypatch.setattr(plan, "INTERPRETING", True)  # inline PTX: never interpreted
    assert plan.l2_ahead(128, qwen3, GPU, True) == 0
    monkeypatch.setenv("RUNTIME_ATTN_AHEAD", "-1")
    with pytest.raises(ValueError, match="RUNTIME_ATTN_AHEAD"):
        plan.l2_ahead(128, 1, GPU, True)


def test_wide_blocks_for_one_split_batch_buckets(monkeypatch):
    """RUNTIME_ATTN_WIDE_BLOCKS (an A/B): "batch" gives D = 64 (128-byte rows) 128-slot blocks where
    a batch bucket's pairs fill the card, "1" at every batch, and never to wider rows; a bad value is
    refused by name."""
    monkeypatch.setenv("RUNTIME_ATTN_WIDE_BLOCKS", "batch")
    assert plan.split_plan(16, 8, 4096, 64, 2, GPU) == (128, 1)
    assert plan.split_plan(1, 8, 4096, 64, 2, GPU)[0] == 64
    assert plan.split_plan(8, 8, 4096, 64, 2, GPU)[0] == 64  # 64 pairs: spread, not one split
    assert plan.split_plan(16, 8, 4096, 128, 2, GPU) == (64, 1)
    monkeypatch.setenv("RUNTIME_ATTN_WIDE_BLOCKS", "1")
    assert plan.split_plan(1, 8, 4096, 64, 2, GPU)[0] == 128
    monkeypatch.setenv("RUNTIME_ATTN_WIDE_BLOCKS", "wide")
    with pytest.raises(ValueError, match="RUNTIME_ATTN_WIDE_BLOCKS"):
        plan.split_plan(16, 8, 4096, 64, 2, GPU)
