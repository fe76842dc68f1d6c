"""Predictor-corrector sampler (samplers/pc.py) against exact answers.

Every distributional test uses the EXACT score of Gaussian-mixture data (sde_lib.GaussianMixture), so the
only error left is that of the sampler's discretization. Tolerances are derived from the sample size (k
standard errors) or from the null distribution of the statistic between independent data sets.

The discretization bias is real and is bounded explicitly, not hidden. ``RING_BIAS`` and
``GAUSSIAN_BIAS`` hold the relative error of the within-mode variance, ``Var(samples) / Var(data) - 1``,
measured once for each combination with seed 1 and N = 500 steps as in these tests, from 60,000 ring samples
(standard error 0.0041) or 512 samples of a 768-dimensional Gaussian (standard error 0.0023); each test
checks that its own smaller run agrees with it to 4 standard errors of both estimates. At N = 1000 the same
measurement gives, for VP / sub-VP / VE on the ring: reverse_diffusion+langevin (the reference's sampler)
+0.026 / +0.026 / +0.025, euler_maruyama +0.004 / +0.003 / -0.001, ancestral_sampling +0.016 / -0.013 /
-0.002, probability flow +0.040 / +0.005 / +0.040. Most of the VP/VE reverse-diffusion bias comes from the
reference's time grid (see samplers/pc.py) and does not shrink with N up to N = 1 / eps.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
from scipy import stats

import sde_lib
from sample_quality import sliced_wasserstein
from samplers.pc import (
    AncestralSamplingPredictor,
    AnnealedLangevinDynamics,
    Corrector,
    LangevinCorrector,
    Predictor,
    available_correctors,
    available_predictors,
    get_corrector,
    get_predictor,
    langevin_alpha,
    pc_sample,
    register_corrector,
    register_predictor,
)
from sde_lib import GaussianMixture, VESDE, VPSDE, subVPSDE
from sampler_checks import CubicDriftSDE

RING = GaussianMixture.ring()  # 8 components, radius 4, std 0.3
UNEVEN = GaussianMixture.uneven()  # a heavy narrow mode beside light wide ones
RING_VAR = 0.09  # within-mode variance of the ring
N_STEPS = 500  # sde.N of the distributional tests
N_RING = 6000  # ring samples per distributional test (variance-ratio SE 0.013 with the measurement's)
MEASURED_SE = 0.0041  # standard error of the RING_BIAS measurements (60,000 samples)


def make_sde(name: str, N: int = N_STEPS) -> sde_lib.LinearSDE:
    """The three SDEs of the tests; VE with sigma_max = 20 > the ring's largest pairwise distance (8)."""
    if name == "vp":
        return VPSDE(N=N)
    if name == "subvp":
        return subVPSDE(N=N)
    return VESDE(sigma_min=0.01, sigma_max=20.0, N=N)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------------------------- ring mixture
# (sde, predictor, corrector, probability_flow, n_steps) -> measured relative within-mode variance error, N = 500.
# "langevin" is the reference's batch-averaged rule; "ald" the step that depends on t only.
RING_BIAS = {
    ("vp", "reverse_diffusion", "langevin", False, 1): +0.0173,
    ("vp", "reverse_diffusion", "ald", False, 1): +0.0076,
    ("vp", "reverse_diffusion", "none", False, 1): +0.0169,
    ("vp", "euler_maruyama", "none", False, 1): +0.0030,
    ("vp", "ancestral_sampling", "none", False, 1): +0.0133,
    ("vp", "reverse_diffusion", "none", True, 1): +0.0581,
    ("subvp", "reverse_diffusion", "langevin", False, 1): +0.0215,
    ("subvp", "reverse_diffusion", "ald", False, 1): +0.0025,
    ("subvp", "euler_maruyama", "none", False, 1): +0.0049,
    ("subvp", "ancestral_sampling", "none", False, 1): -0.0276,  # Gaussian-posterior step; -0.0131 at N = 1000
    ("subvp", "reverse_diffusion", "none", True, 1): +0.0077,
    ("ve", "reverse_diffusion", "langevin", False, 1): +0.0200,
    ("ve", "reverse_diffusion", "ald", False, 1): +0.0037,
    ("ve", "reverse_diffusion", "none", False, 1): +0.0229,
    ("ve", "euler_maruyama", "none", False, 1): +0.0053,
    ("ve", "ancestral_sampling", "none", False, 1): -0.0043,
    ("ve", "reverse_diffusion", "none", True, 1): +0.0622,
    # corrector-only NCSN sampling converges slowly: +0.43 with n_steps = 1, +0.17 with 2 (and at N = 1000, 1)
    ("ve", "none", "ald", False, 2): +0.1748,
}


