"""The one reader of the RUNTIME_* switches that name a choice: read at every call (so one process can
A/B them), empty meaning the default, and an unknown value refused with the switch's name and its
choices.
"""

from __future__ import annotations

import os
from collections.abc import Iterable


def env_choice(name: str, choices: Iterable[str], default: str) -> str:
    """The value of environment variable `name`, one of `choices` (the default where unset or empty)."""
    options = tuple(choices)
    choice = os.environ.get(name, default) or default
    if choice not in options:
        listed = f"{options[0]} or {options[1]}" if len(options) == 2 else f"one of {', '.join(options)}"
        raise ValueError(f"{name}={choice!r}: choose {listed}")
    return choice
