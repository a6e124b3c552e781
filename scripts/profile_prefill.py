"""GPU: where the time to first token goes, per dev architecture (random weights, bf16).

For each prompt length: the wall time of Runner.prefill (what the bench's TTFT measures: the
prefill, the first pick and its host sync), median of --reps, then one profiled prefill: the sum
of kernel device times (busy) and the top kernels. wall >> busy means the host (Python launches)
is the bound; wall ~ busy means the kernels are.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from runtime.bench.kernel_times import kernel_times
from runtime.engine.runner import Runner
from runtime.models.loader import load_model

ARCHS = ["meta-llama/Llama-3.2-1B-Instruct", "Qwen/Qwen3-1.7B", "google/gemma-3-1b-it"]


def prefill_ms(runner: Runner, ids: list[int], reps: int) -> float:
    times = []
    for _ in range(reps):
        torch.cuda.synchronize()
        start = time.perf_counter()
        runner.prefill(0, ids, 0, "greedy")  # ends in a host sync (the first token)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def profiled(runner: Runner, ids: list[int]) -> tuple[float, list]:
    times = kernel_times(lambda: runner.prefill(0, ids, 0, "greedy"))
    top = sorted(([k, round(t, 1), c] for k, (t, c) in times.items()), key=lambda r: -r[1])
    return sum(t for t, _ in times.values()) / 1e3, top


SETTINGS = {  # --ab: name -> the environment a runner is built and prefilled under
    "default": {},
    "eager prefill": {"RUNTIME_PREFILL_GRAPHS": "0"},
    "SDPA GQA by copying K and V": {"RUNTIME_SDPA_GQA": "copy"},
}


def ab(model_id: str, lengths: list[int], reps: int) -> list[dict]:
    """TTFT wall ms per prompt length under each of SETTINGS, same process and weights."""
    loaded = load_model(model_id, weights="random", device="cuda", dtype="bfloat16")
    rows = []
    for name, env in SETTINGS.items():
        os.environ.update(env)
        try:
            runner = Runner(loaded, capacity=max(lengths) + 64, max_batch=1, mode="graph")
            for n in lengths:
                ids = torch.randint(3, loaded.spec.vocab - 1, (n,)).tolist()
                prefill_ms(runner, ids, 2)
                rows.append({"model": model_id, "setting": name, "prompt": n,
                             "wall_ms": round(prefill_ms(runner, ids, reps), 3)})  # fmt: skip
            runner.release()
        finally:
            for key in env:
                del os.environ[key]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", action="append", help="repeatable; default: the three dev models")
    ap.add_argument("--lengths", default="128,1024")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--ab", action="store_true", help="TTFT under each of SETTINGS instead of the profile")
    ap.add_argument("--out")
    args = ap.parse_args()
    lengths = [int(n) for n in args.lengths.split(",")]
    if args.ab:
        table = [r for m in args.model or ARCHS for r in ab(m, lengths, args.reps)]
        if args.out:
            with open(args.out, "w") as f:
                json.dump(table, f, indent=2)
        print("| model | setting | prompt | TTFT wall ms |\n|---|---|---|---|")
        for r in table:
            print(f"| {r['model']} | {r['setting']} | {r['prompt']} | {r['wall_ms']:.2f} |")
        return
    rows = []
    for model_id in args.model or ARCHS:
        loaded = load_model(model_id, weights="random", device="cuda", dtype="bfloat16")
        runner = Runner(loaded, capacity=max(lengths) + 64, max_batch=1, mode="graph")
        for n in lengths:
            ids = torch.randint(3, loaded.spec.vocab - 1, (n,)).tolist()
            prefill_ms(runner, ids, 2)  # warm-up: kernel compiles, allocator
            wall = prefill_ms(runner, ids, args.reps)
            busy, top = profiled(runner, ids)
            rows.append({"model": model_id, "prompt": n, "wall_ms": round(wall, 3), "busy_ms": round(busy, 3),
                         "launches": sum(c for _, _, c in top), "top": top[:12]})  # fmt: skip
            print(f"\n### {model_id}, {n} tokens: wall {wall:.2f} ms, kernels {busy:.2f} ms")
            print("| kernel | us | n |\n|---|---|---|")
            for name, t, c in top[:12]:
                print(f"| {name[:90]} | {t:.1f} | {c} |")
        runner.release()
        del runner, loaded
        torch.cuda.empty_cache()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=2)
    print("\n| model | prompt | TTFT wall ms | kernel busy ms | launches |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['prompt']} | {r['wall_ms']:.2f} | {r['busy_ms']:.2f} | {r['launches']} |")


if __name__ == "__main__":
    main()
