"""The phase clock (runtime/kernels/phase_clock.py): its summary of synthetic stamps on the CPU, and
on a GPU the clocked attention kernel's marks and its unchanged output."""

from __future__ import annotations

import pytest
import torch

from runtime.kernels import phase_clock


def _row(sm: int, ns_first: int, ns_last: int, marks: list[int]) -> list[int]:
    return [sm, ns_first, ns_last, *marks]


def test_summary_of_synthetic_stamps():
    # 2 GHz (0.5 ns per cycle); program 2 returned after its first mark
    stamps = torch.tensor(
        [
            _row(5, 1_000, 5_000, [100, 100, 2_100, 4_100, 6_100, 8_100]),  # 0, 1, 1, 1, 1 us; 4 us
            _row(5, 3_000, 9_000, [7, 1_007, 4_007, 6_007, 10_007, 12_007]),  # 0.5, 1.5, 1, 2, 1 us; 6 us
            _row(7, 1_500, 0, [3_000, 0, 0, 0, 0, 0]),
            _row(9, 2_000, 10_000, [50, 2_050, 4_050, 8_050, 12_050, 16_050]),  # 1, 1, 2, 2, 2 us; 8 us
        ]
    )
    s = phase_clock.summarize(stamps, phase_clock.MARKS["attention"])
    assert s["programs"] == 3
    assert s["ghz"] == 2.0
    assert s["span_us"] == 9.0  # first start 1000 ns, last end 10000 ns
    assert s["start_median_us"] == 1.0 and s["start_max_us"] == 2.0
    assert s["program_us"] == 6.0
    assert s["entry_to_positioned_us"] == 0.5
    assert s["positioned_to_waited_us"] == 1.0
    assert s["waited_to_prologue_us"] == 1.0
    assert s["prologue_to_loop_us"] == 2.0
    assert s["loop_to_stored_us"] == 1.0
    assert s["most_per_sm"] == 2
    assert s["most_resident"] == 2  # SM 5's programs overlap from 3000 to 5000 ns
    assert s["late_share"] == 0.333  # only the start at 3000 ns is more than 1 us after the first
    apart = stamps.clone()
    apart[1, 1], apart[1, 2] = 6_000, 9_000  # SM 5's second program starts after the first ended
    assert phase_clock.summarize(apart, phase_clock.MARKS["attention"])["most_resident"] == 1
    zeros = torch.zeros((3, len(phase_clock.FIELDS)), dtype=torch.int64)
    assert phase_clock.summarize(zeros, phase_clock.MARKS["gemv"]) is None
    # the GEMV's names for the same columns
    assert phase_clock.summarize(stamps, phase_clock.MARKS["gemv"])["first_tile_to_waited_us"] == 1.0


def test_buffers_only_for_the_families_asked_for(monkeypatch):
    phase_clock.clear()
    cpu = torch.device("cpu")
    monkeypatch.delenv(phase_clock.ENV, raising=False)
    assert phase_clock.clock_buffer("gemv", "g", 4, cpu) is None
    monkeypatch.setenv(phase_clock.ENV, "attention")
    assert phase_clock.clock_buffer("gemv", "g", 4, cpu) is None
    buf = phase_clock.clock_buffer("attention", "a", 4, cpu)
    assert buf.shape == (4, len(phase_clock.FIELDS)) and not buf.any()
    monkeypatch.setenv(phase_clock.ENV, "1")
    with phase_clock.paused():  # the GEMV tuner's candidates
        assert phase_clock.clock_buffer("gemv", "g", 3, cpu) is None
    other = phase_clock.clock_buffer("gemv", "g", 3, cpu)
    assert other.shape == (3, len(phase_clock.FIELDS))
    buf.fill_(3)
    other.fill_(5)
    assert not buf.eq(5).any()  # rows of one slab, never shared between launches
    phase_clock.zero_all()
    assert [(f, label) for f, label, _ in phase_clock.records()] == [("attention", "a"), ("gemv", "g")]
    assert phase_clock.records()[0][2] is buf and not buf.any() and not other.any()
    phase_clock.clear()
    assert phase_clock.records() == []
    monkeypatch.setenv(phase_clock.ENV, "attention,gemm")
    with pytest.raises(ValueError, match="RUNTIME_PHASE_CLOCK='attention,gemm'"):
        phase_clock.clock_buffer("attention", "a", 4, cpu)


