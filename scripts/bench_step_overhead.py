"""GPU: what a decode step costs outside its kernels, per dev architecture (random weights, bf16).

The bench's step time (engine/generate.py) is the gap between the events of consecutive steps, with
the host running ahead: it holds the graph replay, the next token's copy into pinned memory and the
boundary between two graphs. Each of these is timed here in one process, at batch 1 greedy after a
`--prompt`-token prefill, over `--steps` steps (each way once per trial, `--trials` trials):
  isolated   event, replay, event, wait (profile_step.py's step time: the launch latency shows);
  pipelined  `--steps` replays queued back to back between two events, per step;
  copied     the same with the token row copied to pinned memory after each replay (generate's loop);
  generate   runtime.engine.generate's median step (what `runtime bench` reports);
  two/graph  pipelined, with two steps captured in one graph: 2 x (pipelined - this) is what one
             boundary between two graphs costs.
copied - pipelined is the copy's share of the step. Each trial times a runner whose step writes its
tokens into the host's ring (runtime/kernels/publish.py, the default) and one without
(RUNTIME_TOKEN_RING=0), whose generate copies them after each step: the last table compares the two.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics

import torch

from graphs.pool import GraphPool
from runtime.bench.step_timing import isolated_ms, queued_ms
from runtime.engine.generate import generate
from runtime.engine.runner import Runner
from runtime.engine.sampler import SamplingParams
from runtime.engine.spill_graphs import graph_key
from runtime.models.loader import load_model

ARCHS = ["meta-llama/Llama-3.2-1B-Instruct", "Qwen/Qwen3-1.7B", "google/gemma-3-1b-it"]


def copied_ms(runner: Runner, steps: int, position: int) -> float:
    """queued_ms of the greedy step at `position`, each followed by the token row's copy into pinned
    memory (the copy generate made before the ring), a row of its own per call."""
    pinned = iter(torch.empty((steps + 3, 1), dtype=torch.int64, pin_memory=True))

    def step_and_copy() -> None:
        runner.step(1, "greedy", position)
        next(pinned).copy_(runner.buffers.tokens[:1], non_blocking=True)

    return queued_ms(step_and_copy, steps)


def two_per_graph_ms(runner: Runner, steps: int, position: int) -> float:
    """Mean ms per step of `steps` steps replayed two to a graph (a second pool capturing two of the
    runner's greedy steps at `position` back to back), queued: half the graph boundaries."""
    key = graph_key(1, "greedy", position, runner.spill_window)  # the step runner.step replays there
    pool = GraphPool(lambda key: (runner._step(key), runner._step(key)))
    pool.capture([key])
    ms = queued_ms(lambda: pool.replay(key), steps // 2, warmup=2) / 2
    pool.release()
    return ms


def measure(model_id: str, prompt: int, steps: int, trials: int) -> list[dict]:
    """Each trial: a runner whose step writes its tokens into the host ring (the default), then one
    without (RUNTIME_TOKEN_RING=0: generate copies them after each step), each way above."""
    loaded = load_model(model_id, weights="random", device="cuda", dtype="bfloat16")
    ids = torch.randint(3, loaded.spec.vocab - 1, (prompt,)).tolist()
    rows = []
    for trial in range(trials):
        for ring in ("auto", "0"):
            os.environ["RUNTIME_TOKEN_RING"] = ring  # read as the runner is built
            runner = Runner(loaded, capacity=prompt + steps + 64, max_batch=1, mode="graph")
            del os.environ["RUNTIME_TOKEN_RING"]
            greedy = functools.partial(runner.step, 1, "greedy", prompt)  # generate's graph there
            row = {"model": model_id, "trial": trial, "ring": runner.token_ring is not None}
            runner.prefill(0, ids, 0, "greedy")
            row["isolated"] = isolated_ms(greedy, steps)
            runner.prefill(0, ids, 0, "greedy")
            row["pipelined"] = queued_ms(greedy, steps)
            runner.prefill(0, ids, 0, "greedy")
            row["copied"] = copied_ms(runner, steps, prompt)
            row["generate"] = statistics.median(generate(runner, [ids], SamplingParams(), steps + 1).step_ms)
            runner.prefill(0, ids, 0, "greedy")
            row["two_per_graph"] = two_per_graph_ms(runner, steps, prompt)
            rows.append({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
            runner.release()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", help="repeatable; default: the three dev models")
    ap.add_argument("--prompt", type=int, default=256)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--out")
    args = ap.parse_args()
    rows = [r for m in args.model or ARCHS for r in measure(m, args.prompt, args.steps, args.trials)]
    print(
        "| model | trial | ring | isolated ms | pipelined ms | copied ms | generate ms | two/graph ms | copy us | boundary us |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        copy_us, boundary_us = (
            (r["copied"] - r["pipelined"]) * 1e3,
            2 * (r["pipelined"] - r["two_per_graph"]) * 1e3,
        )
        print(f"| {r['model'].split('/')[-1]} | {r['trial']} | {'on' if r['ring'] else 'off'} | {r['isolated']:.4f} | "
              f"{r['pipelined']:.4f} | {r['copied']:.4f} | {r['generate']:.4f} | {r['two_per_graph']:.4f} | "
              f"{copy_us:+.1f} | {boundary_us:+.1f} |")  # fmt: skip
    # what the bench reports, with the ring against without it, per trial
    on = {(r["model"], r["trial"]): r["generate"] for r in rows if r["ring"]}
    off = {(r["model"], r["trial"]): r["generate"] for r in rows if not r["ring"]}
    print(
        "\n| model | trial | generate, ring ms | generate, copies ms | ring - copies us |\n|---|---|---|---|---|"
    )
    for key in sorted(on.keys() & off.keys()):
        print(
            f"| {key[0].split('/')[-1]} | {key[1]} | {on[key]:.4f} | {off[key]:.4f} | {(on[key] - off[key]) * 1e3:+.1f} |"
        )
    if args.out:
        with open(args.out, "w") as f:
            json.dump(
                {"rows": rows, "torch": torch.__version__, "card": torch.cuda.get_device_name()}, f, indent=2
            )


if __name__ == "__main__":
    main()
