"""scripts/step_timeline.py's trace reading and layer-period detection, on a synthetic trace."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent.parent / "scripts" / "step_timeline.py"


def _module():
    spec = importlib.util.spec_from_file_location("step_timeline", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_kernels_in_start_order_and_the_layer_period(tmp_path):
    st = _module()
    layer = ["qkv", "split", "merge", "o", "gate_up", "down"]
    names = ["embed", *layer * 8, "lm_head", "argmax"]
    events, t = [{"ph": "X", "cat": "cpu_op", "name": "aten::mm", "ts": 0, "dur": 5}], 10.0
    for name in names:
        events.append(
            {"ph": "X", "cat": "kernel", "name": name, "ts": t, "dur": 2.0, "args": {"grid": [4, 1, 1]}}
        )
        t += 1.5  # overlapping, as under PDL
    events.reverse()  # the trace's order is not the launch order
    path = tmp_path / "trace.json"
    path.write_text(json.dumps({"traceEvents": events}))
    kernels = st.step_kernels(str(path))
    assert [k["name"] for k in kernels] == names  # cpu ops dropped, sorted by start
    assert kernels[1]["grid"] == (4, 1, 1) and kernels[1]["end"] - kernels[1]["start"] == 2.0
    assert st.period(names) == 6
    assert st.period(["a", "b", "c", "d", "e", "f", "g", "h"]) == 8  # nothing repeats: the whole step


def test_position_and_role_medians_from_profiled_steps():
    """Three steps of 2 + 3 x 2 kernels: each kernel's adds is its end minus the previous one's
    (across the step boundary for the first), overlap the previous end minus its start; roles
    take positions modulo the layer period."""
    st = _module()
    names = ["embed", "a", "b", "a", "b", "a", "b", "head"]
    steps, t = [], 0.0
    for _ in range(3):
        step = []
        for name in names:
            dur = 3.0 if name == "b" else 2.0
            step.append({"name": name, "grid": (1, 1, 1), "start": t, "end": t + dur})
            t += dur - 0.5  # each starts 0.5 us before the previous one ends
        steps.append(step)
    rows = st.position_rows(steps)
    assert [r["name"] for r in rows] == names
    assert rows[1] == {"i": 1, "name": "a", "grid": [1, 1, 1], "dur": 2.0, "adds": 1.5, "overlap": 0.5}
    assert rows[2]["adds"] == 2.5 and rows[0]["adds"] == 1.5  # the first: from the last step's head
    period, roles = st.role_rows(rows)
    assert period == 2
    assert {r["name"]: (r["dur"], r["adds"]) for r in roles} == {"a": (2.0, 1.5), "b": (3.0, 2.5)}


def test_two_readings_of_a_step_compared_position_by_position(capsys):
    """A slow and a fast reading whose "b" kernels add 1 us more in the slow one: each position's
    delta, the largest first in the table, and per role the difference."""
    st = _module()
    names = ["embed", "a", "b", "a", "b", "a", "b", "a", "b", "head"]
    fast = [
        {"i": i, "name": n, "grid": [1, 1, 1], "dur": 2.0, "adds": 1.5, "overlap": 0.5}
        for i, n in enumerate(names)
    ]
    slow = [dict(r, adds=r["adds"] + (1.0 if r["name"] == "b" else 0.0)) for r in fast]
    result = st.compare_steps(slow, fast, shown=3)
    assert [d["delta"] for d in result["positions"]] == [1.0 if n == "b" else 0.0 for n in names]
    roles = {
        a["name"]: a["adds"] - b["adds"] for a, b in zip(result["roles"]["slow"], result["roles"]["fast"])
    }
    assert roles == {"a": 0.0, "b": 1.0}
    table = capsys.readouterr().out
    assert table.count("| +1.00 |") == 3 + 1  # the three positions shown, then the role


def test_the_slowest_and_fastest_reading_are_profiled_only_past_the_spread(capsys):
    st = _module()
    steps = [
        [
            {"name": n, "grid": (1, 1, 1), "start": 2.0 * i, "end": 2.0 * i + 2.0}
            for i, n in enumerate("ab" * 3)
        ]
    ]
    asked = []

    def profile(i):
        asked.append(i)
        return steps * 2

    quiet = st.compare_slowest([1.000, 1.004, 1.002], "graph", profile, min_us=10.0)
    assert quiet == {"slow": 1, "fast": 0, "spread_us": pytest.approx(4.0)} and asked == []
    loud = st.compare_slowest([1.020, 1.004, 1.050], "runner", profile, min_us=10.0)
    assert (loud["slow"], loud["fast"], asked) == (2, 1, [2, 1])
    assert "positions" in loud and "slowest runner 2, fastest 1" in capsys.readouterr().out
