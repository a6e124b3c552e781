"""The batch-1 GEMVs with folded prologues (norm_linear, act_linear, linear) against their references.

Same conventions as test_kernels.py (see kernel_testing.py): the kernel tests carry the `cuda` marker
on a GPU and run a small case list on the CPU in a child process under TRITON_INTERPRET=1; outputs
are poisoned with NaN. y is compared with x @ W.T in fp64 from the reference's own rounded prologue x,
so the tolerance only has to cover the output's rounding and sum-order effects (scaled with sqrt(K)).
"""

from __future__ import annotations

import math
import time

import pytest
import torch
from kernel_testing import (
    BF16,
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
    poisoned_fixture,
    rand,
)

from runtime.kernels import _triton, gemv_blocks, gemv_tuning, ops
from runtime.kernels import fused_linear as fl
from runtime.kernels.activation import gated_act_ref
from runtime.kernels.fused_linear import (
    act_linear_ref,
    act_linear_triton,
    linear_add_triton,
    linear_ref,
    linear_triton,
    norm_linear_act_ref,
    norm_linear_act_triton,
    norm_linear_ref,
    norm_linear_triton,
)
from runtime.kernels.gemv_blocks import gemv_config
from runtime.kernels.gemv_tuning import candidates, tune, tune_shapes
from runtime.kernels.rmsnorm import rms_norm_ref

# the interpreter evaluates sigmoid's exp(-x) in NumPy, which warns on overflow (the result is right)
pytestmark = [pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")]
if INTERPRET:
    pytestmark.append(needs_triton)

EPS = 1e-6


poisoned = poisoned_fixture(fl)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1234)


def planted(monkeypatch, op: str, N: int, K: int, dtype: torch.dtype, config) -> None:
    """Makes the launch use `config` (as if tune() had chosen it); None keeps the heuristic."""
    if config is not None:
        monkeypatch.setitem(fl._TUNED, (op, N, K, dtype), config)


# (leading dims, K, N, dtype, config or None for the heuristic): the dev models' shapes, then awkward
# ones (K off every BLOCK_K, N off every BLOCK_N); on the CPU a few small ones, some with planted blocks
NORM_CASES = cases(
    full=[((1, 1), 2048, 3072, BF16, None), ((1, 1), 2048, 16384, BF16, None), ((1, 1), 1152, 1536, BF16, None),
          ((1, 1), 2048, 4096, BF16, None), ((1, 1), 2048, 12288, BF16, None), ((1, 1), 1152, 13824, BF16, None),
          ((1,), 77, 3, F32, None), ((1, 1), 1000, 100, F16, None), ((), 1152, 1536, F16, None),
          ((1, 1), 2048, 1000, F32, None), ((1,), 1000, 1536, BF16, (16, 256, 4)), ((1, 1), 16384, 37, BF16, None)],
    small=[((1,), 77, 3, F32, None), ((1, 1), 1000, 100, BF16, (4, 256, 4)), ((), 1152, 37, F16, (8, 128, 4)),
           ((1, 1), 2048, 3, BF16, None), ((1, 1), 1152, 1536, BF16, None)],
)  # fmt: skip


@kernel_test
@pytest.mark.parametrize("mode", ["first", "add", "sandwich"])
@pytest.mark.parametrize("offset", [0.0, 1.0])
@pytest.mark.parametrize("lead,K,N,dtype,config", NORM_CASES)
def test_norm_linear(poisoned, monkeypatch, lead, K, N, dtype, config, offset, mode):
    planted(monkeypatch, "norm_linear", N, K, dtype, config)
    h = rand(*lead, K, dtype=dtype) if mode != "first" else None
    residual = rand(*lead, K, dtype=dtype, scale=4.0)
    before = residual.clone()
    norm_w, pre_w = rand(K, dtype=dtype), rand(K, dtype=dtype) if mode == "sandwich" else None
    weight = rand(N, K, dtype=dtype, scale=K**-0.5)
    y, new_res = norm_linear_triton(h, residual, norm_w, EPS, offset, pre_w, weight)
    want_y, want_res = norm_linear_ref(h, residual, norm_w, EPS, offset, pre_w, weight)
    assert y.shape == want_y.shape
    if h is None:
        assert new_res is residual  # nothing added: the residual itself, as the reference returns it
    else:
        assert torch.equal(residual, before)  # never in place: other programs still read it
        if pre_w is None:
            assert_same_bits(new_res, want_res)  # one fp32 add, rounded once, as torch's add
        else:
            assert_matches(new_res, want_res, dtype)  # through h's own rms, an fp32 sum
    assert_linear_close(y, rms_norm_ref(want_res, norm_w, EPS, offset), weight)


