"""A diagnostic: per-program timestamps at the phases of a kernel, read back after a replay.

A kernel timeline (scripts/step_timeline.py) says how long a kernel runs, not where its programs
spend that time. With RUNTIME_PHASE_CLOCK set (1: every family below; or a comma list of them) a
kernel that supports it writes, per program, its SM, the global timer (ns) at its first and last
mark, and the SM's cycle counter at each of its six marks (MARKS, per kernel family);
scripts/kernel_phases.py turns those into per-phase medians. Off by default: the kernel is
then built without a single extra instruction (CLOCK is a constexpr). Each mark reads the counter
only after a value of the phase it closes is computed (an input operand of the read), which costs
a reduction per mark: the clocked build is slightly slower than the real one.

Buffers (programs, FIELDS) int64, one per launch, kept in launch order; a graph's launches keep
theirs, so zero them (`zero_all`) before the replay to read and take the ones written since. They
are rows of one slab made at the first launch (before any capture): a buffer allocated during a
capture would come from the graph's pool, whose memory other graphs' kernels may also write.
Each captured launch gets rows of its own; an eager launch reuses the rows of the last eager
launch with its label (the warm-ups before each capture would otherwise use up the slab).
"""

from __future__ import annotations

import contextlib
import os
import statistics
from collections.abc import Iterator

import torch

from runtime.kernels._triton import jit, tl

ENV = "RUNTIME_PHASE_CLOCK"
# per program: its SM, global timer (ns) at the first and last mark, then cycle counts at the six
# marks (clock_mark writes rows of 9: keep the two in step)
FIELDS = ("sm", "ns_first", "ns_last", "mark0", "mark1", "mark2", "mark3", "mark4", "mark5")
# what each family's marks close: the attention split kernel (qkv_attention_kernel.py) and the
# batch-1 GEMV (gemv_kernel.py)
MARKS = {
    "attention": ("entry", "positioned", "waited", "prologue", "loop", "stored"),
    "gemv": ("entry", "first_tile", "waited", "prologue", "loop", "stored"),
}
_RECORDS: list[tuple[str, str, torch.Tensor]] = []  # (family, launch label, buffer)
_SLAB_ROWS = 1 << 20  # 72 MB: every launch of a model's captures, the GEMVs' included
_SLAB: dict[torch.device, torch.Tensor] = {}  # device -> its slab; rows go out in record order
# (device, family, label, programs) -> the rows of the last such launch made outside a capture
_EAGER: dict[tuple[torch.device, str, str, int], torch.Tensor] = {}
_PAUSED = [0]  # paused() depth: launches that time themselves (the GEMV tuner) are not clocked


def enabled(family: str) -> bool:
    """Whether RUNTIME_PHASE_CLOCK asks for this kernel family ("1": all of them)."""
    choice = os.environ.get(ENV, "") or ""
    wanted = {f.strip() for f in choice.split(",") if f.strip() and f.strip() != "0"}
    unknown = wanted - set(MARKS) - {"1"}
    if unknown:
        raise ValueError(f"{ENV}={choice!r}: name 1 or kernel families among {', '.join(MARKS)}")
    return ("1" in wanted or family in wanted) and not _PAUSED[0]


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """No launch inside is clocked (the GEMV tuner's candidates: thousands of launches)."""
    _PAUSED[0] += 1
    try:
        yield
    finally:
        _PAUSED[0] -= 1


def clock_buffer(family: str, label: str, programs: int, device: torch.device) -> torch.Tensor | None:
    """A zeroed (programs, FIELDS) int64 buffer for one launch of a kernel of `family` (`label`
    tells the launch apart, e.g. its shape), or None when the clock is off for it."""
    if not enabled(family):
        return None
    capturing = torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()
    key = (torch.device(device), family, label, programs)
    if not capturing and key in _EAGER:
        # an eager launch (warm-ups before each capture, a prefill's head) is read, if ever, before
        # the next one of its kind: reusing its rows keeps the slab for the captured launches
        buf = _EAGER[key]
        with torch.inference_mode():
            buf.zero_()
        return buf
    slab = _SLAB.get(device)
    if slab is None:
        slab = _SLAB[device] = torch.zeros((_SLAB_ROWS, len(FIELDS)), dtype=torch.int64, device=device)
    start = sum(b.shape[0] for _, _, b in _RECORDS if b.device == slab.device)  # the rows handed out
    if start + programs > _SLAB_ROWS:
        raise RuntimeError(f"{ENV}: the clock's {_SLAB_ROWS} rows are used up; call phase_clock.clear()")
    buf = slab[start : start + programs]
    _RECORDS.append((family, label, buf))
    if not capturing:
        _EAGER[key] = buf
    return buf


