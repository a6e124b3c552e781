"""What the in-step choice of GEMV blocks (runtime/engine/step_tuning.py) picks on this card, and what
it costs at start-up, as a card without shipped choices would see it.

For each model (random weights), fresh processes build a batch-1 graph runner with
RUNTIME_GEMV_TUNE=fresh (shipped and stored choices and role lists ignored, every shape timed), each
with its own empty store: "alone" with RUNTIME_STEP_TUNE=0 (tune()'s picks, no roles), "blocks" with
the finalists timed in the step, "step" (the default) with the role options of step_roles.py timed
with them (--mode picks; default alone and step). Each store is kept as a tuning file (blocks and
role lists), so one process can time them against the shipped choices afterwards:
  python scripts/step_tune_check.py --model meta-llama/Llama-3.2-1B-Instruct --out DIR
  python scripts/profile_step.py --ab --no-profile --repeat 3 --settings default \
      --blocks-from DIR/alone_<model>.json --blocks-from DIR/step_<model>.json --model ... --out ...
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

MODES = {"alone": "0", "blocks": "blocks", "step": "1"}  # -> RUNTIME_STEP_TUNE


def pick(model_id: str, capacity: int) -> dict:
    """Build one runner under this process's environment; what its start-up chose and spent."""
    import torch

    from runtime.engine import step_roles, step_tuning
    from runtime.engine.runner import Runner
    from runtime.kernels import gemv_blocks, tuning_store
    from runtime.models.loader import load_model

    loaded = load_model(model_id, weights="random", device="cuda", dtype="bfloat16")
    start = time.perf_counter()
    runner = Runner(loaded, capacity=capacity, max_batch=1, mode="graph")
    total = time.perf_counter() - start
    return {
        "model": model_id,
        "card": torch.cuda.get_device_name(),
        "runner_s": round(total, 2),
        "tune_s": round(runner.tune_s, 2),
        "capture_s": round(runner.capture_s, 2),
        "gemv_blocks": runner.gemv_blocks,
        "roles": {
            field: {"on" if on else "off": round(ms, 4) for on, ms in times.items()}
            | {"entries": sorted(map(str, entries))}
            for (field, entries), times in step_roles.TIMINGS.items()
        },
        "role_lists": {field: sorted(map(str, named)) for field, named in gemv_blocks.SHIPPED_ROLES.items()},
        "variant_ms": {
            f"{op}:{N}x{K}": {
                "/".join(map(str, c)) + "".join(f" +{field}" for field, _ in sorted(on)): round(ms, 4)
                for (c, on), ms in times.items()
            }
            for (op, N, K, _), times in step_tuning.VARIANT_TIMINGS.items()
        },
        "step_ms": {
            f"{op}:{N}x{K}": {"/".join(map(str, c)): round(ms, 4) for c, ms in times.items()}
            for (op, N, K, _), times in step_tuning.STEP_TIMINGS.items()
        },
        "store": str(tuning_store.store_path(tuning_store.card("cuda"))),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", action="append", default=[], help="repeatable")
    ap.add_argument("--out", required=True, help="a folder: the two stores per model and summary.json")
    ap.add_argument("--capacity", type=int, default=2048)
    ap.add_argument("--mode", action="append", choices=list(MODES), help="repeatable; default: alone, step")
    ap.add_argument("--pick", help=argparse.SUPPRESS)  # the child's role: one model, this environment
    args = ap.parse_args()
    out = Path(args.out)
    if args.pick:
        print(json.dumps(pick(args.pick, args.capacity)))
        return
    if not args.model:
        ap.error("name at least one --model")
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for model_id in args.model:
        name = model_id.split("/")[-1]
        for mode, switch in MODES.items():
            if mode not in (args.mode or ("alone", "step")):
                continue
            cache = out / f"cache_{mode}_{name}"
            env = {**os.environ, "RUNTIME_GEMV_TUNE": "fresh", "RUNTIME_STEP_TUNE": switch,
                   "RUNTIME_CACHE_DIR": str(cache)}  # fmt: skip
            done = subprocess.run(
                [sys.executable, __file__, "--pick", model_id, "--out", str(out), "--capacity", str(args.capacity)],
                env=env, capture_output=True, text=True,
            )  # fmt: skip
            if done.returncode != 0:
                print(done.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"{model_id} ({mode}): the start-up failed, exit {done.returncode}")
            row = {"mode": mode, **json.loads(done.stdout.strip().splitlines()[-1])}
            shutil.copy(row["store"], out / f"{mode}_{name}.json")  # a tuning file for --blocks-from
            rows.append(row)
            print(
                f"{name} {mode}: runner {row['runner_s']} s (tuning {row['tune_s']} s); {row['gemv_blocks']}"
            )
            for shape, times in row["step_ms"].items():
                print(f"  {shape}: " + ", ".join(f"{c} {ms:.4f} ms" for c, ms in times.items()))
            for shape, times in row["variant_ms"].items():
                print(f"  {shape} with options: " + ", ".join(f"{v} {ms:.4f}" for v, ms in times.items()))
            for field, times in row["roles"].items():
                print(f"  {field} {times['entries']}: off {times['off']:.4f} ms, on {times['on']:.4f} ms")
            print(f"  role lists: {row['role_lists']}")
    (out / "summary.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