@kernel_test
@pytest.mark.parametrize("K,N,dtype,config", cases(
    full=[(2048, 128256, BF16, None), (1152, 262144, BF16, None), (2048, 151936, BF16, (16, 512, 8)), (77, 1000, F16, None)],
    small=[(1152, 300, BF16, (8, 128, 4)), (77, 100, F16, None)],
))  # fmt: skip
def test_norm_linear_float32_logits(poisoned, monkeypatch, K, N, dtype, config):
    """The LM head: out_dtype float32 stores the product rounded to the weights' dtype, then widened,
    as F.linear(...).float() does (sampling sees the same logits as the unfused path)."""
    planted(monkeypatch, "lm_head", N, K, dtype, config)
    h, residual = rand(1, K, dtype=dtype), rand(1, K, dtype=dtype, scale=4.0)
    norm_w, weight = rand(K, dtype=dtype), rand(N, K, dtype=dtype, scale=K**-0.5)
    y, _ = norm_linear_triton(h, residual, norm_w, EPS, 0.0, None, weight, torch.float32)
    want, _ = norm_linear_ref(h, residual, norm_w, EPS, 0.0, None, weight, torch.float32)
    assert y.dtype == want.dtype == torch.float32 and y.shape == want.shape
    assert torch.equal(y, y.to(dtype).float())  # every value is one of the weights' dtype
    _, want_res = norm_linear_ref(h, residual, norm_w, EPS, 0.0, None, weight)
    assert_linear_close(y.to(dtype), rms_norm_ref(want_res, norm_w, EPS, 0.0), weight)


# (leading dims, I, N, dtype, config): gate_up is (..., 2I), W (N, I)
ACT_CASES = cases(
    full=[((1, 1), 8192, 2048, BF16, None), ((1, 1), 6144, 2048, BF16, None), ((1, 1), 6912, 1152, BF16, None),
          ((1,), 77, 3, F32, None), ((1, 1), 1000, 100, F16, None), ((), 1152, 1536, BF16, None),
          ((1, 1), 2048, 1000, F32, None), ((1,), 6912, 1152, F16, (8, 512, 4))],
    small=[((1,), 77, 3, F32, None), ((1, 1), 1000, 100, BF16, (4, 256, 4)), ((), 1152, 37, F16, (2, 512, 4))],
)  # fmt: skip


@kernel_test
@pytest.mark.parametrize("activation", ["silu", "gelu_tanh"])
@pytest.mark.parametrize("lead,K,N,dtype,config", ACT_CASES)
def test_act_linear(poisoned, monkeypatch, lead, K, N, dtype, config, activation):
    planted(monkeypatch, "act_linear", N, K, dtype, config)
    gate_up = rand(*lead, 2 * K, dtype=dtype, scale=3.0)
    weight = rand(N, K, dtype=dtype, scale=K**-0.5)
    y = act_linear_triton(gate_up, activation, weight)
    assert y.shape == act_linear_ref(gate_up, activation, weight).shape
    assert_linear_close(y, gated_act_ref(gate_up, activation), weight)


# (leading dims, K, I, dtype, config): weight (2I, K) = [gate | up]; configs with BLOCK_N 1 launch 2
GATED_CASES = cases(
    full=[((1, 1), 2048, 8192, BF16, None), ((1, 1), 2048, 6144, BF16, None), ((1, 1), 1152, 6912, BF16, None),
          ((1,), 77, 3, F32, None), ((1, 1), 1000, 100, F16, None), ((), 1152, 37, BF16, (16, 256, 4)),
          ((1, 1), 2048, 1000, F32, (1, 2048, 4)), ((1, 1), 1152, 6912, BF16, (32, 128, 4))],
    small=[((1,), 77, 3, F32, None), ((1, 1), 1000, 100, BF16, (4, 256, 4)), ((), 1152, 37, F16, (8, 128, 4)),
           ((1, 1), 256, 50, BF16, (1, 128, 4))],
)  # fmt: skip


