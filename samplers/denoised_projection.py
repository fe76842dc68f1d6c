"""Projections of the denoised estimate onto a convex set known to hold the exact one: the data's range, a measurement.

For a linear SDE ``x(t) = alpha(t) x(0) + sigma(t) z`` a score ``s(x, t)`` is read as the denoised estimate (Tweedie's
formula) ``D(x, t) = (x + sigma^2 s) / alpha``, and a denoised estimate as the score ``s = (alpha D - x) / sigma^2``.
:func:`project_denoised` replaces ``D`` by ``P(D)`` in between, for a projection ``P`` onto a closed convex set ``C``.

Why it is sound: the exact ``D(x, t) = E[x(0) | x(t) = x]`` is an average of data points, so it lies in every convex
set that holds all the data. When ``C`` is such a set, ``P`` (the Euclidean projection onto ``C``) is non-expansive
towards any point of ``C``: ``|P(D) - D_exact| <= |D - D_exact|``. It leaves an exact score unchanged and never moves a
learned one further from it. Two such sets:

* :func:`clip_denoised`, the box ``[low, high]^D`` of the data's range (every coordinate of every data point lies in
  it; the projection is a clamp, non-expansive coordinate by coordinate). It is the clipping of the predicted ``x_0``
  in the sampler of Ho et al. 2020 ("Denoising Diffusion Probabilistic Models", released code: ``clip_denoised``) and
  the static thresholding of Saharia et al. 2022 ("Photorealistic Text-to-Image Diffusion Models with Deep Language
  Understanding", sec. 2.3).
* :func:`consistent_denoised`, the affine set ``{x : A x = y}`` of a known linear measurement (a conditional model of
  ``p(x | y)``: every ``x(0)`` of the posterior satisfies it, so ``E[x(0) | x(t), y]`` does). The projection is the
  operator's ``complete``: ``D - A^T A D + A^T y`` (orthonormal rows); Wang et al. 2023 ("Zero-Shot Image Restoration
  Using Denoising Diffusion Null-Space Model") apply it to an unconditional model's estimate.

Composed, the two projections still never increase the distance to the exact estimate, which lies in both sets. A
network that extrapolates badly at high noise (few training examples, a short run) can send probability-flow
trajectories far outside the data's range; with the projection they stay in it. The projected score is no longer the
gradient of a density, so it is for sampling only: likelihoods keep the network's own score.
"""

from __future__ import annotations

import math
from typing import Callable

from torch import Tensor

from sde_lib import SDE, LinearSDE, ScoreFn, batch_broadcast

from .controllable.operators import LinearMeasurement

Projection = Callable[[Tensor], Tensor]
"""``P(D) -> D'``: a projection of a batch of denoised estimates ``(B, ...)``."""


def check_data_range(name: str, data_range: tuple[float, float]) -> tuple[float, float]:
    """``(low, high)`` as floats with ``low < high``, both finite, else ``ValueError`` naming ``name``."""
    try:
        low, high = (float(v) for v in data_range)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (low, high) of numbers, got {data_range!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"{name} must be finite with low < high, got ({low}, {high})")
    return low, high


def project_denoised(sde: SDE, score_fn: ScoreFn, projection: Projection,
                     restrict: Callable[[Tensor], Projection] | None = None) -> ScoreFn:
    """``score_fn`` with its denoised estimate replaced by ``projection`` of it (module docstring), as a plain
    ``score_fn(x, t)`` for every sampler.

    Args:
        sde: the linear SDE the score belongs to (it gives ``alpha(t)`` and ``sigma(t)``).
        score_fn: ``score_fn(x, t)``; a ``restrict(rows)`` it has (a score bound to one input per sample) is kept.
        projection: ``P(D)`` of a batch of denoised estimates shaped as ``x``.
        restrict: ``restrict(rows) -> P`` for the samples ``rows`` of the batch, when ``projection`` depends on the
            sample (a measurement per sample); ``None``: the same ``projection`` for every sample.
    """
    if not isinstance(sde, LinearSDE):
        raise ValueError(f"projecting the denoised estimate needs a linear SDE (alpha(t), sigma(t)), got {type(sde).__name__}")

    def projected(x: Tensor, t: Tensor) -> Tensor:
        score = score_fn(x, t)
        alpha, sigma = sde.marginal_coeffs(t.to(x.dtype))
        alpha, variance = batch_broadcast(alpha, x), batch_broadcast(sigma.square(), x)
        return (alpha * projection((x + variance * score) / alpha) - x) / variance

    restrict_score = getattr(score_fn, "restrict", None)
    if restrict_score is not None or restrict is not None:
        def restricted(rows: Tensor) -> ScoreFn:
            inner = restrict_score(rows) if restrict_score is not None else score_fn
            rows_projection = restrict(rows) if restrict is not None else projection
            return project_denoised(sde, inner, rows_projection, None if restrict is None else (lambda r: restrict(rows[r])))

        projected.restrict = restricted
    return projected


def clip_denoised(sde: SDE, score_fn: ScoreFn, data_range: tuple[float, float]) -> ScoreFn:
    """``score_fn`` with its denoised estimate clamped to ``data_range`` = ``(low, high)``, the range of every
    coordinate of the data in the model's coordinates (module docstring)."""
    low, high = check_data_range("data_range", data_range)
    return project_denoised(sde, score_fn, lambda d: d.clamp(low, high))


def consistent_denoised(sde: SDE, score_fn: ScoreFn, operator: LinearMeasurement, y: Tensor) -> ScoreFn:
    """``score_fn`` with its denoised estimate projected onto ``{x : A x = y}``, ``A`` = ``operator`` and ``y`` one
    measurement per sample ``(B, ...)`` (module docstring): the score of a model of ``p(x | y)``."""
    if not isinstance(operator, LinearMeasurement):
        raise ValueError(f"operator must be a samplers.controllable.LinearMeasurement, got {type(operator).__name__}")
    y = operator.check_measurement(y, "y")

    def for_rows(rows: Tensor) -> Projection:
        rows_y = y.index_select(0, rows.to(y.device))
        return lambda d: operator.complete(d, rows_y)

    return project_denoised(sde, score_fn, lambda d: operator.complete(d, y), restrict=for_rows)


__all__ = ["check_data_range", "clip_denoised", "consistent_denoised", "project_denoised"]
