"""GPU: the timeline of one captured decode step, kernel by kernel, from a profiler trace.

profile_step.py sums device time per kernel name; under PDL those times overlap (a kernel starts
while the one before it drains), so they do not say what each kernel adds to the step. Here every
replay's kernels are put in launch order and each gets:
  dur       its own device time (start of its first program to end of its last);
  adds      end - the previous kernel's end: what it adds to the step (these sum to the step);
  overlap   the previous kernel's end - its start (> 0: it started early, under PDL).
Medians over the profiled replays, per position in the step; then per role in a layer (kernels
per layer found from the step's repeating period), which is where a fusion's saving would come from.

  python3 scripts/step_timeline.py [--model M] [--batch 1] [--prompt 256] [--capacity N] --out $OUT/timeline.json

--capacity sets the KV cache's slots (default: just enough for the replays), which sets the batch-1
attention's split count: compare a short cache with a long one at the same position.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile

from runtime.bench.bandwidth import copy_bandwidth_gbs
from runtime.engine.runner import Runner
from runtime.engine.sampler import BENCH_SAMPLED, SamplingParams
from runtime.models.loader import load_model


def step_kernels(trace_path: str) -> list[dict]:
    """Kernel events of a chrome trace, in start order: name, grid, start and end (us)."""
    events = json.load(open(trace_path))["traceEvents"]
    kernels = [
        {
            "name": e["name"],
            "grid": tuple(e.get("args", {}).get("grid", ())),
            "start": float(e["ts"]),
            "end": float(e["ts"]) + float(e.get("dur", 0)),
        }
        for e in events
        if e.get("cat") == "kernel" and e.get("ph") == "X"
    ]
    return sorted(kernels, key=lambda k: k["start"])


def period(names: list[str]) -> int:
    """The shortest p such that the middle of the step repeats every p kernels (one layer)."""
    n = len(names)
    middle = names[n // 4 : 3 * n // 4]
    for p in range(2, min(16, len(middle) // 2) + 1):  # at least two periods to compare
        if all(middle[i] == middle[i + p] for i in range(len(middle) - p)):
            return p
    return n


def short(name: str) -> str:
    return name if len(name) < 48 else name[:45] + "..."


def warm_runner(
    model_id: str,
    batch: int,
    prompt: int,
    replays: int,
    warm_steps: int,
    capacity: int | None = None,
    max_batch: int | None = None,
    variant: str = "greedy",
) -> Runner:
    """A graph Runner of model_id with random weights and room for `replays` more steps (or
    `capacity` slots) and `max_batch` rows (default `batch`): `batch` rows prefilled with one random
    prompt of `prompt` tokens, then `warm_steps` steps of `variant` ("topk": each row sampled with
    temperature 0.8, top-k 50, top-p 0.9, as the bench's sampled config)."""
    loaded = load_model(model_id, weights="random", device="cuda", dtype="bfloat16")
    rows = max(batch, max_batch or 1)
    runner = Runner(loaded, capacity=capacity or prompt + 64 + replays, max_batch=rows, mode="graph")
    ids = torch.randint(3, loaded.spec.vocab - 1, (prompt,)).tolist()
    for row in range(batch):
        runner.set_row(row, BENCH_SAMPLED if variant == "topk" else SamplingParams())
        runner.prefill(row, ids, 0, variant)
    for _ in range(warm_steps):
        runner.step(batch, variant, prompt)
    return runner


def profiled_steps(replay: Callable[[], None], replays: int) -> list[list[dict]]:
    """The kernels of `replays` calls of replay() (one decode step each), profiled: one list per
    step, in start order (step_kernels' fields)."""
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(replays):
            replay()
        torch.cuda.synchronize()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(path)
        kernels = step_kernels(path)
    per_step = len(kernels) // replays
    return [kernels[i * per_step : (i + 1) * per_step] for i in range(replays)]


def position_rows(steps: list[list[dict]]) -> list[dict]:
    """Per position in the step: name, grid and the medians over steps of dur, adds and overlap
    (the first kernel's adds are from the previous step's end)."""
    rows = []
    for i in range(len(steps[0])):
        durs, adds, overlaps = [], [], []
        for s, step in enumerate(steps):
            k = step[i]
            prev = step[i - 1] if i else (steps[s - 1][-1] if s else None)
            durs.append(k["end"] - k["start"])
            if prev is not None:
                adds.append(k["end"] - prev["end"])
                overlaps.append(prev["end"] - k["start"])
        rows.append(
            {
                "i": i,
                "name": steps[0][i]["name"],
                "grid": list(steps[0][i]["grid"]),
                "dur": round(statistics.median(durs), 2),
                "adds": round(statistics.median(adds), 2) if adds else None,
                "overlap": round(statistics.median(overlaps), 2) if overlaps else None,
            }
        )
    return rows


def role_rows(rows: list[dict]) -> tuple[int, list[dict]]:
    """(kernels per layer p, per role in a layer: position modulo p over the middle half of the
    step, medians of dur, adds and overlap)."""
    p = period([r["name"] for r in rows])
    roles: dict[int, list[dict]] = {}
    for r in rows[len(rows) // 4 : 3 * len(rows) // 4]:
        roles.setdefault(r["i"] % p, []).append(r)
    return p, [
        {
            "role": j,
            "name": v[0]["name"],
            "grid": v[0]["grid"],
            "dur": round(statistics.median(x["dur"] for x in v), 2),
            "adds": round(statistics.median(x["adds"] for x in v), 2),
            "overlap": round(statistics.median(x["overlap"] for x in v), 2),
        }
        for j, v in sorted(roles.items())
    ]


def compare_steps(slow: list[dict], fast: list[dict], shown: int = 16) -> dict:
    """Two position_rows of the same step (a slow and a fast reading) -> {"positions": per position
    the adds and durations of both and their difference, "roles": per role in a layer the adds of
    both}, printed as two tables: the `shown` positions that differ most, then the roles."""
    diff = [
        {"i": a["i"], "name": a["name"], "grid": a["grid"], "slow_adds": a["adds"], "fast_adds": b["adds"],
         "slow_dur": a["dur"], "fast_dur": b["dur"], "delta": round((a["adds"] or 0) - (b["adds"] or 0), 2)}
        for a, b in zip(slow, fast)
    ]  # fmt: skip
    print(
        "\n| i | kernel | grid | adds slow | adds fast | delta us | dur slow | dur fast |\n|---|---|---|---|---|---|---|---|"
    )
    for d in sorted(diff, key=lambda d: -abs(d["delta"]))[:shown]:
        print(f"| {d['i']} | {short(d['name'])} | {d['grid']} | {d['slow_adds']} | {d['fast_adds']} | "
              f"{d['delta']:+.2f} | {d['slow_dur']} | {d['fast_dur']} |")  # fmt: skip
    period_, slow_roles = role_rows(slow)
    _, fast_roles = role_rows(fast)
    print(
        f"\nper role in a layer (period {period_}):\n| role | kernel | adds slow | adds fast | delta us |\n|---|---|---|---|---|"
    )
    for a, b in zip(slow_roles, fast_roles):
        print(
            f"| {a['role']} | {short(a['name'])} | {a['adds']} | {b['adds']} | {a['adds'] - b['adds']:+.2f} |"
        )
    return {"positions": diff, "roles": {"slow": slow_roles, "fast": fast_roles}}


def compare_slowest(
    times_ms: list[float], what: str, profile: Callable[[int], list[list[dict]]], min_us: float
) -> dict:
    """The slowest and fastest of several timings of one step (graphs, runners: `what`), their
    spread printed; where it reaches min_us, profile(i) (profiled_steps of reading i) of both,
    compared by compare_steps -> {slow, fast, spread_us[, positions, roles]}."""
    slow = max(range(len(times_ms)), key=times_ms.__getitem__)
    fast = min(range(len(times_ms)), key=times_ms.__getitem__)
    spread_us = (times_ms[slow] - times_ms[fast]) * 1e3
    print(f"\nspread {spread_us:.1f} us (slowest {what} {slow}, fastest {fast})")
    result = {"slow": slow, "fast": fast, "spread_us": spread_us}
    if spread_us >= min_us:
        result.update(compare_steps(position_rows(profile(slow)), position_rows(profile(fast))))
    return result


def timeline(
    model_id: str, batch: int, prompt: int, replays: int, capacity: int | None = None, variant: str = "greedy"
) -> dict:
    runner = warm_runner(model_id, batch, prompt, replays, 20, capacity, variant=variant)
    steps = profiled_steps(lambda: runner.step(batch, variant, prompt), replays)
    runner_capacity = runner.capacity
    runner.release()
    rows = position_rows(steps)
    step_us = statistics.median(s[-1]["end"] - s[0]["end"] for s in steps[1:]) if replays > 1 else None
    p, roles = role_rows(rows)
    return {
        "model": model_id,
        "batch": batch,
        "variant": variant,
        "prompt": prompt,
        "capacity": runner_capacity,
        "kernels_per_step": len(rows),
        "step_us_end_to_end": round(step_us, 1) if step_us else None,
        "period": p,
        "roles": roles,
        "kernels": rows,
    }


def print_result(res: dict) -> None:
    print(f"\n### {res['model']}, batch {res['batch']}, {res['variant']}, prompt {res['prompt']}, capacity {res['capacity']}: "
          f"{res['kernels_per_step']} kernels, "
          f"step {res['step_us_end_to_end']} us (last end to last end), {res['period']} kernels per layer")  # fmt: skip
    _table("role", res["roles"])
    edge = [r for r in res["kernels"] if r["i"] < res["period"] + 3 or r["i"] >= res["kernels_per_step"] - 6]
    print("\nfirst and last kernels of the step:")
    _table("i", edge)


def _table(first: str, rows: list[dict]) -> None:
    """rows as a markdown table: `first` (the role, or the position in the step), then the timings."""
    print(f"| {first} | kernel | grid | dur us | adds us | overlap us |\n|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r[first]} | {short(r['name'])} | {r['grid']} | {r['dur']} | {r['adds']} | {r['overlap']} |"
        )


DEV_MODELS = ["meta-llama/Llama-3.2-1B-Instruct", "Qwen/Qwen3-1.7B", "google/gemma-3-1b-it"]


def step_args(
    description: str,
    batches: list[int],
    replays: int,
    extra: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.Namespace:
    """--model (repeatable, default the dev models), --batch (repeatable, default `batches`),
    --prompt, --replays, --out, and what `extra` adds: the command line of the scripts that replay
    captured steps."""
    ap = argparse.ArgumentParser(description=description)
    if extra is not None:
        extra(ap)
    ap.add_argument("--model", action="append", help="repeatable; default: the three dev models")
    ap.add_argument("--batch", type=int, action="append", help=f"repeatable; default: {batches}")
    ap.add_argument("--prompt", type=int, default=256)
    ap.add_argument("--replays", type=int, default=replays)
    ap.add_argument("--capacity", type=int, help="KV cache slots (default: what the replays need)")
    ap.add_argument("--out")
    args = ap.parse_args()
    args.model, args.batch = args.model or DEV_MODELS, args.batch or batches
    return args


def main() -> None:
    args = step_args(
        __doc__.splitlines()[0],
        [1],
        30,
        lambda ap: ap.add_argument("--variant", default="greedy", choices=("greedy", "topk")),
    )
    results = []
    gbs = copy_bandwidth_gbs(torch.device("cuda"))  # layer_budget.py's denominator
    for model_id in args.model:
        for batch in args.batch:
            res = timeline(model_id, batch, args.prompt, args.replays, args.capacity, args.variant)
            res["bandwidth_gbs"] = round(gbs, 1) if gbs else None
            print_result(res)
            results.append(res)
            torch.cuda.empty_cache()
    if args.out:
        json.dump(results, open(args.out, "w"), indent=1)


if __name__ == "__main__":
    main()
