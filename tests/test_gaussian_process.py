"""Samplers and the likelihood on 1-D Gaussian-process signals, against the exact law (:class:`sde_lib.GaussianProcess`).

Data ``x(0) ~ N(m, K)`` on ``L = 16`` points, ``K`` a stationary AR(1) covariance (``rho = 0.8``: eigenvalues in
``[0.11, 9]``, strongly correlated neighbours as in a waveform) and a sinusoidal mean. Under a linear SDE ``x(t) ~
N(alpha m, alpha^2 K + sigma^2 I)`` and the score is linear, so:

* The deterministic samplers (``fast``, ``ode`` with scipy's batch-wide steps) are *affine* maps ``x(T) -> A x(T) +
  b``; solving from the ``D + 1`` starts ``0, c e_1, ..., c e_D`` gives ``A`` and ``b`` exactly, hence the exact law
  of their samples ``N(A mu_T + b, A S_T A^T)`` when ``x(T) ~ N(mu_T, S_T)`` is the true marginal at ``T``. That law
  is compared with the true marginal at the end time ``eps`` with no statistical error at all: what is left is the
  numerical method's error, bounded by the tolerances stated at each test.
* The stochastic PC sampler is checked on draws, in the whitened coordinates ``w = diag(lambda)^(-1/2) U^T (x - m)``,
  which are i.i.d. standard normal under the true law: each mean has standard error ``1/sqrt(n)``, each entry of
  the sample covariance ``1/sqrt(n)`` (off-diagonal) or ``sqrt(2/n)`` (diagonal); the bound is 4.5 standard errors
  (a false alarm chance below ``136 * 7e-6 = 1e-3`` over the 136 distinct entries), plus the discretization bias
  allowed for its ``N = 200`` steps (stated at the test).
* The probability-flow likelihood of GP draws (exact divergence) equals the exact Gaussian log-density at ``eps``.
"""

from __future__ import annotations

import math

import pytest
import scipy.stats
import torch

from samplers import fast_sample, log_likelihood, ode_sample, pc_sample
from sde_lib import VESDE, VPSDE, GaussianMixture, GaussianProcess, ar1_kernel, squared_exponential_kernel, subVPSDE

LENGTH = 16
SDES = {"vp": lambda n=1000: VPSDE(N=n), "subvp": lambda n=1000: subVPSDE(N=n),
        "ve": lambda n=1000: VESDE(sigma_min=0.01, sigma_max=50.0, N=n)}


def _process() -> GaussianProcess:
    mean = 0.5 * torch.sin(torch.arange(LENGTH, dtype=torch.float64) * 2 * math.pi / LENGTH)
    return GaussianProcess(ar1_kernel(LENGTH, 0.8), mean, event_shape=(1, LENGTH))


