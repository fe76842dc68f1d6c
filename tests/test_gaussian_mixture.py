"""``sde_lib.GaussianMixture``: densities against scipy, scores against autograd, perturbed laws against
sampling ``alpha x0 + sigma z``, sample moments against the mixture's closed-form moments."""

import numpy as np
import pytest
import scipy.special
import scipy.stats
import torch

import sde_lib
from sde_reference import SDE_CASES, gaussian_data_score

WEIGHTS = [0.2, 0.5, 0.3]
MEANS = [[-2.0, 1.0], [1.5, 0.5], [0.0, -3.0]]
VARIANCES = [[0.3, 1.2], [0.8, 0.1], [2.0, 0.5]]  # diagonal, anisotropic


def mixture_2d():
    means, variances = torch.tensor(MEANS, dtype=torch.float64), torch.tensor(VARIANCES, dtype=torch.float64)
    return sde_lib.GaussianMixture(WEIGHTS, means, variances)


def mixture_image():
    """K = 2 on events of shape (2, 3, 2) with per-pixel variances and a scalar-broadcast constructor."""
    g = torch.Generator().manual_seed(0)
    means = torch.randn(2, 2, 3, 2, generator=g, dtype=torch.float64)
    variances = 0.2 + torch.rand(2, 2, 3, 2, generator=g, dtype=torch.float64)
    return sde_lib.GaussianMixture([0.35, 0.65], means, variances)


def scipy_mixture_logpdf(x, weights, means, variances):
    """``log sum_k w_k N(x; m_k, diag(v_k))`` with scipy.stats.multivariate_normal (flattened events)."""
    x = np.asarray(x).reshape(len(x), -1)
    logs = [
        np.log(w) + np.atleast_1d(scipy.stats.multivariate_normal(np.ravel(m), np.diag(np.ravel(v))).logpdf(x))
        for w, m, v in zip(weights, means, variances)
    ]
    return scipy.special.logsumexp(np.stack(logs, axis=1), axis=1)


def autograd_score(log_prob, x, *args):
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(log_prob(x, *args).sum(), x)
    return grad


