"""Importance sampling of the diffusion time for the likelihood-weighted score-matching loss.

With the likelihood weighting ``lambda(t) = g(t)^2`` of Song, Durkan, Murray & Ermon (2021), "Maximum
Likelihood Training of Score-Based Diffusion Models" ([MLE]), the denoising score-matching integrand is
``g^2 ||s + z / sigma||^2 = (g^2 / sigma^2) ||sigma s + z||^2``, where ``sigma(t)`` is the kernel std. Drawing
``t`` from ``p(t) = (g(t)^2 / sigma(t)^2) / Z`` on ``[eps, T]`` leaves the bounded factor ``||sigma s + z||^2``
times a constant: the importance-sampled objective has the same expectation and a far smaller variance.

``Z`` and the inverse CDF come from a closed-form antiderivative ``Phi`` of ``g^2 / sigma^2`` (CDF
``F(t) = (Phi(t) - Phi(eps)) / Z`` with ``Z = Phi(T) - Phi(eps)``), with ``B(t) = int_0^t beta``:

* VP (``g^2 = beta``, ``sigma^2 = 1 - e^{-B}``): ``g^2 / sigma^2 = B' e^B / (e^B - 1)``, so
  ``Phi = log(e^B - 1)``; inverse ``B = log(1 + e^Phi)``.
* sub-VP (``g^2 = beta (1 - e^{-2B})``, ``sigma = 1 - e^{-B}``): ``g^2 / sigma^2 = B' (e^B + 1) / (e^B - 1)``,
  so ``Phi = 2 log(e^B - 1) - B = 2 log(2 sinh(B / 2))``; inverse ``B = 2 asinh(e^{Phi / 2} / 2)``.
* VE, reference marginals (``sigma = sigma_min r^t``, ``g^2 = 2 log(r) sigma^2``, ``r = sigma_max / sigma_min``):
  ``g^2 / sigma^2 = 2 log r`` is constant, so ``p`` is uniform (importance sampling changes nothing).
* VE, ``exact_marginal=True`` (``sigma^2 = sigma_min^2 (r^{2t} - 1)``): with ``c = 2 log r``,
  ``g^2 / sigma^2 = c e^{ct} / (e^{ct} - 1)``, so ``Phi = log(e^{ct} - 1)``; inverse ``t = log(1 + e^Phi) / c``.
* EDM (``sigma = t``, ``g^2 = 2 t``): ``g^2 / sigma^2 = 2 / t``, so ``Phi = 2 log t`` (log-uniform times); inverse
  ``t = e^{Phi / 2}``.

``B`` is inverted in closed form for the linear schedule (the positive root of ``B = beta_min t + (beta_max -
beta_min) t^2 / 2``) and for the cosine one (``t = (1 + s) 2 arccos(cos(phi_0) e^{-B/2}) / pi - s``). Everything
is evaluated in float64.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from sde_lib import SDE, EDMSDE, VESDE, VPSDE, subVPSDE
from sde_lib.schedules import CosineSchedule, LinearSchedule, NoiseSchedule

Map = Callable[[Tensor], Tensor]


def _log_expm1(x: Tensor) -> Tensor:
    """``log(e^x - 1)`` for ``x > 0``, as ``x + log(1 - e^{-x})`` (no overflow for large ``x``)."""
    return x + torch.log(-torch.expm1(-x))


def _log1p_exp(x: Tensor) -> Tensor:
    """``log(1 + e^x)``, the inverse of :func:`_log_expm1`, without overflow."""
    return torch.logaddexp(x, torch.zeros_like(x))


def _schedule_inverse(schedule: NoiseSchedule) -> Map:
    """``B -> t`` with ``B(t) = int_0^t beta``, in closed form for the linear and cosine schedules."""
    if isinstance(schedule, LinearSchedule):
        b0, slope = schedule.beta_min, schedule.beta_max - schedule.beta_min
        # positive root of slope t^2 / 2 + b0 t - B = 0, in the form without cancellation
        return lambda B: 2.0 * B / (b0 + torch.sqrt(b0 * b0 + 2.0 * slope * B))
    if isinstance(schedule, CosineSchedule):
        s = schedule.s
        cos_phi0 = math.cos(0.5 * math.pi * s / (1.0 + s))
        return lambda B: (1.0 + s) * 2.0 / math.pi * torch.arccos(cos_phi0 * torch.exp(-0.5 * B)) - s
    raise ValueError(
        f"importance sampling of t needs the inverse of B(t) in closed form; it is known for LinearSchedule and "
        f"CosineSchedule, got {schedule!r}"
    )


def _antiderivative(sde: SDE) -> tuple[Map, Map]:
    """``(Phi, Phi^{-1})`` with ``Phi' = g(t)^2 / sigma(t)^2`` for ``sde`` (formulas in the module docstring)."""
    if isinstance(sde, VPSDE):
        B, B_inv = sde.schedule.integral, _schedule_inverse(sde.schedule)
        return (lambda t: _log_expm1(B(t))), (lambda phi: B_inv(_log1p_exp(phi)))
    if isinstance(sde, subVPSDE):
        B, B_inv = sde.schedule.integral, _schedule_inverse(sde.schedule)
        return (lambda t: 2.0 * torch.log(2.0 * torch.sinh(0.5 * B(t)))), (
            lambda phi: B_inv(2.0 * torch.asinh(0.5 * torch.exp(0.5 * phi)))
        )
    if isinstance(sde, VESDE):
        c = 2.0 * math.log(sde.sigma_max / sde.sigma_min)
        if sde.exact_marginal:
            return (lambda t: _log_expm1(c * t)), (lambda phi: _log1p_exp(phi) / c)
        return (lambda t: c * t), (lambda phi: phi / c)
    if isinstance(sde, EDMSDE):
        return (lambda t: 2.0 * torch.log(t)), (lambda phi: torch.exp(0.5 * phi))
    raise ValueError(
        f"importance sampling of t is implemented for VPSDE, subVPSDE, VESDE and EDMSDE (closed-form CDFs), "
        f"got {type(sde).__name__}"
    )


