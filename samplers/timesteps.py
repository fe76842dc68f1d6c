"""Noise levels and time-step schedules of the fast probability-flow ODE solvers.

For a :class:`sde_lib.LinearSDE` with kernel ``N(alpha_t x0, sigma_t^2 I)`` the solvers work in the
half-log-SNR ``lambda(t) = log(alpha_t / sigma_t)`` (Lu et al., "DPM-Solver", NeurIPS 2022, sec. 3.1),
which decreases strictly from the data end ``t = eps`` to ``t = T``. A schedule picks ``steps + 1``
times ``T = t_0 > t_1 > ... > t_steps = eps``; schedules defined in ``lambda`` (or in
``sigma~ = sigma / alpha = exp(-lambda)``) need the inverse map ``lambda -> t``, which is closed form
for the linear VP schedule and for an SDE that gives it (:meth:`sde_lib.LinearSDE.time_of_scaled_sigma`; EDM's
``t = sigma~``), and a bisection on the monotone ``lambda`` otherwise. Everything here runs in
float64 on the sampling device and returns the grid as Python floats: a handful of scalars, fixed before
the first score evaluation.

In ``(lambda, x / alpha)`` the probability-flow ODE is the same for every linear SDE (DPM-Solver sec. 3.1;
Karras et al. 2022 sec. 4): SDEs differ only in the range ``[lambda(T), lambda(eps)]``. A schedule defined in
``lambda`` therefore carries over between VP, sub-VP and VE, which ``"vp_time_quadratic"`` uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from sde_lib import LinearSDE, LinearSchedule, VPSDE

SCHEDULES = ("logSNR", "time_uniform", "time_quadratic", "vp_time_quadratic", "edm")
EDM_RHO = 7.0  # exponent of the EDM schedule, Karras et al. 2022, eq. (5)
REFERENCE_VP_BETAS = (0.1, 20.0)  # beta_min, beta_max of the VP SDE whose time defines "vp_time_quadratic" [SDE, sec. 3.4]
BISECTION_STEPS = 64  # halvings of [eps, T]: 2^-64 T is below the float64 spacing of any t in [eps, T]


@dataclass(frozen=True)
class NoiseLevel:
    """One grid time ``t`` with its kernel coefficients ``alpha``, ``sigma`` and ``lam = log(alpha / sigma)``."""

    t: float  # diffusion time
    alpha: float  # mean coefficient alpha(t)
    sigma: float  # kernel std sigma(t)
    lam: float  # half-log-SNR lambda(t)

    @property
    def scaled_sigma(self) -> float:
        """``sigma / alpha = exp(-lambda)``, the noise level of ``x / alpha`` (EDM's sigma for VP)."""
        return self.sigma / self.alpha


def grid_dtype(device: torch.device) -> torch.dtype:
    """float64 for the schedule computations, except on devices without it (Apple MPS)."""
    return torch.float32 if device.type == "mps" else torch.float64


def half_log_snr(sde: LinearSDE, t: Tensor) -> Tensor:
    """``lambda(t) = log alpha(t) - log sigma(t)`` (DPM-Solver notation), elementwise on ``(n,)``."""
    alpha, sigma = sde.marginal_coeffs(t)
    return torch.log(alpha) - torch.log(sigma)


def vp_linear_time(lam: Tensor, beta_min: float, beta_max: float) -> Tensor:
    """Closed-form ``t(lambda)`` of the linear VP schedule with ``beta(t) = beta_min + t (beta_max - beta_min)``.

    VP has ``sigma^2 = 1 - alpha^2``, so ``B(t) = -2 log alpha = log(1 + exp(-2 lambda)) = softplus(-2 lambda)``;
    ``B(t) = beta_0 t + (beta_1 - beta_0) t^2 / 2`` is then solved for ``t`` in the cancellation-free form
    ``t = 2 B / (beta_0 + sqrt(beta_0^2 + 2 (beta_1 - beta_0) B))`` (as DPM-Solver's ``inverse_lambda``).
    """
    B = torch.nn.functional.softplus(-2.0 * lam)
    return 2.0 * B / (beta_min + torch.sqrt(beta_min**2 + 2.0 * (beta_max - beta_min) * B))


def vp_linear_half_log_snr(t: Tensor, beta_min: float, beta_max: float) -> Tensor:
    """``lambda(t) = -log(expm1(B(t))) / 2`` of the linear VP schedule (``alpha^2 = e^{-B}``, ``sigma^2 = 1 - e^{-B}``)."""
    B = beta_min * t + 0.5 * (beta_max - beta_min) * t.square()
    return -0.5 * torch.log(torch.expm1(B))


def _vp_linear_inverse(sde: VPSDE, lam: Tensor) -> Tensor:
    """``t(lambda)`` of a linear-schedule :class:`sde_lib.VPSDE` (:func:`vp_linear_time` with its betas)."""
    return vp_linear_time(lam, sde.schedule.beta_min, sde.schedule.beta_max)


def _has_vp_linear_closed_form(sde: LinearSDE) -> bool:
    return (
        isinstance(sde, VPSDE)
        and isinstance(sde.schedule, LinearSchedule)
        and type(sde).marginal_coeffs is VPSDE.marginal_coeffs
    )


def _bisect_half_log_snr(sde: LinearSDE, lam: Tensor, eps: float) -> Tensor:
    """``t`` in ``[eps, T]`` with ``lambda(t) = lam`` for every entry, by bisection on the decreasing ``lambda``."""
    lo = torch.full_like(lam, eps)
    hi = torch.full_like(lam, sde.T)
    for _ in range(BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        too_early = half_log_snr(sde, mid) > lam  # lambda decreases in t: the root lies later
        lo = torch.where(too_early, mid, lo)
        hi = torch.where(too_early, hi, mid)
    return 0.5 * (lo + hi)


def inverse_half_log_snr(sde: LinearSDE, lam: Tensor, eps: float) -> Tensor:
    """``t(lambda)`` on ``[eps, T]``: closed form for the linear VP schedule and for an SDE whose
    :meth:`sde_lib.LinearSDE.time_of_scaled_sigma` has one (at ``sigma~ = exp(-lambda)``), else bisection."""
    if _has_vp_linear_closed_form(sde):
        t = _vp_linear_inverse(sde, lam)
    else:
        t = sde.time_of_scaled_sigma(torch.exp(-lam))
        if t is None:
            t = _bisect_half_log_snr(sde, lam, eps)
    return t.clamp(eps, sde.T)


def time_of_scaled_sigma(sde: LinearSDE, scaled_sigma: Tensor, eps: float) -> Tensor:
    """``t`` on ``[eps, T]`` with ``sigma(t) / alpha(t) = scaled_sigma``: the SDE's closed form where it has one (EDM's
    ``t = sigma``, exact), else :func:`inverse_half_log_snr` at ``lambda = -log scaled_sigma``."""
    t = sde.time_of_scaled_sigma(scaled_sigma)
    if t is None:
        return inverse_half_log_snr(sde, -torch.log(scaled_sigma), eps)
    return t.clamp(eps, sde.T)


def _schedule_times(sde: LinearSDE, schedule: str, steps: int, eps: float, device: torch.device) -> Tensor:
    """The ``steps + 1`` decreasing times of ``schedule`` from ``T`` to ``eps``.

    * ``logSNR``: uniform in ``lambda`` (DPM-Solver's recommended schedule for small data).
    * ``time_uniform``: uniform in ``t``.
    * ``time_quadratic``: uniform in ``sqrt(t)`` (DPM-Solver's ``time_quadratic``), denser near the data.
    * ``vp_time_quadratic``: ``time_quadratic`` in the time ``t'`` of the reference linear VP SDE
      (``beta`` from 0.1 to 20, :data:`REFERENCE_VP_BETAS`) that has the same ``lambda``: uniform in ``sqrt(t')``
      between ``t'(lambda(T))`` and ``t'(lambda(eps))``, mapped back through ``lambda``. For that VP SDE it is
      ``time_quadratic``; for any other SDE it puts the same ``lambda`` grid on the SDE's own range. Near
      the data (``t' ~ sigma~^2 / beta_min``) it is uniform in ``sigma~ = sigma / alpha``; towards the prior
      (``lambda ~ -(beta_max - beta_min) t'^2 / 4``) its ``lambda`` steps grow.
    * ``edm``: uniform in ``sigma~^(1/rho)`` with ``sigma~ = sigma / alpha = exp(-lambda)`` and ``rho = 7``
      (Karras et al., "Elucidating the design space...", NeurIPS 2022, eq. (5)); for VE ``sigma~`` is ``sigma``.
    """
    dtype = grid_dtype(device)
    u = torch.linspace(0.0, 1.0, steps + 1, dtype=dtype, device=device)
    if schedule == "time_uniform":
        return sde.T + u * (eps - sde.T)
    if schedule == "time_quadratic":
        return (math.sqrt(sde.T) + u * (math.sqrt(eps) - math.sqrt(sde.T))).square()
    ends = torch.tensor([sde.T, eps], dtype=dtype, device=device)
    lam_T, lam_eps = half_log_snr(sde, ends).tolist()
    if not lam_eps > lam_T:
        raise ValueError(
            f"lambda(t) = log(alpha / sigma) must decrease on [eps, T]; got lambda(eps)={lam_eps}, lambda(T)={lam_T}"
        )
    if schedule == "logSNR":
        lam = lam_T + u * (lam_eps - lam_T)
    elif schedule == "vp_time_quadratic":
        root_T, root_eps = vp_linear_time(ends.new_tensor([lam_T, lam_eps]), *REFERENCE_VP_BETAS).sqrt().tolist()
        lam = vp_linear_half_log_snr((root_T + u * (root_eps - root_T)).square(), *REFERENCE_VP_BETAS)
    elif schedule == "edm":
        first, last = math.exp(-lam_T / EDM_RHO), math.exp(-lam_eps / EDM_RHO)
        lam = -EDM_RHO * torch.log(first + u * (last - first))
    else:
        raise ValueError(f"schedule must be one of {', '.join(map(repr, SCHEDULES))}; got {schedule!r}")
    return inverse_half_log_snr(sde, lam, eps)


def noise_levels(sde: LinearSDE, schedule: str, steps: int, eps: float, device: torch.device) -> list[NoiseLevel]:
    """The grid ``t_0 = T > ... > t_steps = eps`` of ``schedule`` with its coefficients, as Python floats.

    The end points are set exactly to ``T`` and ``eps``; a grid that is not strictly decreasing (too many
    steps for the float precision of ``[eps, T]``) raises ``ValueError``.
    """
    t = _schedule_times(sde, schedule, steps, eps, device)
    t[0], t[-1] = sde.T, eps
    if not bool((t[1:] < t[:-1]).all()):
        raise ValueError(f"schedule {schedule!r} with {steps} steps does not give strictly decreasing times on [{eps}, {sde.T}]")
    return levels_at(sde, t)


def levels_at(sde: LinearSDE, t: Tensor) -> list[NoiseLevel]:
    """The :class:`NoiseLevel` of each time in the 1-D tensor ``t``."""
    alpha, sigma = sde.marginal_coeffs(t)
    lam = torch.log(alpha) - torch.log(sigma)
    return [NoiseLevel(*row) for row in torch.stack([t, alpha, sigma, lam], dim=1).tolist()]
