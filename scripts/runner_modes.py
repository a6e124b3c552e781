"""GPU: several runners on one set of weights, each step timed, with where each runner's cache and
buffers landed: does Qwen3's slow mode (a batch-1 step ~45 us slower on some runners) follow them?

graph_modes.py found every graph of one runner in the same mode; bench_step_overhead.py found two
runners of one process in different modes, on the same weights. What a runner owns alone is its KV
cache (one k and one v tensor per layer), its buffers and its graphs' pool. Each runner here is kept
alive while the next is built, so their allocations differ; per runner the table gives the step
(queued, then isolated) and the cache's layout: the first k address, whether each layer's k and v
are 2 MiB-aligned, and the spread of v - k per layer. The JSON holds every address. Where the
slowest runner is `--min-us` slower than the fastest (queued), both are profiled and compared kernel
by kernel (step_timeline.compare_steps), as graph_modes.py compares graphs.

  python3 scripts/runner_modes.py [--model Qwen/Qwen3-1.7B] [--runners 6] --out $OUT/runner_modes.json
"""

from __future__ import annotations

import argparse
import functools
import json

import torch
from step_timeline import compare_slowest, profiled_steps

from runtime.bench.step_timing import isolated_ms, queued_ms
from runtime.engine.runner import Runner
from runtime.models.loader import load_model

MIB2 = 2 << 20
KEY = (1, "greedy")


def layout(runner: Runner) -> dict:
    """Addresses of the runner's cache and buffers (ints) and a few summaries of them."""
    k = [t.data_ptr() for t in runner.cache.k]
    v = [t.data_ptr() for t in runner.cache.v]
    b = runner.buffers
    return {
        "k": k, "v": v, "tokens": b.tokens.data_ptr(), "positions": b.positions.data_ptr(),
        "k0_mib": round(k[0] / 2**20, 1),
        "aligned_2mib": sum(p % MIB2 == 0 for p in k + v),
        "v_minus_k_mib": sorted({round((b_ - a) / 2**20, 2) for a, b_ in zip(k, v)})[:4],
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="Qwen/Qwen3-1.7B")
    ap.add_argument("--runners", type=int, default=6)
    ap.add_argument("--prompt", type=int, default=256)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--capacity", type=int, default=2048)
    ap.add_argument("--replays", type=int, default=20, help="profiled replays of the two compared")
    ap.add_argument("--min-us", type=float, default=10.0)
    ap.add_argument("--out")
    args = ap.parse_args()
    loaded = load_model(args.model, weights="random", device="cuda", dtype="bfloat16")
    ids = torch.randint(3, loaded.spec.vocab - 1, (args.prompt,)).tolist()
    runners, rows = [], []
    for r in range(args.runners):
        runner = Runner(loaded, capacity=args.capacity, max_batch=1, mode="graph")
        runners.append(runner)  # kept: the next runner's allocations land elsewhere
        greedy = functools.partial(runner.step, 1, "greedy", args.prompt)  # generate's graph there
        runner.prefill(0, ids, 0, "greedy")
        queued = queued_ms(greedy, args.steps)
        runner.prefill(0, ids, 0, "greedy")
        isolated = isolated_ms(greedy, args.steps)
        rows.append(
            {"runner": r, "queued_ms": round(queued, 4), "isolated_ms": round(isolated, 4), **layout(runner)}
        )
    # the first runner again, after the others exist: a mode that follows the runner stays
    runners[0].prefill(0, ids, 0, "greedy")
    again = queued_ms(functools.partial(runners[0].step, 1, "greedy", args.prompt), args.steps)
    print(
        "| runner | queued ms | isolated ms | k[0] MiB | 2 MiB-aligned k, v | v - k MiB |\n|---|---|---|---|---|---|"
    )
    for row in rows:
        print(f"| {row['runner']} | {row['queued_ms']:.4f} | {row['isolated_ms']:.4f} | {row['k0_mib']} | "
              f"{row['aligned_2mib']} of {2 * len(row['k'])} | {row['v_minus_k_mib']} |")  # fmt: skip
    print(f"\nrunner 0 again, queued, after the others were built: {again:.4f} ms")
    result = {"model": args.model, "capacity": args.capacity, "rows": rows, "runner0_again_ms": again}

    def profile(r: int) -> list[list[dict]]:
        runners[r].prefill(0, ids, 0, "greedy")
        return profiled_steps(lambda: runners[r].pool.replay(KEY), args.replays)

    result.update(compare_slowest([row["queued_ms"] for row in rows], "runner", profile, args.min_us))
    for runner in runners:
        runner.release()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f)


if __name__ == "__main__":
    main()
