"""EDM's sampler (Karras et al., "Elucidating the Design Space of Diffusion-Based Generative Models", NeurIPS 2022)
and the one Euler / Heun stepping of the probability-flow ODE in the noise level, which ``fast_sample`` shares.

For VE-type SDEs (``alpha = 1``) the probability-flow ODE [SDE, eq. (13)] with ``g^2 = d sigma^2 / dt`` is, with
``sigma`` as the independent variable, ``dx / dsigma = -sigma score(x, sigma) = (x - D(x; sigma)) / sigma`` with
the denoiser ``D = x + sigma^2 score`` (Karras et al. 2022, eqs. (1) and (3) with ``sigma(t) = t``). For any
linear SDE the same holds for the scaled variable ``y = x / alpha`` in the noise level ``sigma~ = sigma / alpha =
exp(-lambda)`` (EDM's scaling ``s(t) = alpha(t)``): ``y = x0 + sigma~ n``, its score is ``alpha score(x, t)``, so
``D(y; sigma~) = y + sigma~^2 alpha score = y + (sigma^2 / alpha) score`` and the slope is

    dy / dsigma~ = (y - D(y; sigma~)) / sigma~ = -sigma score(alpha y, t) = eps,

the noise prediction (:func:`noise_prediction`). :func:`heun_scaled` steps this ODE over a list of
:class:`~samplers.timesteps.NoiseLevel` by Euler's method (one evaluation a step) or Heun's (two), optionally with
EDM's stochastic churn. It is the only such loop: :func:`edm_sample` (Algorithm 2) and ``fast_sample(method="heun")``
(:func:`heun_solver`, Algorithm 1 on ``fast_sample``'s grid, ending at ``t = eps``) both run it.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor

from sde_lib import EDM_SIGMA_MAX, EDM_SIGMA_MIN, LinearSDE, ScoreFn, time_batch

from .common import (
    CountingScoreFn,
    check_eps,
    check_linear_sde,
    check_positive,
    check_positive_int,
    check_shape,
    progress_bar,
    resolve_device,
    resolve_dtype,
)
from .timesteps import EDM_RHO, NoiseLevel, grid_dtype, levels_at, time_of_scaled_sigma

HEUN_ORDERS = (1, 2)
MAX_GAMMA = math.sqrt(2.0) - 1.0  # churn bound: sigma_hat <= sqrt(2) sigma_i, Karras et al. 2022, Algorithm 2
DATA_LEVEL = NoiseLevel(t=0.0, alpha=1.0, sigma=0.0, lam=math.inf)  # sigma~ = 0: y is the data, x(0) = y


def noise_prediction(score_fn: Callable[[Tensor, Tensor], Tensor], y: Tensor, level: NoiseLevel) -> Tensor:
    """``dy / dsigma~ = (y - D(y; sigma~)) / sigma~ = eps = -sigma score(alpha y, t)`` at ``level``."""
    return -level.sigma * score_fn(level.alpha * y, time_batch(level.t, y.shape[0], y))


def heun_steps(nfe: int, order: int) -> tuple[int, bool]:
    """``(steps, last_euler)`` for a budget of ``nfe`` evaluations (``fast_sample``'s rule).

    Order 1: ``nfe`` Euler steps. Order 2: ``ceil(nfe / 2)`` steps, all Heun when ``nfe`` is even; when it
    is odd the last step is an Euler step (as EDM's last step), so exactly ``nfe`` evaluations are made.
    """
    if order == 1:
        return nfe, True
    return (nfe + 1) // 2, nfe % 2 == 1


def heun_scaled(
    score_fn: Callable[[Tensor, Tensor], Tensor],
    y: Tensor,
    levels: Sequence[NoiseLevel],
    order: int,
    last_euler: bool,
    progress: bool = False,
    raised: Sequence[NoiseLevel | None] | None = None,
    S_noise: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Integrate ``dy / dsigma~ = eps`` for ``y = x / alpha`` from ``levels[0]`` to ``levels[-1]``; returns ``y`` there.

    Step ``i`` from ``sigma~_i = levels[i]`` to ``sigma~_{i+1} = levels[i + 1]`` (Karras et al. 2022, Algorithm 2;
    without churn, Algorithm 1):

    * churn, where ``raised[i]`` is a level ``sigma~_hat > sigma~_i``: ``y_hat = y + sqrt(sigma~_hat^2 - sigma~_i^2)
      S_noise n`` with ``n ~ N(0, I)`` drawn from ``generator`` (lines 3-5); the step then starts at ``sigma~_hat``;
    * ``d = eps(y_hat; sigma~_hat)`` and the Euler step ``y_{i+1} = y_hat + (sigma~_{i+1} - sigma~_hat) d`` (lines 6-7);
    * with ``order=2`` Heun's correction ``y_{i+1} = y_hat + (sigma~_{i+1} - sigma~_hat) (d + eps(y_{i+1};
      sigma~_{i+1})) / 2`` (lines 9-10), except on the last step when ``last_euler`` (line 8: EDM's step to 0).

    Evaluations: ``len(levels) - 1`` Euler steps, or ``2 (len(levels) - 1) - last_euler``. Works in the dtype of
    ``y``; the levels are Python floats.
    """
    steps = len(levels) - 1
    desc = "Heun" if order == 2 else "Euler"
    for i in progress_bar(range(steps), progress, desc=f"{desc} (sigma/alpha)", total=steps):
        src, dst = levels[i], levels[i + 1]
        if raised is not None and raised[i] is not None:
            hat = raised[i]
            noise = torch.randn(y.shape, generator=generator, dtype=y.dtype, device=y.device)
            y = y + math.sqrt(max(hat.scaled_sigma**2 - src.scaled_sigma**2, 0.0)) * (S_noise * noise)
            src = hat
        delta = dst.scaled_sigma - src.scaled_sigma
        slope = noise_prediction(score_fn, y, src)
        y_euler = y + delta * slope
        if order == 1 or (last_euler and i == steps - 1):
            y = y_euler
        else:
            y = y + 0.5 * delta * (slope + noise_prediction(score_fn, y_euler, dst))
    return y


def heun_solver(
    score_fn: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    levels: Sequence[NoiseLevel],
    order: int,
    last_euler: bool,
    progress: bool = False,
) -> Tensor:
    """``fast_sample``'s Euler / Heun: :func:`heun_scaled` without churn from ``x`` at ``levels[0]``; returns ``x`` at
    ``levels[-1]`` (``alpha y``). Evaluations: as :func:`heun_scaled`."""
    y = heun_scaled(score_fn, x / levels[0].alpha, levels, order, last_euler, progress)
    return levels[-1].alpha * y


def edm_sigmas(sigma_min: float, sigma_max: float, steps: int, rho: float) -> list[float]:
    """EDM's noise levels, Karras et al. 2022, eq. (5), in float64:
    ``sigma_i = (sigma_max^(1/rho) + i / (N - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho``, ``i = 0..N-1``
    (``N = steps``; ``sigma_0 = sigma_max`` when ``N = 1``), with the end points set exactly to ``sigma_max`` and
    ``sigma_min``. The final ``sigma_N = 0`` is not included."""
    i = torch.arange(steps, dtype=torch.float64)
    first, last = sigma_max ** (1.0 / rho), sigma_min ** (1.0 / rho)
    sigmas = (first + i / max(steps - 1, 1) * (last - first)) ** rho
    sigmas[0] = sigma_max
    if steps > 1:
        sigmas[-1] = sigma_min
    return sigmas.tolist()


def churn_gammas(sigmas: Sequence[float], S_churn: float, S_min: float, S_max: float) -> list[float]:
    """``gamma_i = min(S_churn / N, sqrt(2) - 1)`` if ``S_min <= sigma_i <= S_max`` else 0 (Karras et al. 2022, Algorithm 2)."""
    gamma = min(S_churn / len(sigmas), MAX_GAMMA)
    return [gamma if S_min <= sigma <= S_max else 0.0 for sigma in sigmas]


def _check_nonnegative(name: str, value: float, allow_inf: bool = False) -> float:
    """``float(value)`` if it is a number >= 0 (finite unless ``allow_inf``), else ``ValueError`` naming the parameter."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number >= 0, got {value!r}") from None
    if math.isnan(value) or value < 0 or (math.isinf(value) and not allow_inf):
        raise ValueError(f"{name} must be a {'' if allow_inf else 'finite '}number >= 0, got {value!r}")
    return value


def check_edm_options(
    steps: int, rho: float, S_churn: float, S_min: float, S_max: float, S_noise: float
) -> tuple[int, float, float, float, float, float]:
    """The options of :func:`edm_sample` checked (one-line ``ValueError`` naming the parameter) and converted."""
    steps = check_positive_int("steps", steps)
    rho = check_positive("rho", rho)
    S_churn = _check_nonnegative("S_churn", S_churn)
    S_min = _check_nonnegative("S_min", S_min)
    S_max = _check_nonnegative("S_max", S_max, allow_inf=True)
    if S_min > S_max:
        raise ValueError(f"S_min must be <= S_max, got S_min={S_min} > S_max={S_max}")
    return steps, rho, S_churn, S_min, S_max, _check_nonnegative("S_noise", S_noise)


def edm_sample(
    sde: LinearSDE,
    score_fn: ScoreFn,
    shape: Sequence[int],
    *,
    steps: int = 18,
    rho: float = EDM_RHO,
    S_churn: float = 0.0,
    S_min: float = 0.0,
    S_max: float = math.inf,
    S_noise: float = 1.0,
    sigma_min: float = EDM_SIGMA_MIN,
    sigma_max: float = EDM_SIGMA_MAX,
    eps: float = 1e-3,
    x_init: Tensor | None = None,
    dtype: torch.dtype | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> tuple[Tensor, int]:
    """EDM's stochastic sampler, Karras et al. 2022, Algorithm 2 (Algorithm 1, deterministic, with ``S_churn = 0``).

    Works in the scaled variable ``y = x / alpha(t)`` at the noise level ``sigma~ = sigma(t) / alpha(t)`` (module
    docstring), which for EDM's own SDE (``sde_lib.EDMSDE``: ``alpha = 1``, ``sigma = t``) is the paper's ``x`` and
    ``t``, so there this is the paper's algorithm exactly. The state is float64 (float32 on devices without it).
    Line by line, with ``N = steps``:

    0. The noise levels ``sigma_i``, ``i < N``, of eq. (5) between ``sigma_min`` and ``sigma_max`` (:func:`edm_sigmas`),
       then ``sigma_N = 0``. For an SDE whose ``sigma~`` does not span ``[sigma_min, sigma_max]`` on ``[eps, T]``
       both are first clipped to ``[sigma~(eps), sigma~(T)]`` (e.g. VP with ``eps = 1e-3``: ``sigma_min`` becomes
       0.0105; ``VESDE()``, whose ``sigma~(T)`` is 50: ``sigma_max`` becomes 50). Each ``sigma_i`` is evaluated at the time
       ``t_i`` with ``sigma~(t_i) = sigma_i`` (exact for EDM's SDE, numerical otherwise:
       :func:`samplers.timesteps.time_of_scaled_sigma`).
    1. ``y_0 = sigma_0 n``, ``n ~ N(0, I)`` (``x_init``, if given, is ``x`` at ``t_0`` and ``y_0 = x_init / alpha(t_0)``).
    2. For ``i = 0, ..., N - 1``:
    3.-4. ``gamma_i = min(S_churn / N, sqrt(2) - 1)`` if ``S_min <= sigma_i <= S_max`` else 0; ``sigma_hat =
       sigma_i (1 + gamma_i)``, capped at ``sigma~(T)`` (no time lies beyond ``T``; this matters only when
       ``S_max >= sigma_max``).
    5. If ``sigma_hat > sigma_i``: ``y_hat = y_i + sqrt(sigma_hat^2 - sigma_i^2) S_noise n_i``, ``n_i ~ N(0, I)``.
       Noise is drawn only for such steps, in step order, after the start (no churn: the start is the only draw).
    6. ``d_i = (y_hat - D(y_hat; sigma_hat)) / sigma_hat`` with ``D = y + sigma~^2 alpha score(alpha y, t)``,
       computed as ``-sigma(t) score(alpha y, t)``.
    7. ``y_{i+1} = y_hat + (sigma_{i+1} - sigma_hat) d_i`` (Euler).
    8.-10. If ``sigma_{i+1} != 0``: ``y_{i+1} = y_hat + (sigma_{i+1} - sigma_hat) (d_i + d'_i) / 2`` with ``d'_i`` the
       slope at ``(y_{i+1}, sigma_{i+1})`` (Heun's correction). The last step, to ``sigma_N = 0``, is Euler's:
       it returns ``D(y_{N-1}; sigma_{N-1})``.
    11. Return ``x = y_N`` (``alpha = 1`` at the data end), with ``2 N - 1`` score evaluations.

    Args:
        sde: a ``sde_lib.LinearSDE``; EDM's ``sde_lib.EDMSDE`` (time = noise level) or any other (VP, sub-VP, VE, ...).
        score_fn: ``score_fn(x, t)`` approximating ``grad_x log p_t(x)``; ``t`` is ``(B,)``.
        shape: ``(B, ...)`` of the samples.
        steps: ``N``, the number of noise levels before ``sigma_N = 0`` (integer >= 1).
        rho: the exponent of eq. (5) (> 0; 7 in the paper).
        S_churn: total churn (>= 0); 0 gives the deterministic sampler, Algorithm 1.
        S_min, S_max: churn only where ``S_min <= sigma_i <= S_max`` (``0 <= S_min <= S_max``; ``S_max`` may be inf).
        S_noise: std of the churn noise (>= 0; slightly above 1 offsets detail lost by an imperfect denoiser).
        sigma_min, sigma_max: the noise range of the grid, ``0 < sigma_min < sigma_max``; default EDM's 0.002 and 80,
            clipped to the SDE's range (step 0).
        eps: the smallest time of the SDE's range, in ``(0, T)``; it bounds ``sigma_min`` from below.
        x_init: start ``x(t_0)`` of shape ``shape``; default a draw with ``generator`` (step 1).
        dtype: dtype of the returned samples; default that of ``x_init``, else float32 (the state is float64).
        generator, device, progress: the source of every random draw, device, tqdm bar.

    Returns:
        ``(x, nfe)``: the samples and the score evaluations made (``2 N - 1``). Runs under ``torch.no_grad()``; a
        ``score_fn`` that needs autograd must enable it itself.
    """
    sde = check_linear_sde(sde)
    counting = CountingScoreFn(score_fn)
    shape = check_shape(shape)
    steps, rho, S_churn, S_min, S_max, S_noise = check_edm_options(steps, rho, S_churn, S_min, S_max, S_noise)
    sigma_min = check_positive("sigma_min", sigma_min)
    sigma_max = check_positive("sigma_max", sigma_max)
    if sigma_min >= sigma_max:
        raise ValueError(f"sigma_min must be < sigma_max, got sigma_min={sigma_min} >= sigma_max={sigma_max}")
    eps = check_eps(eps, sde)
    dtype = resolve_dtype(dtype, x_init)
    if x_init is not None and tuple(x_init.shape) != shape:
        raise ValueError(f"x_init has shape {tuple(x_init.shape)} but shape={shape}")
    bottom, top = (level.scaled_sigma for level in levels_at(sde, torch.tensor([eps, sde.T], dtype=torch.float64)))
    low, high = max(sigma_min, bottom), min(sigma_max, top)
    if not low < high:
        raise ValueError(
            f"sigma_min={sigma_min}, sigma_max={sigma_max} leave no noise range within the SDE's "
            f"[sigma~(eps), sigma~(T)] = [{bottom:.6g}, {top:.6g}]"
        )

    sigmas = edm_sigmas(low, high, steps, rho)
    levels = levels_at(sde, time_of_scaled_sigma(sde, torch.tensor(sigmas, dtype=torch.float64), eps))
    raised: list[NoiseLevel | None] = []
    for level, gamma in zip(levels, churn_gammas([lv.scaled_sigma for lv in levels], S_churn, S_min, S_max)):
        sigma_hat = min(level.scaled_sigma * (1.0 + gamma), top)
        if sigma_hat > level.scaled_sigma:
            t_hat = time_of_scaled_sigma(sde, torch.tensor([sigma_hat], dtype=torch.float64), eps)
            raised.append(levels_at(sde, t_hat)[0])
        else:
            raised.append(None)

    device = resolve_device(device, generator, x_init)
    state_dtype = grid_dtype(device)
    with torch.no_grad():
        if x_init is None:
            y = levels[0].scaled_sigma * torch.randn(shape, generator=generator, device=device, dtype=state_dtype)
        else:
            y = x_init.to(device=device, dtype=state_dtype) / levels[0].alpha
        y = heun_scaled(counting, y, [*levels, DATA_LEVEL], 2, True, progress, raised, S_noise, generator)
    return (DATA_LEVEL.alpha * y).to(dtype), counting.nfe
