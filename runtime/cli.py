"""The `runtime` command line. Each command's options and wiring live in runtime/commands/<name>.py;
heavy imports stay inside the command bodies so `runtime --help` is instant."""

from __future__ import annotations

import os

import typer

from runtime.commands.bench import bench
from runtime.commands.chat import chat
from runtime.commands.generate import generate
from runtime.commands.report import report

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Static-shape, CUDA-graph LLM decoding.")


@app.callback()
def main(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")) -> None:
    if debug:
        os.environ["RUNTIME_DEBUG"] = "1"


app.command()(generate)
app.command()(chat)
app.command()(bench)
app.command()(report)
if __name__ == "__main__":
    app()
