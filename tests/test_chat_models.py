"""Chat with other kinds of model: no chat template (plain continuation), a template with Qwen3's
thinking switch, and sliding-window layers (Gemma 3's rings) when the history is rewritten."""

from __future__ import annotations

import copy

import pytest
import torch
from tiny_configs import tiny_config
from typer.testing import CliRunner

from runtime.chat_session import ChatSession
from runtime.engine.runner import Runner
from runtime.engine.state import KVCache
from runtime.models.loader import LoadedModel

THINKING_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}"
    "{% endif %}"
)


@pytest.fixture(scope="module")
def runner(smollm2_fp32):
    runner = Runner(smollm2_fp32, capacity=256)
    yield runner
    runner.release()


def _tokenizer(runner, template: str | None):
    tok = copy.deepcopy(runner.loaded.tokenizer)
    tok.chat_template = template
    return tok


def test_no_template_continues_the_text(runner):
    session = ChatSession(runner, _tokenizer(runner, None), runner.loaded.stop_ids, max_new_tokens=8)
    assert not session.templated
    first = session.send("The capital of France is")
    assert "Paris" in first.text
    second = session.send("The capital of Germany is")
    assert "Berlin" in second.text
    assert session.text.startswith("The capital of France is" + first.text + "\nThe capital of Germany is")
    assert second.stats.prefill_tokens < 10 < second.stats.prompt_tokens


@pytest.mark.parametrize("think, expected", [(False, True), (True, False), (None, False)])
def test_thinking_switch_reaches_the_template(runner, think, expected):
    tok = _tokenizer(runner, THINKING_TEMPLATE)
    session = ChatSession(runner, tok, runner.loaded.stop_ids, max_new_tokens=8, think=think)
    assert session.thinking_switch
    rendered = session._render([{"role": "user", "content": "hi"}])
    assert ("<think>\n\n</think>" in rendered) == expected


def test_a_template_without_the_switch_ignores_it(runner):
    session = ChatSession(
        runner, runner.loaded.tokenizer, runner.loaded.stop_ids, max_new_tokens=8, think=False
    )
    assert not session.thinking_switch and session.template_kwargs == {}


def test_cli_says_when_think_does_not_apply(smollm2_fp32):
    from runtime.cli import app

    result = CliRunner().invoke(app, ["chat", "--no-think", "--max-seq-len", "128", "-n", "8"], input="")
    assert result.exit_code == 0, result.output
    assert "no thinking switch" in result.output


@pytest.fixture(scope="module")
def ring_runner(smollm2_fp32):
    """A tiny random Gemma 3 (sliding window 8 on 3 of 4 layers) with the SmolLM2 vocabulary."""
    from transformers import AutoModelForCausalLM

    from runtime.models.spec import ModelSpec
    from runtime.models.weights import from_state_dict

    torch.manual_seed(0)
    cfg = tiny_config("gemma3", vocab_size=len(smollm2_fp32.tokenizer))
    hf = AutoModelForCausalLM.from_config(cfg)
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(0, 0.2)  # large enough that a stale key changes the hidden states
    spec = ModelSpec.from_hf(cfg)
    model = from_state_dict(spec, hf.state_dict(), "cpu", torch.float32)
    loaded = LoadedModel("tiny-gemma3", model, spec, smollm2_fp32.tokenizer, (2,), "random", 0.0)
    runner = Runner(loaded, capacity=256)
    yield runner
    runner.release()


def _cache_error(runner, session: ChatSession) -> float:
    """Largest difference between the cached keys of the global layer and one fresh prefill."""
    n, layer = session.cached, runner.spec.sliding_window.index(None)
    fresh = KVCache(runner.spec, 1, runner.capacity, "cpu", torch.float32)
    with torch.inference_mode():
        runner.model.prefill(torch.tensor([session.ids[:n]]), fresh)
    return float((runner.cache.k[layer][0, :, :n] - fresh.k[layer][0, :, :n]).abs().max())


def test_rewritten_history_never_reads_a_stale_ring(ring_runner):
    session = ChatSession(ring_runner, ring_runner.loaded.tokenizer, (2,), max_new_tokens=12)
    session.send("Tell me a long story about the sea and the wind, with many details.")
    session.send("More.")
    session.set_system("Be brief.")  # the rendering now differs near its start
    reply = session.send("Why?")
    assert reply.stats.prefill_tokens == reply.stats.prompt_tokens  # rebuilt from position 0
    assert _cache_error(ring_runner, session) < 1e-4


def test_ring_models_still_reuse_the_cache_after_clear(ring_runner):
    session = ChatSession(ring_runner, ring_runner.loaded.tokenizer, (2,), max_new_tokens=12)
    session.send("Tell me a long story about the sea and the wind, with many details.")
    session.clear()
    session.send("Hi")
    reply = session.send("Why?")
    assert reply.stats.prefill_tokens < reply.stats.prompt_tokens
    assert _cache_error(ring_runner, session) < 1e-4
