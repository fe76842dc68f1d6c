"""Proofs of ``train_lib.losses`` and ``train_lib.time_sampling`` against closed forms.

The central oracle: for Gaussian data ``x0 ~ N(mu, s^2 I_D)`` and a kernel ``N(alpha x0, sigma^2 I)`` the exact score
is ``s*(x) = -(x - alpha mu) / v`` with ``v = alpha^2 s^2 + sigma^2``, and per coordinate
``sigma s* + z = z (1 - sigma^2 / v) - sigma alpha (x0 - mu) / v ~ N(0, q)`` with ``q = alpha^2 s^2 / v``
(``(1 - sigma^2/v)^2 + sigma^2 alpha^2 s^2 / v^2 = alpha^2 s^2 (alpha^2 s^2 + sigma^2) / v^2``). Hence
``||sigma s* + z||^2 = q chi^2_D``, and every per-sample loss of the exact score is ``c w(t) q(t) chi^2_D`` with
``c = 1/D`` (``reduce_mean``) or ``1/2`` (half sum), ``w = 1`` ([SDE] weighting), ``g^2 / sigma^2`` (likelihood
weighting) or ``Z / (T - eps)`` (importance sampling, ``t ~ g^2 / (Z sigma^2)``). Its mean ``c D E[w q]`` is the
irreducible minimum of the loss and its variance is ``c^2 (D^2 + 2D) E[w^2 q^2] - mean^2``; both are integrated
over ``t`` with ``scipy.integrate.quad`` (continuous) or summed over the ``N`` steps (discrete). Monte-Carlo
means are compared with ``K_SE = 4`` standard errors computed from the closed-form variance (the likelihood-weighted
uniform-``t`` loss has a ``1/t`` tail, so a standard error taken from its own samples is unreliable; measured over
30 seeds the closed-form-SE deviations lay in [-2.2, 2.8]).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.integrate import quad
from torch import nn

import models
import sde_lib
import train_lib
from configs import load_config
from train_lib.time_sampling import LikelihoodTimeSampler

K_SE = 4.0  # Monte-Carlo tolerance in standard errors (two-sided normal tail 6e-5 per comparison)
D, MU, S2 = 3, 0.7, 0.25  # Gaussian data N(MU, S2 I_D)
EPS = 1e-5  # the reference's smallest training time
N_MC = 200_000  # samples per Monte-Carlo comparison
CONTINUOUS_SDES = {"vp": sde_lib.VPSDE, "subvp": sde_lib.subVPSDE, "ve": sde_lib.VESDE}
# break points for quad: g^2 / sigma^2 ~ 1 / t near t = 0 for VP and sub-VP
QUAD_POINTS = (EPS, 1e-4, 1e-3, 1e-2, 0.1, 0.3)


def data() -> sde_lib.GaussianMixture:
    return sde_lib.GaussianMixture.gaussian(torch.full((D,), MU), S2)


def sample_data(n: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    return data().sample(n, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class ExactScoreNet(nn.Module):
    """A "network" that, read through :class:`models.ScoreModel`'s continuous-time parameterizations, gives the exact score.

    VP / sub-VP: labels ``t * 999`` and output ``-sigma(t) s*`` (noise prediction); VE: labels ``sigma(t)`` and
    output ``s*``. Times are recovered from the labels, so a wrong label convention in the loss breaks the test.
    """

    def __init__(self, sde: sde_lib.SDE):
        super().__init__()
        self.sde = sde
        self.score = data().score_fn(sde)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if isinstance(self.sde, sde_lib.VESDE):
            log_ratio = math.log(self.sde.sigma_max / self.sde.sigma_min)
            t = (torch.log(labels / self.sde.sigma_min) / log_ratio).clamp(0.0, self.sde.T)
            return self.score(x, t)
        t = labels / models.VP_CONTINUOUS_LABEL_SCALE
        return -self.sde.marginal_coeffs(t)[1][:, None] * self.score(x, t)


def gaussian_score(x: torch.Tensor, mean_coeff: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Exact score of ``alpha x0 + std z`` for ``x0 ~ N(MU, S2 I)``, per-sample ``alpha``, ``std`` of shape ``(B,)``."""
    alpha, std = mean_coeff[:, None], std[:, None]
    return -(x - alpha * MU) / (alpha**2 * S2 + std**2)


