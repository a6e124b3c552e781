"""The batch-1 MLP in one kernel (fused_mlp.py) against its reference, the fixed-point row its output
travels in, and the tiny models of every family decoding through it.

Conventions as test_fused_linear.py (kernel_testing.py): `cuda` on a GPU, a small case list on the CPU
under TRITON_INTERPRET=1 in a child process. The output is compared with act @ W_down.T in fp64 from
the reference's own rounded activation, so a program's partial added twice, lost or put on the wrong
outputs fails by far more than the tolerance.
"""

from __future__ import annotations

import pytest
import torch
from kernel_testing import (
    BF16,
    DEVICE,
    F16,
    F32,
    INTERPRET,
    assert_linear_close,
    assert_matches,
    assert_passes_under_interpreter,
    assert_same_bits,
    cases,
    kernel_test,
    needs_triton,
    rand,
    tol,
)
from tiny_configs import tiny_config

from runtime.kernels.fixed_point import FIXED_DTYPE, FIXED_SCALE, from_fixed, to_fixed_ref
from runtime.kernels.fused_linear import norm_linear_act_ref, norm_linear_ref, norm_linear_triton
from runtime.kernels.fused_mlp import fused_mlp_ref, fused_mlp_triton, mlp_config

pytestmark = [pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")]
if INTERPRET:
    pytestmark.append(needs_triton)

EPS = 1e-6


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1234)


def _plant(monkeypatch, I: int, K: int, config) -> None:
    if config is not None:
        monkeypatch.setenv("RUNTIME_MLP_BLOCKS", f"mlp:{I}x{K}=" + "/".join(map(str, config)))


def _rows(K: int, dtype=FIXED_DTYPE) -> tuple[torch.Tensor, torch.Tensor]:
    """(acc, zero): acc zero as the kernel needs it, zero full of junk for the kernel to clear."""
    return torch.zeros(K, dtype=dtype, device=DEVICE), torch.full((K,), 12345, dtype=dtype, device=DEVICE)


# (leading dims, K = hidden, I = intermediate, dtype, (BLOCK_J, BLOCK_K, BLOCK_H, warps) or None):
# the dev models' shapes, then K and I off every block
MLP_CASES = cases(
    full=[((1, 1), 2048, 8192, BF16, None), ((1, 1), 2048, 6144, BF16, None), ((1, 1), 1152, 6912, BF16, None),
          ((1,), 77, 3, F32, None), ((1, 1), 1000, 100, F16, (4, 256, 128, 4)), ((), 1152, 37, BF16, (8, 128, 512, 8)),
          ((1, 1), 2048, 1000, BF16, (32, 128, 256, 4))],
    small=[((1,), 77, 3, F32, None), ((1, 1), 100, 40, BF16, (4, 32, 64, 4)), ((), 96, 37, F16, (8, 64, 32, 4))],
)  # fmt: skip


@kernel_test
@pytest.mark.parametrize("mode", ["first", "add", "sandwich"])
@pytest.mark.parametrize("activation", ["silu", "gelu_tanh"])
@pytest.mark.parametrize("lead,K,inter,dtype,config", MLP_CASES)
def test_fused_mlp_matches_the_two_gemvs(monkeypatch, lead, K, inter, dtype, config, activation, mode):
    _plant(monkeypatch, inter, K, config)
    h = rand(*lead, K, dtype=dtype) if mode != "first" else None
    residual = rand(*lead, K, dtype=dtype, scale=4.0)
    before = residual.clone()
    norm_w, pre_w = rand(K, dtype=dtype), rand(K, dtype=dtype) if mode == "sandwich" else None
    offset = 1.0 if mode == "sandwich" else 0.0
    w_gate_up = rand(2 * inter, K, dtype=dtype, scale=K**-0.5)
    w_down = rand(K, inter, dtype=dtype, scale=inter**-0.5)
    acc, zero = _rows(K)
    args = (h, residual, norm_w, EPS, offset, pre_w, w_gate_up)
    out, new_res = fused_mlp_triton(*args, w_down, activation, acc, zero)
    assert out.dtype == FIXED_DTYPE and out.shape == residual.shape and out.data_ptr() == acc.data_ptr()
    assert torch.equal(zero, torch.zeros_like(zero))  # cleared for the launch after
    act, want_res = norm_linear_act_ref(*args, activation)
    assert_linear_close(from_fixed(out, dtype), act, w_down)
    if h is None:
        assert new_res is residual
    else:
        assert torch.equal(residual, before)  # never in place
        if pre_w is None:
            assert_same_bits(new_res, want_res)
        else:
            assert_matches(new_res, want_res, dtype)
    again, _ = fused_mlp_triton(*args, w_down, activation, *_rows(K))
    assert torch.equal(again, out)  # the same bits whatever order the programs add in


