"""`runtime bench`: run a benchmark YAML (or one ad-hoc config from flags), write a run folder
(env.json, rows.jsonl, summary.md, summary.csv, PNG plots) and print the summary, with one JSON
line last. Exit codes: 0 done, 1 a case failed, 2 bad input, 130 Ctrl-C (rows so far are kept
and the completed cases are summarised; rerun with the same --out to resume)."""

from __future__ import annotations

from pathlib import Path

import typer

from runtime.bench.schema import REQUEST_KEYS
from runtime.cli_support import EXIT_FAILURE, EXIT_INTERRUPT, handle_errors
from runtime.models.sources import EMBEDDED_ID as EMBEDDED


def make_plan(config: Path | None, adhoc: dict, overrides):
    """The plan from a YAML file, or from ad-hoc flags; every check runs before any model loads."""
    from runtime.bench.matrix import adhoc_bench, build_plan
    from runtime.bench.schema import config_from_flags, load_bench
    from runtime.errors import ConfigError

    given = [k for k in REQUEST_KEYS if adhoc.get(k) is not None]
    if config is not None:
        if given:
            flags = ", ".join("--" + k.replace("_", "-") for k in given)
            raise ConfigError(f"{flags}: these flags describe an ad-hoc run; drop them or the CONFIG file")
        return build_plan(load_bench(config), overrides)
    if not given and overrides.model is None:
        raise ConfigError(
            "give a benchmark file (e.g. configs/demo.yaml) or an ad-hoc run "
            "(--model ID --prompt-tokens N --max-new-tokens N)"
        )
    values = {k: v for k, v in adhoc.items() if v is not None}
    values.setdefault("prompt_tokens", 256)
    values.setdefault("max_new_tokens", 256)
    name = f"p{values['prompt_tokens']}_n{values['max_new_tokens']}"
    bench_file = adhoc_bench(overrides.model or EMBEDDED, "auto", "auto", config_from_flags(name, values))
    return build_plan(bench_file, overrides)


@handle_errors
def bench(
    config: Path | None = typer.Argument(
        None, help="Benchmark YAML, e.g. configs/demo.yaml or configs/full.yaml."
    ),
    suite: str | None = typer.Option(None, help="quick | standard | full (default: the file's `suite`)."),
    model: str | None = typer.Option(
        None, "--model", "-m", help="Benchmark only this model (or this one instead)."
    ),
    weights: str | None = typer.Option(None, help="auto | checkpoint | random (overrides the file)."),
    dtype: str | None = typer.Option(None, help="auto | bfloat16 | float16 | float32 (overrides the file)."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Run folder (default results/<time>-<suite>); an existing one resumes."
    ),
    no_save: bool = typer.Option(False, "--no-save", help="Print the summary only; write nothing."),
    prompt_tokens: int | None = typer.Option(
        None, "--prompt-tokens", help="Ad hoc: prompt length (default 256)."
    ),
    max_new_tokens: int | None = typer.Option(
        None, "--max-new-tokens", help="Ad hoc: tokens to generate (default 256)."
    ),
    temperature: float | None = typer.Option(None, help="Ad hoc: 0 = greedy."),
    top_k: int | None = typer.Option(None, "--top-k", help="Ad hoc: 0 = off."),
    top_p: float | None = typer.Option(None, "--top-p", help="Ad hoc: 1 = off."),
    repetition_penalty: float | None = typer.Option(None, "--repetition-penalty", help="Ad hoc: 1 = off."),
    ignore_eos: bool | None = typer.Option(
        None, "--ignore-eos/--stop-at-eos", help="Ad hoc: fixed length (default) or stop at EOS."
    ),
    engine: list[str] | None = typer.Option(
        None,
        "--engine",
        help="runtime | runtime_graph | runtime_eager | transformers_eager | transformers_compile (repeatable; overrides every config).",
    ),
    batch_size: list[int] | None = typer.Option(
        None, "--batch-size", help="Repeatable; a list expands the matrix."
    ),
    warmup: int | None = typer.Option(None, help="Warm-up runs per case (overrides the file)."),
    trials: int | None = typer.Option(None, help="Timed trials per case (overrides the file)."),
    seed: int | None = typer.Option(None, help="Prompts, random weights and sampling (default 42)."),
    max_seq_len: int | None = typer.Option(
        None, "--max-seq-len", help="KV cache capacity (default: the longest config)."
    ),
    device: str | None = typer.Option(None, help="cuda | cpu (default: cuda when present)."),
) -> None:
    """Benchmark models on a YAML suite (or one ad-hoc config) and print the log's tables."""
    import sys

    from runtime.bench.matrix import Overrides
    from runtime.bench.rows import default_run_dir, prepare_run_dir
    from runtime.errors import ConfigError

    overrides = Overrides(
        suite=suite, model=model, weights=weights, dtype=dtype, engines=tuple(engine) if engine else None,
        batch_size=tuple(batch_size) if batch_size else None, warmup=warmup, trials=trials, seed=seed,
        max_seq_len=max_seq_len,
    )  # fmt: skip
    adhoc = dict(
        prompt_tokens=prompt_tokens, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
        top_p=top_p, repetition_penalty=repetition_penalty, ignore_eos=ignore_eos,
    )  # fmt: skip
    plan = make_plan(config, adhoc, overrides)
    if no_save and out is not None:
        raise ConfigError("--out and --no-save contradict each other; pick one")
    folder = None if no_save else prepare_run_dir(out or default_run_dir(plan.suite))

    # torch and the engines load only once the plan and the folder are known to be good
    from runtime.bench.bandwidth import copy_bandwidth_gbs
    from runtime.bench.env import collect, write_env
    from runtime.bench.report import render_summary, result_line, summarize, write_outputs
    from runtime.bench.rows import RowSink
    from runtime.bench.run import BenchRun
    from runtime.models.loader import parse_device

    target = parse_device(device)
    sink = RowSink(folder)
    if sink.resumed:
        print(f"resuming {folder}: {sink.resumed} rows already there", file=sys.stderr)
    bandwidth = copy_bandwidth_gbs(target)
    env = collect(target, plan, bandwidth)
    if folder is not None:
        write_env(folder, env)
    run = BenchRun(plan, sink, target, bandwidth)
    outcome = _with_progress(run)

    more = []
    if outcome.interrupted:
        more.append(
            f"interrupted: {len(outcome.completed)} of {len(plan.cases)} cases complete"
            + (f"; rerun with --out {folder} to resume" if folder else "")
        )
    cases = outcome.completed if outcome.interrupted else None
    if folder is not None:
        markdown = write_outputs(folder, sink.rows, env, cases=cases, more_notes=more)
    else:
        markdown = render_summary(sink.rows, env, cases=cases, more_notes=more)
    print(markdown)
    status = "interrupted" if outcome.interrupted else "failed" if outcome.failed else "complete"
    print(
        result_line(
            summarize(sink.rows, cases), run_dir=str(folder) if folder else None, suite=plan.suite, status=status,
            cases=len(plan.cases), completed=len(outcome.completed), failed=outcome.failed,
        )
    )  # fmt: skip
    if outcome.interrupted:
        raise typer.Exit(EXIT_INTERRUPT)
    if outcome.failed:
        raise typer.Exit(EXIT_FAILURE)


def _with_progress(run):
    """Execute under a rich progress bar on stderr (model, config, engine, trial)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True)) as progress:
        task = progress.add_task("starting", total=run.total_runs())
        run.progress = lambda description, done: progress.update(
            task, description=description, completed=done
        )
        return run.execute()
