"""The first layers' K/V caches kept in L2 across decode steps. Past the L2 spill position
(attention_plan.l2_spill_position) a step's whole cache no longer fits L2 and, read in the same
order every step, each layer's blocks are evicted before the next step comes back to them: every
attention reads its cache from DRAM. Loads with the evict-last priority stay in L2's set-aside for
persisting lines (CUDA's persisting-L2 limit), so the runner asks for a set-aside and the
attention of the first layers whose caches fit it reads them evict-last (qkv_attention.py); the
other layers and every other load use the rest of L2 as before.

RUNTIME_ATTN_KV_L2: the share of the card's L2 to set aside (default 0: none, no limit touched).
The limit belongs to the process (its CUDA context), not the card: it ends with the process, and
the runner gives back the limit it found when it is released.
"""

from __future__ import annotations

import ctypes
import functools
import os

import torch

from runtime.kernels._triton import INTERPRETING

_LIMIT_PERSISTING_L2 = 0x06  # CUlimit CU_LIMIT_PERSISTING_L2_CACHE_SIZE
_ATTR_MAX_PERSISTING_L2 = 108  # CUdevice_attribute CU_DEVICE_ATTRIBUTE_MAX_PERSISTING_L2_CACHE_SIZE

_kept: set[int] = set()  # data_ptr of each kept layer's K and V cache (all rows)


@functools.lru_cache(maxsize=1)
def _driver() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None


def _check(status: int, what: str) -> None:
    if status != 0:
        raise RuntimeError(f"{what} failed with CUDA driver status {status}")


def max_set_aside(device: torch.device) -> int:
    """The most bytes of L2 this card can set aside for persisting lines; 0 off CUDA."""
    cuda = _driver()
    if device.type != "cuda" or cuda is None or INTERPRETING:
        return 0
    value = ctypes.c_int(0)
    index = device.index if device.index is not None else torch.cuda.current_device()
    _check(
        cuda.cuDeviceGetAttribute(ctypes.byref(value), _ATTR_MAX_PERSISTING_L2, index),
        "reading the L2 set-aside",
    )
    return value.value


def set_aside(device: torch.device, nbytes: int) -> int:
    """Sets the process's persisting-L2 limit on `device` to nbytes; returns the limit before."""
    cuda = _driver()
    with torch.cuda.device(device):
        torch.cuda.init()
        torch.cuda.synchronize()  # the primary context is current on this thread from here
        before = ctypes.c_size_t(0)
        _check(cuda.cuCtxGetLimit(ctypes.byref(before), _LIMIT_PERSISTING_L2), "reading the L2 set-aside")
        _check(cuda.cuCtxSetLimit(_LIMIT_PERSISTING_L2, ctypes.c_size_t(nbytes)), "setting the L2 set-aside")
    return before.value


def requested_share() -> float:
    share = float(os.environ.get("RUNTIME_ATTN_KV_L2") or 0.0)
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"RUNTIME_ATTN_KV_L2={share}: a share of the L2 cache, between 0 and 1")
    return share


def kept_layers(layer_bytes: list[int], budget: int) -> int:
    """How many of the first layers' caches (layer_bytes: K and V of each) fit `budget` together."""
    total = 0
    for count, size in enumerate(layer_bytes):
        total += size
        if total > budget:
            return count
    return len(layer_bytes)


def keep(k: list[torch.Tensor], v: list[torch.Tensor], device: torch.device) -> tuple[int, int | None]:
    """Sets aside RUNTIME_ATTN_KV_L2 of L2 (capped by the card) and marks the first layers whose
    first row's K and V (k[i][0], v[i][0]: (kv heads, slots, D)) fit it as kept: a batch-1 step
    reads that row only. Returns (kept layers, the limit found before, to give back; None where
    nothing was set)."""
    _kept.clear()
    share = requested_share()
    cap = max_set_aside(device)
    if share <= 0.0 or cap <= 0:
        return 0, None
    budget = min(cap, int(share * torch.cuda.get_device_properties(device).L2_cache_size))
    count = kept_layers([kt[0].nbytes + vt[0].nbytes for kt, vt in zip(k, v)], budget)
    before = set_aside(device, budget)
    _kept.update(t.data_ptr() for t in (*k[:count], *v[:count]))
    return count, before


def release(device: torch.device, before: int | None) -> None:
    """Gives back the limit `keep` found (before; None: nothing was set) and forgets the kept caches."""
    _kept.clear()
    if before is not None:
        set_aside(device, before)


def is_kept(cache: torch.Tensor) -> bool:
    """Whether a batch-1 step reads this layer's cache (its first row, (1, kv heads, slots, D))
    evict-last; batch buckets read more rows than the set-aside was sized for."""
    return cache.shape[0] == 1 and cache.data_ptr() in _kept
