"""The K best logits of each row, for the sampler's candidate set: plain-torch reference and
Triton kernels that select by counting (a radix select) instead of sorting.

top_candidates(x (B, V) float32, K) -> (values (B, K) descending, ids (B, K) int64), the set
torch.topk returns; ties are broken towards the smaller id (torch.topk leaves that order open).
At batch 1, torch.topk over a 128k-262k row runs on few thread blocks and dominated the sampled
step's overhead. Here each value becomes one int64 key: its float bits made order-preserving in
the high word (the "value word"), the complement of its id in the low word, so keys are unique
within a row and a descending order of keys is by value, then by smaller id:
  stage 1, grid (B, V / CHUNK): the keys of CHUNK logits; select the chunk's K best and store
    them as one list of K;
  merge, grid (B, groups): only while more than GROUP keys remain (K = 128: V > 32768): select
    the K best of each group of GROUP / K lists;
  last, grid (B,): select the K best of the <= GROUP survivors, then order only those K: rank
    each by counting the keys above it (K x K compares; a K over 128 sorts its K keys).
The row's K best are among the K best of each chunk (a key that K keys of its chunk beat is beaten
by K keys of the row), and likewise of each group of lists, so the stages lose nothing.

Every stage selects with radix_select.select_largest (exact: see there); it keeps id order, so
the lists go out in id order chunk by chunk, and ranking the last stage's K by counting gives the
order of a full sort. Padded slots (past V in the last chunk, past the lists in a masked load) hold the lowest key
(value word -2**31, low word 0) and lie after every real key, as key order has them; a row has
V >= K real keys, so the last stage never takes one. The last stage hands the K keys between its
threads through a (B, 2, K) scratch in global memory, ordered by a CTA barrier (tl.debug_barrier).

Cost on an H100, batch 1, K = 128: a PREDICTION from the sm_90 SASS (compiled on the CPU, never
run here) and a rough model, not a measurement. A pass is ~620 instructions a thread for 16 keys a
thread (the histogram's 6 warp ballots and a popcount per key; 3 barriers; the 32-bin reductions
stay inside a warp): 4096 keys in 8 warps ~1 us, 8192 keys in 16 warps ~1.7 us.
  stage 1 (4096 keys): loads and keys ~1.5 us, 4-5 passes ~4-5 us (7 at worst, all-equal rows),
    scan and scatter ~0.7 us: ~6-7 us, where the tl.sort of 4096 took ~20-30 us;
  merge: no launch up to 262144 logits if GROUP = 8192 keys (64 lists of 128);
  last (4096-8192 keys): load ~1 us, 5 passes ~5-9 us, scan and scatter ~0.7 us, ranking and
    the scratch round trips ~1 us, the sampling math ~1.5 us: ~9-13 us, where a merge round of
    1024-key sorts and the last sort of <= 1024 took ~12-20 us of sorting.
About 15-20 us of kernels in two launches (was three), against ~75 us for the sampler before.
GROUP = 1024 instead gives three launches whose last two select from <= 1024 keys (~4 and
~6 us): the same total by this model. Measured on the H100 (batch-1 topk step, same process):
with 8192 the last stage alone took 27 us of Gemma's step (one program over 8192 keys), and
1024 took 8-10 us off Gemma's topk step and 1-4 us off Llama's, so GROUP is 1024.

The sampler's "topk" variant runs on these stages: topk_sample.py.
"""

from __future__ import annotations

import os

import torch

from runtime.kernels._triton import cdiv, jit, next_pow2, pdl, pdl_wait, tl
from runtime.kernels.radix_select import select_largest
from runtime.kernels.sample_parts import chunk_flag, gumbel, penalised, store_first_best
from runtime.kernels.switches import env_choice, env_power_of_two, power_of_two

CHUNK = 4096  # logits per stage-1 program
GROUP = 1024  # keys a merge or last-stage program selects from (8 lists of K = 128)
# the most keys one program selects from: select_largest packs two counts < 2**16 in one int32
MAX_KEYS = 2**15
# constexprs, so kernels may read them: the low word of a key holds _LOW - id; _LOWEST is the key
# of a padded slot, which sorts after every real key; _PAD_WORD is its value word
_LOW = tl.constexpr(0xFFFFFFFF) if tl is not None else 0xFFFFFFFF
_LOWEST = tl.constexpr(-(2**63)) if tl is not None else -(2**63)
_PAD_WORD = tl.constexpr(-(2**31)) if tl is not None else -(2**31)


