"""CPU: what a decode step's Triton kernels compile to on a GPU target, without the GPU.

Records the launches of one model's decode step at a batch size (on the meta device, as
tests/test_kernels_compile.py records them, with its per-target SM count and PDL), builds the
kernels whose name contains --kernel for the target with Triton's bundled ptxas, and prints per
build: registers, spills, shared memory, and for each loop (a backward branch in the SASS) its
length in instructions per warp and the instructions that cost a loop its latency: barriers
(BAR), shared-memory loads and stores (LDS, STS, LDSM), tensor-core MMAs (HMMA), shuffles,
special-function ops (MUFU), asynchronous copies (LDGSTS). With --order, also the PTX's order of
global loads, barriers and the PDL wait before the first loop: which loads go out as one group.

  python3 scripts/kernel_sass.py --model Qwen/Qwen3-1.7B --batch 16 --kernel split RUNTIME_ATTN_STAGES=4

KEY=VALUE arguments are runtime switches set while the step is recorded.
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

try:  # it skips itself (a pytest exception) without a compiling Triton
    import test_kernels_compile as compile_tests  # noqa: E402
except BaseException as e:  # noqa: BLE001
    sys.exit(f"kernel_sass.py needs Triton, compiling (not TRITON_INTERPRET=1): {e}")

COUNTED = ("BAR", "LDS", "STS", "LDSM", "HMMA", "SHFL", "MUFU", "LDGSTS")
INSTRUCTION = re.compile(r"^\s+/\*[0-9a-f]{4}\*/\s*(?:@!?U?P\w+\s+)?([A-Z0-9_.]+)")
LABEL = re.compile(r"^\s*\.L_x_(\d+):")


def loops(sass: str) -> list[tuple[int, collections.Counter]]:
    """(instructions, opcode counts) of each loop: from a label to a later branch back to it."""
    lines = sass.splitlines()
    labels = {m.group(1): i for i, line in enumerate(lines) if (m := LABEL.match(line))}
    found = []
    for i, line in enumerate(lines):
        target = re.search(r"BRA(?:\.\w+)*\s.*\.L_x_(\d+)", line)  # BRA, BRA.U (sm_120)
        if target and labels.get(target.group(1), i) < i:
            ops = [
                m.group(1).split(".")[0]
                for s in lines[labels[target.group(1)] : i + 1]
                if (m := INSTRUCTION.match(s))
            ]
            found.append((len(ops), collections.Counter(ops)))
    return found


def sass_and_usage(kernel, arch: int) -> tuple[str, str]:
    """(SASS, ptxas -v report: registers and spills) of a Triton-compiled kernel for sm_<arch>, with
    Triton's bundled nvdisasm and ptxas."""
    from triton.backends.nvidia.compiler import get_ptxas

    ptxas = Path(get_ptxas(arch).path)
    with tempfile.TemporaryDirectory() as tmp:
        cubin, ptx = Path(tmp) / "kernel.cubin", Path(tmp) / "kernel.ptx"
        cubin.write_bytes(kernel.asm["cubin"])
        ptx.write_text(kernel.asm["ptx"])
        sass = subprocess.run([ptxas.parent / "nvdisasm", "-c", cubin], capture_output=True, text=True).stdout
        gpu = f"sm_{arch}{'a' if arch == 90 else ''}"
        usage = subprocess.run(
            [ptxas, f"-arch={gpu}", "-v", ptx, "-o", cubin], capture_output=True, text=True
        )
    return sass, usage.stderr


def load_order(ptx: str) -> str:
    """The PTX's global loads (runs counted), barriers and PDL wait before its first loop, e.g.
    "ld x6, wait, ld x4, bar x2, ld x2": a load after a barrier is issued only once the barrier passes."""
    events: list[list] = []
    for line in ptx.splitlines():
        if "Loop Header" in line:
            break
        op = re.sub(r"^@!?%p\d+\s+", "", line.strip()).split(" ")[0].rstrip(";")
        kind = (
            "ld" if op.startswith("ld.global")
            else "bar" if op.startswith("bar.sync")
            else "wait" if op.startswith("griddepcontrol.wait")
            else None
        )  # fmt: skip
        if kind is None:
            continue
        if events and events[-1][0] == kind:
            events[-1][1] += 1
        else:
            events.append([kind, 1])
    return ", ".join(k if n == 1 else f"{k} x{n}" for k, n in events)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="meta-llama/Llama-3.2-1B-Instruct")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--kernel", default="split", help="a part of the kernel names to build")
    ap.add_argument("--target", default="sm_90", choices=[t.name for t in compile_tests.TARGETS])
    ap.add_argument("--order", action="store_true", help="print the load order before the first loop")
    ap.add_argument("--shipped", action="store_true", help="the GEMV blocks shipped for the target's card")
    ap.add_argument("switches", nargs="*", help="KEY=VALUE runtime switches")
    args = ap.parse_args()
    target = next(t for t in compile_tests.TARGETS if t.name == args.target)
    env = dict(s.split("=", 1) for s in args.switches)
    blocks = compile_tests.shipped_gemv(target.capability) if args.shipped else None
    with compile_tests.recording(target) as rec, compile_tests.setting(rec, "sass", env, blocks):
        compile_tests.decode(compile_tests.model(args.model), args.batch)
    for launch in rec.launches.values():
        if args.kernel not in launch.fn.fn.__name__:
            continue
        kernel = launch.build(target.gpu)
        sass, usage = sass_and_usage(kernel, target.gpu.arch)
        regs = re.search(r"Used (\d+) registers", usage)
        spill = re.search(r"(\d+) bytes spill stores", usage)
        print(
            f"{launch.fn.fn.__name__} warps {launch.options.num_warps} stages {launch.options.num_stages} "
            f"registers {regs.group(1) if regs else '?'} spills {spill.group(1) if spill else '?'} "
            f"shared {kernel.metadata.shared} B; {compile_tests.describe(launch)}"
        )
        if args.order:
            print(f"  before the first loop: {load_order(kernel.asm['ptx'])}")
        for length, ops in loops(sass):
            if length > 1:
                print(
                    f"  loop: {length} instructions per warp, " + ", ".join(f"{k} {ops[k]}" for k in COUNTED)
                )


if __name__ == "__main__":
    main()
