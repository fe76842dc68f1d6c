"""Tests of the probability-flow ODE sampler/encoder (samplers.ode) with EXACT scores of Gaussian(-mixture) data.

Closed form used throughout. For data ``N(mu, diag(s^2))`` and a linear SDE with kernel ``N(alpha x0, sigma^2)``
the marginal is ``p_t = N(alpha_t mu, v_t)``, ``v_t = alpha_t^2 s^2 + sigma_t^2`` (per coordinate), and the
probability-flow ODE [SDE eq. (13)] is ``x' = f x + g^2 (x - alpha mu) / (2 v)``. Since ``alpha' = f alpha`` and
``(sigma^2)' = 2 f sigma^2 + g^2`` (true for VP, sub-VP and VE), ``v' = 2 f v + g^2`` and
``d/dt [(x - alpha mu) / sqrt(v)] = (f + g^2 / (2 v)) (x - alpha mu) / sqrt(v) - (f + g^2 / (2 v)) (x - alpha mu) / sqrt(v) = 0``:
the flow is the affine map ``x(t) = alpha_t mu + sqrt(v_t) (x(u) - alpha_u mu) / sqrt(v_u)`` between any times.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch

from sample_quality import sliced_wasserstein
from samplers.ode import denoise_step, ode_encode, ode_sample
from samplers.odeint import ODE_METHODS
from sde_lib import VESDE, VPSDE, GaussianMixture, subVPSDE
from sampler_checks import gaussian_flow_map

F64 = torch.float64
SDES = {"vp": VPSDE, "subvp": subVPSDE, "ve": VESDE}
EPS = 1e-3


def _gaussian_problem(sde, shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(shape[1:], generator=g, dtype=F64)
    var = 0.05 + torch.rand(shape[1:], generator=g, dtype=F64)
    z = sde.prior_sampling(shape, generator=g, dtype=F64)
    return GaussianMixture.gaussian(mu, var), mu, var, z


@pytest.mark.parametrize("method", ["dopri5", "RK45"])
@pytest.mark.parametrize("shape", [(16, 2), (4, 3, 8, 8)], ids=["points", "images"])
@pytest.mark.parametrize("sde_name", list(SDES))
def test_gaussian_data_decode_and_encode_follow_the_exact_affine_flow(sde_name, shape, method):
    """Decoding ``z`` and encoding the exact decoded point reproduce the closed-form flow map.

    At rtol = atol = 1e-7 (float64) the measured max errors are <= 3.3 tol for decoding (absolute; |x| ~ 1) and
    <= 4.4 tol for encoding (relative to 1 + |z|; VE latents have std 50); the bound is 20 tol.
    """
    sde = SDES[sde_name]()
    data, mu, var, z = _gaussian_problem(sde, shape)
    tol = 1e-7
    x, nfe = ode_sample(sde, data.score_fn(sde), shape, method=method, rtol=tol, atol=tol, z=z)
    exact_x = gaussian_flow_map(sde, mu, var, z, sde.T, EPS)
    assert x.dtype == F64 and x.shape == shape and nfe > 0
    assert (x - exact_x).abs().max() < 20 * tol
    z_back, _ = ode_encode(sde, data.score_fn(sde), exact_x, method=method, rtol=tol, atol=tol)
    assert ((z_back - z).abs() / (1 + z.abs())).max() < 20 * tol


def _log_density_gap(samples, fresh, density):
    """``(mean log p(samples) - mean log p(fresh)) / SE`` with SE from the two sample variances."""
    a, b = density.log_prob(samples.to(F64)), density.log_prob(fresh.to(F64))
    return (a.mean() - b.mean()).item() / math.sqrt(a.var().item() / a.numel() + b.var().item() / b.numel())


RING_N = 1000  # samples per set in the ring test
NULL_SETS = 30  # fresh data sets in the sliced-Wasserstein null distribution


def _sliced_wasserstein_to(reference):
    return lambda a: sliced_wasserstein(a, reference, generator=torch.Generator().manual_seed(7)).item()


@functools.lru_cache(maxsize=None)
def _ring_reference(sde_name):
    """Exact law ``p_eps`` of the ring under the SDE, a reference data set, a fresh data set and the SW null sample."""
    target = GaussianMixture.ring().perturbed(SDES[sde_name](), EPS)  # the exact law the ODE transports p_T to
    g = torch.Generator().manual_seed(123)
    reference, fresh = target.sample(RING_N, generator=g), target.sample(RING_N, generator=g)
    distance = _sliced_wasserstein_to(reference)
    null = torch.tensor([distance(target.sample(RING_N, generator=g)) for _ in range(NULL_SETS)])
    return target, reference, fresh, null


@pytest.mark.parametrize("method", ["RK45", "dopri5"])
@pytest.mark.parametrize("sde_name", list(SDES))
def test_ring_samples_match_the_data_distribution(sde_name, method):
    """1000 float32 samples of the 8-Gaussian ring at the default tolerances vs the exact law ``p_eps``.

    (1) Mean exact log-density of the samples vs of 1000 fresh data samples: within 4 standard errors
    (measured 0.6 SE; multiplying the score by 1.1 moves it to 8 SE, by 0.9 to -15 SE).
    (2) Sliced Wasserstein distance to a fixed reference data set of size 1000, against a null distribution of
    the same statistic for 30 fresh data sets of size 1000: below the null mean + 4 null std (measured: at
    the null mean).
    """
    sde = SDES[sde_name]()
    ring = GaussianMixture.ring()
    target, reference, fresh, null = _ring_reference(sde_name)
    x, _ = ode_sample(sde, ring.score_fn(sde), (RING_N, 2), method=method, generator=torch.Generator().manual_seed(1))
    assert x.dtype == torch.float32 and torch.isfinite(x).all()
    assert abs(_log_density_gap(x, fresh, target)) < 4.0
    assert _sliced_wasserstein_to(reference)(x) < null.mean() + 4 * null.std()


@pytest.mark.parametrize("method", ["dopri5", "RK45"])
@pytest.mark.parametrize("sde_name", list(SDES))
def test_encode_then_decode_returns_the_data(sde_name, method):
    """The ODE is a bijection: ring data -> latent -> data is the identity to 2e-5 at rtol = atol = 1e-7 (float64).

    Measured max error 1.4e-7 .. 3.6e-6 over SDEs and methods (at 1e-6 it is up to 5.4e-5)."""
    sde = SDES[sde_name]()
    ring = GaussianMixture.ring()
    x = ring.sample(64, generator=torch.Generator().manual_seed(2), dtype=F64)
    z, _ = ode_encode(sde, ring.score_fn(sde), x, method=method, rtol=1e-7, atol=1e-7)
    assert (z.std() - sde.prior_std).abs() < 0.25 * sde.prior_std  # a latent, not data: scale of the prior
    x_back, _ = ode_sample(sde, ring.score_fn(sde), x.shape, method=method, rtol=1e-7, atol=1e-7, z=z)
    assert (x_back - x).abs().max() < 2e-5


@pytest.mark.parametrize("sde_name", list(SDES))
def test_torch_and_scipy_solvers_agree(sde_name):
    """dopri5 (torch, per-sample steps) and RK45 (scipy, one global step) decode the same latents to within 5e-6 at tol 1e-8.

    Measured max difference 3.1e-7 .. 4.4e-7."""
    sde = SDES[sde_name]()
    ring = GaussianMixture.ring()
    z = sde.prior_sampling((32, 2), generator=torch.Generator().manual_seed(3), dtype=F64)
    a, _ = ode_sample(sde, ring.score_fn(sde), (32, 2), method="dopri5", rtol=1e-8, atol=1e-8, z=z)
    b, _ = ode_sample(sde, ring.score_fn(sde), (32, 2), method="RK45", rtol=1e-8, atol=1e-8, z=z)
    torch.testing.assert_close(a, b, rtol=0, atol=5e-6)


class _Recorder:
    """Score function that records every call's batch size (and optionally refuses to be called)."""

    def __init__(self, score_fn=None):
        self.score_fn, self.calls = score_fn, []

    def __call__(self, x, t):
        if self.score_fn is None:
            raise AssertionError("score_fn must not be called")
        self.calls.append(x.shape[0])
        return self.score_fn(x, t)


