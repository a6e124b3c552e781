"""The batched-decode GEMMs with folded prologues (2..16 rows) against fused_linear's references.

Same conventions as test_fused_linear.py (see kernel_testing.py): the kernel tests carry the `cuda`
marker on a GPU and run a small case list on the CPU in a child process under TRITON_INTERPRET=1;
outputs (and the split path's partials) are poisoned with NaN. y is compared with x @ W.T in fp64 from
the reference's own rounded prologue x, so the tolerance only covers the output's rounding and
sum-order effects (scaled with sqrt(K)). Configs are (BLOCK_N, BLOCK_K, SPLIT, num_warps, num_stages);
planted ones force the split-K path (and its last-program sum) on small shapes.
"""

from __future__ import annotations

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
    tol,
)

from runtime.kernels import _triton, arrival, gemv_tuning
from runtime.kernels import fused_rows as fr
from runtime.kernels import fused_rows_config as frc
from runtime.kernels.activation import gated_act_ref
from runtime.kernels.fused_linear import act_linear_ref, linear_ref, norm_linear_ref
from runtime.kernels.fused_rows import act_linear_rows_triton, linear_rows_triton, norm_linear_rows_triton
from runtime.kernels.fused_rows_config import rows_config
from runtime.kernels.rmsnorm import rms_norm_ref

# the interpreter evaluates sigmoid's exp(-x) in NumPy, which warns on overflow (the result is right)
pytestmark = [pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")]
if INTERPRET:
    pytestmark.append(needs_triton)

EPS = 1e-6


poisoned = poisoned_fixture(fr)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1234)


def planted(monkeypatch, op: str, lead: tuple, N: int, K: int, dtype: torch.dtype, config) -> None:
    """Makes the launch use `config` (as if tune_rows() had chosen it); None keeps the heuristic."""
    if config is not None:
        rows = fr.rows_of(torch.empty(*lead, 1))
        monkeypatch.setitem(frc._TUNED_ROWS, (op, rows, N, K, dtype), config)


def assert_counters_clear() -> None:
    """Every split launch leaves its arrival counters at zero for the next launch (and graph replay)."""
    for counters in arrival._COUNTERS.values():
        assert int(counters.abs().sum()) == 0


# (leading dims, K, N, dtype, config or None for the heuristic): the dev models' shapes at 16 rows,
# then awkward ones (K off every BLOCK_K, N off every BLOCK_N, 2 and 3 rows); on the CPU small ones,
# some with planted blocks that split K (3 splits of 64 columns over K = 300 leave a ragged last slice)
NORM_CASES = cases(
    full=[((16,), 2048, 4096, BF16, None), ((16,), 2048, 12288, BF16, None), ((16, 1), 2048, 3072, BF16, None),
          ((16,), 2048, 16384, BF16, None), ((16,), 1152, 1536, BF16, None), ((16,), 1152, 13824, BF16, None),
          ((2, 1), 77, 3, F32, None), ((3,), 1000, 100, F16, None), ((4, 4), 1152, 1536, F16, None),
          ((16,), 2048, 1000, F32, None), ((3,), 1000, 1536, BF16, (64, 128, 4, 8, 4)),
          ((16,), 16384, 37, BF16, None), ((5,), 2048, 4096, BF16, (16, 256, 1, 4, 4)),
          ((2,), 2048, 4096, BF16, (128, 64, 8, 8, 3))],
    small=[((2,), 77, 3, F32, None), ((3,), 1000, 100, BF16, (32, 128, 2, 4, 1)),
           ((16,), 300, 37, F16, (16, 64, 3, 4, 1)), ((2, 8), 130, 70, BF16, None),
           ((2, 1), 1152, 96, BF16, (32, 128, 4, 8, 1))],
)  # fmt: skip


