"""DecoderLM: one decoder for every supported family, parametrised by ModelSpec.

Q/K/V and gate/up are packed into one matrix each. The model owns weights only: the KV cache is
passed in (runtime/engine/state.py), and sampling happens elsewhere. Two entry points:
  prefill(tokens (1, T), cache, row, start) -> logits, eager, one cache row, variable T
  decode(tokens (B,), positions (B,), cache) -> logits (B, V), graph-safe: shapes fixed by B,
      positions read from a device tensor, no host sync.
Each residual add is fused into the norm that follows it (ops.add_rms_norm), and in decode the
q/k-norm, rope, KV-cache write and attention are one op (ops.qkv_decode_attention).
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn as nn

from runtime.kernels import ops
from runtime.kernels.rope import inverse_frequencies, rope_cos_sin
from runtime.models.spec import ModelSpec


class KVCacheLike(Protocol):
    k: list[torch.Tensor]  # per layer (B_max, Hkv, S_layer, D)
    v: list[torch.Tensor]


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float, offset: float):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim), requires_grad=False)
        self.eps, self.offset = eps, offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.rms_norm(x, self.weight, self.eps, self.offset)


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

    def _project(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """x (B, T, hidden) -> q (B, T, H, D), k and v (B, T, Hkv, D), q/k-norm and rope applied."""
        return ops.qkv_rope(self.qkv(x), self.heads, self.kv_heads, cos, sin, *self._qk_args())

    def prefill(self, x, cos, sin, cache: KVCacheLike, row: int, start: int) -> torch.Tensor:
        """x (1, T, hidden) at positions [start, start + T) of cache row `row`."""
        T = x.shape[1]
        q, k, v = self._project(x, cos, sin)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (1, H|Hkv, T, D)
        k_cache = cache.k[self.layer][row : row + 1]
        v_cache = cache.v[self.layer][row : row + 1]
        size = k_cache.shape[2]
        q_pos = torch.arange(start, start + T, device=x.device)
        if self.window is None:
            k_cache[:, :, start : start + T] = k
            v_cache[:, :, start : start + T] = v
            keys, values = k_cache[:, :, : start + T], v_cache[:, :, : start + T]
            k_pos = torch.arange(start + T, device=x.device)
        else:
            # ring: slot s holds the latest position p < start with p % size == s (or nothing)
            if start:
                slots = torch.arange(size, device=x.device)
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
        return self.o_proj(out.transpose(1, 2).reshape(1, T, -1))

    def decode(self, x, cos, sin, cache: KVCacheLike, positions: torch.Tensor) -> torch.Tensor:
        """x (B, 1, hidden); positions (B,) on the device.  # graph: no host reads
        One op from the packed qkv row: q/k-norm, rope, k and v into cache slot positions % S (the
        ring of a sliding layer, the plain slot of a global one), attention over min(pos + 1, S)."""
        B = x.shape[0]
        k_cache, v_cache = cache.k[self.layer][:B], cache.v[self.layer][:B]
        qk = self._qk_args()
        out = ops.qkv_decode_attention(
            self.qkv(x), self.heads, self.kv_heads, cos, sin, *qk, k_cache, v_cache, positions, self.scale
        )  # (B, H, D)
        return self.o_proj(out.reshape(B, 1, -1))


class MLP(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.activation = spec.activation
        self.gate_up = nn.Linear(spec.hidden, 2 * spec.intermediate, bias=False)
        self.down = nn.Linear(spec.intermediate, spec.hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(ops.gated_act(self.gate_up(x), self.activation))


class DecoderLayer(nn.Module):
    def __init__(self, spec: ModelSpec, layer: int):
        super().__init__()
        norm = lambda: RMSNorm(spec.hidden, spec.norm_eps, spec.norm_offset)  # noqa: E731
        self.attn_norm, self.mlp_norm = norm(), norm()
        self.attn_out_norm = norm() if spec.sandwich_norms else None
        self.mlp_out_norm = norm() if spec.sandwich_norms else None
        self.attn = Attention(spec, layer)
        self.mlp = MLP(spec)

    def forward(
        self, x: torch.Tensor, pending: torch.Tensor | None, pending_norm: RMSNorm | None, attend
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, hidden) is the residual stream; `pending` the previous layer's MLP output, not
        yet added (None before the first layer), to be normed by `pending_norm` first (Gemma).
        Returns (x, this layer's MLP output): each residual add is fused into the norm after it."""
        if pending is None:
            normed = self.attn_norm(x)
        else:
            normed, x = _add_norm(pending, x, self.attn_norm, pending_norm)
        h = attend(self.attn, normed)
        normed, x = _add_norm(h, x, self.mlp_norm, self.attn_out_norm)
        return x, self.mlp(normed)


