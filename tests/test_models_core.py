"""Core of ``models``: the registry, the MLP score network, the reference's network-to-score conventions
(checked against closed forms, the exact scores of Gaussian-mixture data and the labels recorded from the 2021
reference), the EMA arithmetic in closed form, and safe loading of a reference training checkpoint."""

from __future__ import annotations

import fractions
import io
import math

import ml_collections
import numpy as np
import pytest
import torch
from torch import nn

import models
import sde_lib
from models import registry as registry_module
from reference_fixtures import CHECKPOINT, CHECKPOINT_EXPECTED, FIXTURES, REFERENCE_VARIANTS, needs_fixtures
from sde_reference import CASES_BY_NAME, SDE_CASES, subvp_linear_coeffs, vp_linear_coeffs



def mlp_config(**model_fields) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.data = ml_collections.ConfigDict({"dim": 3})
    config.model = ml_collections.ConfigDict({"name": "mlp", "nf": 32, "num_layers": 2, **model_fields})
    return config


class RecordingModel(nn.Module):
    """Stub network ``(x, labels) -> respond(x, labels)`` that records the labels it was handed."""

    def __init__(self, respond):
        super().__init__()
        self.respond = respond
        self.labels: list[torch.Tensor] = []

    def forward(self, x, labels):
        self.labels.append(labels.detach().clone())
        return self.respond(x, labels)


# ============================================================================ registry


@pytest.fixture
def scratch_names():
    """Model names a test registers, removed again afterwards so that the global registry stays clean."""
    names: list[str] = []
    yield names
    for name in names:
        registry_module._MODELS.pop(name.lower(), None)


def test_registry_knows_mlp_and_lists_known_names_for_unknown():
    assert models.get_model("mlp") is models.MLPScoreNet
    assert models.get_model("MLP") is models.MLPScoreNet  # case-insensitive, like sde_lib.get_sde
    assert "mlp" in models.available_models()
    with pytest.raises(ValueError, match=r"unknown model 'no_such_net'.*known models: .*mlp"):
        models.get_model("no_such_net")
    with pytest.raises(ValueError, match="unknown model"):
        models.create_model(mlp_config(name="no_such_net"))


def test_user_registered_models(scratch_names):
    class TinyNet(nn.Module):
        def __init__(self, width: int):
            super().__init__()
            self.linear = nn.Linear(width, width)

        @classmethod
        def from_config(cls, config):
            return cls(width=config.data.dim)

        def forward(self, x, labels):
            return self.linear(x)

    scratch_names += ["tinynet", "tiny_named", "translated"]
    assert models.register_model(TinyNet) is TinyNet  # bare: registered under the class name
    assert models.get_model("TinyNet") is TinyNet
    models.register_model(name="tiny_named")(TinyNet)
    net = models.create_model(mlp_config(name="tiny_named"))
    assert isinstance(net, TinyNet) and net.linear.in_features == 3

    class Plain(nn.Module):  # no from_config: needs a translation function
        def __init__(self, width: int):
            super().__init__()
            self.width = width

    with pytest.raises(ValueError, match="from_config"):
        models.register_model(name="plain")(Plain)
    models.register_model(name="translated", from_config=lambda c: Plain(width=2 * c.data.dim))(Plain)
    assert models.create_model(mlp_config(name="translated")).width == 6

    class Other(nn.Module):
        @classmethod
        def from_config(cls, config):
            return cls()

    with pytest.raises(ValueError, match="already registered as 'tiny_named'"):
        models.register_model(name="tiny_named")(Other)
    with pytest.raises(ValueError, match="subclass of torch.nn.Module"):
        models.register_model(name="not_a_module")(object)


