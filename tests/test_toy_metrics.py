"""Metrics of 2-D toy samples: on true data samples the mean exact log-density estimates minus the entropy
(within 4 standard errors, CLT), and the sliced Wasserstein distance sits at the data-to-data noise floor; a shift
by ``v`` moves it to ``|v| / sqrt(2)`` (``E_theta (theta . v)^2 = |v|^2 / 2`` on the circle)."""

import math

import numpy as np
import pytest
import scipy.integrate
import scipy.special
import torch

import data_lib
from data_lib.toy import RING_NOISE, RING_RADII
from sample_quality import toy_metrics

N = 20_000


def rings_entropy():
    """-int p log p over the plane for the rings density, by quadrature in the radius (p depends on |x| only):
    p(r) = mean_k exp(-(r - R_k)^2 / 2 s^2) i0e(r R_k / s^2) / (2 pi s^2). Also returns the total mass."""
    s2 = RING_NOISE**2

    def density(r):
        return np.mean([np.exp(-((r - R) ** 2) / (2 * s2)) * scipy.special.i0e(r * R / s2) for R in RING_RADII]) / (2 * math.pi * s2)

    points = [R + k * RING_NOISE for R in RING_RADII for k in (-3, 0, 3)]
    mass = scipy.integrate.quad(lambda r: 2 * math.pi * r * density(r), 0, 6, points=points, limit=400)[0]
    entropy = scipy.integrate.quad(lambda r: -2 * math.pi * r * density(r) * math.log(max(density(r), 1e-300)), 0, 6, points=points, limit=400)[0]
    return entropy, mass


def negative_entropy_and_tolerance(name, samples):
    """-H(p_data) and 4 standard errors of the mean log-density of ``samples``."""
    values = data_lib.toy_log_prob(name)(samples.double())
    tolerance = 4 * float(values.std()) / math.sqrt(len(values))
    if name == "checkerboard":
        return -math.log(32.0), 1e-12  # uniform on area 32: log p is constant
    if name == "8gaussians":
        # 8 well separated components (neighbours 3.06 apart = 10 std): H = log 8 + log(2 pi e 0.3^2); the overlap
        # changes log p by at most 7 exp(-(3.06 / 2)^2 / (2 0.09)) ~ 1e-5 in the region holding the mass
        return -(math.log(8) + math.log(2 * math.pi * math.e * 0.09)), tolerance
    entropy, mass = rings_entropy()
    assert mass == pytest.approx(1.0, abs=1e-8)
    return -entropy, tolerance


@pytest.mark.parametrize("name", ["checkerboard", "8gaussians", "rings"])
def test_mean_log_density_of_data_is_minus_the_entropy(name):
    samples = data_lib.sample_toy(name, N, torch.Generator().manual_seed(0))
    metrics = toy_metrics(samples, name, torch.Generator().manual_seed(1), num_projections=64)
    expected, tolerance = negative_entropy_and_tolerance(name, samples)
    assert abs(metrics["sample_log_density"] - expected) < tolerance
    assert abs(metrics["data_log_density"] - expected) < negative_entropy_and_tolerance(name, data_lib.sample_toy(name, N, torch.Generator().manual_seed(1)))[1] + tolerance
    assert metrics["sample_zero_density_fraction"] == 0.0


def test_samples_off_the_support_are_counted():
    """The checkerboard shifted by one square: every point lands on a light square or off the board."""
    samples = data_lib.sample_toy("checkerboard", 1000, torch.Generator().manual_seed(0)) + torch.tensor([2.0, 0.0])
    metrics = toy_metrics(samples, "checkerboard", torch.Generator().manual_seed(1), num_projections=16)
    assert metrics["sample_zero_density_fraction"] == 1.0 and math.isnan(metrics["sample_log_density"])


@pytest.mark.parametrize("name", ["moons", "8gaussians"])
def test_sliced_wasserstein_of_data_is_at_the_floor_and_a_shift_is_seen(name):
    n, shift = 4000, torch.tensor([0.6, -0.8])  # |v| = 1
    data = data_lib.sample_toy(name, n, torch.Generator().manual_seed(2))
    true = toy_metrics(data, name, torch.Generator().manual_seed(3))
    moved = toy_metrics(data + shift, name, torch.Generator().manual_seed(3))
    floor = true["sliced_wasserstein_data_to_data"]
    assert floor == moved["sliced_wasserstein_data_to_data"]  # same generator seed: same data and directions
    assert true["sliced_wasserstein"] < 2 * floor  # a data sample is as far from data as another data sample
    # SW_2^2 of a shift is E (theta . v)^2 = 1/2 for the exact directions; with 256 projections (relative
    # Monte-Carlo error of E cos^2 about sqrt(1/8 / 256) = 2%) and the sampling floor, within 0.05 + 2 floor
    assert abs(moved["sliced_wasserstein"] - 1 / math.sqrt(2)) < 0.05 + 2 * floor
    assert ("sample_log_density" in true) == (name == "8gaussians")  # moons has no closed-form density


def test_toy_metrics_are_reproducible_from_the_generator():
    samples = data_lib.sample_toy("rings", 500, torch.Generator().manual_seed(0))
    first, second = (toy_metrics(samples, "rings", torch.Generator().manual_seed(5), 32) for _ in range(2))
    assert first == second
