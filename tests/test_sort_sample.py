"""The "sample" variant's kernels (runtime/kernels/sort_sample.py) against sampler.sample_ref with
no candidates. Conventions of kernel_testing.py: `cuda` on a GPU, a small list under the CPU
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

from runtime.engine.sampler import sample_ref, top_k_top_p_cutoff
from runtime.kernels import sort_sample as sort_sample_mod

# an all -inf row: the interpreter's NumPy warns on -inf - -inf (NaN, as on the GPU)
pytestmark = [pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")]
if INTERPRET:
    pytestmark.append(needs_triton)
DEVICE = "cpu" if INTERPRET else "cuda"
poisoned = poisoned_fixture(sort_sample_mod)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(8642)


@pytest.fixture
def small_blocks(monkeypatch):
    """Under the interpreter: short chunks and walk blocks, so small rows take several of each."""
    if INTERPRET:
        monkeypatch.setattr(sort_sample_mod, "CHUNK", 128)
        monkeypatch.setattr(sort_sample_mod, "BLOCK", 32)


# rows: top-p alone (Llama 3's settings), greedy with the penalty, plain temperature, top-k above
# the topk variant's 128 candidates with top-p, a small top-k, a wide nucleus over flat logits
ROWS = (
    [0.6, 0.0, 1.0, 0.8, 1.3, 1.0],
    [0, 0, 0, 200, 5, 0],
    [0.9, 1.0, 1.0, 0.95, 0.5, 0.99],
    [1.0, 1.2, 1.1, 1.0, 1.3, 1.0],
)
SORT_CASES = cases(
    full=[(6, 128256), (6, 151936), (6, 262144), (2, 5000), (1, 77)],
    small=[(6, 1000), (2, 300)],
)


def _logits(B: int, V: int) -> torch.Tensor:
    x = torch.randn(B, V) * 4
    x[5 % B] *= 0.05  # row 5: nearly flat, its 0.99 nucleus holds most of the vocabulary
    return x.to(DEVICE)


@kernel_test
@pytest.mark.parametrize("B,V", SORT_CASES)
def test_sample_sorted_matches_the_reference(poisoned, small_blocks, B, V):
    """Same tokens as sample_ref over many positions (each draws new noise), in every kind of row."""
    x = _logits(B, V)
    seen = torch.rand(B, V, device=DEVICE) < 0.3
    rows = sampling_rows(B, *ROWS, seed=11)
    picked, differ = [], 0
    for pos in range(10 if INTERPRET else 200):
        p = torch.full((B,), pos, device=DEVICE)
        got = sort_sample_mod.sample_sorted_triton(x, p, seen=seen, **rows)
        want = sample_ref(x, p, seen=seen, **rows)
        differ += int((got != want).sum())  # a float32 rounding at the top-p boundary may flip one
        picked.append(got)
    picked = torch.stack(picked)
    assert differ <= 1 + picked.numel() // 100, differ
    assert len({int(t) for t in picked[:, 0]}) > 1  # row 0 samples, it is not stuck
    if B > 1:
        assert (picked[:, 1] == picked[0, 1]).all()  # the greedy row


@kernel_test
def test_nucleus_and_top_k_are_kept_exactly(poisoned, small_blocks):
    """Rows whose keep sets are known: only those ids ever come out, and all of them do."""
    V = 1000 if INTERPRET else 128256
    x = torch.full((3, V), -20.0)
    x[:, [7, 500, 901]] = torch.tensor([3.0, 2.0, 1.0])  # masses ~0.67 / 0.24 / 0.09 at t = 1
    x[:, V - 1] = 2.5  # the last id, in the last chunk
    x = x.to(DEVICE)
    seen = torch.zeros(3, V, dtype=torch.bool, device=DEVICE)
    # row 0: top-p 0.9 keeps 7, V - 1, 500; row 1: top-k 2 keeps 7, V - 1; row 2: everything near
    rows = sampling_rows(3, [1.0], [0, 2, 0], [0.9, 1.0, 1.0], [1.0], seed=11)
    keep = [{7, V - 1, 500}, {7, V - 1}, {7, V - 1, 500, 901}]
    drawn = [set(), set(), set()]
    for pos in range(60 if INTERPRET else 400):
        got = sort_sample_mod.sample_sorted_triton(x, torch.full((3,), pos, device=DEVICE), seen=seen, **rows)
        for r in range(3):
            drawn[r].add(int(got[r]))
    assert drawn[0] == keep[0] and drawn[1] == keep[1], drawn
    assert drawn[2] >= keep[2] - {901}, drawn  # 901 holds ~4% of row 2: rarely drawn in 60


def test_top_p_one_keeps_every_token():
    """The reference's top_p = 1 keeps all k: a float cumsum that reaches 1 early drops nothing."""
    ranked = torch.tensor([[10.0, 0.0, -30.0, -40.0]])
    cut = top_k_top_p_cutoff(ranked, torch.tensor([0]), torch.tensor([1.0]))
    assert cut.item() == -40.0
    cut = top_k_top_p_cutoff(ranked, torch.tensor([0]), torch.tensor([0.999]))
    assert cut.item() == 10.0


@pytest.mark.skipif(INTERPRET, reason="this is the child run")
@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU runs the compiled kernels instead")
@needs_triton
def test_sort_sampler_under_the_cpu_interpreter():
    assert_passes_under_interpreter(__file__)
