"""Tests of :func:`samplers.adaptive.adaptive_sde_sample` (Gotta Go Fast, Jolicoeur-Martineau et al. 2021)
with exact scores. Statistical helpers and tolerances (``K_SE`` standard errors plus stated, measured
biases) come from ``test_sde_sampler.py``.
"""

from __future__ import annotations

import math

import pytest
import torch

from sde_lib import VESDE, VPSDE, GaussianMixture
from samplers.adaptive import BrownianMemory, adaptive_sde_sample
from sampler_checks import (
    GAUSS_MEAN,
    GAUSS_VAR,
    K_SE,
    RING,
    RING_SAMPLES,
    SDES,
    assert_gaussian_moments,
    assert_matches_ring,
    gaussian_data,
)

# Bias at the defaults (rtol = 0.01, atol = 2 / 256), measured with 20000 ring samples (standard error
# 0.007): mean log p -0.001 (VP), +0.013 (sub-VP), +0.023 (VE); and with 100000 samples of
# N((1, -2, 0.5), 0.25 I) (standard errors 0.0016, 0.0026): |mean| <= 0.003, relative variance +0.004,
# -0.001, -0.008. Bounds: measured + 2 standard errors, rounded up.
RING_LOGP_BIAS = 0.04
GAUSS_MEAN_BIAS = 0.006
GAUSS_VAR_BIAS = 0.015


@pytest.mark.parametrize("sde_name", list(SDES))
def test_ring_samples_match_data(sde_name: str) -> None:
    sde = SDES[sde_name]()
    x, nfe = adaptive_sde_sample(sde, RING.score_fn(sde), (RING_SAMPLES, 2), generator=torch.Generator().manual_seed(0))
    assert x.shape == (RING_SAMPLES, 2) and x.dtype == torch.float32
    assert_matches_ring(x, RING_LOGP_BIAS)


