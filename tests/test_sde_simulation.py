"""Simulating the forward SDE with torchsde reproduces ``marginal_prob`` (the drift and diffusion of
``sde.sde`` and the closed-form kernel describe the same process).

torchsde's Euler--Maruyama (``method="euler"``, fixed step ``dt = 1e-3``, seeded ``BrownianInterval``) from a
fixed ``x0``; n = 20000 paths in float32. For a linear SDE the EM chain is Gaussian with moments given exactly
by ``chain_moments`` (mean ``(1 + f dt)`` per step, variance ``(1 + f dt)^2 v + g^2 dt``), so its bias
against ``marginal_prob`` is computed, not guessed: ``dt = 1e-3`` keeps it below 2 SE at the output times
t >= 0.1 (measured: at most 1.72 SE, the sub-VP variance at t = 0.1, where g^2 rises from 0 and the left
Riemann sum of ``int g^2`` lags; the VE variance is low by ``log(sigma_max / sigma_min) dt ~ 0.85 %``,
0.6 SE). The test
asserts that bias bound, then
``|sample moment - marginal_prob moment| <= 4 SE + |bias|`` with SE(mean) = sqrt(var / n) and
SE(var) = var sqrt(2 / (n - 1)).
"""

import numpy as np
import pytest
import torch

from sde_reference import CASES_BY_NAME, chain_moments, drift_and_diffusion_coeffs, se_mean, se_var_gaussian, simulate

N_PATHS = 20000
DT = 1e-3
X0 = 1.5
OUTPUT_TIMES = [0.0, 0.1, 0.3, 0.7, 1.0]


@pytest.mark.parametrize("name", ["vp_linear", "subvp_linear", "ve", "ve_exact"])
def test_torchsde_forward_simulation_matches_marginal_prob(name):
    case = CASES_BY_NAME[name]
    sde = case.make()
    generator = torch.Generator().manual_seed(2024)
    x0 = torch.full((N_PATHS, 1), X0, dtype=torch.float32)
    var0 = 0.0
    if name == "ve":
        # SMLD/reference convention (VESDE docstring): x(0) is data already perturbed with sigma_min noise
        x0 = x0 + sde.sigma_min * torch.randn(N_PATHS, 1, generator=generator)
        var0 = sde.sigma_min**2
    ts = torch.tensor(OUTPUT_TIMES, dtype=torch.float32)
    paths = simulate(lambda x, t: sde.sde(x, t), x0, ts, DT, seed=7).double()

    steps = np.rint(np.array(OUTPUT_TIMES) / DT).astype(int)
    f, g = drift_and_diffusion_coeffs(sde, np.arange(steps[-1]) * DT)
    em_mean, em_var = chain_moments(X0, var0, f * DT, g**2 * DT)

    t64 = torch.tensor(OUTPUT_TIMES[1:], dtype=torch.float64)
    mean, std = sde.marginal_prob(torch.full((len(t64), 1), X0, dtype=torch.float64), t64)
    mean, var = mean[:, 0].numpy(), std.square().numpy()
    se_m, se_v = se_mean(var, N_PATHS), se_var_gaussian(var, N_PATHS)
    bias_m, bias_v = em_mean[steps[1:]] - mean, em_var[steps[1:]] - var
    assert (np.abs(bias_m) < 2 * se_m).all() and (np.abs(bias_v) < 2 * se_v).all(), (bias_m / se_m, bias_v / se_v)

    sample_mean = paths[1:, :, 0].mean(1).numpy()
    sample_var = paths[1:, :, 0].var(1).numpy()
    assert (np.abs(sample_mean - mean) <= 4 * se_m + np.abs(bias_m)).all(), (sample_mean - mean) / se_m
    assert (np.abs(sample_var - var) <= 4 * se_v + np.abs(bias_v)).all(), (sample_var - var) / se_v
