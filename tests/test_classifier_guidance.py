"""Training side of class-conditional generation: a noise-conditional classifier for classifier guidance,
and a label-conditional score network trained with label dropout for classifier-free guidance.

Data: the 8-component ring ``GaussianMixture.ring(8, radius=2, std=0.5)``, whose neighbouring components overlap
(means 1.53 = 3 std apart), so that the posterior ``p_t(y | x)`` is not trivially one-hot and a draw of component
``y`` has the most likely label ``y`` with probability 0.874 only (200,000 draws): guidance has room to sharpen it.
Exact answers: ``component_log_posterior_fn`` (the Bayes classifier of the perturbed data), ``component_score_fn``
and ``score_fn`` (exact conditional and unconditional scores).

Sampling: Euler-Maruyama, no corrector, ``N = 200``, ``n = 2000`` samples, the same seed for the learned and the exact
functions. "Fraction" = fraction of samples whose most likely label (exact posterior at ``t = 0``) is the target
``y = 3``. Tolerance of a learned-vs-exact fraction: ``K_SE`` standard errors of the difference of two independent
binomial fractions, ``sqrt(2 p (1 - p) / n)`` = 0.0103 at ``p = 0.88`` (conservative: the shared seed correlates
them), plus an explicit allowance ``MODEL_ALLOWANCE`` for the error of the briefly trained network (measured gaps
on this setting are stated next to each test).

Training: Adam, batch 512, one thread; classifier 64 wide, 2 blocks, 300 steps (1.5 s per SDE); conditional score
network 128 wide, 3 blocks, 800 steps, learning rate 2e-3 then 2e-4 for the second half (12 s).
"""

from __future__ import annotations

import math

import pytest
import torch

from models.classifier_mlp import MLPClassifier
from models import MLPScoreNet, ScoreModel
from models.conditional_mlp import ConditionalMLPScoreNet
from samplers.controllable import cfg_score_fn, classifier_log_prob_fn, guided_score_fn
from samplers.pc import pc_sample
from sde_lib import VESDE, VPSDE, GaussianMixture, batch_broadcast
from train_lib.classifier import get_classifier_loss_fn, perturb
from train_lib.classifier_free import drop_labels, get_cfg_loss_fn
from train_lib.losses import get_sde_loss_fn
from training_checks import fit_on_mixture

K_SE = 4.0
TARGET = 3
N_SAMPLES = 2000
MODEL_ALLOWANCE = 0.02  # allowed systematic fraction error of the briefly trained networks
BATCH = 512


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def ring() -> GaussianMixture:
    return GaussianMixture.ring(8, radius=2.0, std=0.5)


def make_sde(name: str):
    return VPSDE(N=200) if name == "vp" else VESDE(sigma_max=10.0, N=200)


def target_fraction(x: torch.Tensor) -> float:
    """Fraction of ``x`` whose most likely component (exact posterior of the clean data) is ``TARGET``."""
    x = x.double()
    log_post = ring().component_log_posterior_fn(VPSDE())(x, torch.zeros(x.shape[0], dtype=torch.float64))
    return (log_post.argmax(1) == TARGET).double().mean().item()


def fraction_tolerance(p: float) -> float:
    return K_SE * math.sqrt(2 * p * (1 - p) / N_SAMPLES) + MODEL_ALLOWANCE


def em_samples(sde, score_fn, seed: int) -> torch.Tensor:
    with torch.no_grad():
        return pc_sample(sde, score_fn, (N_SAMPLES, 2), predictor="euler_maruyama", corrector="none",
                         generator=seeded(seed))[0]


def train(model: torch.nn.Module, loss_fn, steps: int, lr: float, seed: int, decay_at: int | None = None):
    """Adam on fresh labelled ring batches; the learning rate drops 10x at step ``decay_at``."""
    torch.manual_seed(seed)
    return fit_on_mixture(model, loss_fn, ring(), steps, BATCH, lr, seeded(seed), decay_at)


# ---------------------------------------------------------------------------------------------- classifier
def mean_posterior_kl(log_prob_fn, sde, n: int = 4000) -> float:
    """``E KL(p_t(. | x(t)) || q_t(. | x(t)))`` over ``t ~ U(1e-3, T)`` and ``x(t)`` perturbed ring data (float64)."""
    x0, _ = ring().sample_with_labels(n, seeded(100), dtype=torch.float64)
    x_t, t = perturb(sde, x0, 1e-3, seeded(101))
    exact = ring().component_log_posterior_fn(sde)(x_t, t)
    with torch.no_grad():
        learned = log_prob_fn(x_t, t)
    return (exact.exp() * (exact - learned)).sum(1).mean().item()


_CLASSIFIERS: dict[str, tuple[MLPClassifier, float]] = {}


