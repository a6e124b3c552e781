"""Bad input and faults on the generate path: each gets a clear message and the right exit code."""

from __future__ import annotations

import warnings

import pytest
import torch
from typer.testing import CliRunner

from runtime.cli import app
from runtime.engine.generate import generate
from runtime.engine.runner import Runner
from runtime.engine.sampler import SamplingParams
from runtime.errors import CapacityError, RuntimeFailure, RuntimeUserError


def _cli(*args):
    return CliRunner().invoke(app, list(args))


def test_capacity_refused_before_any_work(smollm2_fp32):
    result = _cli("generate", "--prompt", "hello there", "--raw", "-n", "50", "--max-seq-len", "20")
    assert result.exit_code == 2
    assert "exceeds the KV cache capacity of 20" in result.output and "--max-seq-len" in result.output
    assert "Traceback" not in result.output


def test_capacity_error_names_both_numbers(smollm2_fp32):
    runner = Runner(smollm2_fp32, capacity=16, mode="eager")
    with pytest.raises(CapacityError, match=r"prompt \(10 tokens\) \+ max new tokens \(7\) = 17"):
        generate(runner, [[5] * 10], SamplingParams(), 7)
    assert generate(runner, [[5] * 10], SamplingParams(), 6).tokens[0]  # exactly full is fine


@pytest.mark.parametrize("prompt", ["", "   "])
def test_empty_prompt(smollm2_fp32, prompt):
    result = _cli("generate", "--prompt", prompt)
    assert result.exit_code == 2 and "empty prompt" in result.output


def test_prompt_of_special_tokens_only_is_defined(smollm2_fp32):
    result = _cli("generate", "--prompt", "<|im_start|>", "--raw", "-n", "4", "--json")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    "flag,value,needle",
    [
        ("--temperature", "-0.5", "temperature"),
        ("--top-p", "0", "top_p"),
        ("--top-p", "1.5", "top_p"),
        ("--top-k", "-1", "top_k"),
        ("--repetition-penalty", "0", "repetition_penalty"),
    ],
)
def test_sampling_out_of_range(flag, value, needle):
    result = _cli("generate", "--prompt", "hi", flag, value)
    assert result.exit_code == 2
    assert needle in result.output and value.lstrip("-") in result.output


def test_unknown_model_folder_exit_2_without_traceback(tmp_path):
    result = _cli("generate", "--prompt", "hi", "--model", str(tmp_path / "missing"))
    assert result.exit_code == 2 and "not found" in result.output and "Traceback" not in result.output


def test_debug_shows_the_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("RUNTIME_DEBUG", "0")  # --debug sets it to 1; the fixture restores it after
    result = CliRunner().invoke(
        app, ["--debug", "generate", "--prompt", "hi", "--model", str(tmp_path / "x")]
    )
    assert result.exit_code == 2 and "Traceback" in result.output


def test_unknown_dtype_and_mode(smollm2_fp32):
    assert "unknown dtype" in _cli("generate", "--prompt", "hi", "--dtype", "int3").output
    result = _cli("generate", "--prompt", "hi", "--mode", "graph", "--device", "cpu")
    assert result.exit_code == 2 and "--mode eager" in result.output


def test_nonfinite_logits_are_reported_with_the_position(smollm2_fp32):
    from runtime.models.loader import LoadedModel
    from runtime.models.weights import build_model

    state = {k: v.clone() for k, v in smollm2_fp32.model.state_dict().items()}
    state["layers.3.mlp.down.weight"][:, :] = float("inf")
    model = build_model(smollm2_fp32.spec, state)
    broken = LoadedModel("broken", model, smollm2_fp32.spec, None, (), "checkpoint", 0.0)
    runner = Runner(broken, capacity=32, mode="eager")
    with pytest.raises(RuntimeFailure, match=r"non-finite logits .* row 0 at position 4"):
        generate(runner, [[1, 2, 3, 4, 5]], SamplingParams(), 8)


def test_nonfinite_logits_in_decode_only(smollm2_fp32):
    """Logits that go bad mid-decode are caught at the end of the request, naming the step."""
    from runtime.models.loader import LoadedModel
    from runtime.models.weights import build_model

    state = {k: v.clone() for k, v in smollm2_fp32.model.state_dict().items()}
    model = build_model(smollm2_fp32.spec, state)
    broken = LoadedModel("broken", model, smollm2_fp32.spec, None, (), "checkpoint", 0.0)
    runner = Runner(broken, capacity=32, mode="eager")
    real_decode = model.decode

    def decode_going_bad(tokens, positions, cache, **kwargs):
        logits = real_decode(tokens, positions, cache, **kwargs)
        return torch.where(positions[:, None] >= 9, torch.nan, logits)

    model.decode = decode_going_bad
    with pytest.raises(RuntimeFailure, match="position 9"):
        generate(runner, [[1, 2, 3, 4, 5]], SamplingParams(), 10)


def test_capture_failure_falls_back_to_eager(smollm2_fp32, monkeypatch):
    from graphs.pool import GraphPool

    runner = Runner(smollm2_fp32, capacity=32, mode="eager")

    def oom(self, keys, order=None):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(GraphPool, "capture", oom)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runner._capture()
    assert runner.mode == "eager" and runner.pool is None
    assert any("out of memory" in str(w.message) and "eager" in str(w.message) for w in caught)
    assert generate(runner, [[1, 2, 3]], SamplingParams(), 4).tokens[0]


def test_batch_larger_than_max_batch(smollm2_fp32):
    runner = Runner(smollm2_fp32, capacity=32, max_batch=2, mode="eager")
    with pytest.raises(RuntimeUserError, match="max batch of 2"):
        generate(runner, [[1], [2], [3]], SamplingParams(), 2)


@pytest.mark.cuda
def test_kv_cache_out_of_memory_names_sizes():
    from runtime.models.loader import load_model

    loaded = load_model("meta-llama/Llama-3.2-1B-Instruct", weights="random", device="cuda")
    with pytest.raises(
        RuntimeUserError, match=r"out of GPU memory allocating the KV cache: needs .* GiB free"
    ):
        Runner(loaded, capacity=4_000_000, max_batch=64)