@functools.lru_cache(maxsize=None)
def sw_null_bound(n: int, draws: int = 10, k: float = 4.0) -> float:
    """Mean + k std of the sliced Wasserstein distance between two independent ring data sets of size ``n``."""
    values = torch.stack(
        [
            sliced_wasserstein(
                RING.sample(n, seeded(1000 + 2 * i), dtype=torch.float64),
                RING.sample(n, seeded(1001 + 2 * i), dtype=torch.float64),
                num_projections=128,
                generator=seeded(0),
            )
            for i in range(draws)
        ]
    )
    return (values.mean() + k * values.std()).item()


def assert_matches_ring(x: torch.Tensor, bias: float, data_seed: int) -> None:
    """``x`` is distributed as the ring mixture up to a within-mode variance inflated by ``1 + bias``.

    Four checks, each at 4 standard errors: within-mode variance (nearest-mode residuals; the modes are 10
    std apart so the assignment is exact in practice), mode weights (chi^2 with 7 degrees of freedom at
    the 0.999 quantile), mean log-density under the true density against fresh data (a variance inflation
    ``bias`` shifts it by ``-(D/2) bias = -bias``), sliced Wasserstein distance to fresh data against
    its null distribution.
    """
    x = x.double()
    n = x.shape[0]
    assert torch.isfinite(x).all()
    data = RING.sample(n, seeded(data_seed), dtype=torch.float64)

    nearest = torch.cdist(x, RING.means).argmin(dim=1)
    ratio = ((x - RING.means[nearest]).square().mean() / RING_VAR).item()
    se = math.sqrt(2.0 / (2 * n) + MEASURED_SE**2)
    assert abs(ratio - (1.0 + bias)) <= 4 * se, f"within-mode variance ratio {ratio:.4f}, measured bias {bias:+.4f}"

    counts = torch.bincount(nearest, minlength=RING.num_components).double()
    expected = n / RING.num_components
    chi2 = ((counts - expected).square() / expected).sum().item()
    assert chi2 <= stats.chi2.ppf(0.999, RING.num_components - 1), f"mode counts {counts.tolist()}"

    lp_x, lp_data = RING.log_prob(x), RING.log_prob(data)
    gap = (lp_x.mean() - lp_data.mean()).item()
    se_gap = math.sqrt(lp_x.var().item() / n + lp_data.var().item() / n)
    assert abs(gap + bias) <= 4 * se_gap, f"mean log-density gap {gap:+.4f} (expected {-bias:+.4f})"

    sw = sliced_wasserstein(x, data, num_projections=128, generator=seeded(0)).item()
    assert sw <= sw_null_bound(n), f"sliced Wasserstein {sw:.4f} above the null bound {sw_null_bound(n):.4f}"


@pytest.mark.parametrize("case", list(RING_BIAS), ids=lambda c: "-".join(map(str, c)))
def test_ring_mixture_samples_match_the_data(case):
    sde_name, predictor, corrector, probability_flow, n_steps = case
    sde = make_sde(sde_name)
    x, nfe = pc_sample(
        sde,
        RING.score_fn(sde),
        (N_RING, 2),
        predictor=predictor,
        corrector=corrector,
        probability_flow=probability_flow,
        n_steps=n_steps,
        generator=seeded(10),
    )
    assert x.shape == (N_RING, 2) and x.dtype == torch.float32
    assert nfe == N_STEPS * ((predictor != "none") + n_steps * (corrector != "none"))
    assert_matches_ring(x, RING_BIAS[case], data_seed=11)


@pytest.mark.parametrize("case", [("vp", "ancestral_sampling", "none", False, 1), ("ve", "euler_maruyama", "none", False, 1)])
def test_ring_mixture_in_float64(case):
    """The same checks in float64 (``dtype=torch.float64``; the float32 measurement of the bias applies)."""
    sde_name, predictor, corrector, _, _ = case
    sde = make_sde(sde_name)
    x, _ = pc_sample(
        sde, RING.score_fn(sde), (N_RING, 2), predictor=predictor, corrector=corrector, dtype=torch.float64,
        generator=seeded(12),
    )
    assert x.dtype == torch.float64
    assert_matches_ring(x, RING_BIAS[case], data_seed=13)


