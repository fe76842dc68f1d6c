"""Oracles shared by the SDE tests, written from the papers and independently of ``sde_lib``.

* Closed-form perturbation kernels ``N(alpha(t) x0, sigma(t)^2 I)`` of [SDE] eq. (29) (Song et al., ICLR
  2021) for VP, sub-VP and VE, and of the cosine schedule of Nichol & Dhariwal (2021), eq. (17), in numpy
  float64, in cancellation-free but algebraically independent forms.
* ``chain_moments``: the exact mean and variance of a linear Gaussian chain
  ``x_{k+1} = (1 + a_k) x_k + b_k + G_k z_k``, which is what Euler--Maruyama, the DDPM/SMLD discretizations
  and torchsde's ``euler`` method produce for a linear SDE; it turns a discretization bias into a number.
* ``simulate``: torchsde's ``sdeint`` (Euler--Maruyama, fixed step, seeded Brownian motion) of a drift and
  diffusion given in the ``sde_lib`` convention.
* Standard errors of a sample mean and a Gaussian sample variance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torchsde

import sde_lib

# ---------------------------------------------------------------------------- closed forms


def linear_log_mean(t: np.ndarray, beta_min: float, beta_max: float) -> np.ndarray:
    """``log alpha(t) = -t^2 (beta_max - beta_min) / 4 - t beta_min / 2``, [SDE] eq. (33)."""
    return -0.25 * t**2 * (beta_max - beta_min) - 0.5 * t * beta_min


def cosine_alpha_bar(t: np.ndarray, s: float) -> np.ndarray:
    """``alpha_bar(t) = cos^2(phi(t)) / cos^2(phi(0))``, ``phi(t) = (t + s) / (1 + s) pi / 2``."""
    phi, phi0 = (t + s) / (1 + s) * math.pi / 2, s / (1 + s) * math.pi / 2
    return np.cos(phi) ** 2 / math.cos(phi0) ** 2


def cosine_one_minus_alpha_bar(t: np.ndarray, s: float) -> np.ndarray:
    """``1 - alpha_bar(t)`` via ``cos^2 a - cos^2 b = sin(b - a) sin(b + a)`` (exact, no cancellation at t = 0)."""
    phi0 = s / (1 + s) * math.pi / 2
    d = t / (1 + s) * math.pi / 2  # phi(t) - phi(0), formed without subtracting
    return np.sin(d) * np.sin(d + 2 * phi0) / math.cos(phi0) ** 2


def vp_linear_coeffs(t, beta_min, beta_max):
    log_mean = linear_log_mean(t, beta_min, beta_max)
    return np.exp(log_mean), np.sqrt(-np.expm1(2 * log_mean))  # std sqrt(1 - exp(2 log_mean))


def subvp_linear_coeffs(t, beta_min, beta_max):
    log_mean = linear_log_mean(t, beta_min, beta_max)
    return np.exp(log_mean), -np.expm1(2 * log_mean)  # std 1 - exp(2 log_mean)


def vp_cosine_coeffs(t, s):
    return np.sqrt(cosine_alpha_bar(t, s)), np.sqrt(cosine_one_minus_alpha_bar(t, s))


def subvp_cosine_coeffs(t, s):
    return np.sqrt(cosine_alpha_bar(t, s)), cosine_one_minus_alpha_bar(t, s)


def ve_coeffs(t, sigma_min, sigma_max, exact):
    """``sigma(t) = sigma_min (sigma_max / sigma_min)^t``; exact: ``sigma_min sqrt((sigma_max / sigma_min)^(2t) - 1)``.

    ``exact``: the law of the SDE started at a point mass, ``sqrt(sigma(t)^2 - sigma_min^2)``.
    """
    log_ratio = math.log(sigma_max / sigma_min)
    if exact:
        std = sigma_min * np.sqrt(np.expm1(2 * t * log_ratio))
    else:
        std = sigma_min * (sigma_max / sigma_min) ** t
    return np.ones_like(t), std


@dataclass(frozen=True)
class SDECase:
    """An SDE built by ``make`` and its kernel ``coeffs(t) -> (alpha, sigma)`` written out independently."""

    name: str
    make: Callable[[], sde_lib.LinearSDE]
    coeffs: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
    T: float  # end time the SDE must report
    prior_std: float  # std of the prior N(0, prior_std^2 I)

    def __repr__(self) -> str:
        return self.name


COSINE_T = 0.9946  # documented default end time of the cosine schedule
SDE_CASES = [
    SDECase("vp_linear", lambda: sde_lib.VPSDE(), lambda t: vp_linear_coeffs(t, 0.1, 20.0), 1.0, 1.0),
    SDECase(
        "vp_linear_b0.5_12",
        lambda: sde_lib.VPSDE(beta_min=0.5, beta_max=12.0, N=500),
        lambda t: vp_linear_coeffs(t, 0.5, 12.0),
        1.0,
        1.0,
    ),
    SDECase(
        "vp_cosine", lambda: sde_lib.VPSDE(schedule="cosine"), lambda t: vp_cosine_coeffs(t, 0.008), COSINE_T, 1.0
    ),
    SDECase(
        "vp_cosine_s0.02_T0.9",
        lambda: sde_lib.VPSDE(schedule="cosine", cosine_s=0.02, T=0.9),
        lambda t: vp_cosine_coeffs(t, 0.02),
        0.9,
        1.0,
    ),
    SDECase("subvp_linear", lambda: sde_lib.subVPSDE(), lambda t: subvp_linear_coeffs(t, 0.1, 20.0), 1.0, 1.0),
    SDECase(
        "subvp_cosine",
        lambda: sde_lib.subVPSDE(schedule="cosine"),
        lambda t: subvp_cosine_coeffs(t, 0.008),
        COSINE_T,
        1.0,
    ),
    SDECase("ve", lambda: sde_lib.VESDE(), lambda t: ve_coeffs(t, 0.01, 50.0, False), 1.0, 50.0),
    SDECase(
        "ve_exact",
        lambda: sde_lib.VESDE(exact_marginal=True),
        lambda t: ve_coeffs(t, 0.01, 50.0, True),
        1.0,
        math.sqrt(50.0**2 - 0.01**2),
    ),
    SDECase(
        "ve_0.1_10",
        lambda: sde_lib.VESDE(sigma_min=0.1, sigma_max=10.0, N=200),
        lambda t: ve_coeffs(t, 0.1, 10.0, False),
        1.0,
        10.0,
    ),
]
CASES_BY_NAME = {case.name: case for case in SDE_CASES}


def gaussian_data_score(case: SDECase, mu: float, data_var: float):
    """Exact score of ``x(t)`` for data ``N(mu, data_var I)``: ``-(x - alpha mu) / (alpha^2 data_var + sigma^2)``."""

    def score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha, sigma = case.coeffs(t.detach().double().cpu().numpy())
        alpha = torch.as_tensor(alpha, dtype=x.dtype, device=x.device).reshape(-1, *([1] * (x.ndim - 1)))
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, *([1] * (x.ndim - 1)))
        return -(x - alpha * mu) / (alpha.square() * data_var + sigma.square())

    return score


# ---------------------------------------------------------------------------- statistics


def se_mean(var: np.ndarray | float, n: int) -> np.ndarray | float:
    """Standard error of a sample mean of ``n`` draws of variance ``var``: ``sqrt(var / n)``."""
    return np.sqrt(np.asarray(var) / n)


def se_var_gaussian(var: np.ndarray | float, n: int) -> np.ndarray | float:
    """Standard error of the sample variance of ``n`` Gaussian draws: ``var sqrt(2 / (n - 1))``."""
    return np.asarray(var) * math.sqrt(2.0 / (n - 1))


# ---------------------------------------------------------------------------- linear chains


def chain_moments(mean0, var0, a, G2, b=None):
    """Exact moments of ``x_{k+1} = (1 + a_k) x_k + b_k + G_k z_k``, ``z_k ~ N(0, I)`` independent of ``x_k``.

    ``mean -> (1 + a) mean + b``, ``var -> (1 + a)^2 var + G^2``. ``a``, ``G2`` are ``(K,)``; ``b`` is
    ``(K,)``, ``(K, D)`` or ``None`` (zero); ``mean0``/``var0`` scalars or ``(D,)``. Returns arrays ``(K + 1, ...)`` of
    the mean and variance after 0, 1, ..., K steps (float64).
    """
    a = np.asarray(a, dtype=np.float64)
    G2 = np.asarray(G2, dtype=np.float64)
    b = np.zeros_like(a) if b is None else np.asarray(b, dtype=np.float64)
    means = [np.asarray(mean0, dtype=np.float64)]
    variances = [np.asarray(var0, dtype=np.float64)]
    for a_k, b_k, g2_k in zip(a, b, G2):
        means.append((1 + a_k) * means[-1] + b_k)
        variances.append((1 + a_k) ** 2 * variances[-1] + g2_k)
    return np.stack(means), np.stack(variances)


def drift_and_diffusion_coeffs(sde, t: np.ndarray, dtype=torch.float64) -> tuple[np.ndarray, np.ndarray]:
    """``f(t)`` and ``g(t)`` of a linear SDE read off ``sde.sde(1, t)`` (drift ``f(t) x`` at ``x = 1``)."""
    tt = torch.as_tensor(t, dtype=dtype)
    drift, diffusion = sde.sde(torch.ones(tt.shape[0], 1, dtype=dtype), tt)
    return drift[:, 0].numpy(), diffusion.numpy()


# ---------------------------------------------------------------------------- torchsde


class _TorchsdeAdapter(torch.nn.Module):
    """torchsde view (diagonal Ito noise, time ``s``) of ``drift_and_diffusion(x, s_batch) -> (drift, g (B,))``."""

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, drift_and_diffusion):
        super().__init__()
        self.drift_and_diffusion = drift_and_diffusion

    def f_and_g(self, s, y):
        drift, diffusion = self.drift_and_diffusion(y, s.expand(y.shape[0]))
        return drift, diffusion[:, None].expand_as(y)


def simulate(drift_and_diffusion, y0: torch.Tensor, ts: torch.Tensor, dt: float, seed: int) -> torch.Tensor:
    """``torchsde.sdeint`` Euler--Maruyama from ``y0`` ``(n, D)`` with step ``dt``; returns ``(len(ts), n, D)``.

    The output times should be multiples of ``dt`` so that no step is interpolated. Runs on one intra-op
    thread: each step is a handful of small tensor operations, which extra threads only slow down (5-10x on a
    busy 2-core machine).
    """
    bm = torchsde.BrownianInterval(  # dt: build the tree for fixed steps (several times faster to query)
        t0=float(ts[0]), t1=float(ts[-1]), size=tuple(y0.shape), dtype=y0.dtype, entropy=seed, dt=dt
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return torchsde.sdeint(_TorchsdeAdapter(drift_and_diffusion), y0, ts, bm=bm, method="euler", dt=dt)
    finally:
        torch.set_num_threads(threads)
