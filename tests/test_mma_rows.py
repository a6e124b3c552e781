"""The batch-rows products on tensor cores from registers (mma_rows.py) against the references.

GPU (`cuda`): with RUNTIME_ROWS_MMA=on, fused_rows's plain, accumulate and gated entry points run
the Gluon kernel (a spy counts its launches, so a silent fallback to the tl.dot kernel fails), and
their outputs match the references on fresh random inputs: the dev models' shapes at 16 rows and
awkward ones (N off every 16 rows, K off every step, 2..16 rows, strided rows).
CPU: the switch, the fallbacks, and the sm_90 / sm_80 / sm_120 builds: no spills, and no shared
memory or barrier inside the K loop (W reaches the MMA from registers: what the kernel is for).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch
from kernel_testing import BF16, F16, assert_linear_close, assert_matches, rand, tol

from runtime.kernels import fused_rows as fr
from runtime.kernels import mma_rows

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

EPS = 1e-6


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(4321)


@pytest.fixture
def mma_on(monkeypatch):
    """RUNTIME_ROWS_MMA=on, and the list of the Gluon kernel's launches (x's shape, gated) it makes."""
    monkeypatch.setenv("RUNTIME_ROWS_MMA", "on")
    launches = []
    real = mma_rows.launch

    def spy(x, weight, y, **kw):
        launches.append((tuple(x.shape), kw.get("gated", False)))
        real(x, weight, y, **kw)

    monkeypatch.setattr(mma_rows, "launch", spy)
    return launches


# (M, K, N, dtype): the dev models' products at 16 rows, then awkward ones
LINEAR_CASES = [
    (16, 2048, 4096, BF16), (16, 2048, 3072, BF16), (16, 8192, 2048, BF16), (16, 1152, 1536, BF16),
    (16, 6912, 1152, BF16), (2, 2048, 1000, BF16), (3, 520, 37, F16), (7, 1160, 129, BF16), (16, 8, 16, BF16),
]  # fmt: skip


@pytest.mark.cuda
@pytest.mark.parametrize("M,K,N,dtype", LINEAR_CASES)
def test_linear_rows_on_mma(mma_on, M, K, N, dtype):
    x, weight = rand(M, K, dtype=dtype), rand(N, K, dtype=dtype, scale=K**-0.5)
    y = fr.linear_rows_triton(x, weight)
    assert mma_on == [((M, K), False)]
    assert_linear_close(y, x, weight)
    # the batch step's qkv launch (the next kernel may start after the wait): the same product
    assert torch.equal(fr.linear_rows_triton(x, weight, release_early=True), y)


@pytest.mark.cuda
@pytest.mark.parametrize("M,K,N,dtype", LINEAR_CASES)
def test_linear_rows_add_on_mma(mma_on, M, K, N, dtype):
    """out += x @ W.T in place, rounded once, against out + x @ W.T in fp64."""
    x, weight = rand(M, K, dtype=dtype), rand(N, K, dtype=dtype, scale=K**-0.5)
    out = rand(M, N, dtype=dtype, scale=4.0)
    before, storage = out.clone(), out.data_ptr()
    assert fr.linear_rows_add_triton(out, x, weight) is out and out.data_ptr() == storage
    assert mma_on == [((M, K), False)]
    want = before.double() + x.double() @ weight.double().t()
    torch.testing.assert_close(out.double(), want, **tol(dtype, 4.0))


@pytest.mark.cuda
@pytest.mark.parametrize("scaled", [True, False])
@pytest.mark.parametrize("activation", ["silu", "gelu_tanh"])
@pytest.mark.parametrize(
    "M,K,inter,dtype",
    [(16, 2048, 8192, BF16), (16, 2048, 6144, BF16), (5, 1152, 6912, BF16), (3, 520, 37, F16)],
)
def test_gated_linear_rows_on_mma(mma_on, M, K, inter, dtype, activation, scaled):
    """act(gate) * up as the epilogue, output o pairing gate row o with up row inter + o; scaled: gate
    and up first divided by rms of x's row (the folded norm)."""
    x = rand(M, K, dtype=dtype, scale=4.0)
    weight = rand(2 * inter, K, dtype=dtype, scale=K**-0.5)
    eps = EPS if scaled else None
    got = fr.gated_linear_rows_triton(x, weight, activation, eps)
    assert mma_on == [((M, K), True)]
    assert_matches(got, fr.gated_linear_rows_ref(x, weight, activation, eps), dtype, scale=2.0)


@pytest.mark.cuda
@pytest.mark.parametrize("blocks", ["4/128", "8/64", "2/32", "1/256"])
def test_block_choices_and_strided_rows_on_mma(mma_on, monkeypatch, blocks):
    """Every warps / slice choice computes the same product; rows that are views with a row stride
    wider than K are read in place."""
    monkeypatch.setenv("RUNTIME_MMA_ROWS_BLOCKS", blocks)
    M, K, N = 11, 1160, 200
    wide = rand(M, 3 * K, dtype=BF16)
    x, weight = wide[:, K : 2 * K], rand(N, K, dtype=BF16, scale=K**-0.5)
    assert_linear_close(fr.linear_rows_triton(x, weight), x, weight)
    assert mma_on == [((M, K), False)]


