"""The batch-rows products (fused_rows.py's plain, accumulate and gated launches) on tensor cores
straight from registers: y (M, N) = x (M, K) @ W.T for M <= 16, written in Gluon.

Why: at 16 rows the product is still bound by reading W once, and the batch-1 GEMV streams W near
copy speed because each program's weight tiles go from DRAM into registers and nowhere else. The
tl.dot kernel (rows_kernel.py) moves every W tile through shared memory to reach the MMA's operand
layout, behind a barrier, and cuBLAS at M = 16 reads the small matrices at 1.3-1.9 TB/s. Here W is
loaded directly in the MMA's operand layout: with k_width 8 each thread's 8 operand elements along
K are adjacent in memory (the MMA then runs over a permutation of K, the same for both operands),
so a tile arrives as 16-byte loads into the registers the MMA reads, and no shared memory is used
until the final cross-warp sum.

Program p owns W rows [16p, 16p + 16) (gated: those gate rows and the up rows N + that) over all of
K; its WARPS warps take K in interleaved BLOCK_K slices, each warp one MMA batch entry of a 3-D
(WARPS, 16, BLOCK_K) x (WARPS, BLOCK_K, 16) product, summed over the warps at the end. The next
step's W and x tiles are loaded before this step's MMAs (two steps in flight per warp), W's first
before the PDL wait (no kernel writes weights). Results round as fused_rows's references: the
product to the weights' dtype (accumulate: old + product in fp32, rounded once; gated: gate and up
rounded, scaled by the row's 1 / rms, then act(gate) * up).

Taken by fused_rows._launch where RUNTIME_ROWS_MMA=on and takes() holds (Gluon importable, a CUDA
card of capability >= 8.0 for mma.sync, 16-bit weights, 16-byte aligned rows); the tl.dot kernel and
the references stay the fallbacks and the test oracles.
"""

from __future__ import annotations

import os

import torch

from runtime.kernels._triton import INTERPRETING, _capability, cdiv, pdl
from runtime.kernels.switches import env_choice

try:
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.language.nvidia.ampere import mma_v2
except ImportError:  # no Triton, or one without Gluon: takes() is False and nothing here is launched
    gluon = gl = mma_v2 = None

ROWS = 16  # the MMA's M: W rows per program, and the most activation rows a launch takes
K_WIDTH = 8  # operand elements per thread along K (the layouts' k_width): 16 bytes, one vector load


CHOICES = ("off", "lm_head", "on")


def enabled(op: str) -> bool:
    """RUNTIME_ROWS_MMA: whether the rows kernel's launch named op ("logits": the batch LM head;
    "linear", "gated_linear") comes here (where takes() holds). "on": every plain, accumulate and
    gated launch; "lm_head": the LM head only; "off" (the default): none, the tl.dot kernel."""
    choice = env_choice("RUNTIME_ROWS_MMA", CHOICES, "off")
    return choice == "on" or (choice == "lm_head" and op == "logits")


def takes(x: torch.Tensor, weight: torch.Tensor, y: torch.Tensor) -> bool:
    """Whether this kernel can run x (M, K) rows against weight (N, K) into y (M, N) here."""
    if gluon is None or INTERPRETING or weight.device.type != "cuda":
        return False
    index = weight.device.index if weight.device.index is not None else torch.cuda.current_device()
    if _capability(index) < (8, 0) or weight.dtype not in (torch.bfloat16, torch.float16):
        return False
    K = weight.shape[1]
    aligned = all(t.data_ptr() % 16 == 0 for t in (x, weight, y))
    return (
        aligned and x.dtype == weight.dtype and x.shape[0] <= ROWS and K % K_WIDTH == 0
        and x.stride(0) % K_WIDTH == 0 and x.stride(1) == 1 and y.is_contiguous()
    )  # fmt: skip


def blocks(K: int, gated: bool, op: str = "linear") -> tuple[int, int]:
    """(warps, BLOCK_K). The LM head: 4 warps of 128-column slices (16 rows x 512 columns per step;
    on the H100 2.97 TB/s for Qwen3's, scripts/bench_mma_rows.py). Otherwise 8 warps of 128 (32 KB of
    W per step), 64 where K is short or the launch is gated (two tiles per step: 128 columns take
    178 registers in the sm_90 build, 64 take 104). RUNTIME_MMA_ROWS_BLOCKS="warps/block_k"
    overrides (an A/B)."""
    forced = os.environ.get("RUNTIME_MMA_ROWS_BLOCKS")
    if forced:
        warps, block_k = (int(v) for v in forced.split("/"))
        return warps, block_k
    if op == "logits":
        return 4, 128
    return 8, 64 if gated or K < 8 * 128 else 128


