"""GPU: one decode step captured in several graphs, each timed, then the kernels of the slowest and
the fastest compared position by position.

On one H100 machine Qwen3-1.7B's batch-1 step ran 1.444 or 1.491 ms depending on the captured
graph, not on the runner or the process (scripts/bench_step_overhead.py). Each graph here is the
runner's own greedy step captured into a fresh pool (its temporaries at new addresses; weights,
cache and buffers shared), so a spread between them is the capture's doing. Where the slowest is
`--min-us` slower than the fastest (queued), both are profiled and the positions whose "adds"
differ most are printed (step_timeline.py's columns). Each graph is also timed one replay at a time
(isolated, median: profile_step.py's way), which on one machine read Qwen3 ~40 us faster.

  python3 scripts/graph_modes.py [--model Qwen/Qwen3-1.7B] [--graphs 8] --out $OUT/graph_modes.json
"""

from __future__ import annotations

import argparse
import json

import torch
from step_timeline import compare_slowest, profiled_steps, warm_runner

from graphs.pool import GraphPool
from runtime.bench.step_timing import isolated_ms, queued_ms

KEY = (1, "greedy")
PROMPT = 256


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="Qwen/Qwen3-1.7B")
    ap.add_argument("--graphs", type=int, default=8)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=2, help="times each graph is timed, in turn")
    ap.add_argument("--replays", type=int, default=20, help="profiled replays of the two compared")
    ap.add_argument("--min-us", type=float, default=10.0)
    ap.add_argument("--max-batch", type=int, default=1, help="the runner's rows (its cache and buffers)")
    ap.add_argument("--capacity", type=int, default=2048, help="KV cache slots (they set the split count)")
    ap.add_argument("--out")
    args = ap.parse_args()
    # every timing and profile starts from the same 256-token prompt (the step's time grows with the
    # position); by default 2048 slots, as the goals runs
    runner = warm_runner(args.model, 1, PROMPT, 0, 8, capacity=args.capacity, max_batch=args.max_batch)
    ids = torch.randint(3, runner.spec.vocab - 1, (PROMPT,)).tolist()

    def from_prompt(measure):
        runner.prefill(0, ids, 0, "greedy")
        return measure()

    pools = [runner.pool]
    for _ in range(args.graphs):
        pool = GraphPool(runner._step)
        pool.capture([KEY])
        pools.append(pool)
    times = [
        [from_prompt(lambda p=pool: queued_ms(lambda: p.replay(KEY), args.steps)) for pool in pools]
        for _ in range(args.rounds)
    ]
    isolated = [from_prompt(lambda p=pool: isolated_ms(lambda: p.replay(KEY), args.steps)) for pool in pools]
    per_graph = [min(t[g] for t in times) for g in range(len(pools))]
    print("| graph | " + " | ".join(f"queued, round {r} ms" for r in range(args.rounds)) + " | isolated ms |")
    print("|---|" + "---|" * (args.rounds + 1))
    for g in range(len(pools)):
        label = "runner's" if g == 0 else str(g)
        print(f"| {label} | " + " | ".join(f"{t[g]:.4f}" for t in times) + f" | {isolated[g]:.4f} |")
    result = {
        "model": args.model, "max_batch": args.max_batch, "capacity": args.capacity,
        "times_ms": times, "isolated_ms": isolated,
    }  # fmt: skip
    result.update(
        compare_slowest(
            per_graph,
            "graph",
            lambda g: from_prompt(lambda: profiled_steps(lambda: pools[g].replay(KEY), args.replays)),
            args.min_us,
        )
    )
    for pool in pools[1:]:
        pool.release()
    runner.release()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
