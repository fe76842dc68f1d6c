"""Reverse-time SDE sampling with torchsde's solvers (Li et al. 2020; Kidger et al. 2021).

The reverse-time SDE [SDE, eq. (6)], ``dx = [f(x, t) - g(t)^2 score(x, t)] dt + g(t) dw_bar`` run from
``t = T`` down to ``t = eps``, is handed to :func:`torchsde.sdeint`, which integrates forward in its time
variable only. With ``s = T - t`` and ``y(s) = x(T - s)`` it reads, for ``s`` from ``0`` to ``T - eps``,

    dy = [g(T - s)^2 score(y, T - s) - f(y, T - s)] ds + g(T - s) dW(s),

a forward SDE in ``s`` with a standard Brownian motion ``W``. The diffusion ``g`` depends on time only, so the
noise is *additive*: the Ito and Stratonovich forms coincide (the correction ``1/2 g dg/dy`` vanishes) and
every torchsde solver for either form integrates the same SDE. Milstein's correction is zero and it reduces
to Euler--Maruyama; torchsde's ``srk`` uses the strong-order-1.5 SRA1 scheme for additive noise (Roessler 2010).

Random numbers: the prior draw and the seed ("entropy") of torchsde's Brownian motion are both taken from
the given ``torch.Generator``, so a seed fixes the samples. The Brownian motion lives on the sampling device.
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterator, Sequence

import torch
import torchsde
from torch import Tensor

from sde_lib import SDE, ReverseSDE, ScoreFn, batch_broadcast, time_batch

from .common import (
    CountingScoreFn,
    TimeProgress,
    check_choice,
    check_denoise,
    check_eps,
    check_positive,
    check_shape,
    initial_state,
    check_sde,
    resolve_device,
    tweedie_denoise,
)

#: torchsde method -> SDE form it integrates. Additive noise makes the Ito and Stratonovich forms equal, so
#: every solver integrates the same reverse-time SDE. In brackets: score evaluations per fixed step (an
#: adaptive attempt costs one full step and two half steps, less what the drift cache saves).
SDE_METHODS: dict[str, str] = {
    "euler": "ito",  # Euler--Maruyama, strong order 1 for additive noise [1]
    "milstein": "ito",  # equals Euler--Maruyama for additive noise (zero g dg/dx) [1]
    "srk": "ito",  # SRA1 stochastic Runge--Kutta (Roessler 2010), strong order 1.5 [2]
    "midpoint": "stratonovich",  # stochastic midpoint [2]
    "heun": "stratonovich",  # stochastic Heun (Burrage et al. 2004) [2]
    "euler_heun": "stratonovich",  # Euler drift, Heun diffusion [1]
    "log_ode": "stratonovich",  # log-ODE midpoint; its Levy-area term is zero for additive noise [2]
}

#: torchsde methods refused, with the reason. Reversible Heun's linear recursion for ``dy = lambda y ds`` has
#: the roots ``-a +- sqrt(1 + a^2)``, ``a = -h lambda``: besides ``~exp(h lambda)`` a parasitic root
#: ``~ -exp(h |lambda|)`` for real ``lambda < 0``. The reverse-time drift is strongly contracting
#: (``lambda = -g^2 / (alpha^2 v + sigma^2)`` for data variance ``v``), so the parasitic mode grows like
#: ``exp(int |lambda| dt)`` (about ``e^10`` for VE and VP) whatever the step size.
UNSTABLE_METHODS: dict[str, str] = {
    "reversible_heun": "its parasitic root -exp(h |lambda|) makes it unstable on the contracting reverse-time "
    "drift (samples are wrong at any practical dt); use 'heun', 'midpoint' or 'srk'",
    "adjoint_reversible_heun": "it is torchsde's backward pass for reversible_heun, not a sampler",
}

#: Levy-area approximation each solver needs from the Brownian motion ("none" for the others).
_LEVY_AREA = {"srk": "space-time", "log_ode": "foster"}

#: Fixed steps are stretched by this factor so that rounding in torchsde's time accumulation cannot add a
#: spurious tiny last step; the last step is clipped to the end time (a relative change of ~1e-9).
_STEP_STRETCH = 1.0 + 1e-9


# ---------------------------------------------------------------------------------------------- torchsde model
class _DriftCache:
    """Memoise the last few drift evaluations, keyed on time and on the identity (and version) of the state.

    torchsde evaluates the drift at ``(s0, y0)`` again where it already has it: the shape check in ``sdeint``
    before the first step, the repeated stage of SRA1, the first half step of adaptive stepping. Each would
    be a wasted score evaluation.
    """

    def __init__(self, fn: Callable[[Tensor, Tensor], Tensor], size: int = 2):
        self.fn = fn  # drift(s, y) to memoise
        self.size = size  # number of recent evaluations kept
        self._entries: list[tuple[float, Tensor, int, Tensor]] = []

    def __call__(self, s: Tensor, y: Tensor) -> Tensor:
        key = float(s)
        for s_key, y_key, version, value in self._entries:
            if s_key == key and y_key is y and version == y._version:
                return value
        value = self.fn(s, y)
        self._entries = [*self._entries, (key, y, y._version, value)][-self.size:]
        return value


class _TorchsdeReverseSDE:
    """The reverse-time SDE in ``s = T - t`` on flattened states ``(B, D)``, as torchsde's ``f`` and ``g_prod``."""

    def __init__(self, reverse: ReverseSDE, event_shape: Sequence[int], method: str, progress: TimeProgress):
        self.sde_type = SDE_METHODS[method]
        self.noise_type = "additive"
        self.reverse = reverse  # reverse-time SDE of the forward SDE, eq. (6)
        self.T = reverse.T
        self.event_shape = tuple(event_shape)  # shape of one sample, restored for score_fn
        self.progress = progress
        self.f = _DriftCache(self._drift)

    def _time(self, s: Tensor, y: Tensor) -> Tensor:
        return time_batch(self.T - float(s), y.shape[0], y)

    def _drift(self, s: Tensor, y: Tensor) -> Tensor:
        """``g^2 score - f`` at ``t = T - s``: minus the reverse drift of eq. (6), since ``ds = -dt``."""
        t = self._time(s, y)
        self.progress.advance_to(self.T - float(s))
        drift, _ = self.reverse.sde(y.reshape(y.shape[0], *self.event_shape), t)
        return -drift.reshape(y.shape)

    def g_prod(self, s: Tensor, y: Tensor, v: Tensor) -> Tensor:
        """The diffusion matrix ``g(T - s) I`` applied to ``v`` (never formed: it would be ``(B, D, D)``)."""
        t = self._time(s, y)
        g = self.reverse.forward.sde(y.reshape(y.shape[0], *self.event_shape), t)[1]
        return batch_broadcast(g, v) * v


