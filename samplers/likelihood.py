"""Exact log-likelihoods and bits/dim from the probability-flow ODE.

The probability-flow ODE ``dx/dt = f~(x, t) = f(x, t) - g(t)^2 score(x, t) / 2`` [SDE, eq. (13)] is a
continuous normalizing flow, so by the instantaneous change of variables [SDE, eq. (39)]

    log p_eps(x(eps)) = log p_T(x(T)) + int_eps^T div_x f~(x(t), t) dt.

:func:`log_likelihood` integrates the augmented state ``(x, int div f~)`` from ``eps`` to ``T`` in one batched
solve. The divergence is exact (the Jacobian trace, one vector-Jacobian product per dimension) or the
Hutchinson--Skilling estimate ``v^T (d f~ / d x) v`` with one probe ``v`` per sample held fixed along the
whole trajectory [SDE, eq. (40)], which keeps the ODE deterministic so adaptive solvers work.

Divergence products. ``v^T J v`` needs one Jacobian-vector product: reverse mode (``"vjp"``: ``(v^T J) v`` by
``torch.autograd.grad``, one forward and one backward pass) or forward mode (``"jvp"``: ``v^T (J v)`` by
``torch.func.jvp``, one forward pass carrying tangents). Both give the same number for the same probe up to
rounding; which is cheaper depends on the network and the backend (``benchmarks/likelihood_digits.py``).

Tolerance from accuracy. The solver's global error is estimated by Richardson's comparison with a tighter solve:
if the error of a solve at tolerance ``tol`` is ``e(tol) ~ c tol`` (tolerance proportionality [HNW] II.4), then
``l(tol) - l(tol / q) = e(tol) (1 - 1 / q)``, so

    e(tol) ~ q / (q - 1) |l(tol) - l(tol / q)|.

:func:`solver_error` evaluates it on a few samples (same probes, so the difference is the solver's alone) and
:func:`choose_tolerance` walks a ladder ``tol_0, tol_0 / q, ...`` until the estimate is within the accuracy asked.
A fixed-grid solver of order ``p`` (``"rk4"``, on a grid uniform in the log-SNR: :func:`likelihood_grid`) takes the
same estimate with ``2N`` steps as the finer solve and ``q = 2^p`` (Richardson extrapolation, [HNW] II.4), and its
ladder doubles the steps.
[HNW] E. Hairer, S. P. Norsett, G. Wanner, "Solving Ordinary Differential Equations I" (2nd ed., 1993).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.overrides import TorchFunctionMode

from data_lib.dequantize import check_n_bins, uniform_dequantize
from models.winograd import winograd_disabled
from sde_lib import SDE, ScoreFn

from .common import CountingScoreFn, check_choice, check_eps, check_linear_sde, check_positive, check_positive_int
from .ode import bound_drift
from .odeint import GRID_METHODS, GRID_TABLEAUS, ODE_METHODS, odeint, odeint_grid
from .timesteps import grid_dtype, half_log_snr, inverse_half_log_snr

DIVERGENCES = ("rademacher", "gaussian", "exact")
#: how the Hutchinson product ``v^T J v`` is formed: reverse mode (``(v^T J) v``) or forward mode (``v^T (J v)``)
DIVERGENCE_PRODUCTS = ("vjp", "jvp")
#: tolerance ratio ``q`` of the tighter solve that estimates the solver's error (module docstring)
ERROR_CHECK_RATIO = 10.0
#: adaptive solvers (tolerances) and fixed-grid ones (a number of steps on :func:`likelihood_grid`)
LIKELIHOOD_METHODS = ODE_METHODS + GRID_METHODS
InverseScaler = Callable[[Tensor], Tensor]


def _grid_steps(method: str, steps: int | None) -> int:
    """The steps a fixed-grid ``method`` is given, checked: required, a positive integer."""
    if steps is None:
        raise ValueError(f"method={method!r} (a fixed grid) needs steps, the number of steps on the grid")
    return check_positive_int("steps", steps)


def hutchinson_probe(x: Tensor, kind: str, generator: torch.Generator | None = None) -> Tensor:
    """One probe per sample for the Hutchinson estimator: Rademacher (+-1) or standard Gaussian entries, shaped like ``x``."""
    if kind == "gaussian":
        return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    bits = torch.randint(0, 2, x.shape, generator=generator, device=x.device)
    return (2 * bits - 1).to(x.dtype)


#: rows of the Jacobian computed per batched backward pass by the exact divergence
EXACT_DIVERGENCE_CHUNK = 64


class _ContiguousGroupNorm(TorchFunctionMode):
    """Hands ``group_norm`` a contiguous input: torch's forward-mode derivative of ``group_norm`` views its input and
    fails on the channels-last activations of the U-Nets (the value is the same in either layout)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.group_norm or func is torch.group_norm:
            args = (args[0].contiguous(), *args[1:])
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def _forward_mode() -> Iterator[None]:
    """What a network needs to run under forward-mode AD: attention by the composite ("math") kernel, since the fused
    ones have no forward-mode derivative; direct convolutions, since the Winograd path writes into ``out=`` tensors,
    which forward AD refuses; contiguous ``group_norm`` inputs (:class:`_ContiguousGroupNorm`). No backward graph is
    built (``no_grad``)."""
    with torch.no_grad(), sdpa_kernel([SDPBackend.MATH]), winograd_disabled(), _ContiguousGroupNorm():
        yield