def test_create_model_from_configdict_reads_fields_and_device():
    config = mlp_config(embedding_type="fourier", fourier_scale=4.0, scale_by_sigma=True, dropout=0.25)
    model = models.create_model(config)
    assert isinstance(model, models.MLPScoreNet)
    assert (model.dim, model.input_proj.out_features, len(model.blocks)) == (3, 32, 2)
    assert model.embedding_type == "fourier" and model.scale_by_sigma and model.blocks[0].dropout.p == 0.25
    # W ~ N(0, fourier_scale^2) with 16 draws: the sample std lies within 4 standard errors of 4
    w_std = model.fourier.W.std().item()
    assert abs(w_std - 4.0) < 4 * 4.0 / math.sqrt(2 * 15)
    assert next(model.parameters()).device == torch.device("cpu")  # no config.device: the CPU

    config.device = "meta"  # any device string is honoured (meta: no GPU needed to see the move)
    assert all(p.device.type == "meta" for p in models.create_model(config).parameters())
    typed = mlp_config()
    typed.device = torch.device("cpu")  # what the reference configs store
    assert next(models.create_model(typed).parameters()).device == torch.device("cpu")

    config.data = ml_collections.ConfigDict({"num_channels": 3})
    with pytest.raises(ValueError, match=r"config\.data\.dim"):
        models.create_model(config)


# ============================================================================ MLP


@pytest.mark.parametrize("embedding_type", ["positional", "fourier"])
@pytest.mark.parametrize("dim", [1, 2, 5, 17])
def test_mlp_forward_any_dim_conditioned_and_batch_independent(dim, embedding_type):
    torch.manual_seed(0)
    model = models.MLPScoreNet(dim=dim, hidden_dim=32, num_layers=2, embedding_type=embedding_type).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, dim, generator=g)
    labels = 0.01 + 50 * torch.rand(6, generator=g)  # positive: valid for both embeddings
    out = model(x, labels)
    assert out.shape == (6, dim) and out.dtype == torch.float32 and torch.isfinite(out).all()
    # each row depends on its own x and label only
    rows = torch.cat([model(x[i : i + 1], labels[i : i + 1]) for i in range(6)])
    torch.testing.assert_close(rows, out, rtol=1e-5, atol=1e-6)
    # the label conditions the output: another noise level gives another output for every row
    assert ((model(x, labels * 1.7) - out).abs().amax(dim=1) > 1e-4).all()


def test_mlp_rejects_bad_inputs_naming_them():
    model = models.MLPScoreNet(dim=2, hidden_dim=16, num_layers=1, embedding_type="fourier")
    x, labels = torch.randn(4, 2), torch.rand(4) + 0.1
    for bad_x in (torch.randn(4), torch.randn(4, 3), torch.randn(4, 2, 1), torch.ones(4, 2, dtype=torch.long)):
        with pytest.raises(ValueError, match=r"x must be a floating-point tensor of shape \(B, 2\)"):
            model(bad_x, labels)
    for bad_labels in (torch.rand(4, 1), torch.rand(5), torch.tensor(0.5)):
        with pytest.raises(ValueError, match=r"labels must have shape \(B,\) = \(4,\)"):
            model(x, bad_labels)
    with pytest.raises(ValueError, match="embedding_type='positional'"):
        model(x, torch.arange(4))  # integer step indices cannot be log-embedded
    bad_constructions = [
        (dict(embedding_type="learned"), "embedding_type must be one of"),
        (dict(scale_by_sigma=True), "scale_by_sigma=True .* embedding_type='fourier'"),
        (dict(dropout=1.0), "dropout"),
        (dict(dim=0), "dim must be an integer >= 1"),
        (dict(num_layers=0), "num_layers"),
        (dict(embedding_type="fourier", embedding_dim=7), "embedding_dim must be >= 4 .*even"),
        (dict(embedding_dim=2), "embedding_dim must be >= 4"),
        (dict(embedding_type="fourier", fourier_scale=0.0), "fourier_scale"),
    ]
    for kwargs, message in bad_constructions:
        with pytest.raises(ValueError, match=message):
            models.MLPScoreNet(**{"dim": 2, **kwargs})


def test_mlp_is_deterministic_and_dropout_only_in_training():
    def build():
        torch.manual_seed(123)
        return models.MLPScoreNet(dim=4, hidden_dim=32, num_layers=2, dropout=0.5)

    a, b = build(), build()
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    x, labels = torch.randn(8, 4), 999 * torch.rand(8)
    a.eval(), b.eval()
    assert torch.equal(a(x, labels), b(x, labels)) and torch.equal(a(x, labels), a(x, labels))
    a.train()
    torch.manual_seed(5)
    first = a(x, labels)
    torch.manual_seed(6)
    assert not torch.equal(first, a(x, labels))  # dropout is active in training mode
    torch.manual_seed(5)
    assert torch.equal(first, a(x, labels))  # and reproducible under the same seed


