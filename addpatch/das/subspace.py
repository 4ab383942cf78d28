"""A rank-k subspace of a component's d-dimensional space, and the interchange within it.

DAS (distributed alignment search) swaps only k coordinates of a vector: with R (k, d) whose
rows are orthonormal,

    h' = h_base + Rᵀ (R h_cf − R h_base)

the part of h in the row space of R comes from the counterfactual, the rest (its orthogonal
complement) stays the base's. With k = d, R is a rotation and h' = h_cf: full-vector patching.
R is kept orthonormal by construction (the Q of a QR factorisation of a free parameter) and
computed in fp32,
whatever dtype the model runs in (half precision has no orthogonal parametrization).
"""

from __future__ import annotations

import torch
from torch import nn


class TrainableSubspace(nn.Module):
    """R (k, d) with orthonormal rows, seeded; `basis()` gives it as a plain tensor.

    R is the transposed Q of the QR factorisation of a free (d, k) parameter: orthonormal by
    construction at every step, smooth in the parameter, and O(d k²) to compute, where an
    orthogonal map through a (d, d) matrix exponential costs O(d³) a step (16 GFLOP at d =
    4096). The parameter starts Gaussian (seeded), so R starts uniformly random.
    """

    def __init__(self, width: int, k: int, seed: int) -> None:
        super().__init__()
        if not 1 <= k <= width:
            raise ValueError(f"k must be in 1..{width}, got {k}")
        generator = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(width, k, generator=generator, dtype=torch.float32))

    def basis(self) -> torch.Tensor:
        """(k, d) float32, orthonormal rows."""
        q: torch.Tensor = torch.linalg.qr(self.weight, mode="reduced")[0]  # (d, k)
        return q.T


def interchange(
    base: torch.Tensor,  # (..., d) in the model's dtype
    source: torch.Tensor,  # (..., d)
    basis: torch.Tensor,  # (k, d) float32, orthonormal rows
) -> torch.Tensor:
    """h_base + Rᵀ(R h_cf − R h_base), computed in fp32 and returned in the base's dtype."""
    difference = (source.float() - base.float()) @ basis.T  # (..., k)
    return (base.float() + difference @ basis).to(base.dtype)


def is_orthonormal(basis: torch.Tensor, tolerance: float = 1e-4) -> bool:
    """Whether R Rᵀ = I (k, k) within `tolerance`."""
    gram = basis.float() @ basis.float().T
    return bool(torch.allclose(gram, torch.eye(gram.shape[0]), atol=tolerance))