@kernel_test
@pytest.mark.parametrize("mode", ["first", "add", "sandwich"])
@pytest.mark.parametrize("activation", ["silu", "gelu_tanh"])
@pytest.mark.parametrize("lead,K,inter,dtype,config", GATED_CASES)
def test_norm_linear_act(poisoned, monkeypatch, lead, K, inter, dtype, config, activation, mode):
    """The gated epilogue: each output pairs gate row o with up row inter + o (a wrong pairing or a
    missed output fails by O(1)); gate and up are rounded before the activation, as the reference's
    two ops round them, so the only differences left are their fp32 sum order."""
    h = rand(*lead, K, dtype=dtype) if mode != "first" else None
    residual = rand(*lead, K, dtype=dtype, scale=4.0)
    norm_w, pre_w = rand(K, dtype=dtype), rand(K, dtype=dtype) if mode == "sandwich" else None
    weight = rand(2 * inter, K, dtype=dtype, scale=K**-0.5)
    planted(monkeypatch, gemv_blocks.gemv_op("norm_linear_act", pre_w), 2 * inter, K, dtype, config)
    y, new_res = norm_linear_act_triton(h, residual, norm_w, EPS, 0.0, pre_w, weight, activation)
    want_y, want_res = norm_linear_act_ref(h, residual, norm_w, EPS, 0.0, pre_w, weight, activation)
    assert y.shape == want_y.shape == (*lead, inter) and y.dtype == dtype
    assert new_res is residual if h is None else new_res.shape == want_res.shape
    assert_matches(y, want_y, dtype, scale=2.0)


@kernel_test
@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("mode", ["first", "add", "sandwich"])
@pytest.mark.parametrize("K,N,dtype,config", cases(
    full=[(2048, 3072, BF16, (2, 1024, 4)), (1152, 13824, BF16, (16, 256, 4)), (2048, 16384, BF16, (2, 2048, 4)),
          (1000, 100, F16, None), (77, 6, F32, None)],
    small=[(1000, 100, BF16, (4, 256, 4)), (77, 6, F32, None), (1152, 40, F16, (8, 128, 4))],
))  # fmt: skip
def test_early_first_chunk_changes_no_bit(poisoned, monkeypatch, K, N, dtype, config, mode, gated):
    """RUNTIME_GEMV_FIRST_CHUNK=early moves loads, not arithmetic: the norm GEMVs' outputs and new
    residual equal the late order's bit for bit, and the product stays the reference's (a first
    chunk taken from the wrong columns, or normed with the wrong weight, fails both)."""
    h = rand(1, K, dtype=dtype) if mode != "first" else None
    residual = rand(1, K, dtype=dtype, scale=4.0)
    norm_w, pre_w = rand(K, dtype=dtype), rand(K, dtype=dtype) if mode == "sandwich" else None
    weight = rand(N, K, dtype=dtype, scale=K**-0.5)
    op = gemv_blocks.gemv_op("norm_linear_act" if gated else "norm_linear", pre_w)
    planted(monkeypatch, op, N, K, dtype, config)
    offset, activation = (1.0, "silu") if gated else (0.0, None)
    args = (h, residual, norm_w, pre_w, weight, offset, activation)
    assert_orders_agree_bit_for_bit(monkeypatch, "RUNTIME_GEMV_FIRST_CHUNK", "late", "early", *args)


def assert_orders_agree_bit_for_bit(
    monkeypatch, switch, before, after, h, residual, norm_w, pre_w, weight, offset, activation
):
    """A load-order switch of the norm GEMVs (activation None: norm_linear, else norm_linear_act):
    the outputs and new residual under `after` equal those under `before` bit for bit, and the
    product stays the reference's."""

    def run(order: str):
        monkeypatch.setenv(switch, order)
        if activation is not None:
            return norm_linear_act_triton(h, residual, norm_w, EPS, offset, pre_w, weight, activation)
        return norm_linear_triton(h, residual, norm_w, EPS, offset, pre_w, weight)

    (y_before, res_before), (y_after, res_after) = run(before), run(after)
    assert_same_bits(y_after, y_before)
    assert_same_bits(res_after, res_before)
    if activation is not None:
        want_y, _ = norm_linear_act_ref(h, residual, norm_w, EPS, offset, pre_w, weight, activation)
        assert_matches(y_after, want_y, weight.dtype, scale=2.0)
    else:
        _, want_res = norm_linear_ref(h, residual, norm_w, EPS, offset, pre_w, weight)
        assert_linear_close(y_after, rms_norm_ref(want_res, norm_w, EPS, offset), weight)


