"""scripts/kernel_sass.py's loop finder, on a hand-written SASS listing."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("triton")
from runtime.kernels import _triton  # noqa: E402

if _triton.INTERPRETING:
    pytest.skip("the script needs a compiling Triton", allow_module_level=True)

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "kernel_sass.py"
spec = importlib.util.spec_from_file_location("kernel_sass", SCRIPT)
kernel_sass = importlib.util.module_from_spec(spec)
spec.loader.exec_module(kernel_sass)

SASS = """
        /*0000*/                   LDC R1, c[0x0][0x28] ;
.L_x_3:
        /*0010*/                   LDGSTS.E.BYPASS.128 [R2], desc[UR4][R4.64] ;
        /*0020*/                   BAR.SYNC.DEFER_BLOCKING 0x0 ;
        /*0030*/              @!P0 LDS.64 R6, [R3] ;
        /*0040*/                   HMMA.16816.F32.BF16 R8, R12, R14, R8 ;
        /*0050*/               @P1 BRA `(.L_x_3) ;
        /*0060*/                   BRA `(.L_x_4) ;
.L_x_4:
        /*0070*/                   EXIT ;
"""


def test_loops_are_the_spans_that_branch_back():
    """One loop (label 3 to the branch back to it), its instructions counted with their predicates
    stripped; the forward branch to label 4 is no loop."""
    [(length, ops)] = kernel_sass.loops(SASS)
    assert length == 5
    assert (ops["LDGSTS"], ops["BAR"], ops["LDS"], ops["HMMA"], ops["BRA"]) == (1, 1, 1, 1, 1)
