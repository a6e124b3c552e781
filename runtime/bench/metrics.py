"""Per-trial metrics of DESIGN.md section 8, as plain numbers (no torch: this is arithmetic on what
an engine measured).

  e2e_tok_s      generated tokens (all rows) / total time
  decode_tok_s   tokens after each row's first / decode time (first token -> last, on the host)
  step_p50_ms    per decode step, CUDA events between replays on a GPU (host clock on a CPU)
  mbu            bytes one step reads (weights incl. LM head + live KV) x steps/s / copy bandwidth
  floor_ms       the step time at copy bandwidth: bytes per step / bandwidth
  floor_ratio    step_p50_ms / floor_ms (1.0 = at the memory floor)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from runtime.models.spec import ModelSpec


@dataclass
class Measurement:
    """What one engine run observed, before any arithmetic."""

    tokens: list[list[int]]  # per row, generated ids
    ttft_ms: float
    step_ms: list[float]
    decode_ms: float
    total_ms: float


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def live_kv_bytes(spec: ModelSpec, prompt_tokens: int, steps: int, batch: int, elem_bytes: int) -> float:
    """Mean KV bytes one decode step reads. Step i (1-based) attends to prompt_tokens + i positions;
    a sliding layer never reads more than its window."""
    if steps < 1:
        return 0.0
    per_token = 2 * batch * spec.kv_heads * spec.head_dim * elem_bytes  # k and v, every row
    total = 0
    for window in spec.sliding_window:
        for i in range(1, steps + 1):
            length = prompt_tokens + i
            total += min(length, window) if window else length
    return per_token * total / steps


def trial_metrics(
    m: Measurement, *, weight_bytes: int, kv_bytes_per_step: float, bandwidth_gbs: float | None
) -> dict[str, float | int | None]:
    generated = sum(len(t) for t in m.tokens)
    after_first = sum(max(len(t) - 1, 0) for t in m.tokens)
    steps = max((len(t) - 1 for t in m.tokens), default=0)
    decode_s, total_s = m.decode_ms / 1e3, m.total_ms / 1e3
    step_p50 = percentile(m.step_ms, 50)
    row: dict[str, float | int | None] = {
        "generated_tokens": generated,
        "ttft_ms": m.ttft_ms,
        "e2e_tok_s": generated / total_s if total_s > 0 else None,
        "decode_tok_s": after_first / decode_s if decode_s > 0 and after_first else None,
        "step_p50_ms": None if math.isnan(step_p50) else step_p50,
        "step_p95_ms": None if not m.step_ms else percentile(m.step_ms, 95),
        "step_mean_ms": None if not m.step_ms else sum(m.step_ms) / len(m.step_ms),
        "decode_ms": m.decode_ms,
        "total_ms": m.total_ms,
        "bytes_per_step": weight_bytes + kv_bytes_per_step,
        "mbu": None,
        "floor_ms": None,
        "floor_ratio": None,
    }
    if bandwidth_gbs:
        bytes_per_step = weight_bytes + kv_bytes_per_step
        floor_ms = bytes_per_step / (bandwidth_gbs * 1e9) * 1e3
        row["floor_ms"] = floor_ms
        if steps and decode_s > 0:
            row["mbu"] = bytes_per_step * (steps / decode_s) / (bandwidth_gbs * 1e9)
        if row["step_p50_ms"] is not None:
            row["floor_ratio"] = row["step_p50_ms"] / floor_ms
    return row