@kernel_test
@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("K,N,dtype,config", cases(
    full=[(2048, 4096, BF16, (4, 512, 4)), (1152, 13824, BF16, (16, 256, 4)), (2048, 3072, BF16, (2, 1024, 4)),
          (1000, 37, F16, (8, 128, 4)), (77, 6, F32, (2, 32, 4))],
    small=[(1000, 37, BF16, (8, 128, 4)), (77, 6, F32, (2, 32, 4))],
))  # fmt: skip
def test_first_tile_after_row_changes_no_bit(poisoned, monkeypatch, K, N, dtype, config, gated):
    """RUNTIME_GEMV_FIRST_TILE=after_row moves the norm GEMVs' first weight load, not arithmetic: the
    outputs and new residual equal the default order's bit for bit (sandwich norm included), and the
    product stays the reference's (a first tile from the wrong columns fails both)."""
    weight = rand(2 * N if gated else N, K, dtype=dtype, scale=K**-0.5)
    h, residual = rand(1, K, dtype=dtype), rand(1, K, dtype=dtype, scale=4.0)
    norm_w, pre_w = rand(K, dtype=dtype), rand(K, dtype=dtype)
    op = gemv_blocks.gemv_op("norm_linear_act" if gated else "norm_linear", pre_w)
    planted(monkeypatch, op, weight.shape[0], K, dtype, config)
    args = (h, residual, norm_w, pre_w, weight, 1.0, "gelu_tanh" if gated else None)
    assert_orders_agree_bit_for_bit(monkeypatch, "RUNTIME_GEMV_FIRST_TILE", "early", "after_row", *args)


# (leading dims, K, N, dtype, config); the GPU list holds every dev projection shape, and the Gemma
# LM head (N * K past 2^28: the row offsets must not wrap)
LINEAR_CASES = cases(
    full=[((1, 1), 2048, 3072, BF16, None), ((1, 1), 2048, 16384, BF16, None), ((1, 1), 8192, 2048, BF16, None),
          ((1, 1), 1152, 1536, BF16, None), ((1, 1), 6912, 1152, BF16, None), ((1, 1), 2048, 4096, BF16, None),
          ((1, 1), 6144, 2048, BF16, None), ((1, 1), 1024, 1152, BF16, None), ((1, 1), 2048, 2048, BF16, None),
          ((1, 1), 1152, 262144, BF16, None), ((1,), 77, 3, F32, None), ((1, 1), 1000, 100, F16, None),
          ((), 1152, 1536, F16, None), ((1, 1), 2048, 1000, F32, (1, 2048, 4))],
    small=[((1,), 77, 3, F32, None), ((1, 1), 1000, 100, BF16, (16, 128, 4)), ((), 2048, 37, F16, None),
           ((1, 1), 1152, 1536, BF16, (16, 256, 4))],
)  # fmt: skip


@kernel_test
@pytest.mark.parametrize("lead,K,N,dtype,config", LINEAR_CASES)
def test_linear(poisoned, monkeypatch, lead, K, N, dtype, config):
    planted(monkeypatch, "linear", N, K, dtype, config)
    x, weight = rand(*lead, K, dtype=dtype), rand(N, K, dtype=dtype, scale=K**-0.5)
    y = linear_triton(x, weight)
    assert y.shape == linear_ref(x, weight).shape
    assert_linear_close(y, x, weight)


@kernel_test
@pytest.mark.parametrize("lead,K,N,dtype,config", LINEAR_CASES)
def test_linear_add(poisoned, monkeypatch, lead, K, N, dtype, config):
    """The residual's add in the plain GEMV's epilogue: the product rounded to the dtype first, then
    the add rounded once, so the result is bit for bit residual + linear_triton(x, W), which
    test_linear holds to the reference; the residual itself is left as it was."""
    planted(monkeypatch, "linear", N, K, dtype, config)
    x, weight = rand(*lead, K, dtype=dtype), rand(N, K, dtype=dtype, scale=K**-0.5)
    residual = rand(*lead, N, dtype=dtype, scale=4.0)
    before = residual.clone()
    y = linear_add_triton(x, weight, residual)
    assert y.shape == residual.shape and y.dtype == dtype
    assert torch.equal(residual, before)
    assert_same_bits(y, (residual.float() + linear_triton(x, weight).float()).to(dtype))


