"""Report: the log's tables rendered from fixed rows (exact markdown), CSV, notes, speed-ups between
two runs, the output files, and that the report side never imports torch."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd

from runtime.bench.compare import compare, compare_markdown
from runtime.bench.report import (
    header_lines,
    load_run,
    render_summary,
    result_line,
    summarize,
    tables_markdown,
    write_outputs,
)


def row(
    model: str, config: str, trial: int, engine: str = "runtime_graph", weights: str = "checkpoint", **metrics
):
    base = {
        "case_id": f"{model}/{config}/{engine}",
        "model": f"org/{model}",
        "model_name": model,
        "weights": weights,
        "dtype": "bfloat16",
        "device": "cuda",
        "mode": "graph",
        "config": config,
        "engine": engine,
        "batch_size": 1,
        "prompt_tokens": 64 if config == "short" else 256,
        "max_new_tokens": 64 if config == "short" else 256,
        "trial": trial,
        "status": "ok",
        "kv_cache_mb": 64.0,
        "peak_gb": 2.5,
        "mbu": None,
        "floor_ratio": None,
        "step_ms": [1.0, 1.1, 1.2],
    }
    return {**base, **metrics}


def fixed_rows() -> list[dict]:
    rows = []
    for t, (e2e, dec, p50, p95, ttft) in enumerate(
        [(100, 120, 8.0, 9.0, 20), (110, 130, 7.5, 8.5, 22), (90, 110, 8.5, 9.5, 18)]
    ):
        rows.append(
            row(
                "Alpha",
                "short",
                t,
                e2e_tok_s=e2e,
                decode_tok_s=dec,
                step_p50_ms=p50,
                step_p95_ms=p95,
                ttft_ms=ttft,
            )
        )
        rows.append(
            row("Beta", "short", t, weights="random", e2e_tok_s=e2e / 2, decode_tok_s=dec / 2,
                step_p50_ms=p50 * 2, step_p95_ms=p95 * 2, ttft_ms=ttft * 2, kv_cache_mb=32.0, peak_gb=4.0)
        )  # fmt: skip
        rows.append(
            row(
                "Alpha",
                "medium",
                t,
                e2e_tok_s=80.0,
                decode_tok_s=95.0,
                step_p50_ms=10.0,
                step_p95_ms=12.0,
                ttft_ms=50.0,
            )
        )
    # a baseline on medium for Alpha only, and a case skipped on this machine
    rows.append(
        row("Alpha", "medium", 0, engine="transformers_eager", mode="eager", e2e_tok_s=20.0, decode_tok_s=21.0,
            step_p50_ms=45.0, step_p95_ms=50.0, ttft_ms=70.0, kv_cache_mb=None, peak_gb=3.0)
    )  # fmt: skip
    rows.append(
        {
            **row("Alpha", "medium", None, engine="transformers_compile"),
            "status": "skipped",
            "note": "needs CUDA",
        }
    )
    return rows


EXPECTED_TABLES = """\
## E2E tok/s

| config | Alpha | Beta (random) |
|:---|---:|---:|
| short | 100.0 | 50.0 |
| medium | 80.0 | - |
| medium (transformers_eager) | 20.0 | - |

## Decode tok/s

| config | Alpha | Beta (random) |
|:---|---:|---:|
| short | 120.0 | 60.0 |
| medium | 95.0 | - |
| medium (transformers_eager) | 21.0 | - |

## Per-step latency P50 / P95 (ms)

| config | Alpha | Beta (random) |
|:---|---:|---:|
| short | 8.00 / 9.00 | 16.00 / 18.00 |
| medium | 10.00 / 12.00 | - |
| medium (transformers_eager) | 45.00 / 50.00 | - |

## TTFT (ms)

| config | Alpha | Beta (random) |
|:---|---:|---:|
| short | 20.0 | 40.0 |
| medium | 50.0 | - |
| medium (transformers_eager) | 70.0 | - |

## KV cache MB / peak GB

