"""What every CLI command shares: turning errors into a message and an exit code, and the
options that load a model. Exit codes: 2 bad input or config, 1 runtime failure, 130 Ctrl-C."""

from __future__ import annotations

import functools
import os
import sys
import traceback
import warnings
from collections.abc import Callable
from typing import Any

import typer

EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_INTERRUPT = 2, 1, 130


def _debug() -> bool:
    return os.environ.get("RUNTIME_DEBUG", "") not in ("", "0")


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr if file is None else file)


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run a command; print a one-line cause (traceback with --debug) and exit with its code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from runtime.errors import RuntimeFailure, RuntimeUserError

        if not _debug():
            warnings.showwarning = _warning_line
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except BrokenPipeError:  # stdout closed early (e.g. piped into head): not an error
            sys.stderr.close()
            raise typer.Exit(0) from None
        except KeyboardInterrupt:
            print("\ninterrupted", file=sys.stderr)
            raise typer.Exit(EXIT_INTERRUPT) from None
        except (RuntimeUserError, RuntimeFailure) as e:
            if _debug():
                traceback.print_exc()
            print(f"error: {e}", file=sys.stderr)
            raise typer.Exit(e.exit_code) from None
        except Exception as e:  # noqa: BLE001 - the last line of defence prints, then exits 1
            import torch

            if isinstance(e, torch.cuda.OutOfMemoryError):
                msg = "out of GPU memory; lower --max-seq-len or the batch size"
            else:
                msg = f"{type(e).__name__}: {e}"
            if _debug():
                traceback.print_exc()
            else:
                msg += " (run with --debug for the traceback)"
            print(f"error: {msg}", file=sys.stderr)
            raise typer.Exit(EXIT_FAILURE) from None

    return wrapper
