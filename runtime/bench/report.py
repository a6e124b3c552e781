"""Rows -> the benchmark log's tables (markdown) and summary.csv (speed-ups between two runs:
compare.py).

Pure pandas: this file never imports torch, so a run folder can be re-rendered anywhere.
Tables: rows = configs (with the batch size when it is not 1, and the engine when it is not the
run's main one), one column per model (marked "(random)" for random weights), medians of trials.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pandas as pd

GROUP = ["model", "config", "engine", "batch_size"]
METRICS = [
    "e2e_tok_s",
    "decode_tok_s",
    "step_p50_ms",
    "step_p95_ms",
    "ttft_ms",
    "kv_cache_mb",
    "peak_gb",
    "load_s",
    "capture_s",
    "mbu",
    "floor_ms",
    "floor_ratio",
    "bandwidth_gbs",
    "generated_tokens",
]
FIRST = ["model_name", "weights", "dtype", "device", "mode", "prompt_tokens", "max_new_tokens"]
CSV_COLUMNS = ["model", *FIRST, "config", "engine", "batch_size", "trials", *METRICS]


def number_or_none(value: Any) -> float | None:
    """value as a float, or None where it is missing, not a number, or NaN (an empty table cell)."""
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def _fmt(spec: str) -> Callable[[Any], str]:
    def fmt(value: Any) -> str:
        v = number_or_none(value)
        return "-" if v is None else format(v, spec)

    return fmt


def main_engine(rows: list[dict]) -> str | None:
    """The engine with the most measured trials (ties: the first seen): its rows carry bare names."""
    counts: dict[str, int] = {}
    for r in rows:
        if r.get("status") == "ok":
            counts[r["engine"]] = counts.get(r["engine"], 0) + 1
    return max(counts, key=lambda e: counts[e]) if counts else None


def summarize(rows: list[dict], cases: set[str] | None = None) -> pd.DataFrame:
    """One line per (model, config, engine, batch): medians of every metric over its ok trials.

    cases: keep only these case ids (an interrupted run shows completed cases only)."""
    ok = [r for r in rows if r.get("status") == "ok" and (cases is None or r.get("case_id") in cases)]
    if not ok:
        return pd.DataFrame(columns=[*CSV_COLUMNS, "model_label", "row_label"])
    df = pd.DataFrame(ok)
    for col in METRICS + FIRST:
        if col not in df:
            df[col] = None
    for col in METRICS:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    grouped = df.groupby(GROUP, sort=False, dropna=False)
    out = grouped[METRICS].median()
    out = out.join(grouped[FIRST].first()).join(grouped.size().rename("trials")).reset_index()

    primary = main_engine(ok)
    config_order = {c: i for i, c in enumerate(dict.fromkeys(df["config"]))}
    engine_order = {e: i for i, e in enumerate(dict.fromkeys([primary, *df["engine"]]))}
    out["model_label"] = [
        f"{name} (random)" if weights == "random" else name
        for name, weights in zip(out["model_name"], out["weights"])
    ]
    out["row_label"] = [
        config + (f" b{batch}" if batch != 1 else "") + (f" ({engine})" if engine != primary else "")
        for config, batch, engine in zip(out["config"], out["batch_size"], out["engine"])
    ]
    out["_order"] = [
        (config_order[c], engine_order[e], int(b))
        for c, e, b in zip(out["config"], out["engine"], out["batch_size"])
    ]
    model_order = {m: i for i, m in enumerate(dict.fromkeys(out["model_label"]))}
    out["_model_order"] = out["model_label"].map(model_order)
    out = out.sort_values(["_order", "_model_order"], kind="stable").drop(columns=["_order", "_model_order"])
    return out.reset_index(drop=True)


def markdown_table(header: list[str], body: list[list[str]]) -> str:
    """A GitHub markdown table: first column left-aligned, the numbers right-aligned."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines)


