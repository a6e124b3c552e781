"""GPU: what a grid-wide barrier costs inside one kernel, against a kernel boundary in a CUDA graph.

The persistent layer kernel planned in notes/kernels.md replaces each kernel boundary of the decode
step (~1.5-2 us with PDL, from scripts/step_timeline.py) by a barrier between phases of one kernel.
This measures the barrier before that kernel is written:
  barrier   one program per SM (all resident), ROUNDS rounds of: arrive (atomic add, release), spin
            until every program has arrived (atomic read, acquire); us per round = the slope of the
            kernel's time over ROUNDS in 0 and 64, from CUDA events over captured replays;
  boundary  ROUNDS launches of a one-program-per-SM kernel that does nothing, captured in a graph,
            with and without PDL (programmatic dependent launch): us per launch, the same way.
A spin that passes SPIN_LIMIT reads gives up and marks the kernel's result (a barrier that cannot
complete, e.g. programs not all resident, must not hang the card); the script reports that.

  PYTHONPATH=. python3 scripts/bench_grid_barrier.py [--programs-per-sm 1] [--out $OUT/barrier.json]
"""

from __future__ import annotations

import argparse
import json

import torch

from runtime.kernels._triton import pdl, pdl_release, pdl_wait, tl, triton
from runtime.kernels.gemv_tuning import _time_us

SPIN_LIMIT = 1 << 14  # reads of the counter before a program gives up (~10 ms; a barrier takes a few)


@triton.jit
def _barrier_kernel(counter_ptr, failed_ptr, programs, ROUNDS: tl.constexpr, SPIN: tl.constexpr):
    # counter: one int32 that every round's arrivals add to; round r is complete at (r + 1) * programs
    for r in range(ROUNDS):
        tl.atomic_add(counter_ptr, 1, sem="release", scope="gpu")
        target = (r + 1) * programs
        seen = tl.atomic_add(counter_ptr, 0, sem="acquire", scope="gpu")
        spins = 0
        while (seen < target) & (spins < SPIN):
            seen = tl.atomic_add(counter_ptr, 0, sem="acquire", scope="gpu")
            spins += 1
        if seen < target:
            tl.atomic_add(failed_ptr, 1)


@triton.jit
def _empty_kernel(x_ptr, PDL: tl.constexpr):
    pdl_wait(PDL)
    pdl_release(PDL)
    if tl.program_id(0) == -1:  # never: keeps an argument
        tl.store(x_ptr, 0)


def _graph_us(record) -> float:
    """Median device us of one replay of the graph `record` captures (a warm-up run first; timed as
    the GEMV tuner times a launch)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        record()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        record()
    return _time_us(graph.replay, reps=50)


def barrier_us(programs: int, rounds: int) -> tuple[float, int]:
    """(device us of one barrier kernel of `rounds` rounds, programs that gave up)."""
    counter = torch.zeros(1, dtype=torch.int32, device="cuda")
    failed = torch.zeros(1, dtype=torch.int32, device="cuda")

    def record():
        counter.zero_()
        _barrier_kernel[(programs,)](counter, failed, programs, ROUNDS=rounds, SPIN=SPIN_LIMIT, num_warps=4)

    us = _graph_us(record)
    torch.cuda.synchronize()
    return us, int(failed.item())


def boundaries_us(programs: int, launches: int, use_pdl: bool) -> float:
    x = torch.zeros(1, dtype=torch.int32, device="cuda")
    launch = pdl(x.device) if use_pdl else {"PDL": 0}

    def record():
        for _ in range(launches):
            _empty_kernel[(programs,)](x, num_warps=4, **launch)

    return _graph_us(record)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--programs-per-sm", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=64)
    ap.add_argument("--out")
    args = ap.parse_args()
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    programs = sms * args.programs_per_sm
    (t0, f0), (t1, f1) = barrier_us(programs, 0), barrier_us(programs, args.rounds)
    b0, b1 = boundaries_us(programs, 1, False), boundaries_us(programs, 1 + args.rounds, False)
    p0, p1 = boundaries_us(programs, 1, True), boundaries_us(programs, 1 + args.rounds, True)
    row = {
        "gpu": torch.cuda.get_device_name(0),
        "programs": programs,
        "rounds": args.rounds,
        "barrier_us": round((t1 - t0) / args.rounds, 3),
        "barrier_failed_programs": f0 + f1,
        "boundary_us": round((b1 - b0) / args.rounds, 3),
        "boundary_pdl_us": round((p1 - p0) / args.rounds, 3),
    }
    print("| programs | us per barrier | us per boundary | us per boundary, PDL |\n|---|---|---|---|")
    print(f"| {programs} | {row['barrier_us']} | {row['boundary_us']} | {row['boundary_pdl_us']} |")
    if row["barrier_failed_programs"]:
        print(f"{row['barrier_failed_programs']} programs gave up spinning: not all resident?")
    print(json.dumps(row))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(row, f, indent=1)


if __name__ == "__main__":
    main()
