"""Perturbation kernels, moment ODEs and priors of VP, sub-VP and VE against closed forms.

The closed forms live in ``sde_reference`` (written from [SDE] eq. (29)-(33) and Improved DDPM eq. (17),
independently of ``sde_lib``).
"""

import math

import numpy as np
import pytest
import scipy.stats
import torch

from sde_reference import SDE_CASES, se_mean, se_var_gaussian


def _times(T: float) -> np.ndarray:
    """Many times in ``[0, T]``: both ends, a log-spaced cluster near 0 and a uniform grid."""
    return np.unique(np.concatenate([[0.0, T], np.logspace(-7, -1, 13) * T, np.linspace(0, T, 41)]))


@pytest.mark.parametrize("case", SDE_CASES, ids=repr)
def test_marginal_prob_equals_closed_form_float64(case):
    """mean = alpha(t) x0 and std = sigma(t) of the kernel, in float64, to 1e-12 relative (round-off only)."""
    sde = case.make()
    assert sde.T == pytest.approx(case.T, rel=1e-15)
    t = _times(sde.T)
    x0 = torch.linspace(-3.0, 2.0, t.size, dtype=torch.float64)[:, None] * torch.tensor([1.0, -0.5]).double()
    mean, std = sde.marginal_prob(x0, torch.from_numpy(t))
    assert mean.dtype == std.dtype == torch.float64 and mean.shape == x0.shape and std.shape == (t.size,)
    alpha, sigma = case.coeffs(t)
    np.testing.assert_allclose(mean.numpy(), alpha[:, None] * x0.numpy(), rtol=1e-12, atol=0)
    np.testing.assert_allclose(std.numpy(), sigma, rtol=1e-12, atol=0)
    # the scalar coefficients of LinearSDE are the same functions
    a, s = sde.marginal_coeffs(torch.from_numpy(t))
    np.testing.assert_allclose(a.numpy(), alpha, rtol=1e-12, atol=0)
    np.testing.assert_allclose(s.numpy(), sigma, rtol=1e-12, atol=0)


@pytest.mark.parametrize("case", SDE_CASES, ids=repr)
def test_marginal_std_float32_is_relatively_accurate_near_zero(case):
    """float32 std at t = 1e-6 .. 1e-2 within 2e-6 RELATIVE of the float64 closed form (about 17 float32 ulp).

    A naive ``1 - exp(-B)`` in float32 is off by more than 1e-3 relative there (checked below for VP, whose
    std is then ~3e-4): only expm1/log1p formulas pass.
    """
    sde = case.make()
    t32 = torch.tensor([1e-6, 1e-5, 1e-4, 1e-3, 1e-2], dtype=torch.float32)
    _, std32 = sde.marginal_prob(torch.ones(5, 3, dtype=torch.float32), t32)
    assert std32.dtype == torch.float32
    _, sigma = case.coeffs(t32.double().numpy())  # float64 oracle at exactly the float32 times
    rel = np.abs(std32.double().numpy() / sigma - 1)
    assert rel.max() < 2e-6, rel
    if case.name == "vp_linear":
        B32 = t32 * (0.1 + 0.5 * t32 * 19.9)
        naive = torch.sqrt(1 - torch.exp(-B32)).double().numpy()
        assert np.abs(naive[:2] / sigma[:2] - 1).min() > 1e-3  # the test can tell the two apart


