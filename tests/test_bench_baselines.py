"""Baselines on the CPU: transformers' model on exactly our weights (shared storage) generates the
same greedy tokens as our runtime, is timed per token, and the compiled baseline is skipped off CUDA."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_configs import tiny_config

from runtime.bench.baselines import TransformersEngine, hf_model
from runtime.bench.engines import RuntimeEngine, open_engine, unsupported
from runtime.engine.sampler import SamplingParams
from runtime.models.loader import load_model

PROMPT = [504, 3458, 282, 4649, 314, 1345, 30, 378, 2114, 5212, 28, 351, 6024, 314, 253, 1701]


def test_transformers_eager_matches_runtime_on_smollm2(smollm2_fp32):
    runtime = RuntimeEngine(smollm2_fp32, "runtime", capacity=64, max_batch=2)
    baseline = open_engine("transformers_eager", smollm2_fp32, capacity=64, max_batch=2)
    try:
        ours = runtime.run([PROMPT, PROMPT[::-1]], SamplingParams(), 12, ())
        theirs = baseline.run([PROMPT, PROMPT[::-1]], SamplingParams(), 12, ())
    finally:
        runtime.release()
        baseline.release()
    assert isinstance(baseline, TransformersEngine) and baseline.mode == "eager"
    assert theirs.tokens == ours.tokens and len(theirs.tokens[0]) == 12
    assert len(theirs.step_ms) == 11 and all(s > 0 for s in theirs.step_ms)
    assert 0 < theirs.ttft_ms < theirs.total_ms
    assert abs(theirs.decode_ms - sum(theirs.step_ms)) < 1e-6


@pytest.mark.parametrize("family, tied", [("qwen3", False), ("gemma3", True), ("qwen2", True)])
def test_transformers_parameters_are_views_of_ours(tmp_path, family, tied):
    path = tmp_path / f"tiny-{family}.json"
    path.write_text(json.dumps(tiny_config(family, tie_word_embeddings=tied).to_dict()))
    loaded = load_model(str(path), weights="random", device="cpu", dtype="float32", seed=1)
    model = hf_model(loaded)
    ours = loaded.model.state_dict()
    q = model.model.layers[1].self_attn.q_proj.weight
    packed = ours["layers.1.attn.qkv.weight"]
    assert q.data_ptr() == packed.data_ptr() and torch.equal(q, packed[: q.shape[0]])
    v = model.model.layers[1].self_attn.v_proj.weight
    assert torch.equal(v, packed[-v.shape[0] :])
    up = model.model.layers[0].mlp.up_proj.weight
    assert torch.equal(up, ours["layers.0.mlp.gate_up.weight"][up.shape[0] :])
    head = "embed.weight" if tied else "lm_head.weight"
    assert model.lm_head.weight.data_ptr() == ours[head].data_ptr()
    # the same weights give the same greedy tokens (gemma3: past its sliding window of 8)
    prompt = [[3, 17, 99, 42, 7, 150, 23, 64, 5, 6, 7, 8, 9, 10]]
    runtime = RuntimeEngine(loaded, "runtime_eager", capacity=32, max_batch=1)
    ours_tokens = runtime.run(prompt, SamplingParams(), 12, ()).tokens
    runtime.release()
    assert TransformersEngine(loaded).run(prompt, SamplingParams(), 12, ()).tokens == ours_tokens


def test_stop_ids_cut_the_baseline_and_sampling_is_seeded(smollm2_fp32):
    engine = TransformersEngine(smollm2_fp32)
    greedy = engine.run([PROMPT], SamplingParams(), 8, ()).tokens[0]
    stopped = engine.run([PROMPT], SamplingParams(), 8, (greedy[2],)).tokens[0]
    assert stopped == greedy[: greedy.index(greedy[2]) + 1]
    params = SamplingParams(temperature=0.8, top_k=50, top_p=0.9, repetition_penalty=1.1, seed=42)
    first = engine.run([PROMPT], params, 8, ()).tokens
    assert engine.run([PROMPT], params, 8, ()).tokens == first


def test_gpu_only_engines_are_skipped_on_the_cpu():
    cpu = torch.device("cpu")
    assert "needs a CUDA GPU" in unsupported("transformers_compile", cpu)
    assert "needs a CUDA GPU" in unsupported("runtime_graph", cpu)
    for engine in ("runtime", "runtime_eager", "transformers_eager"):
        assert unsupported(engine, cpu) is None
    assert unsupported("transformers_compile", torch.device("cuda")) is None
