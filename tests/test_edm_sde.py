"""``sde_lib.EDMSDE``, EDM's ``sigma(t) = t`` diffusion (Karras et al., NeurIPS 2022), against exact answers, and the
toolkit's generic components on it.

* Coefficients and kernel: ``f = 0``, ``g = sqrt(2 t)``, ``N(x0, t^2 I)``; ``d std^2 / dt = g^2``; a Monte-Carlo of the
  SDE itself reproduces the kernel; the SMLD discretization adds up to the exact variance at every grid time.
* ``GaussianMixture``'s exact density and score on it (scipy and autograd); the probability-flow ODE maps Gaussian
  data exactly as the closed form and samples the 8-Gaussian ring; ``fast_sample`` (DPM-Solver and Heun) and
  ``pc_sample`` (reverse diffusion + Langevin) run on it; the exact log-likelihood of a 2-D Gaussian.
* The time-step schedules of ``samplers.timesteps``: time is the noise level, so every grid is exact in it.
"""

from __future__ import annotations

import math

import ml_collections
import numpy as np
import pytest
import torch
from scipy import stats

import sde_lib
from sampler_checks import RING_SAMPLES, assert_ring_modes, gaussian_flow_map
from samplers import fast_sample, log_likelihood, ode_sample, pc_sample
from samplers.timesteps import (
    EDM_RHO,
    SCHEDULES,
    _bisect_half_log_snr,
    half_log_snr,
    inverse_half_log_snr,
    noise_levels,
    time_of_scaled_sigma,
)

