"""`runtime bench` and `runtime report` through the CLI: exit codes (0, 1, 2, 130), refusals before
any model loads, ad-hoc runs, the run folder, resume, re-rendering and comparing runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_configs import tiny_config
from typer.testing import CliRunner

from runtime.bench import engines, run
from runtime.cli import app


@pytest.fixture
def cli():
    return CliRunner()


@pytest.fixture
def tiny_model(tmp_path: Path) -> Path:
    path = tmp_path / "tiny-llama.json"
    path.write_text(json.dumps(tiny_config("llama").to_dict()))
    return path


@pytest.fixture
def tiny_yaml(tmp_path: Path, tiny_model: Path) -> Path:
    path = tmp_path / "bench.yaml"
    path.write_text(
        f"models:\n  - {{id: {tiny_model}, weights: random, dtype: float32}}\n"
        "warmup: 0\ntrials: 2\nsuite: quick\n"
        "configs:\n  short: {prompt_tokens: 6, max_new_tokens: 4}\n  medium: {prompt_tokens: 10, max_new_tokens: 6}\n"
        "suites:\n  quick: [short, medium]\n"
    )
    return path


@pytest.fixture
def no_loading(monkeypatch):
    """Fail the test if any model starts to load."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(run, "load_model", refuse)


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "args, message",
    [
        (["{yaml_dir}/missing.yaml"], "no such benchmark file"),
        (["{bad_yaml}"], "bench.yaml:2: models.0.weights: 'fake' is not one of"),
        (["{tiny_yaml}", "--suite", "full"], "no suite 'full' (suites defined there: quick)"),
        (["{tiny_yaml}", "--prompt-tokens", "8"], "--prompt-tokens: these flags describe an ad-hoc run"),
        (["{tiny_yaml}", "--trials", "0"], "--trials must be >= 1"),
        (["{tiny_yaml}", "--engine", "vllm"], "--engine must be one of"),
        (["{tiny_yaml}", "--no-save", "--out", "{yaml_dir}/x"], "--out and --no-save contradict"),
        (["{tiny_yaml}", "--out", "{tiny_yaml}/inside"], "cannot write benchmark results to"),
        ([], "give a benchmark file"),
        (["--prompt-tokens", "0"], "command line: prompt_tokens: must be >= 1, got 0"),
    ],
)
def test_bad_input_exits_2_before_any_model_loads(
    cli, tmp_path, tiny_yaml, no_loading, monkeypatch, args, message
):
    monkeypatch.chdir(tmp_path)  # a run that wrongly starts must not write into the repository
    bad = tmp_path / "bad" / "bench.yaml"
    bad.parent.mkdir()
    bad.write_text(
        "models:\n  - {id: a, weights: fake}\nconfigs:\n  a: {prompt_tokens: 1, max_new_tokens: 1}\n"
    )
    subs = {"yaml_dir": str(tmp_path), "bad_yaml": str(bad), "tiny_yaml": str(tiny_yaml)}
    result = cli.invoke(app, ["bench", *[a.format(**subs) for a in args]])
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert result.stdout == "" and not (tmp_path / "results").exists()


