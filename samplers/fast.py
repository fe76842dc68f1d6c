"""``fast_sample``: few-evaluation deterministic sampling by solving the probability-flow ODE.

Two solvers share one budget rule, ``nfe`` = the score evaluations actually made (never more than asked):

* ``method="dpm_solver"`` (the default for every SDE): the multistep exponential integrator of
  :mod:`samplers.dpm_solver` (DPM-Solver / DPM-Solver++ in the half-log-SNR ``lambda``), orders 1-3, with
  the UniPC corrector (order + 1), one evaluation per step: ``steps = nfe - denoise``; the first
  ``order - 1`` steps are lower-order warm-up steps, so ``nfe - denoise >= order`` is required.
* ``method="heun"``: EDM's Heun (order 2) or Euler (order 1) steps in ``sigma / alpha``
  (:func:`samplers.edm.heun_solver`: the stepping of :func:`samplers.edm_sample` without churn, on this module's
  grid from ``T`` to ``eps``), the reference solver for VE. Order 2 takes ``ceil((nfe - denoise) / 2)`` steps,
  the last one an Euler step when ``nfe - denoise`` is odd; ``nfe - denoise >= 2`` is required. Order 1
  takes ``nfe - denoise`` Euler steps.

Defaults, chosen with ``benchmarks/fast_solvers.py`` (every option combination against the converged ODE on
2-D, 64-D and 128-D Gaussian mixtures of equal and unequal components and on Gaussian images, VP / sub-VP /
VE, 5-50 evaluations; the README has the table): DPM-Solver with noise prediction and the UniPC corrector
``"bh1"`` (one order more at no extra evaluation), of order 1 on grids of fewer than 15 steps and 3 from 15 on
(:func:`default_order`), on ``"vp_time_quadratic"`` (:func:`default_schedule`), with ``lower_order_final``.
Data prediction (DPM-Solver++) remains the choice for guided sampling with large guidance scales (Lu et al. 2022b).

``denoise=True`` spends one more evaluation on Tweedie's estimate ``E[x0 | x_eps] = (x + sigma^2 score) /
alpha`` at ``t = eps`` (for VE this is EDM's final Euler step to ``sigma = 0``). It is off by default: the
ODE already ends at the data end, and at the default ``eps = 1e-3`` the remaining noise is ``sigma(eps) =
0.01`` (VP, VE) or ``1e-4`` (sub-VP), small against the data scale, while at 10-20 evaluations a solver
step is worth more (ring, 20 evaluations: 19 steps + Tweedie spread the modes 0.0-0.15 % more than 20 steps).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from sde_lib import LinearSDE, ScoreFn
from base_lib.checks import check_bool, check_positive_int

from .common import (
    CountingScoreFn,
    check_choice,
    check_eps,
    check_linear_sde,
    check_shape,
    initial_state,
    resolve_device,
    resolve_dtype,
    tweedie_denoise,
)
from .dpm_solver import CORRECTORS, MAX_ORDER, PREDICTIONS, dpm_solver_multistep
from .edm import HEUN_ORDERS, heun_solver, heun_steps
from .timesteps import SCHEDULES, noise_levels

METHODS = ("dpm_solver", "heun")
DEFAULT_CORRECTOR = "bh1"  # UniPC's B(h) = h, its choice for unconditional sampling
FEW_STEPS = 15  # DPM-Solver grids of fewer steps default to order 1 (+ UniC: order 2), longer ones to order 3


def default_order(method: str, steps: int) -> int:
    """Heun: 2. DPM-Solver: 1 (DDIM, made order 2 by the UniC corrector) on grids of fewer than :data:`FEW_STEPS`
    steps, else 3 (order 4 with UniC).

    With fewer than 15 steps a step spans 0.6-3 in ``lambda``, wider than the range over which the predictions are
    smooth enough for a multistep extrapolation from earlier steps to pay: in ``benchmarks/fast_solvers.py`` order
    1 + UniC had the lower error below 15 evaluations on every SDE, order 3 from 15 on (figures in the README).
    """
    if method == "heun":
        return 2
    return 1 if steps < FEW_STEPS else 3


def order_for_budget(method: str, order: int | None, nfe: int, denoise: bool) -> int | None:
    """``order``, or if it is ``None`` :func:`default_order` for the evaluations left to the solver after
    ``denoise``'s one."""
    return default_order(method, nfe - int(denoise)) if order is None else order


