"""The score model (``models.ScoreModel``): parameterizations read from configs, EDM's preconditioning and loss, and
the refusal of continuous-time methods for step-indexed networks when a config is built.

Exact references: the coefficients of EDM's Table 1 written out in numpy; a "perfect" network that returns exactly
what each parameterization expects given the exact score of a Gaussian mixture (the score model must then give that
exact score and Tweedie's exact denoiser); and the closed-form value of EDM's loss for Gaussian data with the exact
denoiser, integrated over the log-normal noise levels by ``scipy.integrate.quad``.
"""

from __future__ import annotations

import math

import ml_collections
import numpy as np
import pytest
import torch
from scipy import integrate

import models
import sde_lib
import train_lib
from configs.toolkit_fields import add_toolkit_fields
from samplers import get_likelihood_fn, get_sampling_fn


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def config_for(sde: str, continuous: bool = True, **model_fields) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict({
        "training": {"sde": sde, "continuous": continuous},
        "model": {"beta_min": 0.1, "beta_max": 20.0, "sigma_min": 0.01, "sigma_max": 50.0, "num_scales": 100,
                  **model_fields},
        "sampling": {"method": "pc", "predictor": "reverse_diffusion", "corrector": "none", "snr": 0.16,
                     "n_steps_each": 1},
    })
    return add_toolkit_fields(config)


@pytest.mark.parametrize("sde, continuous, expected", [
    ("vpsde", True, "noise"), ("vpsde", False, "ddpm"), ("subvpsde", True, "noise"),
    ("vesde", True, "score"), ("vesde", False, "smld"),
])
def test_the_config_decides_the_parameterization_once(sde, continuous, expected):
    config = config_for(sde, continuous)
    assert models.parameterization_from_config(config, sde_lib.get_sde(config)).name == expected


def test_config_errors_name_the_field():
    config = config_for("subvpsde", continuous=False)
    with pytest.raises(ValueError, match="config.training.continuous=False: subVPSDE has no step-indexed"):
        models.parameterization_from_config(config, sde_lib.get_sde(config))
    config = config_for("vesde", parameterization="ddpm")
    with pytest.raises(ValueError, match="config.model.parameterization: the 'ddpm' parameterization applies to VPSDE"):
        models.parameterization_from_config(config, sde_lib.get_sde(config))
    config = config_for("vpsde", parameterization="edm", sigma_data=-1.0)
    with pytest.raises(ValueError, match="config.model.parameterization: sigma_data must be a finite number > 0"):
        models.parameterization_from_config(config, sde_lib.get_sde(config))
    config = config_for("vpsde", parameterization="edm", sigma_data=0.25)
    assert models.parameterization_from_config(config, sde_lib.get_sde(config)).sigma_data == 0.25


def test_step_indexed_networks_are_refused_by_continuous_time_methods_when_built():
    """``smld`` networks know N levels: ``ode`` / ``sde`` / ``adaptive`` / ``fast`` and the likelihood are refused by
    the builders with one line naming the field; ``pc`` is accepted."""
    config = config_for("vesde", continuous=False)
    sde = sde_lib.get_sde(config)
    assert callable(get_sampling_fn(config, sde, (2, 2), None, 1e-3))
    for method in ("ode", "sde", "adaptive", "fast"):
        config.sampling.method = method
        with pytest.raises(ValueError, match=f"config.sampling.method='{method}' evaluates the score at arbitrary times"):
            get_sampling_fn(config, sde, (2, 2), None, 1e-3)
    with pytest.raises(ValueError, match="the likelihood .* knows only the N=100 noise levels"):
        get_likelihood_fn(sde, None, parameterization="smld")


# ---------------------------------------------------------------------------------------------- EDM
def test_edm_coefficients_are_those_of_the_paper():
    """Karras et al. 2022, Table 1: c_skip, c_out, c_in, c_noise at several sigma (float64, to the last bits)."""
    sigma_data = 0.5
    sigma = np.array([0.002, 0.02, 0.3, 0.5, 1.0, 7.5, 80.0])
    expected = (
        sigma_data**2 / (sigma**2 + sigma_data**2),
        sigma * sigma_data / np.sqrt(sigma**2 + sigma_data**2),
        1.0 / np.sqrt(sigma_data**2 + sigma**2),
        0.25 * np.log(sigma),
    )
    got = models.get_parameterization("edm", sigma_data=sigma_data).coefficients(torch.as_tensor(sigma))
    for value, reference in zip(got, expected):
        np.testing.assert_allclose(value.numpy(), reference, rtol=1e-15, atol=0)


