"""scripts/layer_budget.py on a recorded step timeline (an H200's, in results/): each kernel named by
its part in the layer, the bytes it must read, the layer's excess over copy speed and what each
layer would have to lose for the goal; a layer it cannot name; the command line's refusals."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
SCRIPT = ROOT / "scripts" / "layer_budget.py"
TIMELINE = ROOT / "results" / "2026-11-28-gpu-checks" / "step_timeline_b1_b16_10483fd_h200.json"
GBS = 4256.0


def _module():
    spec = importlib.util.spec_from_file_location("layer_budget", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _results() -> dict[tuple[str, int], dict]:
    return {(r["model"].split("/")[-1], r["batch"]): r for r in json.loads(TIMELINE.read_text())}


def test_each_kernel_gets_its_part_and_bytes():
    lb = _module()
    llama = _results()[("Llama-3.2-1B-Instruct", 1)]
    b = lb.budget(llama, GBS)
    parts = [r["part"] for r in b["rows"]]
    # the layer's period starts at the previous layer's down GEMV: qkv is the product before attention
    assert parts == ["down", "qkv", "attention", "", "o", "gate/up"]
    weights = {r["part"]: r["bytes"] for r in b["rows"]}
    assert weights["qkv"] == 2 * 2048 * (2048 + 2 * 512) and weights["o"] == 2 * 2048 * 2048
    assert weights["gate/up"] == 2 * 2 * 8192 * 2048 and weights["down"] == 2 * 8192 * 2048
    assert weights["attention"] == 2 * 2 * 512 * 256  # K and V of 256 positions, one row
    assert b["layer"]["adds"] == pytest.approx(39.36, abs=0.01)
    assert b["layer"]["excess"] == pytest.approx(b["layer"]["adds"] - sum(weights.values()) / (GBS * 1e3))
    assert b["goal"] == "1.15x the floor" and -6.0 < b["needed"] < -5.3


def test_a_batch_step_is_named_through_cublas_kernels_and_held_to_its_batch_goal():
    lb = _module()
    results = _results()
    b16 = results[("gemma-3-1b-it", 16)]
    b = lb.budget(b16, GBS, batch1_us=results[("gemma-3-1b-it", 1)]["step_us_end_to_end"])
    named = {r["part"]: r["kernel"] for r in b["rows"] if r["part"]}
    assert named["qkv"] == "_rows_kernel" and named["attention"] == "_qkv_split_kernel"
    assert all(named[p].startswith("nvjet") for p in ("o", "gate/up", "down"))
    # the split-K reduce, the two norms, the merge and the activation read no weights of their own
    others = [r for r in b["rows"] if not r["part"]]
    assert len(others) == 5 and all(r["bytes"] == 0 for r in others)
    # gemma: one kv head of 256, five of six layers slide over 512 positions (all 256 live here)
    assert next(r["bytes"] for r in b["rows"] if r["part"] == "attention") == 16 * 2 * 2 * 256 * 256
    expected = (1.3 * 805.1 - 1294.1) / 26
    assert b["goal"] == "1.3x the batch-1 step" and b["needed"] == pytest.approx(expected)
    assert lb.budget(b16, GBS)["needed"] is None  # no batch-1 step to hold it to


def test_a_layer_it_cannot_name_keeps_its_times_without_bytes():
    lb = _module()
    llama = dict(_results()[("Llama-3.2-1B-Instruct", 1)])
    llama["roles"] = [r for r in llama["roles"] if r["role"] != 4]  # the o GEMV gone: three products
    b = lb.budget(llama, GBS)
    assert not b["mapped"] and b["needed"] is None and all(r["bytes"] == 0 for r in b["rows"])
    assert "could not be named" in lb.markdown(llama, b)


def test_the_command_line_needs_a_bandwidth_and_a_shipped_config(tmp_path):
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT)

    proc = run(str(TIMELINE))  # recorded before step_timeline.py measured the bandwidth with it
    assert proc.returncode != 0 and "--bandwidth-gbs" in proc.stderr and "--goals" in proc.stderr
    measured = [dict(r, bandwidth_gbs=GBS) for r in json.loads(TIMELINE.read_text())]
    (tmp_path / "measured.json").write_text(json.dumps(measured))
    proc = run(str(tmp_path / "measured.json"))
    assert proc.returncode == 0 and proc.stdout == run(str(TIMELINE), "--bandwidth-gbs", str(GBS)).stdout
    other = [dict(json.loads(TIMELINE.read_text())[0], model="acme/Unknown-1B")]
    (tmp_path / "t.json").write_text(json.dumps(other))
    proc = run(str(tmp_path / "t.json"), "--bandwidth-gbs", "3000")
    assert proc.returncode != 0 and "Unknown-1B" in proc.stderr and "configs/models" in proc.stderr
    proc = run(str(TIMELINE), "--bandwidth-gbs", str(GBS), "--out", str(tmp_path / "budget.md"))
    assert proc.returncode == 0 and (tmp_path / "budget.md").read_text() == proc.stdout
