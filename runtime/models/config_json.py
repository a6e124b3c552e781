"""ModelSpec straight from a config.json, without importing transformers (its config machinery costs
seconds per start).

`config_view` rebuilds, for the four supported model types, exactly the attributes ModelSpec.from_hf
reads off a transformers config (LlamaConfig, Qwen2Config, Qwen3Config, Gemma3TextConfig as of
transformers 5.x): the class defaults for missing keys, the legacy-key normalisation (rope_scaling,
rope_theta, rope_local_base_freq, sliding_window_pattern, use_sliding_window, max_window_layers) and the
validation that would make transformers refuse the file. Anything it cannot reproduce with certainty
raises NotUnderstood, and the caller falls back to transformers.
"""

from __future__ import annotations

import copy
import json
import types
from pathlib import Path
from typing import Any

from runtime.models.config_fields import (
    FIELDS,
    LAYER_TYPES,
    READ,
    REFUSED_KEYS,
    ROPE_NUMBERS,
    ROPE_REQUIRED,
    is_int,
    is_number,
    kind_ok,
)
from runtime.models.registry import ARCHITECTURES, MODEL_TYPES
from runtime.models.spec import ModelSpec


class NotUnderstood(Exception):
    """The config needs transformers to be read faithfully (unknown type, key or form)."""


def _flat_rope(data: dict[str, Any], rope: dict[str, Any] | None, max_positions: int) -> dict[str, Any]:
    """One rope for every layer (Llama, Qwen): a legacy `rope_scaling` replaces `rope_parameters`,
    `rope_theta` beside it (else 10000) fills the theta, llama3 gets the pretraining length."""
    scaling = data.get("rope_scaling")
    if scaling is not None and not isinstance(scaling, dict):
        raise NotUnderstood(f"rope_scaling {scaling!r} is not a dict")
    params = copy.deepcopy(scaling) or rope
    params = params if params is not None else {}
    if any(isinstance(v, dict) or k in LAYER_TYPES for k, v in params.items()):
        raise NotUnderstood("per-layer-type rope parameters for a family with a single rope")
    params.setdefault("rope_theta", data.get("rope_theta", 10000.0))
    params.setdefault("rope_type", params.get("type", "default"))
    if params["rope_type"] == "llama3":
        # a top-level original_max_position_embeddings is not consulted by these classes
        params.setdefault("original_max_position_embeddings", max_positions)
    return params


def _gemma_rope(
    data: dict[str, Any], rope: dict[str, Any] | None, layer_types: list[str], max_positions: int
) -> dict[str, Any]:
    """Gemma 3: a rope per layer type. A legacy `rope_scaling` is merged into the global one (a
    `rope_type` already there wins over its `type`), `rope_theta` (else 1e6) is the global theta and
    `rope_local_base_freq` (else 1e4) the sliding one."""
    scaling = data.get("rope_scaling")
    if rope is None:
        rope = {"sliding_attention": {"rope_type": "default"}, "full_attention": {"rope_type": "default"}}
    if scaling is not None:
        if not isinstance(scaling, dict) or not isinstance(rope.get("full_attention"), dict):
            raise NotUnderstood("rope_scaling cannot be merged into rope_parameters['full_attention']")
        rope["full_attention"].update(copy.deepcopy(scaling))
    for layer_type, theta_key, default_theta in (
        ("full_attention", "rope_theta", 1_000_000.0),
        ("sliding_attention", "rope_local_base_freq", 10_000.0),
    ):
        if rope.get(layer_type) is None:
            rope[layer_type] = {"rope_type": "default"}
        if not isinstance(rope[layer_type], dict):
            raise NotUnderstood(f"rope_parameters[{layer_type!r}] is not a dict")
        rope[layer_type].setdefault("rope_theta", data.get(theta_key, default_theta))
    # only the layer types the model has are standardised; an unused entry stays as written
    for layer_type in (k for k in rope if k in layer_types):
        params = rope[layer_type]
        params.setdefault("rope_type", params.get("type", "default"))
        params.setdefault("rope_theta", None)
        if params["rope_type"] == "llama3":
            params.setdefault("original_max_position_embeddings", max_positions)
    return rope


def _check_rope(params: dict[str, Any]) -> None:
    """Refuse what transformers would refuse, or ModelSpec could not read, in one rope dict."""
    kind = params.get("rope_type", params.get("type", "default"))
    if not isinstance(kind, str) or kind not in ROPE_REQUIRED:
        raise NotUnderstood(f"rope type {kind!r}")
    missing = [k for k in ROPE_REQUIRED[kind] if k not in params]
    if missing:
        raise NotUnderstood(f"{kind} rope without {', '.join(missing)}")
    for key in ROPE_NUMBERS:
        if key in params and not is_number(params[key]):
            raise NotUnderstood(f"rope {key} {params[key]!r} is not a number")


