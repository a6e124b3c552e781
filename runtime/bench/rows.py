"""The run folder and its rows.jsonl: one JSON row per trial, appended and flushed as it finishes,
so a crash or Ctrl-C loses nothing measured; a rerun into the same folder reads what is there and
measures only what is missing. No torch here (the report reads rows too).

Row status: "ok" (a measured trial), "skipped" (the engine cannot run here; final), "failed"
(an error; retried by a resumed run).
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any

from runtime.errors import RuntimeUserError

ROWS_FILE = "rows.jsonl"


def default_run_dir(suite: str, root: Path = Path("results")) -> Path:
    return root / f"{time.strftime('%Y%m%d-%H%M%S')}-{suite}"


def prepare_run_dir(path: Path) -> Path:
    """Create the folder and prove it is writable, before any model loads."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise RuntimeUserError(
            f"cannot write benchmark results to {path} ({e.strerror or e}); pass a writable --out DIR or --no-save"
        ) from e
    return path


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Every row of a rows.jsonl; a torn last line (a crash mid-write) is dropped with a warning."""
    if not path.exists():
        return []
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            warnings.warn(f"{path}:{n}: unreadable row dropped (an interrupted write?)", stacklevel=2)
    return rows


def _finite(value: Any) -> Any:
    """NaN and inf become null: rows stay strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


class RowSink:
    """Rows of this run: those already in the folder plus each new one, written as it comes.

    folder None (--no-save): rows stay in memory only."""

    def __init__(self, folder: Path | None):
        self.path = folder / ROWS_FILE if folder is not None else None
        self.rows: list[dict[str, Any]] = read_rows(self.path) if self.path else []
        self.resumed = len(self.rows)
        # a torn last line gets its newline before the next row is appended
        tail = self.path.read_bytes()[-1:] if self.path and self.path.exists() else b""
        self._torn = tail not in (b"", b"\n")

    def write(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if self.path is None:
            return
        line = json.dumps(_finite(row), allow_nan=False, default=str)
        with self.path.open("a") as f:
            f.write(("\n" if self._torn else "") + line + "\n")
            f.flush()
            os.fsync(f.fileno())
        self._torn = False

    def done_trials(self, case_id: str) -> set[int]:
        return {r["trial"] for r in self.rows if r.get("case_id") == case_id and r.get("status") == "ok"}

    def skipped(self, case_id: str) -> bool:
        return any(r.get("case_id") == case_id and r.get("status") == "skipped" for r in self.rows)