# --------------------------------------------------------------------------------------------- Gaussian images
def image_gaussian() -> tuple[GaussianMixture, torch.Tensor, torch.Tensor]:
    """A 3x16x16 Gaussian with per-pixel means in [-0.25, 0.25] and variances in [0.05, 0.3]."""
    g = seeded(123)
    mean = 0.5 * torch.rand(3, 16, 16, generator=g, dtype=torch.float64) - 0.25
    var = 0.05 + 0.25 * torch.rand(3, 16, 16, generator=g, dtype=torch.float64)
    return GaussianMixture.gaussian(mean, var), mean, var


# (sde, predictor, corrector, probability_flow) -> measured relative variance error at N = 500 (D = 768).
# "ald" takes smaller steps than the reference's rule where the data, not the noise, sets the score (its step is
# a lower bound of the rule's, see AnnealedLangevinDynamics), so it adds less Langevin bias on this Gaussian.
GAUSSIAN_BIAS = {
    ("vp", "reverse_diffusion", "langevin", False): +0.0259,
    ("subvp", "reverse_diffusion", "langevin", False): +0.0287,
    ("ve", "reverse_diffusion", "langevin", False): +0.0278,
    ("vp", "reverse_diffusion", "ald", False): +0.0094,
    ("subvp", "reverse_diffusion", "ald", False): +0.0039,
    ("ve", "reverse_diffusion", "ald", False): +0.0034,
}
GAUSSIAN_MEASURED_SE = 0.0023
N_GAUSSIAN = 128


@pytest.mark.parametrize("case", list(GAUSSIAN_BIAS), ids=lambda c: "-".join(map(str, c)))
def test_gaussian_images_mean_and_variance(case):
    """Per-pixel mean and variance of 128 samples of a 768-dimensional Gaussian, reverse diffusion with the
    reference's and with the batch-independent corrector. With ``z_j`` the standardized error of pixel j's sample mean,
    ``mean_j z_j^2`` is ``1 + bias`` within ``4 sqrt(2 / D)``; the pixel-averaged variance ratio is ``1 + bias``
    within 4 standard errors ``sqrt(2 / ((B - 1) D))``.
    """
    sde_name, predictor, corrector, probability_flow = case
    bias = GAUSSIAN_BIAS[case]
    gm, mean, var = image_gaussian()
    sde = make_sde(sde_name)
    x, _ = pc_sample(
        sde, gm.score_fn(sde), (N_GAUSSIAN, 3, 16, 16), predictor=predictor, corrector=corrector,
        probability_flow=probability_flow, generator=seeded(20),
    )
    x = x.double()
    D = mean.numel()
    z2 = ((x.mean(0) - mean).square() / (var / N_GAUSSIAN)).mean().item()
    assert abs(z2 - (1.0 + bias)) <= 4 * math.sqrt(2.0 / D) * (1.0 + bias), f"mean z^2 {z2:.4f}"
    ratio = (x.var(0) / var).mean().item()
    se = math.sqrt(2.0 / ((N_GAUSSIAN - 1) * D) + GAUSSIAN_MEASURED_SE**2)
    assert abs(ratio - (1.0 + bias)) <= 4 * se, f"variance ratio {ratio:.4f}, measured bias {bias:+.4f}"


# --------------------------------------------------------------------------------------------- fixed defects
def test_ald_sample_does_not_depend_on_the_rest_of_the_batch():
    """Defect 1 of the reference: its batch-averaged step couples samples. With the same noise (same seed)
    and the same first start, sample 0 of ``"ald"`` is identical whatever the 15 other samples are; the
    reference rule ``"langevin"`` changes it, which shows the check can fail."""
    gm, _, _ = image_gaussian()
    sde = make_sde("vp", N=40)
    start = sde.prior_sampling((16, 3, 16, 16), generator=seeded(30), dtype=torch.float64)
    other = start.clone()
    other[1:] = 3.0 * sde.prior_sampling((15, 3, 16, 16), generator=seeded(31), dtype=torch.float64)

    def run(x_init, corrector):
        return pc_sample(sde, gm.score_fn(sde), x_init.shape, corrector=corrector, x_init=x_init, generator=seeded(32))[0]

    a, b = run(start, "ald"), run(other, "ald")
    assert torch.equal(a[0], b[0])
    assert not torch.allclose(a[1], b[1])
    a, b = run(start, "langevin"), run(other, "langevin")
    assert not torch.allclose(a[0], b[0], rtol=0, atol=1e-3)


