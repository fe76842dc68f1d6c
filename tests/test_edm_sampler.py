"""``samplers.edm_sample``: EDM's sampler (Karras et al., NeurIPS 2022, Algorithm 2) against exact answers.

* On EDM's own SDE (``sde_lib.EDMSDE``: ``alpha = 1``, ``std = t``) with the exact score of a Gaussian mixture,
  ``edm_sample`` equals a float64 transcription of Algorithm 2 written here, deterministic and with churn.
* On any linear SDE the score is evaluated at the noise levels of eq. (5) (VP: through the numerical inverse of
  ``sigma~(t)``), and the deterministic sampler converges at second order to the exact flow map of Gaussian data.
* It samples the 8-Gaussian ring on EDM's SDE and on VP: within-mode variance, component weights and mean
  log-density against the exact law, with the tolerance of the sample size around a discretization bias measured
  once (as in ``tests/test_pc_sampler.py``; ``sampler_checks.assert_ring_modes``).
* ``2 N - 1`` evaluations, one-line ``ValueError`` naming the parameter before any work, seeded reproducibility,
  and one Euler / Heun stepping loop shared with ``fast_sample(method="heun")``.
"""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch

import samplers
import samplers.edm as edm
import sde_lib
from sampler_checks import CubicDriftSDE, assert_ring_modes
from samplers import edm_sample, fast_sample
from samplers.edm import edm_sigmas
from samplers.timesteps import levels_at