class LikelihoodTimeSampler:
    """Times ``t`` on ``[eps, T]`` with density ``g(t)^2 / (Z sigma(t)^2)`` ([MLE] importance sampling), by inverse CDF.

    ``normalizer`` is ``Z = int_eps^T g^2 / sigma^2 dt``. A loss averaged over ``t ~ U(eps, T)`` keeps its
    expectation when ``t`` is drawn from this density and each term is multiplied by
    :attr:`uniform_weight` ``= Z / (T - eps)`` and divided by ``g^2 / sigma^2``.
    """

    def __init__(self, sde: SDE, eps: float):
        self.eps = float(eps)  # smallest time: g^2 / sigma^2 diverges like 1 / t at t = 0 for VP and sub-VP
        self.T = float(sde.T)  # largest time
        self._phi, self._phi_inv = _antiderivative(sde)
        ends = self._phi(torch.tensor([self.eps, self.T], dtype=torch.float64))
        self._phi_eps = float(ends[0])
        self.normalizer = float(ends[1] - ends[0])  # Z
        self.uniform_weight = self.normalizer / (self.T - self.eps)  # Z / (T - eps)

    def cdf(self, t: Tensor) -> Tensor:
        """``F(t) = (Phi(t) - Phi(eps)) / Z`` in float64."""
        return (self._phi(t.to(torch.float64)) - self._phi_eps) / self.normalizer

    def icdf(self, u: Tensor) -> Tensor:
        """``F^{-1}(u)`` for ``u`` in ``[0, 1]``, in float64, clamped to ``[eps, T]`` against rounding."""
        t = self._phi_inv(self._phi_eps + u.to(torch.float64) * self.normalizer)
        return t.clamp(self.eps, self.T)
