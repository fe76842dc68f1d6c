"""Projections of the denoised estimate: the data's range (``samplers.clip_denoised``, ``config.sampling.clip_denoised``)
and a measurement (``samplers.consistent_denoised``).

The oracle is the exact score of a Gaussian mixture whose components sit well inside the box ``[-1, 1]^D`` with a
small spread, so that its exact denoised estimate ``E[x(0) | x(t)]`` lies inside the box: the clip must leave that
score unchanged, and must move a wrong score's denoised estimate towards the exact one in every coordinate.
"""

import math

import ml_collections
import pytest
import torch
from torch import nn

import data_lib
import sde_lib
from samplers import clip_denoised, consistent_denoised, get_sampling_fn, sampling_score_transform
from samplers.controllable import BlockAverage

SDES = {
    "vp": sde_lib.VPSDE(beta_min=0.1, beta_max=20.0, N=1000),
    "subvp": sde_lib.subVPSDE(beta_min=0.1, beta_max=20.0, N=1000),
    "ve": sde_lib.VESDE(sigma_min=0.01, sigma_max=10.0, N=1000),
}


def inside_box_mixture(dim: int = 6) -> sde_lib.GaussianMixture:
    """Three components with means in ``[-0.7, 0.7]`` and standard deviation 0.01: the exact denoised estimate stays
    more than 0.1 inside ``[-1, 1]`` at every time (its component terms move a mean by at most the prior's 0.01-scale
    spread times a few standard deviations)."""
    means = torch.tensor([[0.7, -0.7, 0.0] * (dim // 3), [-0.5, 0.5, 0.3] * (dim // 3), [0.0, 0.2, -0.6] * (dim // 3)],
                         dtype=torch.float64)
    return sde_lib.GaussianMixture([0.5, 0.3, 0.2], means, 1e-4)


def marginal_points(mixture, sde, t: float, n: int, seed: int) -> torch.Tensor:
    return mixture.perturbed(sde, t).sample(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def denoised(sde, score_fn, x, t):
    alpha, sigma = sde.marginal_coeffs(t)
    return (x + sigma.square()[:, None] * score_fn(x, t)) / alpha[:, None]


def denoised4(sde, score_fn, x, t):
    """:func:`denoised` of image batches ``(B, C, H, W)``."""
    alpha, sigma = (c[:, None, None, None] for c in sde.marginal_coeffs(t))
    return (x + sigma.square() * score_fn(x, t)) / alpha


@pytest.mark.parametrize("name", list(SDES))
@pytest.mark.parametrize("t", [0.01, 0.2, 0.6, 1.0])
def test_an_exact_score_inside_the_box_is_unchanged(name, t):
    sde, mixture = SDES[name], inside_box_mixture()
    exact = mixture.score_fn(sde)
    x = marginal_points(mixture, sde, t, 500, seed=1)
    tt = torch.full((500,), t, dtype=torch.float64)
    assert denoised(sde, exact, x, tt).abs().max() < 0.9  # the premise: the exact estimate is inside the box
    torch.testing.assert_close(clip_denoised(sde, exact, (-1.0, 1.0))(x, tt), exact(x, tt), rtol=1e-10, atol=1e-8)


@pytest.mark.parametrize("name", list(SDES))
@pytest.mark.parametrize("t", [0.05, 0.5, 1.0])
def test_a_wrong_score_is_moved_towards_the_exact_one_in_every_coordinate(name, t):
    """The clip is a projection onto a box holding the exact estimate: it never increases a coordinate's error, and
    where the wrong estimate leaves the box it lands exactly on the box's face."""
    sde, mixture = SDES[name], inside_box_mixture()
    exact = mixture.score_fn(sde)
    x = marginal_points(mixture, sde, t, 500, seed=2)
    tt = torch.full((500,), t, dtype=torch.float64)
    offset = torch.randn(x.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    alpha, sigma = (c[:, None] for c in sde.marginal_coeffs(tt))
    wrong = lambda x, t: exact(x, t) + alpha * offset / sigma**2  # noqa: E731  (a denoised-estimate error N(0, 1))
    d_exact, d_wrong = denoised(sde, exact, x, tt), denoised(sde, wrong, x, tt)
    d_clipped = denoised(sde, clip_denoised(sde, wrong, (-1.0, 1.0)), x, tt)
    outside = d_wrong.abs() > 1
    assert outside.float().mean() > 0.2  # the test means something: many coordinates are clipped
    assert ((d_clipped - d_exact).abs() <= (d_wrong - d_exact).abs() + 1e-9).all()
    assert ((d_clipped - d_exact).abs() < (d_wrong - d_exact).abs())[outside].all()
    torch.testing.assert_close(d_clipped, d_wrong.clamp(-1, 1), rtol=0, atol=1e-9)


def test_a_bound_score_keeps_its_restrict():
    sde, mixture = SDES["vp"], inside_box_mixture()
    calls = []

    def score_fn(x, t):
        return mixture.score_fn(sde)(x, t)

    def restrict(rows):
        calls.append(rows.tolist())
        return score_fn

    score_fn.restrict = restrict
    clipped = clip_denoised(sde, score_fn, (-1.0, 1.0))
    x = marginal_points(mixture, sde, 0.3, 4, seed=4)
    restricted = clipped.restrict(torch.tensor([0, 2]))
    assert calls == [[0, 2]]
    tt = torch.full((2,), 0.3, dtype=torch.float64)
    torch.testing.assert_close(restricted(x[[0, 2]], tt), clipped(x[[0, 2]], tt))


@pytest.mark.parametrize("bad", [(1.0, -1.0), (0.0, math.inf), (0.0,), "range"])
def test_bad_ranges_are_refused(bad):
    with pytest.raises(ValueError, match="data_range"):
        clip_denoised(SDES["vp"], lambda x, t: x, bad)


# ----------------------------------------------------------------------------------------------- config path
class MixtureNetwork(nn.Module):
    """The VP noise predictor ``-sigma(t) s(x, t)`` of a mixture, plus ``shift / sigma(t)`` (a wrong network when not
    0: its denoised estimate is off by ``-shift / alpha(t)`` in every coordinate)."""

    def __init__(self, sde, mixture, shift: float = 0.0):
        super().__init__()
        self.sde, self.mixture, self.shift = sde, mixture, shift
        self.unused = nn.Parameter(torch.zeros((), dtype=torch.float64))  # gives the network a dtype

    def forward(self, x, labels):
        t = labels / 999
        sigma = self.sde.marginal_coeffs(t)[1]
        return (-sigma * self.mixture.score_fn(self.sde)(x, t).T + self.shift / sigma).T


def image_config(clip: bool, dataset: str = "digits") -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.training = ml_collections.ConfigDict({"sde": "vpsde", "continuous": True})
    config.model = ml_collections.ConfigDict({"beta_min": 0.1, "beta_max": 20.0, "num_scales": 1000})
    config.data = ml_collections.ConfigDict({"dataset": dataset, "centered": True})
    config.sampling = ml_collections.ConfigDict(
        {"method": "fast", "nfe": 12, "noise_removal": True, "clip_denoised": clip, "mixed_precision": "no"}
    )
    return config


def test_the_data_range_in_model_coordinates():
    assert data_lib.model_data_range(image_config(True)) == (-1.0, 1.0)
    uncentred = image_config(True)
    uncentred.data.centered = False
    assert data_lib.model_data_range(uncentred) == (0.0, 1.0)
    assert data_lib.model_data_range(image_config(True, "tones")) == (-1.0, 1.0)
    assert data_lib.model_data_range(image_config(True, "checkerboard")) is None


def test_configured_sampling_clips_and_leaves_exact_samples_alone():
    """With the exact score the clip changes no sample (to the float32 round-off of the sampler's state); with a network whose noise prediction
    makes a denoised estimate off by 0.5 or more the unclipped samples leave the data's range and the clipped ones (noise removal: the
    last step is the clipped estimate) do not."""
    sde, mixture = SDES["vp"], inside_box_mixture()
    shape, seed = (200, 6), 5
    exact = MixtureNetwork(sde, mixture)
    a, nfe = get_sampling_fn(image_config(True), sde, shape, None, 1e-3)(exact, torch.Generator().manual_seed(seed))
    b, _ = get_sampling_fn(image_config(False), sde, shape, None, 1e-3)(exact, torch.Generator().manual_seed(seed))
    assert nfe == 12
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    wrong = MixtureNetwork(sde, mixture, shift=0.5)
    c, _ = get_sampling_fn(image_config(False), sde, shape, None, 1e-3)(wrong, torch.Generator().manual_seed(seed))
    d, _ = get_sampling_fn(image_config(True), sde, shape, None, 1e-3)(wrong, torch.Generator().manual_seed(seed))
    assert c.abs().max() > 1.1
    assert d.abs().max() <= 1.0


def test_toy_data_refuse_the_clip_naming_the_field():
    with pytest.raises(ValueError, match="config.sampling.clip_denoised"):
        sampling_score_transform(image_config(True, "checkerboard"), SDES["vp"])
    with pytest.raises(ValueError, match="config.sampling.clip_denoised"):
        get_sampling_fn(image_config(True, "checkerboard"), SDES["vp"], (4, 2), None, 1e-3)


# ----------------------------------------------------------------------------------------- measurement consistency
@pytest.mark.parametrize("name", list(SDES))
def test_the_consistent_estimate_meets_the_measurement_and_moves_towards_any_consistent_point(name):
    """``A D' = y`` exactly; ``D' - D`` lies in the row space of ``A`` (the unmeasured part of ``D`` is kept); and for a
    point ``x*`` with ``A x* = y`` (where the exact conditional estimate lies), ``|D' - x*| <= |D - x*|`` per sample."""
    sde, operator = SDES[name], BlockAverage(2)
    g = torch.Generator().manual_seed(6)
    target = torch.rand((8, 1, 4, 4), generator=g, dtype=torch.float64) * 2 - 1
    y = operator.project(target)
    x = torch.randn((8, 1, 4, 4), generator=g, dtype=torch.float64)
    t = torch.full((8,), 0.4, dtype=torch.float64)
    wrong = lambda x, t: -x + torch.sin(3 * x)  # noqa: E731  (any score)
    d = denoised4(sde, wrong, x, t)
    d_consistent = denoised4(sde, consistent_denoised(sde, wrong, operator, y), x, t)
    torch.testing.assert_close(operator.project(d_consistent), y, rtol=0, atol=1e-12)
    change = d_consistent - d
    torch.testing.assert_close(operator.complete(change, operator.project(change)), change, rtol=0, atol=1e-12)
    before = (d - target).flatten(1).norm(dim=1)
    after = (d_consistent - target).flatten(1).norm(dim=1)
    assert (after <= before + 1e-12).all() and (after < before - 1e-3).all()


def test_the_consistent_score_restricts_its_measurement_with_its_rows():
    sde, operator = SDES["vp"], BlockAverage(2)
    g = torch.Generator().manual_seed(7)
    y = operator.project(torch.rand((4, 1, 4, 4), generator=g, dtype=torch.float64))
    x = torch.randn((4, 1, 4, 4), generator=g, dtype=torch.float64)
    t = torch.full((4,), 0.3, dtype=torch.float64)
    full = consistent_denoised(sde, lambda x, t: -x, operator, y)
    rows = torch.tensor([1, 3])
    torch.testing.assert_close(full.restrict(rows)(x[rows], t[rows]), full(x, t)[rows])
    nested = full.restrict(rows).restrict(torch.tensor([1]))
    torch.testing.assert_close(nested(x[[3]], t[[3]]), full(x, t)[[3]])