def _drift_and_divergence(
    drift_fn: Callable[[Tensor, Tensor], Tensor], t: Tensor, x: Tensor, probe: Tensor | None, product: str = "vjp"
) -> tuple[Tensor, Tensor]:
    """``(f~(x, t), div f~(x, t))``: the Hutchinson estimate ``v^T J v`` for a probe ``v`` [SDE, eq. (40)], else the
    exact trace of ``J``.

    ``product`` ``"vjp"`` forms ``(v^T J) v`` in reverse mode, ``"jvp"`` forms ``v^T (J v)`` in forward mode. The exact
    trace takes the Jacobian's rows ``e_i^T J`` by batched vector-Jacobian products (``EXACT_DIVERGENCE_CHUNK`` rows
    per backward pass) and sums their diagonal entries.
    """
    if probe is not None and product == "jvp":
        with _forward_mode():
            drift, jvp = torch.func.jvp(lambda y: drift_fn(t, y), (x.detach(),), (probe,))
        return drift, (jvp * probe).flatten(1).sum(1)
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        drift = drift_fn(t, x)
        if probe is not None:
            (vjp,) = torch.autograd.grad(drift, x, grad_outputs=probe)
            return drift.detach(), (vjp * probe).flatten(1).sum(1)
        dim = x[0].numel()
        div = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for start in range(0, dim, EXACT_DIVERGENCE_CHUNK):
            rows = torch.arange(start, min(start + EXACT_DIVERGENCE_CHUNK, dim), device=x.device)
            basis = torch.zeros(len(rows), *x.shape, dtype=x.dtype, device=x.device)  # (R, B, *E)
            basis.flatten(2)[torch.arange(len(rows)), :, rows] = 1.0
            (jac_rows,) = torch.autograd.grad(drift, x, grad_outputs=basis, is_grads_batched=True, retain_graph=True)
            div = div + jac_rows.flatten(2)[torch.arange(len(rows)), :, rows].sum(0)
    return drift.detach(), div