def config_view(data: dict[str, Any]) -> types.SimpleNamespace:
    """The attributes ModelSpec.from_hf reads, with the values the transformers config class of
    `data["model_type"]` would hold for this config.json; NotUnderstood where that is not certain."""
    if not isinstance(data, dict):
        raise NotUnderstood("config.json does not hold an object")
    model_type = data.get("model_type")
    if model_type not in FIELDS:
        raise NotUnderstood(f"model_type {model_type!r} is not read without transformers")
    refused = [k for k in REFUSED_KEYS if k in data]
    if refused or data.get("use_bidirectional_attention"):
        raise NotUnderstood(
            f"keys not read without transformers: {refused or ['use_bidirectional_attention']}"
        )

    fields = FIELDS[model_type]
    cfg: dict[str, Any] = {}
    for name, (default, kind) in fields.items():
        value = copy.deepcopy(data[name]) if name in data else default
        if not kind_ok(value, kind):
            raise NotUnderstood(f"{name} {value!r} is not of the type transformers accepts ({kind})")
        cfg[name] = value
    for name in READ:
        if name not in fields and name in data:
            cfg[name] = copy.deepcopy(data[name])

    family = MODEL_TYPES[model_type]
    named = [ARCHITECTURES[a] for a in cfg["architectures"] or [] if a in ARCHITECTURES]
    if named and named[0] != family:
        raise NotUnderstood(f"architecture of family {named[0]} with model_type {model_type!r}")
    layers, heads, hidden = cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["hidden_size"]
    if min(layers, heads, hidden) <= 0:
        raise NotUnderstood("non-positive layer, head or hidden count")
    if family in ("llama", "gemma3") and hidden % heads:
        raise NotUnderstood(f"hidden_size {hidden} is not a multiple of {heads} heads")
    max_positions = cfg["max_position_embeddings"]

    # each class's __post_init__
    if family == "llama" and cfg["head_dim"] is None:
        cfg["head_dim"] = hidden // heads
    if cfg["num_key_value_heads"] is None:
        cfg["num_key_value_heads"] = heads
    if family in ("qwen2", "qwen3"):
        if not cfg["use_sliding_window"]:
            cfg["sliding_window"] = None
        if cfg["layer_types"] is None:
            first_sliding = cfg["max_window_layers"] if cfg["sliding_window"] is not None else layers
            cfg["layer_types"] = [LAYER_TYPES[i >= first_sliding] for i in range(layers)]
    if family == "gemma3" and cfg["layer_types"] is None:
        pattern = data.get("sliding_window_pattern", 6)
        if not is_int(pattern) or pattern <= 0:
            raise NotUnderstood(f"sliding_window_pattern {pattern!r}")
        # every pattern-th layer is global, the others slide
        cfg["layer_types"] = [LAYER_TYPES[bool((i + 1) % pattern)] for i in range(layers)]

    layer_types = cfg.get("layer_types")
    if layer_types is not None:
        # transformers would rename legacy names (e.g. "attention"); they are not reproduced here
        if not isinstance(layer_types, list) or any(t not in LAYER_TYPES for t in layer_types):
            raise NotUnderstood(f"layer_types {layer_types!r}")
        if len(layer_types) != layers:
            raise NotUnderstood(f"{len(layer_types)} layer_types for {layers} layers")

    if family == "gemma3":
        rope = _gemma_rope(data, cfg["rope_parameters"], layer_types, max_positions)
        for layer_type in LAYER_TYPES:
            _check_rope(rope[layer_type])
    else:
        rope = _flat_rope(data, cfg["rope_parameters"], max_positions)
        _check_rope(rope)
    cfg["rope_parameters"] = rope

    head_dim = cfg.get("head_dim")
    if head_dim is not None and (not is_int(head_dim) or (head_dim > 4 and head_dim % 2)):
        raise NotUnderstood(f"head_dim {head_dim!r}: rope needs an even rotary dimension")
    # rope_theta, rope_scaling and rope_local_base_freq are consumed into rope_parameters and are
    # not attributes of the transformers config either
    return types.SimpleNamespace(model_type=model_type, **cfg)


def spec_from_config_json(path: Path) -> ModelSpec:
    """The ModelSpec of a model folder (its config.json) or of a config file."""
    path = Path(path)
    data = json.loads((path / "config.json" if path.is_dir() else path).read_text())
    return ModelSpec.from_hf(config_view(data))
