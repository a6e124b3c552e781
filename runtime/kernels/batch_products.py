"""Where a batch step's products run: RUNTIME_BATCH_GEMM's choice of products for the Triton rows
kernel (fused_rows.py) instead of cuBLAS, and RUNTIME_BATCH_NORM_RELEASE for the norm kernel before
the qkv product. Read when the step is captured; ops.on_rows_kernel adds whether the kernel takes
the rows at all. The numbers behind each default are in notes/kernels.md (H100).
"""

from __future__ import annotations

from runtime.kernels.switches import env_choice

# RUNTIME_BATCH_GEMM's choices -> the batch step's products they put on the rows kernel
BATCH_GEMM_PRODUCTS = {
    "cublas": (),
    "rows": ("qkv", "o", "gate_up", "down"),
    "rows_all": ("qkv", "o", "gate_up", "down", "lm_head"),
    "rows_mlp": ("gate_up", "down"),
    "rows_down": ("down",),
    "rows_qkv": ("qkv",),
    "rows_qkv_o": ("qkv", "o"),
    "rows_qkv_lm_head": ("qkv", "lm_head"),
}
BATCH_GEMM_DEFAULT = "rows_qkv_lm_head"


def rows_products_named(product: str) -> bool:
    """Whether RUNTIME_BATCH_GEMM puts `product` on the rows kernel, which streams each weight once
    for up to 16 rows and launches under PDL.
    "rows_qkv_lm_head" (the default): "rows_qkv"'s qkv, and the LM head after the final norm's
      kernel (fused_rows_config.LOGITS_BLOCKS: on the H100 the batch-16 step -1..-30 us against
      cuBLAS's LM head, which streams the 0.5-0.6 GB at ~2.8 TB/s).
    "rows_qkv": qkv, in every family (Gemma's after its norm kernel), releasing the
      attention right after its wait. cuBLAS lets the next kernel launch only when it ends, so the
      attention's loads before its own wait (first cache block, tables) overlapped nothing. On the
      H100 the product itself is slower than cuBLAS's (+0.6..+1.5 us per layer) and the attention
      after it faster by more (-1.2..-3.1 us): batch-16 step Llama -8..-19, Qwen3 -18..-35, Gemma
      -18..-53 us.
    "cublas": none. "rows": all four (folded-norm families; the gated activation as gate/up's
      epilogue, the residual adds as o's and down's); "rows_all": the four and the LM head;
      "rows_mlp": the MLP's two; "rows_down": down (split K summed in the kernel, no split-K reduce
      launch); "rows_qkv_o": qkv and o (folded path).
      These were as fast as cuBLAS or slower on the H100: the rows kernel streams the big matrices
      slower than cuBLAS."""
    choice = env_choice("RUNTIME_BATCH_GEMM", BATCH_GEMM_PRODUCTS, BATCH_GEMM_DEFAULT)
    return product in BATCH_GEMM_PRODUCTS[choice]


def norm_releases_early() -> bool:
    """RUNTIME_BATCH_NORM_RELEASE: "early" (the default) has the norm kernel before a batch step's
    qkv product on the rows kernel (Gemma's add + sandwich norm) let that product launch right after
    its wait, so the product's programs load their first weight tile while the norm runs (H100,
    Gemma's batch-16 step -9 / +1 / -22 us); "late", when the norm ends (an A/B)."""
    return env_choice("RUNTIME_BATCH_NORM_RELEASE", ("early", "late"), "early") == "early"