def log_likelihood(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    divergence: str = "rademacher",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    eps: float = 1e-5,
    method: str = "dopri5",
    generator: torch.Generator | None = None,
    progress: bool = False,
    product: str = "vjp",
    probe: Tensor | None = None,
    steps: int | None = None,
    grid_offset: Tensor | None = None,
) -> tuple[Tensor, Tensor, int]:
    """Log-likelihood of ``x`` (taken as a sample at time ``eps``) under the probability-flow ODE of ``sde`` and ``score_fn``.

    Args:
        sde: the forward SDE.
        score_fn: ``score_fn(x, t)``; must be differentiable in ``x`` (the divergence uses autograd).
        x: data ``(B, ...)`` in the model's space.
        divergence: ``"rademacher"`` or ``"gaussian"`` (Hutchinson--Skilling, one probe per sample fixed along
            the trajectory) or ``"exact"`` (Jacobian trace: one backward pass per dimension, for low-dimensional data).
        rtol, atol: tolerances of an adaptive solver.
        eps: start time in ``(0, T)``; the density computed is ``p_eps``.
        method: a torch-native adaptive solver (``"dopri5"``, ``"bosh3"``: on the data's device, per-sample steps),
            a scipy one (``"RK45"``, ... as in the 2021 reference) or a fixed-grid one (``"rk4"``: ``steps`` steps
            on :func:`likelihood_grid`, a linear SDE only).
        generator: draws the Hutchinson probes.
        product: the Hutchinson product ``v^T J v``: ``"vjp"`` (reverse mode) or ``"jvp"`` (forward mode; the
            network must support forward-mode AD). The same number up to rounding (module docstring).
        probe: the Hutchinson probes ``(B, ...)`` shaped like ``x``, instead of drawing them from ``generator``
            (e.g. to solve the same problems at two tolerances).
        steps: the fixed-grid solver's steps (required for it; not used by the adaptive ones): it takes ``steps + 1``
            steps, the first and last two parts of one (:func:`likelihood_grid`), ``4 (steps + 1)`` evaluations.
        grid_offset: ``(B,)`` in ``[0, 1)``, where each sample's fixed grid starts (:func:`likelihood_grid`), instead of
            drawing it from ``generator`` (:func:`grid_offsets`, after the probes).

    Returns:
        ``(logp, z, nfe)``: ``logp`` ``(B,)`` in nats per sample, ``z = x(T)`` the latent, ``nfe`` the number of
        (batched) score evaluations.
    """
    check_choice("divergence", divergence, DIVERGENCES)
    check_choice("method", method, LIKELIHOOD_METHODS)
    check_choice("product", product, DIVERGENCE_PRODUCTS)
    check_positive("rtol", rtol)
    check_positive("atol", atol)
    eps = check_eps(eps, sde)
    if method in GRID_METHODS:
        steps = _grid_steps(method, steps)
    if not isinstance(x, Tensor) or x.ndim < 2 or not x.is_floating_point():
        raise ValueError("x must be a floating-point tensor of shape (B, ...) with at least one data dimension")
    bad = int((~torch.isfinite(x)).flatten(1).any(1).sum())  # one host sync, at the boundary
    if bad:
        raise ValueError(f"x must be finite; {bad} of its {x.shape[0]} examples have a NaN or infinite value")
    if grid_offset is not None and (not isinstance(grid_offset, Tensor) or grid_offset.shape != x.shape[:1]
                                    or not bool(((grid_offset >= 0) & (grid_offset < 1)).all())):
        raise ValueError(f"grid_offset must be a tensor ({x.shape[0]},) of values in [0, 1)")
    exact = divergence == "exact"
    if probe is not None and (exact or not isinstance(probe, Tensor) or probe.shape != x.shape):
        raise ValueError(f"probe must be a tensor shaped like x {tuple(x.shape)}, and only with a Hutchinson divergence")
    counter = CountingScoreFn(score_fn)
    drift_fn, rows = bound_drift(sde, counter, x)
    if not exact:
        probe = hutchinson_probe(x, divergence, generator) if probe is None else probe.to(device=x.device, dtype=x.dtype)
    grid = None
    if method in GRID_METHODS:
        offset = grid_offsets(x, generator) if grid_offset is None else grid_offset
        grid = likelihood_grid(sde, steps, eps, offset.to(x.device))

    def augmented(t: Tensor, state: tuple[Tensor, Tensor], *args: Tensor) -> tuple[Tensor, Tensor]:
        if grid is not None:
            sde.mark_times_checked(t)  # a grid's times lie in [eps, T] by construction: no device-side check
        drift = lambda s, y: drift_fn(s, y, *args)  # noqa: E731  (the rows, if any, are the last argument)
        return _drift_and_divergence(drift, t, state[0], None if exact else args[0], product)

    state0 = (x.detach(), torch.zeros(x.shape[0], dtype=x.dtype, device=x.device))
    args = (() if exact else (probe,)) + rows
    if grid is not None:
        solution = odeint_grid(augmented, state0, grid, method=method, args=args, progress=progress, desc="log-likelihood")
    else:
        solution = odeint(
            augmented, state0, eps, sde.T, method=method, rtol=rtol, atol=atol, args=args, progress=progress,
            desc="log-likelihood",
        )
    z, delta_logp = solution.y
    return sde.prior_logp(z) + delta_logp, z, counter.nfe


