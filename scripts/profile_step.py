"""GPU: where one captured decode step spends its time, per dev architecture.

Loads each model (random weights, bf16), captures the batch-1 greedy step, prefills `--prompt`
tokens, then:
  1. times `--steps` replays with CUDA events (the step time the bench reports);
  2. profiles `--profiled` replays with torch.profiler and sums each kernel's device time per step.
busy = the sum of kernel times per step; gap = step - busy is what launches and drains cost
inside the graph. GEMM rows also give the achieved weight GB/s (all Linear weights + LM head /
the GEMM kernels' time), against the copy bandwidth measured in the same process.
It also times and profiles the batch-16 greedy step (every row from the same prompt).
--ab also times the greedy and the "topk" sampled step (temperature 0.8, top-k 50, top-p 0.9), the
"sample" step (top-p 0.9 alone, temperature 0.6), plain temperature in both samplers that take it
(AB_STEPS) and the batch-16 greedy step under each kernel setting of SETTINGS, one runner after
another in this process, so the settings compare on the same card and the same tuned GEMV blocks
(RUNTIME_KERNELS_OFF names ops forced to their references: embed_rope, the step's inputs in one
kernel, and step_tail, the argmax / sampler writing the next token; RUNTIME_ATTN_PREFETCH=0 makes
the attention kernel wait before it reads its first cache block; RUNTIME_PDL picks the
programmatic-dependent-launch mode).
Prints one markdown table per model (top kernels) and the summary tables last; --out writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

import torch

from runtime.bench.bandwidth import copy_bandwidth_gbs
from runtime.bench.kernel_times import kernel_times
from runtime.bench.step_timing import isolated_ms
from runtime.engine.runner import Runner
from runtime.engine.sampler import BENCH_SAMPLED, BENCH_TOP_P, SamplingParams
from runtime.kernels import gemv_tuning, tuning_store
from runtime.models.loader import load_model

ARCHS = ["meta-llama/Llama-3.2-1B-Instruct", "Qwen/Qwen3-1.7B", "google/gemma-3-1b-it"]
BATCH = 16  # --ab also times the greedy step of this batch bucket
# fewer, longer programs for the GEMVs whose grid outnumbers the programs an H100 holds at once
# (registers of the sm_90 builds): Qwen3's gate/up 1536 -> 768 programs, Gemma's 864 -> 432, Llama's
# down 2048 -> 512
ONE_WAVE_BLOCKS = (
    "norm_linear_act:12288x2048=16/256/4 norm_linear_act_pre:13824x1152=32/128/4 linear:2048x8192=4/2048/8"
)
# the batch qkv products' and the LM heads' rows-kernel launches of Llama, Qwen3, Gemma (op:NxK)
QKV_LAUNCHES = ("linear:3072x2048", "linear:4096x2048", "linear:1536x1152")
LOGITS_LAUNCHES = ("logits:128256x2048", "logits:151936x2048", "logits:262144x1152")


def rows_blocks(launches: tuple[str, ...], blocks: str, gemm: str = "rows_qkv") -> dict[str, str]:
    """A setting: RUNTIME_BATCH_GEMM=gemm, every named launch on the same rows-kernel blocks
    (BLOCK_N/BLOCK_K/SPLIT/warps/stages)."""
    return {"RUNTIME_BATCH_GEMM": gemm, "RUNTIME_ROWS_BLOCKS": " ".join(f"{op}={blocks}" for op in launches)}


# the batch-1 steps --ab times under each setting: (column, variant, the row's sampling settings);
# plain temperature runs in both samplers that take it (topk: each chunk's noisy best; sample: the sort)
AB_STEPS = (
    ("greedy", "greedy", SamplingParams()),
    ("topk", "topk", BENCH_SAMPLED),
    ("sample", "sample", BENCH_TOP_P),
    ("plain_topk", "topk", SamplingParams(1.0, 0, 1.0, 1.0, 1)),
    ("plain_sort", "sample", SamplingParams(1.0, 0, 1.0, 1.0, 1)),
)
SETTINGS = {  # name -> the environment the runner is built (captured) under
    "default": {},
    "no attention prefetch": {"RUNTIME_ATTN_PREFETCH": "0"},
    "no fused step inputs": {"RUNTIME_KERNELS_OFF": "embed_rope"},
    "no fused step tail": {"RUNTIME_KERNELS_OFF": "step_tail"},
    "none of the three": {"RUNTIME_ATTN_PREFETCH": "0", "RUNTIME_KERNELS_OFF": "embed_rope,step_tail"},
    "no PDL": {"RUNTIME_PDL": "0"},
    "PDL released early": {"RUNTIME_PDL": "early"},
    "PDL released early and attention 4 warps": {"RUNTIME_PDL": "early", "RUNTIME_ATTN_WARPS": "4"},
    "qkv GEMV releases early": {"RUNTIME_QKV_PDL": "early"},
    "qkv GEMV releases late": {"RUNTIME_QKV_PDL": "late"},
    "qkv GEMV releases early past the L2 position": {"RUNTIME_QKV_PDL": "long"},
    # the batch qkv product's rows kernel without the cp.async pipeline: more, smaller programs resident
    "rows qkv 16/512 1 stage": rows_blocks(QKV_LAUNCHES, "16/512/1/4/1"),
    "rows qkv 16/1024 1 stage 8 warps": rows_blocks(QKV_LAUNCHES, "16/1024/1/8/1"),
    "rows qkv 16/256 split 2 1 stage": rows_blocks(QKV_LAUNCHES, "16/256/2/4/1"),
    "rows qkv 16/512 2 stages": rows_blocks(QKV_LAUNCHES, "16/512/1/4/2"),
    "qkv GEMV releases early and attention 4 warps": {"RUNTIME_QKV_PDL": "early", "RUNTIME_ATTN_WARPS": "4"},
    "attention 4 programs per SM": {"RUNTIME_ATTN_PER_SM": "4"},
    "attention 1 program per SM": {"RUNTIME_ATTN_PER_SM": "1"},
    "attention 128-slot blocks at D 64": {"RUNTIME_ATTN_WIDE_BLOCKS": "1"},
    "attention 128-slot blocks at D 64 in one-split batch buckets": {"RUNTIME_ATTN_WIDE_BLOCKS": "batch"},
    "attention loop 3 stages": {"RUNTIME_ATTN_STAGES": "3"},
    "attention merge in one program per head": {"RUNTIME_ATTN_MERGE_CHUNKS": "1"},
    "topk groups of 8192 keys": {"RUNTIME_TOPK_GROUP": "8192"},
    "attention merge in 4 column chunks": {"RUNTIME_ATTN_MERGE_CHUNKS": "4"},
    "attention merge in 8 column chunks": {"RUNTIME_ATTN_MERGE_CHUNKS": "8"},
    "batch norms as kernels": {"RUNTIME_BATCH_NORM": "kernel"},
    "attention 8 warps": {"RUNTIME_ATTN_WARPS": "8"},
    "attention 4 warps": {"RUNTIME_ATTN_WARPS": "4"},
    "attention 2 warps": {"RUNTIME_ATTN_WARPS": "2"},
    "attention 1 warp": {"RUNTIME_ATTN_WARPS": "1"},
    "attention 1 warp and 4 splits at batch buckets": {
        "RUNTIME_ATTN_WARPS": "1",
        "RUNTIME_ATTN_BATCH_SPLITS": "4",
    },
    "attention 2 warps and 2 splits at batch buckets": {
        "RUNTIME_ATTN_WARPS": "2",
        "RUNTIME_ATTN_BATCH_SPLITS": "2",
    },
    "attention merge by the last split program": {"RUNTIME_ATTN_MERGE": "last"},
    "attention loop 1 stage": {"RUNTIME_ATTN_STAGES": "1"},
    "attention tables after the wait": {"RUNTIME_ATTN_EARLY_TABLES": "0"},
    "attention batch row scale after the wait": {"RUNTIME_ATTN_EARLY_ROW_SCALE": "0"},
    "attention loads serial": {"RUNTIME_ATTN_LOADS": "serial"},
    "attention V moved after the scores": {"RUNTIME_ATTN_V_MOVE": "late"},
    "attention V moved with K": {"RUNTIME_ATTN_V_MOVE": "early"},
    # the rows kernel's products on tensor cores straight from registers (mma_rows.py)
    "mma rows qkv and LM head": {"RUNTIME_ROWS_MMA": "on"},
    "mma LM head": {"RUNTIME_ROWS_MMA": "lm_head"},
    "mma rows every product": {"RUNTIME_ROWS_MMA": "on", "RUNTIME_BATCH_GEMM": "rows_all"},
    "mma rows every product 4 warps": {
        "RUNTIME_ROWS_MMA": "on",
        "RUNTIME_BATCH_GEMM": "rows_all",
        "RUNTIME_MMA_ROWS_BLOCKS": "4/128",
    },
    "mma rows every product 64 columns": {
        "RUNTIME_ROWS_MMA": "on",
        "RUNTIME_BATCH_GEMM": "rows_all",
        "RUNTIME_MMA_ROWS_BLOCKS": "8/64",
    },
    "mma rows all but the LM head": {"RUNTIME_ROWS_MMA": "on", "RUNTIME_BATCH_GEMM": "rows"},
    "mma rows qkv and LM head 4 warps": {"RUNTIME_ROWS_MMA": "on", "RUNTIME_MMA_ROWS_BLOCKS": "4/128"},
    "o GEMV releases early": {"RUNTIME_GEMV_EARLY": "o"},
    "down GEMV releases early": {"RUNTIME_GEMV_EARLY": "down"},
    "o and down GEMVs release early": {"RUNTIME_GEMV_EARLY": "o,down"},
    "gate/up GEMV releases early": {"RUNTIME_GEMV_EARLY": "gate_up"},
    "gate/up and down GEMVs release early": {"RUNTIME_GEMV_EARLY": "gate_up,down"},
    "cuBLASLt for the batch GEMMs": {"PROFILE_BLAS": "cublaslt"},
    "batch GEMMs without split-K": {"PROFILE_BLAS": "cublaslt", "PROFILE_SPLITK": "off"},
    "batch GEMMs with split-K summed in fp32": {"PROFILE_SPLITK": "fp32"},
    "norm 1 warp": {"RUNTIME_NORM_WARPS": "1"},
    "norm 2 warps": {"RUNTIME_NORM_WARPS": "2"},
    "norm 8 warps": {"RUNTIME_NORM_WARPS": "8"},
    "norm 16 warps": {"RUNTIME_NORM_WARPS": "16"},
    "merge and activation 8 warps": {"RUNTIME_MERGE_WARPS": "8", "RUNTIME_ACT_WARPS": "8"},
    "merge 2 warps": {"RUNTIME_MERGE_WARPS": "2"},
    "merge 4 warps": {"RUNTIME_MERGE_WARPS": "4"},
    "merge 1 warp": {"RUNTIME_MERGE_WARPS": "1"},
    "merge releases the o GEMV early": {"RUNTIME_MERGE_PDL": "early"},
    "attention 1 split at batch buckets (no merge)": {"RUNTIME_ATTN_BATCH_SPLITS": "1"},
    "attention 2 splits at batch buckets": {"RUNTIME_ATTN_BATCH_SPLITS": "2"},
    "attention 32-slot blocks": {"RUNTIME_ATTN_BLOCK_N": "32"},
    "attention 16-slot blocks": {"RUNTIME_ATTN_BLOCK_N": "16"},
    "attention 1 split at batch 1 (no merge)": {"RUNTIME_ATTN_ROW_SPLITS": "1"},
    "attention 2 splits at batch 1": {"RUNTIME_ATTN_ROW_SPLITS": "2"},
    "attention 1 split at batch 1 with 4 stages": {
        "RUNTIME_ATTN_ROW_SPLITS": "1",
        "RUNTIME_ATTN_STAGES": "4",
    },
    "attention 1 split at batch 1 with 6 stages": {
        "RUNTIME_ATTN_ROW_SPLITS": "1",
        "RUNTIME_ATTN_STAGES": "6",
    },
    "attention 2 splits at batch 1 with 4 stages": {
        "RUNTIME_ATTN_ROW_SPLITS": "2",
        "RUNTIME_ATTN_STAGES": "4",
    },
    "attention loop 4 stages": {"RUNTIME_ATTN_STAGES": "4"},
    "attention batch buckets spread over splits": {"RUNTIME_ATTN_BATCH_PLAN": "spread"},
    "batch logits widened before the tail": {"RUNTIME_KERNELS_OFF": "narrow_logits"},
    "attention 1 split at batch buckets with 3 stages": {
        "RUNTIME_ATTN_BATCH_SPLITS": "1",
        "RUNTIME_ATTN_STAGES": "3",
    },
    "attention 1 split at batch buckets with 4 stages": {
        "RUNTIME_ATTN_BATCH_SPLITS": "1",
        "RUNTIME_ATTN_STAGES": "4",
    },
    "attention 2 splits at batch buckets with 4 stages": {
        "RUNTIME_ATTN_BATCH_SPLITS": "2",
        "RUNTIME_ATTN_STAGES": "4",
    },
    "batch GEMMs on the rows kernel": {"RUNTIME_BATCH_GEMM": "rows"},
    "batch GEMMs on the rows kernel (tuned)": {"RUNTIME_BATCH_GEMM": "rows", "RUNTIME_ROWS_TUNE": "1"},
    "batch MLP GEMMs on the rows kernel": {"RUNTIME_BATCH_GEMM": "rows_mlp"},
    "batch MLP GEMMs on the rows kernel (tuned)": {
        "RUNTIME_BATCH_GEMM": "rows_mlp",
        "RUNTIME_ROWS_TUNE": "1",
    },
    "batch down GEMM on the rows kernel": {"RUNTIME_BATCH_GEMM": "rows_down"},
    "batch down GEMM on the rows kernel (tuned)": {
        "RUNTIME_BATCH_GEMM": "rows_down",
        "RUNTIME_ROWS_TUNE": "1",
    },
    "batch GEMMs on cuBLAS": {"RUNTIME_BATCH_GEMM": "cublas"},
    "batch qkv norm releases late": {"RUNTIME_BATCH_NORM_RELEASE": "late"},
    "batch qkv GEMM on the rows kernel": {"RUNTIME_BATCH_GEMM": "rows_qkv"},
    "batch qkv GEMM on the rows kernel (tuned)": {"RUNTIME_BATCH_GEMM": "rows_qkv", "RUNTIME_ROWS_TUNE": "1"},
    "batch qkv and o GEMMs on the rows kernel": {"RUNTIME_BATCH_GEMM": "rows_qkv_o"},
    "batch LM head on cuBLAS": {"RUNTIME_BATCH_GEMM": "rows_qkv"},
    "batch LM head on the rows kernel 128/64": rows_blocks(
        LOGITS_LAUNCHES, "128/64/1/4/4", "rows_qkv_lm_head"
    ),
    "batch LM head on the rows kernel 64/128 8 warps": rows_blocks(
        LOGITS_LAUNCHES, "64/128/1/8/4", "rows_qkv_lm_head"
    ),
    "batch LM head on the rows kernel 32/256": rows_blocks(
        LOGITS_LAUNCHES, "32/256/1/4/4", "rows_qkv_lm_head"
    ),
    "batch LM head on the rows kernel 128/128 8 warps 3 stages": rows_blocks(
        LOGITS_LAUNCHES, "128/128/1/8/3", "rows_qkv_lm_head"
    ),
    # the batch qkv product's rows-kernel blocks (Llama, Qwen3, Gemma shapes; BLOCK_N/BLOCK_K/SPLIT/warps/stages)
    "rows qkv blocks 16 wide": {
        "RUNTIME_ROWS_BLOCKS": "linear:3072x2048=16/256/1/4/4 linear:4096x2048=16/256/1/4/4 linear:1536x1152=16/128/1/4/4"
    },
    "rows qkv blocks 2 stages": {
        "RUNTIME_ROWS_BLOCKS": "linear:3072x2048=32/256/1/4/2 linear:4096x2048=32/256/1/4/2 linear:1536x1152=16/256/1/4/2"
    },
    "rows qkv blocks 8 warps": {
        "RUNTIME_ROWS_BLOCKS": "linear:3072x2048=32/256/1/8/4 linear:4096x2048=32/256/1/8/4 linear:1536x1152=16/256/1/8/4"
    },
    # the batch o product on the rows kernel too (Llama's and Qwen3's o are both 2048 x 2048)
    "rows qkv and o with o 16 wide": {
        "RUNTIME_BATCH_GEMM": "rows_qkv_o",
        "RUNTIME_ROWS_BLOCKS": "linear:2048x2048=16/256/1/4/4",
    },
    "rows qkv and o with o 16 wide 512 deep": {
        "RUNTIME_BATCH_GEMM": "rows_qkv_o",
        "RUNTIME_ROWS_BLOCKS": "linear:2048x2048=16/512/1/4/3",
    },
    "rows qkv and o with o 16 wide split 2": {
        "RUNTIME_BATCH_GEMM": "rows_qkv_o",
        "RUNTIME_ROWS_BLOCKS": "linear:2048x2048=16/256/2/4/4",
    },
    "rows qkv and o with o 32 wide split 2": {
        "RUNTIME_BATCH_GEMM": "rows_qkv_o",
        "RUNTIME_ROWS_BLOCKS": "linear:2048x2048=32/256/2/4/4",
    },
    "rows qkv blocks split 2": {
        "RUNTIME_ROWS_BLOCKS": "linear:3072x2048=16/256/2/4/4 linear:4096x2048=16/256/2/4/4 linear:1536x1152=16/128/2/4/4"
    },
    "unfolded batch norms in the rows kernel": {
        "RUNTIME_BATCH_ROWS": "fused",
        "RUNTIME_KERNELS_OFF": "act_linear_rows,linear_rows",
    },
    "unfolded batch norms in the rows kernel (tuned)": {
        "RUNTIME_BATCH_ROWS": "fused",
        "RUNTIME_KERNELS_OFF": "act_linear_rows,linear_rows",
        "RUNTIME_ROWS_TUNE": "1",
    },
    "unfolded batch GEMMs on the rows kernel": {"RUNTIME_BATCH_ROWS": "fused"},
    "merge kernel releases early (PDL)": {"RUNTIME_MERGE_PDL": "early"},
    "activation in down's prologue": {"RUNTIME_KERNELS_OFF": "norm_linear_act"},
    "sandwich GEMVs with their no-pre blocks": {"RUNTIME_GEMV_PRE_BLOCKS": "0"},
    "norm GEMVs load their first chunk early": {"RUNTIME_GEMV_FIRST_CHUNK": "early"},
    "norm GEMVs load their first chunk late": {"RUNTIME_GEMV_FIRST_CHUNK": "late"},
    "norm GEMVs load their first tile after the row": {"RUNTIME_GEMV_FIRST_TILE": "after_row"},
    "GEMV blocks that fit one wave": {"RUNTIME_GEMV_BLOCKS": ONE_WAVE_BLOCKS},
    "residual add left to the next norm GEMV": {"RUNTIME_RESIDUAL_ADD": "none"},
    "residual add in the down GEMV only": {"RUNTIME_RESIDUAL_ADD": "down"},
    "residual add in the o GEMV only": {"RUNTIME_RESIDUAL_ADD": "o"},
    "residual add in the o and down GEMVs": {"RUNTIME_RESIDUAL_ADD": "o,down"},
    "first chunk late and residual add in the norm GEMV": {
        "RUNTIME_GEMV_FIRST_CHUNK": "late",
        "RUNTIME_RESIDUAL_ADD": "none",
    },
    "attention 16 splits at batch 1": {"RUNTIME_ATTN_ROW_SPLITS": "16"},
    # each split program asks L2 for its later cache blocks before its wait (attention_plan.l2_ahead)
    "attention asks L2 for no later blocks": {"RUNTIME_ATTN_AHEAD": "0"},
    "attention asks L2 for 1 later block": {"RUNTIME_ATTN_AHEAD": "1"},
    "attention asks L2 for 2 later blocks": {"RUNTIME_ATTN_AHEAD": "2"},
    "attention asks L2 for 3 later blocks": {"RUNTIME_ATTN_AHEAD": "3"},
    "attention asks L2 for its later blocks": {"RUNTIME_ATTN_AHEAD": "auto"},
    # batch-1 o GEMV (Llama's and Qwen3's 2048 x 2048; tuned alone: 1 row on 8 warps) and LM head
    # blocks whose grids sit on the SMs in fewer waves under PDL
    "o GEMV 1 row on 4 warps": {"RUNTIME_GEMV_BLOCKS": "linear:2048x2048=1/2048/4"},
    "o GEMV 2 rows on 4 warps": {"RUNTIME_GEMV_BLOCKS": "linear:2048x2048=2/2048/4"},
    "o GEMV 4 rows on 8 warps": {"RUNTIME_GEMV_BLOCKS": "linear:2048x2048=4/2048/8"},
    "LM head 4 rows on 4 warps": {
        "RUNTIME_GEMV_BLOCKS": "lm_head:128256x2048=4/2048/4 lm_head:151936x2048=4/2048/4"
    },
    "LM head 8 rows on 8 warps": {
        "RUNTIME_GEMV_BLOCKS": "lm_head:128256x2048=8/2048/8 lm_head:151936x2048=8/2048/8"
    },
    "o GEMV 2 rows on 4 warps and LM head 8 rows on 8 warps": {
        "RUNTIME_GEMV_BLOCKS": "linear:2048x2048=2/2048/4 lm_head:128256x2048=8/2048/8 lm_head:151936x2048=8/2048/8"
    },
}
# --settings splits its list on commas: a name holding one could never be chosen
assert not [name for name in SETTINGS if "," in name], "a SETTINGS name holds a comma"
GEMM = re.compile(r"gemm|gemv|cutlass|nvjet|sm90_xmma|splitk|_linear_", re.IGNORECASE)


def linear_bytes(model: torch.nn.Module) -> int:
    """Bytes of every matrix the step multiplies by (Linear weights, and the LM head once)."""
    seen, total = set(), 0
    for mod in model.modules():
        if isinstance(mod, torch.nn.Linear) and id(mod.weight) not in seen:
            seen.add(id(mod.weight))
            total += mod.weight.numel() * mod.weight.element_size()
    if model.lm_head is None:  # tied: the embedding matrix is the LM head
        total += model.embed.weight.numel() * model.embed.weight.element_size()
    return total


def step_ms(runner: Runner, steps: int, variant: str = "greedy", batch: int = 1, position: int = 0) -> float:
    """position: where the rows stand (it picks a spill graph, runtime/engine/spill_graphs.py)."""
    return isolated_ms(lambda: runner.step(batch, variant, position), steps)


def kernel_table(
    runner: Runner, replays: int, batch: int = 1, variant: str = "greedy", position: int = 0
) -> dict[str, tuple[float, float]]:
    """kernel name -> (us per step, launches per step), from `replays` profiled replays."""

    def replay() -> None:
        for _ in range(replays):
            runner.step(batch, variant, position)

    return {k: (t / replays, c / replays) for k, (t, c) in kernel_times(replay).items()}


def run(model_id: str, prompt: int, steps: int, profiled: int, copy_gbs: float) -> dict:
    loaded = load_model(model_id, weights="random", device="cuda", dtype="bfloat16")
    runner = Runner(loaded, capacity=prompt + 2 * (steps + profiled) + 32, max_batch=BATCH, mode="graph")
    ids = torch.randint(3, loaded.spec.vocab - 1, (prompt,)).tolist()
    runner.prefill(0, ids, 0, "greedy")
    for _ in range(8):
        runner.step(1, "greedy", prompt)
    ms = step_ms(runner, steps, position=prompt)
    table = kernel_table(runner, profiled, position=prompt)
    runner.set_row(0, BENCH_SAMPLED)  # the "topk" step: where sampling costs go
    topk_ms = step_ms(runner, steps // 2, "topk", position=prompt)
    topk_table = kernel_table(runner, profiled, 1, "topk", prompt)
    for r in range(BATCH):  # the batch bucket's step: every row from the same prompt
        runner.prefill(r, ids, 0, "greedy")
    batch_ms = step_ms(runner, steps // 2, "greedy", BATCH)
    batch_table = kernel_table(runner, profiled, BATCH)
    busy = sum(t for t, _ in table.values()) / 1e3
    gemm_us = sum(t for k, (t, _) in table.items() if GEMM.search(k))
    weights = linear_bytes(loaded.model)
    row = {
        "model": model_id,
        "step_ms": round(ms, 4),
        "busy_ms": round(busy, 4),
        "gap_ms": round(ms - busy, 4),
        "kernels_per_step": round(sum(c for _, c in table.values()), 1),
        "gemm_ms": round(gemm_us / 1e3, 4),
        "gemm_gbs": round(weights / (gemm_us * 1e3), 1) if gemm_us else None,
        "copy_gbs": round(copy_gbs, 1),
        "weight_floor_ms": round(weights / copy_gbs / 1e6, 4),
        "kernels": sorted(
            ([k, round(t, 2), round(c, 1)] for k, (t, c) in table.items()), key=lambda r: -r[1]
        ),
        "topk_step_ms": round(topk_ms, 4),
        "kernels_topk": sorted(
            ([k, round(t, 2), round(c, 1)] for k, (t, c) in topk_table.items()), key=lambda r: -r[1]
        ),
        f"step_b{BATCH}_ms": round(batch_ms, 4),
        f"kernels_b{BATCH}": sorted(
            ([k, round(t, 2), round(c, 1)] for k, (t, c) in batch_table.items()), key=lambda r: -r[1]
        ),
    }
    runner.release()
    del runner, loaded
    torch.cuda.empty_cache()
    return row


def ab(
    model_id: str,
    prompt: int,
    steps: int,
    repeat: int = 1,
    settings: list[str] | None = None,
    capacity: int | None = None,
) -> list[dict]:
    """Greedy and topk step ms under each of SETTINGS, same process, same weights; the whole list
    `repeat` times over (trial 0, 1, ...), so the spread between trials shows the noise. `capacity`
    (KV slots, default what the steps need) sets the batch-1 attention's split count."""
    need = prompt + steps + 16
    if capacity is not None and capacity < need:
        raise SystemExit(f"--capacity {capacity} is too small: prompt + steps + 16 = {need} slots")
    loaded = load_model(model_id, weights="random", device="cuda", dtype="bfloat16")
    ids = torch.randint(3, loaded.spec.vocab - 1, (prompt,)).tolist()
    rows = []
    chosen = [(name, env) for name, env in SETTINGS.items() if not settings or name in settings]
    for trial, (name, env) in ((t, item) for t in range(repeat) for item in chosen):
        os.environ.update(env)  # read while the step is captured
        # PROFILE_BLAS (not a runtime switch): torch's BLAS backend while this runner captures;
        # PROFILE_SPLITK, its bf16 reductions: "off" no split K (cuBLASLt only), "fp32" split K
        # summed in fp32, not bf16 (torch's allow_bf16_reduced_precision_reduction pair)
        blas = torch.backends.cuda.preferred_blas_library()
        matmul = torch.backends.cuda.matmul
        reduction = (
            matmul.allow_bf16_reduced_precision_reduction,
            matmul.allow_bf16_reduced_precision_reduction_split_k,
        )
        if "PROFILE_BLAS" in env:
            torch.backends.cuda.preferred_blas_library(env["PROFILE_BLAS"])
        if "PROFILE_SPLITK" in env:
            matmul.allow_bf16_reduced_precision_reduction = (False, env["PROFILE_SPLITK"] == "fp32")
        try:
            runner = Runner(
                loaded, capacity=capacity or prompt + 2 * steps + 32, max_batch=BATCH, mode="graph"
            )
        except Exception as e:  # a kernel that fails here must not cost the other settings
            print(f"{model_id} / {name}: {type(e).__name__}: {e}")
            continue
        finally:
            for key in env:
                del os.environ[key]
            torch.backends.cuda.preferred_blas_library(blas)
            matmul.allow_bf16_reduced_precision_reduction = reduction
        row = {
            "model": model_id,
            "setting": name,
            "trial": trial,
            "capture_s": round(runner.capture_s, 2),
            "mode": runner.mode,
            "gemv_blocks": runner.gemv_blocks,  # the batch-1 GEMVs' blocks and where each came from
        }
        for key, variant, params in AB_STEPS:
            runner.set_row(0, params)
            runner.prefill(0, ids, 0, variant)
            for _ in range(8):
                runner.step(1, variant, prompt)
            row[key] = round(step_ms(runner, steps, variant, position=prompt), 4)
        for r in range(BATCH):  # every row from the same prompt: the batch-16 greedy step
            runner.set_row(r, SamplingParams())
            runner.prefill(r, ids, 0, "greedy")
        row[f"greedy_b{BATCH}"] = round(step_ms(runner, steps // 2, "greedy", BATCH), 4)
        if runner.mode == "graph":  # a failed capture falls back to eager: not comparable
            rows.append(row)
        else:
            print(f"{model_id} / {name}: capture failed ({runner.capture_error})")
        runner.release()
    del loaded
    torch.cuda.empty_cache()
    return rows


def extra_settings(specs: list[str]) -> dict[str, dict[str, str]]:
    """--setting NAME::VAR=VALUE (repeatable; NAME again adds a variable to that setting) -> {NAME:
    environment}: an A/B without editing SETTINGS, e.g. an in-step search of one GEMV's blocks with
    'qkv 4/512/4::RUNTIME_GEMV_BLOCKS=norm_linear:3072x2048=4/512/4'."""
    extra: dict[str, dict[str, str]] = {}
    for spec in specs:
        name, sep, assignment = spec.partition("::")
        variable, eq, value = assignment.partition("=")
        if not (sep and eq and name and variable.startswith("RUNTIME_")) or "," in name:
            raise ValueError(f"--setting {spec!r}: write NAME::RUNTIME_VAR=VALUE (no comma in NAME)")
        if name in SETTINGS:
            raise ValueError(f"--setting {spec!r}: {name!r} is one of SETTINGS already")
        extra.setdefault(name, {})[variable] = value
    return extra


def best_setting(rows: list[dict]) -> str:
    """The setting with the least greedy + topk + batch-16 step time (mean over trials) summed over
    the models: the step kinds the goal rows time."""
    models = {r["model"] for r in rows}
    complete = {
        s
        for s in SETTINGS
        if any(r["setting"] == s for r in rows)
        and all(any(r["setting"] == s and r["model"] == m for r in rows) for m in models)
    }
    total = {}
    for s in complete:
        for m in models:
            trials = [
                r["greedy"] + r["topk"] + r[f"greedy_b{BATCH}"]
                for r in rows
                if r["setting"] == s and r["model"] == m
            ]
            total[s] = total.get(s, 0.0) + sum(trials) / len(trials)
    return min(total, key=total.get)


def tuning_rows() -> list[dict]:
    """Each GEMV shape tune() timed in this process: the chosen blocks, their time and GB/s (weight
    bytes / time, L2 flushed), and the heuristic's, for the notes."""
    rows = []
    for (op, N, K, dtype), timings in gemv_tuning.TIMINGS.items():
        best = min(timings, key=timings.get)
        heuristic = gemv_tuning.candidates(op, N, K, dtype)[0]
        weight = N * K * dtype.itemsize
        rows.append({"op": op, "N": N, "K": K, "best": best, "best_us": round(timings[best], 2),
                     "best_gbs": round(weight / timings[best] / 1e3, 1),
                     "heuristic": heuristic, "heuristic_us": round(timings.get(heuristic, float("nan")), 2)})  # fmt: skip
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompt", type=int, default=256)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--profiled", type=int, default=20)
    ap.add_argument("--model", action="append", help="repeatable; default: the three dev models")
    ap.add_argument("--ab", action="store_true", help="also compare the kernel settings (SETTINGS)")
    ap.add_argument("--no-profile", action="store_true", help="with --ab: skip the per-kernel profile")
    ap.add_argument("--repeat", type=int, default=1, help="with --ab: run the settings list this many times")
    ap.add_argument("--settings", help="with --ab: a comma-separated subset of SETTINGS' names")
    ap.add_argument(
        "--setting",
        action="append",
        default=[],
        help="with --ab: one more setting, NAME::RUNTIME_VAR=VALUE (repeatable; timed with --settings' list)",
    )
    ap.add_argument("--capacity", type=int, help="with --ab: KV cache slots (default: what the steps need)")
    ap.add_argument(
        "--blocks-from",
        action="append",
        default=[],
        help="with --ab: one more setting per tuning file (e.g. another card's in runtime/kernels/tuned/), "
        "its GEMV blocks forced through RUNTIME_GEMV_BLOCKS and its role lists through RUNTIME_RESIDUAL_ADD "
        "and RUNTIME_GEMV_EARLY (a list the file lacks: none), as a card with that file runs",
    )
    ap.add_argument(
        "--best-from", help="print the RUNTIME_KERNELS_OFF of the fastest setting in an --ab JSON"
    )
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.best_from:
        env = SETTINGS[best_setting(json.load(open(args.best_from)))]
        print(" ".join(f"{k}={v}" for k, v in env.items()) or "RUNTIME_KERNELS_OFF=")
        return
    try:
        extra = extra_settings(args.setting)
        for path in args.blocks_from:
            extra[f"blocks of {Path(path).stem}"] = {
                "RUNTIME_GEMV_BLOCKS": tuning_store.block_overrides(path),
                **tuning_store.role_switches(path),
            }
    except ValueError as e:
        ap.error(str(e))
    SETTINGS.update(extra)
    chosen = args.settings and [*args.settings.split(","), *extra]
    unknown = [name for name in chosen or [] if name not in SETTINGS]
    if unknown:  # a misspelt name would silently drop its setting from the A/B
        ap.error(f"unknown --settings {unknown}; the names are: {', '.join(SETTINGS)}")
    if args.ab:
        table = [
            r
            for m in args.model or ARCHS
            for r in ab(m, args.prompt, args.steps, args.repeat, chosen, args.capacity)
        ]
        print(f"| model | setting | trial | greedy step ms | topk step ms | topk / greedy | b{BATCH} ms | "
              f"b{BATCH} / b1 | capture s |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|---|")
        for r in table:
            b = r[f"greedy_b{BATCH}"]
            print(f"| {r['model']} | {r['setting']} | {r['trial']} | {r['greedy']:.3f} | {r['topk']:.3f} | "
                  f"{r['topk'] / r['greedy']:.3f} | {b:.3f} | {b / r['greedy']:.3f} | {r['capture_s']} |")  # fmt: skip
        if args.out:
            with open(args.out.replace(".json", "_ab.json"), "w") as f:
                json.dump(table, f, indent=2)
        if args.no_profile:
            return
    copy_gbs = copy_bandwidth_gbs(torch.device("cuda"))
    rows = [run(m, args.prompt, args.steps, args.profiled, copy_gbs) for m in args.model or ARCHS]
    tuned = tuning_rows()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=2)
        with open(args.out.replace(".json", "_gemv.json"), "w") as f:
            json.dump(tuned, f, indent=2, default=str)
    print(
        "\n| op | N | K | tuned blocks | us | GB/s | heuristic blocks | us |\n|---|---|---|---|---|---|---|---|"
    )
    for t in tuned:
        print(f"| {t['op']} | {t['N']} | {t['K']} | {t['best']} | {t['best_us']} | {t['best_gbs']} | "
              f"{t['heuristic']} | {t['heuristic_us']} |")  # fmt: skip
    for r in rows:
        labels = (
            ("kernels", "batch 1"),
            ("kernels_topk", "batch 1, topk"),
            (f"kernels_b{BATCH}", f"batch {BATCH}"),
        )
        for key, label in labels:
            print(f"\n### {r['model']}, {label}: top kernels (us per step, launches per step)")
            print("| kernel | us | n |\n|---|---|---|")
            for name, t, c in r[key][:16]:
                print(f"| {name[:90]} | {t:.1f} | {c:g} |")
            print(f"| all {sum(c for _, _, c in r[key]):g} kernels | {sum(t for _, t, _ in r[key]):.1f} | |")
    print(
        "\n| model | step ms | busy ms | gap ms | kernels/step | GEMM ms | GEMM GB/s | copy GB/s | weight floor ms "
        f"| b{BATCH} step ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['step_ms']:.3f} | {r['busy_ms']:.3f} | {r['gap_ms']:.3f} | "
              f"{r['kernels_per_step']:g} | {r['gemm_ms']:.3f} | {r['gemm_gbs']} | {r['copy_gbs']} | "
              f"{r['weight_floor_ms']:.3f} | {r[f'step_b{BATCH}_ms']:.3f} |")  # fmt: skip


if __name__ == "__main__":
    main()