@pytest.mark.cuda
@pytest.mark.skipif(INTERPRET, reason="tune times compiled kernels on the GPU")
@pytest.mark.parametrize("op", ["norm_linear", "act_linear", "linear", "lm_head"])
def test_tune_on_the_gpu_picks_a_candidate_the_launch_then_uses(monkeypatch, op):
    monkeypatch.setattr(fl, "_TUNED", {})
    N, K, dtype = 1536, 1152, BF16
    best = tune(op, N, K, dtype, "cuda")
    assert best in candidates(op, N, K, dtype)  # as launched: BLOCK_K clamped to next_pow2(K)
    assert fl._config(op, N, K, dtype) == best
    x, weight = (
        rand(1, 2 * K if op == "act_linear" else K, dtype=dtype),
        rand(N, K, dtype=dtype, scale=K**-0.5),
    )
    if op in ("norm_linear", "lm_head"):
        norm_w = rand(K, dtype=dtype)
        y, _ = norm_linear_triton(None, x, norm_w, EPS, 0.0, None, weight, F32 if op == "lm_head" else None)
        assert_linear_close(y.to(dtype), rms_norm_ref(x, norm_w, EPS), weight)
    elif op == "act_linear":
        assert_linear_close(act_linear_triton(x, "silu", weight), gated_act_ref(x, "silu"), weight)
    else:
        assert_linear_close(linear_triton(x, weight), x, weight)


@pytest.mark.cuda
def test_tune_times_the_kernel_not_the_hosts_launch():
    """A candidate whose launch path is slow on the host (here 0.4 ms, past the 256 MB flush) is
    timed by its kernel alone: the GPU must not wait on the host inside the timed span, or a slow
    Python launch decides the choice (the H200's tuner picks were a draw of such waits)."""
    x = torch.randn(1 << 20, device="cuda")

    def slow_launch():
        time.sleep(400e-6)  # the host between the start event and the kernel
        x.mul_(1.0)

    alone = gemv_tuning._time_us(lambda: x.mul_(1.0))
    assert gemv_tuning._time_us(slow_launch) < alone + 20.0, alone


# ---------------------------------------------------------------- CPU: fallbacks, config, dispatch


def test_more_rows_take_the_reference():
    """More than one row (prefill, batched decode), and norm rows past MAX_NORM_K, are the references'."""
    K, N = 24, 5
    w, nw = torch.randn(N, K), torch.randn(K)
    for lead in [(3,), (2, 1), (1, 2)]:
        x, res, gu = torch.randn(*lead, K), torch.randn(*lead, K), torch.randn(*lead, 2 * K)
        assert torch.equal(linear_triton(x, w), linear_ref(x, w))
        assert torch.equal(act_linear_triton(gu, "silu", w), act_linear_ref(gu, "silu", w))
        for h in (x, None):
            got, want = (
                norm_linear_triton(h, res, nw, EPS, 1.0, nw, w),
                norm_linear_ref(h, res, nw, EPS, 1.0, nw, w),
            )
            assert all(torch.equal(g, v) for g, v in zip(got, want))
            got, want = (
                norm_linear_act_triton(h, res, nw, EPS, 1.0, nw, torch.randn(2 * N, K), "gelu_tanh"),
                norm_linear_act_ref(h, res, nw, EPS, 1.0, nw, torch.randn(2 * N, K), "gelu_tanh"),
            )
            assert got[0].shape == want[0].shape == (*lead, N) and torch.equal(got[1], want[1])
    K = fl.MAX_NORM_K + 1
    x, w, nw = torch.randn(1, K), torch.randn(4, K), torch.randn(K)
    got, want = norm_linear_triton(x, x, nw, EPS, 0.0, None, w), norm_linear_ref(x, x, nw, EPS, 0.0, None, w)
    assert all(torch.equal(g, v) for g, v in zip(got, want))
    got = norm_linear_act_triton(x, x, nw, EPS, 0.0, None, w, "silu")
    want = norm_linear_act_ref(x, x, nw, EPS, 0.0, None, w, "silu")
    assert all(torch.equal(g, v) for g, v in zip(got, want))