@kernel_test
@pytest.mark.parametrize("mode", ["first", "add", "sandwich"])
@pytest.mark.parametrize("offset", [0.0, 1.0])
@pytest.mark.parametrize("lead,K,N,dtype,config", NORM_CASES)
def test_norm_linear_rows(poisoned, monkeypatch, lead, K, N, dtype, config, offset, mode):
    planted(monkeypatch, "norm_linear", lead, N, K, dtype, config)
    h = rand(*lead, K, dtype=dtype) if mode != "first" else None
    residual = rand(*lead, K, dtype=dtype, scale=4.0)
    before = residual.clone()
    norm_w, pre_w = rand(K, dtype=dtype), rand(K, dtype=dtype) if mode == "sandwich" else None
    weight = rand(N, K, dtype=dtype, scale=K**-0.5)
    y, new_res = norm_linear_rows_triton(h, residual, norm_w, EPS, offset, pre_w, weight)
    want_y, want_res = norm_linear_ref(h, residual, norm_w, EPS, offset, pre_w, weight)
    assert y.shape == want_y.shape
    assert torch.equal(residual, before)  # never in place: other programs still read it
    if h is None:
        assert new_res is residual  # nothing added: the residual itself, as the reference returns it
    elif pre_w is None:
        assert_same_bits(new_res, want_res)  # one fp32 add, rounded once, as torch's add
    else:
        assert_matches(new_res, want_res, dtype)  # through h's own rms, an fp32 sum
    assert_linear_close(y, rms_norm_ref(want_res, norm_w, EPS, offset), weight)
    assert_counters_clear()


@kernel_test
@pytest.mark.parametrize("lead,K,N,dtype,config", cases(
    full=[((16,), 2048, 151936, BF16, None), ((16,), 1152, 262144, BF16, None), ((2,), 2048, 128256, BF16, None),
          ((3,), 77, 1000, F16, None), ((16,), 2048, 4096, BF16, (32, 256, 4, 4, 4))],
    small=[((3,), 300, 70, BF16, (32, 64, 2, 4, 1)), ((16,), 77, 100, F16, None)],
))  # fmt: skip
def test_norm_linear_rows_float32_logits(poisoned, monkeypatch, lead, K, N, dtype, config):
    """The LM head: out_dtype float32 stores the product rounded to the weights' dtype, then widened,
    as F.linear(...).float() does."""
    planted(monkeypatch, "lm_head", lead, N, K, dtype, config)
    h, residual = rand(*lead, K, dtype=dtype), rand(*lead, K, dtype=dtype, scale=4.0)
    norm_w, weight = rand(K, dtype=dtype), rand(N, K, dtype=dtype, scale=K**-0.5)
    y, new_res = norm_linear_rows_triton(h, residual, norm_w, EPS, 0.0, None, weight, torch.float32)
    want, want_res = norm_linear_ref(h, residual, norm_w, EPS, 0.0, None, weight, torch.float32)
    assert y.dtype == want.dtype == torch.float32 and y.shape == want.shape
    assert torch.equal(y, y.to(dtype).float())  # every value is one of the weights' dtype
    assert_same_bits(new_res, want_res)
    assert_linear_close(y.to(dtype), rms_norm_ref(want_res, norm_w, EPS, 0.0), weight)
    assert_counters_clear()


# (leading dims, I, N, dtype, config): gate_up is (..., 2I), W (N, I)
ACT_CASES = cases(
    full=[((16,), 6144, 2048, BF16, None), ((16,), 8192, 2048, BF16, None), ((16, 1), 6912, 1152, BF16, None),
          ((2,), 77, 3, F32, None), ((3,), 1000, 100, F16, None), ((16,), 2048, 1000, F32, None),
          ((5,), 6912, 1152, F16, (32, 256, 4, 4, 4)), ((16,), 6144, 2048, BF16, (16, 256, 1, 4, 4)),
          ((3,), 6144, 2048, BF16, (128, 64, 8, 8, 4))],
    small=[((2,), 77, 3, F32, None), ((3,), 1000, 100, BF16, (32, 128, 2, 4, 1)),
           ((16,), 300, 37, F16, (16, 64, 4, 4, 1)), ((2, 1), 600, 130, BF16, None)],
)  # fmt: skip


@kernel_test
@pytest.mark.parametrize("activation", ["silu", "gelu_tanh"])
@pytest.mark.parametrize("lead,K,N,dtype,config", ACT_CASES)
def test_act_linear_rows(poisoned, monkeypatch, lead, K, N, dtype, config, activation):
    planted(monkeypatch, "act_linear", lead, N, K, dtype, config)
    gate_up = rand(*lead, 2 * K, dtype=dtype, scale=3.0)
    weight = rand(N, K, dtype=dtype, scale=K**-0.5)
    y = act_linear_rows_triton(gate_up, activation, weight)
    assert y.shape == act_linear_ref(gate_up, activation, weight).shape
    assert_linear_close(y, gated_act_ref(gate_up, activation), weight)
    assert_counters_clear()


