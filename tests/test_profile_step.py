"""scripts/profile_step.py's settings given on the command line (--setting), without a GPU."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "profile_step.py"
spec = importlib.util.spec_from_file_location("profile_step", SCRIPT)
profile_step = importlib.util.module_from_spec(spec)
spec.loader.exec_module(profile_step)


def test_a_setting_from_the_command_line_gathers_its_variables():
    """NAME::RUNTIME_VAR=VALUE, the value itself holding '=' and ':' (a GEMV blocks entry); the
    same NAME again adds a variable to that setting."""
    extra = profile_step.extra_settings(
        [
            "qkv 4/512/4::RUNTIME_GEMV_BLOCKS=norm_linear:3072x2048=4/512/4",
            "qkv 4/512/4::RUNTIME_PDL=late",
            "no prefetch::RUNTIME_ATTN_PREFETCH=0",
        ]
    )
    assert extra == {
        "qkv 4/512/4": {"RUNTIME_GEMV_BLOCKS": "norm_linear:3072x2048=4/512/4", "RUNTIME_PDL": "late"},
        "no prefetch": {"RUNTIME_ATTN_PREFETCH": "0"},
    }


@pytest.mark.parametrize(
    "spec, why",
    [
        ("no separator", "NAME::RUNTIME_VAR=VALUE"),
        ("name::PATH=/tmp", "NAME::RUNTIME_VAR=VALUE"),  # only the runtime's own switches
        ("a,b::RUNTIME_PDL=late", "no comma"),  # --settings splits on commas: never choosable
        ("default::RUNTIME_PDL=late", "one of SETTINGS already"),
    ],
)
def test_a_malformed_setting_is_refused_by_name(spec, why):
    with pytest.raises(ValueError, match=why):
        profile_step.extra_settings([spec])
