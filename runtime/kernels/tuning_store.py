"""GEMV block choices kept on disk, so a start on a known card neither compiles nor times candidates.

Two JSON sources, read by gemv_tuning.tune_shapes:
  the user's store  one file per card key (GPU name, compute capability, triton, torch, FORMAT,
                    TIMING) under sources.cache_root(), written after tune() measured (and the step
                    chose: runtime/engine/step_tuning.py, which also writes its role lists there);
                    any change of the key re-tunes
  shipped choices   runtime/kernels/tuned/*.json, applied where GPU name and capability match whatever
                    the triton and torch versions: blocks that won stay valid, only maybe not the fastest
A file maps (op, N, K, dtype name) to [BLOCK_N, BLOCK_K, num_warps] and the measured us (for the
record). A shipped file may also hold lists of batch-1 projections, "role:NxK" each (W of (N, K)),
that a same-process A/B of the decode step on that card preferred (ROLE_LISTS): "residual_add",
whose GEMV adds the residual in its epilogue (ops.residual_epilogue; role "o" or "down"), and
"early_release", whose GEMV lets the next kernel launch right after its wait (ops.early_release;
role "o", "gate_up" or "down"). Nothing here is fatal: an unreadable file is ignored and an
unwritable folder skipped, each with a one-line warning. Whether a config is still a candidate is
gemv_tuning's check.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from runtime.kernels import _triton
from runtime.kernels.gemv_blocks import _PROLOGUE_VECTORS, DEFAULT_ROLES, ROLE_LISTS, ROLE_SWITCHES
from runtime.models.sources import cache_root

FORMAT = 1  # bump when the file layout or the meaning of a config changes
# bump when tune()'s timing changes: a store timed the old way re-tunes (2: the GPU no longer waits on
# the host inside the timed span, which had made the choices a draw on slow hosts)
TIMING = 2
SHIPPED_DIR = Path(__file__).parent / "tuned"

Key = tuple[str, int, int, torch.dtype]  # (op, N, K, dtype), as fused_linear._TUNED
Config = tuple[int, int, int]  # (BLOCK_N, BLOCK_K, num_warps)
Choices = dict[Key, tuple[Config, float | None]]  # -> (config, measured us or None)


@dataclass(frozen=True)
class Card:
    """What a tuned choice depends on; the store keeps one file per key."""

    name: str  # torch.cuda.get_device_name
    capability: tuple[int, int]
    triton: str
    torch: str

    @property
    def key(self) -> str:
        sm = "".join(map(str, self.capability))
        return f"{slug(self.name)}-sm{sm}-triton{self.triton}-torch{self.torch}-v{FORMAT}-timing{TIMING}"

    def as_json(self) -> dict:
        return {**asdict(self), "capability": list(self.capability)}


def slug(name: str) -> str:
    """A GPU name as a file name: NVIDIA H100 80GB HBM3 -> nvidia-h100-80gb-hbm3."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def card(device) -> Card | None:
    """The card tune() would time on, or None where it times nothing (not CUDA, no compiled Triton)."""
    if torch.device(device).type != "cuda" or not _triton.AVAILABLE or _triton.INTERPRETING:
        return None
    major, minor = torch.cuda.get_device_capability(device)
    return Card(
        torch.cuda.get_device_name(device), (major, minor), _triton.triton.__version__, torch.__version__
    )


def store_path(card: Card) -> Path:
    return cache_root() / "gemv" / f"{card.key}.json"  # the GGUF cache's folder: RUNTIME_CACHE_DIR


# ---------------------------------------------------------------- reading


def load(card: Card) -> Choices:
    """The user's stored choices for exactly this card; {} if none, unreadable or another card's."""
    path = store_path(card)
    got = _read(path)
    if got is None:
        return {}
    if got[0]["card"] != card.as_json():
        warnings.warn(f"{path}: written for another card or version, ignored", stacklevel=2)
        return {}
    return got[1]


def shipped(card: Card) -> Choices:
    """The choices shipped for this card's GPU name and capability; {} if none."""
    got = _shipped(card)
    return {} if got is None else got[2]


def block_overrides(path: Path, dtype: torch.dtype = torch.bfloat16) -> str:
    """A tuning file's `dtype` choices as a RUNTIME_GEMV_BLOCKS value ("op:NxK=BLOCK_N/BLOCK_K/warps"
    entries): another card's blocks forced for an A/B of this card's own (profile_step --blocks-from)."""
    got = _read(Path(path))
    if got is None:
        raise ValueError(f"{path}: no readable tuning file there")
    entries = (
        f"{op}:{N}x{K}={'/'.join(map(str, config))}"
        for (op, N, K, dt), (config, _) in got[1].items()
        if dt == dtype
    )
    return " ".join(sorted(entries))


def role_switches(path: Path) -> dict[str, str]:
    """A tuning file's role lists as the switches that force them ({"RUNTIME_GEMV_EARLY":
    "gate_up:16384x2048,down:2048x8192", ...}), with each list's roles of every shape: what a card
    with this file runs, for an A/B (profile_step --blocks-from). A list the file lacks names none."""
    got = _read(Path(path))
    if got is None:
        raise ValueError(f"{path}: no readable tuning file there")
    return {
        ROLE_SWITCHES[field]: ",".join([*DEFAULT_ROLES[field], *role_list(_roles(path, got[0], field))])
        or "none"
        for field in ROLE_LISTS
    }


