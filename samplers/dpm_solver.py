"""Multistep exponential integrator of the probability-flow ODE (DPM-Solver / DPM-Solver++) with the UniPC corrector.

For a linear SDE with kernel ``N(alpha_t x0, sigma_t^2 I)`` the probability-flow ODE [SDE, eq. (13)]
``dx/dt = f(t) x - g(t)^2 / 2 * score(x, t)`` is semi-linear in ``x``. With ``f = d log alpha / dt`` and,
because ``sigma_t`` is the marginal std, ``g^2 = d sigma^2 / dt - 2 f sigma^2`` (for sub-VP:
``sigma = 1 - e^{-B}``, ``f = -beta/2`` give ``2 sigma sigma' + beta sigma^2 = beta (1 - e^{-2B}) = g^2``,
its diffusion coefficient), the half-log-SNR ``lambda = log(alpha / sigma)`` turns it into

* noise prediction ``eps = -sigma * score`` (Lu et al. 2022a, DPM-Solver, eq. (3.4)):
  ``x_t = (alpha_t / alpha_s) x_s - sigma_t int_{lambda_s}^{lambda_t} e^{lambda_t - lambda} eps dlambda``;
* data prediction ``x0 = (x + sigma^2 score) / alpha`` (Lu et al. 2022b, DPM-Solver++):
  ``x_t = (sigma_t / sigma_s) x_s + alpha_t int_{lambda_s}^{lambda_t} e^{lambda - lambda_t} x0 dlambda``.

With ``h = lambda_t - lambda_s``, ``phi_k(z) = int_0^1 e^{(1-u) z} u^{k-1} / (k-1)! du`` and ``(A, C, z) =
(sigma_t / sigma_s, alpha_t, -h)`` for data, ``(alpha_t / alpha_s, -sigma_t, h)`` for noise prediction, the
integral of the Taylor series of the prediction ``m`` about ``lambda_s`` is
``x_t = A x_s + C sum_{k >= 1} h^k phi_k(z) m^{(k-1)}(lambda_s)``. Given the predictions ``m_j`` at other
nodes ``lambda_j = lambda_s + r_j h``, the step used here is (the form of UniPC, Zhao et al. 2023)

    x_t = A x_s + C (h phi_1(z) m_s + sum_j w_j D_j),    D_j = (m_j - m_s) / r_j,

and since ``D_j = sum_{k >= 1} r_j^{k-1} h^k m^{(k)} / k!``, it is exact for predictions that are polynomials
of degree ``p`` in ``lambda`` (local error ``O(h^{p+2})``, order ``p + 1``) when the ``p`` weights solve the order
conditions ``sum_j w_j r_j^{k-1} = k! h phi_{k+1}(z)``, ``k = 1..p`` (:func:`difference_weights`).

* Predictor (DPM-Solver(++) ``order``-M, Lu et al. 2022b): the nodes are the ``order - 1`` previous steps'
  points (``r_j < 0``), one evaluation per step at its start; order 1 is DDIM.
* Corrector (UniC, Zhao et al. 2023): once the prediction ``m_t`` at the predicted ``x_t`` has been
  evaluated (the next step needs it anyway), the same step is redone from ``x_s`` with ``lambda_t`` added to
  the nodes (``r = 1``): one degree more, so order ``p + 1`` for a ``p``-th order predictor, and no extra
  evaluation; ``m_t`` is kept (not re-evaluated at the corrected point). The last step is not corrected (that
  would cost an evaluation). With a single difference UniPC replaces ``w = h phi_2(z)`` by ``B(z) h / (2 z)``,
  ``B(z) = z`` (``"bh1"``) or ``expm1(z)`` (``"bh2"``), equal to it up to ``O(h^2)``, in its predictor (UniP) as
  in its corrector, so with a corrector the predictor's single difference takes the same weight; with more
  differences the order conditions fix ``w`` and the two variants coincide. Without a corrector the predictor
  solves the order conditions (DPM-Solver's ``taylor`` form; its default ``dpmsolver`` 2M weight
  ``h phi_1(z) / 2`` is the ``"bh2"`` one). For steps of ``|h|`` near 1 or more, as with few steps, the weights
  differ widely: at ``h = 2`` in noise prediction ``h phi_2(h)`` is 2.2 where ``h / 2`` is 1.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor

from sde_lib import time_batch

from .common import progress_bar
from .timesteps import NoiseLevel

PREDICTIONS = ("data", "noise")
CORRECTORS = ("bh1", "bh2")
MAX_ORDER = 3
MAX_STEP_RATIO = 1.0 + math.sqrt(2.0)  # longest step, relative to an earlier one, that may use that one's node
_SERIES_RADIUS = 1.0  # |z| below which phi_k is summed as a power series (no cancellation)
_SERIES_TERMS = 25  # terms of that series: |z|^25 / 25! < 1e-25

Node = tuple[float, Tensor]  # (lambda_j, prediction m_j)


def phi(k: int, z: float) -> float:
    """``phi_k(z) = sum_{n >= 0} z^n / (n + k)!`` (so ``phi_1 = (e^z - 1) / z``), stable for every ``z``.

    Large ``|z|``: the recurrence ``phi_{j+1}(z) = (phi_j(z) - 1 / j!) / z``; small ``|z|``: the power series.
    """
    if abs(z) < _SERIES_RADIUS:
        return sum(z**n / math.factorial(n + k) for n in range(_SERIES_TERMS))
    value = math.expm1(z) / z
    for j in range(1, k):
        value = (value - 1.0 / math.factorial(j)) / z
    return value


def prediction_fn(score_fn: Callable[[Tensor, Tensor], Tensor], prediction: str) -> Callable[[Tensor, NoiseLevel], Tensor]:
    """``model(x, level)``: data prediction ``(x + sigma^2 score) / alpha`` (Tweedie) or noise prediction ``-sigma score``."""

    def model(x: Tensor, level: NoiseLevel) -> Tensor:
        score = score_fn(x, time_batch(level.t, x.shape[0], x))
        if prediction == "data":
            return (x + level.sigma**2 * score) / level.alpha
        return -level.sigma * score

    return model


def difference_weights(ratios: Sequence[float], h: float, z: float, variant: str | None = None) -> list[float]:
    """The weights ``w_j`` of the differences ``D_j`` (module docstring) for nodes at ``lambda_s + r_j h``.

    ``variant=None``: the solution of the order conditions ``sum_j w_j r_j^{k-1} = k! h phi_{k+1}(z)``,
    ``k = 1..len(ratios)`` (a transposed Vandermonde system, solved in float64). ``"bh1"`` / ``"bh2"``: UniPC's
    rule, which differs from it only for a single difference: ``w = B(z) h / (2 z)`` with ``B(z) = z`` or ``expm1(z)``.
    """
    if not ratios:
        return []
    if len(ratios) == 1 and variant is not None:
        return [0.5 * h * (1.0 if variant == "bh1" else phi(1, z))]  # B(z) / z = 1 or phi_1(z)
    p = len(ratios)
    powers = torch.tensor([[r ** (k - 1) for r in ratios] for k in range(1, p + 1)], dtype=torch.float64)
    targets = torch.tensor([math.factorial(k) * h * phi(k + 1, z) for k in range(1, p + 1)], dtype=torch.float64)
    return torch.linalg.solve(powers, targets).tolist()


def multistep_update(
    x: Tensor,
    src: NoiseLevel,
    dst: NoiseLevel,
    model_src: Tensor,
    nodes: Sequence[Node],
    prediction: str,
    variant: str | None = None,
) -> Tensor:
    """One step ``x_s -> x_t`` of the exponential integrator (module docstring) with the predictions at ``nodes``.

    ``nodes``: ``(lambda_j, m_j)`` other than ``src``, as many as the degree of the interpolating polynomial;
    ``variant``: ``None`` (order conditions) or a UniPC variant (:func:`difference_weights`).
    """
    h = dst.lam - src.lam
    if prediction == "data":
        linear, scale, z = dst.sigma / src.sigma, dst.alpha, -h
    else:
        linear, scale, z = dst.alpha / src.alpha, -dst.sigma, h
    ratios = [(lam - src.lam) / h for lam, _ in nodes]
    x = linear * x + (scale * h * phi(1, z)) * model_src
    for weight, ratio, (_, model) in zip(difference_weights(ratios, h, z, variant), ratios, nodes):
        x = x + (scale * weight / ratio) * (model - model_src)
    return x


def step_orders(lambdas: Sequence[float], order: int, lower_order_final: bool) -> list[int]:
    """Predictor order of each step of the grid ``lambdas`` (``steps + 1`` values of ``lambda``).

    * Warm-up: ``min(order, i + 1)`` (a multistep method has ``i`` earlier nodes at step ``i``).
    * Step-ratio bound, always: a node ``j`` steps back enters step ``i`` only if ``h_i <= MAX_STEP_RATIO *
      h_{i-j}``. Extrapolating from nodes packed into a span much shorter than the step multiplies the
      differences ``D_j / r_j`` by ``1 / |r_j|`` (module docstring); for variable-step two-step methods zero
      stability needs ``h_i / h_{i-1} < 1 + sqrt(2)`` (Grigorieff 1983, variable-step BDF2), the bound used here.
      Grids with a long last step (``time_uniform``; sub-VP on ``vp_time_quadratic``, ratio 5) keep their full
      order elsewhere, so their error falls steadily with the number of steps.
    * ``lower_order_final``: also ``<= steps - i`` on every grid (UniPC's rule; the last step is DDIM). DPM-Solver++
      lowers the order only on grids of fewer than 10-15 steps, which is more accurate for scores smooth in time
      (the exact scores of ``benchmarks/fast_solvers.py``), but a trained network's prediction is not smooth near
      ``t = eps``, where the last, longest steps in ``lambda`` extrapolate it (a trained network's figures are in
      ``benchmarks/results/fast_solvers_network_cpu.txt``).
    """
    steps = len(lambdas) - 1
    widths = [lambdas[i + 1] - lambdas[i] for i in range(steps)]
    orders = []
    for i in range(steps):
        k = min(order, i + 1, steps - i) if lower_order_final else min(order, i + 1)
        nodes = 1
        while nodes < k and widths[i] <= MAX_STEP_RATIO * widths[i - nodes]:
            nodes += 1
        orders.append(nodes)
    return orders


def dpm_solver_multistep(
    score_fn: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    levels: Sequence[NoiseLevel],
    order: int,
    prediction: str,
    corrector: str | None = None,
    lower_order_final: bool = False,
    progress: bool = False,
) -> Tensor:
    """Integrate the probability-flow ODE from ``levels[0]`` to ``levels[-1]`` with the multistep method.

    One score evaluation per step, at the step's start: ``len(levels) - 1`` evaluations in all, with or without
    the ``corrector`` (``None``, ``"bh1"`` or ``"bh2"``), which corrects each step but the last with the
    evaluation that starts the next one and gives the predictor its single-difference weight (UniPC). Step
    orders: :func:`step_orders`. The lower-order warm-up steps sit at ``t = T``, where the predictions'
    ``lambda``-derivatives scale like ``exp(2 lambda_T)`` (4e-5 for VP, 4e-4 for VE): they do not show in the
    measured orders 1-3 (``tests/test_fast_sampler.py``); against order 4 (3 + UniC) with noise prediction the
    first step's ``O(h^3)`` error appears near errors of 1e-8.
    """
    model = prediction_fn(score_fn, prediction)
    steps = len(levels) - 1
    orders = step_orders([level.lam for level in levels], order, lower_order_final)
    history: list[Node] = []  # the previous steps' nodes, newest first
    last_step: tuple[Tensor, NoiseLevel, Tensor, list[Node]] | None = None  # x_s, level, m_s and nodes of the last step
    desc = f"DPM-Solver({order}M, {prediction})" + (f" + UniC-{corrector}" if corrector else "")
    for i in progress_bar(range(steps), progress, desc=desc, total=steps):
        src, dst = levels[i], levels[i + 1]
        model_src = model(x, src)
        if corrector is not None and last_step is not None:
            x_prev, prev, model_prev, prev_nodes = last_step
            x = multistep_update(x_prev, prev, src, model_prev, [(src.lam, model_src)] + prev_nodes, prediction, corrector)
        nodes = history[: orders[i] - 1]
        last_step = (x, src, model_src, nodes)
        x = multistep_update(x, src, dst, model_src, nodes, prediction, corrector)
        history = ([(src.lam, model_src)] + history)[: order - 1]
    return x