EDM = sde_lib.EDMSDE()  # sigma_min 0.002, sigma_max = T = 80, N = 1000
EPS = 0.002  # the natural end of sampling: t = sigma_min
RING = sde_lib.GaussianMixture.ring()
MU, S = torch.tensor([1.0, -2.0], dtype=torch.float64), 0.5


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def times(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


# ------------------------------------------------------------------------------------------- the SDE itself
def test_coefficients_kernel_and_prior():
    """``f = 0``, ``g(t) = sqrt(2 t)``, ``(alpha, std) = (1, t)``, ``T = sigma_max``, prior ``N(0, sigma_max^2 I)``;
    the variance ODE ``d std^2 / dt = 2 f std^2 + g^2`` holds (central differences), and so ``lambda = -log t``."""
    t = times(0.0, 1e-3, 0.5, 2.0, 80.0)
    torch.testing.assert_close(EDM.drift_coeff(t), torch.zeros_like(t), rtol=0, atol=0)
    torch.testing.assert_close(EDM.diffusion_coeff(t), (2 * t).sqrt(), rtol=1e-15, atol=0)
    alpha, std = EDM.marginal_coeffs(t)
    assert torch.equal(alpha, torch.ones_like(t)) and torch.equal(std, t)
    assert EDM.T == 80.0 and EDM.prior_std == 80.0 and EDM.N == 1000 and EDM.sigma_min == 0.002
    h = 1e-4
    tc = times(0.5, 2.0, 40.0)
    d_var = (EDM.marginal_coeffs(tc + h)[1] ** 2 - EDM.marginal_coeffs(tc - h)[1] ** 2) / (2 * h)
    torch.testing.assert_close(d_var, EDM.diffusion_coeff(tc) ** 2, rtol=1e-9, atol=0)
    torch.testing.assert_close(half_log_snr(EDM, tc), -tc.log(), rtol=1e-15, atol=0)
    x = torch.randn(6, 3, generator=seeded(0), dtype=torch.float64)
    drift, g = EDM.sde(x, times(*[1.0] * 6))
    assert torch.equal(drift, torch.zeros_like(x)) and torch.allclose(g, torch.full((6,), math.sqrt(2.0), dtype=torch.float64))
    mean, std = EDM.marginal_prob(x, times(*[3.0] * 6))
    assert torch.equal(mean, x) and torch.equal(std, torch.full((6,), 3.0, dtype=torch.float64))
    z = EDM.prior_sampling((20000, 2), generator=seeded(1), dtype=torch.float64)
    assert abs(z.std().item() / 80.0 - 1.0) <= 4 * math.sqrt(1.0 / (2 * z.numel()))
    expected = stats.norm(0.0, 80.0).logpdf(z[:5].numpy()).sum(axis=1)
    np.testing.assert_allclose(EDM.prior_logp(z[:5]).numpy(), expected, rtol=1e-12)
    assert repr(EDM) == "EDMSDE(sigma_min=0.002, sigma_max=80.0, N=1000)"


def test_time_is_the_noise_level():
    """``time_of_scaled_sigma`` is the identity (exact, bitwise), and the generic bisection on ``lambda`` agrees."""
    sigmas = times(0.002, 0.1, 1.0, 17.0, 80.0)
    assert torch.equal(EDM.time_of_scaled_sigma(sigmas), sigmas)
    assert torch.equal(time_of_scaled_sigma(EDM, sigmas, 1e-3), sigmas)
    torch.testing.assert_close(inverse_half_log_snr(EDM, -sigmas.log(), 1e-3), sigmas, rtol=1e-15, atol=0)
    torch.testing.assert_close(_bisect_half_log_snr(EDM, -sigmas.log(), 1e-3), sigmas, rtol=1e-14, atol=0)


def config(**model) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.training = ml_collections.ConfigDict({"sde": "edm"})
    c.model = ml_collections.ConfigDict({"num_scales": 18} | model)
    return c


def test_registered_as_edm_and_built_from_config():
    assert "edm" in sde_lib.available_sdes()
    sde = sde_lib.get_sde(config(sigma_min=0.01, sigma_max=20.0))
    assert type(sde) is sde_lib.EDMSDE and (sde.sigma_min, sde.sigma_max, sde.T, sde.N) == (0.01, 20.0, 20.0, 18)
    default = sde_lib.get_sde(config())
    assert (default.sigma_min, default.sigma_max) == (sde_lib.EDM_SIGMA_MIN, sde_lib.EDM_SIGMA_MAX) == (0.002, 80.0)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(sigma_min=0.0), "sigma_min"), (dict(sigma_min=-1.0), "sigma_min"), (dict(sigma_min=float("nan")), "sigma_min"),
        (dict(sigma_max=float("inf")), "sigma_max"), (dict(sigma_max=-80.0), "sigma_max"),
        (dict(sigma_min=80.0, sigma_max=80.0), "sigma_min must be < sigma_max"),
        (dict(N=0), "N must be an integer"), (dict(N=2.5), "N must be an integer"),
    ],
)
def test_bad_arguments_are_one_line_value_errors(kwargs, match):
    with pytest.raises(ValueError, match=match) as info:
        sde_lib.EDMSDE(**kwargs)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=r"t must lie in \[0, T\]"):
        EDM.marginal_prob(torch.zeros(1, 2), times(80.5))


# Euler--Maruyama of dx = sqrt(2 t) dw with step DT from x(0) = X0: the chain's variance at t = k DT is exactly
# sum_j 2 (j DT) DT = t^2 - t DT (left Riemann sum), its mean X0.
N_PATHS = 20000
DT = 0.01
X0 = 1.5


