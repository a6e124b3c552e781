"""scripts/goal_rows.py on a synthetic goals run: each goal row's value and state, the position
windows of the long row, and a clear exit for a folder that is not a run."""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent.parent / "scripts" / "goal_rows.py"
LLAMA, QWEN = "meta-llama/Llama-3.2-1B-Instruct", "Qwen/Qwen3-1.7B"


def _module():
    spec = importlib.util.spec_from_file_location("goal_rows", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(folder: Path) -> None:
    """Two models. Llama: 1.0 ms greedy at 1.2x floor, sampled +2%, b16 1.29x, TTFT trials 5 / 9 /
    5.5 ms, steps that slow from 1.0 to 1.04 ms between positions 300 and 2000. Qwen3: 1.5 ms at
    1.1x, sampled +4%, b16 1.45x, long +10%."""
    summary = {
        (LLAMA, "medium"): (1.0, 1.2), (LLAMA, "sampled"): (1.02, 1.22), (LLAMA, "full_pipe"): (1.02, 1.22),
        (LLAMA, "medium_b16"): (1.29, 1.5), (QWEN, "medium"): (1.5, 1.1), (QWEN, "sampled"): (1.56, 1.15),
        (QWEN, "full_pipe"): (1.5, 1.1), (QWEN, "medium_b16"): (2.175, 1.6),
    }  # fmt: skip
    with open(folder / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["model", "config", "step_p50_ms", "floor_ratio"])
        w.writeheader()
        for (model, config), (step, ratio) in summary.items():
            w.writerow(dict(model=model, config=config, step_p50_ms=step, floor_ratio=ratio))
    rows = []
    for model, base, slow in ((LLAMA, 1.0, 1.04), (QWEN, 1.5, 1.65)):
        for _ in range(3):
            # medium: 256 + 256 at `base`, one outlier step near position 300 that the median ignores
            medium = [base] * 256
            medium[300 - 256] = 50.0
            rows.append(dict(model=model, config="medium", status="ok", prompt_tokens=256, step_ms=medium))
            long = [base] * 900 + [slow] * 124  # positions 1924..2047 at `slow`
            rows.append(dict(model=model, config="long", status="ok", prompt_tokens=1024, step_ms=long))
        for ms in (5.0, 9.0, 5.5) if model == LLAMA else (8.0,):
            rows.append(dict(model=model, config="prefill", status="ok", prompt_tokens=1024, ttft_ms=ms))
    rows.append(dict(model=LLAMA, config="prefill", status="failed", prompt_tokens=1024, ttft_ms=99.0))
    (folder / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_goal_rows_values_and_states(tmp_path):
    gr = _module()
    _run(tmp_path)
    header, body = gr.goal_rows(tmp_path)
    assert header == ["goal row", "target", "Llama-3.2-1B-Instruct", "Qwen3-1.7B", "state"]
    table = {r[0]: r[2:] for r in body}
    assert table["step, medium, greedy"] == ["1.200x", "1.100x", "not met (Llama-3.2-1B-Instruct)"]
    assert table["pass gpt-fast (Llama)"] == ["1.000 ms", "-", "met"]
    assert table["sampled vs greedy"] == ["+2.00%", "+4.00%", "not met (Qwen3-1.7B)"]
    assert table["full_pipe vs greedy"] == ["+2.00%", "+0.00%", "met"]
    assert table["long: position 2000 vs 300"] == ["+4.00%", "+10.00%", "not met (Qwen3-1.7B)"]
    # the median of the three ok trials, each listed; the failed trial's 99 ms is not a TTFT
    assert table["TTFT, 1024-token prompt (Llama)"] == ["5.50 ms (trials 5.00 / 9.00 / 5.50)", "-", "met"]
    assert table["batch 16 vs batch 1"] == ["1.2900x", "1.4500x", "not met (Qwen3-1.7B)"]


def test_step_near_takes_the_window_around_a_position():
    gr = _module()
    steps = [float(i) for i in range(100)]  # step i feeds position 10 + i
    rows = [dict(model="m", config="c", status="ok", prompt_tokens=10, step_ms=steps)]
    assert gr.step_near(rows, "m", "c", 60) == pytest.approx(49.5)  # steps 34..65
    assert gr.step_near(rows, "m", "c", 105) is None  # the window runs past the last step


def test_a_folder_that_is_not_a_run_exits_with_the_fix(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode != 0 and "summary.csv is missing" in proc.stderr and "runtime bench" in proc.stderr


def test_a_value_just_past_its_line_does_not_print_as_the_line():
    """goals40 read Qwen3's long row at 1.05012: "+5.0%" beside "not met" read as a contradiction."""
    percent = _module()._percent
    assert percent(1.05012) == "+5.01%" and percent(1.0499) == "+4.99%"


def _startup_log(path: Path, starts: list[dict]) -> Path:
    """startup_check.py's output: progress lines, then one JSON line per child."""
    lines = ["wrote /tmp/startup-checkpoint in 5.1 s", ""] + [json.dumps(s) for s in starts]
    path.write_text("\n".join(lines) + "\n")
    return path


def _start(start: str, loader: str, fresh: bool, seconds: float) -> dict:
    return dict(
        model=LLAMA,
        loader=loader,
        start=start,
        fresh_triton_cache=fresh,
        graphs=21,
        load_plus_capture_s=seconds,
    )


def test_the_start_up_row_takes_the_slowest_first_start_from_safetensors(tmp_path):
    gr = _module()
    _run(tmp_path)
    log = _startup_log(
        tmp_path / "startup.log",
        [
            _start("first", "safetensors", True, 8.12),
            _start("second", "safetensors", True, 30.0),  # a second start is not the first start
            _start("first", "staged", True, 12.0),  # another loader
            _start("first", "safetensors", True, 10.4),
            _start("first", "safetensors", False, 11.0),  # a warm cache where fresh ones exist
        ],
    )
    table = {r[0]: r[2:] for r in gr.goal_rows(tmp_path, gr.first_start(log))[1]}
    row = table["start-up (Llama-3.2-1B-Instruct: load + capture)"]
    assert row == [
        "10.40 s (first start, empty Triton cache, 21 graphs)",
        "-",
        "not met (Llama-3.2-1B-Instruct)",
    ]
    assert not any(name.startswith("start-up") for name in {r[0] for r in gr.goal_rows(tmp_path)[1]})


def test_a_startup_log_without_a_first_start_or_of_another_model_exits_with_the_fix(tmp_path):
    _run(tmp_path)

    def run(starts: list[dict]) -> subprocess.CompletedProcess:
        log = _startup_log(tmp_path / "startup.log", starts)
        cmd = [sys.executable, str(SCRIPT), str(tmp_path), "--startup", str(log)]
        return subprocess.run(cmd, capture_output=True, text=True)

    proc = run([_start("second", "safetensors", False, 4.0)])
    assert proc.returncode != 0 and "no first start" in proc.stderr and "startup_check.py" in proc.stderr
    proc = run([{**_start("first", "safetensors", True, 8.0), "model": "google/gemma-3-1b-it"}])
    assert proc.returncode != 0 and "gemma-3-1b-it, which" in proc.stderr and "did not run" in proc.stderr
    assert run([_start("first", "safetensors", True, 8.0)]).returncode == 0
