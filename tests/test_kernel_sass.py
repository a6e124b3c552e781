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


PTX = """
@%p1 ld.global.L1::evict_first.L2::cache_hint.v4.b32 { %r20, %r21, %r22, %r23 }, [ %rd9 + 0 ], %rd8;
@%p1 ld.global.v4.b32 { %r25, %r26, %r27, %r28 }, [ %rd11 + 0 ];
griddepcontrol.wait; // dummy %r37
@%p2 ld.global.v4.b32 { %r38, %r39, %r40, %r41 }, [ %rd16 + 0 ];
st.shared.v2.b32 [ %r5 + 0 ], { %r6, %r7 };
bar.sync 	0;
bar.sync 	0;
@!%p6 ld.global.v2.b32 { %r50, %r51 }, [ %rd18 + 0 ];
@%p10 bra 	$L__BB0_3;
$L__BB0_2:                              // %.lr.ph
// =>This Inner Loop Header: Depth=1
@%p11 ld.global.v2.b32 { %r172, %r173 }, [ %rd31 + 0 ];
bar.sync 	0;
"""


def test_load_order_stops_at_the_first_loop():
    """Runs of global loads, barriers and the PDL wait, predicates stripped, counted up to the first
    loop header (the loop's own load and barrier are not part of it); shared stores are not listed."""
    assert kernel_sass.load_order(PTX) == "ld x2, wait, ld, bar x2, ld"