def records() -> list[tuple[str, str, torch.Tensor]]:
    return list(_RECORDS)


def zero_all() -> None:
    with torch.inference_mode():  # the buffers of launches made in inference mode are inference tensors
        for _, _, buf in _RECORDS:
            buf.zero_()


def clear() -> None:
    """Forget every buffer (the slab's rows are handed out again from the first)."""
    _RECORDS.clear()
    _EAGER.clear()
    with torch.inference_mode():
        for slab in _SLAB.values():
            slab.zero_()


@jit
def _special_after(dep, ASM: tl.constexpr):
    """A special register (ASM moves it into the 64-bit $0), read once `dep` (an int32 scalar) is
    available: the SM's cycle counter, the global timer (ns, the same on every SM), the SM's id."""
    return tl.inline_asm_elementwise(ASM, "=l,r", [dep], dtype=tl.int64, is_pure=False, pack=1)


def _asm(text: str):
    return tl.constexpr(text) if tl is not None else text  # a jit global must be a constexpr


CYCLES = _asm("mov.u64 $0, %clock64;")
NS = _asm("mov.u64 $0, %globaltimer;")
SM = _asm("{ .reg .u32 sm; mov.u32 sm, %smid; cvt.u64.u32 $0, sm; }")


@jit
def total_2d(x):
    """The sum of a 2-D tile, in fp32: a scalar that a mark's read can wait for."""
    return tl.sum(tl.sum(x.to(tl.float32), axis=1), axis=0)


@jit
def clock_mark(clock_ptr, program, field: tl.constexpr, dep, CLOCK: tl.constexpr):
    """Write the cycle counter to FIELDS[field] of this program's row, after `dep` (a scalar of the
    phase that ends here, e.g. a sum of its result, becomes the read's operand). The first mark
    (entry, field 3) also writes the SM and the global timer; the last (stored, 8) the timer."""
    if CLOCK:
        d = dep.to(tl.float32).to(tl.int32, bitcast=True)
        row = clock_ptr + program.to(tl.int64) * 9
        if field == 3:
            tl.store(row, _special_after(d, SM))
            tl.store(row + 1, _special_after(d, NS))
        tl.store(row + field, _special_after(d, CYCLES))
        if field == 8:
            tl.store(row + 2, _special_after(d, NS))


def summarize(stamps: torch.Tensor, marks: tuple[str, ...]) -> dict | None:
    """Per-phase medians (us) of one launch's (programs, FIELDS) stamps, the phases named by the
    family's `marks`; programs that did not reach the last mark (attention's past the live length
    return after the second) are left out. Cycles become time through the launch's own ratio of
    timer ns to cycles over all its programs."""
    last = len(FIELDS) - 1
    rows = [r for r in stamps.tolist() if r[3] != 0 and r[last] != 0]
    if not rows:
        return None
    ns = sum(r[2] - r[1] for r in rows)
    cycles = sum(r[last] - r[3] for r in rows)
    ns_per_cycle = ns / cycles if cycles > 0 else 0.0
    first = min(r[1] for r in rows)
    per_sm: dict[int, list[tuple[int, int]]] = {}  # SM -> its programs' (start, end) timer ns
    for r in rows:
        per_sm.setdefault(r[0], []).append((r[1], r[2]))

    def us(values: list[float]) -> float:
        return round(statistics.median(values) / 1000, 3)

    # the most programs one SM held at once (their [start, end] timer intervals overlapping): where
    # fewer fit than the grid asks, the rest start late, a partial second wave. Of the clocked build,
    # whose marks cost registers (Gemma's gate/up GEMV 88 against 72: 5 programs per SM against 7)
    resident = 0
    for spans in per_sm.values():
        events = sorted(e for start, end in spans for e in ((start, 1), (end, -1)))
        held = 0
        for _, step in events:
            held += step
            resident = max(resident, held)
    out = {
        "programs": len(rows),
        "span_us": round((max(r[2] for r in rows) - first) / 1000, 3),
        "start_median_us": us([r[1] - first for r in rows]),
        "start_max_us": round(max(r[1] - first for r in rows) / 1000, 3),
        "program_us": us([(r[last] - r[3]) * ns_per_cycle for r in rows]),
        "most_per_sm": max(len(spans) for spans in per_sm.values()),
        "most_resident": resident,
        "late_share": round(sum(r[1] - first > 1000 for r in rows) / len(rows), 3),
        "ghz": round(1 / ns_per_cycle, 3) if ns_per_cycle else None,
    }
    for i, name in enumerate(marks[1:], start=4):
        out[f"{marks[i - 4]}_to_{name}_us"] = us([(r[i] - r[i - 1]) * ns_per_cycle for r in rows])
    return out
