"""Speed-up tables between two benchmark runs (`runtime report DIR --against OTHER`): each run's
medians (report.summarize) matched on model, config, engine and batch size. Pure pandas, as
report.py."""

from __future__ import annotations

from typing import Any

import pandas as pd

from runtime.bench.report import GROUP, METRICS, number_or_none, pivot, summarize

SPEEDUPS = [
    ("E2E tok/s", "e2e_tok_s", True),
    ("Decode tok/s", "decode_tok_s", True),
    ("Per-step latency P50", "step_p50_ms", False),
    ("TTFT", "ttft_ms", False),
]


def compare(new_rows: list[dict], base_rows: list[dict]) -> pd.DataFrame:
    """The new run's summary with the base run's medians beside it (`<metric>_base`), matched on
    model, config, engine and batch size; a speed-up column per SPEEDUPS metric (> 1 = new is faster)."""
    new, base = summarize(new_rows), summarize(base_rows)
    if new.empty or base.empty:
        return new.iloc[0:0]
    merged = new.merge(base[[*GROUP, *METRICS]], on=GROUP, how="left", suffixes=("", "_base"))
    for _, metric, higher in SPEEDUPS:
        a, b = merged[metric], merged[f"{metric}_base"]
        ratio = a / b if higher else b / a
        merged[f"{metric}_speedup"] = ratio.where((a > 0) & (b > 0))
    return merged


def compare_markdown(merged: pd.DataFrame, new_name: str, base_name: str) -> str:
    lines = [
        f"# Speed-up: {new_name} over {base_name}",
        "",
        "Above 1 means the first run is faster (tok/s: new / base; latencies: base / new); medians of trials.",
    ]
    if merged.empty:
        return "\n".join([*lines, "", "_nothing to compare: a run has no completed measurements_"]) + "\n"
    for title, metric, _ in SPEEDUPS:
        lines += [
            "",
            f"## {title}",
            "",
            pivot(merged, lambda r, m=metric: _times(getattr(r, f"{m}_speedup"))),
        ]
    return "\n".join(lines) + "\n"


def _times(value: Any) -> str:
    v = number_or_none(value)
    return "-" if v is None else f"{v:.2f}x"
