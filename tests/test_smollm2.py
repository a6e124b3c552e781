"""The real SmolLM2-135M-Instruct weights (the embedded GGUF): our greedy tokens equal
transformers' on three prompts, raw and through the chat template, and through the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from runtime.engine.generate import generate
from runtime.engine.runner import Runner
from runtime.engine.sampler import SamplingParams
from runtime.tokens import encode_prompt

PROMPTS = [
    "The capital of France is",
    "Write a haiku about the sea.",
    "def fibonacci(n):",
]


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "chat"])
def test_greedy_tokens_equal_transformers(smollm2_fp32, smollm2_hf, raw):
    tokenizer = smollm2_fp32.tokenizer
    runner = Runner(smollm2_fp32, capacity=128, mode="eager")
    for prompt in PROMPTS:
        ids = encode_prompt(tokenizer, prompt, raw=raw)
        expected = smollm2_hf.generate(
            torch.tensor([ids]), max_new_tokens=32, do_sample=False, eos_token_id=None, pad_token_id=0
        )[0, len(ids) :].tolist()
        got = generate(runner, [ids], SamplingParams(), 32).tokens[0]
        assert got == expected, prompt


def test_chat_template_is_applied(smollm2_fp32):
    tokenizer = smollm2_fp32.tokenizer
    raw = encode_prompt(tokenizer, "hi", raw=True)
    chat = encode_prompt(tokenizer, "hi", raw=False)
    assert len(chat) > len(raw) and "<|im_start|>" in tokenizer.decode(chat)


def test_generate_cli_json_matches_transformers(smollm2_fp32, smollm2_hf):
    from runtime.cli import app

    result = CliRunner().invoke(
        app, ["generate", "--raw", "--temperature", "0", "--json", "--prompt", PROMPTS[0], "-n", "20"]
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    ids = smollm2_fp32.tokenizer(PROMPTS[0]).input_ids
    expected = smollm2_hf.generate(torch.tensor([ids]), max_new_tokens=20, do_sample=False)[
        0, len(ids) :
    ].tolist()
    assert out["tokens"] == expected[: len(out["tokens"])]
    assert "Paris" in out["text"]


def test_generation_stops_at_a_stop_id(smollm2_fp32):
    tokenizer = smollm2_fp32.tokenizer
    runner = Runner(smollm2_fp32, capacity=256, mode="eager")
    ids = encode_prompt(tokenizer, "Say hello.", raw=False)
    result = generate(runner, [ids], SamplingParams(), 200, stop_ids=smollm2_fp32.stop_ids)
    assert result.finish[0] == "stop"
    assert result.tokens[0][-1] in smollm2_fp32.stop_ids
    assert not set(result.tokens[0][:-1]) & set(smollm2_fp32.stop_ids)
