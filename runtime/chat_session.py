"""ChatSession: one conversation kept in a runner's KV cache (its slash commands: chat_commands.py).

No terminal I/O here (runtime/chat.py owns that), so tests drive a session directly.

Cache bookkeeping. `ids` is the conversation as the model has seen it (prompts plus the exact
tokens it generated); `cached` is how many leading ids have valid KV in cache row 0. A new turn
renders the whole conversation with the chat template; where the rendering extends the text we
already hold, its ids are `ids` plus the encoded new text, otherwise the rendering is encoded
afresh (a template that rewrites history, e.g. Qwen3 dropping earlier thinking). Either way only
the ids after the longest cached prefix are prefilled, starting at that cache position.

Sliding-window layers keep a ring of the last W positions, and a prefill at start s > 0 trusts
each slot's latest write to be the newest position below s. A rewind (the new rendering differs
before the cached end, e.g. after /system) or an interrupted answer (the device ran ahead by an
unknown number of steps) leaves later positions in the ring; so where the previous turn wrote past
s (`written` > s + 1), such models prefill the conversation from 0 instead.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from runtime.chat_commands import CommandResult, parse_settings, run_command
from runtime.engine.generate import LAG, generate
from runtime.engine.runner import Runner
from runtime.engine.sampler import SamplingParams
from runtime.errors import CapacityError, RuntimeUserError
from runtime.tokens import TextStream, chat_text, has_chat_template

Message = dict[str, str]


@dataclass
class TurnStats:
    prompt_tokens: int  # the whole conversation as the model saw it this turn
    prefill_tokens: int  # how many of those were prefilled (the rest came from the cache)
    new_tokens: int  # generated, a final stop id included
    ttft_ms: float
    decode_tok_s: float  # tokens after the first / time after the first
    finish: str  # stop | length | interrupted


@dataclass
class Reply:
    text: str  # the answer as printed (special tokens skipped)
    tokens: list[int]
    stats: TurnStats
    dropped_turns: int = 0  # oldest exchanges dropped to make room (--drop-oldest)


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def format_stats(stats: TurnStats) -> str:
    return (
        f"[{stats.new_tokens} tokens, ttft {stats.ttft_ms:.1f} ms, decode {stats.decode_tok_s:.1f} tok/s, "
        f"prefilled {stats.prefill_tokens} of {stats.prompt_tokens}]"
    )


@dataclass
class ChatSession:
    runner: Runner
    tokenizer: Any
    stop_ids: tuple[int, ...]
    params: SamplingParams = field(default_factory=SamplingParams)
    max_new_tokens: int = 512
    system: str | None = None
    think: bool | None = None  # Qwen3's enable_thinking; None = the template's default
    drop_oldest: bool = False  # make room by dropping the oldest exchanges instead of refusing

    def __post_init__(self) -> None:
        self.templated = has_chat_template(self.tokenizer)
        template = self.tokenizer.chat_template if self.templated else ""
        self.template_kwargs: dict[str, Any] = {}
        self.thinking_switch = isinstance(template, str) and "enable_thinking" in template
        if self.think is not None and self.thinking_switch:
            self.template_kwargs["enable_thinking"] = self.think
        self.ring = any(w is not None for w in self.runner.spec.sliding_window)
        self.messages: list[Message] = []  # user and assistant turns; the system prompt is apart
        self.turns: list[TurnStats] = []
        self.ids: list[int] = []
        self.text = ""  # the text `ids` encode (rendered prompts plus decoded answers)
        self.cached = 0
        self.written = 0  # one past the last cache position the previous turn wrote
        self._check_budget(self.max_new_tokens)

    # ---- rendering -------------------------------------------------------------------------
    def _render(self, messages: list[Message]) -> str:
        if self.templated:
            system = [{"role": "system", "content": self.system}] if self.system else []
            return chat_text(self.tokenizer, system + messages, **self.template_kwargs)
        # plain continuation: the conversation is one running text
        text = f"{self.system}\n" if self.system else ""
        for m in messages:
            if m["role"] == "user" and text and not text[-1].isspace():
                text += "\n"
            text += m["content"]
        return text

    def _encode(self, text: str, first: bool) -> list[int]:
        # a template writes its own special tokens; plain text gets the tokenizer's (e.g. BOS) once
        special = first and not self.templated
        return list(self.tokenizer(text, add_special_tokens=special).input_ids)

    def _conversation_ids(self, messages: list[Message]) -> tuple[str, list[int]]:
        rendered = self._render(messages)
        if self.ids and rendered.startswith(self.text):
            # keep the model's own tokens for the part it has seen; encode only what is new
            return rendered, self.ids + self._encode(rendered[len(self.text) :], first=False)
        return rendered, self._encode(rendered, first=True)

    # ---- capacity --------------------------------------------------------------------------
    def _check_budget(self, max_new_tokens: int) -> None:
        if max_new_tokens < 1:
            raise RuntimeUserError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if max_new_tokens >= self.runner.capacity:
            raise RuntimeUserError(
                f"max_new_tokens ({max_new_tokens}) leaves no room for a prompt in a context of "
                f"{self.runner.capacity} tokens; lower it or raise --max-seq-len"
            )

    def _fits(self, ids: list[int]) -> bool:
        return len(ids) + self.max_new_tokens <= self.runner.capacity

    def _overflow(self, ids: list[int]) -> CapacityError:
        need, cap = len(ids) + self.max_new_tokens, self.runner.capacity
        head = (
            f"context full: this turn needs {len(ids)} conversation tokens + {self.max_new_tokens} "
            f"for the answer = {need}, more than the {cap} the cache holds"
        )
        if len(self.messages) == 0:
            return CapacityError(f"{head}; shorten the message, lower max_new_tokens or raise --max-seq-len")
        return CapacityError(f"{head}; type /clear to start over (or run with --drop-oldest)")

    def _make_room(self, messages: list[Message]) -> tuple[list[Message], str, list[int], int]:
        """Render `messages`; with drop_oldest, drop whole exchanges from the front until they fit.
        Returns the messages kept, their rendering, its ids and how many exchanges were dropped."""
        rendered, ids = self._conversation_ids(messages)
        dropped = 0
        while not self._fits(ids) and self.drop_oldest and len(messages) > 1:
            # an exchange runs from one user message to the next
            nxt = next((i for i, m in enumerate(messages[1:], 1) if m["role"] == "user"), len(messages))
            messages = messages[nxt:]
            dropped += 1
            rendered, ids = self._conversation_ids(messages)
        if not self._fits(ids):
            raise self._overflow(ids)
        return messages, rendered, ids, dropped

    # ---- a turn ----------------------------------------------------------------------------
    def _resume_point(self, ids: list[int]) -> int:
        start = min(common_prefix(ids, self.ids[: self.cached]), len(ids) - 1)
        if self.ring and 0 < start < self.written - 1:
            return 0  # a stale position above `start` sits in a ring: rebuild the row from 0
        return start

    def send(self, text: str, on_text: Callable[[str], None] | None = None) -> Reply:
        """One user turn: prefill only what the cache lacks, stream the answer, keep it in history.

        Ctrl-C while generating ends the answer early (finish "interrupted"); what was shown stays."""
        if not text.strip():
            raise RuntimeUserError("empty message")
        messages = [*self.messages, {"role": "user", "content": text}]
        messages, rendered, ids, dropped = self._make_room(messages)
        start = self._resume_point(ids)
        suffix = ids[start:]
        p0 = len(ids)  # the cache position of the first answer token

        stream = TextStream(self.tokenizer, skip=set(self.stop_ids))
        shown: list[str] = []
        received: list[int] = []
        clock: list[float] = []

        def on_token(row: int, token: int) -> None:
            received.append(token)
            clock.append(time.perf_counter())
            delta = stream.push(token)
            if delta:
                shown.append(delta)
                if on_text is not None:
                    on_text(delta)

        t0 = time.perf_counter()
        try:
            result = generate(
                self.runner, [suffix], self.params, self.max_new_tokens, stop_ids=self.stop_ids,
                starts=[start], keep_seen=start > 0, on_token=on_token,
            )  # fmt: skip
        except KeyboardInterrupt:
            result = None

        if result is not None:
            tokens, finish = result.tokens[0], result.finish[0]
            steps = len(result.step_ms)  # decode steps run; step j fed answer token j - 1
            fed, written = min(steps, len(tokens)), p0 + steps
            ttft_ms, decode_ms, prefilled = result.ttft_ms, result.decode_ms, result.prefill_tokens
        else:
            tokens, finish = received, "interrupted"
            # the host reads a step or two behind the device: how far it ran is only bounded
            fed, written = max(len(tokens) - 1, 0), p0 + len(tokens) + LAG + 1
            ttft_ms = (clock[0] - t0) * 1e3 if clock else 0.0
            decode_ms = (clock[-1] - clock[0]) * 1e3 if clock else 0.0
            prefilled = len(suffix)
        if not tokens:
            # stopped during the prefill: forget the turn; the cache below `start` is untouched
            self.cached, self.written = min(self.cached, start), max(self.written, p0)
            return Reply(text="", tokens=[], stats=TurnStats(len(ids), 0, 0, 0.0, 0.0, finish))
        stopped = tokens[-1] in self.stop_ids  # also when Ctrl-C raced the stop id
        answer = tokens[:-1] if stopped else tokens
        content = self.tokenizer.decode(answer, skip_special_tokens=False)
        self.messages = [*messages, {"role": "assistant", "content": content}]
        self.ids = ids + tokens
        self.text = rendered + content + (self.tokenizer.decode(tokens[-1:]) if stopped else "")
        self.cached, self.written = p0 + fed, written
        stats = TurnStats(
            prompt_tokens=len(ids),
            prefill_tokens=prefilled,
            new_tokens=len(tokens),
            ttft_ms=ttft_ms,
            decode_tok_s=(len(tokens) - 1) / (decode_ms / 1e3) if len(tokens) > 1 and decode_ms > 0 else 0.0,
            finish=finish,
        )
        self.turns.append(stats)
        return Reply(text="".join(shown), tokens=tokens, stats=stats, dropped_turns=dropped)

    # ---- commands --------------------------------------------------------------------------
    def clear(self) -> None:
        # the cache keeps its contents; the next turn simply shares no prefix with them
        self.messages, self.ids, self.text, self.cached = [], [], "", 0

    def set_system(self, text: str) -> None:
        # the history stays; the next turn re-prefills from the first token the change touches
        self.system = text or None

    def apply_settings(self, assignments: list[str]) -> str:
        """KEY=VALUE pairs, all applied or none; a bad value raises with the validation message."""
        changes = parse_settings(assignments)
        max_new = changes.pop("max_new_tokens", self.max_new_tokens)
        self._check_budget(max_new)
        self.params = dataclasses.replace(self.params, **changes)  # validates
        self.max_new_tokens = max_new
        return self.settings_text()

    def settings_text(self) -> str:
        p = self.params
        return (
            f"temperature={p.temperature} top_k={p.top_k} top_p={p.top_p} "
            f"repetition_penalty={p.repetition_penalty} seed={p.seed} max_new_tokens={self.max_new_tokens}"
        )

    def stats_text(self) -> str:
        lines = [f"turn {i}: {format_stats(s)} {s.finish}" for i, s in enumerate(self.turns, 1)]
        lines.append(f"cache: {self.cached} of {self.runner.capacity} positions hold this conversation")
        lines.append(f"settings: {self.settings_text()}")
        return "\n".join(lines)

    def command(self, line: str) -> CommandResult:
        """Run one slash command (chat_commands.py); errors come back as text so the session goes on."""
        return run_command(self, line)