@contextlib.contextmanager
def _preserve_global_rng(device: torch.device) -> Iterator[None]:
    """Keep the global RNG untouched: torchsde's ``sdeint`` draws a probe vector from it to check ``g_prod``."""
    on_cpu = device.type == "cpu"
    with torch.random.fork_rng(devices=[] if on_cpu else [device], device_type=None if on_cpu else device.type):
        yield


def _brownian_entropy(generator: torch.Generator | None, device: torch.device) -> int:
    """A seed for torchsde's Brownian motion drawn from ``generator`` (the global RNG when ``None``)."""
    gen_device = generator.device if generator is not None else device
    return int(torch.randint(0, 2**62, (1,), generator=generator, device=gen_device).item())


def fixed_step_grid(span: float, dt: float) -> tuple[int, float]:
    """``(n, h)``: the interval of length ``span`` split into ``n = ceil(span / dt)`` equal steps ``h <= dt``."""
    n = max(1, math.ceil(span / dt - 1e-9))
    return n, span / n


# ---------------------------------------------------------------------------------------------- sampler
def sde_sample(
    sde: SDE,
    score_fn: ScoreFn,
    shape: Sequence[int],
    method: str = "euler",
    dt: float = 1e-3,
    adaptive: bool = False,
    rtol: float = 1e-5,
    atol: float = 1e-4,
    eps: float = 1e-3,
    x_init: Tensor | None = None,
    denoise: bool = True,
    dtype: torch.dtype = torch.float32,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> tuple[Tensor, int]:
    """Sample by integrating the reverse-time SDE [SDE, eq. (6)] from ``T`` to ``eps`` with :func:`torchsde.sdeint`.

    Args:
        sde: the forward SDE.
        score_fn: ``score_fn(x, t)`` approximating ``grad_x log p_t(x)``; ``x`` is ``(B, ...)``, ``t`` is ``(B,)``.
        shape: ``(B, ...)``, the shape of the batch of samples.
        method: a torchsde solver, one of :data:`SDE_METHODS`.
        dt: fixed step (the interval ``[eps, T]`` is split into ``ceil((T - eps) / dt)`` equal steps), or the
            initial step when ``adaptive``.
        adaptive: torchsde's step-doubling error control (one full step against two half steps; mixed
            ``rtol``/``atol`` tolerance, RMS over the whole batch).
        rtol, atol: tolerances of adaptive stepping (unused otherwise).
        eps: the smallest time integrated to, in ``(0, T)``.
        x_init: optional starting point at ``t = T`` of shape ``shape`` (else a prior draw).
        denoise: return Tweedie's estimate ``E[x(0) | x(eps)]`` (:func:`tweedie_denoise`, one more evaluation)
            instead of ``x(eps)``.
        dtype: dtype of the prior draw (``x_init`` keeps its own).
        generator: seeds the prior draw and the Brownian motion.
        device: sampling device (default: that of ``x_init``, else of ``generator``, else CPU).
        progress: show a progress bar over time.

    Returns:
        ``(x, nfe)``: samples of shape ``shape`` and the number of batched score evaluations made (drift
        evaluations torchsde repeats at the same point are served from a cache and not re-evaluated).
    """
    sde = check_sde(sde)
    shape = check_shape(shape)
    if method in UNSTABLE_METHODS:
        raise ValueError(f"method={method!r} is not supported: {UNSTABLE_METHODS[method]}. Known methods: {', '.join(SDE_METHODS)}")
    method = check_choice("method", method, SDE_METHODS)
    dt = check_positive("dt", dt)
    rtol = check_positive("rtol", rtol)
    atol = check_positive("atol", atol)
    eps = check_eps(eps, sde)
    denoise = check_denoise(sde, denoise)
    score = CountingScoreFn(score_fn)
    device = resolve_device(device, generator, x_init)

    x = initial_state(sde, shape, x_init, generator, device, dtype)
    entropy = _brownian_entropy(generator, device)
    span = sde.T - eps
    n, h = fixed_step_grid(span, dt)
    step = dt if adaptive else h * _STEP_STRETCH
    bar = TimeProgress(progress, sde.T, eps, desc=f"reverse SDE ({method})")
    model = _TorchsdeReverseSDE(sde.reverse(score), shape[1:], method, bar)
    y0 = x.reshape(shape[0], -1)
    brownian = torchsde.BrownianInterval(
        t0=0.0,
        t1=span,
        size=y0.shape,
        dtype=y0.dtype,
        device=device,
        entropy=entropy,
        dt=None if adaptive else h,
        levy_area_approximation=_LEVY_AREA.get(method, "none"),
    )
    ts = torch.tensor([0.0, span], dtype=torch.float64)  # CPU float64 times: no device syncs, no float32 drift
    try:
        with _preserve_global_rng(device):
            ys = torchsde.sdeint(model, y0, ts, bm=brownian, method=method, dt=step, adaptive=adaptive, rtol=rtol, atol=atol)
    finally:
        bar.close()
    x = ys[-1].reshape(shape)
    if denoise:
        x = tweedie_denoise(sde, score, x, eps)
    return x, score.nfe
