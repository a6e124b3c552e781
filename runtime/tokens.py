"""Text <-> token ids: prompts with or without the model's chat template, and streaming decode."""

from __future__ import annotations

from typing import Any

from runtime.errors import RuntimeUserError


def require_tokenizer(tokenizer: Any, model_id: str) -> Any:
    if tokenizer is None:
        raise RuntimeUserError(
            f"{model_id} has no tokenizer (random weights or a folder without tokenizer files); "
            "text prompts need a checkpoint with its tokenizer"
        )
    return tokenizer


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def chat_text(
    tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool = True, **kwargs
) -> str:
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt, **kwargs
    )


def encode_prompt(tokenizer: Any, prompt: str, raw: bool) -> list[int]:
    """raw: ids exactly as tokenizer(prompt) gives them; else the chat template of one user turn."""
    if not prompt.strip():
        raise RuntimeUserError("empty prompt: give some text with --prompt")
    if raw or not has_chat_template(tokenizer):
        ids = tokenizer(prompt).input_ids
    else:
        ids = tokenizer(
            chat_text(tokenizer, [{"role": "user", "content": prompt}]), add_special_tokens=False
        ).input_ids
    if not ids:
        raise RuntimeUserError("the prompt encodes to no tokens; give a non-empty --prompt")
    return list(ids)


class TextStream:
    """Turns a growing list of ids into printable text deltas (whole characters only)."""

    def __init__(self, tokenizer: Any, skip: set[int] | None = None):
        self.tokenizer, self.skip = tokenizer, skip or set()
        self.ids: list[int] = []
        self.printed = 0

    def push(self, token: int) -> str:
        if token in self.skip:
            return ""
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # an incomplete multi-byte character: wait for the rest
            return ""
        delta, self.printed = text[self.printed :], len(text)
        return delta
