"""Gaussian-process data (one Gaussian with a full covariance) and its exact perturbed densities and scores.

If ``x(0) ~ N(m, K)`` on ``D`` coordinates and the kernel of a :class:`LinearSDE` is ``N(alpha(t) x(0), sigma(t)^2
I)`` [SDE, eq. (29)], then ``x(t) ~ N(alpha m, alpha^2 K + sigma^2 I)``. With ``K = U diag(lambda) U^T`` (computed
once), the score is linear,

    ``grad_x log p_t(x) = -U diag(1 / (alpha^2 lambda + sigma^2)) U^T (x - alpha m)``,

and ``log p_t(x) = -(1/2) [sum_k y_k^2 / (alpha^2 lambda_k + sigma^2) + sum_k log(alpha^2 lambda_k + sigma^2) + D
log 2 pi]`` with ``y = U^T (x - alpha m)``. This is the test oracle for 1-D signals (waveforms) where coordinates are
correlated, which :class:`GaussianMixture`'s diagonal components cannot express.

Kernels on ``L`` equally spaced points: :func:`squared_exponential_kernel` (smooth signals) and
:func:`ar1_kernel` (the stationary first-order autoregressive process, ``K_ij = v rho^|i - j|``, eigenvalues in
``[v (1 - rho) / (1 + rho), v (1 + rho) / (1 - rho)]``, so well conditioned).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor

from base_lib.checks import check_finite_positive, check_positive_int

from .base import LinearSDE


def squared_exponential_kernel(length: int, lengthscale: float, variance: float = 1.0, noise: float = 0.0) -> Tensor:
    """``K_ij = variance exp(-(i - j)^2 / (2 lengthscale^2)) + noise [i = j]``, float64 ``(length, length)``."""
    check_positive_int("length", length)
    check_finite_positive("lengthscale", lengthscale)
    check_finite_positive("variance", variance)
    if not (math.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise must be a finite number >= 0, got {noise!r}")
    i = torch.arange(length, dtype=torch.float64)
    return variance * torch.exp(-(i[:, None] - i[None, :]).square() / (2 * lengthscale**2)) + noise * torch.eye(length, dtype=torch.float64)


def ar1_kernel(length: int, rho: float, variance: float = 1.0) -> Tensor:
    """The stationary AR(1) covariance ``K_ij = variance rho^|i - j|`` (``|rho| < 1``), float64 ``(length, length)``."""
    check_positive_int("length", length)
    check_finite_positive("variance", variance)
    if not (math.isfinite(rho) and abs(rho) < 1):
        raise ValueError(f"rho must be a number in (-1, 1), got {rho!r}")
    i = torch.arange(length, dtype=torch.float64)
    return variance * torch.as_tensor(rho, dtype=torch.float64) ** (i[:, None] - i[None, :]).abs()


class GaussianProcess:
    """``N(mean, covariance)`` on events of shape ``E`` (e.g. a waveform ``(1, L)``), ``D = prod(E)`` coordinates
    flattened in row-major order. Parameters are kept in float64; evaluations run in the dtype and device of the
    input."""

    def __init__(self, covariance: Tensor, mean: Tensor | float = 0.0, event_shape: Sequence[int] | None = None):
        covariance = torch.as_tensor(covariance, dtype=torch.float64)
        if covariance.ndim != 2 or covariance.shape[0] != covariance.shape[1]:
            raise ValueError(f"covariance must be a square matrix (D, D), got shape {tuple(covariance.shape)}")
        if not torch.allclose(covariance, covariance.T, rtol=1e-10, atol=1e-12):
            raise ValueError("covariance must be symmetric")
        d = covariance.shape[0]
        event_shape = (d,) if event_shape is None else tuple(int(s) for s in event_shape)
        if math.prod(event_shape) != d:
            raise ValueError(f"event_shape {event_shape} must hold D = {d} coordinates")
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        if float(eigenvalues.min()) <= 0:
            raise ValueError(f"covariance must be positive definite; its smallest eigenvalue is {float(eigenvalues.min()):.3g}")
        self.covariance = covariance  # (D, D) K
        self.eigenvalues = eigenvalues  # (D,) lambda, ascending
        self.eigenvectors = eigenvectors  # (D, D) U, columns
        self.event_shape = event_shape  # shape of one example
        self.mean = torch.broadcast_to(torch.as_tensor(mean, dtype=torch.float64), (d,)).clone()  # (D,) m

    @property
    def dim(self) -> int:
        return self.covariance.shape[0]

    def sample(self, n: int, generator: torch.Generator | None = None, device: torch.device | str | None = None,
               dtype: torch.dtype = torch.float32) -> Tensor:
        """``n`` i.i.d. draws ``m + U diag(sqrt(lambda)) z``, shape ``(n, *E)``."""
        check_positive_int("n", n)
        if device is None:
            device = generator.device if generator is not None else "cpu"
        z = torch.randn((n, self.dim), generator=generator, device=device, dtype=torch.float64)
        root = (self.eigenvectors * self.eigenvalues.sqrt()).to(device)
        return (self.mean.to(device) + z @ root.T).to(dtype).reshape(n, *self.event_shape)

    def _terms(self, x: Tensor, alpha: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
        """``y = U^T (x - alpha m)`` ``(B, D)`` and the variances ``alpha^2 lambda + sigma^2`` ``(B, D)``."""
        if tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(f"x must have shape (B, *{self.event_shape}), got {tuple(x.shape)}")
        flat = x.reshape(x.shape[0], -1)
        y = (flat - alpha[:, None] * self.mean.to(flat)[None]) @ self.eigenvectors.to(flat)
        variances = alpha[:, None].square() * self.eigenvalues.to(flat)[None] + sigma[:, None].square()
        return y, variances

    def _log_prob(self, y: Tensor, variances: Tensor) -> Tensor:
        return -0.5 * ((y.square() / variances).sum(1) + variances.log().sum(1) + self.dim * math.log(2 * math.pi))

    def _score(self, y: Tensor, variances: Tensor, like: Tensor) -> Tensor:
        return (-(y / variances) @ self.eigenvectors.to(y).T).reshape(like.shape)

    def _clean(self, x: Tensor) -> tuple[Tensor, Tensor]:
        ones = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
        return ones, torch.zeros_like(ones)

    def log_prob(self, x: Tensor) -> Tensor:
        """``log N(x; m, K)``, shape ``(B,)``."""
        return self._log_prob(*self._terms(x, *self._clean(x)))

    def score(self, x: Tensor) -> Tensor:
        """``-K^{-1} (x - m)``, shaped like ``x``."""
        return self._score(*self._terms(x, *self._clean(x)), x)

    def log_prob_fn(self, sde: LinearSDE) -> Callable[[Tensor, Tensor], Tensor]:
        """``log_p(x, t) -> (B,)``: the exact log-density of ``x(t)`` under ``sde``, one time per sample."""

        def log_p(x: Tensor, t: Tensor) -> Tensor:
            t = sde._check_xt(x, t)
            return self._log_prob(*self._terms(x, *sde.marginal_coeffs(t)))

        return log_p

    def score_fn(self, sde: LinearSDE) -> Callable[[Tensor, Tensor], Tensor]:
        """``score(x, t)``: the exact ``grad_x log p_t(x)`` under ``sde`` (module docstring), one time per sample."""

        def score(x: Tensor, t: Tensor) -> Tensor:
            t = sde._check_xt(x, t)
            return self._score(*self._terms(x, *sde.marginal_coeffs(t)), x)

        return score

    def whiten(self, x: Tensor) -> Tensor:
        """``diag(lambda)^{-1/2} U^T (x - m)`` ``(B, D)``: i.i.d. standard normal coordinates for draws of this law."""
        flat = x.reshape(x.shape[0], -1).to(torch.float64)
        return ((flat - self.mean.to(flat)) @ self.eigenvectors.to(flat)) / self.eigenvalues.to(flat).sqrt()