def test_gated_op_names_and_blocks(monkeypatch):
    """The sandwich pre-norm tunes apart ("_pre"), unless RUNTIME_GEMV_PRE_BLOCKS=0; a gated op
    never launches BLOCK_N 1 (its tile rows come in gate/up pairs), tuned, planted or heuristic."""
    pre = torch.ones(4)
    assert (
        gemv_blocks.gemv_op("lm_head", None) == "lm_head"
        and gemv_blocks.gemv_op("lm_head", pre) == "lm_head_pre"
    )
    monkeypatch.setenv("RUNTIME_GEMV_PRE_BLOCKS", "0")
    assert gemv_blocks.gemv_op("norm_linear_act", pre) == "norm_linear_act"
    monkeypatch.setattr(fl, "INTERPRETING", False)
    monkeypatch.setattr(fl, "_TUNED", {("norm_linear_act", 100, 64, BF16): (1, 64, 4)})
    assert fl._config("norm_linear_act", 100, 64, BF16) == (2, 64, 4)
    assert fl._config("norm_linear", 100, 64, BF16) == gemv_config(100, 64, 2, 3)
    for op in gemv_blocks.GATED_OPS:
        assert tune(op, 8, 2048, BF16, "cpu")[0] >= 2  # off CUDA: the heuristic, clamped
        assert all(n >= 2 for n, _, _ in candidates(op, 8, 2048, BF16))


def test_gemv_switches_refuse_typos(monkeypatch):
    """RUNTIME_GEMV_FIRST_TILE and RUNTIME_GEMV_BLOCKS: early / empty by default; an override names
    one launch (op and shape) and wins over tune()'s choice; a malformed value is refused by name."""
    for name in ("RUNTIME_GEMV_FIRST_TILE", "RUNTIME_GEMV_BLOCKS"):
        monkeypatch.delenv(name, raising=False)
    assert not gemv_blocks.tile_after_row() and gemv_blocks.block_override("linear", 2048, 8192) is None
    monkeypatch.setenv("RUNTIME_GEMV_FIRST_TILE", "after_row")
    assert gemv_blocks.tile_after_row()
    monkeypatch.setenv("RUNTIME_GEMV_FIRST_TILE", "late")
    with pytest.raises(ValueError, match="RUNTIME_GEMV_FIRST_TILE='late'"):
        gemv_blocks.tile_after_row()
    monkeypatch.setenv(
        "RUNTIME_GEMV_BLOCKS", "norm_linear_act:12288x2048=16/256/4; linear:2048x8192=4/2048/8"
    )
    planted(monkeypatch, "linear", 2048, 8192, BF16, (1, 4096, 8))
    assert fl._config("linear", 2048, 8192, BF16) == (4, 2048, 8)
    assert fl._config("linear", 2048, 6144, BF16) != (4, 2048, 8)  # another shape: not named
    monkeypatch.setenv("RUNTIME_GEMV_BLOCKS", "linear:2048x8192=4,2048,8")
    with pytest.raises(ValueError, match="op:NxK=BLOCK_N/BLOCK_K/warps"):
        gemv_blocks.block_override("linear", 2048, 8192)


def test_tune_is_the_heuristic_off_cuda(monkeypatch):
    monkeypatch.setattr(fl, "_TUNED", {})
    for op in ("norm_linear", "act_linear", "linear"):
        assert tune(op, 3072, 2048, BF16, "cpu") == gemv_config(
            3072, 2048, 2, gemv_blocks._PROLOGUE_VECTORS[op]
        )
    assert fl._TUNED == {}


@pytest.mark.parametrize("N,K", [(3072, 2048), (16384, 2048), (2048, 8192), (1536, 1152), (1152, 6912),
                                 (4096, 2048), (2048, 6144), (1152, 1024), (262144, 1152), (3, 77)])  # fmt: skip
@pytest.mark.parametrize("elem_bytes", [2, 4])
@pytest.mark.parametrize("vectors", [0, 2, 3])
def test_gemv_config_is_a_sane_launch(N, K, elem_bytes, vectors):
    block_n, block_k, num_warps = gemv_config(N, K, elem_bytes, vectors)
    for b in (block_n, block_k):
        assert b & (b - 1) == 0  # tl.arange needs powers of 2
    assert 1 <= block_n <= 16 and 16 <= block_k <= max(16, _triton.next_pow2(K)) and num_warps in (4, 8)
    if K * elem_bytes >= 512:
        assert block_k * elem_bytes >= 512  # a warp's 16-byte loads stay on one row
    if N >= 16 * 4 * gemv_blocks.SMS:
        assert block_n == 16
    elif N >= 4 * gemv_blocks.SMS:
        assert math.ceil(N / block_n) >= 2 * gemv_blocks.SMS  # enough programs to fill the SMs


