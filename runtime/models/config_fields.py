"""The config.json fields ModelSpec reads, per supported model type, as transformers 5.x's config
classes define them: each field's default and the kind its strict type check accepts, the keys that
need transformers, and the rope parameters each rope type requires (config_json.py reads a file with them).
"""

from __future__ import annotations

from typing import Any

# Field kinds, as the strict type checks of the transformers config dataclasses see them:
# int and float are distinct (an int is no float, a bool is no int); "?" allows None.
INT, INT_OPT, FLOAT, FLOAT_OPT, BOOL, STR = "int", "int?", "float", "float?", "bool", "str"
IDS_OPT, STRS_OPT, DICT_OPT = "ids?", "strs?", "dict?"

# (default, kind) of every class field ModelSpec.from_hf reads; the other fields do not shape a spec
COMMON = {"architectures": (None, STRS_OPT)}
LLAMA = {
    "vocab_size": (32000, INT),
    "hidden_size": (4096, INT),
    "intermediate_size": (11008, INT),
    "num_hidden_layers": (32, INT),
    "num_attention_heads": (32, INT),
    "num_key_value_heads": (None, INT_OPT),
    "hidden_act": ("silu", STR),
    "max_position_embeddings": (2048, INT),
    "rms_norm_eps": (1e-6, FLOAT),
    "bos_token_id": (1, INT_OPT),
    "eos_token_id": (2, IDS_OPT),
    "tie_word_embeddings": (False, BOOL),
    "rope_parameters": (None, DICT_OPT),
    "attention_bias": (False, BOOL),
    "head_dim": (None, INT_OPT),
}
QWEN2 = {
    "vocab_size": (151936, INT),
    "hidden_size": (4096, INT),
    "intermediate_size": (22016, INT),
    "num_hidden_layers": (32, INT),
    "num_attention_heads": (32, INT),
    "num_key_value_heads": (32, INT_OPT),  # 32, not the head count, when the key is missing
    "hidden_act": ("silu", STR),
    "max_position_embeddings": (32768, INT),
    "rms_norm_eps": (1e-6, FLOAT),
    "tie_word_embeddings": (False, BOOL),
    "rope_parameters": (None, DICT_OPT),
    "use_sliding_window": (False, BOOL),
    "sliding_window": (4096, INT_OPT),
    "max_window_layers": (28, INT),
    "layer_types": (None, STRS_OPT),
    "bos_token_id": (None, INT_OPT),
    "eos_token_id": (None, IDS_OPT),
}
QWEN3 = {**QWEN2, "head_dim": (128, INT), "attention_bias": (False, BOOL)}
GEMMA3 = {
    "vocab_size": (262208, INT),
    "hidden_size": (2304, INT),
    "intermediate_size": (9216, INT),
    "num_hidden_layers": (26, INT),
    "num_attention_heads": (8, INT),
    "num_key_value_heads": (4, INT),
    "head_dim": (256, INT),
    "hidden_activation": ("gelu_pytorch_tanh", STR),
    "max_position_embeddings": (131072, INT),
    "rms_norm_eps": (1e-6, FLOAT),
    "eos_token_id": (1, IDS_OPT),
    "bos_token_id": (2, INT_OPT),
    "tie_word_embeddings": (True, BOOL),
    "rope_parameters": (None, DICT_OPT),
    "attention_bias": (False, BOOL),
    "query_pre_attn_scalar": (256, INT),
    "sliding_window": (4096, INT_OPT),
    "layer_types": (None, STRS_OPT),
    "final_logit_softcapping": (None, FLOAT_OPT),
    "attn_logit_softcapping": (None, FLOAT_OPT),
}
FIELDS = {
    name: {**COMMON, **fields}
    for name, fields in (("llama", LLAMA), ("qwen2", QWEN2), ("qwen3", QWEN3), ("gemma3_text", GEMMA3))
}

# Every attribute ModelSpec.from_hf reads. A key that is no field of the class still becomes an
# attribute as written (transformers keeps unknown keys), so those pass through untouched.
READ = (
    "attn_logit_softcapping",
    "num_hidden_layers",
    "num_attention_heads",
    "head_dim",
    "hidden_size",
    "layer_types",
    "sliding_window",
    "use_sliding_window",
    "rope_parameters",
    "hidden_activation",
    "hidden_act",
    "eos_token_id",
    "tie_word_embeddings",
    "num_key_value_heads",
    "intermediate_size",
    "vocab_size",
    "rms_norm_eps",
    "max_position_embeddings",
    "attention_bias",
    "query_pre_attn_scalar",
    "final_logit_softcapping",
    "bos_token_id",
)
# Keys that change what transformers builds in ways not reproduced here: sub-configs (multimodal
# wrappers), per-layer overrides, partial rotary embeddings, keys of the generic head-count check.
REFUSED_KEYS = (
    "text_config",
    "vision_config",
    "per_layer_config",
    "partial_rotary_factor",
    "num_heads",
    "embed_dim",
)
LAYER_TYPES = ("full_attention", "sliding_attention")
# required keys per rope type (transformers raises when one is missing); only the kinds ModelSpec knows
ROPE_REQUIRED = {
    "default": (),
    "linear": ("factor",),
    "llama3": (
        "factor",
        "original_max_position_embeddings",
        "low_freq_factor",
        "high_freq_factor",
        "rope_theta",
    ),
}
ROPE_NUMBERS = (
    "rope_theta",
    "factor",
    "low_freq_factor",
    "high_freq_factor",
    "original_max_position_embeddings",
)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def kind_ok(value: Any, kind: str) -> bool:
    if kind.endswith("?") and value is None:
        return True
    base = kind.rstrip("?")
    if base == INT:
        return is_int(value)
    if base == FLOAT:
        return isinstance(value, float)
    if base == BOOL:
        return isinstance(value, bool)
    if base == STR:
        return isinstance(value, str)
    if base == "ids":
        return is_int(value) or (isinstance(value, list) and all(is_int(v) for v in value))
    if base == "strs":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    return isinstance(value, dict)
