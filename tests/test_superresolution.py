"""Super-resolution as a linear inverse problem (``samplers.controllable.superresolution``) and the measurement
operators it shares with inpainting and colorization (``samplers.controllable.operators``), against exact answers.

Data with an exact score: a Gaussian ``N(mu, Sigma)`` on 1x4x4 images with a smooth (squared-exponential,
non-diagonal) covariance, so that pixels are correlated within and across 2x2 blocks and the block means inform the
detail. Given ``A x = y`` (``A``: the orthonormal block average, 4 x 16) the exact conditional is the Gaussian
``N(mu + Sigma A^T (A Sigma A^T)^-1 (y - A mu), Sigma - Sigma A^T (A Sigma A^T)^-1 A Sigma)``, degenerate along the
rows of ``A``; samples are compared with it in an orthonormal basis ``Q`` of the 12-dimensional null space of ``A``
(where it is non-degenerate), with :func:`test_controllable.assert_gaussian_law`: every mean, variance and
covariance within ``k = sqrt(K_SE^2 + 2 ln(#checks))`` standard errors (``K_SE = 4``; 90 checks: ``k = 5.0``).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from samplers.controllable import (
    BlockAverage,
    GreyLevelOperator,
    KnownValueReplacement,
    MaskOperator,
    colour_decoupling_matrix,
    get_pc_superresolver,
    pc_inpaint,
    pc_superresolve,
    smc_superresolve,
)
from samplers.controllable.operators import ChannelTransform, operator_matrix
from sde_lib import VESDE, VPSDE
from test_controllable import FullGaussian, K_SE, assert_gaussian_law, make_sde, seeded

SHAPE = (1, 4, 4)  # one example: C, H, W
FACTOR = 2
LOW_RES = torch.tensor([[0.9, -0.4], [0.2, 1.3]], dtype=torch.float64).reshape(1, 1, 2, 2)  # block means given


def image_gaussian() -> FullGaussian:
    """``N(mu, Sigma)`` on 1x4x4 images: ``Sigma_ij = 0.8 exp(-|p_i - p_j|^2 / 2) + 0.05 delta_ij`` (correlation
    0.6 between neighbours) and a mean with a gradient."""
    rows, cols = torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij")
    points = torch.stack([rows.reshape(-1), cols.reshape(-1)], dim=1).double()
    sigma = 0.8 * torch.exp(-0.5 * torch.cdist(points, points) ** 2) + 0.05 * torch.eye(16, dtype=torch.float64)
    mu = 0.1 * (points[:, 0] - points[:, 1])
    return FullGaussian(mu, sigma)


def block_matrix() -> torch.Tensor:
    return operator_matrix(BlockAverage(FACTOR), (1, *SHAPE))


def exact_conditional(gaussian: FullGaussian, a: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance of ``x`` given ``A x = y`` (flattened; the covariance has rank ``D - m``)."""
    gain = gaussian.sigma @ a.T @ torch.linalg.inv(a @ gaussian.sigma @ a.T)
    return gaussian.mu + gain @ (y - a @ gaussian.mu), gaussian.sigma - gain @ a @ gaussian.sigma


def null_basis(a: torch.Tensor) -> torch.Tensor:
    """``(D, D - m)``: an orthonormal basis of the null space of ``a`` (``m x D``, full row rank)."""
    return torch.linalg.svd(a, full_matrices=True).Vh[a.shape[0]:].T


def assert_conditional_law(x: torch.Tensor, gaussian: FullGaussian, label: str, se_factor: float = 1.0) -> None:
    a = block_matrix()
    mean, cov = exact_conditional(gaussian, a, (FACTOR * LOW_RES).reshape(-1))
    q = null_basis(a)
    assert_gaussian_law(x.reshape(x.shape[0], -1).double() @ q, q.T @ mean, q.T @ cov @ q, label, se_factor)