def _add_norm(
    h: torch.Tensor, x: torch.Tensor, norm: RMSNorm, pre: RMSNorm | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """x + pre(h) -> (norm(x + pre(h)), x + pre(h)) in one op; pre is Gemma's sandwich norm, or None."""
    return ops.add_rms_norm(h, x, norm.weight, norm.eps, norm.offset, None if pre is None else pre.weight)


class DecoderLM(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        self.embed = nn.Embedding(spec.vocab, spec.hidden)
        self.layers = nn.ModuleList(DecoderLayer(spec, i) for i in range(spec.layers))
        self.norm = RMSNorm(spec.hidden, spec.norm_eps, spec.norm_offset)
        self.lm_head = None if spec.tied_embeddings else nn.Linear(spec.hidden, spec.vocab, bias=False)
        # one inverse-frequency table per distinct rope spec; layer i uses table rope_index[i]
        self._ropes = list(dict.fromkeys(spec.rope))
        self.rope_index = [self._ropes.index(r) for r in spec.rope]
        self.inv_freqs: list[torch.Tensor] = []
        self.embed_scale = spec.embed_scale

    @property
    def lm_head_weight(self) -> torch.Tensor:
        return self.embed.weight if self.lm_head is None else self.lm_head.weight

    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embed.weight.dtype

    def prepare(self) -> None:
        """Build what derives from the weights' device and dtype, once they are materialised."""
        self.inv_freqs = [inverse_frequencies(r, self.spec.head_dim, self.device) for r in self._ropes]
        # Gemma's sqrt(hidden) is rounded to the weight dtype before it scales the embeddings
        self.embed_scale = torch.tensor(self.spec.embed_scale, dtype=self.dtype).item()

    def _embed(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        return x * self.embed_scale if self.spec.embed_scale != 1.0 else x

    def _logits(self, normed: torch.Tensor) -> torch.Tensor:
        """normed (..., hidden), after the final norm -> float32 logits (..., V)."""
        logits = torch.nn.functional.linear(normed, self.lm_head_weight).float()
        if self.spec.final_softcap:
            logits = torch.tanh(logits / self.spec.final_softcap) * self.spec.final_softcap
        return logits

    def _run(self, x: torch.Tensor, positions: torch.Tensor, attend, last_only: bool = False) -> torch.Tensor:
        """x (B, T, hidden) embeddings -> final-normed hidden states (B, T, hidden), or (B, 1,
        hidden) of the last position only with last_only."""
        tables = [rope_cos_sin(positions, inv, x.dtype) for inv in self.inv_freqs]  # once per step
        h = None
        for i, layer in enumerate(self.layers):
            cos, sin = tables[self.rope_index[i]]
            prev = self.layers[i - 1].mlp_out_norm if i else None
            x, h = layer(x, h, prev, lambda attn, hs, cos=cos, sin=sin: attend(attn, hs, cos, sin))
        if last_only:
            x, h = x[:, -1:], h[:, -1:]
        return _add_norm(h, x, self.norm, self.layers[-1].mlp_out_norm)[0]

    @torch.inference_mode()
    def prefill(
        self, tokens: torch.Tensor, cache: KVCacheLike, row: int = 0, start: int = 0, all_logits: bool = False
    ) -> torch.Tensor:
        """tokens (1, T) at positions [start, start + T) of cache row `row`.
        Returns float32 logits (1, V) of the last position, or (1, T, V) with all_logits."""
        T = tokens.shape[1]
        positions = torch.arange(start, start + T, device=tokens.device)[None]
        normed = self._run(
            self._embed(tokens),
            positions,
            lambda attn, h, cos, sin: attn.prefill(h, cos, sin, cache, row, start),
            last_only=not all_logits,
        )
        return self._logits(normed if all_logits else normed[:, -1])

    @torch.inference_mode()
    def decode(self, tokens: torch.Tensor, positions: torch.Tensor, cache: KVCacheLike) -> torch.Tensor:
        """tokens (B,), positions (B,) -> float32 logits (B, V).  # graph: capture-safe"""
        normed = self._run(
            self._embed(tokens[:, None]),
            positions[:, None],
            lambda attn, h, cos, sin: attn.decode(h, cos, sin, cache, positions),
        )
        return self._logits(normed[:, 0])