@pytest.mark.parametrize("sde_name", list(SDES))
def test_gaussian_moments_float64(sde_name: str) -> None:
    sde, data = SDES[sde_name](), gaussian_data()
    x, _ = adaptive_sde_sample(sde, data.score_fn(sde), (4000, 3), dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert x.dtype == torch.float64
    assert_gaussian_moments(x, GAUSS_MEAN, GAUSS_VAR, GAUSS_MEAN_BIAS, GAUSS_VAR_BIAS)


def moment_error_in_standard_errors(x: torch.Tensor, mean: torch.Tensor, var: float) -> float:
    """``max(|mean error| / se_mean, |variance error| / se_var)`` for samples ``x`` of ``N(mean, var I)``."""
    n, d = x.shape
    mean_z = (x.mean(0) - mean).abs().max().item() / math.sqrt(var / n)
    var_z = abs(x.var(0).mean().item() - var) / (var * math.sqrt(2.0 / (d * (n - 1))))
    return max(mean_z, var_z)


def test_error_decreases_with_rtol() -> None:
    """VP, Gaussian data, atol = 0.01: at rtol = 0.5 the bias is resolved (> 6 standard errors of 5000
    samples; measured 0.07 in the mean, +6% in the variance), at 0.1 it is less than half of that, at 0.02
    it is within ``K_SE`` standard errors; evaluations grow as rtol shrinks."""
    sde, data = VPSDE(), gaussian_data()
    errors, nfes = [], []
    for rtol in (0.5, 0.1, 0.02):
        gen = torch.Generator().manual_seed(2)
        x, nfe = adaptive_sde_sample(sde, data.score_fn(sde), (5000, 3), rtol=rtol, atol=0.01, dtype=torch.float64, generator=gen)
        errors.append(moment_error_in_standard_errors(x, GAUSS_MEAN, GAUSS_VAR))
        nfes.append(nfe)
    assert errors[0] > 6 and errors[1] < errors[0] / 2 and errors[2] <= K_SE, errors
    assert nfes[0] < nfes[1] < nfes[2], nfes


def test_rejection_with_memory_removes_the_low_dimensional_bias() -> None:
    """Redrawing the noise of rejected steps (as in the paper) biases 2-D data: on the VE ring the
    within-mode variance is measured +85% too large (rtol 0.01); keeping the Brownian path passes."""
    sde = VESDE()

    def run(memory: bool) -> torch.Tensor:
        return adaptive_sde_sample(sde, RING.score_fn(sde), (1000, 2), brownian_memory=memory, generator=torch.Generator().manual_seed(3))[0]

    redrawn = run(False).double()
    nearest = torch.cdist(redrawn, RING.means).argmin(1)
    within_var = (redrawn - RING.means[nearest]).square().mean().item()
    # 2000 coordinates: the standard error of the within-mode variance is ~3%
    assert within_var / 0.09 - 1 > 0.3
    kept = run(True)
    assert_matches_ring(kept, RING_LOGP_BIAS)


def test_brownian_memory_splits_are_brownian() -> None:
    """A rejected increment ``W`` over ``tau = 0.5`` split at ``h = 0.2`` by the Brownian bridge: the two
    pieces sum to ``W`` exactly, have variances 0.2 and 0.3 and are uncorrelated (``K_SE`` standard errors
    of 40000 draws); a longer step is shortened to the remaining piece."""
    n = 40_000
    gen = torch.Generator().manual_seed(4)
    memory = BrownianMemory(torch.zeros(n, 1, dtype=torch.float64))
    rows = torch.arange(n)
    attempt = lambda step: memory.next_increment(  # noqa: E731
        rows, torch.full((n,), step, dtype=torch.float64), torch.randn(n, 1, generator=gen, dtype=torch.float64)
    )
    h, w = attempt(0.5)
    assert torch.equal(h, torch.full_like(h, 0.5))
    h1, w1 = attempt(0.2)  # rejected: a shorter step on the same path
    memory.accept(rows)
    h2, w2 = attempt(1.0)  # longer than what is left of the segment: shortened to it
    memory.accept(rows)
    assert torch.allclose(h1, torch.full_like(h1, 0.2)) and torch.allclose(h2, torch.full_like(h2, 0.3))
    torch.testing.assert_close(w1 + w2, w, rtol=0, atol=1e-12)
    se = lambda v: v * math.sqrt(2.0 / (n - 1))  # noqa: E731  standard error of a sample variance
    assert abs(w1.var().item() - 0.2) <= K_SE * se(0.2)
    assert abs(w2.var().item() - 0.3) <= K_SE * se(0.3)
    assert abs((w1 * w2).mean().item()) <= K_SE * math.sqrt(0.2 * 0.3 / n)
    assert bool((memory.depth == 0).all())


def test_nfe_equals_score_calls_and_per_sample_times() -> None:
    sde, calls = VPSDE(), []
    score = RING.score_fn(sde)

    def counted(x, t):
        calls.append(t.clone())
        return score(x, t)

    _, nfe = adaptive_sde_sample(sde, counted, (32, 2), generator=torch.Generator().manual_seed(5))
    assert nfe == len(calls) and nfe % 2 == 1  # two per round, one to denoise
    assert any(t.unique().numel() > 1 for t in calls)  # samples step independently
    assert torch.allclose(calls[-1], torch.full_like(calls[-1], 1e-3))


def test_reproducible_and_default_atol() -> None:
    sde = VPSDE()
    def run(seed: int, **kw):
        return adaptive_sde_sample(sde, RING.score_fn(sde), (64, 2), generator=torch.Generator().manual_seed(seed), **kw)

    a, nfe_a = run(6)
    b, nfe_b = run(6, atol=2.0 / 256, progress=True)  # the default atol is 2 / 256; the bar changes nothing
    c, _ = run(7)
    assert torch.equal(a, b) and nfe_a == nfe_b and not torch.allclose(a, c)
    d, _ = run(6, data_range=1.0)
    e, _ = run(6, atol=1.0 / 256)
    assert torch.equal(d, e)


def test_image_shaped_data() -> None:
    """``(B, 3, 8, 8)`` per-pixel Gaussian data at the defaults; moments per pixel with the stated biases."""
    mean = torch.linspace(-1.0, 1.0, 3 * 8 * 8, dtype=torch.float64).reshape(3, 8, 8)
    data = GaussianMixture.gaussian(mean, 0.25)
    sde = VPSDE()
    x_init = sde.prior_sampling((300, 3, 8, 8), generator=torch.Generator().manual_seed(8))
    keep = x_init.clone()
    gen = torch.Generator().manual_seed(8)
    x, nfe = adaptive_sde_sample(sde, data.score_fn(sde), (300, 3, 8, 8), x_init=x_init, generator=gen)
    assert x.shape == (300, 3, 8, 8) and torch.equal(x_init, keep)
    assert_gaussian_moments(x, mean, 0.25, GAUSS_MEAN_BIAS, GAUSS_VAR_BIAS)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(rtol=0.0), "rtol"),
        (dict(atol=-1e-3), "atol"),
        (dict(data_range=0.0), "data_range"),
        (dict(eps=0.0), "eps"),
        (dict(eps=2.0), "eps"),
        (dict(h_init=0.0), "h_init"),
        (dict(safety=-0.9), "safety"),
        (dict(exponent=0.0), "exponent"),
        (dict(x_init=torch.zeros(5, 2)), "x_init"),
    ],
)
def test_bad_arguments(kwargs: dict, name: str) -> None:
    calls = []
    sde = VPSDE()
    with pytest.raises(ValueError, match=name):
        adaptive_sde_sample(sde, lambda x, t: calls.append(1) or -x, (4, 2), **kwargs)
    assert not calls


def test_non_finite_score_is_reported() -> None:
    with pytest.raises(RuntimeError, match="non-finite"):
        adaptive_sde_sample(VPSDE(), lambda x, t: torch.full_like(x, float("nan")), (4, 2))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_device() -> None:
    sde = VPSDE()
    x, _ = adaptive_sde_sample(sde, RING.score_fn(sde), (RING_SAMPLES, 2), generator=torch.Generator("cuda").manual_seed(0))
    assert x.device.type == "cuda"
    assert_matches_ring(x.cpu(), RING_LOGP_BIAS)
