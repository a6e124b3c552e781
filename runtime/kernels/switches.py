"""The readers of the RUNTIME_* switches that name a choice or a power of two: read at every call
(so one process can A/B them), empty meaning the default, and an unknown value refused with the
switch's name and its choices.
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


def env_power_of_two(name: str, default: int, low: int, high: int) -> int:
    """The value of environment variable `name` as a power of two in [low, high] (the default
    where unset or empty); anything else is refused by name."""
    raw = os.environ.get(name) or ""
    if not raw:
        return default
    value = power_of_two(raw, low, high)
    if value is None:
        raise ValueError(f"{name}={raw!r}: choose a power of two from {low} to {high}")
    return value


def power_of_two(text: str, low: int, high: int) -> int | None:
    """`text` as a power of two in [low, high], or None where it is not one."""
    value = int(text) if text.isdigit() else 0
    return None if value < low or value > high or value & (value - 1) else value
