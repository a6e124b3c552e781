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

Why _select, the selection of every stage, is exact. It takes N >= K keys laid out in increasing-id
order and counts on their value words read as unsigned (u): a radix select from the top bit, 5
bits a pass (tl.histogram pads its bins to the 32 lanes of a warp, so 5 bits cost what 4 do). It
carries scalars only: `need`, the keys still to take, and the bits of the need-th best key
resolved so far, which define the bucket (the keys that agree with it on those bits). A pass takes
the histogram of the next digit over the bucket and finds the digit d of the need-th best key;
bucket keys with a digit above d beat it on the resolved bits, so they are taken (need drops by
their count), those below are dropped, those of digit d stay. Invariant: every taken key beats
every bucket key, every bucket key beats every dropped one, 1 <= need <= |bucket|. The loop ends
when the whole bucket is needed (|bucket| == need: usually after 4-5 passes, once the K-th key is
alone in its bucket) or after bit 0 (7 passes: the bucket keys then have equal value words, so
key order among them is id order, smaller first). The K best are then the keys above the bucket
and the first `need` bucket keys by position, which is id order because every stage keeps it:
stage 1 reads ids in order, its compaction keeps the order, and lists go out chunk by chunk.
One scan (the taken and the bucket flags packed in one int32) gives each chosen key its slot in
0..K-1 and a masked scatter store writes them, still in id order. So every stage yields exactly
the K largest keys, and ranking those K by counting gives the order of a full sort.
Padded slots (past V in the last chunk, past the lists in a masked load) hold the lowest key
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

import torch

from runtime.kernels._triton import cdiv, jit, next_pow2, pdl, pdl_wait, tl
from runtime.kernels.switches import env_choice, env_power_of_two

CHUNK = 4096  # logits per stage-1 program
GROUP = 1024  # keys a merge or last-stage program selects from (8 lists of K = 128)
MAX_KEYS = 2**15  # the most keys one program selects from: _select packs two counts < 2**16 in one int32
# constexprs, so kernels may read them: the low word of a key holds _LOW - id; _LOWEST is the key
# of a padded slot, which sorts after every real key; _PAD_WORD is its value word
_LOW = tl.constexpr(0xFFFFFFFF) if tl is not None else 0xFFFFFFFF
_LOWEST = tl.constexpr(-(2**63)) if tl is not None else -(2**63)
_PAD_WORD = tl.constexpr(-(2**31)) if tl is not None else -(2**31)
# a radix pass reads a 5-bit digit (32 bins), from bit 27 (the top digit) down
_BITS = tl.constexpr(5) if tl is not None else 5
_BINS = tl.constexpr(32) if tl is not None else 32
_FIRST = tl.constexpr(27) if tl is not None else 27