def _inputs() -> dict:
    K, N = 16, 5
    return {
        "norm_linear": (torch.randn(1, K), torch.randn(1, K), torch.randn(K), EPS, 1.0, torch.randn(K),
                        torch.randn(N, K)),
        "act_linear": (torch.randn(1, 2 * K), "gelu_tanh", torch.randn(N, K)),
        "linear": (torch.randn(1, K), torch.randn(N, K)),
    }  # fmt: skip


def test_dispatcher_routes_the_fused_linears(monkeypatch):
    """RUNTIME_KERNELS=torch gives the references' results; =triton calls the Triton entry points,
    norm_linear also with h None (chosen on residual); mixed dtypes take the reference."""
    calls = []
    for name in _inputs():
        monkeypatch.setattr(ops, f"{name}_triton", lambda *a, _name=name: calls.append(_name))
    monkeypatch.setattr(_triton, "AVAILABLE", True)
    monkeypatch.setenv("RUNTIME_KERNELS", "torch")
    refs = {"norm_linear": norm_linear_ref, "act_linear": act_linear_ref, "linear": linear_ref}
    for name, args in _inputs().items():
        got, want = getattr(ops, name)(*args), refs[name](*args)
        got, want = (got, want) if isinstance(got, tuple) else ((got,), (want,))
        assert all(torch.equal(g, w) for g, w in zip(got, want)), name
    assert calls == []
    monkeypatch.setenv("RUNTIME_KERNELS", "triton")
    for name, args in _inputs().items():
        getattr(ops, name)(*args)
    ops.norm_linear(None, *_inputs()["norm_linear"][1:])
    assert calls == [*_inputs(), "norm_linear"]
    h, res, nw, eps, off, pre, w = _inputs()["norm_linear"]
    ops.norm_linear(h, res, nw.double(), eps, off, pre, w)
    assert calls == [*_inputs(), "norm_linear"]  # mixed dtypes: the reference
    # the gated epilogue: one row on Triton; turned off, or mixed dtypes: norm_linear, then gated_act
    monkeypatch.setattr(ops, "norm_linear_act_triton", lambda *a: calls.append("norm_linear_act"))
    gate_up_w = torch.randn(2 * w.shape[0], w.shape[1])
    calls.clear()
    ops.norm_linear_act(h, res, nw, eps, off, pre, gate_up_w, "silu")
    assert calls == ["norm_linear_act"] and ops.gated_epilogue(res, gate_up_w)
    monkeypatch.setenv("RUNTIME_KERNELS_OFF", "norm_linear_act")
    calls.clear()
    assert not ops.gated_epilogue(res, gate_up_w)
    monkeypatch.setattr(ops, "gated_act_triton", lambda *a: calls.append("gated_act"))
    gate_up = torch.zeros(1, gate_up_w.shape[0])
    monkeypatch.setattr(ops, "norm_linear_triton", lambda *a: calls.append("norm_linear") or (gate_up, res))
    ops.norm_linear_act(h, res, nw, eps, off, pre, gate_up_w, "silu")
    assert calls == ["norm_linear", "gated_act"]