class ExactDDPMNet(nn.Module):
    """Noise prediction ``-sqrt(1 - alpha_bar_i) s*`` at DDPM step index ``i`` (the label)."""

    def __init__(self, sde: sde_lib.VPSDE):
        super().__init__()
        self.sde = sde

    def forward(self, x, labels):
        alpha = self.sde.sqrt_alphas_cumprod.to(x)[labels]
        std = self.sde.sqrt_1m_alphas_cumprod.to(x)[labels]
        return -std[:, None] * gaussian_score(x, alpha, std)


class ExactSMLDNet(nn.Module):
    """The exact score at noise level ``sigma`` of SMLD label ``i``, index 0 being ``sigma_max``."""

    def __init__(self, sde: sde_lib.VESDE):
        super().__init__()
        self.sigmas_descending = torch.flip(sde.discrete_sigmas, dims=(0,))

    def forward(self, x, labels):
        sigma = self.sigmas_descending.to(x)[labels]
        return gaussian_score(x, torch.ones_like(sigma), sigma)


# ---------------------------------------------------------------------------- closed forms


def _coeffs(sde, t: float) -> tuple[float, float, float]:
    """``(q, g^2 / sigma^2)`` at time ``t``, with ``q = alpha^2 s^2 / (alpha^2 s^2 + sigma^2)``."""
    tt = torch.tensor([t], dtype=torch.float64)
    alpha, sigma = (c.item() for c in sde.marginal_coeffs(tt))
    g2 = sde.diffusion_coeff(tt).item() ** 2
    return alpha**2 * S2 / (alpha**2 * S2 + sigma**2), g2 / sigma**2


def _integrate(f, T: float) -> float:
    points = (*QUAD_POINTS, T)
    return sum(quad(f, a, b, epsabs=0.0, epsrel=1e-11, limit=200)[0] for a, b in zip(points[:-1], points[1:]))


def continuous_moments(sde, mode: str, reduce_mean: bool) -> tuple[float, float]:
    """Closed-form mean and variance of the per-sample DSM loss of the exact score (module docstring).

    ``mode``: ``'plain'`` (t ~ U), ``'likelihood'`` (t ~ U, weight g^2/sigma^2), ``'importance'`` (t ~ g^2/(Z sigma^2),
    weight Z / (T - eps)).
    """
    c = 1.0 / D if reduce_mean else 0.5
    uniform_density = 1.0 / (sde.T - EPS)
    sampler = LikelihoodTimeSampler(sde, EPS)

    def weight_and_density(t):
        q, ratio = _coeffs(sde, t)
        if mode == "plain":
            return q, 1.0, uniform_density
        if mode == "likelihood":
            return q, ratio, uniform_density
        return q, sampler.uniform_weight, ratio / sampler.normalizer

    def first(t):
        q, w, p = weight_and_density(t)
        return w * q * p

    def second(t):
        q, w, p = weight_and_density(t)
        return (w * q) ** 2 * p

    mean = c * D * _integrate(first, sde.T)
    variance = c**2 * (D**2 + 2 * D) * _integrate(second, sde.T) - mean**2
    return mean, variance


def discrete_moments(q: torch.Tensor, reduce_mean: bool) -> tuple[float, float]:
    """Mean and variance of ``c q_i chi^2_D`` with ``i`` uniform over the ``N`` steps."""
    c = 1.0 / D if reduce_mean else 0.5
    mean = c * D * q.mean().item()
    return mean, c**2 * (D**2 + 2 * D) * q.square().mean().item() - mean**2


def assert_mc_mean(losses: torch.Tensor, mean: float, variance: float) -> float:
    """Monte-Carlo mean within ``K_SE`` closed-form standard errors; returns the deviation in standard errors."""
    deviation = (losses.mean().item() - mean) / math.sqrt(variance / losses.numel())
    assert abs(deviation) < K_SE, f"MC mean {losses.mean().item():.6g} vs closed form {mean:.6g}: {deviation:.2f} SE"
    return deviation


