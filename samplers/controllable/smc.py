"""Linear inverse problems by sequential Monte Carlo: asymptotically exact samples of the conditional law given a
linear measurement, from the joint score.

The replacement method (:func:`samplers.controllable.pc_inpaint`, [SDE] appendix I.2) is not an exact sampler of
``p(x | A x = y)`` even with the exact score (see :mod:`samplers.controllable.known_values`). SMCDiff (Trippe et al.,
2023, "Diffusion probabilistic modeling of protein backbones in 3D for the motif-scaffolding problem", algorithm 2)
makes it exact in the limit of many particles, with the same unconditional score. It is written here once for a
measurement ``y = A x`` with orthonormal rows (:mod:`.operators`: the mask of inpainting, the grey level of
colorization, the block means of super-resolution). Because ``A A^T = I``, the SDE's noise is isotropic and its
drift linear, ``A f(x, t) = f(A x, t)`` and ``A z ~ N(0, I_m)``: the measurement of the forward chain is the same
chain run in the measurement space.

1. Draw one forward trajectory of the measurement, ``y_{N-1} = y`` at ``t = eps`` and, up the time grid
   ``t_0 = T > t_1 > ... > t_{N-1} = eps`` of :func:`samplers.pc_sample`, ``y_i = y_{i+1} + f(y_{i+1}, t_i) +
   G(t_i) A z``: the forward Markov chain of the SDE's own discretization (DDPM for VP, SMLD for VE), of which the
   reverse-diffusion step ([SDE] eq. (46)) is the reverse, in the measurement space.
2. ``K`` particles start from the prior with their measured part set to ``y_0`` (``complete``).
3. At each ``t_i`` the reverse-diffusion kernel of a particle ``x`` is Gaussian and isotropic,
   ``N(m(x), G(t_i)^2 I)`` with ``m(x) = x - f_rev(x, t_i)``, so it splits into independent measured and orthogonal
   parts: its measurement is ``N(A m, G^2 I_m)``. Each particle's weight is multiplied by the density of the next
   measurement ``y_{i+1}`` under it; the particles are resampled (systematically) when their effective sample size
   falls below ``resample_below * K``; then each is drawn from its kernel conditioned on ``A x = y_{i+1}``, i.e.
   ``complete(m + G z, y_{i+1})`` (a fully adapted particle filter with adaptive resampling). The result is drawn
   from the final weights.

When the reverse kernels are the exact reverse of the forward chain, the particles at the end are weighted samples
of ``p(x | A x = y)``, exactly as ``K -> infinity`` (the usual ``O(1/K)`` bias of a particle filter); with a learned
score, as exact as the score and the discretization. The cost is ``K`` times that of one sample.
:func:`smc_inpaint`, :func:`smc_colorize` and :func:`.superresolution.smc_superresolve` are
:func:`smc_inverse_problem` with their operator.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sde_lib import SDE, LinearSDE, ScoreFn, batch_broadcast

from ..common import CountingScoreFn, check_eps, check_linear_sde, progress_bar, resolve_device
from .colorization import grey_level_operator
from .known_values import check_data
from .operators import LinearMeasurement, MaskOperator

SMC_PARTICLES = 16  # default number of particles per inpainted example
RESAMPLE_BELOW = 0.5  # resample an example's particles when their effective sample size falls below this fraction


def _group_offsets(batch: int, num_particles: int, device: torch.device) -> Tensor:
    """``(B, 1)``: the index of the first particle of each example in the flat ``(B * K, ...)`` state."""
    return torch.arange(batch, device=device)[:, None] * num_particles


def _systematic(weights: Tensor, generator: torch.Generator | None) -> Tensor:
    """Systematic resampling (Kitagawa, 1996) of each row of ``weights`` ``(B, K)`` (normalized): ``(B, K)`` indices,
    particle ``j`` drawn ``floor(K w_j)`` or ``ceil(K w_j)`` times, from one uniform per row."""
    batch, k = weights.shape
    u = torch.rand((batch, 1), generator=generator, device=weights.device, dtype=weights.dtype)
    points = (torch.arange(k, device=weights.device, dtype=weights.dtype) + u) / k
    cumulative = weights.cumsum(dim=1)
    cumulative[:, -1] = 1.0  # guard against rounding: every point falls in some particle's interval
    return torch.searchsorted(cumulative, points).clamp_max(k - 1)


def effective_sample_size(log_weights: Tensor) -> Tensor:
    """``(sum w)^2 / sum w^2`` of each row of ``log_weights`` ``(B, K)``: the number of equally weighted particles
    the weighted set is worth (``K`` for equal weights, 1 when one particle carries all the weight)."""
    return 1.0 / torch.softmax(log_weights, dim=1).square().sum(dim=1)


def resample_degenerate(
    log_weights: Tensor, threshold: float, generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    """Adaptive resampling: the examples whose effective sample size is below ``threshold * K`` are resampled
    (systematically; their weights reset to equal), the others keep their particles and weights. Returns the flat
    particle order ``(B * K,)`` and the new log-weights ``(B, K)``. Resampling only when needed limits the loss of
    diversity of resampling at every step (genetic drift), which would otherwise collapse the particles of a long
    chain of nearly uninformative steps onto few ancestors."""
    batch, k = log_weights.shape
    weights = torch.softmax(log_weights, dim=1)
    degenerate = effective_sample_size(log_weights) < threshold * k
    keep = torch.arange(k, device=log_weights.device).expand(batch, k)
    picks = torch.where(degenerate[:, None], _systematic(weights, generator), keep)
    log_weights = torch.where(degenerate[:, None], torch.zeros_like(log_weights), log_weights)
    return (_group_offsets(batch, k, log_weights.device) + picks).reshape(-1), log_weights


def _check_particles(num_particles: int) -> int:
    if isinstance(num_particles, bool) or not isinstance(num_particles, int) or num_particles < 1:
        raise ValueError(f"num_particles must be an integer >= 1, got {num_particles!r}")
    return num_particles


def known_trajectory(
    sde: LinearSDE, operator: LinearMeasurement, measurement: Tensor, timesteps: Tensor, generator: torch.Generator | None
) -> list[Tensor]:
    """One forward trajectory ``[y_0, ..., y_{N-1}]`` of the measurement ``y = A x(0)`` on the reverse-time grid
    ``timesteps`` (``t_0 = T`` first), in the measurement space: ``y_{N-1} = measurement`` and ``y_i = y_{i+1} +
    f(y_{i+1}, t_i) + G(t_i) A z`` (``sde.discretize``; ``A z`` drawn by ``operator.standard_normal``)."""
    path = [measurement]
    for t in timesteps.flip(0)[1:]:  # t_{N-2}, ..., t_0: y_i is made by the step at t_i
        y = path[-1]
        f, g = sde.discretize(y, torch.full((y.shape[0],), float(t), device=y.device, dtype=y.dtype))
        path.append(y + f + batch_broadcast(g, y) * operator.standard_normal(y, generator))
    return path[::-1]


def _check_smc_options(sde: SDE, num_particles: int, resample_below: float, eps: float) -> float:
    check_linear_sde(sde)
    _check_particles(num_particles)
    if isinstance(resample_below, bool) or not isinstance(resample_below, (int, float)) or not 0.0 <= resample_below <= 1.0:
        raise ValueError(f"resample_below must be a fraction in [0, 1] of the particles, got {resample_below!r}")
    return check_eps(eps, sde)


def smc_inverse_problem(
    sde: LinearSDE,
    score_fn: ScoreFn,
    operator: LinearMeasurement,
    measurement: Tensor,
    num_particles: int = SMC_PARTICLES,
    resample_below: float = RESAMPLE_BELOW,
    denoise: bool = True,
    eps: float = 1e-3,
    return_particles: bool = False,
    generator: torch.Generator | None = None,
    progress: bool = False,
    desc: str = "smc",
) -> tuple[Tensor, int]:
    """SMCDiff (module docstring) for the measurement ``A x = measurement`` of ``operator``: samples of the
    conditional law of the data given it, asymptotically exactly in ``num_particles``; on the device and in the
    dtype of ``measurement`` (checked by the caller: :func:`smc_inpaint`, :func:`smc_colorize`,
    :func:`.superresolution.smc_superresolve`).

    Every example gets ``num_particles`` particles, so each score evaluation is on ``B * num_particles`` states
    (``nfe`` counts the batched evaluations: ``N = sde.N``). ``resample_below``: the effective-sample-size fraction
    that triggers resampling (1: every step; 0: never). ``denoise``: the last step returns the kernel's mean (no
    noise) in the unmeasured part. Returns one particle per example ``(B, ...)`` drawn by the final weights, or with
    ``return_particles`` ``(B, num_particles, ...)`` resampled by them (equally weighted); the measured part equals
    ``measurement`` (exactly for a mask, up to the rounding of ``operator.complete`` otherwise).
    """
    eps = _check_smc_options(sde, num_particles, resample_below, eps)
    shape = operator.data_shape(measurement)
    batch, event = shape[0], tuple(shape[1:])
    device, dtype = measurement.device, measurement.dtype
    counted = CountingScoreFn(score_fn)
    reverse = sde.reverse(counted)
    timesteps = torch.linspace(sde.T, eps, sde.N, device=device, dtype=dtype)

    def particles(y: Tensor) -> Tensor:  # (B, ...) -> (B * K, ...), each example repeated K times
        return y.repeat_interleave(num_particles, dim=0)

    path = [particles(y) for y in known_trajectory(sde, operator, measurement, timesteps, generator)]
    op = operator.repeat_interleave(num_particles)
    x = sde.prior_sampling((batch * num_particles, *event), generator=generator, device=device, dtype=dtype)
    x = op.complete(x, path[0])
    log_w = torch.zeros(batch, num_particles, device=device, dtype=torch.float64)
    for i in progress_bar(range(sde.N), progress, desc, sde.N):
        t = torch.full((x.shape[0],), float(timesteps[i]), device=device, dtype=dtype)
        f, g = reverse.discretize(x, t)
        mean, g = x - f, batch_broadcast(g, x)
        noise = torch.randn(x.shape, generator=generator, device=device, dtype=dtype)
        if i + 1 == sde.N:  # the last step, to t = eps: no next measurement to weigh by
            x = op.complete(mean if denoise else mean + g * noise, path[-1])
            break
        # incremental weight: the density N(y_{i+1}; A m, G^2 I_m) of the next measurement under each kernel
        g_measured = g.reshape(g.shape[0], *([1] * (path[i + 1].ndim - 1)))
        log_lik = -0.5 * ((path[i + 1] - op.project(mean)) / g_measured).square()
        log_w = log_w + log_lik.flatten(1).sum(dim=1).reshape(batch, num_particles).double()
        order, log_w = resample_degenerate(log_w, resample_below, generator)
        mean, g = mean[order], g[order]
        x = op.complete(mean + g * noise, path[i + 1])
    weights, offsets = torch.softmax(log_w, dim=1), _group_offsets(batch, num_particles, device)
    if return_particles:  # all K, resampled by the final weights
        return x[(offsets + _systematic(weights, generator)).reshape(-1)].reshape(batch, num_particles, *event), counted.nfe
    pick = torch.multinomial(weights, 1, generator=generator)  # one particle per example, drawn by its weight
    return x[(offsets + pick).reshape(-1)], counted.nfe


def smc_inpaint(
    sde: LinearSDE,
    score_fn: ScoreFn,
    data: Tensor,
    mask: Tensor,
    num_particles: int = SMC_PARTICLES,
    resample_below: float = RESAMPLE_BELOW,
    denoise: bool = True,
    eps: float = 1e-3,
    return_particles: bool = False,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> tuple[Tensor, int]:
    """Inpainting by SMCDiff (module docstring): the values of ``data`` where ``mask`` is 1 are kept, the others drawn
    from the conditional law given them, asymptotically exactly in ``num_particles``.

    ``data`` ``(B, ...)`` and ``mask`` (broadcastable, 1 = known) as :func:`samplers.pc_inpaint`; the other
    arguments and the result as :func:`smc_inverse_problem` with :class:`.operators.MaskOperator`; the known values
    equal ``data`` exactly.
    """
    data = check_data(data)
    _check_smc_options(sde, num_particles, resample_below, eps)
    data = data.to(resolve_device(device, generator, data))
    operator = MaskOperator.from_mask(mask, data)
    return smc_inverse_problem(sde, score_fn, operator, operator.project(data), num_particles, resample_below, denoise,
                               eps, return_particles, generator, progress, "smc inpaint")


def smc_colorize(
    sde: LinearSDE,
    score_fn: ScoreFn,
    data: Tensor,
    num_particles: int = SMC_PARTICLES,
    resample_below: float = RESAMPLE_BELOW,
    denoise: bool = True,
    eps: float = 1e-3,
    return_particles: bool = False,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> tuple[Tensor, int]:
    """Colorization by SMCDiff: :func:`smc_inverse_problem` with the grey channel of the decoupled colour space
    (:func:`.colorization.grey_level_operator`) as the measurement.

    ``data`` ``(B, 3, ...)``: images whose grey level (the mean of the channels) is kept, as in
    :func:`samplers.pc_colorize`; the colours are drawn from their conditional law given it, exactly as
    ``num_particles`` grows. Returns ``(x, nfe)``; the grey level of ``x`` equals that of ``data`` up to float
    rounding of the two channel maps.
    """
    data = check_data(data)
    _check_smc_options(sde, num_particles, resample_below, eps)
    data = data.to(resolve_device(device, generator, data))
    operator = grey_level_operator(data)
    return smc_inverse_problem(sde, score_fn, operator, operator.project(data), num_particles, resample_below, denoise,
                               eps, return_particles, generator, progress, "smc colorize")
