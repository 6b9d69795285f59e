"""RMSNorm: the normalisation every DeepSeek-V3 block (and MLA's latent vectors) uses.

    RMSNorm(x) = x / sqrt(mean_j x_j² + ε) ⊙ g

No mean subtraction and no bias (unlike LayerNorm); g is a learned per-channel gain initialised to 1.
Computed in float32 (float64 for float64 inputs) and returned in the input's dtype, as in the reference implementation.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["RMSNorm"]


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        if dim <= 0:
            raise ValueError(f"RMSNorm dim must be positive, got {dim}")
        self.dim, self.eps = dim, eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.dim:
            raise ValueError(f"RMSNorm({self.dim}) got an input whose last dimension is {x.shape[-1]}")
        xf = x.double() if x.dtype == torch.float64 else x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight.to(xf.dtype)).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}"