def test_adhoc_run_with_no_save_prints_only(cli, tmp_path, tiny_model, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["bench", "--model", str(tiny_model), "--weights", "random", "--prompt-tokens", "9", "--max-new-tokens", "5",
            "--temperature", "0.8", "--seed", "42", "--warmup", "0", "--trials", "1", "--no-save"]  # fmt: skip
    result = cli.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "# Benchmark: adhoc suite" in result.stdout
    assert "| config | tiny-llama (random) |" in result.stdout and "| p9_n5 |" in result.stdout
    line = last_json(result.stdout)
    assert (line["status"], line["run_dir"], line["cases"], line["completed"]) == ("complete", None, 1, 1)
    assert line["decode_tok_s"]["tiny-llama (random)"]["p9_n5"] > 0
    assert not (tmp_path / "results").exists()


def test_run_folder_resume_and_report(cli, tmp_path, tiny_yaml, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setenv("RUNTIME_PDL", "early")  # every kernel switch set goes on the record
    result = cli.invoke(app, ["bench", str(tiny_yaml), "--out", str(out)])
    assert result.exit_code == 0, result.output
    files = {p.name for p in out.iterdir()}
    assert {
        "env.json",
        "rows.jsonl",
        "summary.md",
        "summary.csv",
        "tok_s.png",
        "step_latency.png",
        "ttft.png",
    } <= files
    env = json.loads((out / "env.json").read_text())
    assert (env["suite"], env["seed"], env["trials"], env["device"]) == ("quick", 42, 2, "cpu")
    assert {"gpu", "driver", "cuda", "torch", "transformers", "commit", "dtype"} <= set(env)
    assert env["kernels"]["RUNTIME_PDL"] == "early" and env["kernels"]["RUNTIME_KERNELS_OFF"] == ""
    assert result.stdout.rstrip().splitlines()[-1] == json.dumps(last_json(result.stdout))
    assert (out / "summary.md").read_text() in result.stdout
    rows = (out / "rows.jsonl").read_text()
    assert len(rows.splitlines()) == 4

    again = cli.invoke(app, ["bench", str(tiny_yaml), "--out", str(out)])
    assert again.exit_code == 0 and "resuming" in again.stderr
    assert (out / "rows.jsonl").read_text() == rows  # nothing measured twice

    (out / "summary.md").unlink()
    report = cli.invoke(app, ["report", str(out)])
    assert report.exit_code == 0, report.output
    assert (out / "summary.md").read_text() in report.stdout
    assert last_json(report.stdout)["suite"] == "quick"

    compare = cli.invoke(app, ["report", str(out), "--against", str(out)])
    assert compare.exit_code == 0, compare.output
    assert "# Speed-up: run over run" in compare.stdout and "| short | 1.00x |" in compare.stdout
    assert last_json(compare.stdout)["decode_tok_s_speedup"]["tiny-llama (random)"]["medium"] == 1.0


def test_report_of_a_folder_without_rows_exits_2(cli, tmp_path):
    result = cli.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "not a benchmark run (no rows.jsonl)" in result.stderr
    result = cli.invoke(app, ["report", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "no such run folder" in result.stderr


def test_ctrl_c_keeps_rows_renders_completed_and_exits_130(cli, tmp_path, tiny_yaml, monkeypatch):
    original = engines.RuntimeEngine.run

    def interrupt_on_medium(self, prompts, params, max_new_tokens, stop_ids):
        if len(prompts[0]) == 10:
            raise KeyboardInterrupt
        return original(self, prompts, params, max_new_tokens, stop_ids)

    monkeypatch.setattr(engines.RuntimeEngine, "run", interrupt_on_medium)
    out = tmp_path / "run"
    result = cli.invoke(app, ["bench", str(tiny_yaml), "--out", str(out)])
    assert result.exit_code == 130, result.output
    assert "| short |" in result.stdout and "| medium |" not in result.stdout
    assert f"interrupted: 1 of 2 cases complete; rerun with --out {out} to resume" in result.stdout
    assert last_json(result.stdout)["status"] == "interrupted"
    assert len((out / "rows.jsonl").read_text().splitlines()) == 2
    assert "| short |" in (out / "summary.md").read_text()


def test_a_failed_case_exits_1_after_the_summary(cli, tmp_path, tiny_yaml, monkeypatch):
    original = engines.RuntimeEngine.run

    def fail_on_medium(self, prompts, params, max_new_tokens, stop_ids):
        if len(prompts[0]) == 10:
            raise RuntimeError("out of something")
        return original(self, prompts, params, max_new_tokens, stop_ids)

    monkeypatch.setattr(engines.RuntimeEngine, "run", fail_on_medium)
    result = cli.invoke(app, ["bench", str(tiny_yaml), "--no-save"])
    assert result.exit_code == 1, result.output
    assert "medium / runtime: failed: RuntimeError: out of something" in result.stdout
    assert last_json(result.stdout)["status"] == "failed"
