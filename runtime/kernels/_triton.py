"""Optional Triton import shared by the kernel files.

The plain-torch references must work where Triton is absent (CPU-only installs, macOS), so the
kernel files import Triton through here: without it `jit` leaves the function undecorated and
`AVAILABLE` is False, and the dispatcher never calls a kernel. Kernel files use
`from __future__ import annotations`, so `tl.constexpr` annotations are never evaluated at import.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

try:
    import triton
    import triton.language as tl

    AVAILABLE = True
except ImportError:  # the references still work
    triton = None
    tl = None
    AVAILABLE = False


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


def next_pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


__all__ = ["AVAILABLE", "INTERPRETING", "cdiv", "jit", "next_pow2", "tl", "triton"]