@pytest.mark.parametrize("embedding_type", ["positional", "fourier"])
def test_mlp_gradients_reach_every_trainable_parameter_and_the_input(embedding_type):
    torch.manual_seed(0)
    model = models.MLPScoreNet(dim=3, hidden_dim=16, num_layers=2, embedding_type=embedding_type)
    x = torch.randn(5, 3, requires_grad=True)
    model(x, torch.rand(5) + 0.5).square().sum().backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert name == "fourier.W" and p.grad is None  # the fixed random features are not trained
    assert x.grad.abs().sum() > 0


def test_embeddings_match_their_formulas():
    labels = torch.tensor([0.0, 1.0, 37.5, 999.0], dtype=torch.float64)
    emb = models.sinusoidal_embedding(labels, 7, max_positions=10000, dtype=torch.float64)
    freqs = [10000 ** (-k / 2) for k in range(3)]  # h = 3 frequencies: 1, 1e-2, 1e-4
    for i, lab in enumerate(labels.tolist()):
        expected = [math.sin(lab * w) for w in freqs] + [math.cos(lab * w) for w in freqs] + [0.0]
        np.testing.assert_allclose(emb[i].numpy(), expected, rtol=1e-13, atol=1e-13)
    assert models.sinusoidal_embedding(labels, 8).dtype == torch.float32  # the reference's precision by default

    torch.manual_seed(0)
    fourier = models.GaussianFourierProjection(embedding_size=5, scale=3.0).double()
    s = torch.tensor([-4.6, 0.0, 3.9], dtype=torch.float64)
    phase = 2 * math.pi * s.numpy()[:, None] * fourier.W.detach().numpy()[None, :]
    expected = np.concatenate([np.sin(phase), np.cos(phase)], 1)
    np.testing.assert_allclose(fourier(s).numpy(), expected, rtol=1e-12, atol=1e-12)


def test_mlp_scale_by_sigma_divides_by_the_noise_scale_and_integer_labels_embed_like_floats():
    torch.manual_seed(0)
    scaled = models.MLPScoreNet(dim=2, hidden_dim=16, embedding_type="fourier", scale_by_sigma=True)
    plain = models.MLPScoreNet(dim=2, hidden_dim=16, embedding_type="fourier")
    plain.load_state_dict(scaled.state_dict())
    x, sigma = torch.randn(6, 2), torch.tensor([0.01, 0.1, 1.0, 5.0, 20.0, 50.0])
    torch.testing.assert_close(scaled(x, sigma), plain(x, sigma) / sigma[:, None], rtol=0, atol=0)

    positional = models.MLPScoreNet(dim=2, hidden_dim=16)
    steps = torch.tensor([0, 3, 117, 231])
    assert torch.equal(positional(x[:4], steps), positional(x[:4], steps.float()))


def test_mlp_runs_in_float64():
    torch.manual_seed(0)
    model = models.MLPScoreNet(dim=2, hidden_dim=16, embedding_type="fourier").double()
    x, sigma = torch.randn(3, 2, dtype=torch.float64), torch.tensor([0.1, 1.0, 10.0], dtype=torch.float64)
    out = model(x, sigma)
    assert out.dtype == torch.float64
    # float32 copy of the same weights agrees to float32 precision (the float64 path is not a cast of it)
    single = models.MLPScoreNet(dim=2, hidden_dim=16, embedding_type="fourier")
    single.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
    torch.testing.assert_close(single(x.float(), sigma.float()).double(), out, rtol=1e-4, atol=1e-5)


# ============================================================================ score functions: formulas


def constant_model(value: torch.Tensor) -> RecordingModel:
    return RecordingModel(lambda x, labels: value.to(x.dtype).expand_as(x).clone())


def ddpm_sqrt_1m_alphas_cumprod(beta_min: float, beta_max: float, N: int) -> np.ndarray:
    """``sqrt(1 - prod_{j<=i} (1 - beta_j))`` with the reference's betas ``linspace(beta_min / N, beta_max / N, N)``."""
    betas = np.linspace(beta_min / N, beta_max / N, N)
    return np.sqrt(1.0 - np.cumprod(1.0 - betas))


