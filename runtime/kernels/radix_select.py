"""The radix select of the top-k stages (topk.py): which N >= K keys are the K largest, by counting
on their value words instead of sorting.

Why select_largest is exact. It takes N >= K keys in increasing-id order and counts on their value
words read as unsigned (u): a radix select from the top bit, 5 bits a pass (tl.histogram pads its
bins to the 32 lanes of a warp, so 5 bits cost what 4 do). It carries scalars only: `need`, the
keys still to take, and the bits of the need-th best key resolved so far, which define the bucket
(the keys that agree with it on those bits). A pass takes the histogram of the next digit over the
bucket and finds the digit d of the need-th best key; bucket keys with a digit above d beat it on
the resolved bits, so they are taken (need drops by their count), those below are dropped, those
of digit d stay. Invariant: every taken key beats every bucket key, every bucket key beats every
dropped one, 1 <= need <= |bucket|. The loop ends when the whole bucket is needed (|bucket| ==
need: usually after 4-5 passes, once the K-th key is alone in its bucket) or after bit 0 (7
passes: the bucket keys then have equal value words, so key order among them is id order, smaller
first). The K best are then the keys above the bucket and the first `need` bucket keys by
position, which is id order. One scan (the taken and the bucket flags packed in one int32) gives
each chosen key its slot in 0..K-1 and a masked scatter store writes them, still in id order. With
SKIP the loop starts below the digits the K best share (shared_digits), with the same invariant.
"""

from __future__ import annotations

from runtime.kernels._triton import jit, tl

# a radix pass reads a 5-bit digit (32 bins), from bit 27 (the top digit) down
_BITS = tl.constexpr(5) if tl is not None else 5
_BINS = tl.constexpr(32) if tl is not None else 32
_FIRST = tl.constexpr(27) if tl is not None else 27


@jit
def shared_digits(u, K: tl.constexpr):
    """u (N,) uint32 keys' value words in unsigned order, N a multiple of K -> (high, prefix, size,
    shift): a start for select_largest's loop that skips the digits all of the K best share. The
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
def select_largest(word, K: tl.constexpr, SKIP: tl.constexpr = False):
    """word (N,) int32: the value words of N >= K keys in increasing-id order (padded slots
    last) -> (take (N,) bool, marking the K largest keys; slot (N,) int32, each taken key's place
    in 0..K-1, in id order). A radix select; the module docstring says why it is exact. SKIP
    (RUNTIME_TOPK_SKIP, an A/B): start below the digits the K best share (shared_digits)."""
    u = word.to(tl.uint32, bitcast=True) ^ 0x80000000  # unsigned order = the value order
    bins = tl.arange(0, _BINS)
    # scalars carried through the loop: the bits resolved so far are those of `high` (from the
    # top down); the bucket is the keys with u & high == prefix (the need-th best key's bits)
    need = tl.full((), K, tl.int32)
    if SKIP:
        high, prefix, size, shift = shared_digits(u, K)
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
