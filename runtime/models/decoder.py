"""DecoderLM: one decoder for every supported family, parametrised by ModelSpec.

Q/K/V and gate/up are packed into one matrix each. The model owns weights only: the KV cache is
passed in (runtime/engine/state.py), and sampling happens elsewhere. Three entry points:
  prefill(tokens (1, T), cache, row, start) -> logits, eager, one cache row, variable T
  prefill_padded(tokens (1, T), n, cache, row) -> logits, a fresh row from position 0, graph-safe:
      T is the length bucket, n (device) the prompt's length, the rest padding
  decode(tokens (B,), positions (B,), cache) -> logits (B, V), graph-safe: shapes fixed by B,
      positions read from a device tensor, no host sync.
Each residual add and norm is folded into the projection that follows it (ops.norm_linear: the
add, the norm and the matrix product in one kernel at batch 1) or, at batch 1 where a branch joins
the residual without a norm of its own, into the projection that ends the branch (ops.linear_add,
for the roles ops.residual_epilogue takes: the next norm_linear then reads one row). The gated
activation rides in the gate/up projection's epilogue at batch 1 (ops.norm_linear_act) and in the
down projection's prologue otherwise (ops.act_linear), the final norm in the LM head, and in decode
the q/k-norm, rope, KV-cache write and attention are one op (ops.qkv_decode_attention). Prefill runs these ops
unfused: the norm or activation kernel, then cuBLAS. Batch buckets carry the norms' weights in the
matrices instead, where the family allows (folded_norms.py).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from runtime.kernels import ops
from runtime.kernels.attention_plan import QkvRelease, l2_spill_position
from runtime.kernels.gemv_blocks import gemv_op
from runtime.kernels.rope import inverse_frequencies
from runtime.models.attention import Attention, KVCacheLike
from runtime.models.folded_norms import decode_rows, folded_rows
from runtime.models.norm import RMSNorm
from runtime.models.spec import ModelSpec


class MLP(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.activation = spec.activation
        self.gate_up = nn.Linear(spec.hidden, 2 * spec.intermediate, bias=False)
        self.down = nn.Linear(spec.intermediate, spec.hidden, bias=False)

    def down_of(self, gate_up: torch.Tensor) -> torch.Tensor:
        """gate_up (..., 2I) -> down(act(gate) * up) (..., hidden)."""
        return ops.act_linear(gate_up, self.activation, self.down.weight)

    def forward(
        self, h: torch.Tensor | None, x: torch.Tensor, norm: RMSNorm, pre: RMSNorm | None, joins: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """-> (x + pre(h), down(act(gate) * up) of norm(x + pre(h))), h None adding nothing. One row:
        the activation is the gate/up GEMV's epilogue and down a plain GEMV, which adds its output to
        the residual itself where it `joins` it without a norm (then (the new residual, None));
        otherwise the activation rides in down's prologue."""
        if self.gate_up.bias is None and ops.gated_epilogue(x, self.gate_up.weight):
            pre_w = None if pre is None else pre.weight
            early = ops.early_release(self.gate_up.weight, "gate_up")
            act, x = ops.norm_linear_act(
                h, x, norm.weight, norm.eps, norm.offset, pre_w, self.gate_up.weight, self.activation, early
            )
            return _join(act, self.down, x, joins, "down")
        gate_up, x = _norm_linear(h, x, norm, pre, self.gate_up)
        return x, self.down_of(gate_up)


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
        self,
        x: torch.Tensor,
        pending: torch.Tensor | None,
        pending_norm: RMSNorm | None,
        attend,
        release: QkvRelease | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, T, hidden) is the residual stream; `pending` the previous layer's MLP output, not
        yet added (None: nothing to add), to be normed by `pending_norm` first (Gemma); `release`
        the decode step's qkv release (attention_plan.QkvRelease), None elsewhere.
        Returns (x, this layer's MLP output or None where down added it already): each residual add
        and norm rides in a projection next to it; `attend` maps the packed qkv rows to the
        attention's output before o_proj."""
        qkv, x = _norm_linear(pending, x, self.attn_norm, pending_norm, self.attn.qkv, release)
        x, h = _join(attend(self.attn, qkv), self.attn.o_proj, x, self.attn_out_norm is None, "o")
        return self.mlp(h, x, self.mlp_norm, self.attn_out_norm, self.mlp_out_norm is None)


def _join(
    out: torch.Tensor, linear: nn.Linear, x: torch.Tensor, joins: bool, role: str
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A branch's last projection of out -> (residual, pending): (x + linear(out), None) where the
    branch `joins` the residual x without a norm of its own and the GEMV adds it in its epilogue
    (ops.residual_epilogue), else (x, linear(out)) for the next norm_linear to add."""
    early = ops.early_release(linear.weight, role)
    if joins and linear.bias is None and ops.residual_epilogue(out, linear.weight, role):
        return ops.linear_add(out, linear.weight, x, early), None
    y = ops.linear(out, linear.weight, early)
    return x, (y if linear.bias is None else y + linear.bias)


def _pick(h: torch.Tensor | None, rows) -> torch.Tensor | None:
    """rows(h) of a pending MLP output; None where the down projection added it already."""
    return None if h is None else rows(h)


def _norm_linear(
    h: torch.Tensor | None,
    x: torch.Tensor,
    norm: RMSNorm,
    pre: RMSNorm | None,
    linear: nn.Linear,
    release: QkvRelease | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (linear(norm(x + pre(h))), x + pre(h)); h None (the first layer) adds nothing.
    release: the qkv projection's at decode (ops.norm_linear)."""
    pre_w = None if pre is None else pre.weight
    y, x = ops.norm_linear(h, x, norm.weight, norm.eps, norm.offset, pre_w, linear.weight, release=release)
    return (y if linear.bias is None else y + linear.bias), x


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
        self.inv_freqs = torch.empty(0)  # (n_tables, D/2) fp32 once prepared
        self.embed_scale = spec.embed_scale
        self.norms_folded = False  # folded_norms.fold_norm_weights sets it

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
        self.inv_freqs = torch.stack(
            [inverse_frequencies(r, self.spec.head_dim, self.device) for r in self._ropes]
        )
        # Gemma's sqrt(hidden) is rounded to the weight dtype before it scales the embeddings
        self.embed_scale = torch.tensor(self.spec.embed_scale, dtype=self.dtype).item()

    def gemv_shapes(self) -> list[tuple[str, int, int]]:
        """(op, N, K) of each batch-1 GEMV a decode step runs under the current switches (what
        gemv_tuning.tune_shapes takes before capture): only those, since a card without shipped
        blocks compiles and times every candidate of each."""
        s = self.spec
        pre = self.layers[-1].mlp_out_norm  # Gemma's sandwich: h is pre-normed before each add
        pre_w = None if pre is None else pre.weight
        qkv, gate_up = s.q_size + 2 * s.kv_size, 2 * s.intermediate
        shapes = [
            ("norm_linear", qkv, s.hidden),  # the first layer's qkv: no h to add yet
            (gemv_op("norm_linear", pre_w), qkv, s.hidden),  # the other layers' qkv
            ("linear", s.hidden, s.q_size),  # o_proj
            (gemv_op("lm_head", pre_w), s.vocab, s.hidden),  # the final norm + LM head, float32 logits
        ]
        if ops.turned_off("norm_linear_act"):  # gate_up, then the activation in down's prologue
            shapes += [
                (gemv_op("norm_linear", pre_w), gate_up, s.hidden),
                ("act_linear", s.hidden, s.intermediate),
            ]
        else:  # the activation as gate_up's epilogue, down a plain GEMV
            shapes += [
                (gemv_op("norm_linear_act", pre_w), gate_up, s.hidden),
                ("linear", s.hidden, s.intermediate),
            ]
        return list(dict.fromkeys(shapes))  # shapes may coincide (o_proj and down in tiny models)

    def _inputs(self, tokens: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, list]:
        """tokens, positions (B, T) -> embeddings x (B, T, hidden) and [(cos, sin) (B, T, D)] per
        rope table (indexed by rope_index), from one op (one kernel when it runs on Triton)."""
        scale = self.embed_scale if self.spec.embed_scale != 1.0 else 1.0
        return ops.embed_rope(tokens, positions, self.embed.weight, scale, self.inv_freqs, self.dtype)

    def _logits(self, h: torch.Tensor | None, x: torch.Tensor, widen: bool = True) -> torch.Tensor:
        """The last layer's MLP output h (None: added already) and the residual x (..., hidden) ->
        float32 logits (..., V): the final add and norm ride in the LM head (one kernel for one row,
        like the projections).
        widen False: logits cuBLAS wrote in the weights' dtype stay in it (the same values)."""
        pre = self.layers[-1].mlp_out_norm
        softcap = self.spec.final_softcap
        logits, _ = ops.norm_linear(
            h, x, self.norm.weight, self.norm.eps, self.norm.offset, None if pre is None else pre.weight,
            self.lm_head_weight, out_dtype=torch.float32, name="lm_head", widen=widen or bool(softcap),
        )  # fmt: skip
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        return logits

    def cache_spill_position(self, device: torch.device) -> int:
        """The first position at which a row's K/V over the layers without a window outgrows L2."""
        s = self.spec
        global_layers = sum(w is None for w in s.sliding_window)
        per_position = 2 * s.kv_heads * s.head_dim * self.dtype.itemsize * global_layers
        return l2_spill_position(per_position, device)

    def _run(
        self, tokens: torch.Tensor, positions: torch.Tensor, attend, release: QkvRelease | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens, positions (B, T) -> (residual stream, last layer's MLP output), (B, T, hidden)
        each, before the final add and norm (which _logits folds into the LM head); release: the
        decode step's qkv release."""
        x, tables = self._inputs(tokens, positions)  # once per step
        h = None
        for i, layer in enumerate(self.layers):
            cos, sin = tables[self.rope_index[i]]
            prev = self.layers[i - 1].mlp_out_norm if i else None
            x, h = layer(x, h, prev, lambda attn, qkv, cos=cos, sin=sin: attend(attn, qkv, cos, sin), release)
        return x, h

    @torch.inference_mode()
    def prefill(
        self, tokens: torch.Tensor, cache: KVCacheLike, row: int = 0, start: int = 0, all_logits: bool = False
    ) -> torch.Tensor:
        """tokens (1, T) at positions [start, start + T) of cache row `row`.
        Returns float32 logits (1, V) of the last position, or (1, T, V) with all_logits."""
        T = tokens.shape[1]
        positions = torch.arange(start, start + T, device=tokens.device)[None]
        x, h = self._run(
            tokens,
            positions,
            lambda attn, qkv, cos, sin: attn.prefill(qkv, cos, sin, cache, row, start),
        )
        return self._logits(h, x) if all_logits else self._logits(_pick(h, lambda t: t[:, -1]), x[:, -1])

    @torch.inference_mode()
    def prefill_padded(
        self, tokens: torch.Tensor, n: torch.Tensor, cache: KVCacheLike, row: torch.Tensor
    ) -> torch.Tensor:
        """tokens (1, T) at positions [0, T) of cache row row[0], of which the first n[0] are the
        prompt and the rest padding -> float32 logits (1, V) of position n[0] - 1. The same result
        as prefill(tokens[:, :n], cache, row) for a fresh row.  # graph: capture-safe per T"""
        T = tokens.shape[1]
        x, h = self._run(
            tokens,
            torch.arange(T, device=tokens.device)[None],
            lambda attn, qkv, cos, sin: attn.prefill_padded(qkv, cos, sin, cache, row, n),
        )
        last = n - 1
        at_last = lambda t: t.index_select(1, last)[:, 0]  # noqa: E731
        return self._logits(_pick(h, at_last), at_last(x))

    @torch.inference_mode()
    def decode(
        self, tokens: torch.Tensor, positions: torch.Tensor, cache: KVCacheLike, widen_logits: bool = True
    ) -> torch.Tensor:
        """tokens (B,), positions (B,) -> float32 logits (B, V).  # graph: capture-safe
        More rows than one take the folded-norm path where the weights allow (folded_norms.py).
        widen_logits False: where cuBLAS computes the LM head (more rows than one) its logits come
        back in the weights' dtype, the values float32 would hold, for a consumer that widens as
        it loads (the step tail's kernels): no (B, V) copy kernel."""
        if folded_rows(self, tokens.shape[0]):
            return self._logits(None, decode_rows(self, tokens, positions, cache), widen_logits)
        x, h = self._run(
            tokens[:, None],
            positions[:, None],
            lambda attn, qkv, cos, sin: attn.decode(qkv, cos, sin, cache, positions),
            QkvRelease(positions, self.cache_spill_position(positions.device)),
        )
        return self._logits(_pick(h, lambda t: t[:, 0]), x[:, 0], widen_logits)