# (leading dims, K, N, dtype, config); the GPU list holds every dev projection shape at 16 rows
LINEAR_CASES = cases(
    full=[((16,), 2048, 4096, BF16, None), ((16,), 2048, 2048, BF16, None), ((16,), 2048, 12288, BF16, None),
          ((16,), 6144, 2048, BF16, None), ((16, 1), 2048, 3072, BF16, None), ((16,), 2048, 16384, BF16, None),
          ((16,), 8192, 2048, BF16, None), ((16,), 1152, 1536, BF16, None), ((16,), 1024, 1152, BF16, None),
          ((16,), 1152, 13824, BF16, None), ((16,), 6912, 1152, BF16, None), ((2,), 77, 3, F32, None),
          ((3,), 1000, 100, F16, None), ((4, 4), 1152, 1536, F16, None), ((16,), 2048, 1000, F32, None),
          ((7,), 2048, 2048, BF16, (64, 128, 4, 8, 4))],
    small=[((2,), 77, 3, F32, None), ((3,), 1000, 100, BF16, (16, 128, 2, 4, 1)), ((16,), 300, 37, F16, None),
           ((4, 4), 64, 48, BF16, (16, 16, 4, 4, 1)), ((2, 1), 520, 200, F32, (64, 64, 8, 4, 1))],
)  # fmt: skip


@kernel_test
@pytest.mark.parametrize("lead,K,N,dtype,config", LINEAR_CASES)
def test_linear_rows(poisoned, monkeypatch, lead, K, N, dtype, config):
    planted(monkeypatch, "linear", lead, N, K, dtype, config)
    x, weight = rand(*lead, K, dtype=dtype), rand(N, K, dtype=dtype, scale=K**-0.5)
    y = linear_rows_triton(x, weight)
    assert y.shape == linear_ref(x, weight).shape
    assert_linear_close(y, x, weight)
    assert_counters_clear()
    # the batch step's qkv launch: the next kernel may start after the wait; the product is the same
    assert torch.equal(linear_rows_triton(x, weight, release_early=True), y)


@kernel_test
@pytest.mark.parametrize("lead,K,N,dtype,config", LINEAR_CASES)
def test_linear_rows_add(poisoned, monkeypatch, lead, K, N, dtype, config):
    """out += x @ W.T in place, rounded once (addmm_'s contract), on both the one-slice path and the
    split-K path's last-program sum: against out + x @ W.T in fp64, within the rounding of the sum."""
    M = fr.rows_of(torch.empty(*lead, 1))
    planted(monkeypatch, "linear", lead, N, K, dtype, config)
    x, weight = rand(M, K, dtype=dtype), rand(N, K, dtype=dtype, scale=K**-0.5)
    out = rand(M, N, dtype=dtype, scale=4.0)
    before, storage = out.clone(), out.data_ptr()
    got = fr.linear_rows_add_triton(out, x, weight)
    assert got is out and out.data_ptr() == storage
    want = before.double() + x.double() @ weight.double().t()
    torch.testing.assert_close(out.double(), want, **tol(dtype, 4.0))
    assert_counters_clear()


# (M, K, I, dtype, config): weight (2I, K) = [gate | up]; the dev models' gate/up at 16 rows, then
# awkward ones; a planted split > 1 must be ignored (the epilogue needs whole sums)
GATED_ROWS_CASES = cases(
    full=[(16, 2048, 8192, BF16, None), (16, 2048, 6144, BF16, None), (16, 1152, 6912, BF16, None),
          (3, 1000, 100, F16, None), (2, 77, 3, F32, None), (16, 2048, 1000, BF16, (64, 128, 4, 8, 4)),
          (5, 1152, 37, BF16, (16, 256, 1, 4, 3))],
    small=[(2, 77, 3, F32, None), (3, 300, 50, BF16, (16, 64, 2, 4, 1)), (16, 130, 37, F16, None)],
)  # fmt: skip