T_VALUES = torch.tensor([1e-3, 0.21, 0.5, 0.777, 1.0], dtype=torch.float64)


def test_score_fn_vp_continuous_and_discrete_formulas():
    sde = sde_lib.VPSDE(beta_min=0.5, beta_max=12.0, N=500)  # N != 1000: continuous 999 and discrete N - 1 differ
    c = torch.linspace(-2, 3, 5 * 4, dtype=torch.float64).reshape(5, 4)
    x = torch.zeros(5, 4, dtype=torch.float64)

    model = constant_model(c)
    score = models.ScoreModel(model, sde, "noise").score(x, T_VALUES)
    np.testing.assert_array_equal(model.labels[-1].numpy(), (T_VALUES * 999).numpy())
    std = vp_linear_coeffs(T_VALUES.numpy(), 0.5, 12.0)[1]
    np.testing.assert_allclose(score.numpy(), -c.numpy() / std[:, None], rtol=1e-12)

    score = models.ScoreModel(model, sde, "ddpm").score(x, T_VALUES)
    labels = model.labels[-1]
    np.testing.assert_array_equal(labels.numpy(), (T_VALUES * 499).numpy())
    assert labels.is_floating_point()  # DDPM networks get float step labels; only the std table is indexed
    table = ddpm_sqrt_1m_alphas_cumprod(0.5, 12.0, 500)[np.floor(T_VALUES.numpy() * 499).astype(int)]
    np.testing.assert_allclose(score.numpy(), -c.numpy() / table[:, None], rtol=1e-12)


def test_score_fn_subvp_uses_continuous_labels_and_has_no_discrete_parameterization():
    sde = sde_lib.subVPSDE(N=100)
    c = torch.full((5, 2), 0.75, dtype=torch.float64)
    model = constant_model(c)
    for name in ("ddpm", "smld", "score"):
        with pytest.raises(ValueError, match=f"the '{name}' parameterization applies to"):
            models.ScoreModel(model, sde, name)
    score = models.ScoreModel(model, sde).score(torch.zeros(5, 2, dtype=torch.float64), T_VALUES)
    np.testing.assert_array_equal(model.labels[-1].numpy(), (T_VALUES * 999).numpy())
    std = subvp_linear_coeffs(T_VALUES.numpy(), 0.1, 20.0)[1]
    np.testing.assert_allclose(score.numpy(), -0.75 / std[:, None] * np.ones((5, 2)), rtol=1e-10)


def test_score_fn_ve_continuous_and_discrete_formulas():
    sde = sde_lib.VESDE(sigma_min=0.01, sigma_max=50.0, N=232)
    c = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = torch.zeros(5, 3, dtype=torch.float64)
    model = constant_model(c)

    score = models.ScoreModel(model, sde, "score").score(x, T_VALUES)
    np.testing.assert_allclose(model.labels[-1].numpy(), 0.01 * 5000.0 ** T_VALUES.numpy(), rtol=1e-13)
    assert torch.equal(score, c)  # VE networks output the score itself

    score = models.ScoreModel(model, sde, "smld").score(x, T_VALUES)
    labels = model.labels[-1]
    assert labels.dtype == torch.int64
    np.testing.assert_array_equal(labels.numpy(), np.round((1 - T_VALUES.numpy()) * 231).astype(np.int64))
    assert labels[0] == 231 and labels[-1] == 0  # index 0 is sigma_max (t = T), N - 1 is sigma_min (t = 0)
    assert torch.equal(score, c)