def assert_mc_variance(losses: torch.Tensor, variance: float) -> None:
    """Sample variance within ``K_SE`` standard errors of the closed form (SE from the samples' 4th moment; only
    for the bounded-weight losses, whose fourth moment is finite and well estimated)."""
    centred_sq = (losses - losses.mean()).square()
    se = centred_sq.std().item() / math.sqrt(losses.numel())
    assert abs(centred_sq.mean().item() - variance) < K_SE * se, (centred_sq.mean().item(), variance, se)


MODES = {  # mode -> (likelihood_weighting, importance_weighting)
    "plain": (False, False),
    "likelihood": (True, False),
    "importance": (True, True),
}


def exact_losses(sde, mode: str, reduce_mean: bool = True, seed: int = 1) -> torch.Tensor:
    likelihood, importance = MODES[mode]
    loss_fn = train_lib.get_sde_loss_fn(
        sde, train=False, reduce_mean=reduce_mean, likelihood_weighting=likelihood,
        importance_weighting=importance, eps=EPS,
    )  # fmt: skip
    with torch.no_grad():
        return loss_fn(ExactScoreNet(sde), sample_data(N_MC, seed=100 + seed), gen(seed), per_example=True)


# ---------------------------------------------------------------------------- (1) continuous DSM minimum


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("sde_name", list(CONTINUOUS_SDES))
def test_dsm_loss_of_exact_score_is_the_irreducible_minimum(sde_name, mode):
    """E[loss] of the exact score = c D E_t[w q] (module docstring), by quad; MC within K_SE closed-form SEs."""
    sde = CONTINUOUS_SDES[sde_name]()
    losses = exact_losses(sde, mode)
    mean, variance = continuous_moments(sde, mode, reduce_mean=True)
    assert_mc_mean(losses, mean, variance)
    if mode != "likelihood" or sde_name == "ve":  # bounded weights: the variance itself is checkable
        assert_mc_variance(losses, variance)


@pytest.mark.parametrize("mode", list(MODES))
def test_reduce_mean_false_is_half_the_sum(mode):
    """``reduce_mean=False`` gives ``D / 2`` times the per-coordinate mean (same draws), as in the reference."""
    sde = sde_lib.subVPSDE()
    likelihood, importance = MODES[mode]
    kwargs = dict(likelihood_weighting=likelihood, importance_weighting=importance)
    x, model = sample_data(64, seed=3), ExactScoreNet(sde)
    mean_loss = train_lib.get_sde_loss_fn(sde, False, reduce_mean=True, **kwargs)(model, x, gen(4), per_example=True)
    half_sum = train_lib.get_sde_loss_fn(sde, False, reduce_mean=False, **kwargs)(model, x, gen(4), per_example=True)
    torch.testing.assert_close(half_sum, 0.5 * D * mean_loss, rtol=1e-12, atol=0)


def test_dsm_integrand_q_is_the_expected_squared_residual():
    """The integrand q(t) = alpha^2 s^2 / v equals E||sigma s* + z||^2 / D computed by 2-D Gauss-Hermite quadrature."""
    sde = sde_lib.VPSDE()
    nodes, weights = np.polynomial.hermite_e.hermegauss(40)  # E over N(0, 1) of polynomials of degree <= 79: exact
    weights = weights / weights.sum()
    for t in (1e-3, 0.1, 0.5, 1.0):
        q, _ = _coeffs(sde, t)
        alpha, sigma = (c.item() for c in sde.marginal_coeffs(torch.tensor([t], dtype=torch.float64)))
        x0 = MU + math.sqrt(S2) * nodes[:, None]  # x0 nodes down, z nodes across
        x = alpha * x0 + sigma * nodes[None, :]
        score = -(x - alpha * MU) / (alpha**2 * S2 + sigma**2)
        expectation = (weights[:, None] * weights[None, :] * (sigma * score + nodes[None, :]) ** 2).sum()
        assert math.isclose(expectation, q, rel_tol=1e-12)