def trained_classifier(name: str) -> tuple[MLPClassifier, float]:
    """The classifier trained 300 steps on ``name``'s perturbations, and the KL of its untrained initialisation."""
    if name not in _CLASSIFIERS:
        sde = make_sde(name)
        torch.manual_seed(0)
        classifier = MLPClassifier(2, 8, hidden_dim=64, num_layers=2)
        untrained_kl = mean_posterior_kl(classifier_log_prob_fn(classifier), sde)
        _CLASSIFIERS[name] = (train(classifier, get_classifier_loss_fn(sde), 300, 3e-3, seed=1), untrained_kl)
    return _CLASSIFIERS[name]


def test_classifier_loss_is_the_cross_entropy_of_the_perturbed_data():
    """Same generator: the loss is ``F.cross_entropy`` of the classifier at ``(mean + std z, t)``, ``t ~ U(eps, T)``."""
    sde = VPSDE()
    classifier = MLPClassifier(2, 8, hidden_dim=16, num_layers=1).double()
    x0, y = ring().sample_with_labels(64, seeded(1), dtype=torch.float64)
    losses = get_classifier_loss_fn(sde, eps=1e-3)(classifier, x0, y, seeded(2), per_example=True)
    g = seeded(2)
    t = torch.rand(64, generator=g, dtype=torch.float64) * (1 - 1e-3) + 1e-3
    z = torch.randn(64, 2, generator=g, dtype=torch.float64)
    alpha, sigma = sde.marginal_coeffs(t)
    logits = classifier(alpha[:, None] * x0 + sigma[:, None] * z, t)
    torch.testing.assert_close(losses, torch.nn.functional.cross_entropy(logits, y, reduction="none"))
    assert t.min() >= 1e-3


@pytest.mark.parametrize("name", ["vp", "ve"])
def test_learned_classifier_approaches_the_exact_posterior(name):
    """Mean KL from the exact posterior over random ``t`` and ``x(t)``: below 0.05 and below a tenth of the untrained
    classifier's (measured: VP 0.0135 vs 0.49 untrained; VE 0.0174 vs 1.26)."""
    classifier, untrained_kl = trained_classifier(name)
    kl = mean_posterior_kl(classifier_log_prob_fn(classifier), make_sde(name))
    assert kl < 0.05 and kl < untrained_kl / 10, f"{name}: KL {kl:.4f} (untrained {untrained_kl:.4f})"


@pytest.mark.parametrize("name", ["vp", "ve"])
def test_guidance_with_the_learned_classifier_matches_the_exact_classifier(name):
    """Scale 1 with the exact score: the target fraction with the learned classifier is within
    ``fraction_tolerance`` of that with the exact classifier (measured: VP 0.870 vs 0.881, VE 0.874 vs 0.885;
    the unguided sampler gives 1/8)."""
    sde, mixture = make_sde(name), ring()
    classifier, _ = trained_classifier(name)
    exact = target_fraction(em_samples(sde, guided_score_fn(mixture.score_fn(sde), mixture.component_log_posterior_fn(sde), TARGET), 5))
    learned = target_fraction(em_samples(sde, guided_score_fn(mixture.score_fn(sde), classifier_log_prob_fn(classifier), TARGET), 5))
    assert abs(learned - exact) <= fraction_tolerance(exact), f"{name}: learned {learned:.4f}, exact {exact:.4f}"


def test_classifier_log_prob_is_normalised_and_differentiable_in_float64():
    classifier = MLPClassifier(2, 8, hidden_dim=16, num_layers=1)
    log_prob = classifier_log_prob_fn(classifier)
    x = torch.randn(5, 2, generator=seeded(3), dtype=torch.float64, requires_grad=True)
    out = log_prob(x, torch.full((5,), 0.5, dtype=torch.float64))
    assert out.dtype == torch.float64 and out.shape == (5, 8)
    torch.testing.assert_close(out.exp().sum(1), torch.ones(5, dtype=torch.float64))
    (grad,) = torch.autograd.grad(out[:, 2].sum(), x)
    assert grad.abs().sum() > 0


def test_classifier_bad_arguments():
    classifier = MLPClassifier(2, 8, hidden_dim=16, num_layers=1)
    loss_fn = get_classifier_loss_fn(VPSDE())
    x0 = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="y must"):
        loss_fn(classifier, x0, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="y must"):
        loss_fn(classifier, x0, torch.zeros(4))
    with pytest.raises(ValueError, match="eps"):
        get_classifier_loss_fn(VPSDE(), eps=0.0)
    with pytest.raises(ValueError, match="num_classes"):
        MLPClassifier(2, 1)
    with pytest.raises(ValueError, match="t must"):
        classifier(x0, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="x must"):
        classifier(torch.zeros(4, 3), torch.zeros(4))


