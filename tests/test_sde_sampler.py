"""Tests of :func:`samplers.sde_solvers.sde_sample` (torchsde solvers of the reverse-time SDE) with exact scores.

Statistical tolerances are ``K_SE`` standard errors of the sample size plus, where a method has a
discretization bias, a bound on that bias measured once with 20000 samples (and stated next to it).
The statistical helpers are in ``sampler_checks.py``, shared with ``test_adaptive_sampler.py``.
"""

from __future__ import annotations

import math

import pytest
import torch

from sde_lib import VESDE, VPSDE, GaussianMixture, LinearSDE
from samplers.common import tweedie_denoise
import sde_lib.base
from samplers import sde_solvers
from samplers.sde_solvers import SDE_METHODS, sde_sample
from sampler_checks import (
    GAUSS_MEAN,
    GAUSS_VAR,
    RING,
    RING_SAMPLES,
    SDES,
    CubicDriftSDE,
    assert_gaussian_moments,
    assert_matches_ring,
    gaussian_data,
)

# ----------------------------------------------------------------------------------------- distribution tests
# |bias of mean log p| on the ring at dt = 1e-2, measured with 20000 samples (standard error 0.007):
# euler/milstein 0.039 (VP), 0.044 (sub-VP), 0.030 (VE); euler_heun 0.041, 0.037, 0.044;
# srk <= 0.005; midpoint <= 0.003; heun <= 0.012; log_ode <= 0.016. Bounds: measured + 2 standard errors.
RING_DT = 1e-2
RING_LOGP_BIAS = {"euler": 0.06, "milstein": 0.06, "euler_heun": 0.06, "srk": 0.02, "midpoint": 0.02, "heun": 0.03, "log_ode": 0.03}


@pytest.mark.parametrize("method", list(SDE_METHODS))
@pytest.mark.parametrize("sde_name", list(SDES))
def test_ring_samples_match_data(sde_name: str, method: str) -> None:
    sde = SDES[sde_name]()
    gen = torch.Generator().manual_seed(0)
    x, nfe = sde_sample(sde, RING.score_fn(sde), (RING_SAMPLES, 2), method=method, dt=RING_DT, generator=gen)
    assert x.shape == (RING_SAMPLES, 2) and x.dtype == torch.float32
    assert_matches_ring(x, RING_LOGP_BIAS[method])


# Bias at dt = 1e-2 on N((1, -2, 0.5), 0.25 I), measured with 100000 samples (standard errors 0.0016 for the
# mean, 0.0026 relative for the variance): |mean| euler/milstein/euler_heun <= 0.014, others <= 0.0041;
# relative variance euler/milstein <= 0.017, euler_heun <= 0.077 (-0.036, -0.041, -0.077 for VP, sub-VP,
# VE: its trapezoidal noise under-weights g^2), srk <= 0.008, midpoint/heun/log_ode <= 0.002.
GAUSS_MEAN_BIAS = {"euler": 0.02, "milstein": 0.02, "euler_heun": 0.02, "srk": 0.008, "midpoint": 0.008, "heun": 0.008, "log_ode": 0.008}
GAUSS_VAR_BIAS = {"euler": 0.025, "milstein": 0.025, "euler_heun": 0.085, "srk": 0.015, "midpoint": 0.008, "heun": 0.008, "log_ode": 0.008}


@pytest.mark.parametrize("method", list(SDE_METHODS))
@pytest.mark.parametrize("sde_name", list(SDES))
def test_gaussian_moments_float64(sde_name: str, method: str) -> None:
    sde, data = SDES[sde_name](), gaussian_data()
    gen = torch.Generator().manual_seed(1)
    x, _ = sde_sample(sde, data.score_fn(sde), (4000, 3), method=method, dt=1e-2, dtype=torch.float64, generator=gen)
    assert x.dtype == torch.float64
    assert_gaussian_moments(x, GAUSS_MEAN, GAUSS_VAR, GAUSS_MEAN_BIAS[method], GAUSS_VAR_BIAS[method])


def euler_maruyama_moments(sde: LinearSDE, mean0: torch.Tensor, var0: float, steps: int, eps: float, lag: int = 0):
    """Exact mean and variance of the Euler--Maruyama chain for the reverse SDE with Gaussian data.

    In ``s = T - t`` with ``h = (T - eps) / steps``: ``y_{k+1} = y_k + h [g^2 score(y_k, t_k) - f y_k] + g sqrt(h) z``
    at ``t_k = T - k h`` with the exact score ``-(y - alpha mu) / (alpha^2 v + sigma^2)``: an affine Gaussian
    recursion ``y_{k+1} = A_k y_k + B_k + g_k sqrt(h) z``. ``lag=1`` evaluates the coefficients one step late
    (``t_{k+1}``), a wrong time reversal the test must be able to tell apart.
    """
    h = (sde.T - eps) / steps
    mean, var = torch.zeros_like(mean0), sde.prior_std**2
    for k in range(steps):
        t = torch.tensor([sde.T - (k + lag) * h], dtype=torch.float64)
        alpha, sigma = sde.marginal_coeffs(t)
        f, g = sde.drift_coeff(t), sde.diffusion_coeff(t)
        c = alpha**2 * var0 + sigma**2
        a = 1.0 - h * (g**2 / c + f)
        mean = a * mean + h * g**2 * alpha * mean0 / c
        var = a**2 * var + g**2 * h
    return mean, float(var)