@pytest.mark.parametrize("sde_name", ["vp", "subvp"])
def test_importance_sampling_keeps_the_mean_and_cuts_the_variance(sde_name):
    """Both likelihood-weighted estimators match the same closed-form mean (test above); the closed-form variance
    ratio is > 500 at eps = 1e-5 (VP 563, sub-VP 754) and the measured one on 2e5 samples is > 50 (the uniform
    estimate's sample variance is itself heavy-tailed: 0.28x to 2.9x its true value over 30 seeds)."""
    sde = CONTINUOUS_SDES[sde_name]()
    _, variance_uniform = continuous_moments(sde, "likelihood", reduce_mean=True)
    _, variance_importance = continuous_moments(sde, "importance", reduce_mean=True)
    assert variance_uniform / variance_importance > 500
    measured = exact_losses(sde, "likelihood").var().item() / exact_losses(sde, "importance").var().item()
    assert measured > 50, measured


def test_importance_sampling_is_uniform_for_ve():
    """For the reference VESDE g^2 / sigma^2 = 2 log(sigma_max / sigma_min) is constant: the importance-sampled loss
    equals the likelihood-weighted one draw by draw (same seed)."""
    sde = sde_lib.VESDE()
    x, model = sample_data(512, seed=5), ExactScoreNet(sde)
    losses = {
        mode: train_lib.get_sde_loss_fn(sde, False, likelihood_weighting=True, importance_weighting=imp)(
            model, x, gen(6), per_example=True
        )
        for mode, imp in (("likelihood", False), ("importance", True))
    }
    torch.testing.assert_close(losses["importance"], losses["likelihood"], rtol=1e-10, atol=0)


# ---------------------------------------------------------------------------- importance sampler


def _sampler_sdes():
    return {
        "vp-linear": sde_lib.VPSDE(),
        "vp-cosine": sde_lib.VPSDE(schedule="cosine"),
        "subvp-linear": sde_lib.subVPSDE(beta_min=0.2, beta_max=15.0),
        "subvp-cosine": sde_lib.subVPSDE(schedule="cosine"),
        "ve": sde_lib.VESDE(),
        "ve-exact": sde_lib.VESDE(exact_marginal=True, sigma_min=0.02, sigma_max=30.0),
        "edm": sde_lib.EDMSDE(),
    }


