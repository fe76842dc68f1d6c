"""Statistical checks and test SDEs shared by the sampler tests (imported by the test modules; not a test file).

Tolerances are ``K_SE`` standard errors of the sample size plus, where a method has a discretization bias, a bound
on that bias stated by the calling test.
"""

from __future__ import annotations

import functools
import math

import torch
from scipy import stats

from sample_quality import sliced_wasserstein
from sde_lib import SDE, VESDE, VPSDE, GaussianMixture, LinearSDE, batch_broadcast, subVPSDE

K_SE = 4.0  # standard errors allowed in every statistical comparison
SDES = {"vp": VPSDE, "subvp": subVPSDE, "ve": VESDE}
RING = GaussianMixture.ring()
RING_SAMPLES = 3000  # samples per ring test
SW_PROJECTIONS = 64
GAUSS_MEAN = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
GAUSS_VAR = 0.25


@functools.lru_cache(maxsize=None)
def ring_reference(n: int) -> dict[str, float]:
    """Exact-data statistics for ring samples of size ``n``: mean/variance of ``log p`` (from 100000 fresh
    data samples) and the null distribution of the sliced Wasserstein distance between two independent
    data sets of size ``n`` (20 pairs)."""
    gen = torch.Generator().manual_seed(1234)
    logp = RING.log_prob(RING.sample(100_000, gen, dtype=torch.float64))
    null = torch.stack([
        sliced_wasserstein(RING.sample(n, gen), RING.sample(n, gen), SW_PROJECTIONS, generator=torch.Generator().manual_seed(7))
        for _ in range(20)
    ])
    return {"logp_mean": logp.mean().item(), "logp_var": logp.var().item(), "logp_n": logp.numel(),
            "sw_mean": null.mean().item(), "sw_std": null.std().item()}


def assert_matches_ring(x: torch.Tensor, logp_bias: float) -> None:
    """Samples ``x`` follow the ring: mean ``log p`` within ``K_SE`` standard errors (samples and fresh data)
    plus the method's stated bias ``logp_bias``, and sliced Wasserstein distance to fresh data within the
    null distribution's mean + ``K_SE`` standard deviations."""
    n = x.shape[0]
    ref = ring_reference(n)
    logp = RING.log_prob(x.double())
    assert torch.isfinite(logp).all()
    se = math.sqrt(logp.var().item() / n + ref["logp_var"] / ref["logp_n"])
    gap = logp.mean().item() - ref["logp_mean"]
    assert abs(gap) <= K_SE * se + logp_bias, f"mean log p off by {gap:.4f} (se {se:.4f}, bias bound {logp_bias})"
    fresh = RING.sample(n, torch.Generator().manual_seed(4321))
    sw = sliced_wasserstein(x, fresh, SW_PROJECTIONS, generator=torch.Generator().manual_seed(7)).item()
    bound = ref["sw_mean"] + K_SE * ref["sw_std"]
    assert sw <= bound, f"sliced Wasserstein {sw:.4f} above the null bound {bound:.4f}"


def assert_ring_modes(x: torch.Tensor, bias: float, data_seed: int, measured_se: float = 0.0) -> None:
    """Samples ``x`` follow the ring up to a within-mode variance inflated by ``1 + bias`` (a discretization bias
    measured once, with standard error ``measured_se``), each check at ``K_SE`` standard errors:

    * within-mode variance (residuals to the nearest mode; the modes are 10 std apart, so the assignment is exact in
      practice): ratio to the ring's 0.09 within ``K_SE sqrt(2 / (2 n) + measured_se^2)`` of ``1 + bias``;
    * mode weights: chi^2 of the counts (7 degrees of freedom) below its 0.999 quantile;
    * mean ``log p`` under the ring against fresh data: the gap is ``-bias`` (a variance inflation ``bias`` in 2-D
      lowers it by ``bias``) within ``K_SE`` standard errors of the two means.
    """
    x = x.double()
    n = x.shape[0]
    assert torch.isfinite(x).all()
    nearest = torch.cdist(x, RING.means).argmin(dim=1)
    ratio = ((x - RING.means[nearest]).square().mean() / RING.variances[0, 0]).item()
    se = math.sqrt(2.0 / (2 * n) + measured_se**2)
    assert abs(ratio - (1.0 + bias)) <= K_SE * se, f"within-mode variance ratio {ratio:.4f}, measured bias {bias:+.4f}"
    counts = torch.bincount(nearest, minlength=RING.num_components).double()
    expected = n * RING.weights
    chi2 = ((counts - expected).square() / expected).sum().item()
    assert chi2 <= stats.chi2.ppf(0.999, RING.num_components - 1), f"mode counts {counts.tolist()}"
    data = RING.sample(n, torch.Generator().manual_seed(data_seed), dtype=torch.float64)
    lp_x, lp_data = RING.log_prob(x), RING.log_prob(data)
    gap = (lp_x.mean() - lp_data.mean()).item()
    se_gap = math.sqrt(lp_x.var().item() / n + lp_data.var().item() / n)
    assert abs(gap + bias) <= K_SE * se_gap, f"mean log-density gap {gap:+.4f} (expected {-bias:+.4f})"


