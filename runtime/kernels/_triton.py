"""Optional Triton import shared by the kernel files.

The plain-torch references must work where Triton is absent (CPU-only installs, macOS), so the
kernel files import Triton through here: without it `jit` leaves the function undecorated and
`AVAILABLE` is False, and the dispatcher never calls a kernel. Kernel files use
`from __future__ import annotations`, so `tl.constexpr` annotations are never evaluated at import.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import torch

from runtime.kernels.switches import env_choice

try:
    import triton
    import triton.language as tl

    AVAILABLE = True
except ImportError:  # the references still work
    triton = None
    tl = None
    AVAILABLE = False

try:  # griddepcontrol (programmatic dependent launch): sm_90 and later, Triton >= 3.3
    from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait
except ImportError:
    gdc_launch_dependents = gdc_wait = None


def _index_fix_for_interpreter() -> None:
    """Under TRITON_INTERPRET=1 a scalar is a 1-element NumPy array, and NumPy >= 2.4 refuses to
    turn one into an index, so `range(pid, n, step)` with runtime bounds fails in the interpreter
    (compiled kernels are unaffected). Re-point the interpreter's __index__ at the single element."""
    from triton.runtime import interpreter

    original = getattr(interpreter, "_patch_lang_tensor", None)
    if original is None or getattr(original, "_index_fixed", False):
        return  # another Triton version: nothing to re-point

    def patch(tensor, scope) -> None:
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    patch._index_fixed = True
    interpreter._patch_lang_tensor = patch


# the CPU interpreter (tests): kernels then take CPU tensors and avoid bf16 tl.dot
INTERPRETING = AVAILABLE and os.environ.get("TRITON_INTERPRET") == "1"
if INTERPRETING:
    _index_fix_for_interpreter()


def jit(fn: Callable[..., Any]) -> Any:
    """triton.jit where Triton imports; the bare function otherwise (never launched then)."""
    return triton.jit(fn) if AVAILABLE else fn


# ---------------------------------------------------------------- programmatic dependent launch
# A decode step is a chain of small kernels; between two of them the card idles while the first
# drains and the second is launched and ramps up. Launched with PDL, a kernel's programs may start
# while the kernel before it still runs: they load what no earlier kernel writes (weights) and
# then wait (griddepcontrol.wait) until the previous kernel has finished and its writes are
# visible. Each PDL kernel waits before it reads an activation or writes anything, and lets the
# next kernel launch only after its own wait, so at most two kernels overlap and every kernel
# still sees all earlier writes (the previous kernel itself waited for the one before). Kernels
# launched without PDL (cuBLAS, torch) keep the usual full serialisation on both sides.
# RUNTIME_PDL picks when a kernel lets the next one launch: "early" (right after its wait),
# "late" (after its main loop: pdl_release; the default, fastest in the H100 A/B of
# notes/kernels.md), or "0" (no PDL).
PDL_MODES = {"0": 0, "early": 1, "late": 2}
PDL_DEFAULT = "late"


@functools.lru_cache(maxsize=8)
def _capability(index: int) -> tuple[int, int]:
    return torch.cuda.get_device_capability(index)


def pdl(device: torch.device, early: bool = False) -> dict[str, int | bool]:
    """Launch arguments for a kernel that takes a `PDL: tl.constexpr` and calls pdl_wait (and
    pdl_release): the RUNTIME_PDL mode (read at every call, so one process can A/B it) on CUDA
    cards of compute capability >= 9.0 (Hopper, Blackwell); elsewhere (older cards, the CPU
    interpreter) off. early: the early release where PDL is on (released_early)."""
    mode = PDL_MODES[env_choice("RUNTIME_PDL", PDL_MODES, PDL_DEFAULT)]
    if (
        mode == 0
        or gdc_wait is None
        or INTERPRETING
        or device.type != "cuda"
        or _capability(device.index if device.index is not None else torch.cuda.current_device()) < (9, 0)
    ):
        return {"PDL": 0}
    launch = {"PDL": mode, "launch_pdl": True}
    return released_early(launch) if early else launch


def released_early(launch: dict[str, int | bool]) -> dict[str, int | bool]:
    """A pdl() launch changed to the early release (right after the kernel's wait) where PDL is on:
    for one kernel whose dependent has loads worth starting while it drains."""
    return {**launch, "PDL": PDL_MODES["early"]} if launch.get("PDL") else launch


@jit
def pdl_wait(PDL: tl.constexpr):
    """Wait for the previous kernel (its writes are visible after this); in the early mode, then let
    the next one launch. Call before the first load of an activation and before any store."""
    if PDL:
        gdc_wait()
        if PDL == 1:
            gdc_launch_dependents()


@jit
def pdl_release(PDL: tl.constexpr):
    """The late mode: let the next kernel launch (after the main loop, before the last stores).
    A kernel that never calls it releases the next one when it exits."""
    if PDL == 2:
        gdc_launch_dependents()


@jit
def pdl_release_if(flag, PDL: tl.constexpr):
    """Let the next kernel launch now if `flag` (a runtime scalar, the same in every program): for a
    kernel whose release point depends on the step's data. Each program calls it once with flag and
    once with its negation, so the release happens exactly once, at one of the two points."""
    if PDL:
        if flag:
            gdc_launch_dependents()


def next_pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


__all__ = [
    "AVAILABLE",
    "INTERPRETING",
    "cdiv",
    "jit",
    "next_pow2",
    "pdl",
    "pdl_release",
    "pdl_release_if",
    "released_early",
    "pdl_wait",
    "tl",
    "triton",
]
