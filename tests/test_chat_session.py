"""ChatSession with the embedded SmolLM2-135M-Instruct on the CPU: history kept in the cache, only
each new turn prefilled, commands, and a full context refused before any work."""

from __future__ import annotations

import pytest
import torch

from runtime.chat_session import ChatSession
from runtime.engine.generate import generate
from runtime.engine.runner import Runner
from runtime.engine.sampler import SamplingParams
from runtime.errors import CapacityError

FRANCE = "What is the capital of France?"
REPEAT = "Repeat your last answer."  # answerable only from the history


@pytest.fixture(scope="module")
def runner(smollm2_fp32):
    runner = Runner(smollm2_fp32, capacity=256)
    yield runner
    runner.release()


def _session(runner, **kwargs) -> ChatSession:
    loaded = runner.loaded
    kwargs.setdefault("max_new_tokens", 24)
    return ChatSession(runner, loaded.tokenizer, loaded.stop_ids, **kwargs)


def _fresh_answer(runner, ids: list[int], session: ChatSession) -> list[int]:
    """The same turn with the whole conversation prefilled from position 0."""
    result = generate(runner, [ids], session.params, session.max_new_tokens, stop_ids=session.stop_ids)
    return result.tokens[0]


def test_second_turn_uses_the_first(runner):
    session = _session(runner)
    streamed: list[str] = []
    first = session.send(FRANCE, on_text=streamed.append)
    assert "Paris" in first.text
    assert "".join(streamed) == first.text
    assert first.stats.finish == "stop" and first.tokens[-1] in session.stop_ids
    second = session.send(REPEAT)
    assert "Paris" in second.text
    assert [m["role"] for m in session.messages] == ["user", "assistant", "user", "assistant"]


def test_a_new_turn_prefills_only_its_own_tokens(runner):
    session = _session(runner)
    first = session.send(FRANCE)
    cached_after_first = session.cached
    second = session.send(REPEAT)
    turn_ids = session.ids[: second.stats.prompt_tokens]
    # everything before the cached point came from the cache: only the new turn was prefilled
    assert second.stats.prefill_tokens == second.stats.prompt_tokens - cached_after_first
    assert second.stats.prefill_tokens < 20 < first.stats.prompt_tokens
    # and the cache held exactly what one prefill of the whole conversation gives
    assert second.tokens == _fresh_answer(runner, turn_ids, session)


def test_changed_history_reprefills_from_the_first_difference(runner):
    session = _session(runner)
    session.send(FRANCE)
    session.set_system("You answer in one word.")
    reply = session.send(REPEAT)
    turn_ids = session.ids[: reply.stats.prompt_tokens]
    assert 0 < reply.stats.prefill_tokens < reply.stats.prompt_tokens  # the shared head was kept
    assert reply.tokens == _fresh_answer(runner, turn_ids, session)


def test_clear_forgets(runner):
    session = _session(runner)
    session.send(FRANCE)
    assert session.command("/clear").text == "conversation cleared"
    assert session.messages == [] and session.cached == 0
    reply = session.send(REPEAT)
    assert "Paris" not in reply.text
    assert reply.stats.prefill_tokens == reply.stats.prompt_tokens


def test_set_changes_sampling(runner):
    session = _session(runner)
    greedy = session.send(FRANCE).tokens
    out = session.command("/set temperature=1.5 top_k=50 seed=7 max_new_tokens=12")
    assert "temperature=1.5" in out.text
    assert session.params == SamplingParams(temperature=1.5, top_k=50, seed=7)
    assert session.max_new_tokens == 12
    session.clear()
    sampled = session.send(FRANCE)
    assert float(runner.buffers.temperature[0]) == pytest.approx(1.5)
    assert sampled.tokens != greedy
    assert sampled.stats.new_tokens <= 12


@pytest.mark.parametrize(
    "line, message",
    [
        ("/set temperature=-1", "temperature must be >= 0"),
        ("/set top_p=0", "top_p must be in (0, 1]"),
        ("/set top_k=many", "top_k needs an integer"),
        ("/set colour=red", "unknown setting 'colour=red'"),
        ("/set max_new_tokens=0", "max_new_tokens must be >= 1"),
    ],
)
def test_bad_settings_keep_the_old_ones(runner, line, message):
    session = _session(runner)
    before = session.params
    out = session.command(line)
    assert out.text.startswith("error:") and message in out.text
    assert session.params == before and session.max_new_tokens == 24