def test_simulated_sde_matches_the_kernel():
    """20,000 Euler--Maruyama paths of ``sde.sde`` (step 0.01) at t = 0.5, 2, 10, 80: mean within 4 SE of ``X0``,
    variance within 4 SE of the chain's exact variance ``t^2 - t DT`` (relative bias ``DT / t``: 2 % at t = 0.5)."""
    out = {50: None, 200: None, 1000: None, 8000: None}
    gen = seeded(2024)
    x = torch.full((N_PATHS, 1), X0, dtype=torch.float64)
    for k in range(8000):
        t = torch.full((N_PATHS,), k * DT, dtype=torch.float64)
        drift, g = EDM.sde(x, t)
        x = x + drift * DT + g[:, None] * math.sqrt(DT) * torch.randn(x.shape, generator=gen, dtype=torch.float64)
        if k + 1 in out:
            out[k + 1] = x.clone()
    for k, xs in out.items():
        t = k * DT
        mean, std = EDM.marginal_prob(torch.full((1, 1), X0, dtype=torch.float64), times(t))
        var = std.item() ** 2
        chain_var = var - t * DT
        se_mean, se_var = math.sqrt(var / N_PATHS), var * math.sqrt(2.0 / (N_PATHS - 1))
        assert abs(xs.mean().item() - mean.item()) <= 4 * se_mean, (t, xs.mean().item())
        assert abs(xs.var().item() - chain_var) <= 4 * se_var, (t, xs.var().item(), chain_var)


