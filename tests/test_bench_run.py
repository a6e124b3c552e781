"""Running a plan on the CPU with a tiny random model: one row per trial appended as it finishes,
skips for GPU-only engines, resume without duplicates, Ctrl-C keeping the rows so far, and a
failing case or model that does not stop the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny_configs import tiny_config

from runtime.bench import engines
from runtime.bench.matrix import build_plan
from runtime.bench.rows import RowSink, read_rows
from runtime.bench.run import BenchRun
from runtime.bench.schema import load_bench

CPU = torch.device("cpu")


@pytest.fixture
def tiny_yaml(tmp_path: Path) -> Path:
    model = tmp_path / "tiny-llama.json"
    model.write_text(json.dumps(tiny_config("llama").to_dict()))
    path = tmp_path / "bench.yaml"
    path.write_text(
        f"""\
models:
  - {{id: {model}, weights: random, dtype: float32}}
engines: [runtime, runtime_graph]
warmup: 1
trials: 2
seed: 3
configs:
  a: {{prompt_tokens: 8, max_new_tokens: 5}}
  b: {{prompt_tokens: 12, max_new_tokens: 4, temperature: 0.8, top_k: 20, top_p: 0.9, repetition_penalty: 1.1}}
"""
    )
    return path


def execute(plan, folder: Path, progress=None):
    sink = RowSink(folder)
    outcome = BenchRun(plan, sink, CPU, None, progress).execute()
    return sink, outcome


def test_rows_per_trial_and_skips(tiny_yaml, tmp_path):
    plan = build_plan(load_bench(tiny_yaml))
    sink, outcome = execute(plan, tmp_path)
    ok = [r for r in sink.rows if r["status"] == "ok"]
    skipped = [r for r in sink.rows if r["status"] == "skipped"]
    assert [(r["config"], r["trial"]) for r in ok] == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    assert [(r["config"], r["engine"]) for r in skipped] == [("a", "runtime_graph"), ("b", "runtime_graph")]
    assert "needs a CUDA GPU" in skipped[0]["note"]
    assert read_rows(tmp_path / "rows.jsonl") == sink.rows  # every row is on disk
    first = ok[0]
    assert first["weights"] == "random" and first["weights_requested"] == "random"
    assert (first["mode"], first["dtype"], first["device"], first["model_name"]) == (
        "eager",
        "float32",
        "cpu",
        "tiny-llama",
    )
    assert first["generated_tokens"] == 5 and len(first["step_ms"]) == 4
    assert first["kv_cache_mb"] > 0 and first["peak_gb"] is None and first["mbu"] is None
    assert ok[2]["temperature"] == 0.8 and ok[2]["repetition_penalty"] == 1.1
    assert first["e2e_tok_s"] > 0 and first["decode_tok_s"] > 0 and first["ttft_ms"] > 0
    assert outcome.completed == {c.case_id for c in plan.cases if c.engine == "runtime"}
    assert (outcome.failed, outcome.skipped, outcome.interrupted) == (0, 2, False)


def test_resume_measures_only_what_is_missing(tiny_yaml, tmp_path):
    plan = build_plan(load_bench(tiny_yaml))
    execute(plan, tmp_path)
    path = tmp_path / "rows.jsonl"
    lines = path.read_text().splitlines()
    # keep the first two rows and half of the third, as a crash mid-write would
    path.write_text("\n".join(lines[:2]) + "\n" + lines[2][:40])
    with pytest.warns(UserWarning, match="unreadable row dropped"):
        sink, outcome = execute(plan, tmp_path)
    with pytest.warns(UserWarning, match="unreadable row dropped"):
        rows = read_rows(path)
    ok = [(r["case_id"], r["trial"]) for r in rows if r["status"] == "ok"]
    assert len(ok) == len(set(ok)) == 4
    assert sum(r["status"] == "skipped" for r in rows) == 2
    assert len(outcome.completed) == 2
    # a complete folder is left alone by a third run
    before = path.read_text()
    with pytest.warns(UserWarning):
        execute(plan, tmp_path)
    assert path.read_text() == before


def test_more_trials_on_resume_add_only_the_new_ones(tiny_yaml, tmp_path):
    bench = load_bench(tiny_yaml)
    execute(build_plan(bench), tmp_path)
    from runtime.bench.matrix import Overrides

    sink, _ = execute(build_plan(bench, Overrides(trials=3)), tmp_path)
    trials = sorted((r["config"], r["trial"]) for r in sink.rows if r["status"] == "ok")
    assert trials == [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1), ("b", 2)]


def test_ctrl_c_keeps_rows_so_far(tiny_yaml, tmp_path):
    plan = build_plan(load_bench(tiny_yaml))

    def progress(description: str, done: int) -> None:
        if "· b ·" in description and "trial 2/2" in description:
            raise KeyboardInterrupt

    sink, outcome = execute(plan, tmp_path, progress)
    assert outcome.interrupted
    rows = read_rows(tmp_path / "rows.jsonl")
    assert [(r["config"], r["trial"]) for r in rows if r["status"] == "ok"] == [("a", 0), ("a", 1), ("b", 0)]
    a_case = next(c.case_id for c in plan.cases if c.config.name == "a" and c.engine == "runtime")
    assert outcome.completed == {a_case}
    # and the rerun finishes the interrupted case with its one missing trial
    sink, outcome = execute(plan, tmp_path)
    assert not outcome.interrupted and len(outcome.completed) == 2
    assert sum(r["config"] == "b" and r["status"] == "ok" for r in sink.rows) == 2


def test_a_failing_case_is_recorded_and_retried(tiny_yaml, tmp_path, monkeypatch):
    plan = build_plan(load_bench(tiny_yaml))
    original = engines.RuntimeEngine.run

    def flaky(self, prompts, params, max_new_tokens, stop_ids):
        if len(prompts[0]) == 12:
            raise RuntimeError("simulated failure\nsecond line")
        return original(self, prompts, params, max_new_tokens, stop_ids)

    monkeypatch.setattr(engines.RuntimeEngine, "run", flaky)
    with pytest.warns(UserWarning, match="simulated failure"):
        sink, outcome = execute(plan, tmp_path)
    failed = [r for r in sink.rows if r["status"] == "failed"]
    assert [(r["config"], r["note"]) for r in failed] == [("b", "RuntimeError: simulated failure")]
    assert outcome.failed == 1 and len(outcome.completed) == 1
    monkeypatch.setattr(engines.RuntimeEngine, "run", original)
    sink, outcome = execute(plan, tmp_path)
    assert outcome.failed == 0 and len(outcome.completed) == 2


def test_a_model_that_cannot_load_fails_its_cases_only(tmp_path):
    path = tmp_path / "bench.yaml"
    path.write_text(
        "models:\n  - {id: /nonexistent/model-folder, weights: checkpoint}\n"
        "warmup: 0\ntrials: 1\nconfigs:\n  a: {prompt_tokens: 4, max_new_tokens: 2}\n"
    )
    with pytest.warns(UserWarning, match="loading failed: ModelNotFoundError"):
        sink, outcome = execute(build_plan(load_bench(path)), tmp_path)
    assert [r["status"] for r in sink.rows] == ["failed"] and outcome.failed == 1


def test_progress_counts_every_run_it_will_make(tiny_yaml, tmp_path):
    plan = build_plan(load_bench(tiny_yaml))
    sink = RowSink(tmp_path)
    seen: list[tuple[str, int]] = []
    bench = BenchRun(plan, sink, CPU, None, lambda description, done: seen.append((description, done)))
    total = bench.total_runs()
    assert total == 2 * (
        1 + 2
    )  # two runnable cases (runtime_graph is skipped): a warm-up and two trials each
    bench.execute()
    assert seen[-1] == ("tiny-llama · b · b1 · runtime · done", total)
    assert ("tiny-llama · a · b1 · runtime · trial 2/2", 2) in seen
    assert BenchRun(plan, RowSink(tmp_path), CPU).total_runs() == 0  # all done: a rerun has nothing to do


def test_trials_run_without_garbage_collector_pauses(tiny_yaml, tmp_path, monkeypatch):
    """Each timed trial runs with the cyclic collector off (a pass inside it would land in TTFT),
    the warm-ups with it on, and it is back on after the run, a failing trial included."""
    import gc

    plan = build_plan(load_bench(tiny_yaml))
    original = engines.RuntimeEngine.run
    seen: list[bool] = []

    def recording(self, prompts, params, max_new_tokens, stop_ids):
        seen.append(gc.isenabled())
        if len(prompts[0]) == 12 and len(seen) == 5:  # config b's first trial (after its warm-up)
            raise RuntimeError("simulated failure")
        return original(self, prompts, params, max_new_tokens, stop_ids)

    monkeypatch.setattr(engines.RuntimeEngine, "run", recording)
    assert gc.isenabled()
    with pytest.warns(UserWarning, match="simulated failure"):
        execute(plan, tmp_path)
    # config a: warm-up, trial, trial; config b: warm-up, then the failing trial ends the case
    assert seen == [True, False, False, True, False]
    assert gc.isenabled()


def test_env_records_the_named_commit_of_a_copied_tree(monkeypatch):
    """A working tree copied without its git metadata records the commit RUNTIME_COMMIT names, clean;
    without it, the checkout's own commit."""
    from runtime.bench.env import git_commit

    monkeypatch.setenv("RUNTIME_COMMIT", "0123456789abcdef")
    assert git_commit() == {"commit": "0123456789abcdef", "dirty": False}
    monkeypatch.delenv("RUNTIME_COMMIT")
    assert git_commit()["commit"] != "0123456789abcdef"
