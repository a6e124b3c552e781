"""GPU diagnostic: one decode step of the real model, eager vs captured, from identical state.
Prints, per module in call order, whether its output is bit-identical, and the first that is not."""

from __future__ import annotations

import sys

import torch

from runtime.engine.runner import Runner
from runtime.models.loader import load_model


def main(model_id: str, batch: int) -> None:
    loaded = load_model(model_id, weights="random", device="cuda", dtype="bfloat16")
    runner = Runner(loaded, capacity=128, max_batch=batch, mode="eager")
    model, cache = loaded.model, runner.cache
    for row in range(batch):
        ids = torch.randint(3, loaded.spec.vocab - 1, (17 + 5 * row,)).tolist()
        runner.prefill(row, ids, 0)
    tokens, positions = runner.buffers.tokens[:batch].clone(), runner.buffers.positions[:batch].clone()
    saved = [t.clone() for t in cache.k + cache.v]

    records: list[tuple[str, torch.Tensor]] = []
    names = {m: n for n, m in model.named_modules()}

    def hook(mod, args, out):
        if isinstance(out, torch.Tensor):
            records.append((names[mod], out.clone()))

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    eager_logits = model.decode(tokens, positions, cache)
    eager_records = records[:]
    records.clear()
    for t, s in zip(cache.k + cache.v, saved):
        t.copy_(s)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        model.decode(tokens, positions, cache)
    torch.cuda.current_stream().wait_stream(side)
    records.clear()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        graph_logits = model.decode(tokens, positions, cache)
    for t, s in zip(cache.k + cache.v, saved):
        t.copy_(s)
    g.replay()
    torch.cuda.synchronize()
    for h in handles:
        h.remove()
    print(f"{model_id} B{batch}: logits max diff {float((graph_logits - eager_logits).abs().max()):.3e}")
    shown = 0
    for (name, a), (_, b) in zip(eager_records, records):
        d = float((a.float() - b.float()).abs().max())
        if d != 0 and shown < 8:
            print(f"  first differing modules: {name or 'model'} {tuple(a.shape)} diff {d:.3e}")
            shown += 1
    if shown == 0:
        print("  every module output is bit-identical")


if __name__ == "__main__":
    for mid in sys.argv[1:] or ["Qwen/Qwen3-1.7B", "meta-llama/Llama-3.2-1B-Instruct"]:
        for b in (1, 8):
            main(mid, b)