@pytest.mark.parametrize("case", SDE_CASES, ids=repr)
def test_moments_satisfy_their_odes(case):
    """``d alpha/dt = f alpha`` and ``dVar/dt = 2 f Var + g^2`` ([SDE] eq. (33)), f and g from ``sde.sde``.

    Central differences in float64. Var varies on the time scale min(t, T - t) (Var ~ t near 0, and
    T - t <= 1 - t near the cosine singularity): with ``h = 1e-4 min(t, T - t)`` the relative truncation
    error is ~(1e-4)^2 and the round-off ~eps / 1e-4 ~ 2e-12. alpha varies on the scale
    min(1 / beta, T - t) >= 0.05: ``h = min(1e-5, 1e-4 (T - t), t / 2)`` gives truncation <= 4e-8 and
    round-off <= eps / (h |f|) <= 2e-8. The tolerance is 1e-6 of ``|2 f Var| + g^2`` (resp. ``|f alpha|``).
    """
    sde = case.make()
    T = sde.T
    t = torch.from_numpy(np.unique(np.concatenate([np.logspace(-6, -1, 11) * T, np.linspace(0.01, 0.99, 50) * T])))
    x1 = torch.ones(t.shape[0], 1, dtype=torch.float64)

    def central_difference(index, h):
        plus, minus = sde.marginal_prob(x1, t + h), sde.marginal_prob(x1, t - h)
        moment = (lambda mean_std: mean_std[0][:, 0]) if index == 0 else (lambda mean_std: mean_std[1].square())
        return (moment(plus) - moment(minus)) / (2 * h)

    dmean = central_difference(0, torch.minimum(torch.clamp(1e-4 * (T - t), max=1e-5), 0.5 * t))
    dvar = central_difference(1, 1e-4 * torch.minimum(t, T - t))
    mean, std = sde.marginal_prob(x1, t)
    mean, var = mean[:, 0], std.square()
    drift, g = sde.sde(x1, t)
    f = drift[:, 0]
    if case.name.startswith("ve"):
        assert (f == 0).all() and (dmean == 0).all()
    else:
        assert ((dmean - f * mean).abs() / (f * mean).abs()).max() < 1e-6
    scale_var = (2 * f * var).abs() + g.square()
    assert ((dvar - (2 * f * var + g.square())).abs() / scale_var).max() < 1e-6


SHAPES = [(7, 5), (4, 2, 3, 3), (6, 11)]


@pytest.mark.parametrize("case", SDE_CASES, ids=repr)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_prior_logp_equals_gaussian_log_density(case, shape):
    """prior_logp(z) = sum of N(0, prior_std^2) log-densities over all but the batch dim (scipy oracle, 1e-12 rel)."""
    sde = case.make()
    g = torch.Generator().manual_seed(1)
    z = case.prior_std * torch.randn(shape, generator=g, dtype=torch.float64)
    logp = sde.prior_logp(z)
    assert logp.shape == (shape[0],)
    expected = scipy.stats.norm.logpdf(z.numpy(), scale=case.prior_std).reshape(shape[0], -1).sum(1)
    np.testing.assert_allclose(logp.numpy(), expected, rtol=1e-12)
    if len(shape) == 2:
        mvn = scipy.stats.multivariate_normal(np.zeros(shape[1]), case.prior_std**2 * np.eye(shape[1]))
        np.testing.assert_allclose(logp.numpy(), mvn.logpdf(z.numpy()), rtol=1e-12)
    assert sde.prior_logp(z.float()).dtype == torch.float32


@pytest.mark.parametrize("case", SDE_CASES, ids=repr)
def test_prior_sampling_moments_and_reproducibility(case):
    """n = 20000 x 8 draws: per-coordinate mean within 5 SE (sqrt(var / n)) of 0 and variance within 5 SE
    (var sqrt(2 / (n - 1))) of prior_std^2; same generator seed -> same draws, other seed -> other draws."""
    sde = case.make()
    n, d = 20000, 8
    z = sde.prior_sampling((n, d), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert z.shape == (n, d) and z.dtype == torch.float64
    var = case.prior_std**2
    assert (z.mean(0).abs() <= 5 * se_mean(var, n)).all()
    assert ((z.var(0) - var).abs().numpy() <= 5 * se_var_gaussian(var, n)).all()
    same = sde.prior_sampling((n, d), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    other = sde.prior_sampling((n, d), generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    assert torch.equal(z, same)
    assert not (z == other).any()  # a different seed gives different draws everywhere
    images = sde.prior_sampling([3, 2, 4, 4], generator=torch.Generator().manual_seed(5))
    assert images.shape == (3, 2, 4, 4) and images.dtype == torch.float32


def test_prior_std_matches_marginal_at_T_for_exact_ve():
    """With exact_marginal=True the prior is exactly the SDE's marginal at T (from a point mass)."""
    case = next(c for c in SDE_CASES if c.name == "ve_exact")
    sde = case.make()
    _, std = sde.marginal_prob(torch.zeros(1, 1, dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64))
    assert std.item() == pytest.approx(case.prior_std, rel=1e-14)
    assert math.isclose(sde.prior_std, case.prior_std, rel_tol=1e-14)
