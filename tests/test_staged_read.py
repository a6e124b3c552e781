"""The staged safetensors reader (RUNTIME_LOADER=staged) against safetensors' own reader."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_loader import _save_hf

from runtime.errors import ModelNotFoundError
from runtime.models import staged_read
from runtime.models.loader import load_model


def _tensors() -> dict[str, torch.Tensor]:
    torch.manual_seed(3)
    return {
        "w.bf16": torch.randn(33, 17).to(torch.bfloat16),
        "w.f32": torch.randn(5, 3, 2),
        "w.f16": torch.randn(7).to(torch.float16),
        "ids": torch.arange(11, dtype=torch.int64),
        "mask": torch.rand(9) > 0.5,
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 4),
    }


@pytest.mark.parametrize("stage", [7, 64, 1 << 20], ids=["odd", "small", "large"])
def test_reads_what_safetensors_reads(tmp_path, monkeypatch, stage):
    """Chunk sizes that split tensors at odd byte counts, and one that holds the whole file."""
    monkeypatch.setattr(staged_read, "STAGE_BYTES", stage)
    path = tmp_path / "t.safetensors"
    save_file(_tensors(), str(path), metadata={"format": "pt"})
    got, want = staged_read.read_file(path, torch.device("cpu")), load_file(str(path))
    assert set(got) == set(want)
    for name, t in want.items():
        assert got[name].dtype == t.dtype and got[name].shape == t.shape, name
        assert torch.equal(got[name], t), name


def test_truncated_file_names_the_tensor(tmp_path):
    path = tmp_path / "t.safetensors"
    save_file({"a": torch.randn(100), "b": torch.randn(100)}, str(path))
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(ValueError, match="truncated in tensor 'b'"):
        staged_read.read_file(path, torch.device("cpu"))


def test_load_model_staged_equals_the_default(tmp_path, monkeypatch):
    _save_hf(tmp_path, tied=False)
    default = load_model(str(tmp_path), device="cpu", dtype="float32").model.state_dict()
    monkeypatch.setenv("RUNTIME_LOADER", "staged")
    staged = load_model(str(tmp_path), device="cpu", dtype="float32").model.state_dict()
    assert set(staged) == set(default)
    assert all(torch.equal(staged[k], default[k]) for k in default)


def test_load_model_staged_reports_a_broken_file(tmp_path, monkeypatch):
    _save_hf(tmp_path)
    weights = next(tmp_path.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-1000])
    monkeypatch.setenv("RUNTIME_LOADER", "staged")
    with pytest.raises(ModelNotFoundError, match="cannot read safetensors weights"):
        load_model(str(tmp_path), device="cpu", dtype="float32")
