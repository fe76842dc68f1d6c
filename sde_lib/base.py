"""Abstract SDE interface, the linear-SDE family and the reverse-time SDE.

Notation follows Song et al., "Score-Based Generative Modeling through Stochastic
Differential Equations" (ICLR 2021), referred to below as [SDE]:

* forward SDE, eq. (5):            dx = f(x, t) dt + g(t) dw
* reverse-time SDE, eq. (6):       dx = [f(x, t) - g(t)^2 grad_x log p_t(x)] dt + g(t) dw_bar
* probability-flow ODE, eq. (13):  dx = [f(x, t) - 1/2 g(t)^2 grad_x log p_t(x)] dt

Shapes: data ``x`` is ``(B, ...)`` (points ``(B, D)``, images ``(B, C, H, W)``, anything with a
leading batch dimension); time ``t`` is ``(B,)``. Per-sample scalars (diffusion, std, ...) are
returned as ``(B,)`` tensors, as in the 2021 reference, and broadcast against ``x`` by
:func:`batch_broadcast`.
"""

from __future__ import annotations

import abc
import math
import weakref
from typing import Callable

import torch
from torch import Tensor

from base_lib.checks import check_finite_positive, check_positive_int, check_shape

ScoreFn = Callable[[Tensor, Tensor], Tensor]
"""``score_fn(x, t)``: ``x`` of shape ``(B, ...)``, ``t`` of shape ``(B,)``; returns a tensor like ``x``."""


def time_batch(t: float, batch: int, like: Tensor) -> Tensor:
    """Time ``t`` (a host number) as a ``(batch,)`` tensor with the dtype and device of ``like``, carrying ``t``: an
    SDE checks the range of such a tensor on the host, with no device-to-host sync (samplers build one per step)."""
    value = float(t)
    times = torch.full((batch,), value, dtype=like.dtype, device=like.device)
    times._host_time = (value, times._version)  # stale once the tensor is changed in place
    return times


def _host_time(t: Tensor) -> float | None:
    """The host value a :func:`time_batch` tensor carries, unless it was changed in place since."""
    carried = getattr(t, "_host_time", None)
    return carried[0] if carried is not None and carried[1] == t._version else None


def batch_broadcast(v: Tensor, x: Tensor) -> Tensor:
    """Reshape a per-sample tensor ``v`` of shape ``(B,)`` to ``(B, 1, ..., 1)`` so it broadcasts against ``x``."""
    return v.reshape(v.shape[0], *([1] * (x.ndim - 1)))


