"""The divergence products and the accuracy-aware tolerance of the probability-flow likelihood, against exact answers.

* Forward mode (``jvp``) and reverse mode (``vjp``) give the same ``v^T J v`` for the same probe, and averaged over
  every sign vector of a 2-D problem, Rademacher probes give the exact Jacobian trace of a Gaussian mixture's
  probability-flow drift (``sum_v v^T J v / 2^d = tr J``: the cross terms cancel).
* :func:`samplers.likelihood.choose_tolerance` meets the accuracy asked for on Gaussian data, whose log-density is
  known in closed form (the solver's error alone: the prior is swapped for the exact ``log p_T``, and Rademacher
  probes are exact for the Gaussian's diagonal Jacobian), and :func:`solver_error` estimates that error.
* The config fields and the one-line ``ValueError`` of bad input.
"""

import itertools
import math

import pytest
import torch

import sde_lib
from configs import load_config
from configs.toolkit_fields import TOOLKIT_FIELDS
from jobs.config_checks import config_errors, field_error
from jobs.evaluation import likelihood_options
from samplers.likelihood import _drift_and_divergence, choose_tolerance, hutchinson_probe, log_likelihood, solver_error
from samplers.ode import probability_flow_drift

from test_likelihood import anisotropic_gaussian as gaussian

EPS = 1e-5


def true_error(sde, data, x, logp, z) -> torch.Tensor:
    """Signed solver error per sample: logp with the prior replaced by the exact log p_T(z), minus the exact log p_eps(x)."""
    exact = data.log_prob_fn(sde)
    batch = x.shape[0]
    corrected = logp - sde.prior_logp(z) + exact(z, torch.full((batch,), sde.T, dtype=x.dtype))
    return corrected - exact(x, torch.full((batch,), EPS, dtype=x.dtype))


