"""Noise schedules ``beta(t)`` of the variance-preserving family, with their closed-form integrals.

Each schedule gives ``beta(t)`` and ``B(t) = int_0^t beta(s) ds``; VP and sub-VP marginals are
written in terms of ``B(t)`` only, so a schedule with an exact integral gives exact marginals.
"""

from __future__ import annotations

import abc
import math

import torch
from torch import Tensor


class NoiseSchedule(abc.ABC):
    """``beta(t) > 0`` on ``[0, t_max)`` and its integral ``B(t)``."""

    #: supremum of the times at which the schedule is finite (``inf`` when finite everywhere)
    t_max: float = math.inf

    @abc.abstractmethod
    def beta(self, t: Tensor) -> Tensor:
        """The instantaneous rate ``beta(t)``."""

    @abc.abstractmethod
    def integral(self, t: Tensor) -> Tensor:
        """``B(t) = int_0^t beta(s) ds``, accurate relative to its value near ``t = 0``."""


class LinearSchedule(NoiseSchedule):
    """``beta(t) = beta_min + t (beta_max - beta_min)`` [SDE, eq. (32)], ``B(t) = beta_min t + (beta_max - beta_min) t^2 / 2``."""

    def __init__(self, beta_min: float, beta_max: float):
        self.beta_min = beta_min  # beta(0)
        self.beta_max = beta_max  # beta(1)

    def beta(self, t: Tensor) -> Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def integral(self, t: Tensor) -> Tensor:
        return t * (self.beta_min + 0.5 * t * (self.beta_max - self.beta_min))

    def __repr__(self) -> str:
        return f"LinearSchedule(beta_min={self.beta_min}, beta_max={self.beta_max})"


class CosineSchedule(NoiseSchedule):
    """Cosine schedule of Nichol & Dhariwal, "Improved DDPM" (2021), eq. (17), in continuous time.

    ``alpha_bar(t) = cos^2(phi(t)) / cos^2(phi(0))`` with ``phi(t) = (t + s) / (1 + s) * pi / 2``, so
    ``B(t) = -log alpha_bar(t)`` and ``beta(t) = B'(t) = pi / (1 + s) * tan(phi(t))``, which diverges at
    ``t = 1``: an SDE using it must end at some ``T < 1``.
    """

    t_max = 1.0

    def __init__(self, s: float = 0.008):
        self.s = s  # offset that keeps beta(0) away from zero (0.008 in the paper)
        self._phi0 = 0.5 * math.pi * s / (1.0 + s)

    def _phi(self, t: Tensor) -> Tensor:
        return 0.5 * math.pi * (t + self.s) / (1.0 + self.s)

    def beta(self, t: Tensor) -> Tensor:
        return math.pi / (1.0 + self.s) * torch.tan(self._phi(t))

    def integral(self, t: Tensor) -> Tensor:
        # cos(phi0 + d) / cos(phi0) = 1 - 2 sin^2(d/2) - tan(phi0) sin(d): no cancellation for small d
        d = 0.5 * math.pi * t / (1.0 + self.s)
        ratio_minus_one = -2.0 * torch.sin(0.5 * d).square() - math.tan(self._phi0) * torch.sin(d)
        return -2.0 * torch.log1p(ratio_minus_one)

    def __repr__(self) -> str:
        return f"CosineSchedule(s={self.s})"
