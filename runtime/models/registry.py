"""HF architecture name -> model family. A family is data in ModelSpec plus the few modules that
truly differ; all families share one decoder (runtime/models/decoder.py)."""

from __future__ import annotations

from runtime.errors import UnsupportedModelError

ARCHITECTURES: dict[str, str] = {
    "LlamaForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "Gemma3ForCausalLM": "gemma3",
}
# model_type values used when a config names no architecture (GGUF, bare configs)
MODEL_TYPES: dict[str, str] = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "gemma3_text": "gemma3"}


def family_for(architectures: list[str], model_type: str) -> tuple[str, str]:
    """Return (family, architecture) or raise an error listing what is supported."""
    for arch in architectures:
        if arch in ARCHITECTURES:
            return ARCHITECTURES[arch], arch
    if not architectures and model_type in MODEL_TYPES:
        family = MODEL_TYPES[model_type]
        arch = next(a for a, f in ARCHITECTURES.items() if f == family)
        return family, arch
    named = ", ".join(architectures) or f"model_type {model_type!r}"
    raise UnsupportedModelError(f"unsupported architecture: {named}. Supported: {', '.join(ARCHITECTURES)}")
