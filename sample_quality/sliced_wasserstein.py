"""Sliced Wasserstein distance between two sample sets (Rabin et al., 2011; Bonneel et al., 2015)."""

from __future__ import annotations

import torch
from torch import Tensor


def sliced_wasserstein(
    x: Tensor,
    y: Tensor,
    num_projections: int = 256,
    p: int = 2,
    generator: torch.Generator | None = None,
) -> Tensor:
    """``SW_p(x, y) = (E_theta W_p^p(theta.x, theta.y))^(1/p)`` with ``theta`` uniform on the unit sphere.

    ``x`` is ``(n, ...)`` and ``y`` is ``(m, ...)`` with the same event shape (flattened to ``D``). Each 1-D
    distance compares quantile functions at ``max(n, m)`` levels ``(i + 1/2) / max(n, m)``, which is
    the exact empirical ``W_p`` when ``n == m``. The Monte-Carlo error over directions shrinks as
    ``num_projections^(-1/2)``; pass the same ``generator`` seed to compare sets on the same directions.
    Returns a 0-dim float64 tensor.
    """
    if x.ndim < 2 or y.ndim < 2 or x.shape[1:] != y.shape[1:]:
        raise ValueError(f"x and y must be (n, ...) and (m, ...) with equal event shapes, got {tuple(x.shape)} and {tuple(y.shape)}")
    if num_projections < 1:
        raise ValueError(f"num_projections must be >= 1, got {num_projections}")
    if p < 1:
        raise ValueError(f"p must be >= 1, got {p}")
    x = x.reshape(x.shape[0], -1).to(torch.float64)
    y = y.reshape(y.shape[0], -1).to(device=x.device, dtype=torch.float64)
    dirs = torch.randn(x.shape[1], num_projections, generator=generator, dtype=torch.float64, device=generator.device if generator is not None else x.device)
    dirs = (dirs / dirs.norm(dim=0, keepdim=True)).to(x.device)
    px, _ = torch.sort(x @ dirs, dim=0)
    py, _ = torch.sort(y @ dirs, dim=0)
    n = max(px.shape[0], py.shape[0])
    if px.shape[0] != py.shape[0]:
        levels = (torch.arange(n, dtype=torch.float64, device=x.device) + 0.5) / n
        px = torch.quantile(px, levels, dim=0) if px.shape[0] != n else px
        py = torch.quantile(py, levels, dim=0) if py.shape[0] != n else py
    return (px - py).abs().pow(p).mean().pow(1.0 / p)