def pivot(summary: pd.DataFrame, cell: Callable[[pd.Series], str], corner: str = "config") -> str:
    """Rows = row labels, columns = models, in first-seen order; '-' where a model lacks a row."""
    labels = list(dict.fromkeys(summary["row_label"]))
    models = list(dict.fromkeys(summary["model_label"]))
    cells = {(r.row_label, r.model_label): cell(r) for r in summary.itertuples(index=False)}
    body = [[label, *(cells.get((label, m), "-") for m in models)] for label in labels]
    return markdown_table([corner, *models], body)


_ONE = {"tok": _fmt(".1f"), "ms": _fmt(".2f"), "ttft": _fmt(".1f"), "mb": _fmt(".1f"), "gb": _fmt(".2f")}
TABLES: list[tuple[str, Callable[[Any], str]]] = [
    ("E2E tok/s", lambda r: _ONE["tok"](r.e2e_tok_s)),
    ("Decode tok/s", lambda r: _ONE["tok"](r.decode_tok_s)),
    (
        "Per-step latency P50 / P95 (ms)",
        lambda r: f"{_ONE['ms'](r.step_p50_ms)} / {_ONE['ms'](r.step_p95_ms)}",
    ),
    ("TTFT (ms)", lambda r: _ONE["ttft"](r.ttft_ms)),
    ("KV cache MB / peak GB", lambda r: f"{_ONE['mb'](r.kv_cache_mb)} / {_ONE['gb'](r.peak_gb)}"),
]
MBU_TABLE = (
    "MBU / step P50 over the bandwidth floor",
    lambda r: f"{_fmt('.1%')(r.mbu)} / {_fmt('.2f')(r.floor_ratio)}x",
)


def tables_markdown(summary: pd.DataFrame) -> str:
    """The log's tables, one section each; MBU only where a bandwidth was measured (a GPU)."""
    if summary.empty:
        return "_no completed measurements_\n"
    tables = list(TABLES)
    if summary["mbu"].notna().any():
        tables.append(MBU_TABLE)
    return "\n\n".join(f"## {title}\n\n{pivot(summary, cell)}" for title, cell in tables) + "\n"


def notes(rows: list[dict], summary: pd.DataFrame) -> list[str]:
    """Skipped and failed cases (once each, unless later measured) and engine notes."""
    measured = set(zip(summary["model"], summary["config"], summary["engine"], summary["batch_size"]))
    out: list[str] = []
    for r in rows:
        status, note = r.get("status"), r.get("note")
        if not note:
            continue
        key = (r.get("model"), r.get("config"), r.get("engine"), r.get("batch_size"))
        who = f"{r.get('model_name', r.get('model'))} / {r.get('config')} / {r.get('engine')}"
        if status in ("skipped", "failed") and key not in measured:
            line = f"{who}: {status}: {note}"
        elif status == "ok":
            line = f"{who}: {note}"
        else:
            continue
        if line not in out:
            out.append(line)
    return out


def header_lines(env: dict[str, Any], rows: list[dict]) -> list[str]:
    lines = []
    if env:
        device = env.get("gpu") or "CPU"
        parts = [device]
        if env.get("driver"):
            parts.append(f"driver {env['driver']}")
        if env.get("cuda") and env.get("gpu"):
            parts.append(f"CUDA {env['cuda']}")
        commit = (env.get("commit") or "unknown")[:10] + ("+dirty" if env.get("dirty") else "")
        lines.append(
            f"- device: {', '.join(parts)}; torch {env.get('torch')}, transformers {env.get('transformers')}; "
            f"commit {commit}"
        )
        lines.append(
            f"- seed {env.get('seed')}; warm-up runs {env.get('warmup')}, timed trials {env.get('trials')} "
            f"(median shown); KV cache capacity {env.get('capacity')} tokens"
        )
        if env.get("bandwidth_gbs"):
            lines.append(
                f"- copy bandwidth {env['bandwidth_gbs']:.0f} GB/s, measured in this run (mbu denominator)"
            )
    ok = [r for r in rows if r.get("status") == "ok"]
    weights = dict.fromkeys(f"{r['model_name']} {r.get('weights')} {r.get('dtype')}" for r in ok)
    if weights:
        lines.append(f"- weights: {'; '.join(weights)} (random = shape-only numbers)")
    cards = Counter(r["gpu"] for r in ok if r.get("gpu"))
    if len(cards) > 1:  # a run resumed on another card: its rows are not comparable across cards
        listed = ", ".join(f"{gpu} ({n} rows)" for gpu, n in cards.items())
        lines.append(f"- MIXED CARDS: rows come from {listed}; compare rows of one card only")
    cuda = any(r.get("device") == "cuda" for r in ok)
    clock = "CUDA events between replays, no sync per step" if cuda else "host clock (CPU)"
    if any(str(r.get("engine", "")).startswith("transformers") for r in ok):
        clock += "; transformers baselines: host clock per token (they sync every step)"
    lines.append(
        "- timed: TTFT = request start to the first token on the host; decode = first to last token on "
        f"the host; step = {clock}. Not timed: load, capture, warm-ups. MB = 2^20 B, GB = 2^30 B"
    )
    return lines


