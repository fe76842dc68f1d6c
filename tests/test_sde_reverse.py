"""Reverse-time SDE [SDE] eq. (6), probability-flow ODE eq. (13) and reverse discretization eq. (46),
with the exact score of Gaussian data ``N(mu, s^2 I)``: ``-(x - alpha mu) / (alpha^2 s^2 + sigma^2)``."""

import numpy as np
import pytest
import torch

from sde_reference import (
    CASES_BY_NAME,
    SDE_CASES,
    chain_moments,
    drift_and_diffusion_coeffs,
    gaussian_data_score,
    se_mean,
    se_var_gaussian,
    simulate,
)

MU, DATA_VAR = 1.0, 0.25  # data N(MU, DATA_VAR I)


def _sample_x_t(case, shape, t, seed):
    """Draws of the exact law of x(t), ``N(alpha MU, alpha^2 DATA_VAR + sigma^2)``, from the closed-form kernel."""
    alpha, sigma = case.coeffs(np.asarray(t, dtype=np.float64))
    g = torch.Generator().manual_seed(seed)
    std = torch.as_tensor(np.sqrt(alpha**2 * DATA_VAR + sigma**2)).reshape(-1, *([1] * (len(shape) - 1)))
    return torch.as_tensor(alpha * MU).reshape(std.shape) + std * torch.randn(shape, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("case", SDE_CASES, ids=repr)
@pytest.mark.parametrize("shape", [(6, 3), (4, 2, 3, 3)], ids=str)
def test_reverse_drift_diffusion_and_discretization(case, shape):
    """reverse().sde = (f - g^2 score, g); probability flow = (f - g^2 score / 2, 0); reverse().discretize =
    (f_d - G^2 score, G), resp. (f_d - G^2 score / 2, 0), with the forward (f, g) and discretization (f_d, G).
    float64, 1e-12 relative (round-off only)."""
    sde = case.make()
    t = torch.linspace(0.0, sde.T, shape[0], dtype=torch.float64)
    x = _sample_x_t(case, shape, t.numpy(), seed=0)
    score_fn = gaussian_data_score(case, MU, DATA_VAR)
    score = score_fn(x, t)
    col = (-1,) + (1,) * (len(shape) - 1)
    f, g = sde.sde(x, t)
    f_d, G = sde.discretize(x, t)
    for probability_flow, weight in [(False, 1.0), (True, 0.5)]:
        rsde = sde.reverse(score_fn, probability_flow=probability_flow)
        assert rsde.N == sde.N and rsde.T == sde.T
        drift, diffusion = rsde.sde(x, t)
        torch.testing.assert_close(drift, f - weight * g.square().reshape(col) * score, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(diffusion, torch.zeros_like(g) if probability_flow else g, rtol=0, atol=0)
        rev_f, rev_G = rsde.discretize(x, t)
        torch.testing.assert_close(rev_f, f_d - weight * G.square().reshape(col) * score, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(rev_G, torch.zeros_like(G) if probability_flow else G, rtol=0, atol=0)
        assert drift.shape == x.shape and diffusion.shape == (shape[0],)


N_PATHS, DS = 20000, 1e-3


def _reverse_chain_moments(sde, case, weight: float, stochastic: bool, ds: float, num_steps: int):
    """Exact moments of the Euler--Maruyama chain of the reverse SDE/ODE in ``s = T - t`` from the law of x(T).

    ``x_{k+1} = (1 + a_k) x_k + b_k + G_k z_k`` with ``a = -(f + w g^2 / V) ds``, ``b = w g^2 alpha mu / V ds``,
    ``G^2 = g^2 ds`` (0 for the ODE), ``V = alpha^2 s^2 + sigma^2``, at ``t_k = T - k ds``.
    """
    t_grid = sde.T - np.arange(num_steps) * ds
    f, g = drift_and_diffusion_coeffs(sde, t_grid)
    alpha, sigma = case.coeffs(t_grid)
    V = alpha**2 * DATA_VAR + sigma**2
    alpha_T, sigma_T = case.coeffs(np.array(sde.T))
    return chain_moments(
        alpha_T * MU,
        alpha_T**2 * DATA_VAR + sigma_T**2,
        a=-(f + weight * g**2 / V) * ds,
        G2=(g**2 * ds) if stochastic else np.zeros_like(g),
        b=weight * g**2 * alpha * MU / V * ds,
    )


@pytest.mark.parametrize("probability_flow", [False, True], ids=["sde", "ode"])
@pytest.mark.parametrize("name", ["vp_linear", "subvp_linear", "ve"])
def test_torchsde_reverse_simulation_recovers_the_data(name, probability_flow):
    """Integrate the reverse SDE (or probability-flow ODE) with torchsde in reversed time ``s = T - t`` from
    the exact law of x(T) (not the prior, so no prior-mismatch term), with the exact score; compare the sample
    mean and variance at t = T/2 and t = 0 with the exact ``alpha mu`` and ``V = alpha^2 s^2 + sigma^2``.

    Euler--Maruyama, ``ds = 1e-3``, n = 20000 float32 paths; the samples are Gaussian (linear SDE / linear
    flow), SE(mean) = sqrt(V / n), SE(var) = V sqrt(2 / (n - 1)). The chain is linear-Gaussian, so its exact
    moments (``_reverse_chain_moments``) separate the two errors:
      1. sampling: sample moments within 4 SE of the chain's moments;
      2. discretization: the chain's bias against the exact moments is below 5 % relative (largest measured:
         4.3 %, the VE probability-flow variance at t = 0, where the contraction rate g^2 / (2V) ~
         log(sigma_max / sigma_min) ~ 8.5 is the stiffest; all others <= 0.6 %) and first order: at ds / 4
         it is below 0.3 of that at ds (measured 0.25);
    hence the sample moments lie within 4 SE + |bias| of the exact ones, also asserted.
    """
    case = CASES_BY_NAME[name]
    sde = case.make()
    T = sde.T
    weight = 0.5 if probability_flow else 1.0
    rsde = sde.reverse(gaussian_data_score(case, MU, DATA_VAR), probability_flow=probability_flow)

    def reversed_time(x, s):
        drift, diffusion = rsde.sde(x, (T - s).clamp(min=0.0))
        return -drift, diffusion  # dx = -drift ds + g dW_s: the reverse SDE run forward in s

    x_T = _sample_x_t(case, (N_PATHS, 1), T, seed=11).float()
    out_s = [0.0, T / 2, T]
    paths = simulate(reversed_time, x_T, torch.tensor(out_s, dtype=torch.float32), DS, seed=5).double()
    sample_mean, sample_var = paths[1:, :, 0].mean(1).numpy(), paths[1:, :, 0].var(1).numpy()

    t_out = T - np.array(out_s[1:])
    alpha_out, sigma_out = case.coeffs(t_out)
    mean, var = alpha_out * MU, alpha_out**2 * DATA_VAR + sigma_out**2
    se_m, se_v = se_mean(var, N_PATHS), se_var_gaussian(var, N_PATHS)

    biases = []
    for refine in (1, 4):
        steps = np.rint(np.array(out_s[1:]) / DS * refine).astype(int)
        chain_mean, chain_var = _reverse_chain_moments(sde, case, weight, not probability_flow, DS / refine, steps[-1])
        biases.append((chain_mean[steps] - mean, chain_var[steps] - var))
        if refine == 1:
            assert (np.abs(sample_mean - chain_mean[steps]) <= 4 * se_m).all(), (sample_mean - chain_mean[steps]) / se_m
            assert (np.abs(sample_var - chain_var[steps]) <= 4 * se_v).all(), (sample_var - chain_var[steps]) / se_v
    (bias_m, bias_v), (fine_bias_m, fine_bias_v) = biases
    assert (np.abs(bias_m) <= 0.05 * np.abs(mean) + 1e-3 * se_m).all() and (np.abs(bias_v) <= 0.05 * var).all()
    assert (np.abs(fine_bias_m) <= 0.3 * np.abs(bias_m) + 1e-12).all()
    assert (np.abs(fine_bias_v) <= 0.3 * np.abs(bias_v) + 1e-12).all()

    assert (np.abs(sample_mean - mean) <= 4 * se_m + np.abs(bias_m)).all(), (sample_mean - mean) / se_m
    assert (np.abs(sample_var - var) <= 4 * se_v + np.abs(bias_v)).all(), (sample_var - var) / se_v