def top_candidates_ref(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x (B, V) -> (values (B, K) descending, ids (B, K) int64)."""
    return x.topk(k, dim=-1)


@jit
def _value_word(x):
    """fp32 -> int32 whose signed order is the float order (the high word of a key)."""
    bits = x.to(tl.int32, bitcast=True)
    return bits ^ ((bits >> 31) & 0x7FFFFFFF)  # negative floats: flip the magnitude bits


@jit
def _chunk_kernel(
    x_ptr, seen_ptr, penalty_ptr, keys_ptr, flags_ptr, vocab, x_stride, seen_stride, parts,
    plain_ptr, temp_ptr, top_k_ptr, top_p_ptr, seed_ptr, pos_ptr,
    K: tl.constexpr, CHUNK: tl.constexpr, PENALTY: tl.constexpr, CHECK: tl.constexpr, PDL: tl.constexpr,
    SKIP: tl.constexpr = False, PLAIN: tl.constexpr = False, STEP: tl.constexpr = 0,
):  # fmt: skip
    # grid (B, parts): program (b, p) keeps the K best keys of logits [p * CHUNK, (p + 1) * CHUNK),
    # after the repetition penalty of row b when PENALTY; they go out in id order. PLAIN: a row
    # that samples plain temperature (top-k off, top-p 1) keeps every token, so the sampler picks
    # from the whole row: plain (B, parts, 2) takes the chunk's first best of scaled + noise
    # (sample_parts.store_first_best), its noise at the row's position + STEP
    pdl_wait(PDL)
    row, part = tl.program_id(0).to(tl.int64), tl.program_id(1)
    cols = (part * CHUNK + tl.arange(0, CHUNK)).to(tl.int64)
    live = cols < vocab
    x = tl.load(x_ptr + row * x_stride + cols, mask=live, other=0.0).to(tl.float32)
    if CHECK:  # flags (B, parts) int32 of the raw logits (sample_parts.chunk_flag)
        tl.store(flags_ptr + row * parts + part, chunk_flag(x, live))
    if PENALTY:
        x = penalised(x, seen_ptr, penalty_ptr, row, seen_stride, cols, live)
    if PLAIN:
        if (tl.load(top_k_ptr + row) == 0) & (tl.load(top_p_ptr + row) >= 1):
            scaled = x / tl.maximum(tl.load(temp_ptr + row), 1e-5)
            noise = gumbel(tl.load(seed_ptr + row), tl.load(pos_ptr + row) + STEP, cols)
            noisy = tl.where(live, scaled + noise, float("-inf"))
            store_first_best(plain_ptr + (row * parts + part) * 2, noisy, cols, live)
    word = tl.where(live, _value_word(x), _PAD_WORD)
    keys = (word.to(tl.int64) << 32) + tl.where(live, _LOW - cols, 0)  # padded: _LOWEST
    take, slot = select_largest(word, K, SKIP)
    tl.store(keys_ptr + (row * parts + part) * K + slot, keys, mask=take)


@jit
def _group_kernel(
    keys_ptr,
    out_ptr,
    n_keys,
    K: tl.constexpr,
    BLOCK: tl.constexpr,
    PDL: tl.constexpr,
    SKIP: tl.constexpr = False,
):
    # grid (B, groups): program (b, g) keeps the K best of keys [g * BLOCK, (g + 1) * BLOCK) of
    # row b (BLOCK / K whole lists, in id order; so is what it writes)
    pdl_wait(PDL)
    row, group = tl.program_id(0).to(tl.int64), tl.program_id(1)
    at = group * BLOCK + tl.arange(0, BLOCK)
    keys = tl.load(keys_ptr + row * n_keys + at, mask=at < n_keys, other=_LOWEST)
    take, slot = select_largest((keys >> 32).to(tl.int32), K, SKIP)
    tl.store(out_ptr + (row * tl.num_programs(1) + group) * K + slot, keys, mask=take)


@jit
def _value(keys):
    """Keys -> their fp32 values."""
    high = (keys >> 32).to(tl.int32)
    bits = high ^ ((high >> 31) & 0x7FFFFFFF)  # the flip of _value_word is its own inverse
    return bits.to(tl.float32, bitcast=True)


@jit
def _id(keys):
    """Keys -> their int64 ids."""
    return _LOW - (keys & _LOW)


@jit
def _best_sorted(
    keys_ptr, best_ptr, row, n_keys, K: tl.constexpr, BLOCK: tl.constexpr, SKIP: tl.constexpr = False
):
    """The row's K best of its n_keys survivors -> (ranked, keys): `ranked` points at them, best
    first, in the row's part of best_ptr, where any thread of the program may read one; keys (K,)
    the same keys. best_ptr: a (B, 2, K) int64 scratch that carries keys between the threads."""
    j = tl.arange(0, BLOCK)
    keys = tl.load(keys_ptr + row * n_keys + j, mask=j < n_keys, other=_LOWEST)
    take, slot = select_largest((keys >> 32).to(tl.int32), K, SKIP)
    chosen = best_ptr + row * 2 * K  # the K best in id order; then, at `ranked`, best first
    tl.store(chosen + slot, keys, mask=take)
    tl.debug_barrier()  # threads read back what others stored (a CTA barrier orders memory)
    r = tl.arange(0, K)
    keys = tl.load(chosen + r)
    ranked = chosen + K
    if K <= 128:  # rank by counting: the K keys are unique, so the ranks permute 0..K-1
        tl.store(ranked + tl.sum((keys[None, :] > keys[:, None]).to(tl.int32), axis=1), keys)
    else:  # K x K compares would not fit in registers: sort the K keys
        tl.store(ranked + r, tl.sort(keys, descending=True))
    tl.debug_barrier()
    return ranked, tl.load(ranked + r)


@jit
def _merge_kernel(
    keys_ptr, best_ptr, vals_ptr, ids_ptr, n_keys, K: tl.constexpr, BLOCK: tl.constexpr, PDL: tl.constexpr,
    SKIP: tl.constexpr = False,
):  # fmt: skip
    # grid (B,): the K best of the row's survivors
    pdl_wait(PDL)
    row = tl.program_id(0).to(tl.int64)
    _, keys = _best_sorted(keys_ptr, best_ptr, row, n_keys, K, BLOCK, SKIP)
    j = tl.arange(0, K)
    tl.store(vals_ptr + row * K + j, _value(keys))
    tl.store(ids_ptr + row * K + j, _id(keys))


def skip_shared_digits() -> bool:
    """RUNTIME_TOPK_SKIP=1 (an A/B knob, off by default until timed): every stage's radix select
    starts below the digits its K best share (radix_select.shared_digits) instead of at the top digit."""
    return env_choice("RUNTIME_TOPK_SKIP", ("0", "1"), "0") == "1"


STAGES = ("chunk", "group", "last")  # stage 1, the merge rounds, the last stage (topk_sample.py's too)


def _warps(n_keys: int, stage: str) -> int:
    """Warps for a `stage` program that selects from n_keys keys: 16 keys a thread, 4 to 16 warps,
    or what RUNTIME_TOPK_WARPS gives the stage (stage_warps)."""
    return stage_warps().get(stage) or min(16, max(4, next_pow2(n_keys) // 512))


def stage_warps() -> dict[str, int]:
    """RUNTIME_TOPK_WARPS (an A/B knob, unset by default): "chunk=4,last=8" sets the warps of a
    stage's programs (a power of two from 1 to 32) instead of the count its keys give."""
    raw = (os.environ.get("RUNTIME_TOPK_WARPS") or "").strip()
    chosen = {}
    for entry in filter(None, (e.strip() for e in raw.split(","))):
        stage, _, count = entry.partition("=")
        warps = power_of_two(count, 1, 32)
        if stage not in STAGES or warps is None:
            raise ValueError(
                f"RUNTIME_TOPK_WARPS={raw!r}: write stage=warps entries, stage one of {', '.join(STAGES)}, "
                "warps a power of two from 1 to 32"
            )
        chosen[stage] = warps
    return chosen


def chunk_size(vocab: int, k: int) -> int:
    """Logits a stage-1 program takes; RUNTIME_TOPK_CHUNK (a power of two) A/Bs CHUNK."""
    return min(max(k, env_power_of_two("RUNTIME_TOPK_CHUNK", CHUNK, 16, MAX_KEYS)), max(k, next_pow2(vocab)))


def _candidate_keys(
    x: torch.Tensor, k: int, seen=None, penalty=None, check: bool = False, plain: tuple | None = None
) -> tuple[torch.Tensor, int, torch.Tensor | None]:
    """Stage 1 and the merge rounds over x (B, V) float32 -> (keys (B, n), n, flags): at most
    max(GROUP, 2 k) keys per row, in lists of k, which hold the row's k best. check: flags
    (B, V / chunk) int32, stage 1's finite check of its raw logits (_chunk_kernel); else None.
    plain: (out (B, V / chunk, 2) int64, temperature, top_k, top_p, seed, positions, step), the
    plain-temperature rows' chunk picks (_chunk_kernel's PLAIN)."""
    B, vocab = x.shape
    chunk = chunk_size(vocab, k)
    lists = cdiv(vocab, chunk)
    keys = torch.empty((B, lists * k), dtype=torch.int64, device=x.device)
    flags = torch.empty((B, lists), dtype=torch.int32, device=x.device) if check else None
    with_penalty = seen is not None
    picks = plain[:6] if plain is not None else (x,) * 6  # pointers PLAIN never touches get x
    _chunk_kernel[(B, lists)](
        x, seen if with_penalty else x, penalty if with_penalty else x, keys, flags if check else x,
        vocab, x.stride(0), seen.stride(0) if with_penalty else 0, lists, *picks, K=k, CHUNK=chunk,
        PENALTY=with_penalty, CHECK=check, SKIP=skip_shared_digits(), PLAIN=plain is not None,
        STEP=plain[6] if plain is not None else 0, num_warps=_warps(chunk, "chunk"), **pdl(x.device),
    )  # fmt: skip
    # graph: grids, buffers and rounds follow from shapes only; pass counts stay on the device
    # lists a merge program takes (a power of two); RUNTIME_TOPK_GROUP (a power of two) A/Bs GROUP
    per_group = max(2, env_power_of_two("RUNTIME_TOPK_GROUP", GROUP, 2, MAX_KEYS) // k)
    while lists > per_group:
        groups = cdiv(lists, per_group)
        merged = torch.empty((B, groups * k), dtype=torch.int64, device=x.device)
        _group_kernel[(B, groups)](
            keys,
            merged,
            lists * k,
            K=k,
            BLOCK=per_group * k,
            SKIP=skip_shared_digits(),
            num_warps=_warps(per_group * k, "group"),
            **pdl(x.device),
        )
        keys, lists = merged, groups
    return keys, lists * k, flags


def supported(x: torch.Tensor, k: int) -> bool:
    """Whether the kernels take (x, k): float rows (bf16 and fp16 widened to float32 as they load)
    and a power-of-two k within a chunk and the row."""
    floats = (torch.float32, torch.bfloat16, torch.float16)
    return x.dtype in floats and k <= CHUNK and k == next_pow2(k) and x.shape[-1] >= k


def top_candidates_triton(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as top_candidates_ref for float32 x and a power-of-two k <= CHUNK (other
    cases take the reference). The decode step samples through sample_topk_triton; this entry
    writes the candidates out, so tests can check the shared stages (keys, merge rounds) exactly."""
    if not supported(x, k) or x.dtype != torch.float32:  # the reference answers in x's dtype
        return top_candidates_ref(x, k)
    x = x if x.stride(-1) == 1 else x.contiguous()
    B = x.shape[0]
    keys, n_keys, _ = _candidate_keys(x, k)
    best = torch.empty((B, 2, k), dtype=torch.int64, device=x.device)  # scratch of the last stage
    values = torch.empty((B, k), dtype=torch.float32, device=x.device)
    ids = torch.empty((B, k), dtype=torch.int64, device=x.device)
    _merge_kernel[(B,)](
        keys,
        best,
        values,
        ids,
        n_keys,
        K=k,
        BLOCK=next_pow2(n_keys),
        SKIP=skip_shared_digits(),
        num_warps=_warps(n_keys, "last"),
        **pdl(x.device),
    )
    return values, ids
