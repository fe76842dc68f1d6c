"""2-D toy densities (``data_lib.toy``): sample moments against exact moments derived independently here, the
exposed exact densities against the samples (chi-square goodness of fit on a grid), determinism and errors.

Tolerances: a sample mean of ``f(X)`` is compared with its exact expectation within ``Z`` standard errors,
``SE = std(f(X)) / sqrt(n)`` (sample std); counts within ``Z`` binomial standard errors; chi-square statistics
against the ``1 - 1e-4`` quantile of their chi-square null distribution.
"""

import math

import numpy as np
import pytest
import scipy.integrate
import scipy.stats
import torch

import ml_collections

from data_lib import TOY_DATASETS, TOY_NUM_CLASSES, get_dataset, sample_toy, sample_toy_with_labels, toy_gaussian_mixture, toy_log_prob

N = 40_000
Z = 5.0  # standard errors allowed


def samples(name, n=N, seed=0, dtype=torch.float64):
    return sample_toy(name, n, torch.Generator().manual_seed(seed), dtype=dtype)


def uniform_square_moments(corners, side):
    """E[x], E[y], E[x^2], E[y^2], E[xy] of the uniform law on a union of equal squares with lower-left ``corners``."""
    c = np.asarray(corners, dtype=float) + side / 2
    var = side**2 / 12
    return [c[:, 0].mean(), c[:, 1].mean(), (c[:, 0] ** 2 + var).mean(), (c[:, 1] ** 2 + var).mean(), (c[:, 0] * c[:, 1]).mean()]


def exact_moments(name):
    """E[x], E[y], E[x^2], E[y^2], E[xy] from each density's definition (closed form or scipy quadrature)."""
    if name == "8gaussians":  # 8 Gaussians of std 0.3 at radius 4
        a = 2 * np.pi * np.arange(8) / 8
        mx, my = 4 * np.cos(a), 4 * np.sin(a)
        return [mx.mean(), my.mean(), (mx**2).mean() + 0.09, (my**2).mean() + 0.09, (mx * my).mean()]
    if name == "checkerboard":  # squares [2i-4, 2i-2) x [2j-4, 2j-2), i + j even
        return uniform_square_moments([(2 * i - 4, 2 * j - 4) for i in range(4) for j in range(4) if (i + j) % 2 == 0], 2.0)
    if name == "rings":  # radii 1..4, uniform angle, noise 0.1: E[x^2] = E[R^2] / 2 + s^2
        r2 = np.mean(np.square([1.0, 2.0, 3.0, 4.0]))
        return [0.0, 0.0, r2 / 2 + 0.01, r2 / 2 + 0.01, 0.0]
    if name == "moons":  # upper moon (cos a - 1/2, sin a - 1/4), lower = -upper, scaled by 2, noise 0.2
        exx, eyy, exy = 0.75, 0.5625 - 1 / np.pi, 0.125 - 1 / np.pi
        return [0.0, 0.0, 4 * exx + 0.04, 4 * eyy + 0.04, 4 * exy]
    if name == "swissroll":  # t ~ U[1.5 pi, 4.5 pi], (t cos t, t sin t) / 5, noise 0.2
        lo, hi = 1.5 * np.pi, 4.5 * np.pi

        def e(f):
            return scipy.integrate.quad(f, lo, hi, limit=200)[0] / (hi - lo)

        return [
            e(lambda t: t * np.cos(t)) / 5,
            e(lambda t: t * np.sin(t)) / 5,
            e(lambda t: (t * np.cos(t)) ** 2) / 25 + 0.04,
            e(lambda t: (t * np.sin(t)) ** 2) / 25 + 0.04,
            e(lambda t: t**2 * np.cos(t) * np.sin(t)) / 25,
        ]
    if name == "pinwheel":  # 5-fold symmetric: mean 0, isotropic; |x|^2 = 4 ((1 + 0.3 a)^2 + (0.1 b)^2)
        half = 4 * (1 + 0.09 + 0.01) / 2
        return [0.0, 0.0, half, half, 0.0]
    raise AssertionError(name)