def test_eager_launches_reuse_their_rows(monkeypatch):
    """Outside a capture a launch takes the rows of the last launch with its label, zeroed: the
    warm-ups before each capture and a prefill's eager GEMVs once used up the whole slab."""
    phase_clock.clear()
    cpu = torch.device("cpu")
    monkeypatch.setenv(phase_clock.ENV, "1")
    monkeypatch.setattr(phase_clock, "_SLAB_ROWS", 16)
    monkeypatch.setattr(phase_clock, "_SLAB", {})
    first = phase_clock.clock_buffer("gemv", "g", 4, cpu)
    first.fill_(7)
    for _ in range(10):  # 40 rows asked for, of 16
        again = phase_clock.clock_buffer("gemv", "g", 4, cpu)
        assert again.data_ptr() == first.data_ptr() and not again.any()
    other = phase_clock.clock_buffer("gemv", "h", 4, cpu)
    assert other.data_ptr() != first.data_ptr()
    assert [label for _, label, _ in phase_clock.records()] == ["g", "h"]
    phase_clock.clear()


def _marks_in_order(stamps: torch.Tensor) -> torch.Tensor:
    """The rows that reached the last mark, checked: marks in order, the timer's end after its start."""
    marks = stamps[:, 3:]
    written = marks[:, -1] != 0
    assert written.any()
    assert (marks[written][:, 1:] >= marks[written][:, :-1]).all()
    assert (stamps[written, 2] >= stamps[written, 1]).all()
    return written


@pytest.mark.cuda
@pytest.mark.parametrize("splits", [None, 1])
def test_clocked_attention_marks_in_order_and_same_output(monkeypatch, splits):
    """The clocked build writes its marks in order for every program that has a block and only the
    first two (entry, position read) for those past the live length, and computes the same
    attention bit for bit."""
    from runtime.kernels.qkv_attention import qkv_decode_attention_triton
    from runtime.kernels.rope import rope_cos_sin

    torch.manual_seed(0)
    B, H, Hkv, D, S = 3, 8, 2, 64, 512
    qkv = torch.randn(B, 1, (H + 2 * Hkv) * D, device="cuda", dtype=torch.bfloat16)
    positions = torch.tensor([40, 300, 511], device="cuda")
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, D, 2, device="cuda").float() / D))
    cos, sin = rope_cos_sin(positions[:, None], inv_freq, torch.bfloat16)
    k, v = (torch.randn(B, Hkv, S, D, device="cuda", dtype=torch.bfloat16) for _ in range(2))

    def run(clocked: bool) -> torch.Tensor:
        monkeypatch.setenv(phase_clock.ENV, "1" if clocked else "0")
        args = (qkv, H, Hkv, cos, sin, None, None, 1e-6, 0.0, k.clone(), v.clone(), positions, D**-0.5)
        return qkv_decode_attention_triton(*args, num_splits=splits)

    phase_clock.clear()
    plain = run(False)
    clocked = run(True)
    torch.cuda.synchronize()
    torch.testing.assert_close(clocked, plain, atol=0, rtol=0)
    ((family, _, stamps),) = phase_clock.records()
    stamps = stamps.cpu()
    written = _marks_in_order(stamps)
    assert family == "attention" and (stamps[:, 3] != 0).all()  # every program stamps its entry
    n_splits = stamps.shape[0] // (B * Hkv)
    # row 0 has 41 live slots: with several splits, its programs past its blocks stamp nothing
    assert written.sum() < stamps.shape[0] or n_splits == 1
    assert not stamps[~written][:, 5:].any() and not stamps[~written][:, 2].any()
    summary = phase_clock.summarize(stamps, phase_clock.MARKS[family])
    assert summary["programs"] == int(written.sum()) and summary["program_us"] > 0
    phase_clock.clear()


@pytest.mark.cuda
def test_clocked_gemv_marks_in_order_and_same_output(monkeypatch):
    """The clocked batch-1 GEMV (norm prologue, the sandwich pre-norm) stamps every program's marks
    in order and computes the same row, bit for bit."""
    from runtime.kernels.fused_linear import norm_linear_triton

    torch.manual_seed(0)
    K, N = 1152, 1000
    h, res = (torch.randn(1, K, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    norm_w, pre_w = (torch.randn(K, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    weight = torch.randn(N, K, device="cuda", dtype=torch.bfloat16)

    def run(clocked: bool):
        monkeypatch.setenv(phase_clock.ENV, "gemv" if clocked else "")
        return norm_linear_triton(h, res, norm_w, 1e-6, 1.0, pre_w, weight)

    phase_clock.clear()
    plain = run(False)
    clocked = run(True)
    torch.cuda.synchronize()
    for a, b in zip(clocked, plain):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    ((family, label, stamps),) = phase_clock.records()
    stamps = stamps.cpu()
    assert family == "gemv" and label == f"gemv norm pre {N}x{K}"
    assert _marks_in_order(stamps).all()  # no program skips a mark
    phase_clock.clear()
