"""The chat's slash commands: what each does to a ChatSession (runtime/chat_session.py), its /set
keys and how their values parse. Errors come back as text, so a conversation goes on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runtime.errors import RuntimeUserError

if TYPE_CHECKING:
    from runtime.chat_session import ChatSession

# /set keys and how their values parse
SETTINGS: dict[str, type] = {
    "temperature": float,
    "top_k": int,
    "top_p": float,
    "repetition_penalty": float,
    "seed": int,
    "max_new_tokens": int,
}
COMMANDS = {
    "/clear": "forget the conversation (the system prompt stays)",
    "/system TEXT": "set the system prompt (no TEXT: show it)",
    "/set KEY=VALUE ...": "change settings: " + ", ".join(SETTINGS),
    "/stats": "per-turn tokens, TTFT and decode speed; cache use",
    "/help": "this list",
    "/exit": "leave (also Ctrl-D)",
}


@dataclass
class CommandResult:
    text: str
    exit: bool = False


def help_text() -> str:
    width = max(len(k) for k in COMMANDS)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in COMMANDS.items())


def parse_settings(assignments: list[str]) -> dict[str, Any]:
    """/set's KEY=VALUE pairs -> {key: value}, every value parsed; the first bad pair raises."""
    changes: dict[str, Any] = {}
    for pair in assignments:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or key not in SETTINGS:
            raise RuntimeUserError(
                f"unknown setting {pair!r}; use KEY=VALUE with KEY one of {', '.join(SETTINGS)}"
            )
        try:
            changes[key] = SETTINGS[key](value.strip())
        except ValueError:
            kind = "an integer" if SETTINGS[key] is int else "a number"
            raise RuntimeUserError(f"{key} needs {kind}, got {value.strip()!r}") from None
    return changes


def run_command(session: ChatSession, line: str) -> CommandResult:
    """Run one slash command on session."""
    name, _, arg = line.strip().partition(" ")
    arg = arg.strip()
    try:
        if name == "/exit":
            return CommandResult("", exit=True)
        if name == "/help":
            return CommandResult(help_text())
        if name == "/clear":
            session.clear()
            return CommandResult("conversation cleared")
        if name == "/system":
            if not arg:
                return CommandResult(
                    f"system prompt: {session.system!r}" if session.system else "no system prompt"
                )
            session.set_system(arg)
            return CommandResult("system prompt set")
        if name == "/set":
            if not arg:
                return CommandResult(session.settings_text())
            return CommandResult(session.apply_settings(arg.split()))
        if name == "/stats":
            return CommandResult(session.stats_text())
    except RuntimeUserError as e:
        return CommandResult(f"error: {e}")
    return CommandResult(f"unknown command {name}; the commands are:\n{help_text()}")