def _marginal(gp: GaussianProcess, sde, t: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact mean ``(D,)`` and covariance ``(D, D)`` of ``x(t)``."""
    alpha, sigma = (float(c) for c in sde.marginal_coeffs(torch.tensor([t], dtype=torch.float64)))
    return alpha * gp.mean, alpha**2 * gp.covariance + sigma**2 * torch.eye(gp.dim, dtype=torch.float64)


# ------------------------------------------------------------------ the oracle itself
def test_score_and_log_density_match_autograd_and_scipy():
    gp, sde = _process(), VPSDE()
    x = gp.sample(5, torch.Generator().manual_seed(0), dtype=torch.float64).requires_grad_(True)
    t = torch.tensor([1e-3, 0.1, 0.4, 0.7, 1.0], dtype=torch.float64)
    logp = gp.log_prob_fn(sde)(x, t)
    (grad,) = torch.autograd.grad(logp.sum(), x)
    assert torch.allclose(gp.score_fn(sde)(x, t), grad, rtol=1e-10, atol=1e-10)
    for i in range(5):
        mean, cov = _marginal(gp, sde, float(t[i]))
        expected = scipy.stats.multivariate_normal(mean.numpy(), cov.numpy()).logpdf(x[i].detach().flatten().numpy())
        assert math.isclose(float(logp[i].detach()), expected, rel_tol=1e-10, abs_tol=1e-9)


def test_diagonal_process_is_the_gaussian_mixture_of_one_component():
    variances = torch.linspace(0.2, 2.0, LENGTH, dtype=torch.float64)
    mean = torch.linspace(-1, 1, LENGTH, dtype=torch.float64)
    gp = GaussianProcess(torch.diag(variances), mean)
    mixture = GaussianMixture([1.0], mean[None], variances[None])
    sde = subVPSDE()
    x = torch.randn(4, LENGTH, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0.01, 0.3, 0.6, 0.9], dtype=torch.float64)
    assert torch.allclose(gp.score_fn(sde)(x, t), mixture.score_fn(sde)(x, t), rtol=1e-12, atol=1e-12)
    assert torch.allclose(gp.log_prob_fn(sde)(x, t), mixture.log_prob_fn(sde)(x, t), rtol=1e-12, atol=1e-12)


def test_draws_have_the_kernel_covariance():
    gp = GaussianProcess(squared_exponential_kernel(LENGTH, 3.0, noise=0.05))
    n = 20000
    w = gp.whiten(gp.sample(n, torch.Generator().manual_seed(2), dtype=torch.float64))
    _check_whitened(w, bias=0.0)


@pytest.mark.parametrize("bad, message", [
    (lambda: GaussianProcess(torch.ones(3, 4)), "square"),
    (lambda: GaussianProcess(torch.tensor([[1.0, 2.0], [2.0, 1.0]])), "positive definite"),
    (lambda: GaussianProcess(torch.eye(4), event_shape=(1, 5)), "event_shape"),
    (lambda: ar1_kernel(4, 1.0), "rho"),
    (lambda: squared_exponential_kernel(4, 0.0), "lengthscale"),
])
def test_bad_arguments_are_one_line_errors(bad, message):
    with pytest.raises(ValueError, match=message):
        bad()


# ------------------------------------------------------------------ samplers
def _check_whitened(w: torch.Tensor, bias: float) -> None:
    """Whitened draws ``(n, D)`` against N(0, I): 4.5 standard errors plus ``bias`` (module docstring)."""
    n, d = w.shape
    mean = w.mean(0)
    cov = torch.cov(w.T)
    se = torch.full((d, d), 1 / math.sqrt(n), dtype=torch.float64) + torch.eye(d, dtype=torch.float64) * (math.sqrt(2 / n) - 1 / math.sqrt(n))
    assert float(mean.abs().max()) < 4.5 / math.sqrt(n) + bias, mean
    excess = ((cov - torch.eye(d, dtype=torch.float64)).abs() - 4.5 * se).max()
    assert float(excess) < bias, float(excess)


@pytest.mark.parametrize("name", ["vp", "ve"])  # sub-VP's reverse diffusion is VP's with another g(t): covered below
def test_pc_samples_have_the_process_law(name):
    """Reverse diffusion (N = 200 steps, no corrector), 2000 draws. Allowed bias 0.03 in the whitened moments: the
    Euler-type step's O(1/N) error in the variance along each direction (``~ 2 / N`` relative)."""
    gp, sde = _process(), SDES[name](200)  # the PC sampler takes its N steps from the SDE
    x, nfe = pc_sample(sde, gp.score_fn(sde), (2000, 1, LENGTH), corrector="none", dtype=torch.float64,
                       generator=torch.Generator().manual_seed(3))
    assert nfe == sde.N
    _check_whitened(gp.whiten(x), bias=0.03)


def _affine_law(sample, gp: GaussianProcess, sde, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact law (mean, covariance) of a deterministic sampler's output started from the true marginal at T."""
    d, scale = gp.dim, 1.0 if isinstance(sde, (VPSDE, subVPSDE)) else 50.0
    starts = torch.cat([torch.zeros(1, d, dtype=torch.float64), scale * torch.eye(d, dtype=torch.float64)])
    out = sample(starts.reshape(d + 1, 1, LENGTH)).reshape(d + 1, d).to(torch.float64)
    b, a = out[0], ((out[1:] - out[0]) / scale).T  # x -> a x + b
    mean_t, cov_t = _marginal(gp, sde, sde.T)
    return a @ mean_t + b, a @ cov_t @ a.T


def _relative_errors(law: tuple[torch.Tensor, torch.Tensor], exact: tuple[torch.Tensor, torch.Tensor]) -> tuple[float, float]:
    """Mean error in units of the exact standard deviations; covariance error relative in Frobenius norm."""
    (m, c), (m0, c0) = law, exact
    return float(((m - m0) / c0.diagonal().sqrt()).abs().max()), float(torch.linalg.norm(c - c0) / torch.linalg.norm(c0))


@pytest.mark.parametrize("name", sorted(SDES))
def test_fast_sampler_law_converges_at_third_order(name):
    """DPM-Solver (+ UniPC) on the exact linear score: the law of its output against the true marginal at eps (the
    probability-flow ODE of a Gaussian is linear, so the solver's error is the whole error). The mean is carried
    exactly (rounding, < 1e-12); the covariance error must fall at least 8-fold from 25 to 50 evaluations (third
    order: 2^3), and stay below 1e-2 / 1e-3 (regression pins, about twice the 0.5% / 0.04% measured)."""
    gp, sde = _process(), SDES[name]()
    eps = 1e-3 if name != "ve" else 1e-5
    errors = {}
    for nfe in (25, 50):
        def sample(x0: torch.Tensor) -> torch.Tensor:
            return fast_sample(sde, gp.score_fn(sde), tuple(x0.shape), nfe=nfe, eps=eps, x_init=x0, dtype=torch.float64)[0]

        mean_error, errors[nfe] = _relative_errors(_affine_law(sample, gp, sde, eps), _marginal(gp, sde, eps))
        assert mean_error < 1e-12, mean_error
    assert errors[25] < 1e-2 and errors[50] < 1e-3 and errors[25] / errors[50] > 8, errors


@pytest.mark.parametrize("name", sorted(SDES))
def test_ode_sampler_law_is_exact_to_its_tolerance(name):
    """scipy's RK45 (one step size for the whole batch, so the map is affine) at rtol = atol = 1e-7: errors below
    1e-4 (a few hundred steps of local error 1e-7)."""
    gp, sde = _process(), SDES[name]()
    eps = 1e-3 if name != "ve" else 1e-5

    def sample(x0: torch.Tensor) -> torch.Tensor:
        return ode_sample(sde, gp.score_fn(sde), tuple(x0.shape), method="RK45", rtol=1e-7, atol=1e-7, eps=eps,
                          z=x0, dtype=torch.float64)[0]

    mean_error, cov_error = _relative_errors(_affine_law(sample, gp, sde, eps), _marginal(gp, sde, eps))
    assert mean_error < 1e-4 and cov_error < 1e-4, (mean_error, cov_error)


# ------------------------------------------------------------------ likelihood
@pytest.mark.parametrize("name", sorted(SDES))
def test_likelihood_of_process_draws_is_the_gaussian_log_density(name):
    """The probability-flow log-likelihood (exact divergence, dopri5 at 1e-6) of 4 draws equals ``log p_eps`` once
    the prior's own mismatch is taken out: the likelihood starts from ``log N(z; 0, prior)`` where the exact chain
    has ``log p_T(z)`` (sub-VP's ``x(T)`` is not exactly standard normal), so ``logp - (prior_logp(z) - log p_T(z))``
    must equal ``log p_eps(x)`` up to the solver's error: within 1e-3 nats of a 16-dimensional log-density."""
    gp, sde = _process(), SDES[name]()
    eps = 1e-5
    x = gp.sample(4, torch.Generator().manual_seed(4), dtype=torch.float64)
    logp, z, _ = log_likelihood(sde, gp.score_fn(sde), x, divergence="exact", eps=eps, rtol=1e-6, atol=1e-6)
    log_p = gp.log_prob_fn(sde)
    prior_gap = sde.prior_logp(z) - log_p(z, torch.full((4,), sde.T, dtype=torch.float64))
    exact = log_p(x, torch.full((4,), eps, dtype=torch.float64))
    assert float((logp - prior_gap - exact).abs().max()) < 1e-3, (logp - prior_gap - exact)
