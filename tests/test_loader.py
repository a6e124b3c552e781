"""Loading weights: safetensors folders (single, sharded), tied and untied heads, the GGUF cache,
random weights from shipped configs, and the errors for everything that can be missing or wrong."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch
from tiny_configs import tiny_config

from runtime.engine.state import KVCache
from runtime.errors import ModelNotFoundError, RuntimeUserError, UnsupportedModelError
from runtime.models.loader import load_model
from runtime.models.sources import MODEL_CONFIGS


def _save_hf(tmp_path, family="llama", tied=True, shard=None):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    cfg = tiny_config(family, tie_word_embeddings=tied)
    hf = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(0, 0.2)
    kwargs = {"max_shard_size": shard} if shard else {}
    hf.save_pretrained(tmp_path, **kwargs)
    return hf


def _logits(loaded, ids):
    cache = KVCache(loaded.spec, 1, 32, "cpu", torch.float32)
    return loaded.model.prefill(ids, cache, all_logits=True)


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_folder_matches_transformers(tmp_path, tied):
    hf = _save_hf(tmp_path, tied=tied)
    loaded = load_model(str(tmp_path), device="cpu", dtype="float32")
    assert loaded.weights == "checkpoint"
    # the start-up breakdown covers the load: config, weights, tokenizer
    assert set(loaded.load_parts) == {"config_s", "weights_s", "tokenizer_s"}
    assert sum(loaded.load_parts.values()) == pytest.approx(loaded.load_s, abs=0.01)
    ids = torch.randint(3, 256, (1, 7))
    with torch.no_grad():
        assert (_logits(loaded, ids) - hf(ids).logits).abs().max() < 1e-4
    model = loaded.model
    if tied:  # one tensor, not a copy
        assert model.lm_head is None and model.lm_head_weight.data_ptr() == model.embed.weight.data_ptr()
    else:
        assert model.lm_head is not None and model.lm_head_weight.data_ptr() != model.embed.weight.data_ptr()


def test_sharded_index(tmp_path):
    hf = _save_hf(tmp_path, family="qwen3", shard="40KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    assert len(list(tmp_path.glob("*.safetensors"))) > 1
    loaded = load_model(str(tmp_path), device="cpu", dtype="float32")
    ids = torch.randint(3, 256, (1, 5))
    with torch.no_grad():
        assert (_logits(loaded, ids) - hf(ids).logits).abs().max() < 1e-4


def test_gguf_cache_hit(smollm2_fp32, monkeypatch):
    """The second load reads the cached safetensors: no conversion, a few seconds at most."""
    import transformers

    from runtime.models.sources import embedded_gguf, gguf_folder

    def refuse(*a, **k):
        raise AssertionError("converted again instead of reading the cache")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)
    start = time.perf_counter()
    folder = gguf_folder(embedded_gguf())
    loaded = load_model(device="cpu", dtype="float32")
    assert (folder / "model.safetensors").exists()
    assert time.perf_counter() - start < 10
    assert torch.equal(loaded.model.embed.weight, smollm2_fp32.model.embed.weight)


@pytest.mark.parametrize("name", ["Llama-3.2-1B-Instruct", "Qwen3-1.7B", "gemma-3-1b-it"])
def test_shipped_configs_have_the_published_shapes(name):
    from runtime.models.loader import _hf_config
    from runtime.models.spec import ModelSpec

    spec = ModelSpec.from_hf(_hf_config(MODEL_CONFIGS / f"{name}.json"))
    expected = {
        "Llama-3.2-1B-Instruct": ("llama", 2048, 16, 32, 8, 64, 128256, 2.47e9),
        "Qwen3-1.7B": ("qwen3", 2048, 28, 16, 8, 128, 151936, 3.44e9),
        "gemma-3-1b-it": ("gemma3", 1152, 26, 4, 1, 256, 262144, 2.00e9),
    }[name]
    got = (spec.family, spec.hidden, spec.layers, spec.heads, spec.kv_heads, spec.head_dim, spec.vocab)
    assert got == expected[:7]
    assert abs(spec.param_bytes(2) - expected[7]) / expected[7] < 0.01
    if spec.family == "gemma3":
        assert [w is None for w in spec.sliding_window] == [(i + 1) % 6 == 0 for i in range(26)]
        assert {r.theta for r in spec.rope} == {1e4, 1e6}
    if spec.family == "llama":
        assert spec.rope[0].kind == "llama3" and spec.rope[0].factor == 32


def test_random_weights_need_no_network():
    loaded = load_model("meta-llama/Llama-3.2-1B-Instruct", weights="random", device="cpu", dtype="bfloat16")
    assert loaded.weights == "random" and loaded.spec.layers == 16
    assert loaded.stop_ids == (128001, 128008, 128009)


def test_missing_folder(tmp_path):
    with pytest.raises(ModelNotFoundError, match="not found"):
        load_model(str(tmp_path / "nope"), device="cpu")


def test_folder_without_config(tmp_path):
    with pytest.raises(ModelNotFoundError, match="config.json"):
        load_model(str(tmp_path), device="cpu")


def test_unsupported_architecture_lists_supported(tmp_path):
    (tmp_path / "config.json").write_text('{"architectures": ["MambaForCausalLM"], "model_type": "mamba"}')
    with pytest.raises(RuntimeUserError) as err:
        load_model(str(tmp_path), device="cpu")
    assert "MambaForCausalLM" in str(err.value) or "mamba" in str(err.value)


def test_unsupported_architecture_message():
    from runtime.models.registry import family_for

    with pytest.raises(UnsupportedModelError, match="LlamaForCausalLM.*Gemma3ForCausalLM"):
        family_for(["MambaForCausalLM"], "mamba")


def test_truncated_safetensors(tmp_path):
    _save_hf(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    with pytest.raises(ModelNotFoundError, match="model.safetensors|safetensors"):
        load_model(str(tmp_path), device="cpu")


def test_missing_tensor_is_named(tmp_path):
    from safetensors.torch import load_file, save_file

    _save_hf(tmp_path)
    weights = tmp_path / "model.safetensors"
    state = load_file(weights)
    state.pop("model.layers.1.mlp.up_proj.weight")
    save_file(state, weights)
    with pytest.raises(ModelNotFoundError, match="layers.1.mlp.up_proj"):
        load_model(str(tmp_path), device="cpu")


def test_cuda_without_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeUserError, match="--device cpu"):
        load_model(device="cuda")


def test_fp16_gemma_is_refused():
    with pytest.raises(RuntimeUserError, match="bfloat16"):
        load_model("google/gemma-3-1b-it", weights="random", device="cpu", dtype="float16")


def test_offline_hub_names_the_variable_and_the_alternative(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, "-m", "runtime.cli", "generate", "--model", "someone/missing-model", "--prompt", "hi"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "HF_HUB_OFFLINE" in proc.stderr and "--model PATH" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_gguf_of_an_unsupported_architecture(tmp_path, monkeypatch):
    import numpy as np
    from gguf import GGUFWriter

    monkeypatch.setenv("RUNTIME_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "odd.gguf"
    writer = GGUFWriter(str(path), "nosucharch")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(UnsupportedModelError, match=r"odd\.gguf.*nosucharch"):
        load_model(str(path), device="cpu")
    assert not list((tmp_path / "cache").glob("gguf/*/config.json"))  # nothing half-written cached


def test_out_of_memory_at_load_gives_needed_and_free(tmp_path, monkeypatch):
    import runtime.models.loader as loader

    _save_hf(tmp_path)

    def oom(*a, **k):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(loader, "from_safetensors", oom)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (2**30, 80 * 2**30))
    with pytest.raises(
        RuntimeUserError, match=r"loading the weights of .*: needs 0\.00 GiB, 1\.00 of 80\.00 GiB free"
    ):
        load_model(str(tmp_path), device=torch.device("cpu"), dtype="float32")
