"""The chat REPL and `runtime chat`: piped turns, answers alone on stdout, Ctrl-C and exit codes."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from runtime.chat import EXIT_INTERRUPT, EXIT_OK, run_repl
from runtime.chat_session import ChatSession
from runtime.engine.runner import Runner


@pytest.fixture(scope="module")
def runner(smollm2_fp32):
    runner = Runner(smollm2_fp32, capacity=256)
    yield runner
    runner.release()


def _session(runner, max_new_tokens: int = 24) -> ChatSession:
    return ChatSession(runner, runner.loaded.tokenizer, runner.loaded.stop_ids, max_new_tokens=max_new_tokens)


def _repl(session: ChatSession, text: str | io.StringIO) -> tuple[int, str, str]:
    stdin = io.StringIO(text) if isinstance(text, str) else text
    out, err = io.StringIO(), io.StringIO()
    code = run_repl(session, stdin=stdin, out=out, err=err, interactive=False)
    return code, out.getvalue(), err.getvalue()


class _Interrupts(io.StringIO):
    """stdin that raises Ctrl-C `n` times before giving its lines."""

    def __init__(self, n: int, text: str = ""):
        super().__init__(text)
        self.n = n

    def readline(self, *args) -> str:
        if self.n:
            self.n -= 1
            raise KeyboardInterrupt
        return super().readline(*args)


def test_cli_piped_two_turns():
    text = "What is the capital of France?\n/bogus\nRepeat your last answer.\n"
    proc = subprocess.run(
        [sys.executable, "-m", "runtime.cli", "chat", *"--temperature 0 -n 24 --max-seq-len 256".split()],
        input=text,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    answers = proc.stdout.splitlines()
    assert len(answers) == 2 and all("Paris" in a for a in answers)  # stdout holds only the answers
    assert "unknown command /bogus" in proc.stderr and "/clear" in proc.stderr
    assert proc.stderr.count("ttft") == 2 and "tok/s" in proc.stderr


def test_repl_answers_on_stdout_and_stats_on_stderr(runner):
    session = _session(runner)
    code, out, err = _repl(session, "\nWhat is the capital of France?\n/stats\n/exit\nnever read\n")
    assert code == EXIT_OK
    assert "Paris" in out and "ttft" not in out
    assert "ttft" in err and "turn 1:" in err and "Paris" not in err
    assert len(session.turns) == 1  # nothing after /exit ran, the blank line was skipped


def test_repl_leaves_with_0_at_end_of_input(runner):
    assert _repl(_session(runner), "")[0] == EXIT_OK


def test_second_ctrl_c_at_the_prompt_leaves_with_130(runner):
    code, _, err = _repl(_session(runner), _Interrupts(2, "never read\n"))
    assert code == EXIT_INTERRUPT and "Ctrl-C again" in err


def test_one_ctrl_c_at_the_prompt_keeps_the_session(runner):
    session = _session(runner)
    code, out, _ = _repl(session, _Interrupts(1, "What is the capital of France?\n"))
    assert code == EXIT_OK and "Paris" in out and len(session.turns) == 1


def test_ctrl_c_while_answering_stops_the_answer_only(runner):
    session = _session(runner)

    class Out(io.StringIO):
        calls = 0

        def write(self, s: str) -> int:
            Out.calls += 1
            if Out.calls == 2:
                raise KeyboardInterrupt
            return super().write(s)

    out, err = Out(), io.StringIO()
    text = "What is the capital of France?\nWhat is the capital of France?\n"
    code = run_repl(session, stdin=io.StringIO(text), out=out, err=err, interactive=False)
    assert code == EXIT_OK
    assert "[interrupted]" in err.getvalue()
    assert [t.finish for t in session.turns] == ["interrupted", "stop"]
    assert "Paris" in out.getvalue()


def test_repl_reports_a_full_context_and_goes_on(runner):
    session = _session(runner, max_new_tokens=120)
    code, out, err = _repl(session, "Paris " * 200 + "\nWhat is the capital of France?\n")
    assert code == EXIT_OK
    assert "error: context full" in err
    assert "Paris" in out and len(session.turns) == 1