def test_score_fn_rejects_other_sdes_bad_outputs_and_sets_the_mode():
    class OtherSDE(sde_lib.LinearSDE):  # none of VP, sub-VP, VE
        def drift_coeff(self, t):
            return torch.zeros_like(t)

        def diffusion_coeff(self, t):
            return torch.ones_like(t)

        def marginal_coeffs(self, t):
            return torch.ones_like(t), t.sqrt()

    with pytest.raises(ValueError, match="OtherSDE has no default parameterization"):
        models.ScoreModel(constant_model(torch.zeros(1)), OtherSDE(N=10))
    with pytest.raises(ValueError, match="'noise' parameterization applies to VPSDE, subVPSDE, got OtherSDE"):
        models.ScoreModel(constant_model(torch.zeros(1)), OtherSDE(N=10), "noise")
    with pytest.raises(ValueError, match="unknown parameterization 'eps'; known: ddpm, edm, noise, score, smld"):
        models.ScoreModel(constant_model(torch.zeros(1)), sde_lib.VPSDE(), "eps")

    wrong_shape = RecordingModel(lambda x, labels: torch.zeros(x.shape[0], 1))
    with pytest.raises(ValueError, match=r"model returned shape \(3, 1\), expected the shape of x \(3, 2\)"):
        models.ScoreModel(wrong_shape, sde_lib.VESDE()).score(torch.zeros(3, 2), torch.full((3,), 0.5))

    modes = []
    model = RecordingModel(lambda x, labels: modes.append(model.training) or torch.zeros_like(x))
    sde = sde_lib.VPSDE()
    models.ScoreModel(model, sde).score(torch.zeros(2, 2), torch.full((2,), 0.5), train=True)
    models.ScoreModel(model, sde).score(torch.zeros(2, 2), torch.full((2,), 0.5))
    assert modes == [True, False]
    with pytest.raises(ValueError, match=r"t must have shape \(2,\)"):
        models.ScoreModel(model, sde).score(torch.zeros(2, 2), torch.full((3,), 0.5))


# ============================================================================ score functions: exactness


def ring_mixture() -> sde_lib.GaussianMixture:
    return sde_lib.GaussianMixture.ring(num_components=5, radius=2.0, std=0.4)


def time_from_labels(sde, labels: torch.Tensor) -> torch.Tensor:
    """The time a perfect network reads from its continuous label (the inverse of the reference convention)."""
    if isinstance(sde, sde_lib.VESDE):  # labels = kernel std
        ratio = math.log(sde.sigma_max / sde.sigma_min)
        if sde.exact_marginal:  # std = sigma_min sqrt((sigma_max / sigma_min)^(2t) - 1)
            return torch.log1p((labels / sde.sigma_min).square()) / (2 * ratio)
        return torch.log(labels / sde.sigma_min) / ratio
    return labels / 999


def test_continuous_exactness_cases_cover_every_family():
    names = {type(case.make()).__name__ for case in SDE_CASES}
    assert names == {"VPSDE", "subVPSDE", "VESDE"}


