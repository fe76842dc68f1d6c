"""Helpers shared by every sampler: argument checks, NFE counting, device/generator resolution, progress bars.

Every sampler in this package has the signature ``sampler(sde, score_fn, shape, ..., generator=None,
device=None, progress=False) -> (x, nfe)``; these helpers keep that contract in one place.
"""

from __future__ import annotations

from typing import Iterable, Iterator, TypeVar

import torch
from torch import Tensor
from tqdm.auto import tqdm

from sde_lib import SDE, LinearSDE, ScoreFn, batch_broadcast, time_batch
from base_lib.checks import check_finite_positive as check_positive  # noqa: F401 - re-exported for the samplers
from base_lib.checks import check_choice, check_positive_int, check_shape  # noqa: F401 - re-exported for the samplers

T_ = TypeVar("T_")


class CountingScoreFn:
    """Wrap ``score_fn(x, t)`` and count its calls: ``nfe`` is the number of (batched) score evaluations made."""

    def __init__(self, score_fn: ScoreFn):
        if not callable(score_fn):
            raise ValueError(f"score_fn must be callable as score_fn(x, t), got {type(score_fn).__name__}")
        self.score_fn = score_fn  # the wrapped score function
        self.nfe = 0  # evaluations so far

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        self.nfe += 1
        score = self.score_fn(x, t)
        if score.shape != x.shape:
            raise ValueError(f"score_fn returned shape {tuple(score.shape)}, expected the shape of x {tuple(x.shape)}")
        return score


def check_eps(eps: float, sde: SDE, name: str = "eps") -> float:
    """``eps`` (the smallest time integrated to) as a float in the open interval ``(0, T)``, else ``ValueError``."""
    try:
        eps = float(eps)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in (0, T) = (0, {sde.T}), got {eps!r}") from None
    if not 0.0 < eps < sde.T:
        raise ValueError(f"{name} must lie in (0, T) = (0, {sde.T}), got {eps}")
    return eps


def resolve_device(
    device: torch.device | str | None, generator: torch.Generator | None = None, x: Tensor | None = None
) -> torch.device:
    """The device to sample on: ``device`` if given, else that of ``x``, else that of ``generator``, else the CPU."""
    if device is not None:
        return torch.device(device)
    if x is not None:
        return x.device
    if generator is not None:
        return generator.device
    return torch.device("cpu")


def resolve_dtype(dtype: torch.dtype | None, x_init: Tensor | None) -> torch.dtype:
    """The sampling dtype: ``dtype`` if given (floating point), else that of ``x_init``, else float32."""
    if x_init is not None and not (isinstance(x_init, Tensor) and x_init.is_floating_point()):
        raise ValueError(f"x_init must be a floating-point tensor, got {type(x_init).__name__}")
    if dtype is None:
        return x_init.dtype if x_init is not None else torch.float32
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    return dtype


def initial_state(
    sde: SDE,
    shape: tuple[int, ...],
    x_init: Tensor | None,
    generator: torch.Generator | None,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    name: str = "x_init",
) -> Tensor:
    """``x_init`` checked against ``shape`` and moved to ``device``, or a fresh draw from the prior."""
    if x_init is None:
        return sde.prior_sampling(shape, generator=generator, device=device, dtype=dtype)
    if tuple(x_init.shape) != shape:
        raise ValueError(f"{name} has shape {tuple(x_init.shape)} but shape={shape}")
    return x_init.to(device=device)


def progress_bar(iterable: Iterable[T_], enabled: bool, desc: str, total: int | None = None) -> Iterator[T_]:
    """``iterable`` wrapped in a tqdm progress bar when ``enabled``."""
    if not enabled:
        return iter(iterable)
    return iter(tqdm(iterable, desc=desc, total=total, leave=False, dynamic_ncols=True))


class TimeProgress:
    """A tqdm bar over the time interval ``start -> end`` (either direction), advanced to the time reached; no-op when disabled."""

    def __init__(self, enabled: bool, start: float, end: float, desc: str):
        bar_format = "{l_bar}{bar}| [{elapsed}{postfix}]"
        self._bar = tqdm(total=1.0, desc=desc, leave=False, dynamic_ncols=True, bar_format=bar_format) if enabled else None
        self._start = float(start)  # time at which integration starts
        self._span = float(end) - float(start)  # signed length of the interval
        self._done = 0.0

    def advance_to(self, t: float) -> None:
        """Show that every sample has reached time ``t``."""
        if self._bar is None or self._span == 0:
            return
        done = min(max((t - self._start) / self._span, 0.0), 1.0)
        self._bar.set_postfix_str(f"t={t:.5g}", refresh=False)
        if done > self._done:
            self._bar.update(done - self._done)
            self._done = done

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def check_sde(sde: SDE) -> SDE:
    """``sde`` if it is an :class:`sde_lib.SDE`, else ``ValueError``."""
    if not isinstance(sde, SDE):
        raise ValueError(f"sde must be an sde_lib.SDE, got {type(sde).__name__}")
    return sde


def check_linear_sde(sde: LinearSDE) -> LinearSDE:
    """``sde`` if it is an :class:`sde_lib.LinearSDE` (Gaussian kernel ``N(alpha x0, sigma^2 I)``), else ``ValueError``."""
    if not isinstance(sde, LinearSDE):
        raise ValueError(f"sde must be a sde_lib.LinearSDE (VPSDE, subVPSDE, VESDE, ...), got {type(sde).__name__}")
    return sde


def check_denoise(sde: SDE, denoise: bool) -> bool:
    """``denoise`` as a bool; ``ValueError`` if it is requested for an SDE without a Gaussian linear kernel."""
    if denoise and not isinstance(sde, LinearSDE):
        raise ValueError(
            f"denoise=True needs a LinearSDE (Tweedie's formula uses its kernel N(alpha x0, sigma^2 I)); "
            f"got {type(sde).__name__}. Pass denoise=False."
        )
    return bool(denoise)


def tweedie_denoise(sde: LinearSDE, score_fn: ScoreFn, x: Tensor, t: float) -> Tensor:
    """Posterior mean ``E[x(0) | x(t) = x] = (x + sigma(t)^2 score(x, t)) / alpha(t)`` (Tweedie's formula; Efron 2011).

    Exact for the kernel ``N(alpha(t) x(0), sigma(t)^2 I)`` of a linear SDE [SDE, eq. (29)] and the exact
    score; one score evaluation. (The 2021 reference instead returns the noise-free mean of one last
    reverse-diffusion step, see :func:`samplers.ode.denoise_step`, and Jolicoeur-Martineau et al. 2021 use
    ``x + sigma^2 score`` without ``1 / alpha``; all agree to ``O(eps)``.)
    """
    tt = time_batch(t, x.shape[0], x)
    alpha, sigma = sde.marginal_coeffs(tt)
    return (x + batch_broadcast(sigma.square(), x) * score_fn(x, tt)) / batch_broadcast(alpha, x)
