"""configs/demo.yaml end to end on the CPU through the real command line: the embedded model, the
quick suite in eager mode, one trial per config, every output file and the JSON line last."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


@pytest.mark.slow
def test_demo_yaml_end_to_end_on_cpu(tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "runtime.cli", "bench", str(DEMO), "--warmup", "0", "--trials", "1",
           "--device", "cpu", "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    last = json.loads(lines[-1])
    assert (last["status"], last["suite"], last["completed"], last["run_dir"]) == (
        "complete",
        "quick",
        2,
        str(out),
    )
    assert set(last["decode_tok_s"]["smollm2-135m-instruct"]) == {"short", "medium"}
    summary = (out / "summary.md").read_text()
    assert summary in proc.stdout
    for title in (
        "E2E tok/s",
        "Decode tok/s",
        "Per-step latency P50 / P95 (ms)",
        "TTFT (ms)",
        "KV cache MB / peak GB",
    ):
        assert f"## {title}\n\n| config | smollm2-135m-instruct |\n|:---|---:|\n| short | " in summary
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    assert [(r["config"], r["status"], r["weights"], r["mode"]) for r in rows] == [
        ("short", "ok", "checkpoint", "eager"),
        ("medium", "ok", "checkpoint", "eager"),
    ]
    assert [(r["prompt_tokens"], r["generated_tokens"], len(r["step_ms"])) for r in rows] == [
        (64, 64, 63),
        (256, 256, 255),
    ]
    for name in ("env.json", "summary.csv", "tok_s.png", "step_latency.png", "ttft.png"):
        assert (out / name).stat().st_size > 0
