"""``fast_sample``: few-evaluation deterministic sampling by solving the probability-flow ODE.

Two solvers share one budget rule, ``nfe`` = the score evaluations actually made (never more than asked):

* ``method="dpm_solver"`` (the default for every SDE): the multistep exponential integrator of
  :mod:`samplers.dpm_solver` (DPM-Solver / DPM-Solver++ in the half-log-SNR ``lambda``), orders 1-3, with
  the UniPC corrector (order + 1), one evaluation per step: ``steps = nfe - denoise``; the first
  ``order - 1`` steps are lower-order warm-up steps, so ``nfe - denoise >= order`` is required.
* ``method="heun"``: EDM's Heun (order 2) or Euler (order 1) steps in ``sigma / alpha``
  (:mod:`samplers.heun`), the reference solver for VE. Order 2 takes ``ceil((nfe - denoise) / 2)`` steps,
  the last one an Euler step when ``nfe - denoise`` is odd; ``nfe - denoise >= 2`` is required. Order 1
  takes ``nfe - denoise`` Euler steps.

Defaults, chosen by measurement on the 2-D ring of 8 Gaussians with the exact score (within-mode variance
of the samples and their error against the exact ODE flow from the same start; ``tests/test_fast_sampler.py``
checks the rates and the 20-evaluation accuracy): DPM-Solver of order 3 with noise prediction, the UniPC
corrector ``"bh1"`` (one order more at no extra evaluation), ``lower_order_final`` below 15 steps, on the
``"vp_time_quadratic"`` schedule for every SDE (DPM-Solver's ``time_quadratic`` of the standard VP SDE, carried
to the others through ``lambda``, in which the ODE is the same for all of them).
Excess within-mode variance over the exact flow from the same start (1e5 samples, SE <= 0.07 %; a second
seed agrees), at 10 / 15 / 20 evaluations: VP 6.0 / 3.5 / 1.4 %, sub-VP 8.2 / 2.0 / 0.6 %, VE 5.4 / 2.9 / 1.2 %.
1000-step PC (reverse diffusion + Langevin, snr 0.16, 2000 evaluations) is 2.2-2.3 % above the data's (the exact
flow: 0.07-0.19 %), so 20 evaluations match it. The former default (no corrector, ``time_quadratic`` for VP /
sub-VP, ``edm`` for VE) gave 25 / 10 / 5.2 %, 22 / 13 / 7.8 % and 15 / 11 / 7.6 %. Data prediction
(DPM-Solver++) was less accurate than noise prediction on the ring on every schedule tried (with the corrector
at 20 evaluations on ``"logSNR"``: 9 / 21 / 7 %); it remains the choice for guided sampling with large
guidance scales (Lu et al. 2022b). DPM-Solver beat Heun on VE by 7-30x at 10-40
evaluations; Heun is EDM's reference solver.

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
    check_shape,
    initial_state,
    resolve_device,
    resolve_dtype,
    tweedie_denoise,
)
from .dpm_solver import CORRECTORS, MAX_ORDER, PREDICTIONS, dpm_solver_multistep
from .heun import HEUN_ORDERS, heun_solver, heun_steps
from .timesteps import SCHEDULES, noise_levels

METHODS = ("dpm_solver", "heun")
DEFAULT_ORDER = {"dpm_solver": 3, "heun": 2}
DEFAULT_CORRECTOR = "bh1"  # UniPC's B(h) = h, its choice for unconditional sampling; measured best on the ring


def default_schedule(sde: LinearSDE, method: str, prediction: str = "noise") -> str:
    """``"vp_time_quadratic"`` for DPM-Solver with noise prediction, ``"logSNR"`` with data prediction, ``"edm"`` for Heun.

    The same for every SDE: in ``lambda`` the ODE does not depend on it (:mod:`samplers.timesteps`). Data
    prediction weights each step's integral towards the step's end, where the multistep polynomial extrapolates,
    so it suffers from the long last ``lambda`` step that ``"vp_time_quadratic"`` takes when ``sigma / alpha`` at
    ``eps`` is far below 0.01 (sub-VP: 1e-4): there its error was 4-6x that on ``"logSNR"`` (ring, 15-20
    evaluations) and 30x (Gaussian data, 50). ``"logSNR"`` has no such step (on VP / VE it was up to 2x less accurate).
    """
    if method == "heun":
        return "edm"
    return "logSNR" if prediction == "data" else "vp_time_quadratic"


def _check_sde(sde: LinearSDE) -> LinearSDE:
    if not isinstance(sde, LinearSDE):
        raise ValueError(f"sde must be a sde_lib.LinearSDE (VPSDE, subVPSDE, VESDE, ...), got {type(sde).__name__}")
    return sde


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
        order: solver order; DPM-Solver 1, 2 or 3 (default 3), Heun 1 (Euler) or 2 (default).
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
        lower_order_final: DPM-Solver only: on grids of fewer than 15 steps, lower the order of the last steps to
            ``steps - i`` (DPM-Solver++; the last step is DDIM). Default True.

    Returns:
        ``(x, nfe)``: samples at ``t = eps`` (Tweedie-denoised if asked) and the evaluations made.
    """
    sde = _check_sde(sde)
    counting = CountingScoreFn(score_fn)
    shape = check_shape(shape)
    nfe = check_positive_int("nfe", nfe)
    eps = check_eps(eps, sde)
    method = check_choice("method", "dpm_solver" if method is None else method, METHODS)
    orders = range(1, MAX_ORDER + 1) if method == "dpm_solver" else HEUN_ORDERS
    order = DEFAULT_ORDER[method] if order is None else order
    if isinstance(order, bool) or order not in orders:
        raise ValueError(f"order must be one of {', '.join(map(str, orders))} for method={method!r}; got {order!r}")
    if method == "heun" and prediction is not None:
        raise ValueError(f"prediction applies to method='dpm_solver' only (Heun steps eps = -sigma * score); got {prediction!r}")
    prediction = check_choice("prediction", "noise" if prediction is None else prediction, PREDICTIONS)
    schedule = check_choice("schedule", default_schedule(sde, method, prediction) if schedule is None else schedule, SCHEDULES)
    corrector, lower_order_final = _check_corrector_options(method, corrector, lower_order_final)
    check_bool("denoise", denoise)
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
