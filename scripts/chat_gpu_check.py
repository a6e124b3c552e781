"""GPU: a two-turn chat with the embedded model on CUDA in graph mode, greedy. Per turn: TTFT,
tokens prefilled (turn 2 should prefill only its own tokens) and decode tok/s; then turn 2's
whole conversation prefilled from position 0, to show what the cache saves and that both give
the same answer (in bfloat16 a split prefill may round differently, so a different answer there is
a hint, not proof; --dtype float32 settles it). One warm-up conversation first; the median of
--reps conversations is reported. Prints a markdown table, then one JSON line.

    python scripts/chat_gpu_check.py [--dtype float32] [--reps 5]"""

from __future__ import annotations

import argparse
import json
import statistics

import torch

from runtime.chat_session import ChatSession
from runtime.engine.generate import generate
from runtime.engine.runner import Runner
from runtime.engine.sampler import SamplingParams
from runtime.models.loader import load_model

TURNS = ["What is the capital of France?", "Repeat your last answer, then name one museum there."]


def conversation(session: ChatSession) -> dict:
    """Clear, run both turns, then re-run turn 2 with no cache reuse."""
    session.clear()
    replies = [session.send(text) for text in TURNS]
    second = replies[1].stats
    ids = session.ids[: second.prompt_tokens]
    fresh = generate(session.runner, [ids], session.params, session.max_new_tokens, stop_ids=session.stop_ids)
    row = {}
    for i, reply in enumerate(replies, 1):
        s = reply.stats
        row |= {
            f"turn{i}_ttft_ms": s.ttft_ms,
            f"turn{i}_prompt_tokens": s.prompt_tokens,
            f"turn{i}_prefill_tokens": s.prefill_tokens,
            f"turn{i}_new_tokens": s.new_tokens,
            f"turn{i}_decode_tok_s": s.decode_tok_s,
        }
    row["turn2_full_prefill_ttft_ms"] = fresh.ttft_ms
    row["same_answer"] = fresh.tokens[0] == replies[1].tokens
    row["answers"] = [r.text for r in replies]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--weights", default="checkpoint", choices=["checkpoint", "random"])
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--mode", default="graph", choices=["graph", "eager"])
    ap.add_argument("--max-seq-len", type=int, default=2048)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()

    loaded = load_model(args.model, weights=args.weights, device="cuda", dtype=args.dtype)
    runner = Runner(loaded, capacity=args.max_seq_len, mode=args.mode)
    try:
        params = SamplingParams()
        session = ChatSession(runner, loaded.tokenizer, loaded.stop_ids, params, args.max_new_tokens)
        conversation(session)  # warm-up: first-use costs of every prefill length stay out of the numbers
        rows = [conversation(session) for _ in range(args.reps)]
    finally:
        runner.release()

    numbers = [k for k, v in rows[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    med = {k: statistics.median(r[k] for r in rows) for k in numbers}
    device = torch.cuda.get_device_name()
    print(f"## chat on {device}: {args.model}, {args.dtype}, {runner.mode}, median of {args.reps}\n")
    print("| turn | prompt tokens | prefilled | TTFT ms | decode tok/s |")
    print("|---|---|---|---|---|")
    for i in (1, 2):
        print(
            f"| {i} | {med[f'turn{i}_prompt_tokens']:.0f} | {med[f'turn{i}_prefill_tokens']:.0f} | "
            f"{med[f'turn{i}_ttft_ms']:.2f} | {med[f'turn{i}_decode_tok_s']:.1f} |"
        )
    print(
        f"| 2, no reuse | {med['turn2_prompt_tokens']:.0f} | {med['turn2_prompt_tokens']:.0f} | "
        f"{med['turn2_full_prefill_ttft_ms']:.2f} | |"
    )
    same = all(r["same_answer"] for r in rows)
    print(f"\nturn 2 answer identical with and without reuse: {same}")
    print(f"answers: {rows[-1]['answers']}")
    print(json.dumps({"device": device, "model": args.model, "dtype": args.dtype, "mode": runner.mode,
                      "same_answer": same, **{k: round(v, 3) for k, v in med.items()}}))  # fmt: skip


if __name__ == "__main__":
    main()