def render_summary(
    rows: list[dict],
    env: dict[str, Any] | None = None,
    title: str | None = None,
    cases: set[str] | None = None,
    more_notes: list[str] | None = None,
) -> str:
    """The whole summary.md: title, scope, the tables, notes (skips, failures, fallbacks)."""
    env = env or {}
    summary = summarize(rows, cases)
    title = title or f"Benchmark: {env.get('suite', 'ad hoc')} suite"
    parts = [f"# {title}", "\n".join(header_lines(env, rows)), tables_markdown(summary).rstrip()]
    extra = [*(more_notes or []), *notes(rows, summary)]
    if extra:
        parts.append("## Notes\n\n" + "\n".join(f"- {n}" for n in extra))
    return "\n\n".join(p for p in parts if p) + "\n"


def summary_csv(summary: pd.DataFrame) -> str:
    return summary.reindex(columns=CSV_COLUMNS).to_csv(index=False, float_format="%.6g")


def _by_model(summary: pd.DataFrame, column: str) -> dict[str, dict[str, float | None]]:
    out: dict[str, dict[str, float | None]] = {}
    for r in summary.itertuples(index=False):
        v = number_or_none(getattr(r, column))
        out.setdefault(r.model_label, {})[r.row_label] = None if v is None else round(v, 3)
    return out


def result_line(summary: pd.DataFrame, **fields: Any) -> str:
    """The machine-readable last line: run facts plus one metric per model and row (decode tok/s,
    or for a comparison the decode speed-up)."""
    column = "decode_tok_s_speedup" if "decode_tok_s_speedup" in summary else "decode_tok_s"
    return json.dumps(
        {**fields, column: _by_model(summary, column) if not summary.empty else {}}, default=str
    )


def load_run(folder: Path) -> tuple[list[dict], dict[str, Any]]:
    """rows.jsonl and env.json of a run folder (no torch: read with the json module)."""
    from runtime.bench.rows import ROWS_FILE, read_rows
    from runtime.errors import RuntimeUserError

    rows_path = folder / ROWS_FILE
    if not folder.is_dir():
        raise RuntimeUserError(f"{folder}: no such run folder")
    if not rows_path.exists():
        raise RuntimeUserError(f"{folder}: not a benchmark run (no {ROWS_FILE})")
    env_path = folder / "env.json"
    env = json.loads(env_path.read_text()) if env_path.exists() else {}
    return read_rows(rows_path), env


def write_outputs(
    folder: Path,
    rows: list[dict],
    env: dict[str, Any],
    cases: Iterable[str] | None = None,
    more_notes: list[str] | None = None,
) -> str:
    """summary.md, summary.csv and the plots into the run folder; returns the markdown."""
    from runtime.bench.plots import write_plots

    keep = set(cases) if cases is not None else None
    markdown = render_summary(rows, env, cases=keep, more_notes=more_notes)
    summary = summarize(rows, keep)
    (folder / "summary.md").write_text(markdown)
    (folder / "summary.csv").write_text(summary_csv(summary))
    write_plots(folder, [r for r in rows if keep is None or r.get("case_id") in keep], summary)
    return markdown