def top_candidates_ref(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x (B, V) -> (values (B, K) descending, ids (B, K) int64)."""
    return x.topk(k, dim=-1)


@jit
def _value_word(x):
    """fp32 -> int32 whose signed order is the float order (the high word of a key)."""
    bits = x.to(tl.int32, bitcast=True)
    return bits ^ ((bits >> 31) & 0x7FFFFFFF)  # negative floats: flip the magnitude bits


@jit
def _shared_digits(u, K: tl.constexpr):
    """u (N,) uint32 keys' value words in unsigned order, N a multiple of K -> (high, prefix, size,
    shift): a start for _select's loop that skips the digits every one of the K best shares. The
    largest word and a bound the K best all reach (the least of the maxima of K groups of N / K
    keys: each group's maximum reaches it, so K keys do) agree on their top bits, and so does every
    word between them: the K best have those bits, no key is above them (the largest has them),
    and the passes over those digits would keep the whole bucket. The loop starts at the digit
    holding the highest bit where the two differ; `size` counts the keys with the shared bits."""
    groups = tl.reshape(u, (K, u.shape[0] // K))
    top = tl.max(u, axis=0)
    bound = tl.min(tl.max(groups, axis=1), axis=0)
    differ = top ^ bound
    # the digits below the top one start at 22, 17, 12, 7, 2, then 0 (the last pass): the loop may
    # start at each whose bits above it agree; the deepest such start wins
    shift = tl.full((), _FIRST, tl.int32)
    for below in tl.static_range(_FIRST - _BITS, -1, -_BITS):
        shift = tl.where((differ >> (below + _BITS)) == 0, below, shift)
    shift = tl.where((differ >> _BITS) == 0, 0, shift)
    ones = tl.full((), 0xFFFFFFFF, tl.uint32)
    high = tl.where(
        shift == _FIRST, tl.full((), 0, tl.uint32), ones << tl.minimum(shift + _BITS, 31).to(tl.uint32)
    )
    prefix = top & high
    size = tl.sum(((u & high) == prefix).to(tl.int32), axis=0)
    return high, prefix, size, shift


@jit
def _select(word, K: tl.constexpr, SKIP: tl.constexpr = False):
    """word (N,) int32: the value words of N >= K keys in increasing-id order (padded slots
    last) -> (take (N,) bool, marking the K largest keys; slot (N,) int32, each taken key's place
    in 0..K-1, in id order). A radix select; the module docstring says why it is exact. SKIP
    (RUNTIME_TOPK_SKIP, an A/B): start below the digits the K best share (_shared_digits)."""
    u = word.to(tl.uint32, bitcast=True) ^ 0x80000000  # unsigned order = the value order
    bins = tl.arange(0, _BINS)
    # scalars carried through the loop: the bits resolved so far are those of `high` (from the
    # top down); the bucket is the keys with u & high == prefix (the need-th best key's bits)
    need = tl.full((), K, tl.int32)
    if SKIP:
        high, prefix, size, shift = _shared_digits(u, K)
    else:
        high = tl.full((), 0, tl.uint32)
        prefix = tl.full((), 0, tl.uint32)
        size = tl.full((), word.shape[0], tl.int32)
        shift = tl.full((), _FIRST, tl.int32)  # the digit's lowest bit: 27, 22, 17, 12, 7, 2, then 0
    while (size > need) & (shift >= 0):
        digit = ((u >> shift.to(tl.uint32)) & (_BINS - 1)).to(tl.int32)
        count = tl.histogram(digit, _BINS, mask=(u & high) == prefix)  # (32,) the bucket's digits
        at_least = tl.cumsum(count, axis=0, reverse=True)  # bucket keys with a digit >= each bin
        d = tl.sum((at_least >= need).to(tl.int32), axis=0) - 1  # the need-th best key's digit
        need -= tl.sum(tl.where(bins > d, count, 0), axis=0)
        size = tl.sum(tl.where(bins == d, count, 0), axis=0)
        # the last pass re-reads bits 2-4, which the bucket shares (harmless), to end on bit 0
        prefix |= d.to(tl.uint32) << shift.to(tl.uint32)
        high = tl.full((), 0xFFFFFFFF, tl.uint32) << shift.to(tl.uint32)
        shift = tl.where(shift == 0, -1, tl.maximum(shift - _BITS, 0))
    # the taken keys, then the first `need` of the bucket by position (it ties, or is all needed)
    taken = (u & high) > prefix
    bucket = (u & high) == prefix
    flags = tl.where(taken, 1 << 16, 0) + bucket.to(tl.int32)  # two counts < 2**16 in one scan
    before = tl.cumsum(flags, axis=0) - flags
    bucket_before = before & 0xFFFF
    take = taken | (bucket & (bucket_before < need))
    return take, (before >> 16) + tl.minimum(bucket_before, need)


@jit
def _chunk_kernel(
    x_ptr, seen_ptr, penalty_ptr, keys_ptr, flags_ptr, vocab, x_stride, seen_stride, parts,
    K: tl.constexpr, CHUNK: tl.constexpr, PENALTY: tl.constexpr, CHECK: tl.constexpr, PDL: tl.constexpr,
    SKIP: tl.constexpr = False,
):  # fmt: skip
    # grid (B, parts): program (b, p) keeps the K best keys of logits [p * CHUNK, (p + 1) * CHUNK),
    # after the repetition penalty of row b when PENALTY; they go out in id order
    pdl_wait(PDL)
    row, part = tl.program_id(0).to(tl.int64), tl.program_id(1)
    cols = (part * CHUNK + tl.arange(0, CHUNK)).to(tl.int64)
    live = cols < vocab
    x = tl.load(x_ptr + row * x_stride + cols, mask=live, other=0.0).to(tl.float32)
    if CHECK:  # flags (B, parts) int32 of the raw logits: 2 a NaN or +inf, else 1 a value > -inf, else 0
        odd = (x != x) | (x == float("inf"))
        flag = tl.where(odd, 2, tl.where(live & (x > float("-inf")), 1, 0))
        tl.store(flags_ptr + row * parts + part, tl.max(flag, axis=0))
    if PENALTY:  # as apply_repetition_penalty: seen logits divided (if > 0) or multiplied
        seen = tl.load(seen_ptr + row * seen_stride + cols, mask=live, other=0) != 0
        p = tl.load(penalty_ptr + row)
        x = tl.where(seen, tl.where(x > 0, x / p, x * p), x)
    word = tl.where(live, _value_word(x), _PAD_WORD)
    keys = (word.to(tl.int64) << 32) + tl.where(live, _LOW - cols, 0)  # padded: _LOWEST
    take, slot = _select(word, K, SKIP)
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
    take, slot = _select((keys >> 32).to(tl.int32), K, SKIP)
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
    take, slot = _select((keys >> 32).to(tl.int32), K, SKIP)
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
    starts below the digits its K best share (_shared_digits) instead of at the top digit."""
    return env_choice("RUNTIME_TOPK_SKIP", ("0", "1"), "0") == "1"


def _warps(n_keys: int) -> int:
    """Warps for a program that selects from n_keys keys: 16 keys a thread, 4 to 16 warps."""
    return min(16, max(4, next_pow2(n_keys) // 512))


def _candidate_keys(
    x: torch.Tensor, k: int, seen=None, penalty=None, check: bool = False
) -> tuple[torch.Tensor, int, torch.Tensor | None]:
    """Stage 1 and the merge rounds over x (B, V) float32 -> (keys (B, n), n, flags): at most
    max(GROUP, 2 k) keys per row, in lists of k, which hold the row's k best. check: flags
    (B, V / chunk) int32, stage 1's finite check of its raw logits (_chunk_kernel); else None."""
    B, vocab = x.shape
    # logits a stage-1 program takes; RUNTIME_TOPK_CHUNK (a power of two) A/Bs CHUNK
    chunk = min(max(k, env_power_of_two("RUNTIME_TOPK_CHUNK", CHUNK, 16, MAX_KEYS)), max(k, next_pow2(vocab)))
    lists = cdiv(vocab, chunk)
    keys = torch.empty((B, lists * k), dtype=torch.int64, device=x.device)
    flags = torch.empty((B, lists), dtype=torch.int32, device=x.device) if check else None
    with_penalty = seen is not None
    _chunk_kernel[(B, lists)](
        x, seen if with_penalty else x, penalty if with_penalty else x, keys, flags if check else x,
        vocab, x.stride(0), seen.stride(0) if with_penalty else 0, lists, K=k, CHUNK=chunk,
        PENALTY=with_penalty, CHECK=check, SKIP=skip_shared_digits(), num_warps=_warps(chunk), **pdl(x.device),
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
            num_warps=_warps(per_group * k),
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
        num_warps=_warps(n_keys),
        **pdl(x.device),
    )
    return values, ids
