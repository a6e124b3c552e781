"""Shared fixtures: `cuda` tests skip without a GPU; the embedded model loads once per session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def smollm2_fp32():
    """The embedded SmolLM2-135M-Instruct in float32 on the CPU (ours)."""
    from runtime.models.loader import load_model

    return load_model(device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def smollm2_hf():
    """transformers' own SmolLM2-135M-Instruct from the same GGUF, float32, eager attention."""
    from transformers import AutoModelForCausalLM

    from runtime.models.sources import embedded_gguf

    gguf = embedded_gguf()
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32, attn_implementation="eager"
    )
    return model.eval()