# ---------------------------------------------------------------------------------------------- classifier-free
def test_cfg_loss_is_the_dsm_loss_with_dropped_labels():
    """Same generator: the label-dropout draws come first, then exactly :func:`get_sde_loss_fn`'s loss of the network
    with those labels; ``label_dropout`` 0 keeps every label, 1 makes all null."""
    sde = VPSDE()
    model = ConditionalMLPScoreNet(2, 8, hidden_dim=16, num_layers=1).double()
    x0, y = ring().sample_with_labels(32, seeded(1), dtype=torch.float64)
    dsm = get_sde_loss_fn(sde, True, reduce_mean=True)
    for dropout, labels in ((0.0, y), (1.0, None)):
        loss = get_cfg_loss_fn(sde, label_dropout=dropout)(model, x0, y, seeded(4), per_example=True)
        g = seeded(4)
        torch.rand(32, generator=g)
        expected = dsm(model, x0, g, per_example=True, y=labels)
        torch.testing.assert_close(loss, expected, rtol=0, atol=0)


def test_label_dropout_rate():
    """The fraction of null labels is ``label_dropout`` within ``K_SE`` binomial standard errors (n = 100,000)."""
    y = torch.randint(0, 8, (100_000,), generator=seeded(5))
    dropped = drop_labels(y, 8, 0.1, seeded(6))
    rate = (dropped == 8).double().mean().item()
    assert abs(rate - 0.1) <= K_SE * math.sqrt(0.1 * 0.9 / 100_000)
    assert torch.equal(dropped[dropped != 8], y[dropped != 8])


def test_score_model_of_a_label_conditional_network_takes_the_labels():
    """``score(x, t, y)`` is ``-model(x, 999 t, y) / std(t)`` (VP, continuous); ``y = None`` is the null label."""
    sde = VPSDE()
    model = ConditionalMLPScoreNet(2, 8, hidden_dim=16, num_layers=1)
    score_model = ScoreModel(model, sde)
    cond, uncond = score_model.score, score_model.score_fn()
    x, t = torch.randn(6, 2, generator=seeded(7)), torch.rand(6, generator=seeded(8)) * 0.9 + 0.05
    y = torch.tensor([0, 1, 2, 3, 4, 7])
    std = sde.marginal_prob(x, t)[1]
    torch.testing.assert_close(cond(x, t, y), -model(x, 999 * t, y) / batch_broadcast(std, x))
    torch.testing.assert_close(cond(x, t, None), uncond(x, t), rtol=0, atol=0)
    torch.testing.assert_close(uncond(x, t), -model(x, 999 * t, 8) / batch_broadcast(std, x))
    with pytest.raises(ValueError, match="class labels y were given to the unconditional network MLPScoreNet"):
        ScoreModel(MLPScoreNet(2, hidden_dim=8), sde).score(x, t, y)
    torch.testing.assert_close(cond(x, t, 3), cond(x, t, torch.full((6,), 3)), rtol=0, atol=0)


def test_cfg_bad_arguments():
    model = ConditionalMLPScoreNet(2, 8, hidden_dim=16, num_layers=1)
    loss_fn = get_cfg_loss_fn(VPSDE())
    x0 = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="label_dropout"):
        get_cfg_loss_fn(VPSDE(), label_dropout=1.5)
    with pytest.raises(ValueError, match="y must"):
        loss_fn(model, x0, torch.full((4,), 8))  # the null label is not a data label
    with pytest.raises(ValueError, match="null_label"):
        loss_fn(torch.nn.Linear(2, 2), x0, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="class_labels"):
        model(x0, torch.zeros(4), torch.full((4,), 9))


def test_classifier_free_guidance_from_a_trained_network():
    """Trained with label dropout 0.1 on the labelled ring (VP): ``w = 0`` samples of label ``y`` have the target
    fraction of the exact conditional score within ``fraction_tolerance`` (measured 0.860 vs 0.882), and ``w = 2``
    raises it by more than ``K_SE`` binomial standard errors (measured 1.000; exact 0.999)."""
    sde, mixture = make_sde("vp"), ring()
    torch.manual_seed(0)
    model = ConditionalMLPScoreNet(2, 8, hidden_dim=128, num_layers=3)
    train(model, get_cfg_loss_fn(sde, label_dropout=0.1), 800, 2e-3, seed=2, decay_at=400)
    score_model = ScoreModel(model, sde)
    cond, uncond = score_model.score, score_model.score_fn()
    exact = target_fraction(em_samples(sde, cfg_score_fn(mixture.component_score_fn(sde), mixture.score_fn(sde), TARGET, 0.0), 6))
    plain = target_fraction(em_samples(sde, lambda x, t: cond(x, t, TARGET), 6))  # w = 0 is cond exactly
    assert abs(plain - exact) <= fraction_tolerance(exact), f"w = 0: learned {plain:.4f}, exact {exact:.4f}"
    guided = target_fraction(em_samples(sde, cfg_score_fn(cond, uncond, TARGET, 2.0), 7))
    assert guided > plain + K_SE * math.sqrt(plain * (1 - plain) / N_SAMPLES), f"w = 2: {guided:.4f} vs w = 0: {plain:.4f}"
