"""The decode-speed goal rows of one `runtime bench configs/goals.yaml` run, as a table.

  python3 scripts/goal_rows.py results/2026-11-27-goals11-h100 [--out goal_rows.md]

Each row: the goal, its target, the measured values per model (medians over the run's trials), and
whether every model meets it. Read from the run folder's summary.csv (step medians, floor ratios)
and rows.jsonl (per-step times and each trial's TTFT):
  step         medium's step median over the floor (weight + live KV bytes / measured copy bandwidth)
  gpt-fast     Llama's medium step against gpt-fast's 1.48 ms on the H100
  sampled      sampled and full_pipe steps against medium's greedy step
  long         the step near position 2000 (long: 1024 + 1024) against the step near position 300
               (medium: 256 + 256), each the median of the 32 steps around it, then over trials
  TTFT         the prefill config's time to first token (1024-token prompt), Llama
  batch 16     medium_b16's step against medium's
  start-up     with --startup LOG (scripts/startup_check.py's output, which a goals run does not
               measure): the first start's load from local safetensors + capture, the slowest such
               start in the log (a fresh Triton cache where the log has one)
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path

LLAMA = "meta-llama/Llama-3.2-1B-Instruct"
GPT_FAST_MS = 1.48  # gpt-fast's Llama-3.2-1B step on the H100 (the baseline)
STARTUP_S = 10.0  # the start-up goal: load from local safetensors + capture of every bucket
WINDOW = 32  # steps around a position whose median stands for it


def _summary(folder: Path) -> dict[tuple[str, str], dict]:
    with open(folder / "summary.csv") as f:
        return {(r["model"], r["config"]): r for r in csv.DictReader(f)}


def _rows(folder: Path) -> list[dict]:
    with open(folder / "rows.jsonl") as f:
        return [r for r in map(json.loads, f) if r.get("status") == "ok"]


def step_near(rows: list[dict], model: str, config: str, position: int) -> float | None:
    """Median over trials of the median step (ms) of the WINDOW steps around `position`; step i of
    a trial feeds the token at position prompt_tokens + i."""
    medians = []
    for r in rows:
        if r["model"] != model or r["config"] != config or not r.get("step_ms"):
            continue
        i = position - r["prompt_tokens"]
        window = r["step_ms"][max(0, i - WINDOW // 2) : i + WINDOW // 2]
        if len(window) == WINDOW:
            medians.append(statistics.median(window))
    return statistics.median(medians) if medians else None


def ttft(rows: list[dict], model: str, config: str) -> tuple[float | None, list[float]]:
    """(median, each trial's) time to first token in ms."""
    values = [r["ttft_ms"] for r in rows if r["model"] == model and r["config"] == config]
    return (statistics.median(values) if values else None), values


def first_start(log: Path) -> dict | None:
    """The slowest first start from local safetensors among startup_check.py's JSON lines in `log`
    (a fresh Triton cache's where there is one), or None where the log holds none."""
    starts = []
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            start = json.loads(line)
            if start.get("start") == "first" and start.get("loader") == "safetensors":
                starts.append(start)
    fresh = [s for s in starts if s.get("fresh_triton_cache")] or starts
    return max(fresh, key=lambda s: s["load_plus_capture_s"]) if fresh else None


def goal_rows(folder: Path, start: dict | None = None) -> tuple[list[str], list[list[str]]]:
    """-> (header, body) of the goal table for the run in `folder`, with the start-up row where
    `start` is a first start (first_start) of one of the run's models."""
    summary, rows = _summary(folder), _rows(folder)
    models = list(dict.fromkeys(m for m, _ in summary))

    def step(model: str, config: str) -> float | None:
        r = summary.get((model, config))
        return float(r["step_p50_ms"]) if r and r["step_p50_ms"] else None

    def row(goal: str, target: str, values: dict[str, float | None], fmt, ok) -> list[str]:
        cells = [fmt(values[m]) if values.get(m) is not None else "-" for m in models]
        missed = [m.split("/")[-1] for m in models if values.get(m) is not None and not ok(values[m])]
        known = any(values.get(m) is not None for m in models)
        state = "-" if not known else f"not met ({', '.join(missed)})" if missed else "met"
        return [goal, target, *cells, state]

    body = []
    floor = {m: float(summary[(m, "medium")]["floor_ratio"]) for m in models if (m, "medium") in summary}
    body.append(row("step, medium, greedy", "<= 1.15x floor", floor, "{:.3f}x".format, lambda v: v <= 1.15))
    if LLAMA in models:
        llama = {LLAMA: step(LLAMA, "medium")}
        body.append(
            row(
                "pass gpt-fast (Llama)",
                f"< {GPT_FAST_MS} ms",
                llama,
                "{:.3f} ms".format,
                lambda v: v < GPT_FAST_MS,
            )
        )
    for config in ("sampled", "full_pipe"):
        over = {m: _ratio(step(m, config), step(m, "medium")) for m in models}
        body.append(row(f"{config} vs greedy", "<= +3%", over, _percent, lambda v: v <= 1.03))
    long = {m: _ratio(step_near(rows, m, "long", 2000), step_near(rows, m, "medium", 300)) for m in models}
    body.append(row("long: position 2000 vs 300", "<= +5%", long, _percent, lambda v: v <= 1.05))
    if LLAMA in models:
        median, trials = ttft(rows, LLAMA, "prefill")
        cells = row(
            "TTFT, 1024-token prompt (Llama)",
            "<= 6 ms",
            {LLAMA: median},
            "{:.2f} ms".format,
            lambda v: v <= 6.0,
        )
        cells[2 + models.index(LLAMA)] += " (trials " + " / ".join(f"{t:.2f}" for t in trials) + ")"
        body.append(cells)
    b16 = {m: _ratio(step(m, "medium_b16"), step(m, "medium")) for m in models}
    body.append(row("batch 16 vs batch 1", "<= 1.3x", b16, "{:.4f}x".format, lambda v: v <= 1.3))
    if start:
        model = start["model"]
        cells = row(
            f"start-up ({model.split('/')[-1]}: load + capture)",
            f"<= {STARTUP_S:g} s",
            {model: start["load_plus_capture_s"]},
            "{:.2f} s".format,
            lambda v: v <= STARTUP_S,
        )
        cache = "empty" if start.get("fresh_triton_cache") else "warm"
        cells[2 + models.index(model)] += f" (first start, {cache} Triton cache, {start['graphs']} graphs)"
        body.append(cells)
    header = ["goal row", "target", *[m.split("/")[-1] for m in models], "state"]
    return header, body


def _ratio(value: float | None, base: float | None) -> float | None:
    """value / base, None where either is missing."""
    return None if value is None or not base else value / base


def _percent(ratio: float) -> str:
    """Two decimals, so a value just past its line does not print as the line (+5.01%, not +5.0%)."""
    return f"{100 * (ratio - 1):+.2f}%"


def markdown(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in body]) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a folder written by `runtime bench configs/goals.yaml`")
    ap.add_argument("--out", type=Path, help="also write the table here")
    ap.add_argument("--startup", type=Path, help="a scripts/startup_check.py log: adds the start-up row")
    args = ap.parse_args()
    for name in ("summary.csv", "rows.jsonl"):
        if not (args.run / name).is_file():
            raise SystemExit(f"{args.run / name} is missing: pass a folder written by runtime bench --out")
    start = None
    if args.startup:
        start = first_start(args.startup) if args.startup.is_file() else None
        if not start:
            raise SystemExit(
                f"{args.startup} holds no first start from safetensors: pass startup_check.py's output"
            )
        if start["model"] not in {model for model, _ in _summary(args.run)}:
            raise SystemExit(f"{args.startup} times {start['model']}, which {args.run} did not run")
    table = markdown(*goal_rows(args.run, start))
    print(table, end="")
    if args.out:
        args.out.write_text(table)


if __name__ == "__main__":
    main()
