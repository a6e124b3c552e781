"""The K best logits of each row, for the sampler's candidate set: plain-torch reference and
Triton kernels that sort in rounds.

top_candidates(x (B, V) float32, K) -> (values (B, K) descending, ids (B, K) int64), the set
torch.topk returns; ties are broken towards the smaller id (torch.topk leaves that order open).
At batch 1, torch.topk over a 128k-262k row runs on few thread blocks and dominated the sampled
step's overhead. Here each value becomes one int64 sort key (its float bits made order-preserving
in the high word, the complement of its id in the low word), so a plain descending sort of keys
orders by value, then by smaller id:
  stage 1, grid (B, parts): sort a CHUNK of keys in registers and keep its K best;
  merge, grid (B, lists / GROUP): while more than GROUP lists of K remain, sort each GROUP of them
    and keep the K best (one round for a 128k-262k vocabulary);
  last, grid (B,): sort the last <= GROUP x K survivors and keep the K best.
The global K best are among the per-chunk K best, so the result is exact. Sorting all of stage 1's
survivors in one program instead (4k-8k keys) cost more than torch.topk on the H100.

sample_topk_triton is the sampler's "topk" variant on the same stages: stage 1 first applies
the repetition penalty (the seen mask and the row's penalty), and the last stage, instead of writing the
K candidates, picks the token from them in registers (temperature, top-k, top-p, Gumbel noise,
the greedy pick for temperature 0): three launches for what the reference does in about forty
small ones. Contract and reference: runtime/engine/sampler.py (sample with candidates=K).
"""

from __future__ import annotations

import torch

from runtime.kernels._triton import cdiv, jit, next_pow2, tl

CHUNK = 4096  # keys per stage-1 program (sorted in registers)
GROUP = 8  # lists of K keys a merge program sorts together (1024 keys for K = 128)
# constexprs, so kernels may read them: the low word of a key holds _LOW - id; _LOWEST is the key
# of a padded slot, which sorts after every real key
_LOW = tl.constexpr(0xFFFFFFFF) if tl is not None else 0xFFFFFFFF
_LOWEST = tl.constexpr(-(2**63)) if tl is not None else -(2**63)