RING = sde_lib.GaussianMixture.ring()  # 8 components, radius 4, std 0.3
EDM = sde_lib.EDMSDE()  # sigma_min 0.002, sigma_max = T = 80
SDES = {"edm": EDM, "vp": sde_lib.VPSDE()}
PAPER_CHURN = dict(S_churn=40.0, S_min=0.05, S_max=50.0, S_noise=1.003)  # Karras et al. 2022, ImageNet-64 settings


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------------- the transcription
def algorithm2(denoiser, shape, generator, steps=18, rho=7.0, S_churn=0.0, S_min=0.0, S_max=math.inf, S_noise=1.0,
               sigma_min=0.002, sigma_max=80.0):
    """Karras et al. 2022, Algorithm 2, line by line in float64 (``t_i`` is the noise level ``sigma_i``).

    The sampler draws ``eps_i`` (line 3) only on steps with ``gamma_i > 0``; so does this transcription, from the
    same generator, after the start ``x_0``.
    """
    N = steps
    t = [(sigma_max ** (1 / rho) + i / (N - 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho for i in range(N)]
    t.append(0.0)  # eq. (5), t_N = 0
    x = torch.randn(shape, generator=generator, dtype=torch.float64) * t[0]  # line 1
    for i in range(N):  # line 2
        gamma = min(S_churn / N, math.sqrt(2) - 1) if S_min <= t[i] <= S_max else 0.0
        t_hat = t[i] + gamma * t[i]  # line 4
        x_hat = x
        if gamma > 0:
            eps_i = S_noise * torch.randn(shape, generator=generator, dtype=torch.float64)  # line 3
            x_hat = x + math.sqrt(t_hat**2 - t[i] ** 2) * eps_i  # line 5
        d = (x_hat - denoiser(x_hat, t_hat)) / t_hat  # line 6
        x_next = x_hat + (t[i + 1] - t_hat) * d  # line 7
        if t[i + 1] != 0:  # line 8
            d_prime = (x_next - denoiser(x_next, t[i + 1])) / t[i + 1]  # line 9
            x_next = x_hat + (t[i + 1] - t_hat) * (0.5 * d + 0.5 * d_prime)  # line 10
        x = x_next
    return x  # line 11


def exact_denoiser(data: sde_lib.GaussianMixture):
    """``D(x; sigma) = x + sigma^2 grad log p(x; sigma)`` with the exact score of ``data`` on EDM's SDE (``t = sigma``)."""
    score = data.score_fn(EDM)
    return lambda x, sigma: x + sigma**2 * score(x, torch.full((x.shape[0],), sigma, dtype=torch.float64))


@pytest.mark.parametrize("churn", [{}, PAPER_CHURN], ids=["deterministic", "churn"])
@pytest.mark.parametrize("steps", [18, 5])
def test_edm_sample_is_algorithm_2_on_the_edm_sde(churn, steps):
    """Same start and same churn noise (one generator, same draws in the same order): equal to 1e-12."""
    data = RING
    shape = (64, 2)
    expected = algorithm2(exact_denoiser(data), shape, seeded(3), steps=steps, **churn)
    x, nfe = edm_sample(EDM, data.score_fn(EDM), shape, steps=steps, dtype=torch.float64, generator=seeded(3), **churn)
    assert x.dtype == torch.float64 and nfe == 2 * steps - 1
    assert (x - expected).abs().max().item() < 1e-12
    if churn:  # the churn noise matters: without it the result differs
        plain = algorithm2(exact_denoiser(data), shape, seeded(3), steps=steps)
        assert (x - plain).abs().max().item() > 1e-2


def test_algorithm_2_on_images_of_a_gaussian():
    """The same on 3x4x4 images of a Gaussian (any event shape), with churn."""
    g = seeded(8)
    data = sde_lib.GaussianMixture.gaussian(torch.rand(3, 4, 4, generator=g, dtype=torch.float64) - 0.5,
                                            0.05 + 0.3 * torch.rand(3, 4, 4, generator=g, dtype=torch.float64))
    expected = algorithm2(exact_denoiser(data), (8, 3, 4, 4), seeded(4), steps=12, **PAPER_CHURN)
    x, _ = edm_sample(EDM, data.score_fn(EDM), (8, 3, 4, 4), steps=12, dtype=torch.float64, generator=seeded(4), **PAPER_CHURN)
    assert (x - expected).abs().max().item() < 1e-12


# ------------------------------------------------------------------------------------------- any linear SDE
def recorded_levels(sde, **kwargs) -> list[float]:
    """The noise levels ``sigma~(t) = sigma(t) / alpha(t)`` of the times ``edm_sample`` evaluates the score at."""
    levels: list[float] = []
    score = RING.score_fn(sde)

    def recording(x, t):
        levels.extend(level.scaled_sigma for level in levels_at(sde, t[:1].double()))
        return score(x, t)

    edm_sample(sde, recording, (4, 2), generator=seeded(0), **kwargs)
    return levels


@pytest.mark.parametrize("name", ["edm", "vp", "ve"])
def test_score_is_evaluated_at_the_eq5_levels_clipped_to_the_sde(name):
    """Deterministic: ``sigma_0; sigma_1, sigma_1; ...; sigma_{N-1}`` (each Heun step's two ends, Euler to 0 last),
    the grid of eq. (5) between EDM's 0.002 and 80 clipped to ``[sigma~(eps), sigma~(T)]``: exact for EDM's SDE
    (time = noise level), to 1e-10 relative where the time is found numerically (VP) or the range is clipped (VP
    ``sigma_min`` 0.002 -> ``sigma~(1e-3)`` = 0.0105; VE ``sigma_min`` -> 0.0101 and ``sigma_max`` 80 -> 50)."""
    sde = {"edm": EDM, "vp": sde_lib.VPSDE(), "ve": sde_lib.VESDE()}[name]
    bottom, top = (lv.scaled_sigma for lv in levels_at(sde, torch.tensor([1e-3, sde.T], dtype=torch.float64)))
    sigmas = edm_sigmas(max(0.002, bottom), min(80.0, top), 10, 7.0)
    expected = [sigmas[0]] + [s for s in sigmas[1:] for _ in range(2)]
    got = recorded_levels(sde, steps=10)
    assert len(got) == 19
    if name == "edm":
        assert got == expected and got[-1] == 0.002 and got[0] == 80.0
    else:
        torch.testing.assert_close(torch.tensor(got), torch.tensor(expected), rtol=1e-10, atol=0)
    assert got[-1] == pytest.approx({"edm": 0.002, "vp": 0.010486, "ve": 0.010086}[name], rel=1e-4)
    assert got[0] == pytest.approx({"edm": 80.0, "vp": 80.0, "ve": 50.0}[name], rel=1e-10)


def test_churn_never_raises_the_level_beyond_T():
    """With ``S_max = inf`` the first level would be raised above ``sigma~(T)`` (a time beyond ``T``): it is capped
    there, so the first evaluation is at ``sigma_max = T``; the next levels are raised by ``1 + gamma``."""
    got = recorded_levels(EDM, steps=6, S_churn=1.0)
    sigmas = edm_sigmas(0.002, 80.0, 6, 7.0)
    gamma = 1.0 / 6
    assert got[0] == 80.0
    assert got[2] == pytest.approx(sigmas[1] * (1 + gamma), rel=1e-14)


# Error of the deterministic sampler against the exact probability-flow map of N(MU, S^2 I) data, from x at
# sigma~(T) to the data (sigma = 0). Measured: EDM 0.087, 0.019, 0.0045 at 18, 36, 72 steps (ratios 4.5, 4.3);
# VP 0.096, 0.021, 0.0046 (4.6, 4.5); VE 0.061, 0.013, 0.0029 (4.6, 4.6).
MU, S = torch.tensor([1.0, -2.0], dtype=torch.float64), 0.5


@pytest.mark.parametrize("name", ["edm", "vp", "ve"])
def test_deterministic_sampler_is_second_order(name):
    """Doubling the steps divides the error by 3.5 to 6 (order 2: 4), to the exact map ``MU + S (y - MU) /
    sqrt(S^2 + sigma~_0^2)`` with ``sigma_max`` set to the top of the SDE's range."""
    sde = {"edm": EDM, "vp": sde_lib.VPSDE(), "ve": sde_lib.VESDE()}[name]
    data = sde_lib.GaussianMixture.gaussian(MU, S**2)
    x_T = sde.prior_sampling((32, 2), generator=seeded(0), dtype=torch.float64)
    top = levels_at(sde, torch.tensor([sde.T], dtype=torch.float64))[0]
    exact = MU + S * (x_T / top.alpha - MU) / math.sqrt(S**2 + top.scaled_sigma**2)
    errors = []
    for steps in (18, 36, 72):
        x, _ = edm_sample(sde, data.score_fn(sde), x_T.shape, steps=steps, x_init=x_T, sigma_max=1e6, dtype=torch.float64)
        errors.append((x - exact).abs().max().item())
    assert errors[0] < 0.2
    assert all(3.5 <= coarse / fine <= 6.0 for coarse, fine in zip(errors, errors[1:])), errors


# ------------------------------------------------------------------------------------------- the mixture law
# (sde, steps, churn) -> relative within-mode variance error Var(samples) / Var(data) - 1, measured once with seed 1
# from 60,000 samples (standard error 0.0041). Churn S_churn = 10, S_min = 0.05, S_max = 50 at 40 steps. With the
# paper's ImageNet churn (40, 0.05, 50, S_noise 1.003) it is +0.204 / +0.186 (EDM / VP) at 18 steps and +0.099 /
# +0.088 at 40; with S_churn = 10 it falls to +0.014 at 100 steps and +0.009 at 250 (EDM): the bias is the
# discretization's, and it vanishes as the steps grow.
RING_BIAS = {
    ("edm", 18, False): +0.0519,
    ("vp", 18, False): +0.0447,
    ("edm", 40, True): +0.0671,
    ("vp", 40, True): +0.0643,
}
MEASURED_SE = 0.0041
N_RING = 6000
CHURN = dict(S_churn=10.0, S_min=0.05, S_max=50.0)


@pytest.mark.parametrize("case", list(RING_BIAS), ids=lambda c: f"{c[0]}-{c[1]}steps-{'churn' if c[2] else 'ode'}")
def test_ring_samples_match_the_mixture(case):
    name, steps, churn = case
    sde = SDES[name]
    x, nfe = edm_sample(sde, RING.score_fn(sde), (N_RING, 2), steps=steps, generator=seeded(10), **(CHURN if churn else {}))
    assert x.shape == (N_RING, 2) and x.dtype == torch.float32 and nfe == 2 * steps - 1
    assert_ring_modes(x, RING_BIAS[case], data_seed=11, measured_se=MEASURED_SE)


# ------------------------------------------------------------------------------------------- contract
@pytest.mark.parametrize("steps", [1, 2, 7, 18])
@pytest.mark.parametrize("churn", [{}, PAPER_CHURN], ids=["deterministic", "churn"])
def test_nfe_is_2n_minus_1(steps, churn):
    calls = []
    score = RING.score_fn(EDM)

    def counted(x, t):
        calls.append(1)
        return score(x, t)

    _, nfe = edm_sample(EDM, counted, (5, 2), steps=steps, generator=seeded(0), **churn)
    assert nfe == len(calls) == 2 * steps - 1


BAD_ARGUMENTS = [
    ("steps", dict(steps=0)), ("steps", dict(steps=-3)), ("steps", dict(steps=2.5)), ("steps", dict(steps=True)),
    ("rho", dict(rho=0.0)), ("rho", dict(rho=-7.0)), ("rho", dict(rho=float("nan"))), ("rho", dict(rho=float("inf"))),
    ("S_churn", dict(S_churn=-1.0)), ("S_churn", dict(S_churn=float("inf"))), ("S_churn", dict(S_churn="forty")),
    ("S_min", dict(S_min=-0.1)), ("S_min", dict(S_min=float("nan"))),
    ("S_max", dict(S_max=-1.0)), ("S_max", dict(S_max=float("nan"))),
    ("S_min must be <= S_max", dict(S_min=2.0, S_max=1.0)),
    ("S_noise", dict(S_noise=-0.5)), ("S_noise", dict(S_noise=float("inf"))),
    ("sigma_min", dict(sigma_min=0.0)), ("sigma_min", dict(sigma_min=-1.0)), ("sigma_max", dict(sigma_max=float("inf"))),
    ("sigma_min must be < sigma_max", dict(sigma_min=5.0, sigma_max=5.0)),
    ("eps", dict(eps=0.0)), ("eps", dict(eps=80.0)), ("eps", dict(eps="small")),
    ("shape", dict(shape=())), ("shape", dict(shape=(0, 2))),
    ("x_init", dict(x_init=torch.zeros(3, 2))), ("x_init", dict(x_init=torch.zeros(4, 2, dtype=torch.long))),
    ("dtype", dict(dtype=torch.int64)),
    ("sde must be a sde_lib.LinearSDE", dict(sde=CubicDriftSDE(N=10))),
    ("score_fn", dict(score_fn="not a function")),
    ("leave no noise range", dict(sde=sde_lib.VESDE(), sigma_min=60.0, sigma_max=70.0)),
]


@pytest.mark.parametrize("match,kwargs", BAD_ARGUMENTS, ids=[f"{m}-{i}" for i, (m, _) in enumerate(BAD_ARGUMENTS)])
def test_bad_arguments_are_one_line_value_errors_before_any_work(match, kwargs):
    def untouchable(x, t):
        raise AssertionError("the score must not be evaluated")

    generator = seeded(0)
    state = generator.get_state()
    call = dict(sde=EDM, score_fn=untouchable, shape=(4, 2), generator=generator) | kwargs
    with pytest.raises(ValueError, match=match) as info:
        edm_sample(call.pop("sde"), call.pop("score_fn"), call.pop("shape"), **call)
    assert "\n" not in str(info.value)
    assert torch.equal(generator.get_state(), state)  # nothing was drawn


def test_same_seed_same_samples():
    """Same seed, same samples (start and churn noise from the generator); another seed, other samples; a given
    start ``x_init`` (EDM: a prior draw, ``80 n``) is the start the generator would have drawn; the bar changes nothing."""
    run = lambda seed, **kw: edm_sample(EDM, RING.score_fn(EDM), (16, 2), steps=8, generator=seeded(seed), **PAPER_CHURN, **kw)[0]  # noqa: E731
    assert torch.equal(run(5), run(5))
    assert not torch.allclose(run(5), run(6))
    assert torch.equal(run(5), run(5, progress=True))
    x_T = EDM.prior_sampling((16, 2), generator=seeded(7), dtype=torch.float64)
    deterministic = edm_sample(EDM, RING.score_fn(EDM), (16, 2), steps=8, generator=seeded(7))[0]
    assert torch.equal(deterministic, edm_sample(EDM, RING.score_fn(EDM), (16, 2), steps=8, x_init=x_T, dtype=torch.float32)[0])


def test_one_stepping_loop_for_edm_sample_and_fast_sample_heun(monkeypatch):
    """``fast_sample(method="heun")`` and ``edm_sample`` run the same Euler / Heun loop (``samplers.edm.heun_scaled``);
    the former module ``samplers.heun`` is gone."""
    assert importlib.util.find_spec("samplers.heun") is None
    assert samplers.fast.heun_solver is edm.heun_solver
    calls = []
    loop = edm.heun_scaled

    def recording(*args, **kwargs):
        calls.append(kwargs.get("raised", args[6] if len(args) > 6 else None) is not None)
        return loop(*args, **kwargs)

    monkeypatch.setattr(edm, "heun_scaled", recording)
    fast_sample(EDM, RING.score_fn(EDM), (4, 2), nfe=6, method="heun", eps=0.002, generator=seeded(0))
    edm_sample(EDM, RING.score_fn(EDM), (4, 2), steps=3, generator=seeded(0))
    assert calls == [False, True]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    """Same start on the GPU (the churn noise is drawn on the device, from a CUDA generator): deterministic samples
    agree with the CPU's to float64 rounding, stochastic ones follow the ring."""
    x_T = EDM.prior_sampling((256, 2), generator=seeded(0), dtype=torch.float64)
    cpu, _ = edm_sample(EDM, RING.score_fn(EDM), x_T.shape, x_init=x_T)
    gpu, nfe = edm_sample(EDM, RING.score_fn(EDM), x_T.shape, x_init=x_T.cuda())
    assert gpu.device.type == "cuda" and gpu.dtype == torch.float64 and nfe == 35
    assert (gpu.cpu() - cpu).abs().max().item() < 1e-10
    x, _ = edm_sample(EDM, RING.score_fn(EDM), (N_RING, 2), steps=40, generator=torch.Generator("cuda").manual_seed(10), **CHURN)
    assert x.device.type == "cuda"
    assert_ring_modes(x.cpu(), RING_BIAS[("edm", 40, True)], data_seed=11, measured_se=MEASURED_SE)


def test_exported():
    assert samplers.edm_sample is edm_sample and "edm_sample" in samplers.__all__
