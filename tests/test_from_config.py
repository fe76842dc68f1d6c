"""Config-driven sampling and likelihood functions (``samplers.get_sampling_fn``, ``samplers.get_likelihood_fn``).

The "model" is a perfect network for Gaussian data under the reference's VP convention: it reads the time from its
label (``t = label / 999``) and outputs the noise ``-std(t) * score(x, t)``, so ``models.ScoreModel``
turns it into the exact score. The config path must then sample the data law and give the exact likelihood.
"""

import math

import ml_collections
import pytest
import torch
from torch import nn

import sde_lib
from samplers import bits_per_dim, get_likelihood_fn, get_sampling_fn

MEAN = torch.tensor([1.0, -0.5], dtype=torch.float64)
VAR = 0.25


class PerfectVPNetwork(nn.Module):
    """Outputs ``-std(t) score(x, t)`` for N(MEAN, VAR I) data under ``sde``: the ideal noise predictor."""

    def __init__(self, sde: sde_lib.VPSDE):
        super().__init__()
        self.sde = sde
        self.data = sde_lib.GaussianMixture.gaussian(MEAN, VAR)
        self.unused = nn.Parameter(torch.zeros((), dtype=torch.float64))  # gives the network a dtype

    def forward(self, x, labels):
        t = labels / 999
        std = self.sde.marginal_coeffs(t)[1]
        return -std[:, None] * self.data.score_fn(self.sde)(x, t)


def config_for(method: str, **sampling) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.training = ml_collections.ConfigDict({"sde": "vpsde", "continuous": True})
    config.model = ml_collections.ConfigDict({"beta_min": 0.1, "beta_max": 20.0, "num_scales": 200})
    config.sampling = ml_collections.ConfigDict(
        {"method": method, "predictor": "reverse_diffusion", "corrector": "none", "snr": 0.16, "n_steps_each": 1,
         "noise_removal": True, "probability_flow": False, **sampling}
    )
    return config


@pytest.mark.parametrize(
    "method, options, bias",
    [
        ("pc", {}, 0.03),
        ("ode", {"ode_method": "dopri5"}, 0.01),
        ("fast", {"nfe": 20, "noise_removal": False}, 0.01),
        ("sde", {"sde_method": "euler", "dt": 1e-2}, 0.04),
        ("adaptive", {}, 0.05),
    ],
)
def test_configured_sampler_draws_the_data_law(method, options, bias):
    """Samples from each configured method match N(MEAN, VAR I).

    n = 4000 draws in 2 dimensions: the mean must lie within 5 standard errors sqrt(VAR / n) per coordinate, and the
    variance ratio within 5 SE (sqrt(2 / (n - 1)) per coordinate) plus the method's stated discretization allowance
    ``bias`` (200 PC steps, dt = 1e-2 Euler and the adaptive solver's default tolerance have biases of a few percent).
    """
    config = config_for(method, **options)
    sde = sde_lib.get_sde(config)
    n = 4000
    fn = get_sampling_fn(config, sde, (n, 2), inverse_scaler=None, eps=1e-3)
    x, nfe = fn(PerfectVPNetwork(sde), generator=torch.Generator().manual_seed(0))
    x = x.to(torch.float64)
    assert x.shape == (n, 2) and nfe > 0
    assert ((x.mean(0) - MEAN).abs() <= 5 * math.sqrt(VAR / n)).all()
    assert ((x.var(0) / VAR - 1).abs() <= 5 * math.sqrt(2 / (n - 1)) + bias).all()


def test_inverse_scaler_is_applied_and_seed_reproduces():
    config = config_for("fast", nfe=10, noise_removal=False)
    sde = sde_lib.get_sde(config)
    fn = get_sampling_fn(config, sde, (8, 2), inverse_scaler=lambda x: (x + 1) / 2, eps=1e-3)
    plain = get_sampling_fn(config, sde, (8, 2), inverse_scaler=None, eps=1e-3)
    net = PerfectVPNetwork(sde)
    a, _ = fn(net, generator=torch.Generator().manual_seed(1))
    b, _ = plain(net, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, (b + 1) / 2)


def test_likelihood_fn_equals_bits_per_dim_with_the_exact_score():
    """get_likelihood_fn(model) gives the same bits/dim as bits_per_dim with the exact score it stands for."""
    config = config_for("ode")
    sde = sde_lib.get_sde(config)
    net = PerfectVPNetwork(sde)
    x = net.data.sample(16, generator=torch.Generator().manual_seed(2), dtype=torch.float64).clamp(-1, 1)
    inverse_scaler = lambda y: (y + 1) / 2  # noqa: E731 - data in [-1, 1]
    likelihood_fn = get_likelihood_fn(sde, inverse_scaler, hutchinson_type="exact", method="dopri5")
    bpd, z, nfe = likelihood_fn(net, x)
    expected, _, _ = bits_per_dim(sde, net.data.score_fn(sde), x, inverse_scaler=inverse_scaler, divergence="exact", eps=1e-5)
    torch.testing.assert_close(bpd, expected, rtol=0, atol=1e-4)
    assert z.shape == x.shape and nfe > 0


def test_bad_config_raises_before_sampling():
    sde = sde_lib.VPSDE()
    with pytest.raises(ValueError, match="config.sampling.method"):
        get_sampling_fn(config_for("euler"), sde, (4, 2), None, 1e-3)
    with pytest.raises(ValueError, match="config.sampling.predictor"):
        get_sampling_fn(config_for("pc", predictor="heun"), sde, (4, 2), None, 1e-3)
    with pytest.raises(ValueError, match="config.sampling.corrector"):
        get_sampling_fn(config_for("pc", corrector="mala"), sde, (4, 2), None, 1e-3)
    with pytest.raises(ValueError, match="config.sampling.ode_method"):
        get_sampling_fn(config_for("ode", ode_method="rk4"), sde, (4, 2), None, 1e-3)
    with pytest.raises(ValueError, match="shape"):
        get_sampling_fn(config_for("ode"), sde, (0, 2), None, 1e-3)
    with pytest.raises(ValueError, match="hutchinson_type"):
        get_likelihood_fn(sde, None, hutchinson_type="Bernoulli")
