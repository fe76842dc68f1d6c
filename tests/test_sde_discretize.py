"""Discretizations ([SDE] eq. (9)-(10) and Euler--Maruyama) against the continuous SDE they approximate.

The discrete chain ``x_{i+1} = x_i + f_i + G_i z_i`` of a linear SDE has ``f_i = a_i x_i``; its mean and
variance follow ``m -> (1 + a) m``, ``v -> (1 + a)^2 v + G^2`` exactly (``chain_moments``), so the error of
the chain after all N steps against ``marginal_prob`` at T is a deterministic number that must shrink like 1/N.
"""

import math

import numpy as np
import pytest
import torch

import sde_lib
from sde_reference import CASES_BY_NAME, chain_moments, cosine_alpha_bar, linear_log_mean

NS = (100, 1000, 10000)


def _first_order(errors):
    """Each tenfold increase of N divides the error by 5 to 20 (order 1 +- 0.3)."""
    return all(0.05 <= fine / coarse <= 0.2 for coarse, fine in zip(errors, errors[1:]))


def _index_grid(sde) -> torch.Tensor:
    """Times whose discrete step index ``floor(t (N - 1) / T)`` is 0, 1, ..., N - 1 (a quarter step inside each
    cell, so float round-off cannot move the floor; the last time is T itself)."""
    N = sde.N
    t = (torch.arange(N, dtype=torch.float64) + 0.25) * sde.T / (N - 1)
    t[-1] = sde.T
    assert torch.equal(sde._timestep(t), torch.arange(N))
    return t


def _euler_grid(sde) -> torch.Tensor:
    """Left end points ``t_i = i T / N`` of the Euler--Maruyama steps of size ``T / N``."""
    return torch.arange(sde.N, dtype=torch.float64) * sde.T / sde.N


def _chain_at_T(discretize, t: torch.Tensor, var0: float = 0.0):
    """Mean coefficient and variance after the N steps ``discretize(x, t_i)`` from ``x0 = 1`` (variance ``var0``)."""
    f, G = discretize(torch.ones(t.shape[0], 1, dtype=torch.float64), t)
    mean, var = chain_moments(1.0, var0, a=f[:, 0].numpy(), G2=G.square().numpy())
    return mean[-1], var[-1]


@pytest.mark.parametrize("beta_min,beta_max", [(0.1, 20.0), (0.5, 12.0)])
def test_vp_linear_cumprod_tracks_exp_minus_integral(beta_min, beta_max):
    """``prod_{i<=k} (1 - beta_i)`` vs ``exp(-B(t_{k+1}))``, ``t_{k+1} = (k + 1) / N``, in log space.

    With the reference's ``beta_i = beta(i / (N - 1)) / N``: ``|sum beta_i - B(t_{k+1})| <= (beta_max -
    beta_min) / (8 (N - 1))`` and ``0 <= -log(1 - x) - x <= x^2 / (2 (1 - x))``, so the log error is at most
    ``bound_N = (beta_max - beta_min) / (8 (N - 1)) + sum_i beta_i^2 / (2 (1 - beta_i)) = O(1/N)``.
    """
    errors = []
    for N in NS:
        sde = sde_lib.VPSDE(beta_min=beta_min, beta_max=beta_max, N=N)
        betas = sde.discrete_betas.numpy()
        reference_betas = (beta_min + np.arange(N) / (N - 1) * (beta_max - beta_min)) / N
        np.testing.assert_allclose(betas, reference_betas, rtol=1e-13)
        np.testing.assert_allclose(sde.alphas_cumprod.numpy(), np.cumprod(1 - reference_betas), rtol=1e-12)
        t_next = np.arange(1, N + 1) / N
        err = np.abs(np.log(sde.alphas_cumprod.numpy()) - 2 * linear_log_mean(t_next, beta_min, beta_max)).max()
        bound = (beta_max - beta_min) / (8 * (N - 1)) + (betas**2 / (2 * (1 - betas))).sum()
        assert err <= bound, (N, err, bound)
        errors.append(err)
    assert _first_order(errors), errors