def assert_gaussian_moments(x: torch.Tensor, mean: torch.Tensor, var: float, mean_bias: float, var_bias: float) -> None:
    """Per-coordinate sample means within ``k sqrt(var / n) + mean_bias`` of ``mean``; the variance pooled
    over the ``D`` independent coordinates within ``K_SE sqrt(2 / (D (n - 1))) + var_bias`` relative to ``var``.

    ``k = sqrt(K_SE^2 + 2 ln D)`` allows for the maximum over ``D`` coordinates (``K_SE`` for ``D = 1``).
    """
    x = x.reshape(x.shape[0], -1).double()
    n, d = x.shape
    mean = mean.reshape(-1).double()
    mean_err = (x.mean(0) - mean).abs().max().item()
    k = math.sqrt(K_SE**2 + 2.0 * math.log(d))
    assert mean_err <= k * math.sqrt(var / n) + mean_bias, f"mean off by {mean_err:.4f}"
    var_rel = x.var(0).mean().item() / var - 1.0
    assert abs(var_rel) <= K_SE * math.sqrt(2.0 / (d * (n - 1))) + var_bias, f"variance off by {var_rel:+.4f} (relative)"


def gaussian_data() -> GaussianMixture:
    return GaussianMixture.gaussian(GAUSS_MEAN, GAUSS_VAR)



def gaussian_flow_map(sde: LinearSDE, mean, var, x: torch.Tensor, t_from: float, t_to: float) -> torch.Tensor:
    """The exact probability-flow map from ``t_from`` to ``t_to`` for data ``N(mean, diag(var))``, float64.

    ``p_t = N(alpha_t mean, v_t)`` with ``v_t = alpha_t^2 var + sigma_t^2``, and the ODE velocity
    ``f x + g^2 (x - alpha mean) / (2 v)`` keeps ``z = (x - alpha_t mean) / sqrt(v_t)`` constant because
    ``dv/dt = 2 f v + g^2``: ``x(t) = alpha_t mean + sqrt(v_t) (x(u) - alpha_u mean) / sqrt(v_u)``.
    """
    batch = x.shape[0]
    alpha_u, sigma_u = sde.marginal_coeffs(torch.full((batch,), float(t_from), dtype=torch.float64))
    alpha_t, sigma_t = sde.marginal_coeffs(torch.full((batch,), float(t_to), dtype=torch.float64))
    b = lambda v: batch_broadcast(v, x)  # noqa: E731
    v_u = b(alpha_u**2) * var + b(sigma_u**2)
    v_t = b(alpha_t**2) * var + b(sigma_t**2)
    return b(alpha_t) * mean + v_t.sqrt() * (x - b(alpha_u) * mean) / v_u.sqrt()


class CubicDriftSDE(SDE):
    """``dx = -x^3 dt + dw``: an SDE outside the linear family (no Gaussian kernel), for refusal tests."""

    def sde(self, x, t):
        return -(x**3), torch.ones_like(t)

    def marginal_prob(self, x, t):
        raise NotImplementedError

    def prior_sampling(self, shape, generator=None, device=None, dtype=torch.float32):
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)

    def prior_logp(self, z):
        raise NotImplementedError