@pytest.mark.parametrize("name", TOY_DATASETS)
def test_sample_moments_match_exact_moments(name):
    x = samples(name)
    stats = torch.stack([x[:, 0], x[:, 1], x[:, 0] ** 2, x[:, 1] ** 2, x[:, 0] * x[:, 1]], dim=1)
    mean, se = stats.mean(0), stats.std(0) / math.sqrt(N)
    exact = torch.tensor(exact_moments(name), dtype=torch.float64)
    assert (mean - exact).abs().le(Z * se).all(), f"{name}: sample {mean.tolist()} vs exact {exact.tolist()} (SE {se.tolist()})"


def test_checkerboard_mass_per_square():
    """Each of the 8 dark squares holds 1/8 of the points (binomial SE); the 8 light squares hold none."""
    x = samples("checkerboard")
    col, row = torch.floor((x[:, 0] + 4) / 2).long(), torch.floor((x[:, 1] + 4) / 2).long()
    assert ((col >= 0) & (col < 4) & (row >= 0) & (row < 4)).all()
    counts = torch.bincount(col * 4 + row, minlength=16).reshape(4, 4)
    dark = (torch.arange(4)[:, None] + torch.arange(4)[None]) % 2 == 0
    assert counts[~dark].sum() == 0
    p = 1 / 8
    assert (counts[dark] - N * p).abs().max() < Z * math.sqrt(N * p * (1 - p))


def grid_cell_probabilities(log_prob, lo=-6.0, hi=6.0, cells=24, sub=20):
    """Probability of each cell of a ``cells x cells`` grid on ``[lo, hi]^2``: midpoint rule, ``sub^2`` points per cell."""
    h = (hi - lo) / (cells * sub)
    axis = lo + h * (torch.arange(cells * sub, dtype=torch.float64) + 0.5)
    xx, yy = torch.meshgrid(axis, axis, indexing="ij")
    density = log_prob(torch.stack([xx.flatten(), yy.flatten()], 1)).exp().reshape(cells, sub, cells, sub)
    return density.sum((1, 3)) * h * h


def chi_square(x, probs, lo=-6.0, hi=6.0):
    """Pearson statistic of the grid counts of ``x`` against ``probs``; cells expecting < 5 points pooled with the
    outside of the grid. Returns the statistic and its degrees of freedom."""
    cells = probs.shape[0]
    idx = torch.floor((x - lo) / (hi - lo) * cells).long()
    inside = ((idx >= 0) & (idx < cells)).all(1)
    counts = torch.bincount(idx[inside, 0] * cells + idx[inside, 1], minlength=cells * cells).double()
    expected = probs.flatten() * len(x)
    big = expected >= 5
    observed = torch.cat([counts[big], (len(x) - counts[big].sum()).reshape(1)])
    expect = torch.cat([expected[big], (len(x) - expected[big].sum()).reshape(1)])
    if expect[-1] < 5:  # (almost) no mass left to pool: then (almost) no point may fall there
        if observed[-1] > 5:
            return math.inf, int(big.sum()) - 1
        observed, expect = observed[:-1], expect[:-1]
    return float(((observed - expect) ** 2 / expect).sum()), len(expect) - 1


@pytest.mark.parametrize("name", ["8gaussians", "checkerboard", "rings"])
def test_exact_density_integrates_to_one_and_fits_the_samples(name):
    probs = grid_cell_probabilities(toy_log_prob(name))
    assert abs(float(probs.sum()) - 1.0) < 1e-3  # quadrature error; the grid holds all but < 1e-9 of the mass
    stat, dof = chi_square(samples(name, 20_000), probs)
    assert stat < scipy.stats.chi2.ppf(1 - 1e-4, dof), f"{name}: chi2 {stat:.1f} on {dof} dof"


