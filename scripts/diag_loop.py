"""GPU diagnostic: 64 decode steps, eager `_step` vs graph replay, from one cloned state; then the
same prompts on a second (eager) runner. Locates where graph and eager token streams part."""

from __future__ import annotations

import sys

import torch

from runtime.engine.runner import Runner
from runtime.engine.sampler import SamplingParams
from runtime.models.loader import load_model


def state(r):
    b = r.buffers
    return [*r.cache.k, *r.cache.v, b.tokens, b.positions, b.seen, b.temperature, b.top_k, b.top_p,
            b.repetition_penalty, b.seed]  # fmt: skip


def run(model_id: str, batch: int, steps: int = 64) -> None:
    loaded = load_model(model_id, weights="random", device="cuda", dtype="bfloat16")
    g = torch.Generator().manual_seed(0)
    prompts = [
        torch.randint(3, loaded.spec.vocab - 1, (n,), generator=g).tolist()
        for n in [17, 5, 40, 23, 8, 3, 30, 12][:batch]
    ]
    runners = {m: Runner(loaded, capacity=700, max_batch=8, mode=m) for m in ("graph", "eager")}
    streams = {}
    for _mode, r in runners.items():
        for row, p in enumerate(prompts):
            r.set_row(row, SamplingParams())
            r.prefill(row, p, 0)
    bucket = runners["graph"].bucket(batch)
    gr = runners["graph"]
    saved = [t.clone() for t in state(gr)]
    for label, fn in [("graph-eager-step", lambda: gr._step((bucket, "greedy"))),
                      ("graph-eager-step-again", lambda: gr._step((bucket, "greedy"))),
                      ("graph-replay", lambda: gr.step(bucket, "greedy")),
                      ("eager-runner", lambda: runners["eager"]._step((bucket, "greedy")))]:  # fmt: skip
        if label != "eager-runner":
            for t, s in zip(state(gr), saved):
                t.copy_(s)
        buf = runners["eager"].buffers if label == "eager-runner" else gr.buffers
        out = []
        for _ in range(steps):
            fn()
            out.append(buf.tokens[:batch].clone())
        streams[label] = torch.stack(out).cpu()
    base = streams["graph-eager-step"]
    for label, s in streams.items():
        diff = (s != base).any(dim=1).nonzero()
        print(f"{model_id} B{batch} {label:22s} first differing step: {int(diff[0]) if len(diff) else None}")
    eg = runners["eager"]
    print("  caches equal after prefill+steps (graph-runner vs eager-runner):",
          all(torch.equal(a[:batch], b[:batch]) for a, b in zip(gr.cache.k, eg.cache.k)))  # fmt: skip
    gr.release()


if __name__ == "__main__":
    import os

    if os.environ.get("DET"):
        torch.use_deterministic_algorithms(True, warn_only=True)
        print("deterministic algorithms on")
    for mid in sys.argv[1:] or ["Qwen/Qwen3-1.7B", "meta-llama/Llama-3.2-1B-Instruct"]:
        for b in (1, 8):
            run(mid, b)