@pytest.mark.parametrize("method", ODE_METHODS)
@pytest.mark.parametrize("denoise", [False, True])
def test_nfe_is_the_number_of_score_calls(method, denoise):
    sde = VPSDE()
    ring = GaussianMixture.ring()
    score = _Recorder(ring.score_fn(sde))
    _, nfe = ode_sample(sde, score, (8, 2), method=method, rtol=1e-3, atol=1e-3, denoise=denoise, generator=torch.Generator().manual_seed(0))
    assert nfe == len(score.calls) > 2
    z_score = _Recorder(ring.score_fn(sde))
    _, nfe = ode_encode(sde, z_score, ring.sample(8, generator=torch.Generator().manual_seed(0)), method=method, rtol=1e-3, atol=1e-3)
    assert nfe == len(z_score.calls) > 2


def test_dopri5_sample_is_independent_of_its_batch():
    """Per-sample steps: decoding one latent alone gives the same result as decoding it within a batch."""
    sde = VESDE()
    ring = GaussianMixture.ring()
    z = sde.prior_sampling((10, 2), generator=torch.Generator().manual_seed(4), dtype=F64)
    batch, _ = ode_sample(sde, ring.score_fn(sde), (10, 2), method="dopri5", z=z)
    for i in (0, 7):
        alone, _ = ode_sample(sde, ring.score_fn(sde), (1, 2), method="dopri5", z=z[i : i + 1])
        torch.testing.assert_close(alone, batch[i : i + 1], rtol=0, atol=1e-12)


