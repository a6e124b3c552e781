"""Helpers shared by the kernel test files (test_kernels.py, test_fused_linear.py).

On a GPU the kernel tests carry the `cuda` marker and run over full case lists. Without one, each
file re-runs itself in a child process with TRITON_INTERPRET=1 (assert_passes_under_interpreter): the
interpreter is chosen when kernels are decorated, so it cannot be switched on inside a process that
already imported them; the child runs small case lists on the CPU.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from runtime.kernels import _triton

INTERPRET = _triton.INTERPRETING
DEVICE = "cpu" if INTERPRET else "cuda"
F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16
# the kernel tests: on the GPU they carry the `cuda` marker; in the interpreter child they run on the CPU
kernel_test = (lambda f: f) if INTERPRET else pytest.mark.cuda
needs_triton = pytest.mark.skipif(not _triton.AVAILABLE, reason="triton is not installed")


def cases(full: list, small: list) -> list:
    """The GPU runs `full`; the CPU interpreter (slow: NumPy per program) runs `small`."""
    return small if INTERPRET else full


def tol(dtype: torch.dtype, scale: float = 1.0) -> dict:
    """Tolerances per dtype. The interpreter rounds fp32 -> bf16 by truncation, not to nearest."""
    if dtype == F32:
        return dict(atol=1e-5 * scale, rtol=1e-5 * scale)
    if dtype == F16:
        return dict(atol=2e-3 * scale, rtol=2e-3 * scale)
    bf16 = 2e-2 * scale * (2 if INTERPRET else 1)
    return dict(atol=bf16, rtol=bf16)


class PoisonedTorch:
    """Stands in for `torch` inside a kernel module: every empty / empty_like comes back full of
    NaN (or the largest integer, or True), so any output element the kernel does not write is caught."""

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def _poison(t: torch.Tensor) -> torch.Tensor:
        if t.dtype == torch.bool:
            return t.fill_(True)
        return t.fill_(math.nan) if t.is_floating_point() else t.fill_(torch.iinfo(t.dtype).max)

    def empty(self, *args, **kwargs):
        return self._poison(torch.empty(*args, **kwargs))

    def empty_like(self, *args, **kwargs):
        return self._poison(torch.empty_like(*args, **kwargs))


def poisoned_fixture(*modules):
    """The `poisoned` fixture of a kernel test file: inside each of the kernel modules, `torch` is
    a PoisonedTorch for the test's duration."""

    @pytest.fixture
    def poisoned(monkeypatch):
        for module in modules:
            monkeypatch.setattr(module, "torch", PoisonedTorch())

    return poisoned


def rand(*shape, dtype=F32, scale=1.0) -> torch.Tensor:
    return (torch.randn(*shape, dtype=F32) * scale).to(device=DEVICE, dtype=dtype)


def assert_matches(got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype, scale: float = 1.0) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, want.shape, got.dtype, want.dtype)
    torch.testing.assert_close(got.float(), want.float(), equal_nan=False, **tol(dtype, scale))


def assert_passes_under_interpreter(test_file: str) -> None:
    """Runs test_file's kernel tests on the CPU through the Triton interpreter, in a child process,
    and fails unless every one of them passes."""
    path = Path(test_file)
    root = str(path.parent.parent.resolve())  # the child runs in tests/: make the package importable
    pythonpath = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, TRITON_INTERPRET="1", RUNTIME_KERNELS="auto", PYTHONPATH=pythonpath)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", path.name],
        cwd=path.parent, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert " passed" in out and " failed" not in out, out[-3000:]


def assert_linear_close(got: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> None:
    """got (..., N) against x (..., K) @ W.T in fp64, x the reference's rounded prologue. Allowed: the
    output's rounding (rtol), and, growing with sqrt(K) as the typical |y| does, prologue elements an
    ulp apart (the kernel's fp32 statistics sum in another order; the interpreter truncates to bf16)
    and the fp32 sum order (what bounds fp32 outputs)."""
    want = F.linear(x.double(), weight.double())
    assert got.shape == want.shape and got.dtype == weight.dtype, (got.shape, want.shape, got.dtype)
    eps = torch.finfo(weight.dtype).eps * (2 if INTERPRET and weight.dtype == BF16 else 1)
    typical = (x.double().pow(2).mean() * weight.double().pow(2).mean() * x.shape[-1]).sqrt().item()
    atol = (4 * eps + 64 * torch.finfo(F32).eps) * typical
    torch.testing.assert_close(got.double(), want, rtol=2 * eps, atol=atol)


def assert_same_bits(got: torch.Tensor, want: torch.Tensor) -> None:
    """Bitwise equal; under the interpreter bf16 rounds by truncation, so there one ulp is allowed."""
    assert got.shape == want.shape and got.dtype == want.dtype
    if INTERPRET and got.dtype == BF16:
        torch.testing.assert_close(got.float(), want.float(), rtol=2**-7, atol=0.0)
    else:
        assert torch.equal(got, want)


def sampling_rows(B: int, temperature, top_k, top_p, penalty, seed: int = 7) -> dict:
    """Per-row sampler settings (B,) on DEVICE, each list repeated over the rows; row r's seed is
    seed + r."""

    def col(values, dtype):
        return torch.tensor([values[i % len(values)] for i in range(B)], dtype=dtype, device=DEVICE)

    return dict(
        temperature=col(temperature, torch.float32),
        top_k=col(top_k, torch.int64),
        top_p=col(top_p, torch.float32),
        repetition_penalty=col(penalty, torch.float32),
        seed=seed + torch.arange(B, device=DEVICE),
    )