| config | Alpha | Beta (random) |
|:---|---:|---:|
| short | 64.0 / 2.50 | 32.0 / 4.00 |
| medium | 64.0 / 2.50 | - |
| medium (transformers_eager) | - / 3.00 | - |
"""


def test_tables_from_fixed_rows_exactly():
    assert tables_markdown(summarize(fixed_rows())) == EXPECTED_TABLES


def test_mbu_table_appears_when_bandwidth_was_measured():
    rows = [row("Alpha", "short", 0, e2e_tok_s=1.0, mbu=0.6123, floor_ratio=1.634)]
    text = tables_markdown(summarize(rows))
    assert (
        "## MBU / step P50 over the bandwidth floor\n\n| config | Alpha |\n|:---|---:|\n| short | 61.2% / 1.63x |"
        in text
    )
    assert "MBU" not in EXPECTED_TABLES


def test_batch_sizes_label_rows_and_medians_use_every_trial():
    rows = [
        row("Alpha", "short", t, batch_size=4, case_id="b4", e2e_tok_s=v)
        for t, v in enumerate([1.0, 5.0, 3.0, 4.0])
    ]
    summary = summarize(rows)
    assert list(summary["row_label"]) == ["short b4"]
    assert summary["e2e_tok_s"][0] == 3.5 and summary["trials"][0] == 4


def test_summary_header_notes_and_interrupted_filter():
    rows = fixed_rows()
    env = {"suite": "quick", "gpu": "NVIDIA H100", "driver": "550.1", "cuda": "12.4", "torch": "2.5", "transformers": "5.1",
           "commit": "0123456789abcdef", "dirty": False, "seed": 42, "warmup": 2, "trials": 3, "capacity": 512,
           "bandwidth_gbs": 2950.4}  # fmt: skip
    text = render_summary(rows, env)
    assert text.startswith(
        "# Benchmark: quick suite\n\n- device: NVIDIA H100, driver 550.1, CUDA 12.4; torch 2.5"
    )
    assert "commit 0123456789\n" in text
    assert "- copy bandwidth 2950 GB/s, measured in this run (mbu denominator)" in text
    assert "- weights: Alpha checkpoint bfloat16; Beta random bfloat16 (random = shape-only numbers)" in text
    assert "step = CUDA events between replays, no sync per step; transformers baselines: host clock" in text
    assert "- seed 42; warm-up runs 2, timed trials 3 (median shown); KV cache capacity 512 tokens" in text
    assert text.endswith("## Notes\n\n- Alpha / medium / transformers_compile: skipped: needs CUDA\n")
    assert EXPECTED_TABLES.rstrip() in text
    # an interrupted run shows only the cases it completed
    partial = render_summary(
        rows, env, cases={"Beta/short/runtime_graph"}, more_notes=["interrupted: 1 of 5"]
    )
    assert "| short | 50.0 |" in partial and "Alpha |" not in partial
    assert "## Notes\n\n- interrupted: 1 of 5\n" in partial


def test_failed_case_is_noted_until_it_is_measured():
    failed = {**row("Alpha", "short", None), "status": "failed", "note": "OutOfMemoryError: boom"}
    assert "- Alpha / short / runtime_graph: failed: OutOfMemoryError: boom" in render_summary([failed])
    later = row("Alpha", "short", 0, e2e_tok_s=1.0)
    assert "failed" not in render_summary([failed, later])


def test_compare_speedups():
    new = fixed_rows()
    base = [
        {**r, "e2e_tok_s": r.get("e2e_tok_s", 0) * 2, "ttft_ms": (r.get("ttft_ms") or 0) / 2} for r in new
    ]
    merged = compare(new, base)
    text = compare_markdown(merged, "new-run", "old-run")
    assert text.startswith("# Speed-up: new-run over old-run\n")
    assert (
        "## E2E tok/s\n\n| config | Alpha | Beta (random) |\n|:---|---:|---:|\n| short | 0.50x | 0.50x |"
        in text
    )
    assert (
        "## Decode tok/s\n\n| config | Alpha | Beta (random) |\n|:---|---:|---:|\n| short | 1.00x | 1.00x |"
        in text
    )
    assert (
        "## TTFT\n\n| config | Alpha | Beta (random) |\n|:---|---:|---:|\n| short | 0.50x | 0.50x |" in text
    )
    line = json.loads(result_line(merged, run_dir="new"))
    assert line["decode_tok_s_speedup"]["Alpha"]["medium (transformers_eager)"] == 1.0


def test_compare_leaves_unmatched_rows_empty():
    new = [row("Alpha", "short", 0, e2e_tok_s=10.0)]
    base = [row("Alpha", "medium", 0, e2e_tok_s=10.0)]
    text = compare_markdown(compare(new, base), "a", "b")
    assert "| short | - |" in text


def test_result_line_is_one_json_line():
    line = result_line(summarize(fixed_rows()), run_dir="results/x", suite="quick", status="complete")
    assert "\n" not in line
    data = json.loads(line)
    assert data["status"] == "complete"
    assert data["decode_tok_s"] == {
        "Alpha": {"short": 120.0, "medium": 95.0, "medium (transformers_eager)": 21.0},
        "Beta (random)": {"short": 60.0},
    }


def test_write_outputs_and_reload(tmp_path):
    rows = fixed_rows()
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "env.json").write_text(json.dumps({"suite": "quick"}))
    loaded_rows, env = load_run(tmp_path)
    assert loaded_rows == rows and env == {"suite": "quick"}
    markdown = write_outputs(tmp_path, loaded_rows, env)
    assert (tmp_path / "summary.md").read_text() == markdown
    csv = pd.read_csv(tmp_path / "summary.csv")
    assert list(csv["config"]) == ["short", "short", "medium", "medium"]
    alpha_short = csv[(csv["model_name"] == "Alpha") & (csv["config"] == "short")].iloc[0]
    assert (alpha_short["e2e_tok_s"], alpha_short["trials"], alpha_short["weights"]) == (
        100.0,
        3,
        "checkpoint",
    )
    for name in ("tok_s.png", "step_latency.png", "ttft.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_side_never_imports_torch():
    code = "import sys, runtime.bench.report, runtime.bench.plots, runtime.bench.rows; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_rows_from_several_cards_are_flagged_in_the_header():
    rows = fixed_rows()
    assert not any("MIXED CARDS" in line for line in header_lines({}, rows))
    for i, row in enumerate(rows):
        row["gpu"] = "NVIDIA H200" if i == 0 else "NVIDIA H100 80GB HBM3"
    mixed = [line for line in header_lines({}, rows) if "MIXED CARDS" in line]
    assert len(mixed) == 1 and "NVIDIA H200 (1 rows)" in mixed[0] and "NVIDIA H100 80GB HBM3" in mixed[0]