@kernel_test
@pytest.mark.parametrize("mode", ["add", "sandwich"])
@pytest.mark.parametrize("logits", [False, True], ids=["bf16", "float32"])
@pytest.mark.parametrize("K,N", cases(full=[(2048, 3072), (1152, 262144), (1000, 300)], small=[(96, 40), (77, 3)]))
def test_norm_gemv_reads_a_fixed_point_h_as_its_values(K, N, logits, mode):
    """The next norm GEMV (a qkv or the LM head) given the fixed-point row: bit for bit what it gives
    on the row's values in the dtype, the new residual too (the interpreter rounds to bf16 by
    truncation where torch rounds to nearest: there, within the tolerance)."""
    dtype = BF16
    values = rand(1, K, dtype=dtype, scale=3.0)
    h = to_fixed_ref(values)
    assert torch.equal(from_fixed(h, dtype), values)  # bf16 values fit the fixed point exactly
    h = h + torch.randint(-(2**20), 2**20, h.shape, device=DEVICE)  # and rounding the rest is the reader's
    residual, norm_w = rand(1, K, dtype=dtype, scale=4.0), rand(K, dtype=dtype)
    pre_w = rand(K, dtype=dtype) if mode == "sandwich" else None
    weight = rand(N, K, dtype=dtype, scale=K**-0.5)
    out_dtype = F32 if logits else None
    got = norm_linear_triton(h, residual, norm_w, EPS, 0.0, pre_w, weight, out_dtype)
    want = norm_linear_triton(from_fixed(h, dtype), residual, norm_w, EPS, 0.0, pre_w, weight, out_dtype)
    ref = norm_linear_ref(h, residual, norm_w, EPS, 0.0, pre_w, weight, out_dtype)
    for g, w, r in zip(got, want, ref):
        assert torch.equal(g, w) or (INTERPRET and torch.allclose(g.float(), w.float(), **tol(dtype, 2.0)))
        assert_matches(g, r, dtype, scale=2.0)


def test_fixed_point_round_trip_and_order():
    """Integer sums do not depend on the order; the conversion truncates toward zero in 2^-32 steps."""
    x = torch.randn(64, 512, dtype=torch.float32)
    q = to_fixed_ref(x)
    forward, backward = q.sum(0), q.flip(0).sum(0)
    assert torch.equal(forward, backward)
    assert (from_fixed(forward, torch.float32) - x.double().sum(0).float()).abs().max() < 1e-5
    assert to_fixed_ref(torch.tensor([-1.5 / FIXED_SCALE])).item() == -1


def test_mlp_config_reads_the_override_and_refuses_a_malformed_one(monkeypatch):
    monkeypatch.setenv("RUNTIME_MLP_BLOCKS", "mlp:8192x2048=32/512/256/8")
    assert mlp_config(8192, 2048) == (32, 512, 256, 8)
    monkeypatch.setenv("RUNTIME_MLP_BLOCKS", "mlp:8192x2048=32/512")
    with pytest.raises(ValueError, match="RUNTIME_MLP_BLOCKS"):
        mlp_config(8192, 2048)


def test_the_reference_ignores_the_buffers():
    K, inter = 24, 10
    args = (rand(1, K), rand(1, K), rand(K), EPS, 0.0, None, rand(2 * inter, K), rand(K, inter), "silu")
    out, _ = fused_mlp_ref(*args, *_rows(K))
    want, _ = fused_mlp_ref(*args)
    assert out.dtype == F32 and torch.equal(out, want)


# ---------------------------------------------------------------- tiny models decoding through it


def _tiny(family: str, dtype: torch.dtype):
    from runtime.engine.state import KVCache
    from runtime.models.spec import ModelSpec
    from runtime.models.weights import random_model

    spec = ModelSpec.from_hf(tiny_config(family))
    torch.manual_seed(0)
    model = random_model(spec, DEVICE, dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    return model, KVCache(spec, 1, 16, DEVICE, dtype)


def _decode_steps(model, cache, steps: int = 4) -> list[torch.Tensor]:
    token = torch.tensor([5], device=DEVICE)
    out = []
    for pos in range(steps):
        logits = model.decode(token, torch.tensor([pos], device=DEVICE), cache)
        out.append(logits.clone())
        token = logits.argmax(-1)
    return out


@kernel_test
@pytest.mark.parametrize("family", ["llama", "qwen3", "gemma3"])
def test_tiny_models_decode_the_same_with_the_mlp_fused(monkeypatch, family):
    """Four steps of one row: the logits with the fused MLP those of the two GEMVs (the sums' order
    apart), the same bits when repeated, and between steps every row but the last layer's zero."""
    monkeypatch.setenv("RUNTIME_KERNELS", "triton")
    results = {}
    for fused in ("0", "1", "1"):
        monkeypatch.setenv("RUNTIME_FUSED_MLP", fused)
        model, cache = _tiny(family, BF16)
        results.setdefault(fused, []).append(_decode_steps(model, cache))
        rows = model.mlp_rows
        if fused == "1":
            assert rows[-1].abs().sum() > 0 and torch.equal(rows[:-1], torch.zeros_like(rows[:-1]))
    (plain,), (fused, repeat) = results["0"], results["1"]
    for a, b, c in zip(plain, fused, repeat):
        assert torch.equal(b, c)
        torch.testing.assert_close(b, a, atol=0.1, rtol=0.05)


@kernel_test
def test_a_pass_stopped_part_way_leaves_no_sum_behind(monkeypatch):
    """A pass that raises after the first layer's MLP summed its row: the next pass clears the rows
    first, so its logits are those of a model that never saw the failed pass."""
    monkeypatch.setenv("RUNTIME_KERNELS", "triton")
    monkeypatch.setenv("RUNTIME_FUSED_MLP", "1")
    model, cache = _tiny("llama", BF16)
    want = _decode_steps(model, cache, 1)[0]
    model, cache = _tiny("llama", BF16)
    layer = model.layers[1]
    real = type(layer).forward

    def failing(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(type(layer), "forward", lambda self, *a, **k: (failing if self is layer else real)(self, *a, **k))
    with pytest.raises(KeyboardInterrupt):
        _decode_steps(model, cache, 1)
    assert model.mlp_rows[0].abs().sum() > 0  # the first layer's sum is left in its row
    monkeypatch.setattr(type(layer), "forward", real)
    assert torch.equal(_decode_steps(model, cache, 1)[0], want)


@pytest.mark.skipif(INTERPRET, reason="this is the child run")
@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU runs the compiled kernels instead")
@needs_triton
def test_fused_mlp_under_the_cpu_interpreter():
    assert_passes_under_interpreter(__file__)