@kernel_test
@pytest.mark.parametrize("scaled", [True, False])
@pytest.mark.parametrize("activation", ["silu", "gelu_tanh"])
@pytest.mark.parametrize("M,K,inter,dtype,config", GATED_ROWS_CASES)
def test_gated_linear_rows(poisoned, monkeypatch, M, K, inter, dtype, config, activation, scaled):
    """act(gate) * up as the product's epilogue: output o pairs gate row o with up row inter + o (a
    wrong pairing or a missed output fails by O(1)); scaled (the folded norm): gate and up first
    divided by rms of x's row. Roundings as the reference's ops, so only the fp32 sum order differs."""
    x = rand(M, K, dtype=dtype, scale=4.0)
    weight = rand(2 * inter, K, dtype=dtype, scale=K**-0.5)
    planted(monkeypatch, "gated_linear", (M,), inter, K, dtype, config)
    eps = EPS if scaled else None
    got = fr.gated_linear_rows_triton(x, weight, activation, eps)
    want = fr.gated_linear_rows_ref(x, weight, activation, eps)
    assert got.shape == (M, inter) and got.dtype == dtype
    assert_matches(got, want, dtype, scale=2.0)
    assert_counters_clear()


@kernel_test
@pytest.mark.parametrize("dtype", [BF16, F32])
def test_strided_rows(poisoned, monkeypatch, dtype):
    """Rows that are views with a row stride wider than K (slices of a wider buffer) are read in place."""
    M, K, N = 3, 96, 40
    monkeypatch.setitem(frc._TUNED_ROWS, ("norm_linear", M, N, K, dtype), (16, 32, 2, 4, 1))
    wide = rand(M, 3 * K, dtype=dtype)
    h, residual, gate_up = wide[:, :K], wide[:, K : 2 * K], wide[:, K:]
    norm_w, weight = rand(K, dtype=dtype), rand(N, K, dtype=dtype, scale=K**-0.5)
    y, new_res = norm_linear_rows_triton(h, residual, norm_w, EPS, 0.0, None, weight)
    _, want_res = norm_linear_ref(h, residual, norm_w, EPS, 0.0, None, weight)
    assert_same_bits(new_res, want_res)
    assert_linear_close(y, rms_norm_ref(want_res, norm_w, EPS), weight)
    assert_linear_close(linear_rows_triton(h, weight), h, weight)
    assert_linear_close(
        act_linear_rows_triton(gate_up, "silu", weight), gated_act_ref(gate_up, "silu"), weight
    )


# ---------------------------------------------------------------- CPU: fallbacks, config


def test_other_row_counts_take_the_reference(monkeypatch):
    """One row (fused_linear's kernel) and more than MAX_ROWS (prefill) are the references'; so are mixed
    dtypes (every op, the gated product with and without the folded norm's row scale)."""
    K, N = 24, 5
    w, nw = torch.randn(N, K), torch.randn(K)
    for lead in [(1,), (1, 1), (), (17,), (1, 17), (3, 6), (0,)]:
        assert not fr.fits_rows(torch.empty(*lead, K))
        x, res, gu = torch.randn(*lead, K), torch.randn(*lead, K), torch.randn(*lead, 2 * K)
        assert torch.equal(linear_rows_triton(x, w), linear_ref(x, w))
        assert torch.equal(act_linear_rows_triton(gu, "silu", w), act_linear_ref(gu, "silu", w))
        gated_w = torch.randn(2 * N, K)
        for eps in (EPS, None):
            got = fr.gated_linear_rows_triton(x.reshape(-1, K), gated_w, "silu", eps)
            assert torch.equal(got, fr.gated_linear_rows_ref(x.reshape(-1, K), gated_w, "silu", eps))
        for h in (x, None):
            got = norm_linear_rows_triton(h, res, nw, EPS, 1.0, nw, w)
            want = norm_linear_ref(h, res, nw, EPS, 1.0, nw, w)
            assert all(torch.equal(g, v) for g, v in zip(got, want))
    assert all(fr.fits_rows(torch.empty(*lead, K)) for lead in [(2,), (16,), (2, 8), (16, 1), (3, 1, 1)])
    # mixed dtypes (the kernel's product needs one) go to the references too, at any row count
    for name in ("linear_ref", "act_linear_ref", "norm_linear_ref", "gated_linear_rows_ref"):
        monkeypatch.setattr(fr, name, lambda *args, _name=name: _name)
    x, gu, w64 = torch.randn(3, K), torch.randn(3, 2 * K), w.double()
    assert linear_rows_triton(x, w64) == "linear_ref"
    assert act_linear_rows_triton(gu, "silu", w64) == "act_linear_ref"
    assert norm_linear_rows_triton(x, x, nw.double(), EPS, 0.0, None, w) == "norm_linear_ref"
    assert norm_linear_rows_triton(None, x, nw, EPS, 0.0, None, w64) == "norm_linear_ref"
    assert (
        fr.gated_linear_rows_triton(x, torch.randn(2 * N, K).double(), "silu", EPS) == "gated_linear_rows_ref"
    )
    with pytest.raises(ValueError):
        act_linear_rows_triton(torch.randn(2, 2 * K), "relu", w)
    with pytest.raises(ValueError):
        fr.gated_linear_rows_triton(x, torch.randn(2 * N, K), "relu")