@pytest.mark.parametrize("method", ["dopri5", "RK45"])
def test_generator_makes_samples_reproducible(method):
    sde = subVPSDE()
    ring = GaussianMixture.ring()
    run = lambda seed: ode_sample(sde, ring.score_fn(sde), (16, 2), method=method, generator=torch.Generator().manual_seed(seed))[0]
    assert torch.equal(run(5), run(5))
    assert not torch.allclose(run(5), run(6))


def test_float64_prior_draw_and_progress_bar():
    """``dtype=float64`` samples in float64 (no float32 anywhere: equal to decoding a float64 latent); progress runs."""
    sde = VPSDE()
    ring = GaussianMixture.ring()
    for method in ("dopri5", "RK45"):
        x, _ = ode_sample(sde, ring.score_fn(sde), (8, 2), method=method, dtype=F64, progress=True, generator=torch.Generator().manual_seed(0))
        z = sde.prior_sampling((8, 2), generator=torch.Generator().manual_seed(0), dtype=F64)
        x_z, _ = ode_sample(sde, ring.score_fn(sde), (8, 2), method=method, z=z)
        assert x.dtype == F64 and torch.equal(x, x_z)


@pytest.mark.parametrize("sde_name", list(SDES))
def test_denoise_is_the_reference_noise_free_reverse_diffusion_step(sde_name):
    """``denoise=True`` = ODE sample followed by the step documented in :func:`denoise_step`, written out per SDE."""
    sde = SDES[sde_name]()
    ring = GaussianMixture.ring()
    score = ring.score_fn(sde)
    gen = lambda: torch.Generator().manual_seed(9)
    x, _ = ode_sample(sde, score, (16, 2), dtype=F64, generator=gen())
    x_denoised, _ = ode_sample(sde, score, (16, 2), dtype=F64, generator=gen(), denoise=True)
    t = torch.full((16,), EPS, dtype=F64)
    s = score(x, t)
    if sde_name == "ve":  # SMLD step at i = 0: G^2 = sigma_min^2
        expected = x + sde.sigma_min**2 * s
    elif sde_name == "vp":  # DDPM step at i = 0: beta_0 = beta_min / N
        beta0 = sde.beta_0 / sde.N
        expected = (2 - math.sqrt(1 - beta0)) * x + beta0 * s
    else:  # Euler-Maruyama step of length T / N
        beta = sde.beta_0 + EPS * (sde.beta_1 - sde.beta_0)
        g2 = beta * -math.expm1(-2 * (sde.beta_0 * EPS + 0.5 * (sde.beta_1 - sde.beta_0) * EPS**2))
        expected = x + (0.5 * beta * x + g2 * s) / sde.N
    torch.testing.assert_close(x_denoised, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(denoise_step(sde, score, x, EPS), expected, rtol=1e-12, atol=1e-12)
    assert (x_denoised - x).abs().max() > 1e-6  # the step does something


def test_invalid_arguments_raise_before_any_work():
    sde = VPSDE()
    never = _Recorder()
    good = dict(generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="method must be one of.*'dopri5'.*'RK45'"):
        ode_sample(sde, never, (4, 2), method="euler", **good)
    for eps in (0.0, 1.0, -0.1, 2.0):
        with pytest.raises(ValueError, match="eps must lie in"):
            ode_sample(sde, never, (4, 2), eps=eps, **good)
    for name in ("rtol", "atol"):
        for value in (0.0, -1e-5):
            with pytest.raises(ValueError, match=name):
                ode_sample(sde, never, (4, 2), **{name: value}, **good)
    with pytest.raises(ValueError, match="z has shape"):
        ode_sample(sde, never, (4, 2), z=torch.zeros(3, 2))
    with pytest.raises(ValueError, match="z must be a floating-point tensor"):
        ode_sample(sde, never, (4, 2), z=torch.zeros(4, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="denoise"):
        ode_sample(sde, never, (4, 2), denoise="yes", **good)
    with pytest.raises(ValueError, match="shape"):
        ode_sample(sde, never, (0, 2), **good)
    with pytest.raises(ValueError, match="x must be a floating-point tensor"):
        ode_encode(sde, never, torch.zeros(4, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="method must be one of"):
        ode_encode(sde, never, torch.zeros(4, 2), method="rk4")
    with pytest.raises(ValueError, match="eps must lie in"):
        ode_encode(sde, never, torch.zeros(4, 2), eps=1.5)
    assert never.calls == []