def ring() -> sde_lib.GaussianMixture:
    return sde_lib.GaussianMixture.ring()


class PerfectEDMNetwork(torch.nn.Module):
    """``F`` such that the preconditioned ``D`` is the exact denoiser of a mixture under ``sde``: it reads
    ``sigma = exp(4 c_noise)`` and ``x~ = input / c_in``, and returns ``(D*(x~) - c_skip x~) / c_out``."""

    def __init__(self, mixture: sde_lib.GaussianMixture, sde, parameterization):
        super().__init__()
        self.mixture, self.sde, self.parameterization = mixture, sde, parameterization

    def exact_denoiser(self, scaled_x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        # the scaled marginal x(0) + sigma z is that of VE's exact-marginal SDE at std = sigma: Tweedie there
        score = self.mixture.score_fn(FixedSigma(sigma))(scaled_x, torch.zeros_like(sigma))
        return scaled_x + sigma[:, None].square() * score

    def forward(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        sigma = torch.exp(4 * labels)
        c_skip, c_out, c_in, _ = self.parameterization.coefficients(sigma)
        scaled_x = inputs / c_in[:, None]
        return (self.exact_denoiser(scaled_x, sigma) - c_skip[:, None] * scaled_x) / c_out[:, None]


class FixedSigma(sde_lib.LinearSDE):
    """A "linear SDE" whose kernel at every time is ``x(0) + sigma z`` for given per-sample ``sigma``."""

    def __init__(self, sigma: torch.Tensor):
        super().__init__(N=1)
        self.sigma_values = sigma

    def drift_coeff(self, t):
        return torch.zeros_like(t)

    def diffusion_coeff(self, t):
        return torch.ones_like(t)

    def marginal_coeffs(self, t):
        return torch.ones_like(t), self.sigma_values.to(t)


@pytest.mark.parametrize("sde", [sde_lib.VPSDE(), sde_lib.subVPSDE(), sde_lib.VESDE()], ids=["vp", "subvp", "ve"])
def test_edm_preconditioning_of_a_perfect_network_gives_the_exact_score_and_denoiser(sde):
    parameterization = models.get_parameterization("edm")
    mixture = ring()
    score_model = models.ScoreModel(PerfectEDMNetwork(mixture, sde, parameterization), sde, parameterization)
    g = gen(1)
    t = 0.02 + 0.98 * torch.rand(32, generator=g, dtype=torch.float64)
    x = 3 * torch.randn(32, 2, generator=g, dtype=torch.float64)
    exact = mixture.score_fn(sde)(x, t)
    torch.testing.assert_close(score_model.score(x, t), exact, rtol=1e-9, atol=1e-10)
    alpha, std = sde.marginal_coeffs(t)
    torch.testing.assert_close(score_model.denoise(x, t), (x + std[:, None] ** 2 * exact) / alpha[:, None],
                               rtol=1e-9, atol=1e-10)


def test_edm_loss_with_the_exact_denoiser_matches_its_closed_form():
    """Gaussian data ``N(mu, s^2 I)``: the exact denoiser's error has per-coordinate mean square
    ``s^2 sigma^2 / (s^2 + sigma^2)``, so the loss (mean over coordinates) is ``E_sigma[lambda(sigma) s^2 sigma^2 /
    (s^2 + sigma^2)]`` over ``ln sigma ~ N(P_mean, P_std^2)`` (quadrature). The Monte-Carlo mean of 20000 samples
    lies within 4 standard errors (from the per-sample spread)."""
    s, mu, dim, n = 0.7, 0.3, 4, 20000
    data = sde_lib.GaussianMixture.gaussian(torch.full((dim,), mu, dtype=torch.float64),
                                            torch.full((dim,), s * s, dtype=torch.float64))
    sde = sde_lib.VESDE()
    parameterization = models.get_parameterization("edm", sigma_data=0.5)
    network = PerfectEDMNetwork(data, sde, parameterization)
    loss_fn = train_lib.get_edm_loss_fn(sde, train=False, reduce_mean=True, parameterization=parameterization)
    x0 = data.sample(n, generator=gen(2), dtype=torch.float64)
    losses = loss_fn(network, x0, gen(3), per_example=True)

    def integrand(z: float) -> float:
        sigma = math.exp(-1.2 + 1.2 * z)
        weight = (sigma**2 + 0.25) / (sigma * 0.5) ** 2
        return weight * s**2 * sigma**2 / (s**2 + sigma**2) * math.exp(-z * z / 2) / math.sqrt(2 * math.pi)

    expected = integrate.quad(integrand, -12, 12, epsabs=1e-12)[0]
    se = losses.std().item() / math.sqrt(n)
    assert abs(losses.mean().item() - expected) <= 4 * se, f"MC {losses.mean().item():.5f} vs {expected:.5f} (se {se:.5f})"


def test_get_loss_fn_dispatches_on_the_objective():
    sde = sde_lib.VPSDE()
    network = models.MLPScoreNet(2, hidden_dim=16, embedding_type="positional")
    x = torch.randn(8, 2, generator=gen(4))
    edm = train_lib.get_loss_fn(sde, False, parameterization="edm")(network, x, gen(5))
    direct = train_lib.get_edm_loss_fn(sde, False, reduce_mean=False)(network, x, gen(5))
    assert torch.equal(edm, direct)
    with pytest.raises(ValueError, match="continuous-time training only; the 'edm' network"):
        train_lib.get_loss_fn(sde, False, parameterization="edm", likelihood_weighting=True)
    with pytest.raises(ValueError, match="the EDM loss trains the 'edm' parameterization, got 'noise'"):
        train_lib.get_edm_loss_fn(sde, False, parameterization="noise")


# ---------------------------------------------------------------------------------------------- EDM from a config
def test_the_edm_method_of_a_config_is_edm_sample():
    """``sampling.method = 'edm'`` with ``nfe = 9``: 5 noise levels, 9 evaluations, exactly ``edm_sample``'s samples
    with the same generator (exact score of the ring, EDM's SDE)."""
    from samplers import edm_sample

    config = config_for("edm", parameterization="edm", sigma_min=0.002, sigma_max=80)
    config.sampling.method, config.sampling.nfe, config.sampling.s_churn = "edm", 9, 5.0
    sde = sde_lib.get_sde(config)
    exact = ring().score_fn(sde)
    fn = get_sampling_fn(config, sde, (64, 2), None, sde.sampling_eps, score_fn_factory=lambda score_model: exact)
    got, nfe = fn(torch.nn.Identity(), generator=gen(6))
    expected, expected_nfe = edm_sample(sde, exact, (64, 2), steps=5, S_churn=5.0, eps=0.002, generator=gen(6))
    assert nfe == expected_nfe == 9 and torch.equal(got, expected)
    config.sampling.rho = -1.0
    with pytest.raises(ValueError, match="rho"):
        get_sampling_fn(config, sde, (64, 2), None, sde.sampling_eps)


def test_the_edm_sde_defaults_to_the_edm_parameterization():
    config = config_for("edm", sigma_min=0.002, sigma_max=80)
    sde = sde_lib.get_sde(config)
    assert models.parameterization_from_config(config, sde).name == "edm"
    assert sde.sampling_eps == 0.002


def test_halflife_ema_from_the_config_follows_edm_rule():
    """``model.ema_halflife_images`` set: the EMA after each step is the lerp with ``halflife_decay(B, step * B, H,
    ramp-up)`` (0 at the first step: the average starts at the weights)."""
    from models.ema import halflife_decay

    config = config_for("vpsde", ema_halflife_images=100.0, ema_rampup_ratio=0.5, ema_rate=0.9)
    config.training.batch_size = 8
    config.optim = ml_collections.ConfigDict({"optimizer": "Adam", "lr": 1e-2, "beta1": 0.9, "beta2": 0.999,
                                               "eps": 1e-8, "weight_decay": 0.0, "warmup": 0, "grad_clip": -1.0})
    sde = sde_lib.get_sde(config)
    torch.manual_seed(0)
    model = models.MLPScoreNet(2, hidden_dim=16, embedding_type="positional")
    state = {"model": model, "optimizer": train_lib.get_optimizer(config, model.parameters()),
             "ema": models.ExponentialMovingAverage(model.parameters(), decay=0.9), "step": 0}
    step_fn = train_lib.get_step_fn_from_config(config, sde, train=True)
    expected = [p.detach().clone() for p in model.parameters()]
    for step in range(4):
        step_fn(state, torch.randn(8, 2, generator=gen(10 + step)), generator=gen(20 + step))
        decay = halflife_decay(8, step * 8, 100.0, 0.5)
        expected = [decay * e + (1 - decay) * p.detach() for e, p in zip(expected, model.parameters())]
        for shadow, value in zip(state["ema"].shadow_params, expected):
            torch.testing.assert_close(shadow, value, rtol=1e-6, atol=1e-7)