@pytest.mark.parametrize("case", SDE_CASES, ids=repr)
def test_perfect_continuous_network_gives_the_exact_score(case):
    """A network that outputs exactly what the convention asks of it (the noise ``-std * score`` for VP/sub-VP,
    the score for VE, both as functions of the label) must be turned into the exact Gaussian-mixture score.
    The network's std comes from the independent closed forms in ``sde_reference``; float64 throughout."""
    sde, mix = case.make(), ring_mixture()
    exact = mix.score_fn(sde)
    is_ve = isinstance(sde, sde_lib.VESDE)

    def perfect(x, labels):
        t = time_from_labels(sde, labels)
        if is_ve:
            return exact(x, t)
        std = torch.as_tensor(case.coeffs(t.numpy())[1], dtype=x.dtype)
        return -std[:, None] * exact(x, t)

    g = torch.Generator().manual_seed(3)
    t = torch.cat([torch.tensor([0.02]), 0.02 + (case.T - 0.02) * torch.rand(15, generator=g, dtype=torch.float64)])
    x = 3 * torch.randn(16, 2, generator=g, dtype=torch.float64)
    score = models.ScoreModel(RecordingModel(perfect), sde).score(x, t)
    torch.testing.assert_close(score, exact(x, t), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", ["vp_linear", "vp_linear_b0.5_12"])
def test_perfect_discrete_ddpm_network_gives_the_exact_score(name):
    """Discrete VP: the network reads its step ``t (N - 1)`` and predicts the noise scaled by the DDPM table std
    ``sqrt(1 - alpha_bar_floor(label))`` (numpy, from the reference's betas); the score is exact at ``t``."""
    case = CASES_BY_NAME[name]
    sde, mix = case.make(), ring_mixture()
    exact = mix.score_fn(sde)
    table = torch.as_tensor(ddpm_sqrt_1m_alphas_cumprod(sde.beta_0, sde.beta_1, sde.N))

    def perfect(x, labels):
        return -table[labels.long()][:, None] * exact(x, labels / (sde.N - 1))

    g = torch.Generator().manual_seed(4)
    t, x = torch.rand(16, generator=g, dtype=torch.float64), 3 * torch.randn(16, 2, generator=g, dtype=torch.float64)
    score = models.ScoreModel(RecordingModel(perfect), sde, "ddpm").score(x, t)
    torch.testing.assert_close(score, exact(x, t), rtol=1e-9, atol=1e-12)


def test_perfect_discrete_smld_network_gives_the_exact_score_at_the_nearest_noise_level():
    """Discrete VE: the network is conditioned on the index ``i`` of ``sigma_i`` counted from ``sigma_max``; a perfect
    one returns the exact score at ``t_i = 1 - i / (N - 1)``, the grid time nearest to ``t``."""
    sde, mix = sde_lib.VESDE(sigma_min=0.05, sigma_max=10.0, N=20), ring_mixture()
    exact = mix.score_fn(sde)
    perfect = RecordingModel(lambda x, labels: exact(x, 1 - labels.double() / (sde.N - 1)))
    g = torch.Generator().manual_seed(5)
    t, x = torch.rand(16, generator=g, dtype=torch.float64), 3 * torch.randn(16, 2, generator=g, dtype=torch.float64)
    score = models.ScoreModel(perfect, sde, "smld").score(x, t)
    grid_t = 1 - np.round((1 - t.numpy()) * 19) / 19
    assert np.abs(grid_t - t.numpy()).max() <= 0.5 / 19 + 1e-15
    torch.testing.assert_close(score, exact(x, torch.as_tensor(grid_t)), rtol=1e-12, atol=1e-12)


# ============================================================================ labels of the reference fixtures


@needs_fixtures
@pytest.mark.parametrize("variant", REFERENCE_VARIANTS)
def test_labels_match_those_the_reference_handed_its_networks(variant):
    """Rebuild the SDE from each fixture's config as the reference's ``run_lib`` does and check that the labels
    handed to the network equal those recorded from the reference's own ``get_score_fn``, bit for bit, dtype
    included (VE ``sigma(t)`` is formed as the reference does, ``sigma_min (sigma_max / sigma_min)^t``)."""
    fixture = torch.load(FIXTURES / f"{variant}.pt", weights_only=True)
    config = ml_collections.ConfigDict(fixture["config"])
    sde = sde_lib.get_sde(config)
    model = RecordingModel(lambda x, labels: torch.zeros_like(x))
    models.ScoreModel.from_config(config, model, sde).score(fixture["x"], fixture["t"])
    (labels,) = model.labels
    expected = fixture["labels"]
    assert labels.dtype == expected.dtype and labels.shape == expected.shape
    assert torch.equal(labels, expected)


# ============================================================================ sampling score function


def test_sampling_score_fn_casts_explicitly_and_evaluates_in_eval_mode():
    torch.manual_seed(0)
    model = models.MLPScoreNet(dim=2, hidden_dim=16, dropout=0.5)  # float32, left in training mode
    sde = sde_lib.VPSDE()
    x, t = torch.randn(4, 2, dtype=torch.float64), torch.tensor([0.1, 0.4, 0.7, 1.0], dtype=torch.float64)
    assert models.model_dtype(model) == torch.float32
    score = models.ScoreModel(model, sde).score_fn()(x, t)
    assert score.dtype == torch.float64 and not model.training
    reference = models.ScoreModel(model, sde).score(x.float(), t.float())
    assert torch.equal(score, reference.double())
    # an explicit float64 evaluation of a float64 copy agrees to float32 precision
    double = models.MLPScoreNet(dim=2, hidden_dim=16, dropout=0.5).double()
    double.load_state_dict(model.state_dict())
    score64 = models.ScoreModel(double, sde, dtype=torch.float64).score_fn()(x, t)
    torch.testing.assert_close(score64, score, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="floating-point"):
        models.ScoreModel(model, sde, dtype=torch.int64)


# ============================================================================ EMA


def ema_closed_form(s0, thetas, decays):
    """``s_k = prod_j d_j s0 + sum_j (1 - d_j) prod_{i > j} d_i theta_j``, which solves the recursion
    ``s_j = d_j s_{j-1} + (1 - d_j) theta_j``."""
    k = len(decays)
    total = np.prod(decays) * s0
    for j in range(k):
        total = total + (1 - decays[j]) * np.prod(decays[j + 1 :]) * thetas[j]
    return total


@pytest.mark.parametrize("use_num_updates", [True, False])
def test_ema_matches_closed_form(use_num_updates):
    g = torch.Generator().manual_seed(0)
    params = [nn.Parameter(torch.randn(shape, generator=g, dtype=torch.float64)) for shape in [(3, 4), (5,)]]
    frozen = nn.Parameter(torch.randn(2, generator=g, dtype=torch.float64), requires_grad=False)
    all_params = [params[0], frozen, params[1]]
    s0 = [p.detach().clone().numpy() for p in params]
    ema = models.ExponentialMovingAverage(all_params, decay=0.7, use_num_updates=use_num_updates)
    assert len(ema.shadow_params) == 2  # the frozen parameter is not averaged
    history = [[], []]
    for _ in range(25):
        with torch.no_grad():
            for p, h in zip(params, history):
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
                h.append(p.detach().clone().numpy())
        ema.update(all_params)
    k = np.arange(1, 26)
    decays = np.minimum(0.7, (1 + k) / (10 + k)) if use_num_updates else np.full(25, 0.7)
    if use_num_updates:  # warm-up for k < 20, then the cap: both regimes are exercised
        assert decays[0] == 2 / 11 and decays[18] < 0.7 and decays[-1] == 0.7 and ema.num_updates == 25
    else:
        assert ema.num_updates is None
    for shadow, start, thetas in zip(ema.shadow_params, s0, history):
        np.testing.assert_allclose(shadow.numpy(), ema_closed_form(start, thetas, decays), rtol=1e-12, atol=1e-14)
    assert ema.current_decay() == 0.7

    frozen_before = frozen.detach().clone()
    ema.copy_to(all_params)
    assert torch.equal(params[0], ema.shadow_params[0]) and torch.equal(frozen, frozen_before)


def test_ema_validates_decay_and_parameter_lists():
    params = [nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(3))]
    for decay in (-0.1, 1.5, "x"):
        with pytest.raises(ValueError, match="decay"):
            models.ExponentialMovingAverage(params, decay=decay)
    ema = models.ExponentialMovingAverage(params, decay=0.99)
    with pytest.raises(ValueError, match="got 1 trainable parameters, but the average holds 2"):
        ema.update(params[:1])
    with pytest.raises(ValueError, match="got 1 trainable parameters"):
        ema.copy_to(params[:1])


