"""ModelSpec: the frozen, validated description of one decoder, normalised from a HF config.

Every family-specific number the model, the cache and the kernels need lives here, so nothing
downstream ever reads a transformers config again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from runtime.errors import UnsupportedModelError
from runtime.models.registry import family_for


@dataclass(frozen=True)
class RopeSpec:
    """Rotary embedding of one layer type. `kind`: default | linear | llama3."""

    theta: float
    kind: str = "default"
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_positions: int = 8192

    @classmethod
    def from_hf(cls, params: dict[str, Any], fallback_theta: float) -> RopeSpec:
        kind = params.get("rope_type", params.get("type", "default")) or "default"
        if kind not in ("default", "linear", "llama3"):
            raise UnsupportedModelError(
                f"rope type {kind!r} is not supported (supported: default, linear, llama3)"
            )
        return cls(
            theta=float(params.get("rope_theta", fallback_theta)),
            kind=kind,
            factor=float(params.get("factor", 1.0) or 1.0),
            low_freq_factor=float(params.get("low_freq_factor", 1.0)),
            high_freq_factor=float(params.get("high_freq_factor", 4.0)),
            original_max_positions=int(params.get("original_max_position_embeddings", 8192)),
        )


@dataclass(frozen=True)
class ModelSpec:
    family: str  # llama | qwen2 | qwen3 | gemma3
    architecture: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    norm_eps: float
    activation: str  # silu | gelu_tanh
    tied_embeddings: bool
    max_positions: int
    # per layer: the rope of its type, and its sliding window (None = global attention)
    rope: tuple[RopeSpec, ...]
    sliding_window: tuple[int | None, ...]
    qkv_bias: bool = False
    qk_norm: bool = False
    norm_offset: float = 0.0  # Gemma stores w and scales by (1 + w)
    sandwich_norms: bool = False  # Gemma: norms after attention and MLP too
    embed_scale: float = 1.0  # Gemma: sqrt(hidden)
    query_scale: float = 0.0  # softmax scale; 0 = head_dim ** -0.5
    final_softcap: float | None = None
    eos_ids: tuple[int, ...] = ()
    bos_id: int | None = None

    def __post_init__(self) -> None:
        for name in ("hidden", "layers", "heads", "kv_heads", "head_dim", "intermediate", "vocab"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ModelSpec.{name} must be positive, got {getattr(self, name)}")
        if self.heads % self.kv_heads:
            raise ValueError(f"heads ({self.heads}) must be a multiple of kv_heads ({self.kv_heads})")
        if len(self.rope) != self.layers or len(self.sliding_window) != self.layers:
            raise ValueError("rope and sliding_window need one entry per layer")
        if self.activation not in ("silu", "gelu_tanh"):
            raise ValueError(f"activation {self.activation!r} is not silu or gelu_tanh")

    @property
    def softmax_scale(self) -> float:
        return self.query_scale or self.head_dim**-0.5

    @property
    def q_size(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.kv_heads * self.head_dim

    def param_bytes(self, bytes_per_weight: int = 2) -> int:
        """Bytes of weights one decode step reads (embedding row aside, LM head included)."""
        per_layer = self.hidden * (self.q_size + 2 * self.kv_size) + self.q_size * self.hidden
        per_layer += 3 * self.hidden * self.intermediate
        return bytes_per_weight * (self.layers * per_layer + self.vocab * self.hidden)

    @classmethod
    def from_hf(cls, config: Any) -> ModelSpec:
        """Normalise a transformers PretrainedConfig (any supported family) into a spec."""
        architectures = list(getattr(config, "architectures", None) or [])
        model_type = getattr(config, "model_type", "")
        family, architecture = family_for(architectures, model_type)
        text = getattr(config, "text_config", None) or config
        if getattr(text, "attn_logit_softcapping", None):
            raise UnsupportedModelError("attention logit soft-capping (Gemma 2) is not supported")

        layers = int(text.num_hidden_layers)
        heads = int(text.num_attention_heads)
        head_dim = int(getattr(text, "head_dim", None) or text.hidden_size // heads)
        layer_types = list(getattr(text, "layer_types", None) or ["full_attention"] * layers)
        window = getattr(text, "sliding_window", None)
        if family in ("qwen2", "qwen3") and not getattr(text, "use_sliding_window", False):
            window = None
        sliding = tuple(int(window) if (t == "sliding_attention" and window) else None for t in layer_types)

        rope_params = getattr(text, "rope_parameters", None) or {}
        fallback_theta = float(getattr(text, "rope_theta", 10000.0) or 10000.0)
        if "full_attention" in rope_params or "sliding_attention" in rope_params:
            by_type = {
                t: RopeSpec.from_hf(rope_params.get(t) or {}, fallback_theta)
                for t in ("full_attention", "sliding_attention")
            }
            rope = tuple(by_type.get(t, by_type["full_attention"]) for t in layer_types)
        else:
            one = RopeSpec.from_hf(rope_params, fallback_theta)
            rope = (one,) * layers

        act = getattr(text, "hidden_activation", None) or getattr(text, "hidden_act", "silu")
        activation = {"silu": "silu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_tanh": "gelu_tanh"}.get(act)
        if activation is None:
            raise UnsupportedModelError(f"activation {act!r} is not supported (silu, gelu_pytorch_tanh)")

        gemma = family == "gemma3"
        eos = getattr(text, "eos_token_id", None) or getattr(config, "eos_token_id", None)
        eos_ids = tuple(eos) if isinstance(eos, (list, tuple)) else ((eos,) if eos is not None else ())
        tied = bool(getattr(config, "tie_word_embeddings", getattr(text, "tie_word_embeddings", True)))
        return cls(
            family=family,
            architecture=architecture,
            hidden=int(text.hidden_size),
            layers=layers,
            heads=heads,
            kv_heads=int(getattr(text, "num_key_value_heads", None) or heads),
            head_dim=head_dim,
            intermediate=int(text.intermediate_size),
            vocab=int(text.vocab_size),
            norm_eps=float(text.rms_norm_eps),
            activation=activation,
            tied_embeddings=tied,
            max_positions=int(getattr(text, "max_position_embeddings", 8192) or 8192),
            rope=rope,
            sliding_window=sliding,
            qkv_bias=bool(getattr(text, "attention_bias", False)) or family == "qwen2",
            qk_norm=family in ("qwen3", "gemma3"),
            norm_offset=1.0 if gemma else 0.0,
            sandwich_norms=gemma,
            embed_scale=math.sqrt(text.hidden_size) if gemma else 1.0,
            query_scale=float(text.query_pre_attn_scalar) ** -0.5 if gemma else 0.0,
            final_softcap=getattr(text, "final_logit_softcapping", None) or None,
            eos_ids=tuple(int(e) for e in eos_ids),
            bos_id=getattr(text, "bos_token_id", None),
        )
