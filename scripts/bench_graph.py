"""GPU: per-step decode time of our graph mode vs our eager mode, in one process, per dev
architecture (random weights, bf16, batch 1, prompt 256, 256 new tokens, EOS ignored), with
capture time and memory per bucket. Prints a markdown table last."""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from runtime.engine.generate import generate
from runtime.engine.runner import Runner
from runtime.engine.sampler import SamplingParams
from runtime.models.loader import load_model

ARCHS = ["meta-llama/Llama-3.2-1B-Instruct", "Qwen/Qwen3-1.7B", "google/gemma-3-1b-it"]


def p50(xs):
    return statistics.median(xs)


def run(model_id: str, prompt: int, new: int, trials: int, max_batch: int) -> dict:
    loaded = load_model(model_id, weights="random", device="cuda", dtype="bfloat16")
    ids = torch.randint(3, loaded.spec.vocab - 1, (prompt,)).tolist()
    row = {"model": model_id, "load_s": round(loaded.load_s, 2)}
    for mode in ("graph", "eager"):
        torch.cuda.synchronize()
        start = time.perf_counter()
        runner = Runner(loaded, capacity=prompt + new, max_batch=max_batch, mode=mode)
        setup = time.perf_counter() - start
        generate(runner, [ids], SamplingParams(), 16)  # warm-up
        steps, ttfts = [], []
        for _ in range(trials):
            res = generate(runner, [ids], SamplingParams(), new)
            steps.append(p50(res.step_ms))
            ttfts.append(res.ttft_ms)
        row[f"{mode}_step_ms"] = round(p50(steps), 4)
        row[f"{mode}_ttft_ms"] = round(p50(ttfts), 2)
        if mode == "graph":
            row["capture_s"] = round(runner.capture_s, 3)
            row["setup_s"] = round(setup, 3)
            row["capture"] = [(s.key, round(s.capture_s, 3), round(s.pool_mb, 1)) for s in runner.pool.stats]
            row["peak_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
        runner.release()
    del loaded
    torch.cuda.empty_cache()
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompt", type=int, default=256)
    ap.add_argument("--new", type=int, default=256)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--max-batch", type=int, default=64)
    ap.add_argument("--out")
    args = ap.parse_args()
    rows = [run(m, args.prompt, args.new, args.trials, args.max_batch) for m in ARCHS]
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=2)
    print("| model | graph ms/step | eager ms/step | speed-up | capture s (all buckets) | ttft ms (graph) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['graph_step_ms']:.3f} | {r['eager_step_ms']:.3f} | "
              f"{r['eager_step_ms'] / r['graph_step_ms']:.2f}x | {r['capture_s']:.2f} | {r['graph_ttft_ms']:.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