def grid_offsets(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One uniform draw from ``[0, 1)`` per sample of ``x``: where its fixed grid starts (:func:`likelihood_grid`)."""
    device = generator.device if generator is not None else x.device
    return torch.rand(x.shape[0], generator=generator, dtype=grid_dtype(device), device=device).to(x.device)


def likelihood_grid(sde: SDE, steps: int, eps: float, offset: Tensor) -> Tensor:
    """The fixed-grid solvers' times from ``eps`` to ``T``, one grid per sample: ``(steps + 2, B)``.

    The grid is uniform in the half-log-SNR ``lambda(t) = log(alpha_t / sigma_t)``, with step ``(lambda(eps) -
    lambda(T)) / steps``, shifted by ``offset[i]`` (in ``[0, 1)``, a fraction of a step) for sample ``i``: nodes at the
    fractions ``0, (k + offset[i]) / steps`` for ``k = 0, ..., steps - 1``, and ``1`` of the way from ``lambda(eps)``
    to ``lambda(T)``. In ``lambda`` the probability-flow ODE is the same for every linear SDE (DPM-Solver, sec. 3.1),
    so the steps fall where the flow changes. The shift is for networks whose output oscillates in ``t`` faster than
    a step (a sinusoidal time embedding): one grid for every sample would alias those oscillations into an error of
    one sign in every sample, while grids shifted by uniform offsets make the error's mean over the offsets that of
    the exact integral (for a quadrature exactly: randomly shifted composite rules are unbiased).
    """
    sde = check_linear_sde(sde)
    dtype = grid_dtype(offset.device)
    ends = half_log_snr(sde, torch.tensor([eps, sde.T], dtype=dtype, device=offset.device))
    k = torch.arange(steps, dtype=dtype, device=offset.device).unsqueeze(1)
    zero, one = torch.zeros_like(offset, dtype=dtype).unsqueeze(0), torch.ones_like(offset, dtype=dtype).unsqueeze(0)
    fraction = torch.cat([zero, (k + offset.to(dtype)) / steps, one])  # (steps + 2, B)
    times = inverse_half_log_snr(sde, ends[0] + fraction * (ends[1] - ends[0]), eps)
    times[0], times[-1] = eps, sde.T
    return times.clamp(eps, sde.T)


@dataclass
class SolverError:
    """The probability-flow solve's error on a few samples, estimated against a finer solve: tolerances divided by
    ``ratio`` (adaptive solvers) or twice the steps (fixed-grid solvers)."""

    rtol: float  # tolerances of the solve whose error is estimated (not used by a fixed-grid solver)
    atol: float
    error: float  # q / (q - 1) * mean_i |l_i - l_i(finer)|, nats per sample (module docstring)
    bound: float  # ``error`` plus two standard errors of that mean over the samples (``inf`` for one sample)
    samples: int  # samples the estimate is taken over
    nfe: int  # score evaluations spent on it (every solve of those samples)
    steps: int | None = None  # a fixed-grid solver's steps; None for an adaptive one


def _error_ladder(
    sde: SDE, score_fn: ScoreFn, x: Tensor, rtol: float, atol: float, steps: int | None, ratio: float, divergence: str,
    generator: torch.Generator | None, probe: Tensor | None, kwargs: dict, coarse: Tensor | None = None,
) -> Iterator[SolverError]:
    """Estimates at ``(rtol, atol) / ratio^k`` (adaptive ``method``) or at ``steps * 2^k`` (fixed-grid ``method``),
    k = 0, 1, ...; each rung costs one more solve of ``x``. ``coarse``: the values of the first resolution, if the
    caller has them (it then saves that solve)."""
    for name in ("rtol", "atol", "probe", "steps"):
        if name in kwargs:
            raise ValueError(f"{name} is set by the error estimate itself; pass it as its own argument")
    if not isinstance(ratio, (int, float)) or not math.isfinite(ratio) or ratio <= 1:
        raise ValueError(f"ratio must be a finite number > 1, got {ratio!r}")
    if not isinstance(x, Tensor) or x.ndim < 2 or not x.is_floating_point():
        raise ValueError("x must be a floating-point tensor of shape (B, ...) with at least one data dimension")
    if coarse is not None and (not isinstance(coarse, Tensor) or coarse.shape != x.shape[:1]
                               or not bool(torch.isfinite(coarse).all())):
        raise ValueError(f"coarse must be a tensor ({x.shape[0]},) of finite log-likelihoods of x")
    method = kwargs.get("method", "dopri5")
    grid = method in GRID_METHODS
    if grid:
        steps = _grid_steps(method, steps)
        ratio = 2.0 ** GRID_TABLEAUS[method].order  # halving the step divides the error by 2^order
    unmatched = (probe is None and divergence != "exact") or (grid and kwargs.get("grid_offset") is None)
    if coarse is not None and unmatched:
        raise ValueError("coarse needs the probe (and, on a fixed grid, the grid_offset) it was computed with")
    if probe is None and divergence != "exact":
        probe = hutchinson_probe(x, check_choice("divergence", divergence, DIVERGENCES), generator)
    if grid and kwargs.get("grid_offset") is None:
        kwargs = {**kwargs, "grid_offset": grid_offsets(x, generator)}  # the same grids' phases at every rung
    nfe = 0

    def solve(level: int) -> Tensor:
        nonlocal nfe
        resolution = {"steps": steps * 2**level} if grid else {"rtol": rtol / ratio**level, "atol": atol / ratio**level}
        logp, _, n = log_likelihood(sde, score_fn, x, divergence=divergence, probe=probe, **resolution, **kwargs)
        nfe += n
        return logp.detach().to(torch.float64)

    level, coarse = 0, solve(0) if coarse is None else coarse.detach().to(device=x.device, dtype=torch.float64)
    while True:
        fine = solve(level + 1)
        per_sample = ratio / (ratio - 1) * (coarse - fine).abs()
        error = float(per_sample.mean())
        # the samples checked are a few of many: their mean error is itself uncertain
        spread = float(per_sample.std() / math.sqrt(per_sample.numel())) if per_sample.numel() > 1 else math.inf
        if grid:
            yield SolverError(rtol, atol, error, error + 2 * spread, x.shape[0], nfe, steps * 2**level)
        else:
            yield SolverError(rtol / ratio**level, atol / ratio**level, error, error + 2 * spread, x.shape[0], nfe)
        level, coarse = level + 1, fine


def solver_error(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    ratio: float = ERROR_CHECK_RATIO,
    divergence: str = "rademacher",
    generator: torch.Generator | None = None,
    probe: Tensor | None = None,
    steps: int | None = None,
    coarse: Tensor | None = None,
    **kwargs,
) -> SolverError:
    """The error of :func:`log_likelihood` at ``(rtol, atol)`` (or, for a fixed-grid ``method``, at ``steps``) on
    ``x``, estimated from a second solve at ``(rtol, atol) / ratio`` (or ``2 steps``) with the same probes:
    ``e ~ q / (q - 1) mean |l - l(finer)|`` with ``q = ratio`` (or ``2^order``) (module docstring).

    ``kwargs`` are :func:`log_likelihood`'s other options (``method``, ``eps``, ``product``, ``grid_offset``). On the
    torch solvers and the fixed grids every sample has its own steps, so the estimate for a subset of a batch is that
    of the same samples solved in the batch. ``coarse``: ``(B,)`` the log-likelihoods of ``x`` at ``(rtol, atol)`` (or
    ``steps``) with these probes (and grid offsets), if already computed, e.g. by the batch they belong to: the
    estimate then costs only the finer solve (``nfe`` counts only it).
    """
    return next(_error_ladder(sde, score_fn, x, rtol, atol, steps, ratio, divergence, generator, probe, kwargs, coarse))


def choose_tolerance(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    accuracy: float,
    rtol_start: float = 1e-2,
    rtol_min: float = 1e-8,
    ratio: float = ERROR_CHECK_RATIO,
    divergence: str = "rademacher",
    generator: torch.Generator | None = None,
    probe: Tensor | None = None,
    steps_start: int = 8,
    steps_max: int = 4096,
    **kwargs,
) -> SolverError:
    """The loosest ``rtol = atol`` of the ladder ``rtol_start / ratio^k`` (for a fixed-grid ``method``: the fewest
    steps of ``steps_start * 2^k``) whose estimated error on ``x`` (:func:`solver_error`) is at most ``accuracy`` nats
    per sample with two standard errors to spare (its ``bound``: the samples of ``x`` stand for many), with that
    estimate and every evaluation spent.

    ``x``: a few samples like those to be solved (the same preprocessing and probes' law). A rung costs one solve of
    ``x``; the last solve (the finer one) is the check of the one chosen. ``ValueError`` if no tolerance down to
    ``rtol_min`` (no grid up to ``steps_max`` steps) reaches ``accuracy``.
    """
    accuracy = check_positive("accuracy", accuracy)
    rtol_start, rtol_min = check_positive("rtol_start", rtol_start), check_positive("rtol_min", rtol_min)
    steps_start, steps_max = check_positive_int("steps_start", steps_start), check_positive_int("steps_max", steps_max)
    if rtol_min > rtol_start:
        raise ValueError(f"rtol_min must be <= rtol_start, got {rtol_min} > {rtol_start}")
    grid = kwargs.get("method") in GRID_METHODS
    ladder = _error_ladder(
        sde, score_fn, x, rtol_start, rtol_start, steps_start if grid else None, ratio, divergence, generator, probe, kwargs
    )
    for estimate in ladder:
        if estimate.bound <= accuracy:
            return estimate
        if (grid and estimate.steps * 2 > steps_max) or (not grid and estimate.rtol / ratio < rtol_min):
            limit = f"no grid up to steps_max={steps_max}" if grid else f"no rtol down to rtol_min={rtol_min:.3g}"
            at = f"{estimate.steps} steps" if grid else f"rtol {estimate.rtol:.3g}"
            raise ValueError(
                f"accuracy={accuracy:.3g} nats is not reached by {limit} (estimated error {estimate.error:.3g}, "
                f"bound {estimate.bound:.3g}, at {at})"
            )
    raise AssertionError("unreachable")  # the ladder is endless


def _affine_slope(inverse_scaler: InverseScaler | None, like: Tensor) -> float:
    """Slope ``a`` of an affine ``inverse_scaler(y) = a y + b``; ``ValueError`` if it is not affine."""
    if inverse_scaler is None:
        return 1.0
    probe = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64, device=like.device)
    u = inverse_scaler(probe).to(torch.float64)
    slope = float(u[2] - u[0])
    if not math.isfinite(slope) or slope == 0 or abs(float(u[1] - 0.5 * (u[0] + u[2]))) > 1e-6 * max(1.0, abs(slope)):
        raise ValueError("inverse_scaler must be an affine map y -> a y + b with a != 0 (e.g. (y + 1) / 2)")
    return slope


def bits_per_dim(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    n_bins: int = 256,
    inverse_scaler: InverseScaler | None = None,
    **kwargs,
) -> tuple[Tensor, Tensor, int]:
    """Bits per dimension of dequantized data ``x`` (in the model's space), the bound used in [SDE] Table 2.

    For data quantized to ``n_bins`` levels of ``[0, 1]`` and dequantized uniformly, with ``u = inverse_scaler(y)
    = a y + b`` mapping the model's space back to ``[0, 1]``, the discrete log-probability obeys
    ``log P(k) >= E[log p_u(u)] - D log(n_bins)`` with ``log p_u(u) = log p_y(y) - D log|a|``, hence

        bpd = -log p_y(y) / (D ln 2) + log2(n_bins) + log2|a|.

    (For 8-bit data this gives the reference's offsets: 8 for ``[0, 1]`` data, 7 for ``[-1, 1]``.) ``kwargs`` go
    to :func:`log_likelihood`. Returns ``(bpd (B,), z, nfe)``.
    """
    bpd, _, z, nfe = _bits_and_nats_per_sample(sde, score_fn, x, n_bins, inverse_scaler, **kwargs)
    return bpd, z, nfe


def _bits_and_nats_per_sample(
    sde: SDE, score_fn: ScoreFn, x: Tensor, n_bins: int, inverse_scaler: InverseScaler | None, **kwargs
) -> tuple[Tensor, Tensor, Tensor, int]:
    """:func:`bits_per_dim` with the log-likelihoods it comes from: ``(bpd, logp, z, nfe)``."""
    check_n_bins(n_bins)
    if not isinstance(x, Tensor) or x.ndim < 2:
        raise ValueError("x must be a tensor of shape (B, ...) with at least one data dimension")
    slope = _affine_slope(inverse_scaler, x)
    u = inverse_scaler(x) if inverse_scaler is not None else x
    if bool(((u < 0) | (u > 1)).any()):
        raise ValueError(
            f"x must be dequantized data whose inverse_scaler image lies in [0, 1]; got values in "
            f"[{u.min().item():.4g}, {u.max().item():.4g}]"
        )
    logp, z, nfe = log_likelihood(sde, score_fn, x, **kwargs)
    dim = x[0].numel()
    bpd = -logp / (dim * math.log(2.0)) + math.log2(n_bins) + math.log2(abs(slope))
    return bpd, logp, z, nfe


@dataclass
class BitsPerDim:
    """Bits/dim of a batch averaged over several dequantizations and probes."""

    per_sample: Tensor  # (B,) mean over repeats for each sample
    mean: float  # mean over samples and repeats
    stderr: float  # standard error of ``mean`` (over the B * num_repeats values)
    nfe: int  # total score evaluations
    log_likelihood: Tensor  # (num_repeats, B) nats of each dequantized sample in the model's space (log_likelihood)


def dequantized_bits_per_dim(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    n_bins: int = 256,
    scaler: Callable[[Tensor], Tensor] | None = None,
    inverse_scaler: InverseScaler | None = None,
    num_repeats: int = 1,
    generator: torch.Generator | None = None,
    **kwargs,
) -> BitsPerDim:
    """Bits/dim of quantized data ``x`` (levels of ``[0, 1]``), averaged over ``num_repeats`` uniform dequantizations
    and Hutchinson probes, as the reference's ``bpd_num_repeats``. ``scaler`` maps ``[0, 1]`` to the model's space and
    ``inverse_scaler`` back. Returns a :class:`BitsPerDim` with the standard error of the mean.
    """
    check_positive_int("num_repeats", num_repeats)
    values, nats, nfe = [], [], 0
    for _ in range(num_repeats):
        u = uniform_dequantize(x, n_bins, generator)
        y = scaler(u) if scaler is not None else u
        bpd, logp, _, n = _bits_and_nats_per_sample(sde, score_fn, y, n_bins, inverse_scaler, generator=generator,
                                                    **kwargs)
        values.append(bpd)
        nats.append(logp)
        nfe += n
    stacked = torch.stack(values)  # (repeats, B)
    flat = stacked.flatten().to(torch.float64)
    stderr = float(flat.std(unbiased=True) / math.sqrt(flat.numel())) if flat.numel() > 1 else float("nan")
    return BitsPerDim(per_sample=stacked.mean(0), mean=float(flat.mean()), stderr=stderr, nfe=nfe,
                      log_likelihood=torch.stack(nats))