def test_log_prob_matches_scipy_2d():
    mix = mixture_2d()
    x = torch.cat([torch.randn(50, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 3,
                   torch.tensor([[30.0, -40.0]], dtype=torch.float64)])  # a far point: log p ~ -1e3, still exact
    expected = scipy_mixture_logpdf(x.numpy(), WEIGHTS, MEANS, VARIANCES)
    np.testing.assert_allclose(mix.log_prob(x).numpy(), expected, rtol=1e-12)
    assert mix.log_prob(x.float()).dtype == torch.float32


@pytest.mark.parametrize("make", [mixture_2d, mixture_image], ids=["2d", "image"])
def test_score_is_autograd_gradient_of_log_prob(make):
    mix = make()
    x = 2.5 * torch.randn(40, *mix.event_shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    score = mix.score(x)
    assert score.shape == x.shape
    torch.testing.assert_close(score, autograd_score(lambda y: mix.log_prob(y), x), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", SDE_CASES, ids=repr)
@pytest.mark.parametrize("make", [mixture_2d, mixture_image], ids=["2d", "image"])
def test_perturbed_score_is_autograd_gradient_of_perturbed_log_prob(case, make):
    """score_fn(sde)(x, t) = grad_x log_prob_fn(sde)(x, t) with one time per sample, t over [0, T]."""
    mix, sde = make(), case.make()
    B = 24
    t = torch.linspace(0.0, sde.T, B, dtype=torch.float64)
    x = 3.0 * torch.randn(B, *mix.event_shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    score = mix.score_fn(sde)(x, t)
    torch.testing.assert_close(score, autograd_score(mix.log_prob_fn(sde), x, t), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", SDE_CASES, ids=repr)
@pytest.mark.parametrize("make", [mixture_2d, mixture_image], ids=["2d", "image"])
def test_one_time_per_batch_equals_one_time_per_sample(case, make):
    """A float64 batch at one time (the solvers' calls: matrix products, no (B, K, D) tensor) gives the log-density,
    score and component posterior of the direct per-sample form to rounding, near the data and far from it."""
    mix, sde = make(), case.make()
    x = 3.0 * torch.randn(20, *mix.event_shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    x[0] = 40.0  # far from every component: log p ~ -1e3
    for t_value in (0.0, 0.02, 0.4 * sde.T, sde.T):
        shared = torch.full((20,), t_value, dtype=torch.float64)
        mixed = torch.cat([shared, torch.tensor([0.5 * sde.T], dtype=torch.float64)])  # forces the direct form
        x_mixed = torch.cat([x, x[:1]])
        for fn in (mix.log_prob_fn(sde), mix.score_fn(sde), mix.component_log_posterior_fn(sde)):
            torch.testing.assert_close(fn(x, shared), fn(x_mixed, mixed)[:20], rtol=1e-11, atol=1e-12)
    by_scipy = np.stack([
        np.log(w) + scipy_mixture_logpdf(x.numpy(), [1.0], [m.numpy()], [v.numpy()])
        for w, m, v in zip(mix.weights.tolist(), mix.means, mix.variances)
    ], axis=1).argmax(axis=1)
    np.testing.assert_array_equal(mix.most_probable_component(x).numpy(), by_scipy)


@pytest.mark.parametrize("case", SDE_CASES, ids=repr)
def test_perturbed_log_prob_matches_scipy(case):
    """log_prob_fn(sde)(x, t) = log sum_k w_k N(x; alpha mu_k, diag(alpha^2 v_k + sigma^2)) per sample, with
    alpha, sigma the independent closed forms."""
    mix, sde = mixture_2d(), case.make()
    times = np.linspace(0.0, sde.T, 6)
    x = 2.0 * torch.randn(6, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    logp = mix.log_prob_fn(sde)(x, torch.from_numpy(times))
    alpha, sigma = case.coeffs(times)
    for i in range(6):
        expected = scipy_mixture_logpdf(
            x[i : i + 1].numpy(),
            WEIGHTS,
            alpha[i] * np.array(MEANS),
            alpha[i] ** 2 * np.array(VARIANCES) + sigma[i] ** 2,
        )
        np.testing.assert_allclose(logp[i].item(), expected[0], rtol=1e-12)


@pytest.mark.parametrize("case", SDE_CASES, ids=repr)
def test_single_gaussian_score_is_the_closed_form(case):
    """K = 1: the score is ``-(x - alpha mu) / (alpha^2 s^2 + sigma^2)`` (float32 and float64)."""
    sde = case.make()
    data = sde_lib.GaussianMixture.gaussian(torch.full((3,), 1.0), 0.25)
    t = torch.linspace(0.0, sde.T, 9, dtype=torch.float64)
    x = torch.randn(9, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    expected = gaussian_data_score(case, 1.0, 0.25)(x, t)
    torch.testing.assert_close(data.score_fn(sde)(x, t), expected, rtol=1e-12, atol=1e-12)
    score32 = data.score_fn(sde)(x.float(), t.float())
    assert score32.dtype == torch.float32
    torch.testing.assert_close(score32.double(), expected, rtol=2e-5, atol=1e-6)


def _moment_tolerances(samples: np.ndarray):
    """5 standard errors for the per-coordinate sample mean and variance of ``n`` i.i.d. draws of ANY law:
    SE(mean) = sqrt(m2 / n), SE(var) = sqrt((m4 - m2^2) / n) (m2, m4 central sample moments)."""
    n = samples.shape[0]
    centred = samples - samples.mean(0)
    m2, m4 = (centred**2).mean(0), (centred**4).mean(0)
    return 5 * np.sqrt(m2 / n), 5 * np.sqrt((m4 - m2**2) / n)


def test_sample_moments_and_labels():
    """n = 40000 draws: mean and variance per coordinate within 5 SE of the closed form
    ``sum w mu`` and ``sum w (v + mu^2) - mean^2`` (written here in numpy); label frequencies within 5 binomial
    SE ``sqrt(w (1 - w) / n)``; each component's draws have its mean within 5 SE."""
    mix, n = mixture_2d(), 40000
    w, mu, v = np.array(WEIGHTS), np.array(MEANS), np.array(VARIANCES)
    mean = (w[:, None] * mu).sum(0)
    var = (w[:, None] * (v + mu**2)).sum(0) - mean**2
    np.testing.assert_allclose(mix.mean().numpy(), mean, rtol=1e-14)
    np.testing.assert_allclose(mix.variance().numpy(), var, rtol=1e-14)

    x, labels = mix.sample_with_labels(n, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    assert x.shape == (n, 2) and x.dtype == torch.float64 and labels.shape == (n,)
    samples = x.numpy()
    tol_mean, tol_var = _moment_tolerances(samples)
    assert (np.abs(samples.mean(0) - mean) <= tol_mean).all()
    assert (np.abs(samples.var(0, ddof=1) - var) <= tol_var).all()
    freq = np.bincount(labels.numpy(), minlength=3) / n
    assert (np.abs(freq - w) <= 5 * np.sqrt(w * (1 - w) / n)).all()
    for k in range(3):
        component = samples[labels.numpy() == k]
        assert (np.abs(component.mean(0) - mu[k]) <= 5 * np.sqrt(v[k] / len(component))).all()

    again = mix.sample(n, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    assert torch.equal(again, x)
    assert not torch.equal(mix.sample(n, generator=torch.Generator().manual_seed(7), dtype=torch.float64), x)
    assert mix.sample(3).dtype == torch.float32


@pytest.mark.parametrize("case", SDE_CASES, ids=repr)
def test_perturbed_is_the_law_of_alpha_x0_plus_sigma_z(case):
    """perturbed(sde, t) has components N(alpha mu_k, alpha^2 v_k + sigma^2) (closed-form alpha, sigma); its
    mean and variance match draws of ``mean + std z`` from ``marginal_prob(x0, t)``, ``x0 ~ mixture``, within
    5 SE (4th-moment SE, the law is not Gaussian; n = 40000); its log_prob equals log_prob_fn(sde) at t."""
    mix, sde = mixture_2d(), case.make()
    t = 0.37 * sde.T
    perturbed = mix.perturbed(sde, t)
    alpha, sigma = case.coeffs(np.array(t))
    np.testing.assert_allclose(perturbed.means.numpy(), alpha * np.array(MEANS), rtol=1e-12)
    np.testing.assert_allclose(perturbed.variances.numpy(), alpha**2 * np.array(VARIANCES) + sigma**2, rtol=1e-12)
    np.testing.assert_allclose(perturbed.weights.numpy(), WEIGHTS, rtol=0)

    n = 40000
    g = torch.Generator().manual_seed(8)
    x0 = mix.sample(n, generator=g, dtype=torch.float64)
    mean, std = sde.marginal_prob(x0, torch.full((n,), t, dtype=torch.float64))
    xt = (mean + std[:, None] * torch.randn(n, 2, generator=g, dtype=torch.float64)).numpy()
    tol_mean, tol_var = _moment_tolerances(xt)
    assert (np.abs(xt.mean(0) - perturbed.mean().numpy()) <= tol_mean).all()
    assert (np.abs(xt.var(0, ddof=1) - perturbed.variance().numpy()) <= tol_var).all()

    probe = torch.from_numpy(xt[:100])
    at_t = mix.log_prob_fn(sde)(probe, torch.full((100,), t, dtype=torch.float64))
    torch.testing.assert_close(perturbed.log_prob(probe), at_t, rtol=1e-12, atol=0)


def test_constructors():
    ring = sde_lib.GaussianMixture.ring(num_components=6, radius=2.0, std=0.5)
    assert ring.num_components == 6 and ring.event_shape == (2,)
    np.testing.assert_allclose(ring.means.norm(dim=1).numpy(), 2.0, rtol=1e-14)
    angles = np.mod(np.arctan2(ring.means[:, 1].numpy(), ring.means[:, 0].numpy()), 2 * np.pi)
    np.testing.assert_allclose(angles, np.arange(6) * 2 * np.pi / 6, atol=1e-12)
    np.testing.assert_allclose(ring.weights.numpy(), 1 / 6, rtol=1e-14)
    np.testing.assert_allclose(ring.variances.numpy(), 0.25, rtol=1e-14)
    np.testing.assert_allclose(ring.mean().numpy(), 0.0, atol=1e-14)

    single = sde_lib.GaussianMixture.gaussian(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[0.5, 1], [2, 3]]))
    assert single.num_components == 1 and single.event_shape == (2, 2)
    np.testing.assert_allclose(single.variance().numpy(), [[0.5, 1.0], [2.0, 3.0]], rtol=1e-14)
    x = torch.randn(5, 2, 2, dtype=torch.float64)
    expected = scipy.stats.norm.logpdf(x.numpy(), loc=[[1.0, 2.0], [3.0, 4.0]], scale=np.sqrt([[0.5, 1.0], [2.0, 3.0]]))
    np.testing.assert_allclose(single.log_prob(x).numpy(), expected.reshape(5, -1).sum(1), rtol=1e-12)


@pytest.mark.parametrize(
    "args,match",
    [
        (([1.0], torch.zeros(2), 1.0), "means must have shape"),
        (([0.5, 0.5], torch.zeros(3, 2), 1.0), r"weights must have shape \(K,\) = \(3,\)"),
        (([0.5, 0.6], torch.zeros(2, 2), 1.0), "weights must be non-negative and sum to 1"),
        (([1.5, -0.5], torch.zeros(2, 2), 1.0), "weights must be non-negative and sum to 1"),
        (([0.5, 0.5], torch.zeros(2, 2), torch.ones(3)), "variances must broadcast"),
        (([0.5, 0.5], torch.zeros(2, 2), 0.0), "variances must be > 0"),
        (([0.5, 0.5], torch.zeros(2, 2), torch.tensor([1.0, -1.0])), "variances must be > 0"),
    ],
)
def test_constructor_errors(args, match):
    with pytest.raises(ValueError, match=match):
        sde_lib.GaussianMixture(*args)


def test_call_errors():
    mix, sde = mixture_2d(), sde_lib.VPSDE()
    for bad in (torch.zeros(4, 3), torch.zeros(4), torch.zeros(4, 2, 1)):
        for call in (mix.log_prob, mix.score):
            with pytest.raises(ValueError, match=r"x must have shape \(B, \*\(2,\)\)"):
                call(bad)
    with pytest.raises(ValueError, match=r"x must have shape"):
        mix.score_fn(sde)(torch.zeros(4, 3), torch.full((4,), 0.5))
    with pytest.raises(ValueError, match=r"t must have shape \(4,\)"):
        mix.score_fn(sde)(torch.zeros(4, 2), torch.full((3,), 0.5))
    with pytest.raises(ValueError, match=r"t must lie in \[0, T\]"):
        mix.log_prob_fn(sde)(torch.zeros(4, 2), torch.full((4,), 1.5))
    with pytest.raises(ValueError, match=r"t must lie in \[0, T\]"):
        mix.perturbed(sde, 2.0)
    for n in (0, -5, 2.5):
        with pytest.raises(ValueError, match="n must be an integer >= 1"):
            mix.sample(n)