@pytest.mark.parametrize("s,T", [(0.008, None), (0.02, 0.9)])
def test_vp_cosine_cumprod_equals_alpha_bar_on_the_grid(s, T):
    """Cosine betas ``1 - alpha_bar(t_{i+1}) / alpha_bar(t_i)`` on ``t_i = i T / N`` telescope: the cumulative
    product IS ``alpha_bar(t_{k+1})`` for every N (no clipping at 0.999 happens for N >= 100); the only error is
    round-off, < 1e-10 in log space over 10^4 factors."""
    for N in NS:
        sde = sde_lib.VPSDE(schedule="cosine", cosine_s=s, N=N, T=T)
        betas = sde.discrete_betas.numpy()
        assert (betas > 0).all() and (betas < 0.999).all()
        t_next = np.arange(1, N + 1) * sde.T / N
        err = np.abs(np.log(sde.alphas_cumprod.numpy()) - np.log(cosine_alpha_bar(t_next, s))).max()
        assert err < 1e-10, (N, err)
        # sub-VP exposes the same tables
        sub = sde_lib.subVPSDE(schedule="cosine", cosine_s=s, N=N, T=T)
        assert torch.equal(sub.alphas_cumprod, sde.alphas_cumprod)


@pytest.mark.parametrize("sigma_min,sigma_max,N", [(0.01, 50.0, 1000), (0.1, 10.0, 7)])
def test_ve_discrete_sigmas_are_geometric(sigma_min, sigma_max, N):
    sigmas = sde_lib.VESDE(sigma_min=sigma_min, sigma_max=sigma_max, N=N).discrete_sigmas.numpy()
    expected = sigma_min * (sigma_max / sigma_min) ** (np.arange(N) / (N - 1))
    np.testing.assert_allclose(sigmas, expected, rtol=1e-13)
    np.testing.assert_allclose(sigmas[1:] / sigmas[:-1], (sigma_max / sigma_min) ** (1 / (N - 1)), rtol=1e-13)


CHAIN_CASES = {
    # name: (constructor of N, time grid of the discretization)
    "vp_linear": (lambda N: sde_lib.VPSDE(N=N), _index_grid),  # DDPM (ancestral) steps
    "subvp_linear": (lambda N: sde_lib.subVPSDE(N=N), _euler_grid),  # Euler--Maruyama
    "subvp_cosine": (lambda N: sde_lib.subVPSDE(schedule="cosine", N=N), _euler_grid),
}


@pytest.mark.parametrize("name", list(CHAIN_CASES))
def test_discrete_chain_converges_to_the_sde_at_first_order(name):
    """Mean coefficient and variance of the N-step chain from x0 = 1 vs ``marginal_prob`` at T: the error
    (max of the two, absolute; both are O(1)) decreases like 1/N over N = 100, 1000, 10000."""
    make, grid = CHAIN_CASES[name]
    case = CASES_BY_NAME[name]
    errors = []
    for N in NS:
        sde = make(N)
        mean, var = _chain_at_T(sde.discretize, grid(sde))
        alpha, sigma = case.coeffs(np.array(sde.T))
        errors.append(max(abs(mean - alpha), abs(var - sigma**2)))
    assert errors[-1] < 1e-2 and _first_order(errors), errors


def test_vp_cosine_ddpm_chain_is_exact():
    """The DDPM chain of the cosine schedule reproduces the kernel at T exactly for any N (telescoping)."""
    case = CASES_BY_NAME["vp_cosine"]
    for N in NS:
        sde = sde_lib.VPSDE(schedule="cosine", N=N)
        mean, var = _chain_at_T(sde.discretize, _index_grid(sde))
        alpha, sigma = case.coeffs(np.array(sde.T))
        assert abs(mean / alpha - 1) < 1e-10 and abs(var - sigma**2) < 1e-12, (N, mean, alpha, var, sigma**2)


