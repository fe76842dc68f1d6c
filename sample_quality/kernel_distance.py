"""Kernel Inception Distance (KID, Binkowski et al., "Demystifying MMD GANs", ICLR 2018, Sec. 3 and App. D)."""

from __future__ import annotations

import numpy as np
import torch

from .frechet import _as_float64


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = 3, gamma: float | None = None, coef0: float = 1.0) -> np.ndarray:
    """``k(x, y) = (gamma x.y + coef0)^degree`` for all pairs of rows, ``(n, m)``; ``gamma`` defaults to ``1 / D``
    (KID's kernel: degree 3, ``gamma = 1 / D``, ``coef0 = 1``)."""
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    return (gamma * (x @ y.T) + coef0) ** degree


def unbiased_mmd2(k_xx: np.ndarray, k_yy: np.ndarray, k_xy: np.ndarray) -> float:
    """Unbiased estimate of ``MMD^2 = E k(x, x') + E k(y, y') - 2 E k(x, y)`` from the kernel matrices of ``m`` and ``n``
    samples (Gretton et al., JMLR 2012, Eq. 3): the within-set means leave out the diagonal ``i = j``."""
    m, n = k_xx.shape[0], k_yy.shape[0]
    within_x = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    within_y = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(within_x + within_y - 2.0 * k_xy.mean())


def kernel_inception_distance(
    features1: np.ndarray | torch.Tensor,
    features2: np.ndarray | torch.Tensor,
    subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
    seed: int = 0,
) -> tuple[float, float]:
    """KID: the unbiased ``MMD^2`` (:func:`unbiased_mmd2`) with the polynomial kernel (:func:`polynomial_kernel`)
    between ``subset_size`` rows drawn without replacement from each of ``features1`` ``(N1, D)`` and ``features2``
    ``(N2, D)``, repeated over ``subsets`` draws (``numpy.random.default_rng(seed)``). Returns the mean and the standard
    deviation (divisor ``subsets``) over the subsets. Defaults are torch-fidelity's (100 subsets of 1000)."""
    x, y = _as_float64(features1), _as_float64(features2)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"features must be (N1, D) and (N2, D), got {x.shape} and {y.shape}")
    if subsets < 1:
        raise ValueError(f"subsets must be >= 1, got {subsets}")
    if not 2 <= subset_size <= min(len(x), len(y)):
        raise ValueError(f"subset_size must lie in [2, min(N1, N2)] = [2, {min(len(x), len(y))}], got {subset_size}")
    rng = np.random.default_rng(seed)
    kernel = lambda a, b: polynomial_kernel(a, b, degree, gamma, coef0)  # noqa: E731
    values = []
    for _ in range(subsets):
        a = x[rng.choice(len(x), subset_size, replace=False)]
        b = y[rng.choice(len(y), subset_size, replace=False)]
        values.append(unbiased_mmd2(kernel(a, a), kernel(b, b), kernel(a, b)))
    return float(np.mean(values)), float(np.std(values))
