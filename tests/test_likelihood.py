"""Log-likelihoods and bits/dim from the probability-flow ODE, proven on data whose density is known exactly.

With the exact score of Gaussian or Gaussian-mixture data, the ODE's change of variables is exact except for two
things: the solver's error, and the prior ``p_T`` that stands in for the true law of ``x(T)`` (the reference has the
same mismatch). Tests that measure the solver swap the prior for the exact ``log p_T(z)``: then ``logp`` must equal
the exact ``log p_eps(x)`` to within the solver's tolerance.
"""

import math

import pytest
import torch

from data_lib.dequantize import uniform_dequantize

import sde_lib
from samplers.ode import ode_sample
from samplers.likelihood import (
    bits_per_dim,
    dequantized_bits_per_dim,
    hutchinson_probe,
    log_likelihood,
)

SDES = {
    "vp": lambda: sde_lib.VPSDE(),
    "subvp": lambda: sde_lib.subVPSDE(),
    "ve": lambda: sde_lib.VESDE(sigma_min=0.01, sigma_max=10.0),
}
EPS = 1e-5


def anisotropic_gaussian(event_shape) -> sde_lib.GaussianMixture:
    """N(mu, diag(v)) with distinct variances, so that the divergence is not a multiple of the dimension."""
    d = math.prod(event_shape)
    mean = torch.linspace(-1.0, 1.0, d, dtype=torch.float64).reshape(1, *event_shape)
    var = torch.linspace(0.1, 1.5, d, dtype=torch.float64).reshape(1, *event_shape)
    return sde_lib.GaussianMixture(torch.ones(1, dtype=torch.float64), mean, var)


def solver_error(sde, data, x, logp, z) -> torch.Tensor:
    """|logp with the prior replaced by the exact log p_T(z)  -  exact log p_eps(x)|, per sample."""
    exact_log_pt = data.log_prob_fn(sde)
    batch = x.shape[0]
    t_end = torch.full((batch,), sde.T, dtype=x.dtype)
    corrected = logp - sde.prior_logp(z) + exact_log_pt(z, t_end)
    return (corrected - exact_log_pt(x, torch.full((batch,), EPS, dtype=x.dtype))).abs()


