"""`runtime chat`: a multi-turn conversation in the terminal (or driven through a pipe)."""

from __future__ import annotations

import typer

from runtime.cli_support import handle_errors
from runtime.models.sources import EMBEDDED_ID as EMBEDDED


@handle_errors
def chat(
    model: str = typer.Option(
        EMBEDDED, "--model", "-m", help="Hub id, folder of safetensors, .gguf file, or the embedded default."
    ),
    system: str | None = typer.Option(None, "--system", help="System prompt."),
    temperature: float = typer.Option(0.0, help="0 = greedy."),
    top_k: int = typer.Option(0, "--top-k", help="0 = off."),
    top_p: float = typer.Option(1.0, "--top-p", help="1 = off."),
    repetition_penalty: float = typer.Option(1.0, "--repetition-penalty", help="1 = off."),
    max_new_tokens: int = typer.Option(512, "--max-new-tokens", "-n", help="Longest answer, in tokens."),
    max_seq_len: int | None = typer.Option(
        None,
        "--max-seq-len",
        help="KV cache capacity: the whole conversation (default: the model's, at most 4096).",
    ),
    device: str | None = typer.Option(None, help="cuda | cpu (default: cuda when present)."),
    dtype: str = typer.Option(
        "auto", help="auto (bfloat16 on CUDA, float32 on CPU) | bfloat16 | float16 | float32"
    ),
    seed: int = typer.Option(0),
    mode: str = typer.Option("auto", help="graph | eager (default: graph on CUDA, eager on CPU)."),
    think: bool | None = typer.Option(
        None, "--think/--no-think", help="Qwen3's thinking switch, where the chat template has one."
    ),
    drop_oldest: bool = typer.Option(
        False,
        "--drop-oldest",
        help="When the context is full, drop the oldest exchanges instead of refusing.",
    ),
) -> None:
    """Chat with a model: answers stream to stdout; /help lists the commands."""
    import sys

    from runtime.chat import run_repl
    from runtime.chat_session import ChatSession
    from runtime.engine.runner import Runner
    from runtime.engine.sampler import SamplingParams
    from runtime.models.loader import load_model
    from runtime.tokens import require_tokenizer

    params = SamplingParams(temperature, top_k, top_p, repetition_penalty, seed)
    loaded = load_model(model, weights="checkpoint", device=device, dtype=dtype, seed=seed)
    tokenizer = require_tokenizer(loaded.tokenizer, model)
    runner = Runner(loaded, capacity=max_seq_len, mode=mode)
    try:
        session = ChatSession(
            runner, tokenizer, loaded.stop_ids, params, max_new_tokens,
            system=system, think=think, drop_oldest=drop_oldest,
        )  # fmt: skip
        if not session.templated:
            print(
                f"note: {model} has no chat template; each line continues the text as plain completion",
                file=sys.stderr,
            )
        elif think is not None and not session.thinking_switch:
            print(
                f"note: {model}'s chat template has no thinking switch; --think/--no-think is ignored",
                file=sys.stderr,
            )
        print(
            f"{model} on {runner.device.type} ({runner.mode}), context {runner.capacity} tokens; "
            "/help for commands, Ctrl-D to leave",
            file=sys.stderr,
        )
        code = run_repl(session)
    finally:
        runner.release()
    raise typer.Exit(code)