def launch(
    x: torch.Tensor, weight: torch.Tensor, y: torch.Tensor, *, accumulate: bool = False, gated: bool = False,
    gelu: bool = False, row_scale: bool = False, eps: float = 0.0, release_early: bool = False,
    op: str = "linear",
) -> None:  # fmt: skip
    """y = x @ weight.T (accumulate: y += it, rounded once; gated: weight (2N, K) = [gate | up] and
    y = act(gate) * up, gate and up first divided by rms(x's row) with row_scale)."""
    N = weight.shape[0] // 2 if gated else weight.shape[0]
    M, K = x.shape
    warps, block_k = blocks(K, gated, op)
    _mma_rows_kernel[(cdiv(N, ROWS),)](
        x, x.stride(0), weight, y, M, N, K, eps,
        WARPS=warps, BLOCK_K=block_k, ACCUMULATE=accumulate, GATED=gated, GELU=gelu, ROW_SCALE=row_scale,
        num_warps=warps, **pdl(weight.device, early=release_early),
    )  # fmt: skip


if gluon is not None:

    @gluon.jit
    def _gdc_wait():
        gl.inline_asm_elementwise(
            "griddepcontrol.wait; // dummy $0", "=r", [], dtype=gl.int32, is_pure=False, pack=1
        )

    @gluon.jit
    def _gdc_launch_dependents():
        gl.inline_asm_elementwise(
            "griddepcontrol.launch_dependents; // dummy $0", "=r", [], dtype=gl.int32, is_pure=False, pack=1
        )

    @gluon.jit
    def _w_tile(w_rows, row_ok, slice_cols, k0, K):
        """W's (WARPS, 16, BLOCK_K) tile of step k0 (zero past K and past the last row)."""
        cols = k0 + slice_cols
        return gl.load(w_rows + cols, mask=row_ok & (cols < K), other=0.0, eviction_policy="evict_first")

    @gluon.jit
    def _x_tile(x_rows, x_ok, slice_cols, k0, K):
        """x^T's (WARPS, BLOCK_K, 16) tile of step k0 (zero past K and past the last row)."""
        cols = k0 + slice_cols
        return gl.load(x_rows + cols, mask=x_ok & (cols < K), other=0.0)

    @gluon.jit
    def _mma_rows_kernel(
        x_ptr, x_stride, w_ptr, y_ptr, M, N, K, eps,
        WARPS: gl.constexpr, BLOCK_K: gl.constexpr, ACCUMULATE: gl.constexpr, GATED: gl.constexpr,
        GELU: gl.constexpr, ROW_SCALE: gl.constexpr, PDL: gl.constexpr,
    ):  # fmt: skip
        # (WARPS, 16, 16) fp32 accumulators, one MMA batch entry per warp; A = W rows, B = x^T
        mma: gl.constexpr = gl.NVMMADistributedLayout(
            version=[2, 0], warps_per_cta=[WARPS, 1, 1], instr_shape=[1, 16, 8]
        )
        a_l: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma, k_width=8)
        b_l: gl.constexpr = gl.DotOperandLayout(operand_index=1, parent=mma, k_width=8)
        n0 = gl.program_id(0) * 16
        # A (WARPS, 16, BLOCK_K): warp w's W rows n0.. at columns k0 + w * BLOCK_K + k
        wa = gl.arange(0, WARPS, layout=gl.SliceLayout(1, gl.SliceLayout(2, a_l)))[:, None, None]
        na = gl.arange(0, 16, layout=gl.SliceLayout(0, gl.SliceLayout(2, a_l)))[None, :, None]
        ka = gl.arange(0, BLOCK_K, layout=gl.SliceLayout(0, gl.SliceLayout(1, a_l)))[None, None, :]
        # B (WARPS, BLOCK_K, 16): x^T, warp w's columns of every row m
        wb = gl.arange(0, WARPS, layout=gl.SliceLayout(1, gl.SliceLayout(2, b_l)))[:, None, None]
        kb = gl.arange(0, BLOCK_K, layout=gl.SliceLayout(0, gl.SliceLayout(2, b_l)))[None, :, None]
        mb = gl.arange(0, 16, layout=gl.SliceLayout(0, gl.SliceLayout(1, b_l)))[None, None, :]
        STEP: gl.constexpr = WARPS * BLOCK_K
        a_cols = wa * BLOCK_K + ka
        b_cols = wb * BLOCK_K + kb
        row_ok = n0 + na < N
        w_rows = w_ptr + (n0 + na).to(gl.int64) * K
        up_rows = w_ptr + (N + n0 + na).to(gl.int64) * K  # GATED: the up rows of the same outputs
        x_rows = x_ptr + mb * x_stride
        x_ok = mb < M

        w = _w_tile(w_rows, row_ok, a_cols, 0, K)
        if GATED:
            u = _w_tile(up_rows, row_ok, a_cols, 0, K)
        if PDL:
            _gdc_wait()
            if PDL == 1:
                _gdc_launch_dependents()
        acc = gl.zeros([WARPS, 16, 16], gl.float32, mma)
        acc_up = gl.zeros([WARPS, 16, 16], gl.float32, mma)
        sum_sq = gl.zeros([WARPS, 16], gl.float32, gl.SliceLayout(1, b_l))
        x = _x_tile(x_rows, x_ok, b_cols, 0, K)
        for k0 in range(0, K, STEP):
            # the next step's tiles go out before this step's MMAs, which use the last step's loads
            w_next = _w_tile(w_rows, row_ok, a_cols, k0 + STEP, K)
            if GATED:
                u_next = _w_tile(up_rows, row_ok, a_cols, k0 + STEP, K)
            x_next = _x_tile(x_rows, x_ok, b_cols, k0 + STEP, K)
            acc = mma_v2(w, x, acc)
            w = w_next
            if GATED:
                acc_up = mma_v2(u, x, acc_up)
                u = u_next
            if ROW_SCALE:
                xf = x.to(gl.float32)
                sum_sq += gl.sum(xf * xf, axis=1)
            x = x_next
        if PDL == 2:
            _gdc_launch_dependents()

        out = gl.sum(acc, axis=0)  # (16 rows of W, 16 rows of x)
        lo: gl.constexpr = out.type.layout
        n = gl.arange(0, 16, layout=gl.SliceLayout(1, lo))[:, None]
        m = gl.arange(0, 16, layout=gl.SliceLayout(0, lo))[None, :]
        y_ptrs = y_ptr + m * N + n0 + n
        y_ok = (m < M) & (n0 + n < N)
        dtype: gl.constexpr = w_ptr.dtype.element_ty
        if GATED:
            gate = out.to(dtype).to(gl.float32)
            up = gl.sum(acc_up, axis=0).to(dtype).to(gl.float32)
            if ROW_SCALE:
                inv = gl.rsqrt(gl.sum(sum_sq, axis=0) / K + eps)
                inv = gl.convert_layout(inv, gl.SliceLayout(0, lo))[None, :]
                gate = (gate * inv).to(dtype).to(gl.float32)
                up = (up * inv).to(dtype).to(gl.float32)
            # activation.py's _gated (a Triton function, not callable from Gluon), same roundings:
            # act(gate) rounded to the dtype before the product with up
            if GELU:  # 0.5 (1 + tanh(u)) == sigmoid(2u), u = sqrt(2 / pi) (g + 0.044715 g^3)
                z = 1.5957691216057308 * (gate + 0.044715 * gate * gate * gate)
            else:
                z = gate
            act = (gate / (1.0 + gl.exp(-z))).to(dtype).to(gl.float32)
            gl.store(y_ptrs, (act * up).to(y_ptr.dtype.element_ty), mask=y_ok)
        elif ACCUMULATE:
            old = gl.load(y_ptrs, mask=y_ok, other=0.0).to(gl.float32)
            gl.store(y_ptrs, (out + old).to(y_ptr.dtype.element_ty), mask=y_ok)
        else:
            gl.store(y_ptrs, out.to(dtype).to(y_ptr.dtype.element_ty), mask=y_ok)
