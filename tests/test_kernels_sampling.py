"""The decode step's vocabulary-wide kernels (argmax_checked, top_candidates) against their
references. Conventions of kernel_testing.py: `cuda` on a GPU, a small list under the CPU
interpreter in a child process, outputs poisoned."""

from __future__ import annotations

import pytest
import torch
from kernel_testing import (
    INTERPRET,
    assert_passes_under_interpreter,
    cases,
    kernel_test,
    needs_triton,
    poisoned_fixture,
    sampling_rows,
)

from runtime.kernels import argmax as argmax_mod
from runtime.kernels import radix_select
from runtime.kernels import topk as topk_mod
from runtime.kernels import topk_sample as topk_sample_mod
from runtime.kernels._triton import jit, tl
from runtime.kernels.argmax import argmax_checked_ref, argmax_checked_triton
from runtime.kernels.topk import top_candidates_ref, top_candidates_triton

if INTERPRET:
    pytestmark = [needs_triton]
DEVICE = "cpu" if INTERPRET else "cuda"


poisoned = poisoned_fixture(argmax_mod, topk_mod, topk_sample_mod)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(4321)


def logits(B: int, V: int, ties: bool = False) -> torch.Tensor:
    x = torch.randn(B, V) * 4
    if ties:  # few distinct values: many ties at the top and at the cut
        x = (x * 2).round() / 2
    return x.to(DEVICE)


# ---------------------------------------------------------------- argmax with the finite check

ARGMAX_CASES = cases(
    full=[(1, 128256), (1, 151936), (1, 262144), (3, 49152), (16, 128256), (2, 77), (5, 4097)],
    small=[(1, 77), (3, 4097), (2, 9000)],
)


@kernel_test
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("B,V", ARGMAX_CASES)
def test_argmax_checked(poisoned, B, V, ties):
    x = logits(B, V, ties)
    ids, bad = argmax_checked_triton(x)
    want_ids, want_bad = argmax_checked_ref(x)
    assert ids.dtype == torch.int64 and bad.dtype == torch.bool
    assert torch.equal(ids, want_ids)  # the first maximum, also across chunk borders
    assert not bad.any() and torch.equal(bad, want_bad)


@kernel_test
def test_argmax_checked_flags_non_finite_rows(poisoned):
    x = logits(5, 9000)
    x[0, 7000] = float("nan")
    x[1, 3] = float("inf")
    x[2] = float("-inf")  # nothing but -inf: bad, and argmax 0 as torch answers
    x[3, 8999] = float("-inf")  # one -inf among finite values is fine
    ids, bad = argmax_checked_triton(x)
    assert bad.tolist() == [True, True, True, False, False]
    assert torch.equal(bad, argmax_checked_ref(x)[1])
    assert ids[1] == 3 and ids[2] == 0
    assert torch.equal(ids[3:], argmax_checked_ref(x)[0][3:])


def test_argmax_ties_take_the_first_index_across_chunks(monkeypatch):
    """The reference's tie rule, checked on the CPU where the reference runs."""
    x = torch.zeros(1, 3 * argmax_mod.CHUNK)
    x[0, argmax_mod.CHUNK + 5] = x[0, 2 * argmax_mod.CHUNK + 1] = 1.0
    assert argmax_checked_ref(x)[0].item() == argmax_mod.CHUNK + 5


# ---------------------------------------------------------------- top-K candidates

TOPK_CASES = cases(
    full=[(1, 128256, 128), (1, 151936, 128), (1, 262144, 128), (4, 128256, 128), (3, 5000, 64), (2, 300, 8)],
    small=[(1, 300, 8), (2, 1000, 16)],
)