# ---------------------------------------------------------------------------------------------- products
@pytest.mark.parametrize("sde", [sde_lib.VPSDE(), sde_lib.VESDE(sigma_max=10.0)], ids=["vp", "ve"])
def test_products_agree_and_average_to_the_exact_trace(sde):
    data = sde_lib.GaussianMixture.ring()
    drift_fn = probability_flow_drift(sde, data.score_fn(sde))
    x = data.sample(6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.linspace(0.05, 0.9, 6, dtype=torch.float64)
    _, exact = _drift_and_divergence(drift_fn, t, x, None)
    # an independent oracle for the trace: the full Jacobian of each sample's drift
    jac_trace = torch.stack([
        torch.autograd.functional.jacobian(lambda y: drift_fn(t[i : i + 1], y[None])[0], x[i]).trace() for i in range(6)
    ])
    torch.testing.assert_close(exact, jac_trace, rtol=1e-10, atol=1e-10)
    estimates = {"vjp": [], "jvp": []}
    for signs in itertools.product((-1.0, 1.0), repeat=2):
        probe = torch.tensor(signs, dtype=torch.float64).expand(6, 2).contiguous()
        for product in estimates:
            drift, div = _drift_and_divergence(drift_fn, t, x, probe, product)
            torch.testing.assert_close(drift, drift_fn(t, x), rtol=1e-12, atol=1e-12)
            estimates[product].append(div)
    torch.testing.assert_close(torch.stack(estimates["jvp"]), torch.stack(estimates["vjp"]), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(torch.stack(estimates["jvp"]).mean(0), exact, rtol=1e-10, atol=1e-10)


def test_log_likelihood_is_the_same_with_either_product():
    sde, data = sde_lib.VPSDE(), sde_lib.GaussianMixture.ring()
    x = data.sample(8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    runs = [log_likelihood(sde, data.score_fn(sde), x, product=product, rtol=1e-6, atol=1e-6,
                           generator=torch.Generator().manual_seed(2)) for product in ("vjp", "jvp")]
    torch.testing.assert_close(runs[0][0], runs[1][0], rtol=0, atol=1e-6)


def test_explicit_probes_are_those_the_generator_would_draw():
    sde, data = sde_lib.VPSDE(), gaussian((4,))
    x = data.sample(5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    probe = hutchinson_probe(x, "gaussian", torch.Generator().manual_seed(4))
    drawn = log_likelihood(sde, data.score_fn(sde), x, divergence="gaussian", generator=torch.Generator().manual_seed(4))
    given = log_likelihood(sde, data.score_fn(sde), x, divergence="gaussian", probe=probe)
    assert torch.equal(drawn[0], given[0])


# ---------------------------------------------------------------------------------------------- tolerance from accuracy
@pytest.mark.parametrize("accuracy", [3e-2, 3e-3])
def test_chosen_tolerance_meets_the_accuracy_on_a_gaussian(accuracy):
    """192-D Gaussian, VP: the tolerance chosen on 4 samples gives 32 other samples a mean |error| within the accuracy,
    the estimate is within a factor 3 of the check samples' true error, and a looser rung would not have met it."""
    sde, data = sde_lib.VPSDE(), gaussian((3, 8, 8))
    score = data.score_fn(sde)
    check = data.sample(4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    choice = choose_tolerance(sde, score, check, accuracy, generator=torch.Generator().manual_seed(6))
    assert choice.error <= choice.bound <= accuracy and choice.samples == 4 and choice.nfe > 0 and choice.rtol == choice.atol

    logp, z, _ = log_likelihood(sde, score, check, rtol=choice.rtol, atol=choice.rtol)  # Rademacher: exact here
    check_error = float(true_error(sde, data, check, logp, z).abs().mean())
    assert choice.error / 3 <= check_error <= 3 * choice.error

    x = data.sample(32, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    logp, z, _ = log_likelihood(sde, score, x, rtol=choice.rtol, atol=choice.rtol)
    assert float(true_error(sde, data, x, logp, z).abs().mean()) <= accuracy
    if choice.rtol < 1e-2:  # the ladder starts at 1e-2: the rung above the choice failed the accuracy
        logp, z, _ = log_likelihood(sde, score, check, rtol=choice.rtol * 10, atol=choice.rtol * 10)
        looser = float(true_error(sde, data, check, logp, z).abs().mean())
        assert looser > accuracy / 3


def test_solver_error_tracks_the_true_error_across_tolerances():
    sde, data = sde_lib.subVPSDE(), gaussian((64,))
    score = data.score_fn(sde)
    x = data.sample(4, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    for tol in (1e-2, 1e-3, 1e-4):
        estimate = solver_error(sde, score, x, rtol=tol, atol=tol, generator=torch.Generator().manual_seed(9))
        logp, z, _ = log_likelihood(sde, score, x, rtol=tol, atol=tol)
        true = float(true_error(sde, data, x, logp, z).abs().mean())
        assert true / 3 <= estimate.error <= 3 * true, (tol, estimate.error, true)


@pytest.mark.parametrize("method", ["dopri5", "rk4"])
def test_solver_error_takes_the_coarse_values_a_batch_already_has(method):
    """Given the values of its first resolution (here from the batch the samples belong to, as the eval job gives
    them), the estimate is the same and only the finer solve is made."""
    sde, data = sde_lib.VPSDE(), gaussian((16,))
    score = data.score_fn(sde)
    batch = data.sample(12, generator=torch.Generator().manual_seed(13), dtype=torch.float64)
    probe = torch.randint(0, 2, batch.shape, generator=torch.Generator().manual_seed(14)).to(batch) * 2 - 1
    offset = torch.rand(12, generator=torch.Generator().manual_seed(15), dtype=torch.float64)
    if method == "rk4":
        coarse, fine, batch_grid, first_grid = dict(steps=8), dict(steps=16), dict(grid_offset=offset), dict(grid_offset=offset[:4])
    else:
        coarse, fine, batch_grid, first_grid = dict(rtol=1e-3, atol=1e-3), dict(rtol=1e-4, atol=1e-4), {}, {}
    in_batch = log_likelihood(sde, score, batch, method=method, probe=probe, **coarse, **batch_grid)[0]
    first = dict(method=method, probe=probe[:4], **coarse, **first_grid)
    solved = solver_error(sde, score, batch[:4], **first)
    reused = solver_error(sde, score, batch[:4], coarse=in_batch[:4], **first)
    assert reused.error == pytest.approx(solved.error, rel=1e-6) and reused.error > 0
    fine_nfe = log_likelihood(sde, score, batch[:4], method=method, probe=probe[:4], **fine, **first_grid)[2]
    assert reused.nfe == fine_nfe and solved.nfe > fine_nfe


@pytest.mark.parametrize("sde", [sde_lib.VPSDE(), sde_lib.subVPSDE(), sde_lib.VESDE(sigma_max=10.0)], ids=["vp", "subvp", "ve"])
def test_fixed_grid_converges_at_order_four(sde):
    """rk4 on the log-SNR grid, 192-D Gaussian: each halving of the step divides the mean |error| by about 2^4 = 16
    (the window [10, 40] leaves room for the terms of higher order still present at 16-64 steps)."""
    data = gaussian((3, 8, 8))
    x = data.sample(8, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    errors = []
    for steps in (16, 32, 64):
        logp, z, nfe = log_likelihood(sde, data.score_fn(sde), x, method="rk4", steps=steps, generator=torch.Generator().manual_seed(12))
        assert nfe == 4 * (steps + 1)  # the shifted grid: steps - 1 whole steps and two parts of one
        errors.append(float(true_error(sde, data, x, logp, z).abs().mean()))
    assert all(10 <= coarse / fine <= 40 for coarse, fine in zip(errors, errors[1:])), errors


def test_shifted_grids_do_not_alias_a_fast_oscillation_in_time():
    """A score that oscillates in ``t`` faster than a step, as a network's sinusoidal time embedding can:
    ``score(x, t) = -c(t) x`` with ``c = 1 + 2 (k0 + A cos(w t)) / beta(t)`` makes the flow linear, ``dx/dt = k(t) x``
    with ``k = k0 + A cos(w t)``, so ``log p_eps(x) = log N(x e^K; 0, I) + D K`` with ``K = int_eps^T k`` in closed form.
    On one grid for every sample (all offsets equal) the mean error of 24 steps over 2000 samples is more than 20 of
    its standard errors from zero (aliasing: the same error in every sample); on grids shifted by uniform offsets it
    is within 4 standard errors of zero (a randomly shifted composite rule is unbiased for the integral ``K``; the
    nonlinearity of ``logp`` in ``K`` adds ``O(dK^2)``, about 1e-5 here), and that bound is below the one grid's bias."""
    sde, k0, amplitude, omega, dim = sde_lib.VPSDE(), -0.5, 0.2, 999.0, 4
    beta = lambda t: sde.beta_0 + t * (sde.beta_1 - sde.beta_0)  # noqa: E731
    score = lambda x, t: -(1 + 2 * (k0 + amplitude * torch.cos(omega * t)) / beta(t))[:, None] * x  # noqa: E731
    x = torch.randn(2000, dim, generator=torch.Generator().manual_seed(16), dtype=torch.float64)
    big_k = k0 * (sde.T - EPS) + amplitude * (math.sin(omega * sde.T) - math.sin(omega * EPS)) / omega
    exact = -0.5 * (x * math.exp(big_k)).square().sum(1) - dim / 2 * math.log(2 * math.pi) + dim * big_k
    errors = {}
    for name, offset in (("one grid", torch.full((2000,), 0.5, dtype=torch.float64)), ("shifted", None)):
        logp, _, _ = log_likelihood(sde, score, x, divergence="exact", method="rk4", steps=24, eps=EPS,
                                    grid_offset=offset, generator=torch.Generator().manual_seed(17))
        errors[name] = logp - exact
    (one_mean, one_se), (shifted_mean, shifted_se) = ((float(e.mean()), float(e.std()) / math.sqrt(2000)) for e in errors.values())
    assert abs(one_mean) > 20 * one_se and abs(shifted_mean) < 4 * shifted_se < abs(one_mean)


@pytest.mark.parametrize("accuracy", [3e-2, 3e-3])
def test_chosen_steps_meet_the_accuracy_on_a_gaussian(accuracy):
    """As for the tolerance: the steps chosen on 4 samples give 32 other samples a mean |error| within the accuracy,
    and the Richardson estimate (2N steps, q = 16) is within a factor 3 of the check samples' true error."""
    sde, data = sde_lib.VESDE(sigma_max=10.0), gaussian((3, 8, 8))
    score = data.score_fn(sde)
    check = data.sample(4, generator=torch.Generator().manual_seed(13), dtype=torch.float64)
    choice = choose_tolerance(sde, score, check, accuracy, method="rk4", generator=torch.Generator().manual_seed(14))
    assert choice.error <= choice.bound <= accuracy and choice.steps in (8, 16, 32, 64, 128) and choice.nfe > 0
    logp, z, _ = log_likelihood(sde, score, check, method="rk4", steps=choice.steps)
    assert choice.error / 3 <= float(true_error(sde, data, check, logp, z).abs().mean()) <= 3 * choice.error
    x = data.sample(32, generator=torch.Generator().manual_seed(15), dtype=torch.float64)
    logp, z, _ = log_likelihood(sde, score, x, method="rk4", steps=choice.steps)
    assert float(true_error(sde, data, x, logp, z).abs().mean()) <= accuracy
    if choice.steps > 8:  # the rung below the choice failed the accuracy
        logp, z, _ = log_likelihood(sde, score, check, method="rk4", steps=choice.steps // 2)
        assert float(true_error(sde, data, check, logp, z).abs().mean()) > accuracy / 3


# ---------------------------------------------------------------------------------------------- config
def test_config_fields_and_defaults():
    fields = TOOLKIT_FIELDS["eval"]
    assert fields["likelihood_product"][0] == "vjp" and fields["likelihood_accuracy"][0] is None
    assert fields["likelihood_error_samples"][0] >= 1
    digits = load_config("configs/vp/digits_ddpmpp_continuous.py")
    assert digits.eval.likelihood_accuracy is None and digits.eval.likelihood_method == "dopri5"
    assert digits.eval.likelihood_error_samples >= 1 and likelihood_options(digits)["product"] == "vjp"
    cifar = load_config("configs/vp/cifar10_ddpmpp_continuous.py")  # the reference's path unless the user asks
    assert cifar.eval.likelihood_accuracy is None and cifar.eval.likelihood_method == "RK45"
    assert cifar.eval.likelihood_rtol == cifar.eval.likelihood_atol == 1e-5
    assert likelihood_options(cifar)["product"] == "vjp"
    cifar.eval.likelihood_product = "JVP"
    assert likelihood_options(cifar)["product"] == "jvp"


@pytest.mark.parametrize("field, value", [
    ("likelihood_product", "forward"), ("likelihood_accuracy", 0.0), ("likelihood_accuracy", -1e-3),
    ("likelihood_error_samples", -1), ("likelihood_method", "rk5"), ("likelihood_steps", 0),
])
def test_config_checks_name_the_field(field, value):
    config = load_config("configs/vp/digits_ddpmpp_continuous.py")
    assert field_error(config, f"eval.{field}") is None
    config.eval[field] = value
    message = field_error(config, f"eval.{field}")
    assert message.startswith(f"config.eval.{field} must be") and "\n" not in message


def test_a_fixed_grid_needs_its_steps_or_an_accuracy():
    config = load_config("configs/vp/digits_ddpmpp_continuous.py")
    config.eval.likelihood_method = "rk4"
    assert config_errors(config) == [
        "config.eval.likelihood_method='rk4' (a fixed grid) needs config.eval.likelihood_steps, or "
        "config.eval.likelihood_accuracy to choose them"
    ]
    for field, value in (("likelihood_steps", 24), ("likelihood_accuracy", 1e-2)):
        fixed = load_config("configs/vp/digits_ddpmpp_continuous.py")
        fixed.eval.likelihood_method, fixed.eval[field] = "rk4", value
        assert config_errors(fixed) == [] and likelihood_options(fixed)["method"] == "rk4"
    config.eval.enable_bpd = False  # no likelihood, nothing to refuse
    assert config_errors(config) == []


# ---------------------------------------------------------------------------------------------- bad input
def test_bad_arguments_raise_one_line_errors_naming_the_parameter():
    sde, data = sde_lib.VPSDE(), gaussian((2,))
    score = data.score_fn(sde)
    x = data.sample(3, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    cases = [
        ("product", lambda: log_likelihood(sde, score, x, product="forward")),
        ("probe", lambda: log_likelihood(sde, score, x, probe=torch.ones(2, 2, dtype=torch.float64))),
        ("probe", lambda: log_likelihood(sde, score, x, divergence="exact", probe=torch.ones_like(x))),
        ("accuracy", lambda: choose_tolerance(sde, score, x, 0.0)),
        ("accuracy", lambda: choose_tolerance(sde, score, x, float("nan"))),
        ("rtol_min", lambda: choose_tolerance(sde, score, x, 1e-3, rtol_start=1e-4, rtol_min=1e-3)),
        ("ratio", lambda: solver_error(sde, score, x, ratio=1.0)),
        ("rtol", lambda: choose_tolerance(sde, score, x, 1e-3, rtol=1e-3)),
        ("x", lambda: solver_error(sde, score, torch.ones(3))),
        ("accuracy", lambda: choose_tolerance(sde, score, x, 1e-14, rtol_start=1e-3, rtol_min=1e-5)),
        ("steps", lambda: log_likelihood(sde, score, x, method="rk4")),
        ("steps", lambda: log_likelihood(sde, score, x, method="rk4", steps=0)),
        ("steps", lambda: solver_error(sde, score, x, method="rk4", steps=2.5)),
        ("steps_max", lambda: choose_tolerance(sde, score, x, 1e-3, method="rk4", steps_max=0)),
        ("accuracy", lambda: choose_tolerance(sde, score, x, 1e-14, method="rk4", steps_max=16)),
        ("method", lambda: log_likelihood(sde, score, x, method="rk5", steps=8)),
        ("coarse", lambda: solver_error(sde, score, x, probe=torch.ones_like(x), coarse=torch.zeros(2, dtype=torch.float64))),
        ("coarse", lambda: solver_error(sde, score, x, probe=torch.ones_like(x), coarse=torch.full((3,), math.nan))),
        ("coarse", lambda: solver_error(sde, score, x, coarse=torch.zeros(3, dtype=torch.float64))),  # no probe
        ("coarse", lambda: solver_error(sde, score, x, method="rk4", steps=8, divergence="exact",
                                        coarse=torch.zeros(3, dtype=torch.float64))),  # no grid_offset
    ]
    for name, call in cases:
        with pytest.raises(ValueError) as error:
            call()
        assert name in str(error.value) and "\n" not in str(error.value), (name, str(error.value))