@pytest.mark.parametrize("sde_name", list(SDES))
def test_euler_matches_exact_euler_maruyama_recursion(sde_name: str) -> None:
    """10 Euler steps: the EM chain's exact law, far from the data law, is what the sampler produces."""
    sde = SDES[sde_name]()
    data_mean = torch.tensor([4.0, -3.0, 1.0], dtype=torch.float64)
    data = GaussianMixture.gaussian(data_mean, GAUSS_VAR)
    eps, steps, n = 1e-3, 10, 20_000
    mean, var = euler_maruyama_moments(sde, data_mean, GAUSS_VAR, steps, eps)
    mean_se, var_se = math.sqrt(var / n), var * math.sqrt(2.0 / (3 * (n - 1)))

    def separation(other_mean: torch.Tensor, other_var: float) -> float:
        return max((mean - other_mean).abs().max().item() / mean_se, abs(var - other_var) / var_se)

    # the test resolves the EM bias (distance to the data law) and a one-step time shift: > 6 standard errors
    assert separation(data_mean, GAUSS_VAR) > 6 and separation(*euler_maruyama_moments(sde, data_mean, GAUSS_VAR, steps, eps, lag=1)) > 6
    gen = torch.Generator().manual_seed(2)
    dt = (sde.T - eps) / steps
    x, nfe = sde_sample(sde, data.score_fn(sde), (n, 3), method="euler", dt=dt, eps=eps, denoise=False, dtype=torch.float64,
                        generator=gen)
    assert nfe == steps
    assert_gaussian_moments(x, mean, var, 0.0, 0.0)