def test_a_bad_setting_applies_none_of_the_line(runner):
    session = _session(runner)
    session.command("/set temperature=0.5 top_p=2")
    assert session.params.temperature == 0.0


def test_unknown_command_lists_the_commands(runner):
    out = _session(runner).command("/bogus")
    assert not out.exit
    assert out.text.startswith("unknown command /bogus")
    for name in ("/clear", "/system", "/set", "/stats", "/help", "/exit"):
        assert name in out.text


def test_commands(runner):
    session = _session(runner)
    assert session.command("/exit").exit
    assert "/clear" in session.command("/help").text
    assert session.command("/system").text == "no system prompt"
    session.command("/system Be brief.")
    assert session.system == "Be brief." and "Be brief." in session.command("/system").text
    session.send(FRANCE)
    stats = session.command("/stats").text
    assert "turn 1:" in stats and "ttft" in stats and "tok/s" in stats
    assert f"{session.cached} of 256" in stats


def test_turn_stats_are_recorded(runner):
    session = _session(runner)
    session.send(FRANCE)
    session.send(REPEAT)
    assert len(session.turns) == 2
    for turn in session.turns:
        assert turn.ttft_ms > 0 and turn.decode_tok_s > 0 and turn.new_tokens > 1


def test_full_context_is_refused_before_any_work(runner):
    session = _session(runner, max_new_tokens=120)
    session.send(FRANCE)
    before = (list(session.ids), session.cached, list(session.messages), runner.cache.k[0].clone())
    with pytest.raises(CapacityError, match="context full") as err:
        session.send("Tell me about Paris. " * 20)
    assert "/clear" in str(err.value)
    assert (list(session.ids), session.cached, list(session.messages)) == before[:3]
    assert torch.equal(runner.cache.k[0], before[3])  # nothing was written
    # /clear makes room again
    session.command("/clear")
    assert "Paris" in session.send(FRANCE).text


def test_a_message_too_long_for_an_empty_context(runner):
    session = _session(runner, max_new_tokens=120)
    with pytest.raises(CapacityError, match="shorten the message"):
        session.send("Paris " * 200)


def test_drop_oldest_makes_room(runner):
    session = _session(runner, max_new_tokens=120, drop_oldest=True)
    session.send(FRANCE)
    session.send("Name one famous museum there.")
    reply = session.send("Now tell me one more thing about Paris, in one sentence, please. " * 4)
    assert reply.dropped_turns >= 1
    assert session.messages[0]["content"] != FRANCE
    assert reply.stats.prompt_tokens + session.max_new_tokens <= runner.capacity
    assert reply.tokens == _fresh_answer(runner, session.ids[: reply.stats.prompt_tokens], session)


def test_ctrl_c_keeps_the_session(runner):
    session = _session(runner)
    seen: list[str] = []

    def interrupt(delta: str) -> None:
        seen.append(delta)
        if len(seen) == 3:
            raise KeyboardInterrupt

    reply = session.send(FRANCE, on_text=interrupt)
    assert reply.stats.finish == "interrupted"
    assert reply.text == "".join(seen) and 0 < len(reply.tokens) < 8
    assert session.messages[-1] == {"role": "assistant", "content": reply.text}
    # the next turn continues from the cache and still matches a fresh prefill
    nxt = session.send(REPEAT)
    assert nxt.stats.prefill_tokens < nxt.stats.prompt_tokens
    assert nxt.tokens == _fresh_answer(runner, session.ids[: nxt.stats.prompt_tokens], session)


def test_max_new_tokens_must_leave_room_for_a_prompt(runner):
    with pytest.raises(Exception, match="leaves no room"):
        _session(runner, max_new_tokens=256)


def test_empty_message_is_refused(runner):
    with pytest.raises(Exception, match="empty message"):
        _session(runner).send("   ")