def test_more_rows_run_unfused_with_the_prologue_kernels(monkeypatch):
    """A batch bucket (M > 1) must not fall back to the plain-torch prologue: it takes the norm /
    activation kernels as dispatched, then cuBLAS, and gives the references' results."""
    calls = []
    for name in ("norm_linear", "act_linear", "linear"):
        monkeypatch.setattr(ops, f"{name}_triton", lambda *a, _name=name: calls.append(_name))
    for name in ("rms_norm", "add_rms_norm", "gated_act"):
        ref = getattr(ops, f"{name}_ref")
        monkeypatch.setattr(  # launch options (release_early) mean nothing to the reference
            ops, f"{name}_triton", lambda *a, _ref=ref, _name=name, **launch: calls.append(_name) or _ref(*a)
        )
    monkeypatch.setattr(_triton, "AVAILABLE", True)
    monkeypatch.setenv("RUNTIME_KERNELS", "triton")
    K, N = 24, 10
    h, res, nw, pre, w = (
        torch.randn(3, K),
        torch.randn(3, K),
        torch.randn(K),
        torch.randn(K),
        torch.randn(N, K),
    )
    y, new_res = ops.norm_linear(h, res, nw, EPS, 1.0, pre, w)
    want_y, want_res = norm_linear_ref(h, res, nw, EPS, 1.0, pre, w)
    assert torch.equal(y, want_y) and torch.equal(new_res, want_res)
    ops.norm_linear(None, res, nw, EPS, 0.0, None, w)
    gate_up = torch.randn(3, 2 * K)
    assert torch.equal(ops.act_linear(gate_up, "silu", w), act_linear_ref(gate_up, "silu", w))
    assert torch.equal(ops.linear(h, w), linear_ref(h, w))
    assert calls == ["add_rms_norm", "rms_norm", "gated_act"]
    monkeypatch.setenv("RUNTIME_KERNELS_OFF", "norm_linear")  # one row, the fused op turned off
    calls.clear()
    ops.norm_linear(h[:1], res[:1], nw, EPS, 1.0, pre, w)
    ops.linear(h[:1], w)
    assert calls == ["add_rms_norm", "linear"]


@pytest.mark.parametrize(
    "env",
    [{}, {"RUNTIME_KERNELS_OFF": "norm_linear_act"}, {"RUNTIME_GEMV_PRE_BLOCKS": "0"}],
    ids=["default", "act_in_down", "no_pre_blocks"],
)
def test_gemv_shapes_are_what_the_step_launches(monkeypatch, env):
    """What the runner tunes before capture is each (op, weight) the decode step's GEMVs launch under
    the current switches, and nothing else (a card without shipped blocks compiles every candidate)."""
    from tiny_configs import tiny_config

    from runtime.models.spec import ModelSpec
    from runtime.models.weights import random_model

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    gated = "RUNTIME_KERNELS_OFF" not in env
    for family in ("llama", "qwen2", "qwen3", "gemma3"):
        model = random_model(ModelSpec.from_hf(tiny_config(family)), "cpu", torch.float32)
        layer = model.layers[0]
        weights = {
            "qkv": layer.attn.qkv.weight,
            "o": layer.attn.o_proj.weight,
            "gate_up": layer.mlp.gate_up.weight,
            "down": layer.mlp.down.weight,
            "lm_head": model.lm_head_weight,
        }
        pre = "_pre" if model.spec.sandwich_norms and "RUNTIME_GEMV_PRE_BLOCKS" not in env else ""
        launches = {
            ("norm_linear", "qkv"),  # the first layer: no h, so no pre-norm either
            ("norm_linear" + pre, "qkv"),
            ("linear", "o"),
            ("lm_head" + pre, "lm_head"),
            *([("norm_linear_act" + pre, "gate_up"), ("linear", "down")] if gated else []),
            *([] if gated else [("norm_linear" + pre, "gate_up"), ("act_linear", "down")]),
        }
        want = {(op, *weights[w].shape) for op, w in launches}
        assert set(model.gemv_shapes()) == want and len(model.gemv_shapes()) == len(want), family


def test_untuned_setting_ignores_tuned_blocks(monkeypatch):
    monkeypatch.setitem(fl._TUNED, ("linear", 100, 64, torch.bfloat16), (2, 32, 4))
    monkeypatch.setattr(fl, "INTERPRETING", False)
    assert fl._config("linear", 100, 64, torch.bfloat16) == (2, 32, 4)
    monkeypatch.setenv("RUNTIME_GEMV_TUNE", "0")
    assert fl._config("linear", 100, 64, torch.bfloat16) == gemv_config(100, 64, 2, 0)
    assert tune_shapes([("linear", 100, 64)], torch.bfloat16, "cpu") < 1.0  # nothing to do off CUDA


# ---------------------------------------------------------------- the interpreter subset, from the parent


@pytest.mark.skipif(INTERPRET, reason="this is the child run")
@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU runs the compiled kernels instead")
@needs_triton
def test_fused_linear_under_the_cpu_interpreter():
    """Runs this file's kernel tests on the CPU through the Triton interpreter (small cases)."""
    assert_passes_under_interpreter(__file__)
