"""RMSNorm's parameters: the weight, eps and offset. No forward: the ops that fold the norm into
their work (runtime/kernels/ops.py) apply it."""

from __future__ import annotations

import torch
import torch.nn as nn


class RMSNorm(nn.Module):
    """One RMSNorm's weight (dim,), eps and offset; the ops that fold it into their work apply it."""

    def __init__(self, dim: int, eps: float, offset: float):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim), requires_grad=False)
        self.eps, self.offset = eps, offset
