"""Kernel Inception Distance against a direct O(n^2) loop and against the exact population MMD^2 of 1-D Gaussians
(unbiasedness); Inception score against a direct computation and its exact values 1 and K."""

import math

import numpy as np
import pytest
import torch

from sample_quality import inception_score, kernel_inception_distance


def loop_mmd2(x, y, degree=3, gamma=None, coef0=1.0):
    """The unbiased MMD^2 with the polynomial kernel, one pair at a time."""
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    k = lambda a, b: (gamma * float(np.dot(a, b)) + coef0) ** degree  # noqa: E731
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


@pytest.mark.parametrize("degree, gamma, coef0", [(3, None, 1.0), (2, 0.5, 0.3)])
def test_kid_of_whole_sets_equals_the_direct_loop(degree, gamma, coef0):
    """With subset_size = N every subset is the whole set (in some order), so the value is the loop's, exactly."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 5)), rng.normal(0.3, 1.2, size=(40, 5))
    mean, std = kernel_inception_distance(torch.from_numpy(x), y, subsets=3, subset_size=40, degree=degree, gamma=gamma, coef0=coef0)
    assert mean == pytest.approx(loop_mmd2(x, y, degree, gamma, coef0), rel=1e-10)
    assert std == pytest.approx(0.0, abs=1e-10 * abs(mean))


def test_kid_subsets_follow_the_documented_draws():
    """Subsets: rows drawn without replacement by numpy.random.default_rng(seed), x then y, per subset."""
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(60, 3)), rng.normal(size=(50, 3)) + 0.2
    mean, std = kernel_inception_distance(x, y, subsets=4, subset_size=25, seed=7)
    draws = np.random.default_rng(7)
    values = [loop_mmd2(x[draws.choice(60, 25, replace=False)], y[draws.choice(50, 25, replace=False)]) for _ in range(4)]
    assert (mean, std) == pytest.approx((np.mean(values), np.std(values)), rel=1e-10)
    assert kernel_inception_distance(x, y, 4, 25, seed=7) == (mean, std)  # seeded


def population_mmd2_1d(moments_p, moments_q, degree=3, gamma=1.0, coef0=1.0):
    """Exact MMD^2 for the 1-D polynomial kernel: k(x, y) = sum_j C(d, j) gamma^j coef0^(d-j) x^j y^j, so
    MMD^2 = sum_j C(d, j) gamma^j coef0^(d-j) (E_p x^j - E_q x^j)^2."""
    return sum(math.comb(degree, j) * gamma**j * coef0 ** (degree - j) * (moments_p[j] - moments_q[j]) ** 2 for j in range(degree + 1))


def gaussian_moments(mu, s):
    return [1.0, mu, mu**2 + s**2, mu**3 + 3 * mu * s**2]


@pytest.mark.parametrize("mu, s", [(0.0, 1.0), (0.3, 1.2)])
def test_kid_is_unbiased_for_the_population_mmd2(mu, s):
    """1-D Gaussians N(0, 1) vs N(mu, s^2): the mean over 200 subsets of 200 from pools of 40 000 (subsets overlap
    by 0.5% on average, so nearly independent) lies within 4 standard errors std / sqrt(200) of the exact MMD^2
    (0 for equal distributions, where a biased estimator would be off by about 2 (E k(x, x) - E k(x, x')) / 200)."""
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(40_000, 1)), rng.normal(mu, s, size=(40_000, 1))
    mean, std = kernel_inception_distance(x, y, subsets=200, subset_size=200, seed=3)
    exact = population_mmd2_1d(gaussian_moments(0.0, 1.0), gaussian_moments(mu, s))
    assert abs(mean - exact) < 4 * std / math.sqrt(200)


def test_kid_checks_its_arguments():
    x = np.zeros((10, 2))
    with pytest.raises(ValueError, match="subset_size"):
        kernel_inception_distance(x, x, subsets=1, subset_size=11)
    with pytest.raises(ValueError, match="features"):
        kernel_inception_distance(x, np.zeros((10, 3)), subsets=1, subset_size=5)


def direct_inception_score(probs, splits):
    scores = []
    for part in np.array_split(probs, splits):
        marginal = part.mean(axis=0)
        kl = [sum(p * math.log(p / q) for p, q in zip(row, marginal) if p > 0) for row in part]
        scores.append(math.exp(np.mean(kl)))
    return np.mean(scores), np.std(scores)


def test_inception_score_equals_the_direct_computation():
    logits = torch.randn(103, 7, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 2
    probs = torch.softmax(logits, dim=1).numpy()
    expected = direct_inception_score(probs, 5)  # 103 rows: parts of 21, 21, 21, 20, 20
    assert inception_score(logits, 5) == pytest.approx(expected, rel=1e-10)
    assert inception_score(probs, 5, probabilities=True) == pytest.approx(expected, rel=1e-10)
    assert inception_score(logits.float(), 5) == pytest.approx(expected, rel=1e-5)


def test_inception_score_exact_values():
    """Identical rows: p(y | x) = p(y), IS = 1. One-hot rows spread evenly over K classes: IS = K."""
    same = np.tile([0.2, 0.5, 0.3], (40, 1))
    assert inception_score(same, 4, probabilities=True) == pytest.approx((1.0, 0.0), abs=1e-12)
    one_hot = np.eye(6)[np.arange(60) % 6]
    assert inception_score(one_hot, 5, probabilities=True) == pytest.approx((6.0, 0.0), abs=1e-12)
    with pytest.raises(ValueError, match="splits"):
        inception_score(same, 0)
