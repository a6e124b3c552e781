"""Gated activation of the packed gate/up projection, plain torch."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gated_act_ref(gate_up: torch.Tensor, activation: str) -> torch.Tensor:
    """gate_up (..., 2I) -> act(gate) * up (..., I)."""
    gate, up = gate_up.chunk(2, dim=-1)
    if activation == "silu":
        return F.silu(gate) * up
    return F.gelu(gate, approximate="tanh") * up
