"""Benchmark arithmetic and prompts: percentiles, live KV bytes (sliding windows capped), mbu and the
bandwidth floor, and prompts that are exact, deterministic and free of special tokens."""

from __future__ import annotations

import math

import pytest
from tiny_configs import tiny_config

from runtime.bench.metrics import Measurement, live_kv_bytes, percentile, trial_metrics
from runtime.bench.prompts import make_prompts, special_ids, usable_vocab
from runtime.models.spec import ModelSpec


def test_percentile_interpolates_like_numpy():
    values = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert percentile(values, 50) == 3.0
    assert percentile(values, 95) == pytest.approx(4.8)
    assert percentile([7.0], 95) == 7.0
    assert math.isnan(percentile([], 50))


def test_live_kv_bytes_caps_sliding_layers_at_their_window():
    spec = ModelSpec.from_hf(tiny_config("gemma3"))  # 3 sliding layers (window 8) + 1 global, Hkv 1, D 32
    assert spec.sliding_window == (8, 8, 8, None)
    per_token = 2 * 1 * 32 * 2  # k and v, batch 1, bf16
    # prompt 10, steps attend to 11 and 12 positions: sliding layers read 8 each, the global one 11.5
    expected = per_token * (3 * 8 + (11 + 12) / 2)
    assert live_kv_bytes(spec, 10, 2, 1, 2) == expected
    assert live_kv_bytes(spec, 10, 2, 4, 2) == 4 * expected
    assert live_kv_bytes(spec, 10, 0, 1, 2) == 0.0


def test_trial_metrics_with_bandwidth():
    m = Measurement(
        tokens=[[1, 2, 3, 4, 5]], ttft_ms=20.0, step_ms=[2.0, 2.0, 3.0, 5.0], decode_ms=10.0, total_ms=30.0
    )
    row = trial_metrics(m, weight_bytes=1_000_000, kv_bytes_per_step=0.0, bandwidth_gbs=1.0)
    assert row["generated_tokens"] == 5
    assert row["e2e_tok_s"] == pytest.approx(5 / 0.030)
    assert row["decode_tok_s"] == pytest.approx(4 / 0.010)
    assert (row["step_p50_ms"], row["step_mean_ms"]) == (2.5, 3.0)
    # 1 MB per step at 1 GB/s: floor 1 ms; 4 steps in 10 ms = 400 steps/s -> 0.4 GB/s -> mbu 0.4
    assert row["floor_ms"] == pytest.approx(1.0)
    assert row["mbu"] == pytest.approx(0.4)
    assert row["floor_ratio"] == pytest.approx(2.5)


def test_trial_metrics_without_bandwidth_or_steps():
    m = Measurement(tokens=[[9], [8]], ttft_ms=5.0, step_ms=[], decode_ms=0.0, total_ms=10.0)
    row = trial_metrics(m, weight_bytes=10, kv_bytes_per_step=2.0, bandwidth_gbs=None)
    assert row["e2e_tok_s"] == pytest.approx(200.0)  # two rows, one token each
    assert row["decode_tok_s"] is None and row["step_p50_ms"] is None and row["step_p95_ms"] is None
    assert row["mbu"] is None and row["floor_ms"] is None and row["bytes_per_step"] == 12.0


class FakeTokenizer:
    all_special_ids = [0, 3]
    added_tokens_decoder = {5: type("T", (), {"special": True})(), 6: type("T", (), {"special": False})()}

    def __len__(self) -> int:
        return 40


def test_special_ids_and_usable_vocab():
    assert special_ids([2], 1, None) == {1, 2}
    assert special_ids((2, 7), None, FakeTokenizer()) == {0, 2, 3, 5, 7}
    assert usable_vocab(64, FakeTokenizer()) == 40 and usable_vocab(64, None) == 64


def test_prompts_are_exact_deterministic_and_special_free():
    exclude = {0, 1, 2, 3, 5}
    prompts = make_prompts(3, 500, 12, exclude, seed=42)
    assert [len(p) for p in prompts] == [500, 500, 500]
    assert all(0 <= t < 12 and t not in exclude for p in prompts for t in p)
    assert make_prompts(3, 500, 12, exclude, seed=42) == prompts
    assert make_prompts(3, 500, 12, exclude, seed=43) != prompts
    assert prompts[0] != prompts[1]  # rows differ
    assert make_prompts(1, 500, 12, exclude, seed=42)[0] == prompts[0]  # a row does not depend on the batch
    assert set(prompts[0]) == set(range(12)) - exclude  # every allowed id can appear


def test_prompts_refuse_an_all_special_vocab():
    with pytest.raises(ValueError, match="every id"):
        make_prompts(1, 4, 3, {0, 1, 2}, seed=0)