@pytest.mark.cuda
def test_lm_head_choice_takes_the_lm_head_only(mma_on, monkeypatch):
    """RUNTIME_ROWS_MMA=lm_head: the batch LM head's launch ("logits") runs here, the others not."""
    monkeypatch.setenv("RUNTIME_ROWS_MMA", "lm_head")
    x, weight = rand(16, 2048, dtype=BF16), rand(5000, 2048, dtype=BF16, scale=2048**-0.5)
    assert_linear_close(fr.linear_rows_triton(x, weight, op="logits"), x, weight)
    assert mma_on == [((16, 2048), False)]
    fr.linear_rows_triton(x, weight)
    assert len(mma_on) == 1


# ---------------------------------------------------------------- CPU


def test_the_switch_names_the_launches_it_takes(monkeypatch):
    monkeypatch.delenv("RUNTIME_ROWS_MMA", raising=False)
    assert not mma_rows.enabled("linear") and not mma_rows.enabled("logits")  # off unless asked
    monkeypatch.setenv("RUNTIME_ROWS_MMA", "lm_head")
    assert mma_rows.enabled("logits") and not mma_rows.enabled("linear")
    monkeypatch.setenv("RUNTIME_ROWS_MMA", "on")
    assert mma_rows.enabled("logits") and mma_rows.enabled("gated_linear")
    monkeypatch.setenv("RUNTIME_ROWS_MMA", "yes")
    with pytest.raises(ValueError, match="RUNTIME_ROWS_MMA"):
        mma_rows.enabled("linear")


def test_cpu_tensors_are_never_taken():
    x, w = torch.zeros(4, 64, dtype=BF16), torch.zeros(32, 64, dtype=BF16)
    assert not mma_rows.takes(x, w, torch.zeros(4, 32, dtype=BF16))


def test_blocks_shorter_slices_for_gated_and_short_k(monkeypatch):
    monkeypatch.delenv("RUNTIME_MMA_ROWS_BLOCKS", raising=False)
    assert mma_rows.blocks(2048, gated=False) == (8, 128)
    assert mma_rows.blocks(2048, gated=True) == (8, 64)
    assert mma_rows.blocks(520, gated=False) == (8, 64)
    assert mma_rows.blocks(2048, gated=False, op="logits") == (4, 128)
    monkeypatch.setenv("RUNTIME_MMA_ROWS_BLOCKS", "4/32")
    assert mma_rows.blocks(2048, gated=True) == (4, 32)


def _build(capability: int, **constexprs) -> tuple[str, str]:
    """(SASS, ptxas -v report) of the kernel built for sm_<capability> on the CPU."""
    import triton
    from kernel_sass import sass_and_usage
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource

    signature = {
        "x_ptr": "*bf16", "x_stride": "i32", "w_ptr": "*bf16", "y_ptr": "*bf16", "M": "i32", "N": "i32",
        "K": "i32", "eps": "fp32",
    }  # fmt: skip
    signature.update({name: "constexpr" for name in constexprs})
    aligned = [["tt.divisibility", 16]]  # pointers, row stride and K: what takes() requires
    source = GluonASTSource(
        mma_rows._mma_rows_kernel, signature, constexprs, attrs={(i,): aligned for i in (0, 1, 2, 3, 6)}
    )
    kernel = triton.compile(
        source, target=GPUTarget("cuda", capability, 32), options={"num_warps": constexprs["WARPS"]}
    )
    return sass_and_usage(kernel, capability)


@pytest.mark.parametrize("capability", [90, 80, 120])
@pytest.mark.parametrize(
    "variant",
    [dict(WARPS=8, BLOCK_K=128), dict(WARPS=8, BLOCK_K=128, ACCUMULATE=True),
     dict(WARPS=8, BLOCK_K=64, GATED=True, ROW_SCALE=True, GELU=True)],
)  # fmt: skip
def test_builds_keep_w_in_registers(capability, variant):
    """The K loop of every build holds MMAs and 16-byte global loads, and no shared-memory access or
    barrier (those belong to the final cross-warp sum only); no register spills."""
    if mma_rows.gluon is None or mma_rows.INTERPRETING:
        pytest.skip("needs a compiling Triton with Gluon")
    from kernel_sass import loops

    constexprs = dict(
        ACCUMULATE=False, GATED=False, GELU=False, ROW_SCALE=False, PDL=2 if capability >= 90 else 0
    )
    sass, report = _build(capability, **{**constexprs, **variant})
    spills = re.search(r"(\d+) bytes spill stores", report)
    assert spills is None or int(spills.group(1)) == 0, report
    body = [ops for length, ops in loops(sass) if ops["HMMA"]]
    assert body, "no loop with MMAs"
    for ops in body:
        assert not any(ops[op] for op in ("BAR", "LDS", "STS", "LDSM")), ops
    assert "LDG.E.EF.128" in sass or "LDG.E.128" in sass
