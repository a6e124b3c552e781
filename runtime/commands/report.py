"""`runtime report RUN_DIR`: re-render a run folder's summary.md, summary.csv and plots from its
rows; with --against OTHER_RUN, print speed-up tables of RUN_DIR over OTHER_RUN instead."""

from __future__ import annotations

from pathlib import Path

import typer

from runtime.cli_support import handle_errors


@handle_errors
def report(
    run_dir: Path = typer.Argument(..., help="A run folder written by `runtime bench` (holds rows.jsonl)."),
    against: Path | None = typer.Option(
        None, "--against", help="Another run folder: print speed-ups over it."
    ),
    no_save: bool = typer.Option(False, "--no-save", help="Print only; do not rewrite the folder's files."),
) -> None:
    """Re-render a benchmark run, or compare two runs."""
    from runtime.bench.compare import compare, compare_markdown
    from runtime.bench.report import (
        load_run,
        render_summary,
        result_line,
        summarize,
        write_outputs,
    )
    from runtime.errors import RuntimeUserError

    rows, env = load_run(run_dir)
    if against is not None:
        base_rows, _ = load_run(against)
        merged = compare(rows, base_rows)
        print(compare_markdown(merged, run_dir.name, against.name))
        print(result_line(merged, run_dir=str(run_dir), against=str(against)))
        return
    if no_save:
        markdown = render_summary(rows, env)
    else:
        try:
            markdown = write_outputs(run_dir, rows, env)
        except OSError as e:
            raise RuntimeUserError(
                f"cannot write the report into {run_dir} ({e}); use --no-save to print only"
            ) from e
    print(markdown)
    print(result_line(summarize(rows), run_dir=str(run_dir), suite=env.get("suite")))