# the dev models' (N, K) per op at 16 rows: Qwen3-1.7B, Llama 3.2 1B, Gemma 3 1B
DEV_SHAPES = [
    ("norm_add", 4096, 2048), ("linear", 2048, 2048), ("norm_add", 12288, 2048), ("act", 2048, 6144),
    ("norm_add", 3072, 2048), ("norm_add", 16384, 2048), ("act", 2048, 8192),
    ("norm_sandwich", 1536, 1152), ("linear", 1152, 1024), ("norm_sandwich", 13824, 1152), ("act", 1152, 6912),
    ("norm_add", 151936, 2048), ("norm_first", 262144, 1152), ("linear", 3, 77), ("act", 1000, 77),
]  # fmt: skip


@pytest.mark.parametrize("cost,N,K", DEV_SHAPES)
@pytest.mark.parametrize("elem_bytes", [2, 4])
def test_rows_config_is_a_sane_launch(cost, N, K, elem_bytes):
    block_n, block_k, split, num_warps, num_stages = rows_config(N, K, elem_bytes, cost)
    for b in (block_n, block_k, split):
        assert b & (b - 1) == 0  # tl.arange needs powers of 2 (SPLIT: one of the model's choices)
    assert 16 <= block_n <= 128 and 16 <= block_k <= max(16, _triton.next_pow2(K)) and block_k <= 256
    assert num_warps in (4, 8) and 2 <= num_stages <= 4
    assert (
        num_stages * (block_n + frc.BLOCK_M) * block_k * elem_bytes <= 144 << 10
    )  # fits sm_80's shared memory
    if split > 1:
        assert _triton.cdiv(K, block_k) >= 4 * split  # every slice keeps a few chunks to pipeline
    if K * elem_bytes >= 128:
        assert block_k * elem_bytes >= 128  # each W row chunk a whole cache line
    t = frc.predict_us(N, K, elem_bytes, cost, block_n, block_k, split)
    assert N * K * elem_bytes / (frc.HBM_GBPS * 1e3) <= t < 1e4


def test_rows_config_splits_the_activations_k_and_not_the_wide_projections():
    """What the model is for: the down projection's activation (two MUFU ops per element, recomputed
    by every program) is split over K; the gate/up and LM-head widths fill the card without splitting."""
    assert rows_config(2048, 6144, 2, "act")[2] > 1
    assert rows_config(1152, 6912, 2, "act")[2] > 1
    for N, K in [(12288, 2048), (16384, 2048), (13824, 1152), (151936, 2048)]:
        assert rows_config(N, K, 2, "norm_add")[2] == 1


def test_slices_cover_k_with_no_empty_slice():
    for K in (16, 77, 300, 1000, 2048, 6144, 6912):
        for block_k in (16, 64, 256):
            for split in (1, 2, 3, 4, 8):
                splits, k_split = frc._slices(K, block_k, split)
                assert 1 <= splits <= split and k_split % block_k == 0
                assert (splits - 1) * k_split < K <= splits * k_split


def test_rows_shapes_are_what_the_rows_kernel_runs():
    """A model's batch-1 GEMV shapes as the rows kernel takes them: the gated and pre-normed names
    to ops tune_rows knows, each norm product also as the folded norms' raw rows take it (qkv a plain
    linear, gate/up gated_linear of half its rows), no LM head; every op is one tune_rows can time (an unknown name would fail at start-up)."""
    shapes = [("norm_linear", 1536, 1152), ("norm_linear_pre", 1536, 1152), ("linear", 1152, 1024),
              ("lm_head_pre", 262144, 1152), ("norm_linear_act_pre", 13824, 1152), ("linear", 1152, 6912),
              ("act_linear", 1152, 6912)]  # fmt: skip
    assert gemv_tuning.rows_shapes(shapes) == [
        ("norm_linear", 1536, 1152), ("linear", 1536, 1152), ("linear", 1152, 1024), ("norm_linear", 13824, 1152),
        ("gated_linear", 6912, 1152), ("linear", 1152, 6912), ("act_linear", 1152, 6912),
    ]  # fmt: skip
    for op, N, K in gemv_tuning.rows_shapes(shapes):
        gemv_tuning.tune_rows(op, 16, N, K, BF16, "cpu")  # off CUDA: the heuristic, for every op