def default_schedule(sde: LinearSDE, method: str, prediction: str = "noise") -> str:
    """``"vp_time_quadratic"`` for DPM-Solver with noise prediction, ``"logSNR"`` with data prediction, ``"edm"`` for Heun.

    The same for every SDE: in ``lambda`` the ODE does not depend on it (:mod:`samplers.timesteps`). Near the data
    ``"vp_time_quadratic"`` is uniform in ``sigma / alpha``, so where that is far below 0.01 at ``eps`` (sub-VP:
    1e-4) its last step is long (4-7 in ``lambda``, 5x the one before) and runs at order 1
    (:func:`samplers.dpm_solver.step_orders`). Sub-VP's own ``"time_quadratic"`` grid has no such step and was
    more accurate on Gaussian data at 30-50 evaluations, but less on the 8-Gaussian ring (within-mode variance
    at 20 evaluations, ``tests/test_fast_sampler.py``), so the default stays one schedule for all SDEs.
    Data prediction weights each step's integral towards the step's end, where the multistep polynomial
    extrapolates, so it suffers most from a long last step: ``"logSNR"`` has none.
    """
    if method == "heun":
        return "edm"
    return "logSNR" if prediction == "data" else "vp_time_quadratic"


def _check_corrector_options(method: str, corrector: str | None, lower_order_final: bool | None) -> tuple[str | None, bool]:
    """``(corrector or None, lower_order_final)`` for DPM-Solver with the defaults filled in; Heun takes neither."""
    if method == "heun":
        if corrector not in (None, "none") or lower_order_final:
            raise ValueError(
                f"corrector and lower_order_final apply to method='dpm_solver' only; got corrector={corrector!r}, "
                f"lower_order_final={lower_order_final!r}"
            )
        return None, False
    corrector = check_choice("corrector", DEFAULT_CORRECTOR if corrector is None else corrector, ("none",) + CORRECTORS)
    if lower_order_final is None:
        lower_order_final = True
    return (None if corrector == "none" else corrector), check_bool("lower_order_final", lower_order_final)


def solver_steps(method: str, order: int, nfe: int, denoise: bool) -> tuple[int, bool]:
    """``(steps, last_euler)`` for the budget (rules in the module docstring); ``ValueError`` if ``nfe`` is too small."""
    solver_nfe = nfe - int(denoise)
    needed = order  # DPM-Solver: one step per order (warm-up); Heun: one Heun step or one Euler step
    if solver_nfe < needed:
        raise ValueError(
            f"nfe must be >= {needed + int(denoise)} for method={method!r}, order={order}, denoise={denoise}; got nfe={nfe}"
        )
    if method == "dpm_solver":
        return solver_nfe, False
    return heun_steps(solver_nfe, order)