def test_denoise_is_tweedie_of_the_last_state() -> None:
    """``denoise=True`` returns ``(x + sigma^2 score) / alpha`` at ``eps`` of the very same trajectory."""
    sde, data = VPSDE(), gaussian_data()
    kwargs = dict(method="srk", dt=0.05, eps=0.01, dtype=torch.float64)
    raw, nfe_raw = sde_sample(sde, data.score_fn(sde), (50, 3), denoise=False, generator=torch.Generator().manual_seed(3), **kwargs)
    den, nfe_den = sde_sample(sde, data.score_fn(sde), (50, 3), denoise=True, generator=torch.Generator().manual_seed(3), **kwargs)
    t = torch.full((50,), 0.01, dtype=torch.float64)
    alpha, sigma = sde.marginal_coeffs(t)
    expected = (raw + sigma[:, None] ** 2 * data.score_fn(sde)(raw, t)) / alpha[:, None]
    torch.testing.assert_close(den, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(tweedie_denoise(sde, data.score_fn(sde), raw, 0.01), expected, rtol=1e-12, atol=1e-12)
    assert nfe_den == nfe_raw + 1


def test_torchsde_adaptive_stepping_matches_ring() -> None:
    """torchsde's step-doubling control (rtol = atol = 1e-2, measured |bias of mean log p| <= 0.03 with
    20000 samples for euler and srk) samples the ring, and a tighter tolerance costs more evaluations."""
    sde = VPSDE()
    gen = torch.Generator().manual_seed(5)
    def run(n: int, tol: float):
        return sde_sample(sde, RING.score_fn(sde), (n, 2), method="srk", adaptive=True, rtol=tol, atol=tol, dt=1e-2, generator=gen)

    x, nfe = run(RING_SAMPLES, 1e-2)
    assert_matches_ring(x, 0.04)
    _, nfe_tight = run(500, 1e-3)
    assert nfe_tight > nfe


# ----------------------------------------------------------------------------------------- contract tests
EVALS_PER_STEP = {"euler": 1, "milstein": 1, "euler_heun": 1, "srk": 2, "midpoint": 2, "heun": 2, "log_ode": 2}


@pytest.mark.parametrize("method", list(SDE_METHODS))
def test_nfe_equals_score_calls(method: str) -> None:
    sde, calls = VESDE(), []
    score = RING.score_fn(sde)

    def counted(x, t):
        calls.append(t)
        return score(x, t)

    _, nfe = sde_sample(sde, counted, (8, 2), method=method, dt=0.1, eps=0.01, generator=torch.Generator().manual_seed(0))
    steps = math.ceil((1.0 - 0.01) / 0.1)
    assert nfe == len(calls) == EVALS_PER_STEP[method] * steps + 1
    assert calls[0][0].item() == pytest.approx(sde.T) and calls[-1][0].item() == pytest.approx(0.01)


@pytest.mark.parametrize("method", ["euler", "srk"])
def test_torchsde_times_are_host_values(method: str, monkeypatch) -> None:
    """torchsde steps on CPU float64 times, so reading a step's time is no device-to-host sync on a GPU, and every
    score call gets a time tensor that carries its host value (the SDE's range check runs on the host)."""
    seen = []
    original = sde_solvers._TorchsdeReverseSDE._time

    def spy(self, s, y):
        seen.append((s.device.type, s.dtype))
        t = original(self, s, y)
        assert sde_lib.base._host_time(t) == pytest.approx(float(t[0]))
        return t

    monkeypatch.setattr(sde_solvers._TorchsdeReverseSDE, "_time", spy)
    sde_sample(VPSDE(), RING.score_fn(VPSDE()), (4, 2), method=method, dt=0.1, generator=torch.Generator().manual_seed(0))
    assert seen and set(seen) == {("cpu", torch.float64)}


def test_reproducible_and_global_rng_untouched() -> None:
    sde = VPSDE()
    state = torch.get_rng_state()
    def run(seed: int, **kw):
        return sde_sample(sde, RING.score_fn(sde), (64, 2), method="srk", dt=0.05, generator=torch.Generator().manual_seed(seed), **kw)

    a, _ = run(11)
    b, _ = run(11, progress=True)  # the progress bar changes nothing
    c, _ = run(12)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert torch.equal(torch.get_rng_state(), state)


def test_x_init_is_used_and_left_unchanged() -> None:
    """The start ``x_init`` is honoured (same noise, different starts: different results) and not modified."""
    sde = VPSDE()
    x0 = torch.zeros(16, 2)
    keep = x0.clone()
    a, _ = sde_sample(sde, RING.score_fn(sde), (16, 2), x_init=x0, dt=0.1, generator=torch.Generator().manual_seed(0))
    b, _ = sde_sample(sde, RING.score_fn(sde), (16, 2), x_init=x0 + 3.0, dt=0.1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x0, keep) and not torch.allclose(a, b)


def test_image_shaped_data() -> None:
    """``(B, 3, 8, 8)`` data: per-pixel Gaussian with a spatial mean pattern, moments checked per pixel."""
    mean = torch.linspace(-1.0, 1.0, 3 * 8 * 8, dtype=torch.float64).reshape(3, 8, 8)
    data = GaussianMixture.gaussian(mean, 0.25)
    sde = VPSDE()
    x, _ = sde_sample(sde, data.score_fn(sde), (400, 3, 8, 8), method="heun", dt=2e-2, generator=torch.Generator().manual_seed(4))
    assert x.shape == (400, 3, 8, 8)
    # heun at dt = 2e-2: bias bounded by twice its dt = 1e-2 bounds (first order at worst); measured here:
    # relative variance -0.6%, largest mean error 0.64 of the tolerance over 192 pixels
    assert_gaussian_moments(x, mean, 0.25, 2 * GAUSS_MEAN_BIAS["heun"], 2 * GAUSS_VAR_BIAS["heun"])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(method="rk4"), "method must be one of 'euler', 'milstein', 'srk'"),
        (dict(method="reversible_heun"), "reversible_heun.*unstable"),
        (dict(dt=0.0), "dt"),
        (dict(dt=-1e-3), "dt"),
        (dict(rtol=0.0), "rtol"),
        (dict(atol=-1.0), "atol"),
        (dict(eps=0.0), "eps"),
        (dict(eps=1.0), "eps"),
        (dict(x_init=torch.zeros(3, 2)), "x_init"),
        (dict(shape=(0, 2)), "shape"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    calls = []
    sde = VPSDE()
    score = lambda x, t: calls.append(1) or RING.score_fn(sde)(x, t)  # noqa: E731
    shape = kwargs.pop("shape", (4, 2))
    with pytest.raises(ValueError, match=match):
        sde_sample(sde, score, shape, **kwargs)
    assert not calls


def test_denoise_needs_linear_sde() -> None:
    with pytest.raises(ValueError, match="denoise"):
        sde_sample(CubicDriftSDE(N=10), lambda x, t: -x, (4, 2))
    x, nfe = sde_sample(CubicDriftSDE(N=10), lambda x, t: -x, (4, 2), dt=0.1, denoise=False, generator=torch.Generator().manual_seed(0))
    assert x.shape == (4, 2) and nfe == 10


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_device() -> None:
    sde = VPSDE()
    gen = torch.Generator("cuda").manual_seed(0)
    x, _ = sde_sample(sde, RING.score_fn(sde), (RING_SAMPLES, 2), method="srk", dt=RING_DT, generator=gen)
    assert x.device.type == "cuda"
    assert_matches_ring(x.cpu(), RING_LOGP_BIAS["srk"])
