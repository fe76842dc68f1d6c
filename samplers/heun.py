"""EDM's Euler / Heun solver of the probability-flow ODE in the noise level (Karras et al., NeurIPS 2022).

For VE (``alpha = 1``) the probability-flow ODE [SDE, eq. (13)] with ``g^2 = d sigma^2 / dt`` is, in
``sigma`` as the independent variable, ``dx / dsigma = -sigma score(x, sigma) = (x - D(x; sigma)) / sigma``
with the denoiser ``D = x + sigma^2 score`` (Karras et al. 2022, eqs. (1) and (3) with ``sigma(t) = t``). For
any linear SDE the same holds for ``y = x / alpha`` in ``sigma~ = sigma / alpha = exp(-lambda)`` (EDM's
scaling ``s(t) = alpha``; it follows from the data-prediction form in :mod:`samplers.dpm_solver`):
``dy / dsigma~ = (y - x0(x)) / sigma~ = eps(x)``, the noise prediction ``eps = -sigma score``.

:func:`heun_solver` steps this ODE over a grid of noise levels with Heun's 2nd-order method (Karras et al.
2022, Algorithm 1, the deterministic sampler) or with Euler's method; a Heun step costs two score
evaluations, an Euler step one.
"""

from __future__ import annotations

from typing import Callable, Sequence

from torch import Tensor

from .common import progress_bar, time_batch
from .timesteps import NoiseLevel

HEUN_ORDERS = (1, 2)


def noise_prediction(score_fn: Callable[[Tensor, Tensor], Tensor], y: Tensor, level: NoiseLevel) -> Tensor:
    """``dy / dsigma~ = eps = -sigma score(alpha y, t)`` at ``level``."""
    return -level.sigma * score_fn(level.alpha * y, time_batch(level.t, y.shape[0], y))


def heun_steps(nfe: int, order: int) -> tuple[int, bool]:
    """``(steps, last_euler)`` for a budget of ``nfe`` evaluations.

    Order 1: ``nfe`` Euler steps. Order 2: ``ceil(nfe / 2)`` steps, all Heun when ``nfe`` is even; when it
    is odd the last step is an Euler step (as EDM's last step), so exactly ``nfe`` evaluations are made.
    """
    if order == 1:
        return nfe, True
    return (nfe + 1) // 2, nfe % 2 == 1


def heun_solver(
    score_fn: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    levels: Sequence[NoiseLevel],
    order: int,
    last_euler: bool,
    progress: bool = False,
) -> Tensor:
    """Integrate the probability-flow ODE from ``levels[0]`` to ``levels[-1]`` by Euler (``order=1``) or Heun steps.

    With ``order=2`` every step is Heun's (Karras et al. 2022, Algorithm 1), except the last when
    ``last_euler``. Evaluations: ``len(levels) - 1`` Euler steps, or ``2 (len(levels) - 1) - last_euler``.
    """
    y = x / levels[0].alpha
    steps = len(levels) - 1
    desc = "Heun" if order == 2 else "Euler"
    for i in progress_bar(range(steps), progress, desc=f"{desc} (sigma/alpha)", total=steps):
        src, dst = levels[i], levels[i + 1]
        delta = dst.scaled_sigma - src.scaled_sigma
        slope = noise_prediction(score_fn, y, src)
        y_euler = y + delta * slope
        if order == 1 or (last_euler and i == steps - 1):
            y = y_euler
        else:
            y = y + 0.5 * delta * (slope + noise_prediction(score_fn, y_euler, dst))
    return levels[-1].alpha * y