def test_ema_store_copy_to_restore():
    torch.manual_seed(0)
    model = models.MLPScoreNet(dim=2, hidden_dim=8, embedding_type="fourier")
    ema = models.ExponentialMovingAverage(model.parameters(), decay=0.999)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model.parameters())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ema.store(model.parameters())
    ema.copy_to(model.parameters())
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert all(torch.equal(p, s) for p, s in zip(trainable, ema.shadow_params))
    assert not torch.equal(model.input_proj.weight, before["input_proj.weight"])
    ema.restore(model.parameters())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="store"):
        ema.restore(list(model.parameters())[:2])


def test_ema_state_dict_round_trip_in_reference_format():
    g = torch.Generator().manual_seed(0)
    params = [nn.Parameter(torch.randn(4, generator=g)), nn.Parameter(torch.randn(2, 2, generator=g))]
    ema = models.ExponentialMovingAverage(params, decay=0.95)
    for _ in range(3):
        with torch.no_grad():
            for p in params:
                p.add_(torch.randn(p.shape, generator=g))
        ema.update(params)
    state = ema.state_dict()
    assert set(state) == {"decay", "num_updates", "shadow_params"} and state["num_updates"] == 3
    buffer = io.BytesIO()
    torch.save(state, buffer)  # plain types only: loadable with weights_only=True
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)

    zeros = [nn.Parameter(torch.zeros(4)), nn.Parameter(torch.zeros(2, 2))]
    other = models.ExponentialMovingAverage(zeros, decay=0.5, use_num_updates=False)
    other.load_state_dict(loaded)
    assert other.decay == 0.95 and other.num_updates == 3
    assert all(torch.equal(a, b) for a, b in zip(other.shadow_params, ema.shadow_params))
    ema.update(params), other.update(params)  # continue identically (same warm-up step)
    assert all(torch.equal(a, b) for a, b in zip(other.shadow_params, ema.shadow_params))

    with pytest.raises(ValueError, match=r"shadow parameter 1 has shape \(4,\), expected \(2, 2\)"):
        other.load_state_dict({**state, "shadow_params": [torch.zeros(4), torch.zeros(4)]})
    with pytest.raises(ValueError, match="has 1 shadow parameters"):
        other.load_state_dict({**state, "shadow_params": [torch.zeros(4)]})
    with pytest.raises(ValueError, match="missing"):
        other.load_state_dict({"decay": 0.9})
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="num_updates"):
            other.load_state_dict({**state, "num_updates": bad})


