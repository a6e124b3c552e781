"""GPU check: our eager greedy tokens vs transformers' eager greedy tokens on the same random
weights, bf16, for each dev architecture. Where a bf16 near-tie flips a token, the token at the
first difference must be in the other side's top 5. Prints one table row per architecture."""

from __future__ import annotations

import argparse
import json

import torch

from runtime.engine.state import KVCache
from runtime.models.loader import _hf_config
from runtime.models.sources import shipped_config
from runtime.models.spec import ModelSpec
from runtime.models.weights import from_state_dict

ARCHS = ["meta-llama/Llama-3.2-1B-Instruct", "Qwen/Qwen3-1.7B", "google/gemma-3-1b-it"]


def check(model_id: str, steps: int, prompt_len: int, device: str = "cuda") -> dict:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    cfg = _hf_config(shipped_config(model_id))
    with torch.device(device):
        hf = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16, attn_implementation="eager").eval()
    spec = ModelSpec.from_hf(cfg)
    ours = from_state_dict(spec, hf.state_dict(), device, torch.bfloat16)
    prompt = torch.randint(3, spec.vocab - 1, (1, prompt_len), device=device)
    with torch.no_grad():
        out = hf.generate(prompt, max_new_tokens=steps, do_sample=False, eos_token_id=None, pad_token_id=0,
                          output_logits=True, return_dict_in_generate=True)  # fmt: skip
    theirs = out.sequences[0, prompt_len:].tolist()
    their_logits = [lg[0].float() for lg in out.logits]
    cache = KVCache(spec, 1, prompt_len + steps, device, torch.bfloat16)
    logits = ours.prefill(prompt, cache)
    mine, my_logits = [], []
    for i in range(steps):
        my_logits.append(logits[0])
        tok = int(logits[0].argmax())
        mine.append(tok)
        if i + 1 < steps:
            logits = ours.decode(
                torch.tensor([tok], device=device), torch.tensor([prompt_len + i], device=device), cache
            )
    first = next((i for i, (a, b) in enumerate(zip(mine, theirs)) if a != b), None)
    ok_tie = True
    if first is not None:
        ok_tie = (
            mine[first] in their_logits[first].topk(5).indices.tolist()
            and theirs[first] in my_logits[first].topk(5).indices.tolist()
        )
    err = max(float((a - b).abs().max()) for a, b in zip(my_logits[: first or steps], their_logits))
    del hf, ours
    torch.cuda.empty_cache()
    return {"model": model_id, "steps": steps, "equal": mine == theirs, "first_diff": first,
            "tie_in_top5": ok_tie, "max_logit_diff_until_diff": round(err, 4)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--out")
    args = ap.parse_args()
    rows = [check(m, args.steps, args.prompt_len) for m in ARCHS]
    for r in rows:
        print(json.dumps(r))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=2)
    if not all(r["equal"] or r["tie_in_top5"] for r in rows):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