def top_candidates_ref(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x (B, V) -> (values (B, K) descending, ids (B, K) int64)."""
    return x.topk(k, dim=-1)


@jit
def _to_key(x, ids):
    """fp32 values and int64 ids -> int64 keys in (value, -id) order."""
    bits = x.to(tl.int32, bitcast=True)
    ordered = bits ^ ((bits >> 31) & 0x7FFFFFFF)  # negative floats: flip the magnitude bits
    return (ordered.to(tl.int64) << 32) + (_LOW - ids)


@jit
def _chunk_kernel(
    x_ptr, seen_ptr, penalty_ptr, keys_ptr, vocab, x_stride, seen_stride, parts,
    K: tl.constexpr, CHUNK: tl.constexpr, PENALTY: tl.constexpr,
):  # fmt: skip
    # grid (B, parts): program (b, p) keeps the K best keys of logits [p * CHUNK, (p + 1) * CHUNK),
    # after the repetition penalty of row b when PENALTY
    row, part = tl.program_id(0).to(tl.int64), tl.program_id(1)
    cols = (part * CHUNK + tl.arange(0, CHUNK)).to(tl.int64)
    live = cols < vocab
    x = tl.load(x_ptr + row * x_stride + cols, mask=live, other=0.0).to(tl.float32)
    if PENALTY:  # as apply_repetition_penalty: seen logits divided (if > 0) or multiplied
        seen = tl.load(seen_ptr + row * seen_stride + cols, mask=live, other=0) != 0
        p = tl.load(penalty_ptr + row)
        x = tl.where(seen, tl.where(x > 0, x / p, x * p), x)
    keys = tl.where(live, _to_key(x, cols), _LOWEST)
    keys = tl.sort(keys, descending=True)
    j = tl.arange(0, CHUNK)
    tl.store(keys_ptr + (row * parts + part) * K + j, keys, mask=j < K)


@jit
def _sorted_candidates(keys_ptr, row, n_keys, BLOCK: tl.constexpr):
    """The row's n_keys survivors, sorted -> (values, ids), (BLOCK,) each, best first."""
    j = tl.arange(0, BLOCK)
    keys = tl.load(keys_ptr + row * n_keys + j, mask=j < n_keys, other=_LOWEST)
    keys = tl.sort(keys, descending=True)
    high = (keys >> 32).to(tl.int32)
    bits = high ^ ((high >> 31) & 0x7FFFFFFF)  # the flip is its own inverse
    return bits.to(tl.float32, bitcast=True), _LOW - (keys & _LOW)


@jit
def _group_kernel(keys_ptr, out_ptr, n_keys, K: tl.constexpr, GROUP: tl.constexpr):
    # grid (B, groups): program (b, g) keeps the K best of lists [g * GROUP, (g + 1) * GROUP) of row b
    row, group = tl.program_id(0).to(tl.int64), tl.program_id(1)
    j = tl.arange(0, GROUP * K)
    at = group * GROUP * K + j
    keys = tl.load(keys_ptr + row * n_keys + at, mask=at < n_keys, other=_LOWEST)
    keys = tl.sort(keys, descending=True)
    groups = tl.num_programs(1)
    tl.store(out_ptr + (row * groups + group) * K + j, keys, mask=j < K)


@jit
def _merge_kernel(keys_ptr, vals_ptr, ids_ptr, n_keys, K: tl.constexpr, BLOCK: tl.constexpr):
    # grid (B,): the K best of the row's survivors
    row = tl.program_id(0).to(tl.int64)
    values, ids = _sorted_candidates(keys_ptr, row, n_keys, BLOCK)
    j = tl.arange(0, BLOCK)
    tl.store(vals_ptr + row * K + j, values, mask=j < K)
    tl.store(ids_ptr + row * K + j, ids, mask=j < K)


@jit
def _mix(h):
    """sampler._mix: a 32-bit avalanche in int64 arithmetic."""
    h = h ^ (h >> 16)
    h = (h * 0x7FEB352D) & _LOW
    h = h ^ (h >> 15)
    h = (h * 0x2C1B3C6D) & _LOW
    return h ^ (h >> 16)


@jit
def _gumbel(seed, position, ids):
    """sampler.gumbel_noise for one row: int64 seed and position, int64 ids -> fp32 noise."""
    row = _mix((seed * 0x27D4EB2F + position * 0x165667B1) & _LOW)
    h = _mix((ids * 0x3C6EF372 + row) & _LOW)
    h = _mix(h ^ row)
    u = ((h >> 8).to(tl.float32) + 0.5) * (1.0 / 16777216.0)
    return -tl.log(-tl.log(u))


@jit
def _sample_kernel(
    keys_ptr, out_ptr, temp_ptr, top_k_ptr, top_p_ptr, seed_ptr, pos_ptr, n_keys,
    K: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    # grid (B,): sampler.sample's steps after the candidate set, on the row's K best (penalised)
    row = tl.program_id(0).to(tl.int64)
    values, ids = _sorted_candidates(keys_ptr, row, n_keys, BLOCK)
    rank = tl.arange(0, BLOCK)
    temperature = tl.load(temp_ptr + row)
    scaled = values / tl.maximum(temperature, 1e-5)
    # top_k_top_p_cutoff: keep the n best, n = min(k, smallest prefix whose mass reaches p)
    top_k = tl.load(top_k_ptr + row)
    k = tl.where(top_k > 0, tl.minimum(top_k, K), K)
    in_k = rank < k
    e = tl.where(in_k, tl.exp(scaled - tl.max(tl.where(in_k, scaled, float("-inf")), axis=0)), 0.0)
    probs = e / tl.sum(e, axis=0)
    mass_before = tl.cumsum(probs, axis=0) - probs
    n_keep = tl.sum((in_k & (mass_before < tl.load(top_p_ptr + row))).to(tl.int32), axis=0)
    n_keep = tl.maximum(tl.minimum(n_keep, k), 1)
    cutoff = tl.max(tl.where(rank == n_keep - 1, scaled, float("-inf")), axis=0)
    noise = _gumbel(tl.load(seed_ptr + row), tl.load(pos_ptr + row), ids)
    kept = tl.where((rank < K) & (scaled >= cutoff), scaled + noise, float("-inf"))
    best = tl.max(kept, axis=0)
    choice = tl.min(tl.where(kept == best, rank, BLOCK), axis=0)
    sampled = tl.sum(tl.where(rank == choice, ids, 0), axis=0)
    greedy = tl.sum(tl.where(rank == 0, ids, 0), axis=0)  # the penalised argmax, first index
    tl.store(out_ptr + row, tl.where(temperature > 0, sampled, greedy))


def _candidate_keys(x: torch.Tensor, k: int, seen=None, penalty=None) -> tuple[torch.Tensor, int]:
    """Stage 1 and the merge rounds over x (B, V) float32 -> (keys (B, n), n): at most GROUP
    lists of k keys per row, which hold the row's k best."""
    B, vocab = x.shape
    chunk = min(CHUNK, max(k, next_pow2(vocab)))
    lists = cdiv(vocab, chunk)
    keys = torch.empty((B, lists * k), dtype=torch.int64, device=x.device)
    with_penalty = seen is not None
    _chunk_kernel[(B, lists)](
        x, seen if with_penalty else x, penalty if with_penalty else x, keys, vocab, x.stride(0),
        seen.stride(0) if with_penalty else 0, lists, K=k, CHUNK=chunk, PENALTY=with_penalty, num_warps=8,
    )  # fmt: skip
    while lists > GROUP:
        groups = cdiv(lists, GROUP)
        merged = torch.empty((B, groups * k), dtype=torch.int64, device=x.device)
        _group_kernel[(B, groups)](keys, merged, lists * k, K=k, GROUP=GROUP, num_warps=8)
        keys, lists = merged, groups
    return keys, lists * k


def _last_warps(n_keys: int) -> int:
    return 8 if next_pow2(n_keys) >= 1024 else 4


def supported(x: torch.Tensor, k: int) -> bool:
    """Whether the kernels take (x, k): float32 rows and a power-of-two k within a chunk and the row."""
    return x.dtype == torch.float32 and k <= CHUNK and k == next_pow2(k) and x.shape[-1] >= k


def top_candidates_triton(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as top_candidates_ref for float32 x and a power-of-two k <= CHUNK (other
    cases take the reference). The decode step samples through sample_topk_triton; this entry
    writes the candidates out, so tests can check the shared stages (keys, merge rounds) exactly."""
    if not supported(x, k):
        return top_candidates_ref(x, k)
    x = x if x.stride(-1) == 1 else x.contiguous()
    keys, n_keys = _candidate_keys(x, k)
    values = torch.empty((x.shape[0], k), dtype=torch.float32, device=x.device)
    ids = torch.empty((x.shape[0], k), dtype=torch.int64, device=x.device)
    _merge_kernel[(x.shape[0],)](
        keys, values, ids, n_keys, K=k, BLOCK=next_pow2(n_keys), num_warps=_last_warps(n_keys)
    )
    return values, ids


def sample_topk_triton(
    logits: torch.Tensor,
    positions: torch.Tensor,
    temperature: torch.Tensor,
    top_k: torch.Tensor,
    top_p: torch.Tensor,
    repetition_penalty: torch.Tensor,
    seed: torch.Tensor,
    seen: torch.Tensor,
    candidates: int,
) -> torch.Tensor:
    """sampler.sample(..., candidates=K) in three launches (two for up to GROUP chunks), for float32 logits (B, V) with unit
    stride and K as `supported` requires; per-row settings (B,). -> next tokens (B,) int64."""
    B = logits.shape[0]
    keys, n_keys = _candidate_keys(logits, candidates, seen, repetition_penalty)
    out = torch.empty(B, dtype=torch.int64, device=logits.device)
    _sample_kernel[(B,)](
        keys, out, temperature, top_k, top_p, seed, positions, n_keys,
        K=candidates, BLOCK=next_pow2(n_keys), num_warps=_last_warps(n_keys),
    )  # fmt: skip
    return out
