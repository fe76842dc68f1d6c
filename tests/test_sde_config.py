"""``get_sde`` from 2021-reference-shaped ml_collections configs, ``register_sde`` for user SDEs, and
data of any shape ``(B, ...)`` behaving exactly like its flattened ``(B, D)`` view."""

import math

import ml_collections
import numpy as np
import pytest
import torch

import base_lib
import sde_lib
from sde_reference import SDE_CASES, drift_and_diffusion_coeffs


def reference_config(sde_name: str, **model) -> ml_collections.ConfigDict:
    """The fields of score_sde_pytorch's configs/default_*_configs.py that get_sde reads."""
    config = ml_collections.ConfigDict()
    config.training = training = ml_collections.ConfigDict()
    training.sde = sde_name
    training.continuous = True
    config.model = m = ml_collections.ConfigDict()
    m.sigma_min = 0.01
    m.sigma_max = 50.0
    m.num_scales = 1000
    m.beta_min = 0.1
    m.beta_max = 20.0
    for key, value in model.items():
        setattr(m, key, value)
    return config


@pytest.mark.parametrize(
    "name,cls", [("vpsde", sde_lib.VPSDE), ("subvpsde", sde_lib.subVPSDE), ("VPSDE", sde_lib.VPSDE)]
)
def test_get_sde_builds_vp_family(name, cls):
    config = reference_config(name, beta_min=0.2, beta_max=15.0, num_scales=500)
    sde = sde_lib.get_sde(config)
    assert type(sde) is cls
    assert (sde.beta_0, sde.beta_1, sde.N, sde.T, sde.schedule_name) == (0.2, 15.0, 500, 1.0, "linear")
    # the parameters are the ones used: mean coefficient at t = 1 is exp(-(beta_0 + beta_1) / 4)
    mean, _ = sde.marginal_prob(torch.ones(1, 1, dtype=torch.float64), torch.ones(1, dtype=torch.float64))
    assert mean.item() == pytest.approx(math.exp(-(0.2 + 15.0) / 4), rel=1e-13)
    assert sde.discrete_betas.shape == (500,)


def test_get_sde_cosine_schedule_from_config():
    sde = sde_lib.get_sde(reference_config("vpsde", noise_schedule="cosine"))
    assert type(sde) is sde_lib.VPSDE and sde.schedule_name == "cosine" and sde.T == sde_lib.COSINE_DEFAULT_T


@pytest.mark.parametrize("exact", [None, False, True])
def test_get_sde_builds_vesde(exact):
    overrides = dict(sigma_min=0.02, sigma_max=80.0, num_scales=2000)
    if exact is not None:
        overrides["exact_marginal"] = exact
    sde = sde_lib.get_sde(reference_config("vesde", **overrides))
    assert type(sde) is sde_lib.VESDE
    assert (sde.sigma_min, sde.sigma_max, sde.N, sde.exact_marginal) == (0.02, 80.0, 2000, bool(exact))
    _, std = sde.marginal_prob(torch.zeros(1, 1, dtype=torch.float64), torch.ones(1, dtype=torch.float64))
    assert std.item() == pytest.approx(math.sqrt(80.0**2 - 0.02**2) if exact else 80.0, rel=1e-13)


def test_get_sde_accepts_frozen_configs_and_plain_dicts():
    frozen = ml_collections.FrozenConfigDict(reference_config("subvpsde"))
    assert type(sde_lib.get_sde(frozen)) is sde_lib.subVPSDE
    plain = {"training": {"sde": "vesde"}, "model": {"sigma_min": 0.1, "sigma_max": 10.0, "num_scales": 7}}
    sde = sde_lib.get_sde(plain)
    assert (sde.sigma_min, sde.sigma_max, sde.N) == (0.1, 10.0, 7)


@pytest.mark.parametrize(
    "sde_name,missing",
    [
        ("vpsde", "beta_min"),
        ("vpsde", "num_scales"),
        ("subvpsde", "beta_max"),
        ("vesde", "sigma_max"),
        ("vesde", "sigma_min"),
    ],
)
def test_get_sde_missing_field_names_it(sde_name, missing):
    config = reference_config(sde_name).to_dict()
    del config["model"][missing]
    with pytest.raises(ValueError, match=rf"config\.model\.{missing} is required but missing"):
        sde_lib.get_sde(ml_collections.ConfigDict(config))


def test_get_sde_missing_training_sde():
    config = reference_config("vpsde").to_dict()
    del config["training"]["sde"]
    with pytest.raises(ValueError, match=r"config\.training\.sde is required"):
        sde_lib.get_sde(ml_collections.ConfigDict(config))


# ---------------------------------------------------------------------------- user SDE via the registry


@sde_lib.register_sde("test_ornstein_uhlenbeck")
class OrnsteinUhlenbeckSDE(sde_lib.LinearSDE):
    """``dx = -theta x dt + sqrt(2 theta) dw``: kernel ``N(e^{-theta t} x0, 1 - e^{-2 theta t})``, prior N(0, 1)."""

    def __init__(self, theta: float = 1.0, N: int = 100, T: float = 3.0):
        super().__init__(N=N, T=T)
        self.theta = theta  # mean-reversion rate

    def drift_coeff(self, t):
        return torch.full_like(t, -self.theta)

    def diffusion_coeff(self, t):
        return torch.full_like(t, math.sqrt(2 * self.theta))

    def marginal_coeffs(self, t):
        return torch.exp(-self.theta * t), torch.sqrt(-torch.expm1(-2 * self.theta * t))

    @classmethod
    def from_config(cls, config):
        theta = base_lib.config_value(config, "model.ou_theta")
        return cls(theta=theta, N=base_lib.config_value(config, "model.num_scales"))


