"""The three forward diffusions of [SDE], variance preserving (VP), sub-VP and variance exploding (VE), and EDM's.

Constructor names and defaults are those of the 2021 reference (``VPSDE(beta_min=0.1, beta_max=20,
N=1000)`` and so on), so reference code keeps working. All coefficients are computed in the dtype of
``t`` (float64 data gives float64 coefficients) with ``expm1``/``log1p`` where ``1 - exp(...)`` would
cancel near ``t = 0``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from base_lib.checks import check_finite_positive
from base_lib.config import config_value

from .base import LinearSDE, batch_broadcast
from .registry import register_sde
from .schedules import CosineSchedule, LinearSchedule, NoiseSchedule

VP_SCHEDULES = ("linear", "cosine")
#: default end time of the cosine schedule, whose beta(t) diverges at t = 1 (the value used by DPM-Solver)
COSINE_DEFAULT_T = 0.9946
#: EDM's noise range (Karras et al. 2022, sec. 5): the smallest and largest noise levels its sampler visits
EDM_SIGMA_MIN = 0.002
EDM_SIGMA_MAX = 80.0


class _DiscreteTables:
    """Per-step tables of a discretization (betas, sigmas, ...) kept in float64, cast once per device and dtype."""

    def _init_tables(self, invalid: str | None = None, **tables: Tensor) -> None:
        self._tables = tables
        self._tables_invalid = invalid  # why the tables cannot be used (too few steps), or None
        self._table_cache: dict[tuple[str, torch.device, torch.dtype], Tensor] = {}
        for name, value in tables.items():
            setattr(self, name, value)

    def _table(self, name: str, like: Tensor) -> Tensor:
        if getattr(self, "_tables_invalid", None) is not None:
            raise ValueError(self._tables_invalid)
        key = (name, like.device, like.dtype)
        if key not in self._table_cache:
            self._table_cache[key] = self._tables[name].to(device=like.device, dtype=like.dtype)
        return self._table_cache[key]

    def _timestep(self, t: Tensor) -> Tensor:
        """Index of the discrete step for time ``t``: ``floor(t (N - 1) / T)``, as the 2021 reference computes it."""
        return (t * (self.N - 1) / self.T).long().clamp_(0, self.N - 1)

    def _smld_step(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """SMLD step on the ``discrete_sigmas`` table: ``f = 0``, ``G = sqrt(sigma_i^2 - sigma_{i-1}^2)``, ``sigma_{-1} = 0``."""
        t = self._check_xt(x, t)
        i = self._timestep(t)
        sigmas = self._table("discrete_sigmas", x)
        sigma = sigmas[i]
        adjacent = torch.where(i == 0, torch.zeros_like(sigma), sigmas[(i - 1).clamp(min=0)])
        return torch.zeros_like(x), torch.sqrt(sigma.square() - adjacent.square())


def _vp_schedule(schedule: str, beta_min: float, beta_max: float, cosine_s: float) -> NoiseSchedule:
    if schedule == "linear":
        if not (math.isfinite(beta_min) and math.isfinite(beta_max)) or beta_min < 0 or beta_max <= 0:
            raise ValueError(f"beta_min must be >= 0 and beta_max > 0, got beta_min={beta_min}, beta_max={beta_max}")
        if beta_min > beta_max:
            raise ValueError(f"beta_min must be <= beta_max, got beta_min={beta_min} > beta_max={beta_max}")
        return LinearSchedule(beta_min, beta_max)
    if schedule == "cosine":
        return CosineSchedule(check_finite_positive("cosine_s", cosine_s))
    raise ValueError(f"schedule must be one of {VP_SCHEDULES}, got {schedule!r}")


def _vp_end_time(schedule: NoiseSchedule, T: float | None) -> float:
    if T is None:
        return COSINE_DEFAULT_T if isinstance(schedule, CosineSchedule) else 1.0
    T = check_finite_positive("T", T)
    if T >= schedule.t_max:
        raise ValueError(f"T must be < {schedule.t_max} for the {schedule!r} schedule (beta diverges there), got {T}")
    return T


class _VPFamily(_DiscreteTables, LinearSDE):
    """Shared part of VP and sub-VP: drift ``-beta(t) x / 2``, mean coefficient ``exp(-B(t) / 2)``, prior ``N(0, I)``."""

    sampling_eps = 1e-3  # the reference's end time of the samplers for VP and sub-VP

    def __init__(
        self,
        beta_min: float = 0.1,
        beta_max: float = 20.0,
        N: int = 1000,
        schedule: str = "linear",
        cosine_s: float = 0.008,
        T: float | None = None,
    ):
        self.schedule = _vp_schedule(schedule, float(beta_min), float(beta_max), cosine_s)
        super().__init__(N=N, T=_vp_end_time(self.schedule, T))
        self.beta_0 = float(beta_min)  # beta(0) of the linear schedule (reference attribute name)
        self.beta_1 = float(beta_max)  # beta(1) of the linear schedule (reference attribute name)
        self.schedule_name = schedule
        betas = self._discrete_betas_float64()
        invalid = None
        if float(betas.max()) > 1.0:  # the continuous SDE is fine; its N-step discretization is not
            invalid = (
                f"N={self.N} is too few steps for beta_max={beta_max}: the discrete betas reach {float(betas.max()):.3g} "
                f"> 1 (DDPM's beta_i = beta(t_i) / N), so the N-step discretization (the reverse-diffusion and "
                f"ancestral predictors, the Langevin step size, DDPM's tables) is undefined; N must be at least beta_max"
            )
        alphas = 1.0 - betas
        alphas_cumprod = torch.cumprod(alphas, dim=0)
        self._init_tables(
            invalid,
            discrete_betas=betas,
            alphas=alphas,
            alphas_cumprod=alphas_cumprod,
            sqrt_alphas_cumprod=alphas_cumprod.sqrt(),
            sqrt_1m_alphas_cumprod=(1.0 - alphas_cumprod).sqrt(),
        )

    def _discrete_betas_float64(self) -> Tensor:
        """The DDPM betas ``beta_i``, i = 0..N-1 (Ho et al. 2020; Nichol & Dhariwal 2021 for cosine).

        Linear: ``linspace(beta_min / N, beta_max / N, N)``, exactly as the 2021 reference, so that
        reference checkpoints sample identically. Cosine: ``1 - alpha_bar(t_{i+1}) / alpha_bar(t_i)`` on the
        grid ``t_i = i T / N``, clipped at 0.999 as in Improved DDPM.
        """
        if isinstance(self.schedule, LinearSchedule):
            return torch.linspace(self.beta_0 / self.N, self.beta_1 / self.N, self.N, dtype=torch.float64)
        grid = torch.linspace(0.0, self.T, self.N + 1, dtype=torch.float64)
        B = self.schedule.integral(grid)
        return (-torch.expm1(-(B[1:] - B[:-1]))).clamp(max=0.999)

    def log_mean_coeff(self, t: Tensor) -> Tensor:
        """``log alpha(t) = -B(t) / 2`` (for the linear schedule ``-t^2 (beta_1 - beta_0) / 4 - t beta_0 / 2``)."""
        return -0.5 * self.schedule.integral(t)

    def drift_coeff(self, t: Tensor) -> Tensor:
        return -0.5 * self.schedule.beta(t)

    @classmethod
    def from_config(cls, config: Any) -> "_VPFamily":
        return cls(
            beta_min=config_value(config, "model.beta_min"),
            beta_max=config_value(config, "model.beta_max"),
            N=config_value(config, "model.num_scales"),
            schedule=config_value(config, "model.noise_schedule", "linear"),
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(beta_min={self.beta_0}, beta_max={self.beta_1}, N={self.N}, schedule={self.schedule!r}, T={self.T})"


@register_sde("vpsde")
class VPSDE(_VPFamily):
    """Variance-preserving SDE ``dx = -beta(t) x / 2 dt + sqrt(beta(t)) dw``, [SDE] eq. (11).

    Kernel [SDE] eq. (29): mean ``exp(-B(t)/2) x(0)``, variance ``1 - exp(-B(t))`` with
    ``B(t) = int_0^t beta``. ``schedule="linear"`` (default, [SDE] eq. (32)) or ``"cosine"`` (Improved
    DDPM; then ``T`` defaults to 0.9946 since beta diverges at 1). :meth:`discretize` is the DDPM
    (ancestral) discretization ``x_{i+1} = sqrt(1 - beta_i) x_i + sqrt(beta_i) z_i``, [SDE] eq. (10).
    """

    def diffusion_coeff(self, t: Tensor) -> Tensor:
        return self.schedule.beta(t).sqrt()

    def marginal_coeffs(self, t: Tensor) -> tuple[Tensor, Tensor]:
        B = self.schedule.integral(t)
        return torch.exp(-0.5 * B), torch.sqrt(-torch.expm1(-B))

    def discretize(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """DDPM step: ``f = (sqrt(1 - beta_i) - 1) x``, ``G = sqrt(beta_i)`` with ``i = floor(t (N-1) / T)``."""
        t = self._check_xt(x, t)
        i = self._timestep(t)
        beta = self._table("discrete_betas", x)[i]
        alpha = self._table("alphas", x)[i]
        f = batch_broadcast(torch.sqrt(alpha) - 1.0, x) * x
        return f, torch.sqrt(beta)


@register_sde("subvpsde")
class subVPSDE(_VPFamily):
    """Sub-VP SDE ``dx = -beta(t) x / 2 dt + sqrt(beta(t) (1 - exp(-2 B(t)))) dw``, [SDE] eq. (12).

    Kernel [SDE] eq. (29): mean ``exp(-B(t)/2) x(0)``, std ``1 - exp(-B(t))`` (the variance of VP,
    squared, hence never above it). :meth:`discretize` is Euler--Maruyama, as in the reference; the
    ``discrete_betas``/``alphas`` tables of the VP discretization are exposed for correctors.
    """

    def diffusion_coeff(self, t: Tensor) -> Tensor:
        return torch.sqrt(self.schedule.beta(t) * -torch.expm1(-2.0 * self.schedule.integral(t)))

    def marginal_coeffs(self, t: Tensor) -> tuple[Tensor, Tensor]:
        B = self.schedule.integral(t)
        return torch.exp(-0.5 * B), -torch.expm1(-B)


@register_sde("vesde")
class VESDE(_DiscreteTables, LinearSDE):
    """Variance-exploding SDE ``dx = sqrt(d sigma^2(t) / dt) dw`` with ``sigma(t) = sigma_min (sigma_max / sigma_min)^t``, [SDE] eq. (30)-(31).

    Marginal variance (a documented choice): the forward SDE started from ``x(0)`` at ``t = 0`` has
    variance ``sigma(t)^2 - sigma_min^2``. The 2021 reference (and NCSN/SMLD) instead uses
    ``sigma(t)^2``, i.e. treats ``x(0)`` as data already perturbed with ``sigma_min`` noise; that is the
    default here (``exact_marginal=False``) so reference models and numbers carry over. With
    ``exact_marginal=True`` the kernel std is ``sqrt(sigma(t)^2 - sigma_min^2)`` and the prior std
    ``sqrt(sigma_max^2 - sigma_min^2)``, exactly the law of the SDE from a point mass at ``t = 0``.
    :meth:`discretize` is the SMLD discretization ``x_{i+1} = x_i + sqrt(sigma_{i+1}^2 - sigma_i^2) z_i``,
    [SDE] eq. (9), with ``sigma_{-1} = 0``.
    """

    sampling_eps = 1e-5  # the reference's end time of the samplers for VE

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, N: int = 1000, exact_marginal: bool = False):
        super().__init__(N=N, T=1.0)
        sigma_min = check_finite_positive("sigma_min", sigma_min)
        sigma_max = check_finite_positive("sigma_max", sigma_max)
        if sigma_min >= sigma_max:
            raise ValueError(f"sigma_min must be < sigma_max, got sigma_min={sigma_min} >= sigma_max={sigma_max}")
        self.sigma_min = sigma_min  # noise std at t = 0
        self.sigma_max = sigma_max  # noise std at t = T = 1
        self.exact_marginal = bool(exact_marginal)  # True: variance sigma(t)^2 - sigma_min^2 (see class docstring)
        self._log_ratio = math.log(sigma_max / sigma_min)
        self.prior_std = math.sqrt(sigma_max**2 - sigma_min**2) if self.exact_marginal else sigma_max
        sigmas = torch.exp(torch.linspace(math.log(sigma_min), math.log(sigma_max), N, dtype=torch.float64))
        self._init_tables(discrete_sigmas=sigmas)

    def sigma(self, t: Tensor) -> Tensor:
        """Noise scale ``sigma(t) = sigma_min (sigma_max / sigma_min)^t``."""
        # the power form (as the reference computes it) is accurate to ~1 ulp in float32; exp(t log r) is not
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def drift_coeff(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def diffusion_coeff(self, t: Tensor) -> Tensor:
        return self.sigma(t) * math.sqrt(2.0 * self._log_ratio)

    def marginal_coeffs(self, t: Tensor) -> tuple[Tensor, Tensor]:
        if self.exact_marginal:
            std = self.sigma(t) * torch.sqrt(-torch.expm1(-2.0 * t * self._log_ratio))
        else:
            std = self.sigma(t)
        return torch.ones_like(t), std

    def discretize(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """SMLD step: ``f = 0``, ``G = sqrt(sigma_i^2 - sigma_{i-1}^2)`` with ``i = floor(t (N-1) / T)``, ``sigma_{-1} = 0``."""
        return self._smld_step(x, t)

    @classmethod
    def from_config(cls, config: Any) -> "VESDE":
        return cls(
            sigma_min=config_value(config, "model.sigma_min"),
            sigma_max=config_value(config, "model.sigma_max"),
            N=config_value(config, "model.num_scales"),
            exact_marginal=config_value(config, "model.exact_marginal", False),
        )

    def __repr__(self) -> str:
        return f"VESDE(sigma_min={self.sigma_min}, sigma_max={self.sigma_max}, N={self.N}, exact_marginal={self.exact_marginal})"


@register_sde("edm")
class EDMSDE(_DiscreteTables, LinearSDE):
    """EDM's diffusion (Karras et al., "Elucidating the Design Space of Diffusion-Based Generative Models", NeurIPS
    2022): ``sigma(t) = t``, ``s(t) = 1``, i.e. ``dx = sqrt(2 t) dw`` on ``[0, T]`` with ``T = sigma_max``.

    As an SDE of [SDE] eq. (5): drift ``f = 0`` and ``g(t) = sqrt(d sigma(t)^2 / dt) = sqrt(2 t)``, whose
    probability-flow ODE ``dx / dt = -t score(x, t)`` is EDM's eq. (1) with ``sigma(t) = t`` (its eq. (4), Table 1).
    The variance accumulated from ``x(0)`` is ``int_0^t 2 u du = t^2``, so the kernel is exactly
    ``N(x(0), t^2 I)``: ``alpha = 1``, ``std = t``. Time *is* the noise level: a sampler's end time ``eps`` is its
    smallest noise level (``sigma_min`` is the natural one) and :meth:`time_of_scaled_sigma` is the identity.

    The prior is ``N(0, sigma_max^2 I)``, the large-noise approximation of ``p_T = p_data * N(0, T^2 I)`` as for VE
    (EDM's sampler starts there too); the mismatch is ``O(E ||x(0)||^2 / T^2)``. :meth:`discretize` is the SMLD
    discretization on the ``N``-point grid ``t_i = i T / (N - 1)`` (``discrete_sigmas``, as VE's grid of times):
    ``x_{i+1} = x_i + sqrt(t_i^2 - t_{i-1}^2) z_i``, ``t_{-1} = 0``, whose variances add up to ``t_i^2``, the exact
    marginal variance at every grid time.
    """

    def __init__(self, sigma_min: float = EDM_SIGMA_MIN, sigma_max: float = EDM_SIGMA_MAX, N: int = 1000):
        sigma_min = check_finite_positive("sigma_min", sigma_min)
        sigma_max = check_finite_positive("sigma_max", sigma_max)
        if sigma_min >= sigma_max:
            raise ValueError(f"sigma_min must be < sigma_max, got sigma_min={sigma_min} >= sigma_max={sigma_max}")
        super().__init__(N=N, T=sigma_max)
        self.sigma_min = sigma_min  # smallest noise level a sampler goes to (t = sigma_min); the data sit at t = 0
        self.sigma_max = sigma_max  # noise std at t = T = sigma_max, the prior's std
        self.prior_std = sigma_max
        self._init_tables(discrete_sigmas=torch.linspace(0.0, sigma_max, self.N, dtype=torch.float64))

    def drift_coeff(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def diffusion_coeff(self, t: Tensor) -> Tensor:
        return torch.sqrt(2.0 * t)

    def marginal_coeffs(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return torch.ones_like(t), t.clone()

    def time_of_scaled_sigma(self, scaled_sigma: Tensor) -> Tensor:
        """``t = sigma``: with ``alpha = 1`` and ``std = t`` the noise level is the time."""
        return scaled_sigma.clone()

    @property
    def sampling_eps(self) -> float:
        """The samplers' end time: ``sigma_min``, the smallest noise level (time is the noise level)."""
        return self.sigma_min

    def discretize(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """SMLD step: ``f = 0``, ``G = sqrt(t_i^2 - t_{i-1}^2)`` with ``t_i = i T / (N - 1)``, ``i = floor(t (N-1) / T)``, ``t_{-1} = 0``."""
        return self._smld_step(x, t)

    @classmethod
    def from_config(cls, config: Any) -> "EDMSDE":
        return cls(
            sigma_min=config_value(config, "model.sigma_min", EDM_SIGMA_MIN),
            sigma_max=config_value(config, "model.sigma_max", EDM_SIGMA_MAX),
            N=config_value(config, "model.num_scales"),
        )

    def __repr__(self) -> str:
        return f"EDMSDE(sigma_min={self.sigma_min}, sigma_max={self.sigma_max}, N={self.N})"
