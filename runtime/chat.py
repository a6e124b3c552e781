"""The chat REPL: terminal and pipe I/O around a ChatSession (runtime/chat_session.py).

Answers stream to stdout; everything else (stats lines, command output, notices) goes to stderr,
so a piped stdout holds only the answers. Each input line is one user turn or one /command.
Ctrl-C while answering stops the answer and keeps the session; at the prompt a second Ctrl-C in a
row leaves with 130, and end of input (Ctrl-D, or the end of a pipe) leaves with 0.
"""

from __future__ import annotations

import sys
from typing import TextIO

from runtime.chat_session import ChatSession, format_stats
from runtime.errors import RuntimeUserError

EXIT_OK, EXIT_INTERRUPT = 0, 130
PROMPT = ">>> "


def _read_line(stdin: TextIO, interactive: bool) -> str | None:
    """One line without its newline, or None at end of input."""
    if interactive:
        try:
            return input(PROMPT)
        except EOFError:
            return None
    line = stdin.readline()
    return None if line == "" else line.rstrip("\n")


def _answer(session: ChatSession, line: str, out: TextIO, err: TextIO) -> None:
    def write(delta: str) -> None:
        out.write(delta)
        out.flush()

    try:
        reply = session.send(line, on_text=write)
    except RuntimeUserError as e:  # context full, empty message: say so and go on
        print(f"error: {e}", file=err)
        return
    out.write("\n")
    out.flush()
    if reply.dropped_turns:
        print(f"[dropped the {reply.dropped_turns} oldest exchange(s) to make room]", file=err)
    if reply.stats.finish == "interrupted":
        print("[interrupted]", file=err)
    if reply.tokens:
        print(format_stats(reply.stats), file=err)


def run_repl(
    session: ChatSession,
    stdin: TextIO | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
    interactive: bool | None = None,
) -> int:
    """Read turns until /exit or end of input; returns the exit code."""
    stdin, out, err = stdin or sys.stdin, out or sys.stdout, err or sys.stderr
    if interactive is None:
        interactive = stdin.isatty()
    if interactive:
        try:
            import readline  # noqa: F401 - line editing and history for input()
        except ImportError:
            pass
    interrupts = 0
    while True:
        try:
            line = _read_line(stdin, interactive)
        except KeyboardInterrupt:
            interrupts += 1
            if interrupts >= 2:
                print(file=err)
                return EXIT_INTERRUPT
            print("\n(Ctrl-C again or Ctrl-D to leave)", file=err)
            continue
        if line is None:
            if interactive:
                print(file=err)
            return EXIT_OK
        interrupts = 0
        line = line.strip()
        if not line:
            continue
        try:
            if line.startswith("/"):
                result = session.command(line)
                if result.text:
                    print(result.text, file=err)
                if result.exit:
                    return EXIT_OK
            else:
                _answer(session, line, out, err)
        except KeyboardInterrupt:  # outside the answer itself (e.g. while encoding): nothing changed
            print("\n[interrupted]", file=err)
