"""The attention block of a decoder layer: packed qkv in, the attention's output (before o_proj, which
the layer applies: decoder.py joins it to the residual) out, for prefill (eager or padded to a length
bucket) and for the captured decode step; and the KV cache write of a padded prompt.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn as nn

from runtime.kernels import ops
from runtime.models.norm import RMSNorm
from runtime.models.spec import ModelSpec


class KVCacheLike(Protocol):
    k: list[torch.Tensor]  # per layer (B_max, Hkv, S_layer, D)
    v: list[torch.Tensor]


class Attention(nn.Module):
    def __init__(self, spec: ModelSpec, layer: int):
        super().__init__()
        self.layer = layer
        self.heads, self.kv_heads, self.head_dim = spec.heads, spec.kv_heads, spec.head_dim
        self.window = spec.sliding_window[layer]
        self.scale = spec.softmax_scale
        self.qkv = nn.Linear(spec.hidden, spec.q_size + 2 * spec.kv_size, bias=spec.qkv_bias)
        self.o_proj = nn.Linear(spec.q_size, spec.hidden, bias=False)
        self.q_norm = RMSNorm(spec.head_dim, spec.norm_eps, spec.norm_offset) if spec.qk_norm else None
        self.k_norm = RMSNorm(spec.head_dim, spec.norm_eps, spec.norm_offset) if spec.qk_norm else None
        self.eps, self.offset = spec.norm_eps, spec.norm_offset

    def _qk_args(self) -> tuple:
        """The q/k-norm arguments of ops.qkv_rope: (q weight, k weight, eps, offset); no weights = no norm."""
        if self.q_norm is None:
            return None, None, self.eps, self.offset
        return self.q_norm.weight, self.k_norm.weight, self.eps, self.offset

    def prefill(self, qkv, cos, sin, cache: KVCacheLike, row: int, start: int) -> torch.Tensor:
        """qkv (1, T, q + 2 kv) projected rows at positions [start, start + T) of cache row `row`
        -> attention (1, T, q), before o_proj."""
        T = qkv.shape[1]
        q, k, v = ops.qkv_rope(qkv, self.heads, self.kv_heads, cos, sin, *self._qk_args())
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (1, H|Hkv, T, D)
        k_cache = cache.k[self.layer][row : row + 1]
        v_cache = cache.v[self.layer][row : row + 1]
        size = k_cache.shape[2]
        q_pos = torch.arange(start, start + T, device=qkv.device)
        if self.window is None:
            k_cache[:, :, start : start + T] = k
            v_cache[:, :, start : start + T] = v
            keys, values = k_cache[:, :, : start + T], v_cache[:, :, : start + T]
            k_pos = torch.arange(start + T, device=qkv.device)
        else:
            # ring: slot s holds the latest position p < start with p % size == s (or nothing)
            if start:
                slots = torch.arange(size, device=qkv.device)
                ring_pos = (start - 1) - torch.remainder(start - 1 - slots, size)
                keys = torch.cat((k_cache, k), dim=2)
                values = torch.cat((v_cache, v), dim=2)
                k_pos = torch.cat((ring_pos, q_pos))
            else:
                keys, values, k_pos = k, v, q_pos
            keep = min(T, size)  # only the newest `size` tokens can ever be seen again
            slots_new = torch.remainder(q_pos[T - keep :], size)
            k_cache.index_copy_(2, slots_new, k[:, :, T - keep :])
            v_cache.index_copy_(2, slots_new, v[:, :, T - keep :])
        out = ops.prefill_attention(
            q, keys, values, q_pos, k_pos, self.scale, self.window, from_start=start == 0
        )
        return out.transpose(1, 2).reshape(1, T, -1)

    def prefill_padded(
        self, qkv, cos, sin, cache: KVCacheLike, row: torch.Tensor, n: torch.Tensor
    ) -> torch.Tensor:
        """qkv (1, T, q + 2 kv) at positions [0, T), of which the first n[0] are the prompt and the
        rest padding; row (1,) and n (1,) on the device -> attention (1, T, q), before o_proj.
        # graph: no host reads, shapes fixed by T
        Causal attention never lets a prompt token see the padding after it; the cache write keeps
        the padding out of every slot the decode steps will read (write_prompt_kv)."""
        T = qkv.shape[1]
        q, k, v = ops.qkv_rope(qkv, self.heads, self.kv_heads, cos, sin, *self._qk_args())
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (1, H|Hkv, T, D)
        write_prompt_kv(cache.k[self.layer], k, row, n)
        write_prompt_kv(cache.v[self.layer], v, row, n)
        pos = torch.arange(T, device=qkv.device)
        out = ops.prefill_attention(q, k, v, pos, pos, self.scale, self.window, from_start=True)
        return out.transpose(1, 2).reshape(1, T, -1)

    def decode(self, qkv, cos, sin, cache: KVCacheLike, positions: torch.Tensor) -> torch.Tensor:
        """qkv (B, 1, q + 2 kv); positions (B,) on the device -> attention (B, 1, q), before o_proj."""
        return self.attend_decode(qkv, cos, sin, cache, positions).reshape(qkv.shape[0], 1, -1)

    def attend_decode(
        self, qkv, cos, sin, cache: KVCacheLike, positions, norm_source=None, norm_eps: float = 0.0
    ) -> torch.Tensor:
        """qkv (B, 1, q + 2 kv) -> attention (B, H, D), before o_proj.  # graph: no host reads
        One op from the packed qkv row: q/k-norm, rope, k and v into cache slot positions % S (the
        ring of a sliding layer, the plain slot of a global one), attention over min(pos + 1, S).
        norm_source (B, hidden): the un-normed rows qkv was projected from (folded_norms.py)."""
        B = qkv.shape[0]
        k_cache, v_cache = cache.k[self.layer][:B], cache.v[self.layer][:B]
        return ops.qkv_decode_attention(
            qkv, self.heads, self.kv_heads, cos, sin, *self._qk_args(), k_cache, v_cache, positions,
            self.scale, norm_source, norm_eps,
        )  # fmt: skip


def write_prompt_kv(cache: torch.Tensor, kv: torch.Tensor, row: torch.Tensor, n: torch.Tensor) -> None:
    """kv (1, Hkv, T, D) of positions [0, T), the first n[0] real, into cache (B_max, Hkv, S, D)
    row row[0], slot = position % S.  # graph: row and n stay on the device
    T <= S: positions [0, T) go to slots [0, T); the padding's slots lie past the live length, and
    each decode step writes its slot before reading it. T > S (a ring shorter than the prompt):
    positions [n - S, n), the last S real ones; those below 0 land in slots [n, S), past the
    live length too."""
    _, Hkv, S, D = cache.shape
    T = kv.shape[2]
    if T <= S:  # one indexed copy into the row's first T slots
        cache[:, :, :T].index_copy_(0, row, kv)
        return
    pos = torch.arange(S, device=kv.device) + (n - S)
    slots = torch.remainder(pos, S)
    flat = (row * Hkv + torch.arange(Hkv, device=kv.device)[:, None]) * S + slots[None, :]  # (Hkv, S)
    cache.view(-1, D).index_copy_(0, flat.reshape(-1), kv[0][:, pos.clamp(min=0)].reshape(-1, D))
