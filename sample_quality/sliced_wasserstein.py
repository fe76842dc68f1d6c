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
    distance is the exact ``W_p`` between the two projected empirical laws, for any ``n`` and ``m`` (see
    :func:`_empirical_wasserstein_pp`). The Monte-Carlo error over directions shrinks as
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
    return _empirical_wasserstein_pp(px, py, p).mean().pow(1.0 / p)


def _empirical_wasserstein_pp(px: Tensor, py: Tensor, p: int) -> Tensor:
    """``W_p^p`` between the empirical laws of each column of ``px`` ``(n, P)`` and ``py`` ``(m, P)``, both sorted.

    On the line the monotone (quantile) coupling is optimal (Peyre & Cuturi, "Computational Optimal
    Transport", 2019), so ``W_p^p = int_0^1 |F^-1(u) - G^-1(u)|^p du`` with the step quantile functions
    ``F^-1(u) = px[ceil(n u) - 1]`` and ``G^-1(u) = py[ceil(m u) - 1]``. Both are constant between
    consecutive points of ``{i / n} U {j / m}``, written ``k / (n m)`` with integer ``k``, so the integral is
    an exact finite sum over at most ``n + m`` pieces; for ``n == m`` it is ``mean |px - py|^p``.
    Returns ``(P,)``.
    """
    n, m = px.shape[0], py.shape[0]
    if n == m:
        return (px - py).abs().pow(p).mean(dim=0)
    device = px.device
    # breakpoints of the two quantile functions, as integers k of k / (n m); torch.unique sorts them
    ends = torch.cat([torch.arange(1, n + 1, device=device) * m, torch.arange(1, m + 1, device=device) * n]).unique()
    starts = torch.cat([ends.new_zeros(1), ends[:-1]])
    widths = (ends - starts).to(px.dtype) / (n * m)
    # on (starts, ends) / (n m) no multiple of 1/n or 1/m lies inside, so ceil(n u) - 1 = starts // m
    return (widths[:, None] * (px[starts // m] - py[starts // n]).abs().pow(p)).sum(dim=0)