@pytest.mark.parametrize("name", list(_sampler_sdes()))
def test_time_sampler_cdf_is_the_integral_of_g2_over_sigma2(name):
    """F(t) and Z against quad of g(t)^2 / sigma(t)^2 taken from the SDE itself; F(F^{-1}(u)) = u; samples pass a
    Kolmogorov-Smirnov test against F (p > 1e-3, fixed seed)."""
    sde = _sampler_sdes()[name]
    sampler = LikelihoodTimeSampler(sde, EPS)
    ratio = lambda t: _coeffs(sde, t)[1]  # noqa: E731
    assert math.isclose(sampler.normalizer, _integrate(ratio, sde.T), rel_tol=1e-9)
    for t in (1e-4, 0.05, 0.5, 0.9 * sde.T):
        points = [p for p in (*QUAD_POINTS, t) if p <= t]
        partial = sum(quad(ratio, a, b, epsrel=1e-11, limit=200)[0] for a, b in zip(points[:-1], points[1:]))
        cdf_t = sampler.cdf(torch.tensor([t], dtype=torch.float64)).item()
        assert math.isclose(cdf_t, partial / sampler.normalizer, rel_tol=1e-9)
    u = torch.rand(10_000, generator=gen(0), dtype=torch.float64)
    torch.testing.assert_close(sampler.cdf(sampler.icdf(u)), u, rtol=0, atol=1e-10)
    bounds = sampler.icdf(torch.tensor([0.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(bounds, torch.tensor([EPS, sde.T], dtype=torch.float64), rtol=1e-12, atol=0)
    samples = sampler.icdf(torch.rand(20_000, generator=gen(1), dtype=torch.float64))
    cdf = lambda t: sampler.cdf(torch.as_tensor(t, dtype=torch.float64)).numpy()  # noqa: E731
    assert stats.kstest(samples.numpy(), cdf).pvalue > 1e-3


# ---------------------------------------------------------------------------- (2) discrete losses


def test_ddpm_loss_of_exact_noise_prediction_is_the_irreducible_minimum():
    """q_i = alpha_bar_i s^2 / (alpha_bar_i s^2 + 1 - alpha_bar_i), i uniform over the N DDPM steps."""
    sde = sde_lib.VPSDE()
    ab = sde.alphas_cumprod
    q = ab * S2 / (ab * S2 + 1.0 - ab)
    loss_fn = train_lib.get_ddpm_loss_fn(sde, train=False, reduce_mean=True)
    losses = loss_fn(ExactDDPMNet(sde), sample_data(N_MC, seed=7), gen(8), per_example=True)
    mean, variance = discrete_moments(q, reduce_mean=True)
    assert_mc_mean(losses, mean, variance)
    assert_mc_variance(losses, variance)


def test_smld_loss_of_exact_score_is_the_irreducible_minimum():
    """q_i = s^2 / (s^2 + sigma_i^2), sigma_i over the N SMLD scales (label 0 = sigma_max); reduce by half sums."""
    sde = sde_lib.VESDE(sigma_min=0.01, sigma_max=5.0)
    q = S2 / (S2 + sde.discrete_sigmas**2)
    loss_fn = train_lib.get_smld_loss_fn(sde, train=False, reduce_mean=False)
    losses = loss_fn(ExactSMLDNet(sde), sample_data(N_MC, seed=9), gen(10), per_example=True)
    mean, variance = discrete_moments(q, reduce_mean=False)
    assert_mc_mean(losses, mean, variance)
    assert_mc_variance(losses, variance)


class RecordingNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.labels = []

    def forward(self, x, labels):
        self.labels.append(labels)
        return torch.zeros_like(x)


@pytest.mark.parametrize("kind", ["smld", "ddpm"])
def test_discrete_losses_label_with_step_indices(kind):
    """Labels are int64 indices in [0, N), all of them reachable; a zero network has loss D/2 (SMLD half sum of z^2)
    or 1 (DDPM mean of z^2) in expectation, checked by the per-sample closed form chi^2_D."""
    sde = sde_lib.VESDE(N=10) if kind == "smld" else sde_lib.VPSDE(beta_max=5.0, N=10)  # DDPM needs N > beta_max
    loss_fn = train_lib.get_smld_loss_fn(sde, False) if kind == "smld" else train_lib.get_ddpm_loss_fn(sde, False)
    net = RecordingNet()
    losses = loss_fn(net, sample_data(20_000, seed=11), gen(12), per_example=True)
    labels = net.labels[0]
    assert labels.dtype == torch.int64 and set(labels.tolist()) == set(range(10))
    c = 0.5 if kind == "smld" else 1.0 / D  # loss = c chi^2_D: mean c D, variance 2 D c^2
    assert_mc_mean(losses, c * D, 2 * D * c**2)


# ---------------------------------------------------------------------------- (3) training on 2-D data


@pytest.mark.parametrize("sde_name", ["vp", "ve"])
def test_training_cuts_the_loss_and_learns_the_exact_score(sde_name):
    """300 Adam steps (batch 256, nf 64, warm-up 20) of the toy MLP on the 8-Gaussian ring.

    Measured (VP / VE): loss 1.13 -> 0.357 (3.2x) / 3.24 -> 0.779 (4.2x); the sigma^2-weighted score error
    E||sigma (s_theta - s*)||^2 / D, which is the excess of the loss over its minimum, 0.83 -> 0.060 (14x) /
    2.61 -> 0.141 (19x). Asserted: loss down >= 2.5x, score error down >= 8x, and the DSM identity
    loss = minimum + score error (the exact score's loss on the same draws: 0.292 / 0.637) within a quarter of
    the score error (measured 9% / 0.4%; the cross term has mean zero and SE ~0.003 on 8192 samples).
    """
    config = load_config(f"configs/{sde_name}/toy_mlp_continuous.py")
    config.model.nf, config.model.num_layers, config.optim.warmup = 64, 2, 20
    torch.manual_seed(0)
    sde, model = sde_lib.get_sde(config), models.create_model(config)
    ring = sde_lib.GaussianMixture.ring()
    state = {
        "model": model,
        "optimizer": train_lib.get_optimizer(config, model.parameters()),
        "ema": models.ExponentialMovingAverage(model.parameters(), decay=config.model.ema_rate),
        "step": 0,
    }
    step_fn = train_lib.get_step_fn_from_config(config, sde, train=True)
    eval_loss = train_lib.get_sde_loss_fn(sde, train=False, reduce_mean=config.training.reduce_mean)
    x_eval = ring.sample(8192, generator=gen(2))

    def loss(net):
        with torch.no_grad():
            return eval_loss(net, x_eval, gen(4)).item()

    def score_error():
        g = gen(3)
        t = torch.rand(len(x_eval), generator=g) * (sde.T - EPS) + EPS
        mean, std = sde.marginal_prob(x_eval, t)
        x = mean + std[:, None] * torch.randn(x_eval.shape, generator=g)
        with torch.no_grad():
            learned = models.ScoreModel(model, sde).score(x, t)
        return (std[:, None] * (learned - ring.score_fn(sde)(x, t))).square().mean().item()

    loss_0, error_0 = loss(model), score_error()
    g = gen(1)
    for _ in range(300):
        step_fn(state, ring.sample(256, generator=g), generator=g)
    loss_1, error_1 = loss(model), score_error()
    minimum = loss(_RingExactNet(sde, ring))
    assert state["step"] == 300
    assert loss_0 / loss_1 >= 2.5, (loss_0, loss_1)
    assert error_0 / error_1 >= 8.0, (error_0, error_1)
    assert abs(loss_1 - minimum - error_1) < 0.25 * error_1, (loss_1, minimum, error_1)


class _RingExactNet(ExactScoreNet):
    def __init__(self, sde, mixture):
        nn.Module.__init__(self)
        self.sde, self.score = sde, mixture.score_fn(sde)


# ---------------------------------------------------------------------------- (4) EMA through the step fn


def _toy_state(decay: float = 0.999, lr: float = 1e-2, seed: int = 0):
    config = load_config("configs/vp/toy_mlp_continuous.py")
    config.model.nf, config.model.num_layers = 16, 1
    config.optim.lr, config.optim.warmup, config.optim.grad_clip = lr, 0, 1.0
    torch.manual_seed(seed)
    model = models.create_model(config)
    state = {
        "model": model,
        "optimizer": train_lib.get_optimizer(config, model.parameters()),
        "ema": models.ExponentialMovingAverage(model.parameters(), decay=decay),
        "step": 0,
    }
    return config, sde_lib.get_sde(config), state


def test_ema_after_k_steps_is_the_closed_form_recursion():
    """s_n = d_n s_{n-1} + (1 - d_n) theta_n, d_n = min(decay, (1 + n) / (10 + n)), s_0 = theta_0, in float64;
    decay 0.6 switches from the warm-up branch to the constant one at n = 13 (of 20 steps)."""
    config, sde, state = _toy_state(decay=0.6)
    step_fn = train_lib.get_step_fn_from_config(config, sde, train=True)
    params = lambda: [p.detach().double().clone() for p in state["model"].parameters()]  # noqa: E731
    shadow = params()
    g, x = gen(0), sample_data(128, seed=0, dtype=torch.float32)[:, :2]
    for n in range(1, 21):
        step_fn(state, x, generator=g)
        d = min(0.6, (1 + n) / (10 + n))
        shadow = [d * s + (1 - d) * p for s, p in zip(shadow, params())]
    assert state["step"] == 20 and state["ema"].num_updates == 20
    for ours, expected in zip(state["ema"].shadow_params, shadow):
        torch.testing.assert_close(ours.double(), expected, rtol=1e-5, atol=1e-6)


def test_eval_step_uses_the_ema_weights_and_restores_the_model():
    """The evaluation loss equals the loss of a copy carrying the EMA weights (same seed); the model is unchanged."""
    config, sde, state = _toy_state(decay=0.9)
    config.training.mixed_precision = "no"  # compared exactly with float32 losses; 'auto' is bf16 on AMX CPUs
    train_step = train_lib.get_step_fn_from_config(config, sde, train=True)
    eval_step = train_lib.get_step_fn_from_config(config, sde, train=False)
    x = sample_data(256, seed=1, dtype=torch.float32)[:, :2]
    for _ in range(5):
        train_step(state, x, generator=gen(2))
    before = [p.detach().clone() for p in state["model"].parameters()]
    averaged = copy.deepcopy(state["model"])
    state["ema"].copy_to(averaged.parameters())
    options = train_lib.step_fn_options(config, sde)
    options.pop("mixed_precision")
    loss_fn = train_lib.get_loss_fn(sde, False, **options)
    with torch.no_grad():
        expected = loss_fn(averaged, x, gen(3))
        raw = loss_fn(state["model"], x, gen(3))
    got = eval_step(state, x, generator=gen(3))
    assert got.item() == expected.item() and got.item() != raw.item()
    for p, q in zip(state["model"].parameters(), before):
        assert torch.equal(p, q)
    assert state["step"] == 5


# ---------------------------------------------------------------------------- (6) determinism


LOSS_CASES = {
    "dsm": lambda sde: train_lib.get_sde_loss_fn(sde, True),
    "dsm-likelihood": lambda sde: train_lib.get_sde_loss_fn(sde, True, likelihood_weighting=True),
    "dsm-importance": lambda sde: train_lib.get_sde_loss_fn(
        sde, True, likelihood_weighting=True, importance_weighting=True
    ),
    "ddpm": lambda sde: train_lib.get_ddpm_loss_fn(sde, True),
}


@pytest.mark.parametrize("case", list(LOSS_CASES))
def test_same_seed_same_loss(case):
    _, sde, state = _toy_state()
    loss_fn = LOSS_CASES[case](sde)
    x = sample_data(64, seed=0, dtype=torch.float32)[:, :2]
    a, b, c = (loss_fn(state["model"], x, gen(s)) for s in (5, 5, 6))
    assert a.item() == b.item() and a.item() != c.item()


def test_smld_same_seed_same_loss_and_training_replays():
    """SMLD loss by seed; and two identical states trained with the same seeds stay identical."""
    loss_fn = train_lib.get_smld_loss_fn(sde_lib.VESDE(), True)
    net = _LabelIgnoringNet(nn.Linear(2, 2))
    x = sample_data(64, seed=0, dtype=torch.float32)[:, :2]
    a, b, c = (loss_fn(net, x, gen(s)).item() for s in (1, 1, 2))
    assert a == b and a != c
    runs = []
    for _ in range(2):
        config, vp, state = _toy_state(seed=4)
        step_fn = train_lib.get_step_fn_from_config(config, vp, train=True)
        losses = [step_fn(state, x, generator=gen(10 + k)).item() for k in range(3)]
        runs.append((losses, [p.detach().clone() for p in state["model"].parameters()]))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(p, q) for p, q in zip(runs[0][1], runs[1][1]))


class _LabelIgnoringNet(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, labels):
        return self.net(x)


# ---------------------------------------------------------------------------- mixed precision


def test_bf16_autocast_on_cpu_matches_float32():
    """bf16 forward (8-bit mantissa): the batch loss within 1% of float32 and the gradient direction within
    cosine similarity 0.99; parameters and gradients stay float32."""
    config, sde, state = _toy_state()
    model = state["model"]
    x = data().sample(4096, generator=gen(0))[:, :2].float() * 3
    loss_fn = train_lib.get_sde_loss_fn(sde, True)

    def loss_and_grad(autocast):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = loss_fn(model, x, gen(1))
        loss.backward()
        return loss.item(), torch.cat([p.grad.flatten() for p in model.parameters()])

    (loss32, grad32), (loss16, grad16) = loss_and_grad(False), loss_and_grad(True)
    assert abs(loss16 - loss32) < 0.01 * loss32
    assert torch.nn.functional.cosine_similarity(grad16, grad32, dim=0) > 0.99
    assert grad16.dtype == torch.float32
    config.training.mixed_precision = "bf16"
    step_fn = train_lib.get_step_fn_from_config(config, sde, train=True)
    assert math.isfinite(step_fn(state, x[:256], generator=gen(2)).item()) and state["step"] == 1
    assert all(p.dtype == torch.float32 for p in model.parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 autocast with a GradScaler needs CUDA")
def test_fp16_training_on_cuda_uses_a_grad_scaler():
    config, sde, state = _toy_state()
    state["model"].cuda()
    state["optimizer"] = train_lib.get_optimizer(config, state["model"].parameters())
    state["ema"] = models.ExponentialMovingAverage(state["model"].parameters(), decay=0.999)
    config.training.mixed_precision = "fp16"
    step_fn = train_lib.get_step_fn_from_config(config, sde, train=True)
    x = sample_data(256, seed=0, dtype=torch.float32)[:, :2].cuda()
    g = torch.Generator(device="cuda").manual_seed(0)
    losses = [step_fn(state, x, generator=g).item() for _ in range(20)]
    assert all(math.isfinite(v) for v in losses) and isinstance(state["grad_scaler"], torch.amp.GradScaler)
    assert state["step"] == 20


# ---------------------------------------------------------------------------- (7) bad input


def test_bad_arguments_raise_clear_errors():
    vp, ve, subvp = sde_lib.VPSDE(), sde_lib.VESDE(), sde_lib.subVPSDE()
    with pytest.raises(ValueError, match="SMLD training needs a VESDE"):
        train_lib.get_smld_loss_fn(vp, True)
    with pytest.raises(ValueError, match="DDPM training needs a VPSDE"):
        train_lib.get_ddpm_loss_fn(subvp, True)
    with pytest.raises(ValueError, match="the 'ddpm' parameterization applies to VPSDE, got subVPSDE"):
        train_lib.get_loss_fn(subvp, True, parameterization="ddpm")
    with pytest.raises(ValueError, match="continuous-time training only; the 'ddpm' network"):
        train_lib.get_step_fn(vp, False, parameterization="ddpm", likelihood_weighting=True)
    with pytest.raises(ValueError, match="label-conditional training .* the 'smld' network trains with the smld loss"):
        train_lib.get_step_fn(ve, False, parameterization="smld", label_dropout=0.1)
    with pytest.raises(ValueError, match="needs likelihood_weighting=True"):
        train_lib.get_sde_loss_fn(vp, True, importance_weighting=True)
    with pytest.raises(ValueError, match="eps must lie in"):
        train_lib.get_sde_loss_fn(ve, True, eps=0.0)
    with pytest.raises(ValueError, match="reduce_mean must be True or False"):
        train_lib.get_sde_loss_fn(ve, True, reduce_mean="yes")
    with pytest.raises(ValueError, match="mixed_precision must be one of 'auto', 'no', 'bf16', 'fp16'"):
        train_lib.get_step_fn(vp, False, mixed_precision="fp8")
    with pytest.raises(ValueError, match="needs optimize_fn"):
        train_lib.get_step_fn(vp, True)
    with pytest.raises(ValueError, match="sde must be an sde_lib.SDE"):
        train_lib.get_sde_loss_fn("vpsde", True)
    with pytest.raises(ValueError, match="importance sampling of t is implemented for"):
        LikelihoodTimeSampler(_OtherSDE(), 1e-5)


class _OtherSDE(sde_lib.LinearSDE):
    """An Ornstein-Uhlenbeck SDE dx = -x dt + sqrt(2) dw: linear, but none of VP, sub-VP, VE."""

    def __init__(self):
        super().__init__(N=100)

    def drift_coeff(self, t):
        return -torch.ones_like(t)

    def diffusion_coeff(self, t):
        return math.sqrt(2.0) * torch.ones_like(t)

    def marginal_coeffs(self, t):
        return torch.exp(-t), torch.sqrt(-torch.expm1(-2.0 * t))


def test_bad_calls_raise_clear_errors():
    config, sde, state = _toy_state()
    loss_fn = train_lib.get_sde_loss_fn(sde, True)
    with pytest.raises(ValueError, match="batch must be a floating-point tensor"):
        loss_fn(state["model"], torch.ones(4, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="the model returned shape"):
        train_lib.get_ddpm_loss_fn(sde, True)(_LabelIgnoringNet(nn.Linear(2, 3)), torch.ones(4, 2))
    config.training.mixed_precision = "fp16"
    step_fn = train_lib.get_step_fn_from_config(config, sde, train=True)
    with pytest.raises(ValueError, match="fp16' needs a CUDA device"):
        step_fn(state, torch.ones(4, 2))
    with pytest.raises(ValueError, match="state is missing \\['ema'\\]"):
        step_fn({k: v for k, v in state.items() if k != "ema"}, torch.ones(4, 2))