@pytest.mark.parametrize("sde_name", SDES)
@pytest.mark.parametrize("event_shape", [(2,), (64,), (3, 8, 8)], ids=["2", "64", "3x8x8"])
def test_exact_divergence_gives_gaussian_log_density(sde_name, event_shape):
    """Gaussian data in 2, 64 and 3x8x8 dimensions: logp matches the closed-form log-density to 1e-3 nats.

    At rtol = atol = 1e-6 the error measured is about 1e-4 nats. The solver's error norm is the RMS over the D + 1
    state entries, so the log-density accumulator's error grows with D at a fixed tolerance: at the default 1e-5 it
    reaches about 1e-3 nats for D = 192.
    """
    sde = SDES[sde_name]()
    data = anisotropic_gaussian(event_shape)
    x = data.sample(8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    logp, z, nfe = log_likelihood(sde, data.score_fn(sde), x, divergence="exact", eps=EPS, rtol=1e-6, atol=1e-6)
    assert logp.shape == (8,) and z.shape == x.shape and nfe > 0
    assert solver_error(sde, data, x, logp, z).max() < 1e-3


@pytest.mark.parametrize("sde_name", SDES)
def test_exact_divergence_gives_mixture_log_density(sde_name):
    """2-D Gaussian mixture (8 components on a circle): logp matches its exact log-density to 1e-3 nats."""
    sde = SDES[sde_name]()
    data = sde_lib.GaussianMixture.ring()
    x = data.sample(64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    logp, z, _ = log_likelihood(sde, data.score_fn(sde), x, divergence="exact", eps=EPS)
    assert solver_error(sde, data, x, logp, z).max() < 1e-3


def test_prior_mismatch_is_the_only_other_error():
    """Without the swap, the error is the prior's: log N(z; 0, I) - log p_T(z), which is small but not zero for VP."""
    sde = sde_lib.VPSDE()
    data = anisotropic_gaussian((2,))
    x = data.sample(16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    logp, z, _ = log_likelihood(sde, data.score_fn(sde), x, divergence="exact", eps=EPS)
    exact = data.log_prob_fn(sde)(x, torch.full((16,), EPS, dtype=torch.float64))
    prior_gap = sde.prior_logp(z) - data.log_prob_fn(sde)(z, torch.full((16,), sde.T, dtype=torch.float64))
    assert torch.allclose(logp - exact, prior_gap, atol=1e-3)


@pytest.mark.parametrize("divergence", ["rademacher", "gaussian"])
def test_hutchinson_estimators_are_unbiased(divergence):
    """On the mixture (whose Jacobian is not diagonal) the Hutchinson estimate has the exact logp as its mean.

    Each of 4 points is repeated 150 times in the batch; every copy has its own probe and, on the torch solver, its
    own independent solve. The mean over copies must lie within 4 standard errors (sample std / sqrt(150)) plus the
    solver tolerance (1e-3) of the exact-divergence value.
    """
    sde = sde_lib.VPSDE()
    data = sde_lib.GaussianMixture.ring()
    points = data.sample(4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    copies = 150
    x = points.repeat_interleave(copies, dim=0)
    exact, _, _ = log_likelihood(sde, data.score_fn(sde), points, divergence="exact", eps=EPS)
    logp, _, _ = log_likelihood(
        sde, data.score_fn(sde), x, divergence=divergence, eps=EPS, generator=torch.Generator().manual_seed(4)
    )
    logp = logp.reshape(4, copies)
    stderr = logp.std(dim=1) / math.sqrt(copies)
    assert (logp.std(dim=1) > 1e-3).all(), "the estimator should have a spread on non-diagonal Jacobians"
    assert ((logp.mean(dim=1) - exact).abs() <= 4 * stderr + 1e-3).all()


def test_rademacher_is_exact_for_diagonal_jacobians():
    """For a diagonal Jacobian, v^T J v = trace J whenever v_i^2 = 1: Rademacher probes give the exact divergence."""
    sde = sde_lib.subVPSDE()
    data = anisotropic_gaussian((8,))
    x = data.sample(8, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    exact, _, _ = log_likelihood(sde, data.score_fn(sde), x, divergence="exact")
    rad, _, _ = log_likelihood(sde, data.score_fn(sde), x, divergence="rademacher", generator=torch.Generator().manual_seed(6))
    assert torch.allclose(exact, rad, atol=1e-8)


def test_probes_are_reproducible():
    x = torch.zeros(3, 5)
    a = hutchinson_probe(x, "rademacher", torch.Generator().manual_seed(0))
    b = hutchinson_probe(x, "rademacher", torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and set(a.unique().tolist()) <= {-1.0, 1.0}


def test_scipy_path_agrees_with_torch_path():
    sde = sde_lib.VESDE(sigma_max=10.0)
    data = sde_lib.GaussianMixture.ring()
    x = data.sample(8, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    torch_logp, torch_z, _ = log_likelihood(sde, data.score_fn(sde), x, divergence="exact", method="dopri5")
    scipy_logp, scipy_z, _ = log_likelihood(sde, data.score_fn(sde), x, divergence="exact", method="RK45")
    assert torch.allclose(torch_logp, scipy_logp, atol=2e-3)
    assert torch.allclose(torch_z, scipy_z, atol=1e-3)


@pytest.mark.parametrize("sde_name", SDES)
def test_encode_with_log_likelihood_then_decode_with_ode_sampler(sde_name):
    """The latent z from log_likelihood, decoded by ode_sample down to the same eps, returns the data."""
    sde = SDES[sde_name]()
    data = sde_lib.GaussianMixture.ring()
    x = data.sample(32, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    _, z, _ = log_likelihood(sde, data.score_fn(sde), x, divergence="exact", eps=1e-3, rtol=1e-7, atol=1e-7)
    decoded, _ = ode_sample(sde, data.score_fn(sde), x.shape, z=z, eps=1e-3, method="dopri5", rtol=1e-7, atol=1e-7)
    assert (decoded - x).abs().max() < 1e-4


# ---------------------------------------------------------------------------------------------- bits/dim
@pytest.mark.parametrize("centered", [False, True], ids=["[0,1]", "[-1,1]"])
@pytest.mark.parametrize("n_bins", [2, 17, 256])
def test_bits_per_dim_equals_direct_change_of_variables(centered, n_bins):
    """bits/dim against the density of the same model written directly on [0, 1].

    The model is a Gaussian mixture in the model's space y = a u + b; its pushforward to u-space is the mixture with
    means (m - b) / a and variances v / a^2, whose exact log-density gives bpd = -log p_u(u) / (D ln 2) + log2(n_bins)
    with no offset to derive. Both sides use the density at time eps, so they agree to the solver's tolerance.
    """
    a, b = (2.0, -1.0) if centered else (1.0, 0.0)
    inverse_scaler = (lambda y: (y + 1.0) / 2.0) if centered else None
    sde = sde_lib.VPSDE()
    u_means = torch.tensor([[0.3, 0.6, 0.5], [0.7, 0.2, 0.4]], dtype=torch.float64)
    model_y = sde_lib.GaussianMixture([0.4, 0.6], a * u_means + b, (a * 0.1) ** 2)
    u = torch.rand(12, 3, generator=torch.Generator().manual_seed(8), dtype=torch.float64) * 0.8 + 0.1
    y = a * u + b
    bpd, _, nfe = bits_per_dim(sde, model_y.score_fn(sde), y, n_bins=n_bins, inverse_scaler=inverse_scaler, divergence="exact", eps=EPS)
    # direct: the law of x(eps) in y-space, pushed to u-space
    perturbed = model_y.perturbed(sde, EPS)
    model_u = sde_lib.GaussianMixture(perturbed.weights, (perturbed.means - b) / a, perturbed.variances / a**2)
    direct = -model_u.log_prob(u) / (3 * math.log(2.0)) + math.log2(n_bins)
    # prior mismatch at T (as in test_prior_mismatch_is_the_only_other_error) is absorbed by swapping in the exact p_T
    logp, z, _ = log_likelihood(sde, model_y.score_fn(sde), y, divergence="exact", eps=EPS)
    prior_gap = sde.prior_logp(z) - model_y.log_prob_fn(sde)(z, torch.full((12,), sde.T, dtype=torch.float64))
    assert torch.allclose(bpd + prior_gap / (3 * math.log(2.0)), direct, atol=1e-3)
    assert nfe > 0


def test_reference_offsets_for_8_bit_data():
    """For 8-bit data the derived offset is the reference's 8 on [0, 1] and 7 on [-1, 1] (7 - inverse_scaler(-1))."""
    sde = sde_lib.VPSDE()
    data = anisotropic_gaussian((2,))
    y = torch.full((4, 2), 0.5, dtype=torch.float64)
    logp, _, _ = log_likelihood(sde, data.score_fn(sde), y, divergence="exact")
    plain, _, _ = bits_per_dim(sde, data.score_fn(sde), y, divergence="exact")
    centered, _, _ = bits_per_dim(sde, data.score_fn(sde), y, inverse_scaler=lambda v: (v + 1) / 2, divergence="exact")
    nats_to_bits = -logp / (2 * math.log(2.0))
    assert torch.allclose(plain - nats_to_bits, torch.full_like(plain, 8.0))
    assert torch.allclose(centered - nats_to_bits, torch.full_like(plain, 7.0))


def test_uniform_dequantize_maps_levels_to_their_cells():
    n_bins = 17
    levels = torch.arange(n_bins, dtype=torch.float64) / (n_bins - 1)
    x = levels.repeat(50)
    u = uniform_dequantize(x, n_bins, torch.Generator().manual_seed(9))
    k = torch.arange(n_bins, dtype=torch.float64).repeat(50)
    assert ((u >= k / n_bins) & (u < (k + 1) / n_bins)).all()
    again = uniform_dequantize(x, n_bins, torch.Generator().manual_seed(9))
    assert torch.equal(u, again)


def test_dequantized_bits_per_dim_never_below_the_entropy():
    """Independent pixels on 4 levels with known probabilities: the dequantized bits/dim is an upper bound.

    For any model, E[bpd] >= cross-entropy >= entropy H (bits per dimension). The model here is built for the data: a
    product mixture with one narrow component per cell (weights = the level probabilities), so the bound is nearly tight:
    we check H - 3 SE <= mean bpd <= H + 0.3, with SE the reported standard error over samples and dequantizations.
    """
    n_bins, dims = 4, 2
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    entropy_bits = float(-(probs * probs.log2()).sum())
    grid = torch.cartesian_prod(*[torch.arange(n_bins)] * dims)  # (16, 2) level indices
    weights = probs[grid].prod(dim=1)
    centers = (grid.to(torch.float64) + 0.5) / n_bins
    model = sde_lib.GaussianMixture(weights, centers, (0.3 / n_bins) ** 2)
    gen = torch.Generator().manual_seed(10)
    levels = torch.multinomial(probs, 64 * dims, replacement=True, generator=gen).reshape(64, dims)
    x = levels.to(torch.float64) / (n_bins - 1)
    sde = sde_lib.VPSDE()
    result = dequantized_bits_per_dim(
        sde, model.score_fn(sde), x, n_bins=n_bins, num_repeats=2, generator=gen, divergence="exact", eps=1e-3
    )
    assert result.per_sample.shape == (64,) and result.nfe > 0 and result.stderr > 0
    assert result.mean >= entropy_bits - 3 * result.stderr
    assert result.mean <= entropy_bits + 0.3


# ---------------------------------------------------------------------------------------------- errors
def test_bad_arguments_raise_before_work():
    sde = sde_lib.VPSDE()
    data = anisotropic_gaussian((2,))
    x = torch.full((2, 2), 0.5)
    score = data.score_fn(sde)
    with pytest.raises(ValueError, match="divergence"):
        log_likelihood(sde, score, x, divergence="hutch")
    with pytest.raises(ValueError, match="eps"):
        log_likelihood(sde, score, x, eps=0.0)
    with pytest.raises(ValueError, match="eps"):
        log_likelihood(sde, score, x, eps=1.0)
    with pytest.raises(ValueError, match="rtol"):
        log_likelihood(sde, score, x, rtol=0.0)
    with pytest.raises(ValueError, match="method"):
        log_likelihood(sde, score, x, method="euler")
    with pytest.raises(ValueError, match="n_bins"):
        bits_per_dim(sde, score, x, n_bins=1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        bits_per_dim(sde, score, x + 2.0)
    with pytest.raises(ValueError, match="affine"):
        bits_per_dim(sde, score, x, inverse_scaler=lambda y: y**2)
    with pytest.raises(ValueError, match="levels"):
        uniform_dequantize(torch.tensor([0.5]), n_bins=4)
    with pytest.raises(ValueError, match="num_repeats"):
        dequantized_bits_per_dim(sde, score, x, num_repeats=0)
