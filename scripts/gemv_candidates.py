"""Time every GEMV candidate tune() would time, alone (L2 flushed), for the shapes a tuning file holds,
on this card; print each shape's heuristic, fastest and the file's blocks with their times.

The start-up tuner keeps the fastest alone; an in-step A/B may prefer other blocks (under PDL a
launch overlaps its neighbours). This shows how far apart the contenders are when timed alone, the
margin a rule such as "keep the heuristic unless a candidate beats it by X%" would need.
  python scripts/gemv_candidates.py runtime/kernels/tuned/nvidia-h100-80gb-hbm3.json --out timings.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from runtime.kernels import gemv_tuning, tuning_store


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("tuning_file", help="a shipped tuning file: its shapes, and its blocks to compare")
    ap.add_argument("--out", help="JSON: one row per shape with every candidate's us")
    ap.add_argument(
        "--picks-out", help="a tuning file of the fastest blocks, for profile_step.py --blocks-from"
    )
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA card here: the candidates are timed on the GPU")
    got = tuning_store._read(Path(args.tuning_file))
    if got is None:
        raise SystemExit(f"{args.tuning_file}: no readable tuning file there")
    rows, picks = [], {}
    print(
        "| op | N | K | heuristic | us | fastest | us | file's | us |\n|---|---|---|---|---|---|---|---|---|"
    )
    for (op, N, K, dtype), (listed, _) in got[1].items():
        gemv_tuning.tune(op, N, K, dtype, "cuda")
        timings = gemv_tuning.TIMINGS[(op, N, K, dtype)]
        heuristic = gemv_tuning.candidates(op, N, K, dtype)[0]
        best = min(timings, key=timings.get)
        picks[(op, N, K, dtype)] = (best, timings[best])
        rows.append(
            {"op": op, "N": N, "K": K, "heuristic": heuristic, "fastest": best, "file": tuple(listed),
             "us": {"/".join(map(str, c)): round(t, 2) for c, t in timings.items()}}
        )  # fmt: skip
        cells = [
            f"{'/'.join(map(str, c))} | {timings.get(tuple(c), float('nan')):.2f}"
            for c in (heuristic, best, listed)
        ]
        print(f"| {op} | {N} | {K} | " + " | ".join(cells) + " |")
    if args.out:
        Path(args.out).write_text(json.dumps({"card": torch.cuda.get_device_name(), "rows": rows}, indent=1))
    if args.picks_out:
        here = tuning_store.card("cuda")
        head = {"format": tuning_store.FORMAT, "card": here.as_json(),
                "source": f"scripts/gemv_candidates.py {args.tuning_file}: the fastest alone"}  # fmt: skip
        Path(args.picks_out).write_text(tuning_store.dumps(head, picks))


if __name__ == "__main__":
    main()