def fast_sample(
    sde: LinearSDE,
    score_fn: ScoreFn,
    shape: Sequence[int],
    nfe: int = 20,
    order: int | None = None,
    schedule: str | None = None,
    eps: float = 1e-3,
    x_init: Tensor | None = None,
    denoise: bool = False,
    method: str | None = None,
    prediction: str | None = None,
    dtype: torch.dtype | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
    *,
    corrector: str | None = None,
    lower_order_final: bool | None = None,
) -> tuple[Tensor, int]:
    """Sample by solving the probability-flow ODE [SDE, eq. (13)] from ``t = T`` to ``t = eps`` in at most ``nfe`` evaluations.

    Args:
        sde: a ``sde_lib.LinearSDE`` (VP, sub-VP, VE, ...); the solvers use only ``sde.marginal_coeffs``.
        score_fn: ``score_fn(x, t)`` approximating ``grad_x log p_t(x)``; ``t`` is ``(B,)``.
        shape: ``(B, ...)`` of the samples.
        nfe: budget of score evaluations (see the module docstring for how it becomes steps).
        order: solver order; DPM-Solver 1, 2 or 3 (default :func:`default_order`: 1 below 15 steps, else 3),
            Heun 1 (Euler) or 2 (default).
        schedule: ``"logSNR"``, ``"time_uniform"``, ``"time_quadratic"``, ``"vp_time_quadratic"`` or ``"edm"``
            (:mod:`samplers.timesteps`); default :func:`default_schedule` (``"vp_time_quadratic"``; ``"logSNR"`` with
            data prediction; ``"edm"`` for Heun).
        eps: the time the ODE is integrated to, in ``(0, T)``.
        x_init: start ``x(T)`` of shape ``shape``; default a draw from the prior with ``generator``.
        denoise: spend one evaluation on Tweedie's ``E[x0 | x_eps]`` at the end.
        method: ``"dpm_solver"`` (default) or ``"heun"``.
        prediction: DPM-Solver's parameterization, ``"noise"`` (DPM-Solver, default) or ``"data"`` (DPM-Solver++);
            Heun has a single form, so it must be left ``None`` there.
        dtype: dtype of the samples; default that of ``x_init``, else float32.
        generator, device, progress: random source of the prior draw, device, tqdm bar.
        corrector: DPM-Solver only: the UniPC corrector (:mod:`samplers.dpm_solver`), ``"bh1"`` (default),
            ``"bh2"`` or ``"none"``; it adds no evaluation. Keyword-only, as ``lower_order_final``.
        lower_order_final: DPM-Solver only: lower the order of the last steps to ``steps - i`` (UniPC's rule, on
            every grid; the last step is DDIM). Default True. On any grid a step much longer than
            an earlier one does not use that step's node (:func:`samplers.dpm_solver.step_orders`).

    Returns:
        ``(x, nfe)``: samples at ``t = eps`` (Tweedie-denoised if asked) and the evaluations made.
    """
    sde = check_linear_sde(sde)
    counting = CountingScoreFn(score_fn)
    shape = check_shape(shape)
    nfe = check_positive_int("nfe", nfe)
    eps = check_eps(eps, sde)
    method = check_choice("method", "dpm_solver" if method is None else method, METHODS)
    check_bool("denoise", denoise)
    orders = range(1, MAX_ORDER + 1) if method == "dpm_solver" else HEUN_ORDERS
    order = order_for_budget(method, order, nfe, denoise)
    if isinstance(order, bool) or order not in orders:
        raise ValueError(f"order must be one of {', '.join(map(str, orders))} for method={method!r}; got {order!r}")
    if method == "heun" and prediction is not None:
        raise ValueError(f"prediction applies to method='dpm_solver' only (Heun steps eps = -sigma * score); got {prediction!r}")
    prediction = check_choice("prediction", "noise" if prediction is None else prediction, PREDICTIONS)
    schedule = check_choice("schedule", default_schedule(sde, method, prediction) if schedule is None else schedule, SCHEDULES)
    corrector, lower_order_final = _check_corrector_options(method, corrector, lower_order_final)
    dtype = resolve_dtype(dtype, x_init)
    steps, last_euler = solver_steps(method, order, nfe, denoise)

    device = resolve_device(device, generator, x_init)
    x = initial_state(sde, shape, x_init, generator, device, dtype).to(dtype)
    levels = noise_levels(sde, schedule, steps, eps, device)
    if method == "dpm_solver":
        x = dpm_solver_multistep(counting, x, levels, order, prediction, corrector, lower_order_final, progress)
    else:
        x = heun_solver(counting, x, levels, order, last_euler, progress)
    if denoise:
        x = tweedie_denoise(sde, counting, x, levels[-1].t)
    return x, counting.nfe