def test_registered_user_sde_is_built_and_works():
    assert "test_ornstein_uhlenbeck" in sde_lib.available_sdes()
    sde = sde_lib.get_sde(reference_config("test_ornstein_uhlenbeck", ou_theta=0.7, num_scales=50))
    assert type(sde) is OrnsteinUhlenbeckSDE and sde.theta == 0.7 and sde.N == 50 and sde.T == 3.0
    # the inherited machinery works: Euler--Maruyama discretize, reverse SDE with the exact Gaussian-data score
    x, t = torch.randn(5, 2, dtype=torch.float64), torch.linspace(0, 3, 5, dtype=torch.float64)
    f, G = sde.discretize(x, t)
    torch.testing.assert_close(f, -0.7 * x * 3.0 / 50, rtol=1e-14, atol=0)
    torch.testing.assert_close(G, torch.full((5,), math.sqrt(1.4 * 3.0 / 50), dtype=torch.float64), rtol=1e-14, atol=0)
    data = sde_lib.GaussianMixture.gaussian(torch.zeros(2), 1.0)  # the stationary law: score -x at every t
    torch.testing.assert_close(data.score_fn(sde)(x, t), -x, rtol=1e-12, atol=1e-12)
    drift, diffusion = sde.reverse(data.score_fn(sde)).sde(x, t)
    torch.testing.assert_close(drift, -0.7 * x + 1.4 * x, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match=r"config\.model\.ou_theta is required"):
        sde_lib.get_sde(reference_config("test_ornstein_uhlenbeck"))


def test_register_sde_rejects_bad_classes():
    with pytest.raises(ValueError, match="subclass of sde_lib.SDE"):
        sde_lib.register_sde("not_an_sde")(dict)

    class AnotherVP(sde_lib.VPSDE):
        pass

    with pytest.raises(ValueError, match="already registered as 'vpsde'"):
        sde_lib.register_sde("vpsde")(AnotherVP)
    assert sde_lib.register_sde("vpsde")(sde_lib.VPSDE) is sde_lib.VPSDE  # re-registering the same class is fine

    class WithoutFromConfig(sde_lib.SDE):
        pass

    with pytest.raises(ValueError, match="must define a classmethod from_config"):
        sde_lib.register_sde("test_without_from_config")(WithoutFromConfig)
    assert "test_without_from_config" not in sde_lib.available_sdes()


# ---------------------------------------------------------------------------- any data shape


@pytest.mark.parametrize("case", SDE_CASES, ids=repr)
@pytest.mark.parametrize("shape", [(4, 6), (4, 2, 3, 5), (4, 17), (4, 3, 16)], ids=str)
def test_any_data_shape_equals_the_flattened_computation(case, shape):
    """sde, marginal_prob, discretize, reverse (SDE and ODE), prior_logp on (B, ...) data equal the same calls
    on the flattened (B, D) data, reshaped; the per-sample outputs stay (B,)."""
    sde = case.make()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    flat = x.reshape(shape[0], -1)
    t = torch.linspace(0.0, sde.T, shape[0], dtype=torch.float64)

    def score_fn(y, tt):  # any shape: elementwise in y, per-sample in t
        return -y / (1.0 + tt.reshape(-1, *([1] * (y.ndim - 1))))

    calls = [
        lambda y: sde.sde(y, t),
        lambda y: sde.marginal_prob(y, t),
        lambda y: sde.discretize(y, t),
        lambda y: sde.reverse(score_fn).sde(y, t),
        lambda y: sde.reverse(score_fn, probability_flow=True).discretize(y, t),
    ]
    for call in calls:
        (a, per_sample), (a_flat, per_sample_flat) = call(x), call(flat)
        assert a.shape == shape and per_sample.shape == (shape[0],)
        torch.testing.assert_close(a.reshape(shape[0], -1), a_flat, rtol=0, atol=0)
        torch.testing.assert_close(per_sample, per_sample_flat, rtol=0, atol=0)
    torch.testing.assert_close(sde.prior_logp(x), sde.prior_logp(flat), rtol=1e-14, atol=0)
    # float32 data gets float32 outputs, the same numbers to float32 precision
    mean32, std32 = sde.marginal_prob(x.float(), t.float())
    assert mean32.dtype == std32.dtype == torch.float32
    mean, std = sde.marginal_prob(x, t)
    torch.testing.assert_close(std32.double(), std, rtol=1e-5, atol=1e-7)


def test_drift_coefficients_match_the_papers():
    """f(t), g(t) of [SDE] eq. (11), (12), (30): VP ``-beta/2, sqrt(beta)``; sub-VP ``-beta/2,
    sqrt(beta (1 - e^{-2 B}))``; VE ``0, sigma(t) sqrt(2 log(sigma_max / sigma_min))`` (float64, 1e-12)."""
    t = np.linspace(0.0, 1.0, 11)
    beta, B = 0.1 + 19.9 * t, 0.1 * t + 9.95 * t**2
    expected = {
        "vp_linear": (-beta / 2, np.sqrt(beta)),
        "subvp_linear": (-beta / 2, np.sqrt(beta * -np.expm1(-2 * B))),
        "ve": (np.zeros_like(t), 0.01 * 5000.0**t * np.sqrt(2 * np.log(5000.0))),
    }
    for case in SDE_CASES:
        if case.name in expected:
            f, g = drift_and_diffusion_coeffs(case.make(), t)
            np.testing.assert_allclose(f, expected[case.name][0], rtol=1e-12, atol=0)
            np.testing.assert_allclose(g, expected[case.name][1], rtol=1e-12, atol=0)
