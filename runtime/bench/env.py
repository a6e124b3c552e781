"""env.json: what a run's numbers depend on (GPU, driver, CUDA, torch, transformers, commit, dtype,
seed, the measured copy bandwidth and the plan), written once per run folder."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from runtime.bench.matrix import Plan
from runtime.models.sources import REPO_ROOT

ENV_FILE = "env.json"


def _run(cmd: list[str], cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def git_commit() -> dict[str, Any]:
    """The checkout's commit and whether tracked files differ from it. RUNTIME_COMMIT=<sha> names the
    commit instead, for a copy of a clean checkout whose git metadata did not travel with it (a
    working tree sent to a GPU machine): the run then records that commit, not dirty."""
    named = os.environ.get("RUNTIME_COMMIT", "").strip()
    if named:
        return {"commit": named, "dirty": False}
    commit = _run(["git", "rev-parse", "HEAD"], REPO_ROOT)
    dirty = _run(["git", "status", "--porcelain", "--untracked-files=no"], REPO_ROOT)
    return {"commit": commit, "dirty": bool(dirty) if commit else None}


def gpu_info(device: torch.device) -> dict[str, Any]:
    if device.type != "cuda":
        return {"gpu": None, "driver": None, "gpu_memory_gb": None}
    props = torch.cuda.get_device_properties(device)
    index = device.index if device.index is not None else torch.cuda.current_device()
    driver = _run(["nvidia-smi", f"--id={index}", "--query-gpu=driver_version", "--format=csv,noheader"])
    return {"gpu": props.name, "driver": driver, "gpu_memory_gb": round(props.total_memory / 2**30, 1)}


def collect(device: torch.device, plan: Plan, bandwidth_gbs: float | None) -> dict[str, Any]:
    import transformers

    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "device": device.type,
        **gpu_info(device),
        "cuda": torch.version.cuda,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        **git_commit(),
        # the kernel choice the numbers were taken with (runtime/kernels/ops.py; README's table):
        # the three main switches always, and every other RUNTIME_* variable that is set
        "kernels": {
            **{
                k: os.environ.get(k, "")
                for k in ("RUNTIME_KERNELS", "RUNTIME_KERNELS_OFF", "RUNTIME_GEMV_TUNE")
            },
            **{k: v for k, v in sorted(os.environ.items()) if k.startswith("RUNTIME_")},
        },
        "dtype": sorted({m.dtype for m in plan.models}),
        "seed": plan.seed,
        "suite": plan.suite,
        "source": plan.source,
        "warmup": plan.warmup,
        "trials": plan.trials,
        "capacity": plan.capacity,
        "bandwidth_gbs": bandwidth_gbs,
        "models": [asdict(m) for m in plan.models],
        "configs": [asdict(c) for c in plan.configs],
    }


def write_env(folder: Path, env: dict[str, Any]) -> None:
    """Keep the first env.json of a folder (a resumed run appends to the same numbers)."""
    path = folder / ENV_FILE
    if not path.exists():
        path.write_text(json.dumps(env, indent=2, default=str) + "\n")
        return
    try:
        first = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return
    if first.get("gpu") != env["gpu"] or first.get("commit") != env["commit"]:
        warnings.warn(
            f"resuming {folder} on a different GPU or commit than it started on "
            f"({first.get('gpu')} @ {first.get('commit')} vs {env['gpu']} @ {env['commit']}); rows will mix them",
            stacklevel=2,
        )