def reference_langevin_update(sde, score_fn, x, t, snr, n_steps, generator):
    """The 2021 reference's ``LangevinCorrector.update_fn`` (score_sde_pytorch, sampling.py), transcribed line by
    line; ``torch.randn_like(x)`` becomes a draw from ``generator`` so that both sides see the same noise."""
    if isinstance(sde, VPSDE):
        timestep = (t * (sde.N - 1) / sde.T).long()
        alpha = sde.alphas.to(t.device, x.dtype)[timestep]  # the reference's table is in the default dtype
    else:
        alpha = torch.ones_like(t)
    for _ in range(n_steps):
        grad = score_fn(x, t)
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        grad_norm = torch.norm(grad.reshape(grad.shape[0], -1), dim=-1).mean()
        noise_norm = torch.norm(noise.reshape(noise.shape[0], -1), dim=-1).mean()
        step_size = (snr * noise_norm / grad_norm) ** 2 * 2 * alpha
        x_mean = x + step_size[:, None, None, None] * grad
        x = x_mean + torch.sqrt(step_size * 2)[:, None, None, None] * noise
    return x, x_mean


@pytest.mark.parametrize("sde_name", ["vp", "ve"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_langevin_is_the_reference_update(sde_name, dtype):
    """``"langevin"`` gives the numbers of a direct transcription of the reference's corrector on a fixed batch
    (the same operations in the same order, so equal to the last bit), for one and for three steps."""
    gm, _, _ = image_gaussian()
    sde = make_sde(sde_name, N=100)
    score_fn = gm.score_fn(sde)
    x = torch.randn(8, 3, 16, 16, generator=seeded(33), dtype=dtype)
    t = torch.full((8,), 0.37, dtype=dtype)
    for n_steps in (1, 3):
        ours = get_corrector("langevin")(sde, score_fn, snr=0.16, n_steps=n_steps, generator=seeded(34)).update_fn(x, t)
        theirs = reference_langevin_update(sde, score_fn, x, t, 0.16, n_steps, seeded(34))
        for a, b in zip(ours, theirs):
            assert a.dtype == dtype and torch.equal(a, b)


@pytest.mark.parametrize("sde_name", ["vp", "subvp", "ve"])
def test_ald_stays_in_its_mode_on_uneven_2d_mixtures(sde_name):
    """``"ald"`` on a 2-D mixture of unequal weights and widths (a heavy narrow mode beside wide ones), exact
    score, N = 500: no sample ends more than 5 standard deviations from its mode, the mode weights pass a chi^2
    test at the 0.999 quantile, and the within-mode variance ratio is within 6 % of 1. That bound is a
    regression pin: the reference's rule measures +3.8 to +5.4 % on this mixture at N = 1000
    (``benchmarks/correctors.py``), and 6000 samples add a standard error of 1.3 %."""
    sde = make_sde(sde_name)
    data = UNEVEN
    x, _ = pc_sample(sde, data.score_fn(sde), (6000, 2), corrector="ald", generator=seeded(35), dtype=torch.float64)
    assert torch.isfinite(x).all()
    log_post = data.component_log_posterior_fn(sde)(x, torch.zeros(len(x), dtype=x.dtype))
    k = log_post.argmax(1)
    z2 = ((x - data.means[k]).square() / data.variances[k]).sum(1) / 2
    assert (z2 < 25.0).all()  # RMS over the coordinates below 5 standard deviations
    counts = torch.bincount(k, minlength=data.num_components).double()
    expected = data.weights * len(x)
    assert ((counts - expected).square() / expected).sum() <= stats.chi2.ppf(0.999, data.num_components - 1), counts
    assert abs(z2.mean().item() - 1.0) <= 0.06


@pytest.mark.parametrize("sde", [VPSDE(N=100), subVPSDE(beta_min=0.5, beta_max=15.0, N=100), VESDE(N=100)], ids=["vp", "subvp", "ve"])
def test_langevin_step_size_is_algorithm_4_and_5(sde):
    """Defect 2: the step ``eps = 2 alpha_i (r mean_b ||z_b|| / mean_b ||s_b||)^2`` of [SDE] Algorithms 4 (VE,
    alpha = 1) and 5 (VP: alpha_i = 1 - beta_i) with the reference's batch-averaged norms; sub-VP uses
    ``1 - beta_i`` of its own beta schedule (the reference crashes there). ALD: ``2 alpha_i (r sigma(t))^2``."""
    t = torch.tensor([1.0, 0.5, 0.2, 1e-3], dtype=torch.float64)
    i = (t * (sde.N - 1) / sde.T).long()
    alpha = 1.0 - sde.discrete_betas[i] if isinstance(sde, (VPSDE, subVPSDE)) else torch.ones(4, dtype=torch.float64)
    assert torch.equal(langevin_alpha(sde, t, t), alpha)

    x = torch.randn(4, 3, 2, generator=seeded(40), dtype=torch.float64)
    score = torch.randn(4, 3, 2, generator=seeded(41), dtype=torch.float64)
    noise = torch.randn(4, 3, 2, generator=seeded(42), dtype=torch.float64)
    snr = 0.2
    eps = LangevinCorrector(sde, lambda x, t: x, snr, 1).step_size(x, t, score, noise)
    expected = 2 * alpha * (snr * noise.flatten(1).norm(dim=1).mean() / score.flatten(1).norm(dim=1).mean()).square()
    torch.testing.assert_close(eps, expected, rtol=1e-12, atol=0)

    ald = AnnealedLangevinDynamics(sde, lambda x, t: x, snr, 1).step_size(x, t, score, noise)
    torch.testing.assert_close(ald, 2 * alpha * (snr * sde.marginal_prob(x, t)[1]).square(), rtol=1e-12, atol=0)


def test_ancestral_steps_are_the_reference_formulas_and_the_gaussian_posterior():
    """VP: DDPM, Ho et al. (2020) eq. (11): ``(x + beta_i s) / sqrt(1 - beta_i) + sqrt(beta_i) z``. VE: SMLD,
    [SDE] eq. (47). Sub-VP (defect 3): the Gaussian posterior ``q(x_s | x_t, x0_hat)``, ``s = t - T/N``,
    checked against textbook Gaussian conditioning of the joint law of ``(x_s, x_t)`` given ``x0``."""
    t = torch.tensor([1.0, 0.5, 0.2, 1e-3], dtype=torch.float64)
    x = 2.0 * torch.randn(4, 2, generator=seeded(50), dtype=torch.float64)
    z = torch.randn(4, 2, generator=seeded(51), dtype=torch.float64)
    for sde in (VPSDE(N=100), VESDE(N=100), subVPSDE(N=100)):
        score = RING.score_fn(sde)(x, t)
        out, out_mean = AncestralSamplingPredictor(sde, RING.score_fn(sde), generator=seeded(51)).update_fn(x, t)
        i = (t * (sde.N - 1) / sde.T).long()
        if isinstance(sde, VPSDE):
            beta = sde.discrete_betas[i][:, None]
            mean, std = (x + beta * score) / torch.sqrt(1.0 - beta), beta.sqrt()
        elif isinstance(sde, VESDE):
            sigma = sde.discrete_sigmas[i][:, None]
            adjacent = torch.where(i[:, None] == 0, 0.0, sde.discrete_sigmas[(i - 1).clamp(min=0)][:, None])
            mean = x + (sigma**2 - adjacent**2) * score
            std = torch.sqrt(adjacent**2 * (sigma**2 - adjacent**2) / sigma**2)
        else:
            s = (t - sde.T / sde.N).clamp(min=0.0)
            (alpha_t, sigma_t), (alpha_s, sigma_s) = sde.marginal_coeffs(t), sde.marginal_coeffs(s)
            a = (alpha_t / alpha_s)[:, None]
            x0_hat = (x + (sigma_t**2)[:, None] * score) / alpha_t[:, None]
            cov = a * (sigma_s**2)[:, None]  # Cov(x_s, x_t | x0)
            mean = alpha_s[:, None] * x0_hat + cov / (sigma_t**2)[:, None] * (x - alpha_t[:, None] * x0_hat)
            std = torch.sqrt((sigma_s**2)[:, None] - cov**2 / (sigma_t**2)[:, None])
        torch.testing.assert_close(out_mean, mean, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(out, mean + std * z, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------------------------- sampler semantics
def test_denoise_returns_the_noise_free_mean_of_the_last_update():
    """Same seed, denoise on and off: the outputs differ by exactly the last update's noise, ``G z`` for the
    reverse-diffusion predictor (VP at t = eps: ``G = sqrt(beta_0)``) and ``sqrt(2 eps_ald) z`` for
    corrector-only ALD; (x - x_mean) / scale is checked to be standard normal (mean and variance at 4 SE)."""
    sde = make_sde("vp", N=50)
    n, d = 4000, 2
    t_eps = torch.full((1,), 1e-3, dtype=torch.float64)
    ald_eps = 2 * langevin_alpha(sde, t_eps, t_eps) * (0.16 * sde.marginal_prob(t_eps[:, None], t_eps)[1]) ** 2
    for predictor, corrector, scale in [
        ("reverse_diffusion", "none", sde.discrete_betas[0].sqrt().item()),
        ("none", "ald", torch.sqrt(2 * ald_eps).item()),
    ]:
        kw = dict(predictor=predictor, corrector=corrector, dtype=torch.float64)
        noisy, _ = pc_sample(sde, RING.score_fn(sde), (n, d), denoise=False, generator=seeded(60), **kw)
        clean, _ = pc_sample(sde, RING.score_fn(sde), (n, d), denoise=True, generator=seeded(60), **kw)
        unit = (noisy - clean) / scale
        assert abs(unit.mean().item()) <= 4 / math.sqrt(n * d)
        assert abs(unit.var().item() - 1.0) <= 4 * math.sqrt(2 / (n * d))


def test_probability_flow_is_deterministic_and_float64_agrees_with_float32():
    sde = make_sde("vp", N=100)
    x_init = sde.prior_sampling((500, 2), generator=seeded(70), dtype=torch.float64)
    kw = dict(corrector="none", probability_flow=True)
    x64, _ = pc_sample(sde, RING.score_fn(sde), (500, 2), x_init=x_init, generator=seeded(1), **kw)
    again, _ = pc_sample(sde, RING.score_fn(sde), (500, 2), x_init=x_init, generator=seeded(2), denoise=False, **kw)
    x32, _ = pc_sample(sde, RING.score_fn(sde), (500, 2), x_init=x_init.float(), **kw)
    assert x64.dtype == torch.float64 and x32.dtype == torch.float32
    assert torch.equal(x64, again)
    torch.testing.assert_close(x32.double(), x64, rtol=0, atol=1e-4)


@pytest.mark.parametrize("predictor", ["reverse_diffusion", "euler_maruyama", "ancestral_sampling"])
@pytest.mark.parametrize("corrector", ["langevin", "ald"])
def test_same_seed_same_samples(predictor, corrector):
    sde = make_sde("ve", N=20)
    run = lambda seed, progress=False: pc_sample(  # noqa: E731
        sde, RING.score_fn(sde), (64, 2), predictor=predictor, corrector=corrector,
        generator=seeded(seed), progress=progress, device="cpu",
    )[0]
    first = run(80)
    assert torch.equal(first, run(80, progress=True))
    assert not torch.allclose(first, run(81))


@pytest.mark.parametrize(
    "predictor, corrector, n_steps, expected",
    [
        ("reverse_diffusion", "langevin", 2, 75),
        ("euler_maruyama", "langevin", 0, 25),
        ("ancestral_sampling", "none", 1, 25),
        ("none", "ald", 3, 75),
        ("none", "none", 1, 0),
    ],
)
def test_nfe_counts_the_score_evaluations_made(predictor, corrector, n_steps, expected):
    sde = make_sde("vp", N=25)  # N > beta_max: DDPM's 25-step tables are defined
    calls = []
    score = RING.score_fn(sde)

    def counted(x, t):
        calls.append(1)
        return score(x, t)

    _, nfe = pc_sample(sde, counted, (8, 2), predictor=predictor, corrector=corrector, n_steps=n_steps, generator=seeded(0))
    assert nfe == len(calls) == expected


# --------------------------------------------------------------------------------------------- registries
@register_predictor(name="test_pc_halving")
class HalvingPredictor(Predictor):
    """Records its calls and halves x: N steps from ones give 2^-N exactly."""

    calls: list[tuple[str, float]] = []

    def update_fn(self, x, t):
        HalvingPredictor.calls.append(("predictor", t[0].item()))
        assert torch.all(t == t[0])
        return x / 2, x / 2


@register_corrector(name="test_pc_recording")
class RecordingCorrector(Corrector):
    def update_fn(self, x, t):
        HalvingPredictor.calls.append(("corrector", t[0].item()))
        return x, x


def test_user_registered_predictor_and_corrector_run_corrector_first_on_the_reference_grid():
    HalvingPredictor.calls.clear()
    sde = make_sde("vp", N=5)
    x, nfe = pc_sample(
        sde, RING.score_fn(sde), (3, 2), predictor="test_pc_halving", corrector="test_pc_recording",
        eps=0.1, x_init=torch.ones(3, 2),
    )
    assert nfe == 0
    assert torch.equal(x, torch.full((3, 2), 2.0**-5))
    grid = torch.linspace(1.0, 0.1, 5).tolist()
    expected = [(kind, t) for t in grid for kind in ("corrector", "predictor")]
    assert [k for k, _ in HalvingPredictor.calls] == [k for k, _ in expected]
    assert [t for _, t in HalvingPredictor.calls] == pytest.approx([t for _, t in expected], abs=1e-7)


def test_registries_list_and_reject():
    assert {"euler_maruyama", "reverse_diffusion", "ancestral_sampling", "none"} <= set(available_predictors())
    assert {"langevin", "ald", "none"} <= set(available_correctors())
    assert "langevin_batch_mean" not in available_correctors()  # "langevin" is that rule
    assert get_predictor("test_pc_halving") is HalvingPredictor
    assert get_corrector("langevin") is LangevinCorrector
    with pytest.raises(ValueError, match="predictor must be one of .*'reverse_diffusion'"):
        get_predictor("ReverseDiffusion")
    with pytest.raises(ValueError, match="corrector must be one of .*'langevin'"):
        get_corrector("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_predictor(name="reverse_diffusion")(HalvingPredictor)
    with pytest.raises(ValueError, match="subclass of Corrector"):
        register_corrector(name="test_pc_not_a_corrector")(HalvingPredictor)
    assert register_corrector(name="test_pc_recording")(RecordingCorrector) is RecordingCorrector  # idempotent

    @register_predictor
    class TestPcBarePredictor(HalvingPredictor):
        pass

    assert get_predictor("TestPcBarePredictor") is TestPcBarePredictor


# --------------------------------------------------------------------------------------------- validation
def _forbidden_score(x, t):
    raise AssertionError("the score was evaluated before the arguments were validated")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(predictor="nope"), "predictor must be one of .*'reverse_diffusion'"),
        (dict(corrector="Langevin"), "corrector must be one of .*'langevin'"),
        (dict(eps=0.0), "eps"),
        (dict(eps=1.0), "eps"),
        (dict(eps=-0.5), "eps"),
        (dict(eps="small"), "eps"),
        (dict(snr=0.0), "snr"),
        (dict(snr=-0.16), "snr"),
        (dict(snr=float("nan")), "snr"),
        (dict(n_steps=-1), "n_steps"),
        (dict(n_steps=1.5), "n_steps"),
        (dict(n_steps=True), "n_steps"),
        (dict(x_init=torch.zeros(3, 2)), "x_init"),
        (dict(x_init=[[0.0, 0.0]] * 4), "x_init"),
        (dict(shape=(0, 2)), "shape"),
        (dict(shape=()), "shape"),
        (dict(shape=(4.0, 2)), "shape"),
        (dict(shape=None), "shape"),
        (dict(predictor="ancestral_sampling", probability_flow=True), "probability_flow"),
        (dict(sde=CubicDriftSDE(N=10), predictor="ancestral_sampling"), "LinearSDE"),
        (dict(sde="vpsde"), "sde"),
    ],
)
def test_bad_arguments_raise_before_any_work(kwargs, match):
    args = dict(sde=make_sde("vp", N=10), score_fn=_forbidden_score, shape=(4, 2))
    args.update(kwargs)
    generator = seeded(90)
    state = generator.get_state()
    with pytest.raises(ValueError, match=match):
        pc_sample(args.pop("sde"), args.pop("score_fn"), args.pop("shape"), generator=generator, **args)
    assert torch.equal(generator.get_state(), state)