class SDE(abc.ABC):
    """A forward diffusion ``dx = f(x, t) dt + g(t) dw`` on ``t`` in ``[0, T]``, [SDE] eq. (5).

    Subclasses implement :meth:`sde`, :meth:`marginal_prob`, :meth:`prior_sampling` and
    :meth:`prior_logp`; :meth:`discretize` defaults to Euler--Maruyama and :meth:`reverse`
    gives the reverse-time SDE or the probability-flow ODE. Register a subclass with
    :func:`sde_lib.register_sde` to make it available to :func:`sde_lib.get_sde`.
    """

    #: the samplers' default end time (the reference's ``sampling_eps`` for its SDEs); ``None``: none known
    sampling_eps: float | None = None

    def __init__(self, N: int, T: float = 1.0):
        self.N = check_positive_int("N", N)  # number of discretization steps
        self._T = check_finite_positive("T", T)  # end time of the diffusion

    @property
    def T(self) -> float:
        """End time of the diffusion."""
        return self._T

    # ------------------------------------------------------------------ validation
    def _check_t(self, t: Tensor | float, batch: int | None = None, like: Tensor | None = None) -> Tensor:
        """Validate a time argument and return it as a ``(B,)`` tensor.

        A Python number or 0-dim tensor is expanded to the batch. ``t`` is cast to the dtype and
        device of ``like`` when given (so float64 data is diffused in float64).
        Raises ``ValueError`` if ``t`` does not have shape ``(batch,)`` or leaves ``[0, T]``.
        """
        if not isinstance(t, Tensor):
            t = torch.as_tensor(t, dtype=torch.get_default_dtype())
        host = _host_time(t)  # read before a cast to like's dtype or device makes another tensor
        if like is not None:
            dtype = like.dtype if like.is_floating_point() else t.dtype
            t = t.to(device=like.device, dtype=dtype)
        if t.ndim == 0 and batch is not None:
            t = t.expand(batch)
        if t.ndim != 1 or (batch is not None and t.shape[0] != batch):
            expected = f"({batch},)" if batch is not None else "(B,)"
            raise ValueError(f"t must have shape {expected} (one time per batch element), got {tuple(t.shape)}")
        if not t.is_floating_point():
            raise ValueError(f"t must be a floating-point tensor, got dtype {t.dtype}")
        if host is not None:
            if not 0.0 <= host <= self.T:
                raise ValueError(f"t must lie in [0, T] = [0, {self.T}], got {host}")
        elif not self._already_in_range(t):
            if bool(((t < 0) | (t > self.T) | t.isnan()).any()):
                raise ValueError(
                    f"t must lie in [0, T] = [0, {self.T}], got values in [{t.min().item()}, {t.max().item()}]"
                )
            self.mark_times_checked(t)
        return t

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("_last_in_range", None)  # a weak reference: neither picklable nor worth copying
        return state

    def _already_in_range(self, t: Tensor) -> bool:
        """True when ``t`` is the very tensor whose range was checked last, unmodified since (same object, same
        in-place version counter). One reverse step hands the same ``t`` to the forward SDE, the reverse drift
        and the score function; the range check, a device-to-host sync on a GPU, then runs once, not three times.
        """
        last = getattr(self, "_last_in_range", None)
        return last is not None and last[0]() is t and last[1] == t._version

    def mark_times_checked(self, t: Tensor) -> Tensor:
        """Return ``t``, recorded as range-checked: for times in ``[0, T]`` by construction (drawn from ``[eps, T]``
        by a loss, say), whose check would cost a device-to-host sync per training step on a GPU. A later in-place
        change of ``t`` is checked as usual."""
        self._last_in_range = (weakref.ref(t), t._version)
        return t

    def _check_xt(self, x: Tensor, t: Tensor | float) -> Tensor:
        if not isinstance(x, Tensor) or x.ndim < 1:
            raise ValueError(f"x must be a tensor of shape (B, ...), got {type(x).__name__}")
        return self._check_t(t, batch=x.shape[0], like=x)

    # ------------------------------------------------------------------ interface
    @abc.abstractmethod
    def sde(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Drift ``f(x, t)`` (shaped like ``x``) and diffusion ``g(t)`` (shape ``(B,)``)."""

    @abc.abstractmethod
    def marginal_prob(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean (shaped like ``x``) and std (shape ``(B,)``) of the perturbation kernel ``p_0t(x(t) | x(0) = x)``."""

    @abc.abstractmethod
    def prior_sampling(
        self,
        shape: Sequence[int],
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """Draw a sample of ``shape`` from the prior ``p_T``."""

    @abc.abstractmethod
    def prior_logp(self, z: Tensor) -> Tensor:
        """Log-density of the prior at ``z`` (shape ``(B, ...)``), summed over all but the batch dimension: ``(B,)``."""

    def discretize(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """One forward step ``x_{i+1} = x_i + f_i + G_i z_i`` of the discretized SDE, [SDE] appendix E.

        The default is Euler--Maruyama with step ``dt = T / N``: ``f_i = f(x, t) dt``,
        ``G_i = g(t) sqrt(dt)``. Returns ``(f, G)`` with ``f`` like ``x`` and ``G`` of shape ``(B,)``.
        """
        dt = self.T / self.N
        drift, diffusion = self.sde(x, t)
        return drift * dt, diffusion * math.sqrt(dt)

    def reverse(self, score_fn: ScoreFn, probability_flow: bool = False) -> "ReverseSDE":
        """The reverse-time SDE, [SDE] eq. (6), or with ``probability_flow=True`` the probability-flow ODE, eq. (13)."""
        return ReverseSDE(self, score_fn, probability_flow=probability_flow)


class LinearSDE(SDE):
    """An SDE with drift linear in ``x``: ``dx = f(t) x dt + g(t) dw``, whose kernel is Gaussian.

    The perturbation kernel is ``p_0t(x(t) | x(0)) = N(alpha(t) x(0), sigma(t)^2 I)`` [SDE, eq. (29)] and
    the prior is ``N(0, prior_std^2 I)``. VP, sub-VP and VE are of this family; subclasses implement the
    scalar coefficients :meth:`drift_coeff`, :meth:`diffusion_coeff` and :meth:`marginal_coeffs` and set
    ``prior_std``. Samplers that need the closed form (exponential integrators, exact Gaussian-mixture
    scores) accept any ``LinearSDE``.
    """

    prior_std: float = 1.0

    @abc.abstractmethod
    def drift_coeff(self, t: Tensor) -> Tensor:
        """``f(t)`` with ``drift = f(t) * x``; ``t`` and the result have shape ``(B,)``."""

    @abc.abstractmethod
    def diffusion_coeff(self, t: Tensor) -> Tensor:
        """``g(t)``, shape ``(B,)``."""

    @abc.abstractmethod
    def marginal_coeffs(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``(alpha(t), sigma(t))``, the kernel's mean coefficient and std, each of shape ``(B,)``."""

    def time_of_scaled_sigma(self, scaled_sigma: Tensor) -> Tensor | None:
        """The time ``t`` with ``sigma(t) / alpha(t) = scaled_sigma`` (elementwise), where it has a closed form.

        ``sigma / alpha = exp(-lambda)`` is the noise level of ``x / alpha`` (EDM's noise level). The default
        ``None`` says there is no closed form; samplers then invert the monotone ``lambda(t)`` numerically
        (:func:`samplers.timesteps.inverse_half_log_snr`). An SDE overrides it when the inverse is exact and
        cheap (EDM's ``sigma(t) = t``: the identity), so that grids placed in the noise level hit it exactly.
        """
        return None

    def sde(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        t = self._check_xt(x, t)
        return batch_broadcast(self.drift_coeff(t), x) * x, self.diffusion_coeff(t)

    def marginal_prob(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        t = self._check_xt(x, t)
        alpha, sigma = self.marginal_coeffs(t)
        return batch_broadcast(alpha, x) * x, sigma

    def prior_sampling(
        self,
        shape: Sequence[int],
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        shape = check_shape(shape)
        if device is None and generator is not None:
            device = generator.device
        z = torch.randn(shape, generator=generator, device=device, dtype=dtype)
        return z * self.prior_std

    def prior_logp(self, z: Tensor) -> Tensor:
        if not isinstance(z, Tensor) or z.ndim < 1:
            raise ValueError("z must be a tensor of shape (B, ...)")
        dim = z[0].numel()
        var = self.prior_std**2
        sq = z.reshape(z.shape[0], -1).square().sum(dim=1)
        return -0.5 * dim * math.log(2 * math.pi * var) - sq / (2 * var)


class ReverseSDE:
    """Reverse-time SDE [SDE] eq. (6), or probability-flow ODE eq. (13), of a forward :class:`SDE`.

    Exposes the same ``N``, ``T``, ``sde`` and ``discretize`` interface as the forward SDE, with time
    still running from ``T`` (data end is ``t = 0``); the drift is for a step of ``-dt``.
    """

    def __init__(self, forward: SDE, score_fn: ScoreFn, probability_flow: bool = False):
        if not callable(score_fn):
            raise ValueError(f"score_fn must be callable as score_fn(x, t), got {type(score_fn).__name__}")
        self.forward = forward  # the forward SDE being reversed
        self.score_fn = score_fn  # score_fn(x, t) approximating grad_x log p_t(x)
        self.probability_flow = bool(probability_flow)  # True: the ODE of eq. (13), zero diffusion
        self.N = forward.N
        self.T = forward.T

    def _score(self, x: Tensor, t: Tensor) -> Tensor:
        score = self.score_fn(x, t)
        if score.shape != x.shape:
            raise ValueError(f"score_fn returned shape {tuple(score.shape)}, expected the shape of x {tuple(x.shape)}")
        return score

    def _combine(self, x: Tensor, t: Tensor, f: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
        """Reverse drift ``f - c g^2 score`` with ``c = 1/2`` for the ODE, ``1`` for the SDE."""
        t = self.forward._check_xt(x, t)
        weight = 0.5 if self.probability_flow else 1.0
        drift = f - batch_broadcast(g.square() * weight, x) * self._score(x, t)
        diffusion = torch.zeros_like(g) if self.probability_flow else g
        return drift, diffusion

    def sde(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Drift and diffusion of the reverse-time SDE, eq. (6) (eq. (13) with zero diffusion for the ODE)."""
        f, g = self.forward.sde(x, t)
        return self._combine(x, t, f, g)

    def discretize(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Reverse of the forward discretization, [SDE] eq. (46): ``f_rev = f - G^2 score`` (``G^2/2`` for the ODE)."""
        f, G = self.forward.discretize(x, t)
        return self._combine(x, t, f, G)
