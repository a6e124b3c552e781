"""GPU: how fast the card streams bytes it only reads, against the copy bandwidth the goal rows' floor
divides by (runtime/bench/bandwidth.py counts a copy's bytes twice, read + write).

A decode step only reads its weights, so if reading alone runs faster than the copy the floor is
lower than the one the bench reports, and the GEMVs have room left; if not, the big GEMVs that
stream at ~2.9-3.0 TB/s are at the card's ceiling. Timed with CUDA events, medians of `--iters`
launches over a buffer far past L2 (two buffers alternate, so nothing is read from L2 twice):
  copy        dst.copy_(src), both bytes counted (the bench's measure)
  torch sum   src.sum(dtype=float32)
  triton      a reduction kernel: each program sums BLOCK contiguous elements per step over
              `steps` steps (evict-first loads, as the GEMVs' weights), over a grid of warps and
              BLOCK choices; the best is printed last
--out writes JSON.
"""

from __future__ import annotations

import argparse
import json

import torch
import triton
import triton.language as tl

from runtime.bench.bandwidth import copy_bandwidth_gbs, median_ms


@triton.jit
def _read_kernel(x_ptr, out_ptr, n_per_program, BLOCK: tl.constexpr, EVICT_FIRST: tl.constexpr):
    """Program p sums elements [p * n_per_program, (p + 1) * n_per_program) in BLOCK steps."""
    start = tl.program_id(0).to(tl.int64) * n_per_program
    offs = tl.arange(0, BLOCK)
    acc = tl.zeros([BLOCK], tl.float32)
    for i in range(0, n_per_program, BLOCK):
        if EVICT_FIRST:
            acc += tl.load(x_ptr + start + i + offs, eviction_policy="evict_first").to(tl.float32)
        else:
            acc += tl.load(x_ptr + start + i + offs).to(tl.float32)
    tl.store(out_ptr + tl.program_id(0), tl.sum(acc, axis=0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=1024, help="bytes read per launch, MB (2^20)")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--out")
    args = ap.parse_args()
    n = args.mb * 2**20 // 2  # bf16 elements
    bufs = [torch.randn(n, dtype=torch.bfloat16, device="cuda") for _ in range(2)]
    which = [0]

    def next_buf() -> torch.Tensor:
        which[0] ^= 1
        return bufs[which[0]]

    rows = [
        {"what": "copy (read + write counted)", "gbs": round(copy_bandwidth_gbs(torch.device("cuda")), 1)}
    ]
    us = 1e3 * median_ms(lambda: next_buf().sum(dtype=torch.float32), args.iters)
    rows.append({"what": "torch sum", "us": round(us, 1), "gbs": round(2 * n / us / 1e3, 1)})
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    for warps in (4, 8):
        for block in (1024, 2048, 4096, 8192):
            for per_sm in (4, 8, 16, 64):
                programs = sms * per_sm
                per_program = -(-n // programs)
                per_program = -(-per_program // block) * block
                programs = n // per_program  # whole steps only: a few tail elements unread
                out = torch.empty(programs, dtype=torch.float32, device="cuda")
                for evict in (True, False):

                    def launch(
                        out=out,
                        programs=programs,
                        per_program=per_program,
                        block=block,
                        evict=evict,
                        warps=warps,
                    ):
                        _read_kernel[(programs,)](
                            next_buf(), out, per_program, BLOCK=block, EVICT_FIRST=evict, num_warps=warps
                        )

                    us = 1e3 * median_ms(launch, args.iters)
                    read = programs * per_program * 2
                    rows.append(
                        {
                            "what": f"triton {warps} warps, BLOCK {block}, {per_sm} per SM, evict_first {evict}",
                            "us": round(us, 1),
                            "gbs": round(read / us / 1e3, 1),
                        }
                    )
    name = torch.cuda.get_device_name(0)
    print(f"### {name}: {args.mb} MB read per launch, median of {args.iters}")
    print("| what | us | GB/s |\n|---|---|---|")
    for r in rows:
        print(f"| {r['what']} | {r.get('us', '-')} | {r['gbs']} |")
    triton_rows = [r for r in rows if r["what"].startswith("triton")]
    best = max(triton_rows, key=lambda r: r["gbs"])
    print(
        f"\nbest read: {best['what']}: {best['gbs']} GB/s; copy {rows[0]['gbs']} GB/s; torch sum {rows[1]['gbs']} GB/s"
    )
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"gpu": name, "mb": args.mb, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