@pytest.mark.parametrize("exact_marginal", [False, True])
def test_ve_smld_chain_gives_sigma_max_squared_exactly(exact_marginal):
    """SMLD steps ``G_i^2 = sigma_i^2 - sigma_{i-1}^2`` (``sigma_{-1} = 0``) sum to ``sigma_max^2`` for every N: the
    chain from a point mass reproduces the reference kernel (exact_marginal=False) at T exactly, and differs
    from the exact kernel ``sigma_max^2 - sigma_min^2`` by exactly ``sigma_min^2`` (the documented convention)."""
    for N in NS:
        sde = sde_lib.VESDE(N=N, exact_marginal=exact_marginal)
        mean, var = _chain_at_T(sde.discretize, _index_grid(sde))
        _, std = sde.marginal_prob(torch.ones(1, 1, dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64))
        assert mean == 1.0
        assert var == pytest.approx(50.0**2, rel=1e-13)
        assert var - std.item() ** 2 == pytest.approx(0.01**2 if exact_marginal else 0.0, abs=1e-9)


def test_ve_euler_maruyama_converges_to_the_exact_kernel():
    """Euler--Maruyama (the base-class discretize) of the VE SDE from a point mass converges to the exact
    variance ``sigma_max^2 - sigma_min^2`` like 1/N (relative error ~ log(sigma_max / sigma_min) / N)."""
    errors = []
    for N in NS:
        sde = sde_lib.VESDE(N=N, exact_marginal=True)
        mean, var = _chain_at_T(lambda x, t: sde_lib.SDE.discretize(sde, x, t), _euler_grid(sde))
        assert mean == 1.0
        exact = 50.0**2 - 0.01**2
        errors.append(abs(var / exact - 1))
        assert errors[-1] <= 1.1 * math.log(50.0 / 0.01) / N
    assert _first_order(errors), errors


@pytest.mark.parametrize("name", ["vp_linear", "subvp_linear", "ve"])
def test_discretize_default_is_euler_maruyama_of_sde(name):
    """``SDE.discretize`` (used by sub-VP) is ``(f dt, g sqrt(dt))`` with ``dt = T / N``; VP and VE override it
    with the DDPM and SMLD steps, which agree with it to first order in 1/N: ``|f_DDPM - f dt| = O(dt^2)``."""
    sde = CASES_BY_NAME[name].make()
    t = torch.linspace(0.0, sde.T, 9, dtype=torch.float64)
    x = torch.linspace(-2, 2, 9, dtype=torch.float64)[:, None].expand(9, 3).contiguous()
    dt = sde.T / sde.N
    drift, diffusion = sde.sde(x, t)
    f_em, G_em = sde_lib.SDE.discretize(sde, x, t)
    torch.testing.assert_close(f_em, drift * dt, rtol=1e-14, atol=0)
    torch.testing.assert_close(G_em, diffusion * math.sqrt(dt), rtol=1e-14, atol=0)
    if name == "subvp_linear":
        f, G = sde.discretize(x, t)
        assert torch.equal(f, f_em) and torch.equal(G, G_em)
    elif name == "vp_linear":
        f, G = sde.discretize(x, t)
        # f_DDPM = (sqrt(1 - beta_i) - 1) x, beta_i = beta(i/(N-1)) dt: differs from -beta(t) x dt / 2 by
        # <= 1.1 beta^2 dt^2 / 8 and by the index rounding
        # |beta(t) - beta(i/(N-1))| dt <= (beta_max - beta_min) dt / (N - 1)
        assert ((f - f_em).abs() <= (1.1 * 20.0**2 * dt**2 / 8 + 19.9 * dt / (sde.N - 1)) * x.abs() + 1e-15).all()
        assert ((G.square() - G_em.square()).abs() <= 19.9 * dt / (sde.N - 1) + 1e-15).all()
