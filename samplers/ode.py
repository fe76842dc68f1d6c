"""Probability-flow ODE sampler and encoder, [SDE] eq. (13) and section 4.3.

The probability-flow ODE ``dx/dt = f(x, t) - 1/2 g(t)^2 grad_x log p_t(x)`` has the same marginals
``p_t`` as the forward SDE, so integrating it from ``x(T) ~ p_T`` down to ``t = eps`` draws from ``p_eps``
(:func:`ode_sample`), and integrating it forward from data gives the latent code ``z = x(T)``
(:func:`ode_encode`); the map is a bijection, decoding a given ``z`` is ``ode_sample(..., z=z)``.

Solvers (see :mod:`samplers.odeint`): ``method`` is a scipy name (``"RK45"`` default, ``"RK23"``,
``"DOP853"``, ``"Radau"``, ``"BDF"``, ``"LSODA"``: ``scipy.integrate.solve_ivp`` on the flattened batch with
one global step, exactly as the 2021 reference) or a torch-native one (``"dopri5"``, ``"bosh3"``: on the
device, per-sample adaptive steps, so each sample's result is independent of the batch).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from sde_lib import SDE, ScoreFn, time_batch
from base_lib.checks import check_bool

from .common import CountingScoreFn, check_choice, check_eps, check_positive, check_shape, initial_state, resolve_device
from .odeint import ODE_METHODS, odeint

DEFAULT_METHOD = "RK45"


def probability_flow_drift(sde: SDE, score_fn: ScoreFn) -> Callable[[Tensor, Tensor], Tensor]:
    """``drift(t, x) = f(x, t) - 1/2 g(t)^2 score(x, t)``, [SDE] eq. (13), as ``dx/dt`` in forward time."""
    rsde = sde.reverse(score_fn, probability_flow=True)

    def drift(t: Tensor, x: Tensor) -> Tensor:
        return rsde.sde(x, t)[0]

    return drift


def denoise_step(sde: SDE, score_fn: ScoreFn, x: Tensor, eps: float) -> Tensor:
    """The 2021 reference's final denoising: the noise-free reverse-diffusion step at ``t = eps``.

    ``x - f_rev(x, eps)`` with ``f_rev = f_i - G_i^2 score(x, eps)`` the reverse of the SDE's discretization
    ([SDE] eq. (46); the mean of the reverse-diffusion predictor). For VE (SMLD discretization,
    ``i = floor(eps (N - 1) / T) = 0`` at the defaults) this is ``x + sigma_min^2 score(x, eps)``, Tweedie's
    formula with ``sigma_min`` in place of ``sigma(eps)``; for VP (DDPM discretization, ``i = 0``)
    ``(2 - sqrt(1 - beta_0)) x + beta_0 score(x, eps)`` with ``beta_0 = beta_min / N``; for sub-VP
    (Euler--Maruyama) ``x + (beta(eps) x / 2 + g(eps)^2 score(x, eps)) T / N``. One score evaluation.
    """
    f_rev = sde.reverse(score_fn, probability_flow=False).discretize(x, time_batch(eps, x.shape[0], x))[0]
    return x - f_rev


def bound_drift(sde: SDE, score: CountingScoreFn, x: Tensor) -> tuple[Callable[..., Tensor], tuple[Tensor, ...]]:
    """The probability-flow drift of ``score`` as ``drift(t, y, *args)`` for :func:`odeint`, and the per-sample
    ``args`` it needs (appended after any others).

    A score bound to one input per sample (a signal, class labels: ``models.ScoreModel.score_fn(y)`` has
    ``restrict(rows)``) must see the inputs of the samples still stepped, and the torch solvers drop finished ones:
    the row indices then travel as the last per-sample argument, and each call binds theirs. ``score`` counts every
    evaluation either way.
    """
    restrict = getattr(score.score_fn, "restrict", None)
    if restrict is None:
        flow = probability_flow_drift(sde, score)
        return (lambda t, y, *args: flow(t, y)), ()

    def drift(t: Tensor, y: Tensor, *args: Tensor) -> Tensor:
        rows = CountingScoreFn(restrict(args[-1]))
        out = probability_flow_drift(sde, rows)(t, y)
        score.nfe += rows.nfe
        return out

    return drift, (torch.arange(x.shape[0], device=x.device),)


def _solve(
    sde: SDE, score: CountingScoreFn, x: Tensor, t0: float, t1: float, method: str, rtol: float, atol: float, progress: bool, desc: str
) -> Tensor:
    drift, rows = bound_drift(sde, score, x)
    with torch.no_grad():
        return odeint(drift, x, t0, t1, method=method, rtol=rtol, atol=atol, args=rows, progress=progress, desc=desc).y


def _check_solver(sde: SDE, method: str, rtol: float, atol: float, eps: float) -> tuple[float, float, float]:
    check_choice("method", method, ODE_METHODS)
    return check_positive("rtol", rtol), check_positive("atol", atol), check_eps(eps, sde)


def ode_sample(
    sde: SDE,
    score_fn: ScoreFn,
    shape: Sequence[int],
    method: str = DEFAULT_METHOD,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    eps: float = 1e-3,
    z: Tensor | None = None,
    denoise: bool = False,
    dtype: torch.dtype = torch.float32,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> tuple[Tensor, int]:
    """Sample by integrating the probability-flow ODE, [SDE] eq. (13), from ``T`` down to ``eps``.

    Returns ``(x, nfe)``: ``x`` of ``shape`` (``(B, ...)``) and the number of batched score evaluations.
    ``method``: ODE solver, one of ``"RK45"`` (default, as the 2021 reference), ``"RK23"``, ``"DOP853"``,
    ``"Radau"``, ``"BDF"``, ``"LSODA"`` (scipy) or ``"dopri5"``, ``"bosh3"`` (torch, on the device,
    per-sample steps: the faster choice on a GPU). ``rtol``, ``atol``: solver tolerances. ``eps``: end time
    in ``(0, T)``. ``z``: a latent ``x(T)`` of ``shape`` to decode instead of a prior draw (its dtype is kept).
    ``denoise``: finish with :func:`denoise_step` at ``eps`` (+1 evaluation). ``dtype``: of the prior draw.
    """
    shape = check_shape(shape)
    rtol, atol, eps = _check_solver(sde, method, rtol, atol, eps)
    check_bool("denoise", denoise)
    if z is not None and (not isinstance(z, Tensor) or not z.is_floating_point()):
        raise ValueError(f"z must be a floating-point tensor of shape {shape}, got {type(z).__name__}")
    device = resolve_device(device, generator, z)
    x = initial_state(sde, shape, z, generator, device, dtype, name="z")
    score = CountingScoreFn(score_fn)
    x = _solve(sde, score, x, sde.T, eps, method, rtol, atol, progress, "probability-flow ODE")
    if denoise:
        with torch.no_grad():
            x = denoise_step(sde, score, x, eps)
    return x, score.nfe


def ode_encode(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    method: str = DEFAULT_METHOD,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    eps: float = 1e-3,
    progress: bool = False,
) -> tuple[Tensor, int]:
    """Encode data ``x`` ``(B, ...)`` to its latent ``z = x(T)`` by integrating the probability-flow ODE from ``eps`` to ``T``.

    The inverse of ``ode_sample(..., z=z)`` with the same ``eps`` (up to solver error); options as there.
    Returns ``(z, nfe)`` on the device and in the dtype of ``x``.
    """
    if not isinstance(x, Tensor) or x.ndim < 1 or not x.is_floating_point():
        raise ValueError(f"x must be a floating-point tensor of shape (B, ...), got {type(x).__name__}")
    rtol, atol, eps = _check_solver(sde, method, rtol, atol, eps)
    score = CountingScoreFn(score_fn)
    return _solve(sde, score, x, eps, sde.T, method, rtol, atol, progress, "probability-flow ODE (encode)"), score.nfe