def test_discretize_is_smld_on_the_time_grid():
    """``f = 0``, ``G_i^2 = t_i^2 - t_{i-1}^2`` on ``t_i = i T / (N - 1)``: the chain's variance after steps ``0..i`` is
    ``t_i^2``, the exact marginal variance, at every grid time (to rounding)."""
    sde = sde_lib.EDMSDE(N=50)
    grid = torch.linspace(0.0, sde.T, sde.N, dtype=torch.float64)
    t = (torch.arange(sde.N, dtype=torch.float64) + 0.25) * sde.T / (sde.N - 1)
    t[-1] = sde.T
    assert torch.equal(sde._timestep(t), torch.arange(sde.N))
    x = torch.randn(sde.N, 2, generator=seeded(0), dtype=torch.float64)
    f, G = sde.discretize(x, t)
    assert torch.equal(f, torch.zeros_like(x)) and G[0] == 0.0
    torch.testing.assert_close(G.square().cumsum(0), grid.square(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sde.discrete_sigmas, grid, rtol=0, atol=0)


def test_reverse_sde_and_probability_flow():
    """Reverse drift ``-g^2 score = -2 t score`` (SDE) and ``-t score`` (probability flow), with the exact score."""
    x = torch.randn(5, 2, generator=seeded(1), dtype=torch.float64)
    t = times(0.01, 0.5, 1.0, 10.0, 80.0)
    score = RING.score_fn(EDM)(x, t)
    drift, diffusion = EDM.reverse(RING.score_fn(EDM)).sde(x, t)
    torch.testing.assert_close(drift, -2 * t[:, None] * score, rtol=1e-14, atol=1e-14)
    drift, diffusion = EDM.reverse(RING.score_fn(EDM), probability_flow=True).sde(x, t)
    torch.testing.assert_close(drift, -t[:, None] * score, rtol=1e-14, atol=1e-14)
    assert torch.equal(diffusion, torch.zeros_like(t))


# ------------------------------------------------------------------------------------------- Gaussian mixtures
@pytest.mark.parametrize("t", [0.0, 0.002, 0.7, 5.0, 80.0])
def test_gaussian_mixture_density_and_score(t):
    """``log p_t`` of the ring on EDM's SDE is the mixture of ``N(mu_k, (0.09 + t^2) I)`` (scipy), and the score is
    its gradient (autograd)."""
    x = (RING.sample(16, seeded(3), dtype=torch.float64) + t * torch.randn(16, 2, generator=seeded(4), dtype=torch.float64))
    tt = torch.full((16,), t, dtype=torch.float64)
    var = 0.09 + t**2
    expected = np.log(sum(
        w * stats.multivariate_normal(mu, var * np.eye(2)).pdf(x.numpy()) for w, mu in zip(RING.weights.numpy(), RING.means.numpy())
    ))
    np.testing.assert_allclose(RING.log_prob_fn(EDM)(x, tt).numpy(), expected, rtol=1e-10)
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(RING.log_prob_fn(EDM)(xg, tt).sum(), xg)
    torch.testing.assert_close(RING.score_fn(EDM)(x, tt), grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("t_end", [EPS, 1.0, 20.0])
def test_probability_flow_ode_is_the_exact_gaussian_map(t_end):
    """``ode_sample`` (RK45, rtol = atol = 1e-6) from prior points at ``T = 80`` to ``t_end`` equals the closed-form map
    ``x(t) = MU + sqrt(S^2 + t^2) (x(T) - MU) / sqrt(S^2 + T^2)`` of N(MU, S^2 I) data, to 1e-5 relative to
    ``1 + |x|`` (measured: 1.1e-6 at 0.002, where ``|x|`` is about 1; 4e-7 relative at 20, where it is up to 45)."""
    data = sde_lib.GaussianMixture.gaussian(MU, S**2)
    x_T = EDM.prior_sampling((32, 2), generator=seeded(0), dtype=torch.float64)
    x, _ = ode_sample(EDM, data.score_fn(EDM), x_T.shape, z=x_T, eps=t_end, rtol=1e-6, atol=1e-6)
    exact = gaussian_flow_map(EDM, MU, S**2, x_T, EDM.T, t_end)
    torch.testing.assert_close(exact, MU + math.sqrt(S**2 + t_end**2) * (x_T - MU) / math.sqrt(S**2 + 80.0**2), rtol=1e-12, atol=1e-12)
    assert ((x - exact).abs() / (1 + exact.abs())).max().item() < 1e-5


def test_probability_flow_ode_samples_the_ring():
    """The ODE from the prior ``N(0, 80^2 I)`` to ``t = 0.002`` samples the ring: no discretization bias is allowed
    (the law at 0.002 has a within-mode variance 0.09 + 4e-6)."""
    x, _ = ode_sample(EDM, RING.score_fn(EDM), (RING_SAMPLES, 2), eps=EPS, generator=seeded(5))
    assert_ring_modes(x, 0.0, data_seed=6)


# Max error at nfe = 50 against the exact map of N(MU, S^2 I) from T = 80 to 0.002; measured: DPM-Solver (noise,
# UniPC) 1.7e-4, data prediction 7.3e-5, Heun 3.9e-2 (its grid spans noise levels 0.002-80 in 25 steps). Bounds: 2x.
FAST_BOUNDS = {("dpm_solver", None): 4e-4, ("dpm_solver", "data"): 1.5e-4, ("heun", None): 0.08}


@pytest.mark.parametrize("method,prediction", list(FAST_BOUNDS))
def test_fast_sample_on_gaussian_data(method, prediction):
    data = sde_lib.GaussianMixture.gaussian(MU, S**2)
    x_T = EDM.prior_sampling((32, 2), generator=seeded(0), dtype=torch.float64)
    x, nfe = fast_sample(EDM, data.score_fn(EDM), x_T.shape, nfe=50, eps=EPS, x_init=x_T, method=method, prediction=prediction)
    assert nfe == 50
    assert (x - gaussian_flow_map(EDM, MU, S**2, x_T, EDM.T, EPS)).abs().max().item() < FAST_BOUNDS[(method, prediction)]


# Reverse diffusion + the reference's Langevin corrector on EDMSDE(sigma_max=20, N=500) (sigma_max above the ring's
# largest pairwise distance 8, as the VE tests): within-mode variance +0.0737, measured once with seed 1 from 60,000
# samples (standard error 0.0041). pc_sample's grid is uniform in t, which for this SDE is uniform in the noise
# level (VE's is uniform in log sigma): steps of 0.04 leave few steps below the ring's std 0.3, hence the bias
# (+0.49 with sigma_max = 80, whose steps are 0.16; +0.18 at N = 1000).
PC_BIAS = 0.0737


def test_pc_sample_reverse_diffusion_langevin_samples_the_ring():
    sde = sde_lib.EDMSDE(sigma_max=20.0, N=500)
    x, nfe = pc_sample(sde, RING.score_fn(sde), (6000, 2), eps=EPS, generator=seeded(10))
    assert nfe == 1000 and x.dtype == torch.float32
    assert_ring_modes(x, PC_BIAS, data_seed=11, measured_se=0.0041)


# ------------------------------------------------------------------------------------------- likelihood
def anisotropic_gaussian() -> sde_lib.GaussianMixture:
    return sde_lib.GaussianMixture(torch.ones(1, dtype=torch.float64), times(-0.5, 1.0)[None], times(0.1, 1.5)[None])


def test_log_likelihood_of_a_gaussian_is_exact():
    """2-D Gaussian: ``log_likelihood`` (exact divergence, rtol = atol = 1e-6, from ``eps`` = 0.002) with the prior
    swapped for the exact ``log p_T(z)`` equals the exact ``log p_eps(x)`` to 1e-3 nats. Unswapped, the remaining
    error is the prior's, ``log N(z; 0, T^2 I) - log p_T(z)``: with ``p_T = N(m, diag(v) + T^2 I)`` its leading term is
    ``-(z . m) / T^2``, of order ``|m| |z| / T^2 ~ |m| / T`` (0.031 nats at most here, ``|m|`` = 1.1); bounded by 0.05."""
    data = anisotropic_gaussian()
    x = data.sample(16, generator=seeded(0), dtype=torch.float64)
    logp, z, nfe = log_likelihood(EDM, data.score_fn(EDM), x, divergence="exact", eps=EPS, rtol=1e-6, atol=1e-6)
    assert logp.shape == (16,) and z.shape == x.shape and nfe > 0
    exact = data.log_prob_fn(EDM)
    log_pT = exact(z, torch.full((16,), EDM.T, dtype=torch.float64))
    target = exact(x, torch.full((16,), EPS, dtype=torch.float64))
    assert (logp - EDM.prior_logp(z) + log_pT - target).abs().max().item() < 1e-3
    prior_error = EDM.prior_logp(z) - log_pT
    assert prior_error.abs().max().item() < 0.05
    assert (logp - target).abs().max().item() < 1e-3 + prior_error.abs().max().item()


# ------------------------------------------------------------------------------------------- time-step schedules
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_every_schedule_gives_a_grid_from_T_to_eps(schedule):
    """Strictly decreasing from exactly ``T = 80`` to exactly ``eps``; noise level = time at every node."""
    levels = noise_levels(EDM, schedule, 12, EPS, torch.device("cpu"))
    t = [level.t for level in levels]
    assert t[0] == 80.0 and t[-1] == EPS and all(a > b for a, b in zip(t, t[1:]))
    assert all(level.alpha == 1.0 and level.scaled_sigma == level.t for level in levels)


def test_edm_and_log_snr_schedules_are_the_papers_grids():
    """``"edm"``: eq. (5) of Karras et al. with ``sigma_max = T``, ``sigma_min = eps``, ``rho = 7``; ``"logSNR"``:
    geometric from 80 to 0.002."""
    n = 18
    i = torch.arange(n + 1, dtype=torch.float64)
    eq5 = (80.0 ** (1 / EDM_RHO) + i / n * (EPS ** (1 / EDM_RHO) - 80.0 ** (1 / EDM_RHO))) ** EDM_RHO
    got = torch.tensor([level.t for level in noise_levels(EDM, "edm", n, EPS, torch.device("cpu"))], dtype=torch.float64)
    torch.testing.assert_close(got, eq5, rtol=1e-13, atol=0)
    geometric = torch.exp(torch.linspace(math.log(80.0), math.log(EPS), n + 1, dtype=torch.float64))
    got = torch.tensor([level.t for level in noise_levels(EDM, "logSNR", n, EPS, torch.device("cpu"))], dtype=torch.float64)
    torch.testing.assert_close(got, geometric, rtol=1e-13, atol=0)