def replacement_chain_law(sde, gaussian: FullGaussian, a: torch.Tensor, y: torch.Tensor, eps: float):
    """Exact mean and covariance of ``x_mean`` returned by the replacement PC chain (reverse-diffusion predictor, no
    corrector, exact score) for the measurement matrix ``a`` (orthonormal rows): every step is affine with additive
    Gaussian noise, and the replacement at time ``t`` sets ``m -> P m + alpha_t A^T y``, ``C -> P C P + sigma_t^2
    A^T A`` with ``P = I - A^T A`` (the generalization of ``test_controllable.replacement_chain_law``'s masks)."""
    d = gaussian.mu.numel()
    score = gaussian.score_fn(sde)
    rsde = sde.reverse(score)
    eye = torch.eye(d, dtype=torch.float64)
    p = eye - a.T @ a
    basis = torch.cat([torch.zeros(1, d, dtype=torch.float64), eye])
    vec = lambda t: torch.full((d + 1,), t, dtype=torch.float64)  # noqa: E731

    def replace(m, c, t):
        alpha, std = (v.item() for v in sde.marginal_coeffs(torch.tensor([t], dtype=torch.float64)))
        return p @ m + alpha * a.T @ y, p @ c @ p + std**2 * a.T @ a

    times = torch.linspace(sde.T, eps, sde.N, dtype=torch.float64).tolist()
    m, c = replace(torch.zeros(d, dtype=torch.float64), sde.prior_std**2 * eye, sde.T)
    for t, t_next in zip(times, times[1:] + [0.0]):
        out = basis - rsde.discretize(basis, vec(t))[0]
        step, shift = (out[1:] - out[0]).T, out[0]
        g = rsde.discretize(basis, vec(t))[1][0].item()
        mean_m, mean_c = step @ m + shift, step @ c @ step.T
        m, c = replace(mean_m, mean_c + g**2 * eye, t_next)
    return replace(mean_m, mean_c, 0.0)  # x_mean after the last step, its measured part then set by finish


def shaped(n: int, dtype=torch.float64) -> torch.Tensor:
    return LOW_RES.to(dtype).expand(n, 1, 2, 2)


# ---------------------------------------------------------------------------------------------- operator algebra
def operators() -> dict[str, tuple]:
    mask = torch.rand(1, 2, 3, 3, generator=seeded(0)) > 0.4
    return {
        "block 2": (BlockAverage(2), (1, 2, 4, 6)),
        "block 3": (BlockAverage(3), (1, 1, 6, 3)),
        "grey": (GreyLevelOperator(colour_decoupling_matrix()), (1, 3, 2, 2)),
        "mask": (MaskOperator(mask), (1, 2, 3, 3)),
    }


@pytest.mark.parametrize("name", ["block 2", "block 3", "grey", "mask"])
def test_operators_have_orthonormal_rows_and_consistent_maps(name):
    """``A A^T = I`` (float64, to 1e-15); ``lift`` is ``A^T``; ``project(lift(y)) = y``; ``complete(x, y)`` has
    measurement ``y`` and the orthogonal part of ``x``; ``complete(x, A x) = x``; the measurement noise has
    unit variance (20000 draws, ``K_SE`` standard errors)."""
    operator, shape = operators()[name]
    a = operator_matrix(operator, shape)
    torch.testing.assert_close(a @ a.T, torch.eye(a.shape[0], dtype=torch.float64), rtol=0, atol=1e-15)
    x = torch.randn(5, *shape[1:], generator=seeded(1), dtype=torch.float64)
    y = operator.project(torch.randn(5, *shape[1:], generator=seeded(2), dtype=torch.float64))
    flat = lambda v: v.reshape(v.shape[0], -1)  # noqa: E731
    measured = (lambda v: flat(v)[:, operator.mask[0].reshape(-1)]) if name == "mask" else flat  # noqa: E731
    torch.testing.assert_close(measured(operator.project(x)), flat(x) @ a.T, rtol=0, atol=1e-14)
    torch.testing.assert_close(flat(operator.lift(y)), measured(y) @ a, rtol=0, atol=1e-14)
    torch.testing.assert_close(operator.project(operator.lift(y)), y, rtol=0, atol=1e-14)
    completed = operator.complete(x, y)
    torch.testing.assert_close(operator.project(completed), y, rtol=0, atol=1e-14)
    p = torch.eye(a.shape[1], dtype=torch.float64) - a.T @ a
    torch.testing.assert_close(flat(completed) @ p, flat(x) @ p, rtol=0, atol=1e-14)
    torch.testing.assert_close(operator.complete(x, operator.project(x)), x, rtol=0, atol=1e-14)
    assert operator.data_shape(operator.project(x)) == tuple(x.shape)
    noise = operator.standard_normal(operator.project(torch.zeros(20000, *shape[1:], dtype=torch.float64)), seeded(3))
    draws = measured(noise)
    assert abs(draws.mean()) < K_SE / math.sqrt(draws.numel())
    assert abs(draws.var() - 1) < K_SE * math.sqrt(2 / draws.numel())
    if name == "mask":
        assert torch.all(flat(noise)[:, ~operator.mask[0].reshape(-1)] == 0)  # nothing outside the measured values