def test_goodness_of_fit_rejects_a_slightly_wrong_density():
    """Power check of the test above: modes 10% wider than the sampled 8gaussians are rejected."""
    wider = toy_gaussian_mixture("8gaussians")
    wider.variances = wider.variances * 1.21
    stat, dof = chi_square(samples("8gaussians", 20_000), grid_cell_probabilities(wider.log_prob))
    assert stat > scipy.stats.chi2.ppf(1 - 1e-4, dof)


def test_rings_density_matches_numerical_angle_integral():
    """The closed form with ``I_0`` equals the density of the ring written as an integral over the angle (scipy)."""
    points = torch.tensor([[0.3, 0.1], [1.95, 0.2], [-2.1, 2.0], [0.0, -4.05], [5.0, 5.0]], dtype=torch.float64)
    s2 = 0.01

    def ring_density(x, y, r):
        f = lambda a: np.exp(-((x - r * np.cos(a)) ** 2 + (y - r * np.sin(a)) ** 2) / (2 * s2)) / (2 * np.pi * s2)
        return scipy.integrate.quad(f, 0, 2 * np.pi, epsabs=0, epsrel=1e-11, limit=400, points=[np.arctan2(y, x) % (2 * np.pi)])[0] / (2 * np.pi)

    exact = [np.log(np.mean([ring_density(x, y, r) for r in (1, 2, 3, 4)])) for x, y in points.tolist()]
    np.testing.assert_allclose(toy_log_prob("rings")(points).numpy(), exact, rtol=1e-7, atol=1e-7)


def rings_radius_law():
    """|x| of a circle of radius R blurred by N(0, s^2 I) is Rice(R / s, scale s): the rings' radius is a 4-mixture."""
    return [scipy.stats.rice(b=r / 0.1, scale=0.1) for r in (1.0, 2.0, 3.0, 4.0)]


def test_rings_radius_follows_the_rice_mixture():
    """Kolmogorov-Smirnov test of the sampled radii against the exact radial CDF (scipy's Rice law)."""
    radii = samples("rings").norm(dim=1).numpy()
    laws = rings_radius_law()
    p_value = scipy.stats.kstest(radii, lambda r: np.mean([law.cdf(r) for law in laws], axis=0)).pvalue
    assert p_value > 1e-4


def test_rings_density_is_the_rice_density_over_the_circle():
    """p(x) = p_radius(|x|) / (2 pi |x|) (the angle is uniform), with the radial density from scipy."""
    x = samples("rings", 200, seed=9)
    r = x.norm(dim=1).numpy()
    radial = np.log(np.mean([law.pdf(r) for law in rings_radius_law()], axis=0))
    np.testing.assert_allclose(toy_log_prob("rings")(x).numpy(), radial - np.log(2 * np.pi * r), rtol=1e-9, atol=1e-9)


def test_eight_gaussians_is_the_documented_mixture():
    mixture = toy_gaussian_mixture("8gaussians")
    angles = 2 * math.pi * torch.arange(8, dtype=torch.float64) / 8
    torch.testing.assert_close(mixture.means, 4 * torch.stack([angles.cos(), angles.sin()], 1))
    torch.testing.assert_close(mixture.variances, torch.full((8, 2), 0.09, dtype=torch.float64))
    x = samples("8gaussians", 100)
    torch.testing.assert_close(toy_log_prob("8gaussians")(x), mixture.log_prob(x))
    assert toy_gaussian_mixture("rings") is None


def test_no_density_where_there_is_no_closed_form():
    assert [name for name in TOY_DATASETS if toy_log_prob(name) is None] == ["moons", "swissroll", "pinwheel"]