def test_tune_rows_is_the_heuristic_off_cuda(monkeypatch):
    monkeypatch.setattr(frc, "_TUNED_ROWS", {})
    for op, cost in frc._OP_COST.items():
        assert gemv_tuning.tune_rows(op, 16, 3072, 2048, BF16, "cpu") == rows_config(3072, 2048, 2, cost)
    assert frc._TUNED_ROWS == {}


def test_untuned_setting_ignores_tuned_blocks(monkeypatch):
    monkeypatch.setitem(frc._TUNED_ROWS, ("linear", 4, 100, 64, BF16), (32, 128, 2, 4, 3))
    monkeypatch.setattr(frc, "INTERPRETING", False)
    assert frc.config_for("linear", 4, 100, 64, BF16, "linear") == (32, 64, 2, 4, 3)  # BLOCK_K capped by K
    assert frc.config_for("linear", 5, 100, 64, BF16, "linear") == rows_config(100, 64, 2, "linear")
    monkeypatch.setenv("RUNTIME_GEMV_TUNE", "0")
    assert frc.config_for("linear", 4, 100, 64, BF16, "linear") == rows_config(100, 64, 2, "linear")


def test_rows_blocks_override_names_one_launch(monkeypatch):
    """RUNTIME_ROWS_BLOCKS (an in-graph A/B) sets the blocks of the launch it names (op and shape),
    over tuned blocks and the heuristic alike; another shape keeps its own; a malformed entry is
    refused with the form to write."""
    monkeypatch.setitem(frc._TUNED_ROWS, ("linear", 16, 3072, 2048, BF16), (32, 128, 2, 4, 3))
    monkeypatch.setattr(frc, "INTERPRETING", False)
    monkeypatch.setenv("RUNTIME_ROWS_BLOCKS", "linear:3072x2048=16/256/1/8/2 linear:1536x1152=16/128/2/4/4")
    assert frc.config_for("linear", 16, 3072, 2048, BF16, "linear") == (16, 256, 1, 8, 2)
    assert frc.config_for("linear", 16, 1536, 1152, BF16, "linear") == (16, 128, 2, 4, 4)
    assert frc.config_for("linear", 16, 4096, 2048, BF16, "linear") == rows_config(4096, 2048, 2, "linear")
    monkeypatch.setenv("RUNTIME_ROWS_BLOCKS", "linear:3072x2048=16/256/1")
    with pytest.raises(ValueError, match="RUNTIME_ROWS_BLOCKS entry .*BLOCK_N/BLOCK_K/SPLIT/warps/stages"):
        frc.config_for("linear", 16, 3072, 2048, BF16, "linear")


def test_the_batch_lm_head_takes_its_own_blocks(monkeypatch):
    """The LM head's launch ("logits") takes LOGITS_BLOCKS where nothing overrides it, not the
    heuristic's widest block; a plain product of the same shape keeps the heuristic; the override
    names it as "logits"."""
    monkeypatch.setattr(frc, "INTERPRETING", False)
    monkeypatch.delenv("RUNTIME_ROWS_BLOCKS", raising=False)
    assert (
        frc.config_for("logits", 16, 151936, 2048, BF16, "linear") == frc.LOGITS_BLOCKS == (32, 256, 1, 4, 4)
    )
    assert frc.config_for("linear", 16, 151936, 2048, BF16, "linear") == rows_config(
        151936, 2048, 2, "linear"
    )
    assert rows_config(151936, 2048, 2, "linear") != frc.LOGITS_BLOCKS
    monkeypatch.setenv("RUNTIME_ROWS_BLOCKS", "logits:151936x2048=64/128/1/8/4")
    assert frc.config_for("logits", 16, 151936, 2048, BF16, "linear") == (64, 128, 1, 8, 4)