def test_block_average_is_the_block_mean_times_the_factor():
    """``A x = f * mean`` of each ``f x f`` block (loops over the blocks), ``A^T y`` = ``y / f`` on each block; the
    user's block means map to the measurement and back; a measurement of another factor does not divide."""
    operator = BlockAverage(3)
    x = torch.randn(2, 2, 6, 9, generator=seeded(4), dtype=torch.float64)
    means = torch.stack([torch.stack([x[:, :, 3 * i:3 * i + 3, 3 * j:3 * j + 3].mean(dim=(2, 3)) for j in range(3)], -1)
                         for i in range(2)], -2)
    torch.testing.assert_close(operator.block_means(x), means, rtol=0, atol=1e-15)
    torch.testing.assert_close(operator.project(x), 3 * means, rtol=0, atol=1e-14)
    lifted = operator.lift(operator.project(x))
    torch.testing.assert_close(lifted[:, :, 3:6, 6:9], means[:, :, 1:2, 2:3].expand(2, 2, 3, 3), rtol=0, atol=1e-14)
    torch.testing.assert_close(operator.to_block_means(operator.from_block_means(means)), means, rtol=0, atol=1e-15)


def test_mask_and_grey_operators_reproduce_the_previous_replacement():
    """The hook on :class:`MaskOperator` is the previous inpainting replacement, bit for bit: known values
    ``where(mask, alpha data + std z, x)`` with ``z = randn(data.shape)``; on :class:`GreyLevelOperator` the previous
    colorization replacement in the decoupled space ``M^T where(grey, (M alpha data)_0 + std z_0, M x)`` with ``z``
    a standard normal of the decoupled space, to float rounding (``alpha (M data)`` vs ``M (alpha data)``)."""
    sde = make_sde("vp", 10)
    t = torch.full((6,), 0.4)
    alpha, std = (v[:, None, None, None] for v in sde.marginal_coeffs(t))
    data, x, x_mean = (torch.randn(6, 3, 2, 2, generator=seeded(s)) for s in (5, 6, 7))
    mask = torch.rand(6, 3, 2, 2, generator=seeded(8)) > 0.5
    operator = MaskOperator(mask)
    new_x, new_mean = KnownValueReplacement(sde, operator, operator.project(data), seeded(9))(x, x_mean, t)
    z = torch.randn(data.shape, generator=seeded(9))
    assert torch.equal(new_x, torch.where(mask, alpha * data + std * z, x))
    assert torch.equal(new_mean, torch.where(mask, alpha * data, x_mean))

    space = ChannelTransform(colour_decoupling_matrix(torch.float32))
    operator = GreyLevelOperator(space.matrix)
    new_x, new_mean = KnownValueReplacement(sde, operator, operator.project(data), seeded(9))(x, x_mean, t)
    grey = torch.zeros_like(mask)
    grey[:, 0] = True
    z = torch.randn(data.shape, generator=seeded(9))
    expected = space.inverse(torch.where(grey, space.forward(alpha * data) + std * z, space.forward(x)))
    torch.testing.assert_close(new_x, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(new_mean, space.inverse(torch.where(grey, space.forward(alpha * data), space.forward(x_mean))),
                               rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------- samplers, exact laws
def test_replacement_keeps_the_block_means_exactly():
    """With ``denoise`` the block means of the result are ``low_res`` up to float rounding (float32: 1e-6, a few
    roundings of values below 4; float64: 1e-14), for PC and SMC, and the detail is generated (not flat blocks)."""
    gaussian, sde = image_gaussian(), make_sde("ve", 30)
    low = shaped(64, torch.float32)
    x, nfe = pc_superresolve(sde, gaussian.score_fn(sde), low, FACTOR, corrector="ald", generator=seeded(10))
    assert x.shape == (64, *SHAPE) and x.dtype == torch.float32 and nfe == 2 * sde.N
    assert (BlockAverage(FACTOR).block_means(x) - low).abs().max() <= 1e-6 * max(1.0, float(x.abs().max()))
    assert (x - BlockAverage(FACTOR).upsample(low)).std() > 0.1
    x64, _ = smc_superresolve(sde, gaussian.score_fn(sde), low.double(), FACTOR, num_particles=4, generator=seeded(11))
    torch.testing.assert_close(BlockAverage(FACTOR).block_means(x64), low.double(), rtol=0, atol=1e-14)
    again, _ = smc_superresolve(sde, gaussian.score_fn(sde), low.double(), FACTOR, num_particles=4, generator=seeded(11))
    assert torch.equal(x64, again)  # same seed, same result


@pytest.mark.parametrize("sde_name", ["vp", "ve"])
def test_pc_superresolution_follows_the_exact_law_of_the_replacement_chain(sde_name):
    """n = 20000 replacement-method super-resolutions (predictor only, N = 25) against the chain's exact Gaussian law
    (:func:`replacement_chain_law`): the hook, the times and the block operator, with no discretization bias in the
    comparison, only standard errors."""
    gaussian, sde, n = image_gaussian(), make_sde(sde_name, 25), 20000
    a = block_matrix()
    x, _ = pc_superresolve(sde, gaussian.score_fn(sde), shaped(n), FACTOR, corrector="none", generator=seeded(12))
    mean, cov = replacement_chain_law(sde, gaussian, a, (FACTOR * LOW_RES).reshape(-1), 1e-3)
    q = null_basis(a)
    assert_gaussian_law(x.reshape(n, -1) @ q, q.T @ mean, q.T @ cov @ q, f"{sde_name} replacement chain")


# n = 1000 SMC super-resolutions with K = 64 particles each (N = 100 steps, exact score), one sample each, against
# the exact conditional. Measured (seed 13), the largest |z| of the means / variances / covariances: VP 1.8 / 2.8 /
# 3.1, sub-VP 1.7 / 3.3 / 2.5, VE 1.7 / 3.5 / 2.7 (bound 5.0). With K = 32 the variances drift to 4.5 (the O(1/K)
# bias of the particle filter). The replacement method on the same problem (VP, predictor only) is off in the
# mean by 7.0 standard errors.
SMC_N, SMC_K, SMC_SAMPLES = 100, 64, 1000


@pytest.mark.parametrize("sde_name", ["vp", "subvp", "ve"])
def test_smc_superresolution_samples_the_exact_conditional(sde_name):
    """SMCDiff with the block operator: the 12 coordinates orthogonal to the block means follow the exact conditional
    Gaussian (means, variances, covariances within ``k = 5.0`` standard errors)."""
    gaussian, sde = image_gaussian(), make_sde(sde_name, SMC_N)
    x, nfe = smc_superresolve(sde, gaussian.score_fn(sde), shaped(SMC_SAMPLES), FACTOR, num_particles=SMC_K,
                              generator=seeded(13))
    assert nfe == SMC_N and x.shape == (SMC_SAMPLES, *SHAPE)
    assert_conditional_law(x, gaussian, f"{sde_name} SMC")
    if sde_name == "vp":
        replaced, _ = pc_superresolve(sde, gaussian.score_fn(sde), shaped(SMC_SAMPLES), FACTOR, corrector="none",
                                      generator=seeded(13))
        with pytest.raises(AssertionError, match="off by"):
            assert_conditional_law(replaced, gaussian, "replacement")


class ZeroNet(nn.Module):
    """A network whose output (a noise prediction) is zero: the score is 0, so samples stay near the prior."""

    def forward(self, x, labels):
        return torch.zeros_like(x)


def test_reference_style_superresolver():
    """``get_pc_superresolver``: the network read through its parameterization, the inverse scaler applied, the
    block means kept (float32 rounding relative to the largest value: a zero score lets the reverse-diffusion steps
    grow the state, to ~100)."""
    sde = VPSDE(N=25)  # N >= beta_max for DDPM's discretization
    run = get_pc_superresolver(sde, "reverse_diffusion", "none", lambda x: 2 * x, 0.16, eps=1e-3)
    low = shaped(3, torch.float32)
    out = run(ZeroNet(), low, FACTOR, generator=seeded(14))
    rounding = 1e-6 * max(1.0, float(out.abs().max()))
    torch.testing.assert_close(BlockAverage(FACTOR).block_means(out / 2), low, rtol=0, atol=rounding)


# ---------------------------------------------------------------------------------------------- bad input
def test_bad_arguments_raise_one_line_value_errors():
    sde, score = VESDE(N=5), lambda x, t: -x  # noqa: E731
    low = torch.zeros(2, 1, 2, 2)
    cases = [
        ("factor", lambda: pc_superresolve(sde, score, low, 0)),
        ("factor", lambda: smc_superresolve(sde, score, low, 2.0)),
        ("factor", lambda: BlockAverage(True)),
        ("low_res", lambda: pc_superresolve(sde, score, torch.zeros(2, 2, 2, dtype=torch.long), 2)),
        ("low_res", lambda: smc_superresolve(sde, score, torch.zeros(2, 4), 2)),
        ("low_res", lambda: smc_superresolve(sde, score, torch.zeros(2, 1, 1, 2, 2), 2)),
        ("factor=3 must divide the image size", lambda: BlockAverage(3).check_data(torch.zeros(1, 1, 4, 6))),
        ("num_particles", lambda: smc_superresolve(sde, score, low, 2, num_particles=0)),
        ("predictor", lambda: pc_superresolve(sde, score, low, 2, predictor="bogus")),
        ("sde", lambda: pc_superresolve("vp", score, low, 2)),
        ("mask", lambda: pc_inpaint(sde, score, torch.zeros(2, 3), torch.full((2, 3), 0.5))),
        ("3 colour channels", lambda: GreyLevelOperator(colour_decoupling_matrix()).check_data(torch.zeros(2, 1, 2, 2))),
    ]
    for name, call in cases:
        with pytest.raises(ValueError, match=name) as error:
            call()
        assert "\n" not in str(error.value)
