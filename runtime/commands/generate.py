"""`runtime generate`: one prompt, streamed to stdout (or one JSON object with --json)."""

from __future__ import annotations

import typer

from runtime.cli_support import handle_errors
from runtime.models.sources import EMBEDDED_ID as EMBEDDED


@handle_errors
def generate(
    prompt: str = typer.Option(
        ...,
        "--prompt",
        "-p",
        help="Prompt text; an empty or blank prompt is refused. Special tokens written in the text "
        "(e.g. <|im_end|>) are parsed as special tokens, so a prompt of special tokens only is valid.",
    ),
    model: str = typer.Option(
        EMBEDDED, "--model", "-m", help="Hub id, folder of safetensors, .gguf file, or the embedded default."
    ),
    weights: str = typer.Option("checkpoint", help="checkpoint | random | auto"),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens", "-n"),
    temperature: float = typer.Option(0.0, help="0 = greedy."),
    top_k: int = typer.Option(0, "--top-k", help="0 = off."),
    top_p: float = typer.Option(1.0, "--top-p", help="1 = off."),
    repetition_penalty: float = typer.Option(1.0, "--repetition-penalty", help="1 = off."),
    seed: int = typer.Option(0),
    device: str | None = typer.Option(None, help="cuda | cpu (default: cuda when present)."),
    dtype: str = typer.Option(
        "auto", help="auto (bfloat16 on CUDA, float32 on CPU) | bfloat16 | float16 | float32"
    ),
    max_seq_len: int | None = typer.Option(
        None, "--max-seq-len", help="KV cache capacity (default: prompt + max new tokens)."
    ),
    mode: str = typer.Option("auto", help="graph | eager (default: graph on CUDA, eager on CPU)."),
    raw: bool = typer.Option(
        False, "--raw", help="No chat template: ids exactly as tokenizer(prompt) gives them."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object with `tokens` and `text`."),
) -> None:
    """Generate a completion for one prompt, streaming it to stdout."""
    import json
    import sys

    from runtime.engine.generate import generate as run_generate
    from runtime.engine.runner import Runner
    from runtime.engine.sampler import SamplingParams
    from runtime.models.loader import load_model
    from runtime.tokens import TextStream, encode_prompt, require_tokenizer

    params = SamplingParams(temperature, top_k, top_p, repetition_penalty, seed)
    loaded = load_model(model, weights=weights, device=device, dtype=dtype, seed=seed)
    tokenizer = require_tokenizer(loaded.tokenizer, model)
    ids = encode_prompt(tokenizer, prompt, raw)
    runner = Runner(loaded, capacity=max_seq_len or len(ids) + max_new_tokens, mode=mode)
    stream = TextStream(tokenizer)

    def echo(row: int, token: int) -> None:
        if not json_out:
            sys.stdout.write(stream.push(token))
            sys.stdout.flush()

    try:
        result = run_generate(runner, [ids], params, max_new_tokens, stop_ids=loaded.stop_ids, on_token=echo)
    finally:
        runner.release()
    tokens = result.tokens[0]
    if json_out:
        text = tokenizer.decode(tokens, skip_special_tokens=True)
        print(json.dumps({"tokens": tokens, "text": text, "finish": result.finish[0]}))
    else:
        print()
        steps = len(result.step_ms)
        tok_s = steps / (sum(result.step_ms) / 1e3) if steps else 0.0
        print(
            f"[{len(tokens)} tokens, ttft {result.ttft_ms:.1f} ms, decode {tok_s:.1f} tok/s, {runner.mode}]",
            file=sys.stderr,
        )
