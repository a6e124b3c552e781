"""GPU: where the decode attention kernel's programs spend their time, phase by phase.

Builds each model with random weights and RUNTIME_PHASE_CLOCK=1 (runtime/kernels/phase_clock.py),
captures its decode graphs, replays steps at a batch size, and reads back what every program of
every layer's attention split kernel stamped: its SM, when it started relative to the launch's
first program, and the time between its marks:
  entry -> positioned   the row's position read (the live length known);
  positioned -> waited  the first cache block's loads issued (and the tables, by default), then
                        the PDL wait for the qkv product;
  waited -> prologue  the query group and the new key / value loaded, normed, rotated;
  prologue -> loop    the block loop (the first block's data arriving included);
  loop -> stored      the partials' stores issued.
Medians over programs, then over layers and replays, per launch shape (Gemma's sliding and
global layers have different grids). The clocked build does a reduction per mark, so its times
are a little longer than the real kernel's.

  python3 scripts/attention_phases.py [--model M] [--batch 1 --batch 16] [--prompt 256] --out $OUT/phases.json
"""

from __future__ import annotations

import json
import os
import statistics

os.environ["RUNTIME_PHASE_CLOCK"] = "1"  # before any launch records its buffer

import torch  # noqa: E402
from step_timeline import step_args  # noqa: E402  (scripts/ is this script's import path)

from runtime.engine.runner import Runner  # noqa: E402
from runtime.kernels import phase_clock  # noqa: E402
from runtime.models.loader import load_model  # noqa: E402

COLUMNS = (
    "programs", "span_us", "start_median_us", "start_max_us", "entry_to_positioned_us", "positioned_to_waited_us",
    "waited_to_prologue_us", "prologue_to_loop_us", "loop_to_stored_us", "program_us", "most_per_sm", "ghz",
)  # fmt: skip


def phases(model_id: str, batch: int, prompt: int, replays: int) -> list[dict]:
    phase_clock.clear()
    loaded = load_model(model_id, weights="random", device="cuda", dtype="bfloat16")
    runner = Runner(loaded, capacity=prompt + 64 + replays, max_batch=batch, mode="graph")
    ids = torch.randint(3, loaded.spec.vocab - 1, (prompt,)).tolist()
    for row in range(batch):
        runner.prefill(row, ids, 0, "greedy")
    for _ in range(10):
        runner.step(batch, "greedy")
    by_shape: dict[int, list[dict]] = {}
    for _ in range(replays):
        phase_clock.zero_all()
        runner.step(batch, "greedy")
        torch.cuda.synchronize()
        for _, buf in phase_clock.records():
            summary = phase_clock.summarize(buf.cpu())  # None: not launched by this replay
            if summary is not None:
                by_shape.setdefault(buf.shape[0], []).append(summary)
    runner.release()
    phase_clock.clear()
    rows = []
    for grid, found in sorted(by_shape.items()):
        row = {"model": model_id, "batch": batch, "grid": grid, "launches": len(found)}
        for col in COLUMNS:
            values = [f[col] for f in found if f[col] is not None]
            row[col] = round(statistics.median(values), 3) if values else None
        rows.append(row)
    return rows


def main() -> None:
    args = step_args(__doc__.splitlines()[0], [1, 16], 20)
    results = []
    for model_id in args.model:
        for batch in args.batch:
            results += phases(model_id, batch, args.prompt, args.replays)
            torch.cuda.empty_cache()
    head = ("model", "batch", "grid", "launches") + COLUMNS
    print("| " + " | ".join(h.removesuffix("_us") for h in head) + " |")
    print("|" + "---|" * len(head))
    for r in results:
        print("| " + " | ".join(str(r[h]).split("/")[-1] for h in head) + " |")
    if args.out:
        json.dump(results, open(args.out, "w"), indent=1)


if __name__ == "__main__":
    main()