@pytest.mark.cuda
@pytest.mark.skipif(INTERPRET, reason="tune_rows times compiled kernels on the GPU")
@pytest.mark.parametrize("op", ["norm_linear", "act_linear", "linear", "lm_head", "gated_linear"])
def test_tune_rows_on_the_gpu_picks_a_candidate_the_launch_then_uses(monkeypatch, op):
    monkeypatch.setattr(frc, "_TUNED_ROWS", {})
    M, N, K, dtype = 16, 1536, 1152, BF16
    best = gemv_tuning.tune_rows(op, M, N, K, dtype, "cuda")
    assert frc.config_for(op, M, N, K, dtype, frc._OP_COST[op]) == best
    assert op != "gated_linear" or best[2] == 1  # never a split K under the epilogue
    x = rand(M, 2 * K if op == "act_linear" else K, dtype=dtype)
    weight = rand(2 * N if op == "gated_linear" else N, K, dtype=dtype, scale=K**-0.5)
    if op == "gated_linear":
        got = fr.gated_linear_rows_triton(x, weight, "silu", EPS)
        assert_matches(got, fr.gated_linear_rows_ref(x, weight, "silu", EPS), dtype, scale=2.0)
    elif op in ("norm_linear", "lm_head"):
        norm_w = rand(K, dtype=dtype)
        y, _ = norm_linear_rows_triton(
            None, x, norm_w, EPS, 0.0, None, weight, F32 if op == "lm_head" else None
        )
        assert_linear_close(y.to(dtype), rms_norm_ref(x, norm_w, EPS), weight)
    elif op == "act_linear":
        assert_linear_close(act_linear_rows_triton(x, "silu", weight), gated_act_ref(x, "silu"), weight)
    else:
        assert_linear_close(linear_rows_triton(x, weight), x, weight)
    assert_counters_clear()


# ---------------------------------------------------------------- the interpreter subset, from the parent


@pytest.mark.skipif(INTERPRET, reason="this is the child run")
@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU runs the compiled kernels instead")
@needs_triton
def test_fused_rows_under_the_cpu_interpreter():
    """Runs this file's kernel tests on the CPU through the Triton interpreter (small cases)."""
    assert_passes_under_interpreter(__file__)


def test_ops_send_batch_buckets_to_the_rows_kernel_only_when_asked(monkeypatch):
    """RUNTIME_BATCH_ROWS=fused routes 2..16 rows of each projection here; by default (and for one
    row, or 17) they stay on the unfused path."""
    from runtime.kernels import _triton, ops

    monkeypatch.setattr(_triton, "AVAILABLE", True)
    monkeypatch.setenv("RUNTIME_KERNELS", "triton")
    calls = []
    for name in ("norm_linear_rows_triton", "act_linear_rows_triton", "linear_rows_triton"):
        monkeypatch.setattr(ops, name, lambda *a, name=name, **k: calls.append(name) or "fused")
    K, N = 8, 5
    w, nw = torch.randn(N, K), torch.randn(K)

    def run(rows: int) -> None:
        x, gu = torch.randn(rows, K), torch.randn(rows, 2 * K)
        ops.norm_linear(x, x, nw, 1e-6, 0.0, None, w)
        ops.act_linear(gu, "silu", w)
        ops.linear(x, w)

    monkeypatch.setattr(ops, "norm_linear_triton", lambda *a, **k: (torch.zeros(1, N), torch.zeros(1, K)))
    monkeypatch.setattr(ops, "act_linear_triton", lambda *a, **k: torch.zeros(1, N))
    monkeypatch.setattr(ops, "linear_triton", lambda *a, **k: torch.zeros(1, N))
    monkeypatch.setattr(ops, "add_rms_norm", lambda x, r, *a: (x + r, x + r))
    monkeypatch.setattr(ops, "gated_act", lambda gu, act: gu[..., :K])
    run(16)
    assert calls == []
    monkeypatch.setenv("RUNTIME_BATCH_ROWS", "fused")
    run(1)
    run(17)
    assert calls == []
    run(16)
    assert calls == ["norm_linear_rows_triton", "act_linear_rows_triton", "linear_rows_triton"]
    monkeypatch.setenv("RUNTIME_BATCH_ROWS", "rows")  # a misspelt choice is refused, not ignored
    with pytest.raises(ValueError, match="RUNTIME_BATCH_ROWS='rows'"):
        run(16)