@pytest.mark.parametrize("name", TOY_DATASETS)
def test_same_seed_same_points(name):
    a, b, c = samples(name, 500, seed=3), samples(name, 500, seed=3), samples(name, 500, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert sample_toy(name, 7, torch.Generator().manual_seed(0)).dtype == torch.float32


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="checkerboard.*swissroll.*8gaussians"):
        sample_toy("spirals", 10)
    with pytest.raises(ValueError, match="known"):
        toy_log_prob("spirals")
    with pytest.raises(ValueError, match="n must be"):
        sample_toy("moons", 0)


# ------------------------------------------------------------------ class labels
@pytest.mark.parametrize("name", sorted(TOY_NUM_CLASSES))
def test_labels_are_those_of_the_drawn_points(name):
    """The points of sample_toy_with_labels are exactly those of sample_toy (same generator state), and each class is
    drawn with probability 1/K: the counts lie within 5 binomial standard deviations of n/K."""
    n, k = 20000, TOY_NUM_CLASSES[name]
    points, labels = sample_toy_with_labels(name, n, torch.Generator().manual_seed(3))
    assert torch.equal(points, sample_toy(name, n, torch.Generator().manual_seed(3)))
    assert labels.dtype == torch.int64 and labels.shape == (n,)
    counts = torch.bincount(labels, minlength=k).double()
    assert len(counts) == k
    assert (counts - n / k).abs().max() < 5 * math.sqrt(n * (1 / k) * (1 - 1 / k))


def test_labels_name_the_component_geometrically():
    """Each label is the piece of the density its point belongs to: the checkerboard square (exact), the ring of the
    nearest radius (misassigned only if the noise exceeds 5 of its sd: probability ~6e-7 per point), the nearest
    of the 8 Gaussian means (std 0.3 against a spacing of 3.06: misassigned with probability ~1e-7), the moon on
    the side of the separating curve (the upper moon is the negated lower one, noise 0.2 per coordinate)."""
    n = 5000
    x, y = sample_toy_with_labels("checkerboard", n, torch.Generator().manual_seed(0), dtype=torch.float64)
    corners = 2.0 * torch.tensor([(i, j) for i in range(4) for j in range(4) if (i + j) % 2 == 0], dtype=torch.float64) - 4.0
    assert torch.equal(torch.floor((x - corners[y]) / 2.0), torch.zeros_like(x))
    x, y = sample_toy_with_labels("rings", n, torch.Generator().manual_seed(0), dtype=torch.float64)
    nearest = (x.norm(dim=1, keepdim=True) - torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)).abs().argmin(dim=1)
    assert torch.equal(nearest, y)
    x, y = sample_toy_with_labels("8gaussians", n, torch.Generator().manual_seed(0), dtype=torch.float64)
    means = toy_gaussian_mixture("8gaussians").means.to(torch.float64)
    assert torch.equal(torch.cdist(x, means).argmin(dim=1), y)
    x, y = sample_toy_with_labels("moons", n, torch.Generator().manual_seed(0), dtype=torch.float64)
    assert float((x[y == 0, 1] > -1.5).double().mean()) > 0.99 and float((x[y == 1, 1] < 1.5).double().mean()) > 0.99
    assert float(x[y == 0, 1].mean()) > 0.4 and float(x[y == 1, 1].mean()) < -0.4  # upper moon: mean y = 2 * (2/pi - 1/4)


def test_datasets_carry_labels_and_swissroll_has_none():
    config = ml_collections.ConfigDict({"data": {"dataset": "8gaussians", "dim": 2, "num_train": 64, "num_test": 32, "seed": 1}})
    train = get_dataset(config, "train")
    assert train.labels is not None and train.labels.shape == (64,)
    assert torch.equal(torch.cdist(train.data.double(), toy_gaussian_mixture("8gaussians").means.double()).argmin(1), train.labels)
    assert sample_toy_with_labels("swissroll", 8, torch.Generator().manual_seed(0))[1] is None
    config.data.dataset = "swissroll"
    assert get_dataset(config, "test").labels is None
