"""Tiny random configs of every family (2-4 layers), built with transformers' own config classes."""

from __future__ import annotations


def tiny_config(family: str, **overrides):
    from transformers import Gemma3TextConfig, LlamaConfig, Qwen2Config, Qwen3Config

    common = dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=256,
        max_position_embeddings=512,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    if family == "llama":
        cfg = LlamaConfig(
            **common,
            head_dim=16,
            rope_parameters=dict(
                rope_type="llama3",
                rope_theta=500000.0,
                factor=32.0,
                low_freq_factor=1.0,
                high_freq_factor=4.0,
                original_max_position_embeddings=64,
            ),
            architectures=["LlamaForCausalLM"],
        )
    elif family == "qwen3":
        cfg = Qwen3Config(
            **common,
            head_dim=32,
            rope_parameters=dict(rope_type="default", rope_theta=1e6),
            architectures=["Qwen3ForCausalLM"],
        )
    elif family == "qwen2":
        cfg = Qwen2Config(
            **common,
            rope_parameters=dict(rope_type="default", rope_theta=1e6),
            architectures=["Qwen2ForCausalLM"],
        )
    elif family == "gemma3":
        common.update(num_hidden_layers=4, num_key_value_heads=1)
        cfg = Gemma3TextConfig(
            **common,
            head_dim=32,
            sliding_window=8,
            layer_types=["sliding_attention", "sliding_attention", "sliding_attention", "full_attention"],
            query_pre_attn_scalar=32,
            hidden_activation="gelu_pytorch_tanh",
            rope_parameters={
                "full_attention": {"rope_type": "default", "rope_theta": 1e6},
                "sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
            },
            architectures=["Gemma3ForCausalLM"],
        )
    else:
        raise ValueError(family)
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


def hf_and_ours(family: str, seed: int = 0):
    """A tiny transformers model (eager attention) with every weight drawn from N(0, 0.2), larger
    than init and norms far from one so every weight matters to the logits, and our model built
    from its state dict (fp32, CPU) -> (hf, spec, ours)."""
    import torch
    from transformers import AutoModelForCausalLM

    from runtime.models.spec import ModelSpec
    from runtime.models.weights import from_state_dict

    torch.manual_seed(seed)
    cfg = tiny_config(family)
    hf = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(0, 0.2)
    spec = ModelSpec.from_hf(cfg)
    return hf, spec, from_state_dict(spec, hf.state_dict(), "cpu", torch.float32)


def tiny_llama_runner(mode: str, device: str, capacity: int, max_batch: int = 4):
    """A Runner (`mode`: "graph" or "eager") of the tiny llama, fp32 on `device`, every weight drawn
    from N(0, 0.2) with seed 0, so that greedy and sampled tokens differ from step to step."""
    import torch

    from runtime.engine.runner import Runner
    from runtime.models.loader import LoadedModel
    from runtime.models.spec import ModelSpec
    from runtime.models.weights import random_model

    spec = ModelSpec.from_hf(tiny_config("llama"))
    torch.manual_seed(0)
    model = random_model(spec, device, torch.float32)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    loaded = LoadedModel("llama", model, spec, None, (), "random", 0.0)
    return Runner(loaded, capacity=capacity, max_batch=max_batch, mode=mode)
