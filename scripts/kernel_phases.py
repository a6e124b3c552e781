"""GPU: where the decode step's kernels spend their time, program by program and phase by phase.

Builds each model with random weights and the phase clock on (RUNTIME_PHASE_CLOCK,
runtime/kernels/phase_clock.py) for the kernel families asked for, captures its decode graphs,
replays steps at a batch size, and reads back what every program of every clocked launch stamped:
its SM, when it started relative to the launch's first program, and the time between its marks.
  attention (the split kernel):
    entry -> positioned    the row's position read (the live length known);
    positioned -> waited   the first cache block's loads issued (and the tables, by default), then
                           the PDL wait for the qkv product;
    waited -> prologue     the query group and the new key / value loaded, normed, rotated;
    prologue -> loop       the block loop (the first block's data arriving included);
    loop -> stored         the partials' stores issued.
  gemv (the batch-1 GEMVs; labels name the prologue and the weight's shape):
    entry -> first_tile    the first weight tile's loads issued;
    first_tile -> waited   the PDL wait for the previous kernel;
    waited -> prologue     the row statistics (norm prologues);
    prologue -> loop       the K loop (the first tile's data arriving included);
    loop -> stored         the reduction and the output's store.
Medians over programs, then over the launches of the same label and the replays. The clocked
build reduces a value per mark, so its times are a little longer than the real kernel's.

  python3 scripts/kernel_phases.py [--kernels attention,gemv] [--model M] [--batch 1 --batch 16] --out $OUT/phases.json
"""

from __future__ import annotations

import json
import os
import statistics

import torch
from step_timeline import step_args, warm_runner

from runtime.kernels import phase_clock

COLUMNS = (
    "programs", "span_us", "start_median_us", "start_max_us", "late_share", "program_us", "most_per_sm",
    "most_resident", "ghz",
)  # fmt: skip


def phases(model_id: str, batch: int, prompt: int, replays: int, capacity: int | None = None) -> list[dict]:
    phase_clock.clear()
    runner = warm_runner(model_id, batch, prompt, replays, 10, capacity)
    found: dict[tuple[str, str], list[dict]] = {}
    for _ in range(replays):
        phase_clock.zero_all()
        runner.step(batch, "greedy", prompt)
        torch.cuda.synchronize()
        for family, label, buf in phase_clock.records():
            summary = phase_clock.summarize(buf.cpu(), phase_clock.MARKS[family])
            if summary is not None:  # None: not launched by this replay
                found.setdefault((family, label), []).append(summary)
    runner.release()
    phase_clock.clear()
    rows = []
    for (family, label), summaries in found.items():
        row = {
            "model": model_id,
            "batch": batch,
            "family": family,
            "label": label,
            "launches": len(summaries),
        }
        for col in summaries[0]:
            values = [s[col] for s in summaries if s[col] is not None]
            row[col] = round(statistics.median(values), 3) if values else None
        rows.append(row)
    return rows


def print_tables(results: list[dict]) -> None:
    """One markdown table per kernel family, its phases as columns."""
    for family, marks in phase_clock.MARKS.items():
        rows = [r for r in results if r["family"] == family]
        if not rows:
            continue
        steps = [f"{a}_to_{b}_us" for a, b in zip(marks, marks[1:])]
        head = ("model", "batch", "label", "launches") + COLUMNS[:4] + tuple(steps) + COLUMNS[4:]
        print(f"\n### {family}\n| " + " | ".join(h.removesuffix("_us") for h in head) + " |")
        print("|" + "---|" * len(head))
        for r in rows:
            print("| " + " | ".join(str(r.get(h)).split("/")[-1] for h in head) + " |")


def main() -> None:
    args = step_args(
        __doc__.splitlines()[0],
        [1, 16],
        20,
        lambda ap: ap.add_argument(
            "--kernels", default="attention", help="families to clock: attention, gemv"
        ),
    )
    os.environ[phase_clock.ENV] = args.kernels  # read at each launch: before the first
    phase_clock.enabled("")  # an unknown family fails here, before any model loads
    results = []
    for model_id in args.model:
        for batch in args.batch:
            results += phases(model_id, batch, args.prompt, args.replays, args.capacity)
            torch.cuda.empty_cache()
    print_tables(results)
    if args.out:
        json.dump(results, open(args.out, "w"), indent=1)


if __name__ == "__main__":
    main()