def shipped_roles(card: Card, field: str) -> set[tuple[str, int, int]]:
    """The (role, N, K) the file shipped for this card lists under `field` (a ROLE_LISTS key); empty
    if none. A malformed list is ignored with a warning, as an unreadable file is."""
    got = _shipped(card)
    return set() if got is None else _roles(*got[:2], field)


def stored_roles(card: Card, field: str) -> set[tuple[str, int, int]]:
    """The (role, N, K) the user's store for exactly this card lists under `field`: what the decode
    step preferred at an earlier start (runtime/engine/step_tuning.py); empty if none."""
    path = store_path(card)
    got = _read(path)
    if got is None or got[0]["card"] != card.as_json():
        return set()
    return _roles(path, got[0], field)


def _roles(path: Path, doc: dict, field: str) -> set[tuple[str, int, int]]:
    raw = doc.get(field, [])
    try:
        if not isinstance(raw, list):
            raise ValueError(raw)
        return {role_shape(entry, field) for entry in raw}
    except ValueError as e:
        warnings.warn(f"{path}: bad {field} list ignored ({e})", stacklevel=2)
        return set()


def role_shape(entry: str, field: str) -> tuple[str, int, int]:
    """ "down:2048x8192" -> ("down", 2048, 8192), refusing a role `field` does not list, or anything else."""
    roles = ROLE_LISTS[field]
    match = re.fullmatch(rf"({'|'.join(roles)}):(\d+)x(\d+)", str(entry))
    if match is None:
        raise ValueError(f"{entry!r} is not role:NxK with role {' or '.join(roles)}")
    role, n, k = match.groups()
    return role, int(n), int(k)


def role_list(named: set[tuple[str, int, int]]) -> list[str]:
    """{("down", 2048, 8192), ...} -> ["down:2048x8192", ...], sorted: a file's list, as role_shape reads it."""
    return sorted(f"{role}:{n}x{k}" for role, n, k in named)


def _shipped(card: Card) -> tuple[Path, dict, Choices] | None:
    """(path, document, choices) of the readable shipped file for this card's GPU name and
    capability, or None."""
    for path in sorted(SHIPPED_DIR.glob("*.json")):
        got = _read(path)
        if got is not None and _same_gpu(got[0]["card"], card):
            return path, *got
    return None


def _same_gpu(fields: dict, card: Card) -> bool:
    """Whether a file's card fields name this card's GPU and capability (the versions aside)."""
    return fields["name"] == card.name and tuple(fields["capability"]) == card.capability


def _read(path: Path) -> tuple[dict, Choices] | None:
    """(the whole document, its choices); None (a warning unless missing) if it cannot be used."""
    try:
        doc = json.loads(path.read_text())
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError(f"not a format-{FORMAT} tuning file")
        fields = doc["card"]
        if not isinstance(fields["name"], str) or len(fields["capability"]) != 2:
            raise ValueError(f"bad card {fields}")
        return doc, dict(_entry(e) for e in doc["choices"])
    except (FileNotFoundError, NotADirectoryError):  # nothing stored yet
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:  # JSONDecodeError is a ValueError
        warnings.warn(f"{path}: unreadable tuning file ignored ({type(e).__name__}: {e})", stacklevel=3)
        return None


def _entry(e: dict) -> tuple[Key, tuple[Config, float | None]]:
    dtype = getattr(torch, e["dtype"], None)
    config = tuple(e["config"])
    if (
        e["op"] not in _PROLOGUE_VECTORS
        or not isinstance(dtype, torch.dtype)
        or not all(type(v) is int and v > 0 for v in (e["N"], e["K"], *config))
        or len(config) != 3
    ):
        raise ValueError(f"bad entry {e}")
    us = e.get("us")
    return (e["op"], e["N"], e["K"], dtype), (config, None if us is None else float(us))


# ---------------------------------------------------------------- writing


def save(card: Card, choices: Choices, roles: dict[str, list[str]] | None = None) -> bool:
    """Replace this card's store with choices, atomically; False (a warning) if it cannot be written.
    roles: the ROLE_LISTS the step chose ({field: ["role:NxK", ...]}); None keeps the store's own."""
    path = store_path(card)
    if roles is None:
        roles = {field: role_list(stored_roles(card, field)) for field in ROLE_LISTS}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # a temp file in the same folder, so os.replace is a rename: readers see the old or the new file
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                lists = {field: entries for field, entries in roles.items() if entries}
                f.write(dumps({"format": FORMAT, "card": card.as_json(), **lists}, choices))
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError as e:
        warnings.warn(f"GEMV tuning not saved to {path.parent} ({e.strerror or e})", stacklevel=2)
        return False
    return True


def dumps(head: dict, choices: Choices) -> str:
    """head's fields and "choices", one line each (readable diffs of the shipped file), sorted by shape."""
    rows = [
        {"op": op, "N": N, "K": K, "dtype": str(dtype).removeprefix("torch."), "config": list(c), "us": us}
        for (op, N, K, dtype), (c, us) in sorted(choices.items(), key=lambda kv: (*kv[0][:3], str(kv[0][3])))
    ]
    lines = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in head.items()]
    lines.append('  "choices": [\n' + ",\n".join("    " + json.dumps(r) for r in rows) + "\n  ]")
    return "{\n" + ",\n".join(lines) + "\n}\n"