# ============================================================================ reference checkpoint


@needs_fixtures
def test_reference_checkpoint_loads_safely_and_its_ema_loads():
    with pytest.raises(Exception, match="numpy"):  # plain weights_only=True refuses the numpy learning rate
        torch.load(CHECKPOINT, weights_only=True)
    checkpoint = models.load_reference_checkpoint(CHECKPOINT)
    assert set(checkpoint) == {"model", "ema", "optimizer", "step"} and checkpoint["step"] == 2
    lr = checkpoint["optimizer"]["param_groups"][0]["lr"]
    assert isinstance(lr, np.float64) and lr == pytest.approx(4e-8, rel=1e-12)
    ema_state = checkpoint["ema"]
    assert ema_state["decay"] == 0.999 and ema_state["num_updates"] == 2 and len(ema_state["shadow_params"]) == 374

    bare = models.strip_data_parallel_prefix(checkpoint["model"])
    assert len(bare) == 376 and not any(k.startswith("module.") for k in bare)
    # the trainable parameters in model.parameters() order: all entries but the sigmas buffer and the fixed W
    names = [k for k in bare if k not in ("sigmas", "all_modules.0.W")]
    params = [nn.Parameter(torch.zeros_like(bare[k])) for k in names]
    frozen_w = nn.Parameter(bare["all_modules.0.W"].clone(), requires_grad=False)
    ema = models.ExponentialMovingAverage([frozen_w, *params], decay=0.5)
    ema.load_state_dict(ema_state)
    assert ema.decay == 0.999 and ema.num_updates == 2 and ema.current_decay() == 4 / 13
    ema.copy_to([frozen_w, *params])
    # the reference's own copy_to result, recorded in the expected-outputs fixture
    expected = torch.load(CHECKPOINT_EXPECTED, weights_only=True)["ema_state_dict"]
    for name, p in zip(names, params):
        assert torch.equal(p, expected[name]), name
    assert torch.equal(frozen_w, expected["all_modules.0.W"])
    # the EMA is not the raw weights: the shadow still mixes in the initial weights (decays 2/11, 3/12)
    assert max((p - bare[n]).abs().max().item() for n, p in zip(names, params)) > 1e-3


def _pickle_global_renamed(obj, old: bytes, new: bytes) -> io.BytesIO:
    """``obj`` saved in torch's legacy (plain pickle) format with one pickled global path renamed."""
    buffer = io.BytesIO()
    torch.save(obj, buffer, _use_new_zipfile_serialization=False)
    data = buffer.getvalue()
    assert old in data
    return io.BytesIO(data.replace(old, new))


def test_safe_loader_accepts_numpy1_scalars_and_refuses_other_globals():
    numpy1 = _pickle_global_renamed(
        {"lr": np.float64(4e-8)}, b"numpy._core.multiarray\nscalar", b"numpy.core.multiarray\nscalar"
    )
    assert models.load_reference_checkpoint(numpy1)["lr"] == np.float64(4e-8)
    buffer = io.BytesIO()
    torch.save({"lr": np.float32(1.0)}, buffer)  # a float32 dtype class is not on the allow-list
    buffer.seek(0)
    with pytest.raises(Exception, match="Float32DType|not an allowed global|allowlisted"):
        models.load_reference_checkpoint(buffer)
    buffer = io.BytesIO()
    torch.save({"value": fractions.Fraction(1, 3)}, buffer)  # any other class stays refused
    buffer.seek(0)
    with pytest.raises(Exception, match="fractions.Fraction"):
        models.load_reference_checkpoint(buffer)