def stable_top(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The K best, ties towards the smaller id (torch.topk leaves tie order open)."""
    values, ids = x.sort(dim=-1, descending=True, stable=True)
    return values[:, :k], ids[:, :k]


@kernel_test
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("B,V,K", TOPK_CASES)
def test_top_candidates(poisoned, monkeypatch, B, V, K, ties):
    if INTERPRET:  # the interpreter is slow: small rows, small chunks, so several parts still merge
        monkeypatch.setattr(topk_mod, "CHUNK", 128)
        monkeypatch.setattr(topk_mod, "GROUP", 2)  # 2 lists a merge (the fewest): rounds on small rows
    x = logits(B, V, ties)
    values, ids = top_candidates_triton(x, K)
    want_values, want_ids = stable_top(x, K)
    assert torch.equal(values, want_values)
    assert torch.equal(ids, want_ids)
    assert torch.equal(values, top_candidates_ref(x, K)[0])


@kernel_test
def test_the_chunk_switch_sets_the_first_stages_lists(poisoned, monkeypatch):
    """RUNTIME_TOPK_CHUNK (an A/B knob): stage 1 takes that many logits a program, so a row of V
    leaves cdiv(V, chunk) lists of K keys (no merge round here), and the candidates stay exact."""
    B, V, K, chunk = (2, 1000, 16, 256) if INTERPRET else (2, 128256, 128, 1024)
    monkeypatch.setattr(topk_mod, "GROUP", 2**15)  # one list per program, none merged
    monkeypatch.setenv("RUNTIME_TOPK_CHUNK", str(chunk))
    x = logits(B, V)
    keys, n_keys, _ = topk_mod._candidate_keys(x, K)
    assert n_keys == -(-V // chunk) * K and keys.shape == (B, n_keys)
    values, ids = top_candidates_triton(x, K)
    want_values, want_ids = stable_top(x, K)
    assert torch.equal(values, want_values) and torch.equal(ids, want_ids)


def test_the_warps_switch_sets_each_stages_warps_or_refuses(monkeypatch):
    """RUNTIME_TOPK_WARPS (an A/B knob): stage=warps entries replace the count a stage's keys give;
    unset, 16 keys a thread between 4 and 16 warps; a bad entry is refused by name."""
    monkeypatch.delenv("RUNTIME_TOPK_WARPS", raising=False)
    assert [topk_mod._warps(n, "chunk") for n in (512, 4096, 8192, 32768)] == [4, 8, 16, 16]
    monkeypatch.setenv("RUNTIME_TOPK_WARPS", " chunk=4, last=16 ")
    assert topk_mod.stage_warps() == {"chunk": 4, "last": 16}
    assert (topk_mod._warps(4096, "chunk"), topk_mod._warps(4096, "group"), topk_mod._warps(512, "last")) == (
        4,
        8,
        16,
    )
    for bad in ("chunk=3", "chunk=64", "merge=4", "chunk", "last=x"):
        monkeypatch.setenv("RUNTIME_TOPK_WARPS", bad)
        with pytest.raises(ValueError, match="RUNTIME_TOPK_WARPS"):
            topk_mod.stage_warps()


@kernel_test
@pytest.mark.parametrize("warps", ["chunk=4,group=16,last=8", "chunk=16,group=4,last=16"])
def test_the_sampler_is_exact_on_any_stage_warps(poisoned, monkeypatch, warps):
    """The stages' warp counts change how a program splits its keys, never which keys it keeps:
    the candidates equal the stable top-k under other counts for every stage."""
    B, V, K = (2, 1000, 16) if INTERPRET else (2, 128256, 128)
    if INTERPRET:
        monkeypatch.setattr(topk_mod, "CHUNK", 128)
        monkeypatch.setattr(topk_mod, "GROUP", 32)  # 2 lists a merge: a round runs
    monkeypatch.setenv("RUNTIME_TOPK_WARPS", warps)
    x = logits(B, V, ties=True)
    values, ids = top_candidates_triton(x, K)
    want_values, want_ids = stable_top(x, K)
    assert torch.equal(values, want_values) and torch.equal(ids, want_ids)


@kernel_test
def test_top_candidates_keeps_negative_and_infinite_values_in_order(poisoned, monkeypatch):
    if INTERPRET:
        monkeypatch.setattr(topk_mod, "CHUNK", 128)
        monkeypatch.setattr(topk_mod, "GROUP", 2)  # 2 lists a merge (the fewest): rounds on small rows
    x = -logits(2, 700).abs() - 1  # all negative: the float-to-key flip matters
    x[0, 100:200] = float("-inf")  # masked tokens
    x[1, 5] = float("inf")
    values, ids = top_candidates_triton(x, 16)
    want_values, want_ids = stable_top(x, 16)
    assert torch.equal(values, want_values) and torch.equal(ids, want_ids)


@kernel_test
def test_top_candidates_other_cases_take_the_reference():
    x = logits(1, 100)
    for k in (3, 100):  # not a power of two; the whole row
        assert torch.equal(top_candidates_triton(x, k)[0], top_candidates_ref(x, k)[0])


@jit
def _select_kernel(
    word_ptr, take_ptr, slot_ptr, N: tl.constexpr, K: tl.constexpr, SKIP: tl.constexpr = False
):
    j = tl.arange(0, N)
    take, slot = radix_select.select_largest(tl.load(word_ptr + j), K, SKIP)
    tl.store(take_ptr + j, take.to(tl.int32))
    tl.store(slot_ptr + j, tl.where(take, slot, -1))


@kernel_test
@pytest.mark.parametrize("skip", [False, True], ids=["from_the_top", "shared_digits_skipped"])
@pytest.mark.parametrize("K", [1, 5, 128])
@pytest.mark.parametrize(
    "pattern", ["random", "extremes", "equal", "tie_at_cut", "low_bits", "two_values", "close"]
)
def test_select_takes_exactly_the_k_best_in_order(pattern, K, skip):
    """The selection itself: exactly K taken, the K largest value words (ties: the first
    positions), and their slots 0..K-1 in position order, so the scatter store is a compaction.
    skip: the loop starts below the digits the K best share (RUNTIME_TOPK_SKIP; K a power of two)."""
    if skip and K & (K - 1):
        pytest.skip("the shared digits are found over a power-of-two K groups")
    N = 1024
    word = torch.randint(-(2**31), 2**31, (N,), dtype=torch.int64)
    if pattern == "extremes":  # the lowest and highest words, and the sign boundary
        word[:300] = torch.tensor([-(2**31), 2**31 - 1, -1, 0]).repeat(75)
    elif pattern == "equal":
        word[:] = 7
    elif pattern == "tie_at_cut":  # a few above, a large tie group where the K-th falls
        word = torch.where(torch.rand(N) < 0.5, 1000, word.clamp(max=999))
        word[torch.randperm(N)[: K // 2]] = 2000
    elif pattern == "low_bits":  # words alike but for the lowest bits: all passes, the last one clamped
        word = 0x3F800000 + torch.randint(0, 6, (N,))
    elif pattern == "two_values":  # words that differ in the sign bit only
        word = torch.where(torch.rand(N) < 0.3, 5, 5 - 2**31)
    elif pattern == "close":  # the K best share their top 20 bits: a skipping select starts low
        word = 0x40A00000 + torch.randint(0, 2**12, (N,))
        word[torch.randperm(N)[:300]] = 0x3F000000
    word = word.to(torch.int32)
    take = torch.full((N,), -7, dtype=torch.int32, device=DEVICE)
    slot = torch.full((N,), -7, dtype=torch.int32, device=DEVICE)
    _select_kernel[(1,)](word.to(DEVICE), take, slot, N=N, K=K, SKIP=skip)
    # the K largest, ties towards the first position: a stable descending sort
    want = torch.zeros(N, dtype=torch.bool)
    want[word.sort(descending=True, stable=True).indices[:K]] = True
    assert torch.equal(take.cpu().bool(), want)
    assert torch.equal(slot.cpu()[want], torch.arange(K, dtype=torch.int32))


@jit
def _shared_kernel(word_ptr, out_ptr, N: tl.constexpr, K: tl.constexpr):
    j = tl.arange(0, N)
    u = tl.load(word_ptr + j).to(tl.uint32, bitcast=True) ^ 0x80000000
    high, prefix, size, shift = radix_select.shared_digits(u, K)
    tl.store(out_ptr, shift)
    tl.store(out_ptr + 1, size)


@kernel_test
def test_the_shared_digits_start_the_select_below_them():
    """Words alike in all but their low 12 bits (and a lower group): the start skips the digits
    above bit 12 (shift 7) with the alike words in the bucket; words apart in the top digit
    start at the top (shift 27, every key in the bucket)."""
    N, K = 1024, 128
    word = 0x40A00000 + torch.randint(0, 2**12, (N,), dtype=torch.int64)
    word[torch.randperm(N)[:300]] = 0x3F000000
    out = torch.full((2,), -7, dtype=torch.int32, device=DEVICE)
    _shared_kernel[(1,)](word.to(torch.int32).to(DEVICE), out, N=N, K=K)
    assert out.tolist() == [7, int((word >= 0x40A00000).sum())]
    word = torch.randint(-(2**31), 2**31, (N,), dtype=torch.int64)
    _shared_kernel[(1,)](word.to(torch.int32).to(DEVICE), out, N=N, K=K)
    assert out.tolist() == [27, N]


def hard_rows(V: int, k: int) -> torch.Tensor:
    """Rows that a wrong threshold or compaction gets wrong (6, V), each a case of its own."""
    x = torch.randn(6, V) * 4
    x[0] = 0.5  # all equal: the K best are ids 0..K-1
    x[1] = x[1].clamp(max=1.0)  # a tie group of ~V/4 at the K-th place, a few distinct keys above
    x[1, torch.randperm(V)[: k // 2]] = 2.0 + torch.rand(k // 2)
    # values that differ in the lowest mantissa bits only, each ~V/40 times: every radix pass runs
    # (the clamped one at bit 0 too) and the cut falls inside a tie
    x[2] = (torch.randint(0, 40, (V,), dtype=torch.int32) + 0x3F800000).view(torch.float32)
    x[3] = float("-inf")  # masked tokens; the few finite ones last, where a chunk has padding
    x[3, -3:] = torch.tensor([-1.0, 3.0, -1.0])
    x[4] = -x[4].abs() - 1  # all negative, a third -inf, and two +inf tie at the top
    x[4, : V // 3] = float("-inf")
    x[4, 1] = x[4, V // 2] = float("inf")
    x[5, : 2 * k] = x[5].max() + 1  # 2K equal best keys in the first chunk: ties won by the ids
    return x.to(DEVICE)


def check_top(x: torch.Tensor, k: int) -> None:
    values, ids = top_candidates_triton(x, k)
    want_values, want_ids = stable_top(x, k)
    for row in range(x.shape[0]):
        assert torch.equal(values[row], want_values[row]), row
        assert torch.equal(ids[row], want_ids[row]), row


@kernel_test
@pytest.mark.parametrize("K", [1, 8, 128])
@pytest.mark.parametrize("V", [200, 2 * 4096 + 77, 3 * 4096])
def test_top_candidates_selects_exactly(poisoned, V, K):
    """The kernels' own chunk and group sizes: a row under one chunk (200), a last chunk with
    fewer than K live logits (77), whole chunks; ties at the cut, -inf, all-equal rows."""
    check_top(hard_rows(V, K), K)


@kernel_test
@pytest.mark.parametrize("K", [1, 16, 128, 256])  # 256: the last stage sorts instead of ranking
def test_top_candidates_selects_exactly_through_merge_rounds(poisoned, monkeypatch, K):
    monkeypatch.setattr(topk_mod, "CHUNK", max(K, 128))
    monkeypatch.setattr(topk_mod, "GROUP", 2)  # 2 lists a merge (the fewest): several rounds
    check_top(hard_rows(1500, K), K)


@pytest.mark.skipif(INTERPRET, reason="this is the child run")
@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU runs the compiled kernels instead")
@needs_triton
def test_sampling_kernels_under_the_cpu_interpreter():
    assert_passes_under_interpreter(__file__)


# ---------------------------------------------------------------- the fused "topk" sampler variant


SAMPLE_CASES = cases(
    full=[(1, 128256, 128), (1, 262144, 128), (4, 151936, 128), (3, 5000, 64)],
    small=[(3, 300, 16)],
)


@kernel_test
@pytest.mark.parametrize("B,V,K", SAMPLE_CASES)
def test_sample_topk_matches_the_reference(poisoned, monkeypatch, B, V, K):
    """Same tokens as sampler.sample_ref over many positions (each position draws new noise), for
    rows mixing greedy, plain temperature, top-k, top-p and the repetition penalty."""
    from runtime.engine.sampler import sample_ref

    if INTERPRET:
        monkeypatch.setattr(topk_mod, "CHUNK", 128)
        monkeypatch.setattr(topk_mod, "GROUP", 2)  # 2 lists a merge (the fewest): rounds on small rows
    x = logits(B, V)
    seen = torch.rand(B, V, device=DEVICE) < 0.3
    rows = sampling_rows(B, [0.8, 0.0, 1.3], [K // 2, 0, 5], [0.9, 1.0, 0.5], [1.1, 1.0, 1.3])
    rows["top_k"][rows["top_k"] == 0] = K  # the variant is exact for 0 < top_k <= K
    picked, differ = [], 0
    for pos in range(12 if INTERPRET else 200):
        p = torch.full((B,), pos, device=DEVICE)
        got = topk_sample_mod.sample_topk_triton(x, p, seen=seen, candidates=K, **rows)
        want = sample_ref(x, p, seen=seen, candidates=K, **rows)
        differ += int((got != want).sum())  # a fp32 rounding at the top-p boundary may flip one
        picked.append(got)
    assert differ <= 1 + len(picked) * B // 100, differ
    assert len({int(t) for t in torch.stack(picked)[:, 0]}) > 3  # row 0 samples, it is not stuck
    assert (torch.stack(picked)[:, 1 % B] == torch.stack(picked)[0, 1 % B]).all() or B == 1  # greedy row


@kernel_test
def test_more_candidates_than_the_count_ranks_are_sorted(poisoned, monkeypatch):
    """K = 256, above the 128 keys the last stage ranks by counting (topk._best_sorted): it sorts
    its K keys instead; the candidates stay exact and the sampler's tokens match the reference."""
    from runtime.engine.sampler import sample_ref

    K = 256
    B, V = (2, 3000) if INTERPRET else (2, 128256)
    if INTERPRET:
        monkeypatch.setattr(topk_mod, "CHUNK", K)
        monkeypatch.setattr(topk_mod, "GROUP", 2 * K)
    x = logits(B, V)
    values, ids = top_candidates_triton(x, K)
    want_values, want_ids = stable_top(x, K)
    assert torch.equal(values, want_values) and torch.equal(ids, want_ids)
    seen = torch.rand(B, V, device=DEVICE) < 0.3
    rows = sampling_rows(B, [0.8, 1.2], [K, K // 3], [0.95, 0.7], [1.1])
    for pos in range(4 if INTERPRET else 50):
        p = torch.full((B,), pos, device=DEVICE)
        got = topk_sample_mod.sample_topk_triton(x, p, seen=seen, candidates=K, **rows)
        assert torch.equal(got, sample_ref(x, p, seen=seen, candidates=K, **rows)), pos


@kernel_test
def test_sample_topk_greedy_rows_take_the_penalised_argmax(poisoned, monkeypatch):
    from runtime.engine.sampler import apply_repetition_penalty

    if INTERPRET:
        monkeypatch.setattr(topk_mod, "CHUNK", 128)
        monkeypatch.setattr(topk_mod, "GROUP", 2)  # 2 lists a merge (the fewest): rounds on small rows
    x = logits(2, 500)
    seen = torch.zeros(2, 500, dtype=torch.bool, device=DEVICE)
    seen[:, x[0].argmax()] = True
    rows = sampling_rows(2, [0.0], [16], [1.0], [50.0])
    got = topk_sample_mod.sample_topk_triton(x, torch.zeros(2, device=DEVICE, dtype=torch.int64), seen=seen,
                                      candidates=16, **rows)  # fmt: skip
    want = apply_repetition_penalty(x, seen, rows["repetition_penalty"]).argmax(-1)
    assert torch.equal(got, want) and got[0] != x[0].argmax()


@kernel_test
@pytest.mark.parametrize("K", [1, 128])
def test_sample_topk_on_hard_rows(poisoned, K):
    """Greedy rows take the first penalised maximum (ties, -inf, all equal); sampling rows over
    rows without ties at the cut match the reference token for token."""
    from runtime.engine.sampler import sample_ref

    V = 2 * 4096 + 77
    x = hard_rows(V, K)
    seen = torch.zeros(x.shape, dtype=torch.bool, device=DEVICE)
    seen[:, 1::7] = True
    greedy = sampling_rows(x.shape[0], [0.0], [K], [1.0], [1.5])
    p = torch.full((x.shape[0],), 3, device=DEVICE)
    got = topk_sample_mod.sample_topk_triton(x, p, seen=seen, candidates=K, **greedy)
    assert torch.equal(got, sample_ref(x, p, seen=seen, candidates=K, **greedy))
    assert got[0] == 0  # all equal, and id 0 is not seen
    x = logits(3, V)  # distinct values: the reference's candidate set is the same set
    seen = seen[:3]
    rows = sampling_rows(3, [0.7, 1.0, 2.0], [K, max(1, K // 4), 1], [1.0, 0.8, 0.9], [1.2])
    for pos in range(6):
        p = torch.full((3,), pos, device=DEVICE)
        got = topk_sample_mod.sample_topk_triton(x, p, seen=seen, candidates=K, **rows)
        assert torch.equal(got, sample_ref(x, p, seen=seen, candidates=K, **rows)), pos


@kernel_test
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the -inf row, interpreted
@pytest.mark.parametrize("merge", [False, True], ids=["two_launches", "merge_rounds"])
def test_sample_topk_step_records_non_finite_rows(poisoned, monkeypatch, merge):
    """Step mode with nonfinite_at (runner.step_tail's topk tail): argmax_checked_ref's bad rows
    take their current position unless one is recorded, from the flags of every chunk (the bad
    value in a later chunk; padding in the last one is no finite value); tokens as the plain call,
    positions advance, the tokens are marked seen."""
    if merge:  # small chunks, 4 lists of K a merge: 33 flags a row, two merge rounds between
        monkeypatch.setattr(topk_mod, "CHUNK", 256)
        monkeypatch.setattr(topk_mod, "GROUP", 64)
    V, K = 2 * 4096 + 77, 16
    x = logits(8, V)
    x[1, V - 1] = float("nan")  # the last live logit
    x[2, 5000] = float("inf")
    x[3] = float("-inf")  # nothing but -inf
    x[4] = float("-inf")
    x[4, V - 1] = -3.0  # one finite logit: fine
    x[5, 17] = float("-inf")  # one -inf among finite values: fine
    x[6, 4096] = float("nan")  # bad, but a record stands
    recorded = torch.tensor([-1, -1, -1, -1, -1, -1, 3, 11], device=DEVICE)  # row 7: fine now
    start = torch.arange(100, 108, device=DEVICE)
    seen = torch.rand(8, V, device=DEVICE) < 0.1
    rows = sampling_rows(8, [0.8, 0.0, 1.3], [K, 4, 1], [0.9, 1.0, 0.5], [1.1, 1.0, 1.3])
    want_tokens = topk_sample_mod.sample_topk_triton(x, start + 1, seen=seen, candidates=K, **rows)
    positions, nonfinite_at, step_seen = start.clone(), recorded.clone(), seen.clone()
    tokens = torch.full_like(start, -1)
    topk_sample_mod.sample_topk_triton(x, positions, seen=step_seen, candidates=K, tokens=tokens,
                                nonfinite_at=nonfinite_at, **rows)  # fmt: skip
    bad = argmax_checked_ref(x)[1]
    assert bad.tolist() == [False, True, True, True, False, False, True, False]
    assert torch.equal(nonfinite_at, torch.where(bad & (recorded < 0), start, recorded))
    assert nonfinite_at.tolist() == [-1, 101, 102, 103, -1, -1, 3, 11]
    assert torch.equal(positions, start + 1)
    assert torch.equal(tokens, want_tokens)
    assert torch.equal(step_seen, seen.scatter(1, tokens[:, None], True))


@kernel_test
@pytest.mark.parametrize("B,V,K", cases(full=[(3, 128256, 128), (3, 262144, 128)], small=[(3, 700, 16)]))
def test_sample_topk_plain_temperature_picks_over_the_whole_row(poisoned, monkeypatch, B, V, K):
    """Plain-temperature rows (top-k off, top-p 1) in the topk sampler: the full sort's tokens
    (sample_ref without candidates), many of them outside the K candidates of near-flat logits;
    a top-k row beside them still samples among its candidates. Decode-step form too."""
    from runtime.engine.sampler import sample_ref

    if INTERPRET:
        monkeypatch.setattr(topk_mod, "CHUNK", 128)
        monkeypatch.setattr(topk_mod, "GROUP", 2)
    x = logits(B, V) * 0.05
    seen = torch.rand(B, V, device=DEVICE) < 0.3
    rows = sampling_rows(B, [1.0, 0.9, 0.7], [0, 8, 0], [1.0, 1.0, 1.0], [1.2, 1.0, 1.0])
    outside = 0
    for pos in range(10 if INTERPRET else 100):
        p = torch.full((B,), pos, device=DEVICE)
        got = topk_sample_mod.sample_topk_triton(x, p, seen=seen, candidates=K, **rows)
        want = sample_ref(x, p, seen=seen, **rows)
        assert torch.equal(got[[0, 2]], want[[0, 2]]), pos
        assert torch.equal(got[1], sample_ref(x, p, seen=seen, candidates=K, **rows)[1]), pos
        outside += int(got[0] not in x[0].topk(K).indices)
    assert outside > (5 if INTERPRET else 50)
    tokens = torch.zeros(B, dtype=torch.int64, device=DEVICE)
    positions = torch.full((B,), 41, device=DEVICE)
    step_seen = seen.clone()
    topk_sample_mod.sample_topk_triton(x, positions, seen=step_seen, candidates=K, tokens=tokens, **rows)
    want = sample_ref(x, torch.full((B,), 42, device=DEVICE), seen=seen, **rows)
    assert torch.equal(tokens[[0, 2]], want[[0, 2]]) and (positions == 42).all()
    assert all(step_seen[r, tokens[r]] for r in range(B))
