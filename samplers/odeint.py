"""Adaptive ODE solvers for batches of independent initial-value problems ``dy/dt = func(t, y)``.

Used by the probability-flow ODE sampler ([SDE] eq. (13)) and by likelihood computation, which integrates
an augmented state (``x`` together with a per-sample log-density accumulator). Two back ends:

* **torch** (``"dopri5"``, ``"bosh3"``): embedded explicit Runge--Kutta pairs, Dormand & Prince (1980) 5(4)
  and Bogacki & Shampine (1989) 3(2), both FSAL, run entirely on the tensors' device. Every batch element
  is its own initial-value problem with its **own time, step size and error norm**: a sample's result does
  not depend on the rest of the batch, an easy sample is not stepped at the stiffest sample's rate, and
  finished samples are frozen and dropped from later evaluations (``func`` sees only the active ones).
* **scipy** (``"RK45"``, ``"RK23"``, ``"DOP853"``, ``"Radau"``, ``"BDF"``, ``"LSODA"``):
  :func:`scipy.integrate.solve_ivp` on the flattened batch, one global step size and error norm for the
  whole batch, as the 2021 reference does (a numpy round trip per evaluation, for parity).

State: ``y0`` is a tensor ``(B, ...)`` or a tuple of tensors each with the same leading batch dimension
``B`` (e.g. ``(x, logp)`` with ``x`` ``(B, C, H, W)`` and ``logp`` ``(B,)``); ``func(t, y, *args)`` gets ``t``
of shape ``(b,)`` and ``y`` of the same structure (``b <= B`` active samples on the torch path), and returns
derivatives of the same structure. ``args`` are per-sample constant tensors ``(B, ...)`` (e.g. Hutchinson
probes) handed to ``func`` restricted to the same samples as ``y``. The error norm of a sample is the RMS
over all entries of all its state tensors.

References: E. Hairer, S. P. Norsett, G. Wanner, "Solving Ordinary Differential Equations I" (2nd ed.,
1993), [HNW] sections II.4 (error control, eq. (4.10)-(4.13); starting step size) and II.5 (Dormand--Prince
tableau, Table 5.2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence, Union

import numpy as np
import scipy.integrate
import scipy.sparse
import torch
from torch import Tensor

from .common import TimeProgress, check_choice, check_positive, check_positive_int

State = Union[Tensor, tuple[Tensor, ...]]
ODEFunc = Callable[..., State]
"""``func(t, y, *args)``: ``t`` ``(b,)``, ``y`` a state of ``b`` samples, ``args`` per-sample tensors; returns ``dy/dt`` like ``y``."""

TORCH_METHODS = ("dopri5", "bosh3")
SCIPY_METHODS = ("RK45", "RK23", "DOP853", "Radau", "BDF", "LSODA")
ODE_METHODS = TORCH_METHODS + SCIPY_METHODS

SAFETY = 0.9  # step-size safety factor [HNW eq. (4.13)]
MIN_FACTOR = 0.2  # smallest step-size change per step
MAX_FACTOR = 10.0  # largest step-size change per step
_JAC_SPARSITY_MAX_NONZEROS = 2**24  # block-diagonal Jacobian sparsity handed to scipy only below this size


# ---------------------------------------------------------------------------------------------- tableaus
@dataclass(frozen=True)
class ButcherTableau:
    """An explicit embedded Runge--Kutta pair with the first-same-as-last (FSAL) property.

    Stage ``i`` is ``k_i = f(t + c_i h, y + h sum_j a_ij k_j)``; the last stage is evaluated at the
    propagated solution ``y_new = y + h sum_j b_j k_j`` (its row of ``a`` equals ``b``), so it is the
    first stage of the next step. ``error`` holds ``b - b_hat``, the weights of the local error estimate.
    """

    order: int  # order of the propagated solution
    error_order: int  # order of the embedded solution, which sets the step-size exponent 1 / (error_order + 1)
    c: tuple[float, ...]  # stage times, c_1 = 0 and c_last = 1
    a: tuple[tuple[float, ...], ...]  # rows a_i (i >= 2) of the Runge-Kutta matrix; the last row is b
    error: tuple[float, ...]  # b - b_hat, one weight per stage


DOPRI5 = ButcherTableau(
    order=5,
    error_order=4,
    c=(0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0),
    a=(
        (1 / 5,),
        (3 / 40, 9 / 40),
        (44 / 45, -56 / 15, 32 / 9),
        (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
        (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
        (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
    ),
    error=(71 / 57600, 0.0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40),
)
"""Dormand & Prince (1980) 5(4), [HNW] Table II.5.2 (``RK45`` in scipy, ``dopri5`` in torchdiffeq)."""

BOSH3 = ButcherTableau(
    order=3,
    error_order=2,
    c=(0.0, 1 / 2, 3 / 4, 1.0),
    a=((1 / 2,), (0.0, 3 / 4), (2 / 9, 1 / 3, 4 / 9)),
    error=(2 / 9 - 7 / 24, 1 / 3 - 1 / 4, 4 / 9 - 1 / 3, -1 / 8),
)
"""Bogacki & Shampine (1989) 3(2) (``RK23`` in scipy, ``bosh3`` in torchdiffeq)."""

TABLEAUS = {"dopri5": DOPRI5, "bosh3": BOSH3}


# ---------------------------------------------------------------------------------------------- result
@dataclass
class ODESolution:
    """Result of :func:`odeint`: the state at ``t1``, the number of batched ``func`` calls and step counts."""

    y: State  # solution at t1, same structure, dtype and device as y0
    nfe: int  # number of (batched) func evaluations made
    steps: Tensor  # (B,) accepted steps per sample (the same for every sample on the scipy path)
    rejected: Tensor | None  # (B,) rejected steps per sample on the torch path; None on the scipy path


# ---------------------------------------------------------------------------------------------- state helpers
def _as_tuple(y: State, name: str = "y0") -> tuple[tuple[Tensor, ...], bool]:
    """``(tuple of tensors, was_a_single_tensor)`` after checking a common batch size, dtype and device."""
    single = isinstance(y, Tensor)
    parts = (y,) if single else tuple(y) if isinstance(y, (tuple, list)) else None
    if not parts or not all(isinstance(p, Tensor) for p in parts):
        raise ValueError(f"{name} must be a tensor (B, ...) or a non-empty tuple of such tensors, got {type(y).__name__}")
    first = parts[0]
    for p in parts:
        if p.ndim < 1 or p.shape[0] != first.shape[0] or p.shape[0] < 1:
            raise ValueError(f"every tensor of {name} must have the same leading batch size B >= 1, got {[tuple(q.shape) for q in parts]}")
        if not p.is_floating_point() or p.dtype != first.dtype or p.device != first.device:
            raise ValueError(f"every tensor of {name} must be floating point with one dtype and device, got {[(q.dtype, str(q.device)) for q in parts]}")
    return parts, single


def _restore(parts: tuple[Tensor, ...], single: bool) -> State:
    return parts[0] if single else parts


def _call(func: ODEFunc, t: Tensor, y: tuple[Tensor, ...], single: bool, args: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """``func`` on a tuple state, its output checked to have the state's structure and shapes."""
    out = func(t, _restore(y, single), *args)
    out = (out,) if isinstance(out, Tensor) else tuple(out)
    if len(out) != len(y) or any(not isinstance(o, Tensor) or o.shape != p.shape for o, p in zip(out, y)):
        got = [tuple(o.shape) if isinstance(o, Tensor) else type(o).__name__ for o in out]
        raise ValueError(f"func must return derivatives shaped like the state {[tuple(p.shape) for p in y]}, got {got}")
    return tuple(o.to(p.dtype) for o, p in zip(out, y))


def _bcast(v: Tensor, x: Tensor) -> Tensor:
    return v.reshape(v.shape[0], *([1] * (x.ndim - 1)))


def _combine(y: tuple[Tensor, ...], h: Tensor, weights: Sequence[float], ks: Sequence[tuple[Tensor, ...]]) -> tuple[Tensor, ...]:
    """``y + h * sum_j w_j k_j`` for each state tensor, with a per-sample step ``h`` of shape ``(b,)``."""
    out = []
    for n, y_n in enumerate(y):
        incr = sum(w * k[n] for w, k in zip(weights, ks) if w != 0.0)
        out.append(y_n + _bcast(h, y_n) * incr if isinstance(incr, Tensor) else y_n)
    return tuple(out)


def _rms_norm(v: tuple[Tensor, ...], scale: tuple[Tensor, ...] | None = None) -> Tensor:
    """Per-sample RMS ``sqrt(mean_i (v_i / scale_i)^2)`` over all entries of all state tensors, shape ``(b,)``."""
    total, count = 0.0, 0
    for n, v_n in enumerate(v):
        r = v_n if scale is None else v_n / scale[n]
        total = total + r.reshape(r.shape[0], -1).square().sum(1)
        count += r[0].numel()
    return torch.sqrt(total / count)


def _take(x: Tensor, idx: Tensor | None) -> Tensor:
    return x if idx is None else x.index_select(0, idx)


def _put(x: Tensor, idx: Tensor | None, v: Tensor) -> Tensor:
    return v if idx is None else x.index_copy(0, idx, v)


def _time_batch(t: float | Tensor, batch: int, like: Tensor, name: str) -> Tensor:
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    if t.ndim == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"{name} must be a number or a tensor of shape ({batch},), got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite")
    return t.clone()


def _between(t: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``t`` clamped to the interval spanned by ``a`` and ``b`` (guards stage times against round-off past the end)."""
    return torch.minimum(torch.maximum(t, torch.minimum(a, b)), torch.maximum(a, b))


def runge_kutta_step(
    tableau: ButcherTableau,
    func: ODEFunc,
    t: Tensor,
    y: State,
    h: Tensor,
    k1: State,
    args: Sequence[Tensor] = (),
) -> tuple[State, State, State]:
    """One step of an embedded FSAL Runge--Kutta pair with per-sample step ``h`` ``(b,)`` (negative: backward).

    ``k1 = func(t, y)`` is given (FSAL: the last stage of the previous step). Returns ``(y_new, error,
    k_last)``: the propagated solution of order ``tableau.order``, the local error estimate
    ``h sum_i (b_i - b_hat_i) k_i`` and ``k_last = func(t + h, y_new)``. Costs ``len(tableau.c) - 1``
    evaluations of ``func``.
    """
    parts, single = _as_tuple(y, "y")
    ks = [_as_tuple(k1, "k1")[0]]
    args = tuple(args)
    t_end = t + h
    for c_i, a_i in zip(tableau.c[1:], tableau.a):
        y_i = _combine(parts, h, a_i, ks)
        ks.append(_call(func, _between(t + c_i * h, t, t_end), y_i, single, args))
    error = _combine(tuple(torch.zeros_like(p) for p in parts), h, tableau.error, ks)
    return _restore(y_i, single), _restore(error, single), _restore(ks[-1], single)


def initial_step_size(
    func: ODEFunc,
    t0: Tensor,
    y0: State,
    f0: State,
    span: Tensor,
    error_order: int,
    rtol: float,
    atol: float,
    args: Sequence[Tensor] = (),
) -> Tensor:
    """Per-sample starting step ``|h|`` ``(b,)`` of [HNW] II.4 ("Starting step size"), one evaluation of ``func``.

    With the RMS norm scaled by ``atol + rtol |y0|``: ``d0 = ||y0||``, ``d1 = ||f0||``, ``h0 = 0.01 d0 / d1``
    (``1e-6`` if either is below ``1e-5``), ``d2 = ||f(t0 + h0, y0 + h0 f0) - f0|| / h0`` and
    ``h1 = (0.01 / max(d1, d2))^(1 / (q + 1))``; the step is ``min(100 h0, h1, |span|)``. ``q`` is the order of
    the error estimate (as in scipy). ``span`` ``(b,)`` is ``t1 - t0`` and gives the direction.
    """
    parts, single = _as_tuple(y0, "y0")
    f0_parts = _as_tuple(f0, "f0")[0]
    scale = tuple(atol + rtol * p.abs() for p in parts)
    d0, d1 = _rms_norm(parts, scale), _rms_norm(f0_parts, scale)
    h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1)
    h0 = torch.minimum(h0, span.abs())
    direction = torch.sign(span)
    y1 = _combine(parts, direction * h0, (1.0,), (f0_parts,))
    f1 = _call(func, _between(t0 + direction * h0, t0, t0 + span), y1, single, tuple(args))
    d2 = _rms_norm(tuple(a - b for a, b in zip(f1, f0_parts)), scale) / h0
    d12 = torch.maximum(d1, d2)
    h1 = torch.where(
        d12 <= 1e-15, torch.clamp(h0 * 1e-3, min=1e-6), (0.01 / d12.clamp(min=1e-15)) ** (1.0 / (error_order + 1))
    )
    return torch.minimum(torch.minimum(100 * h0, h1), span.abs())


def _step_factor(err: Tensor, error_order: int, after_reject: Tensor) -> Tensor:
    """Step-size factor ``SAFETY * err^(-1 / (q + 1))`` clipped to ``[MIN_FACTOR, MAX_FACTOR]`` [HNW eq. (4.13)].

    A zero error gives ``MAX_FACTOR``, a non-finite one ``MIN_FACTOR``; directly after a rejected step the step
    is not allowed to grow ([HNW] II.4, ``facmax = 1``).
    """
    factor = SAFETY * err.clamp(min=torch.finfo(err.dtype).tiny) ** (-1.0 / (error_order + 1))
    factor = torch.where(torch.isfinite(err), factor.clamp(MIN_FACTOR, MAX_FACTOR), torch.full_like(err, MIN_FACTOR))
    return torch.where(after_reject, factor.clamp(max=1.0), factor)


def _adaptive_runge_kutta(
    func: ODEFunc,
    y0: tuple[Tensor, ...],
    single: bool,
    t0: Tensor,
    t1: Tensor,
    tableau: ButcherTableau,
    rtol: float,
    atol: float,
    args: tuple[Tensor, ...],
    max_steps: int,
    progress: TimeProgress,
) -> ODESolution:
    """Integrate every sample from ``t0[i]`` to ``t1[i]`` with its own adaptive step (see the module docstring)."""
    batch = t0.shape[0]
    y, t = list(y0), t0.clone()
    nfe = 0
    steps = torch.zeros(batch, dtype=torch.long, device=t.device)
    rejected = torch.zeros_like(steps)
    after_reject = torch.zeros(batch, dtype=torch.bool, device=t.device)
    tiny = 4 * torch.finfo(t.dtype).eps  # a step below tiny |t| no longer changes t

    active = t != t1
    idx = None if bool(active.all()) else active.nonzero().squeeze(1)
    k1: list[Tensor] = [torch.zeros_like(p) for p in y]
    h = torch.zeros_like(t)
    if idx is None or idx.numel() > 0:
        ya, ta, span = tuple(_take(p, idx) for p in y), _take(t, idx), _take(t1 - t0, idx)
        argsa = tuple(_take(a, idx) for a in args)
        k1a = _call(func, ta, ya, single, argsa)
        ha = initial_step_size(func, ta, _restore(ya, single), _restore(k1a, single), span, tableau.error_order, rtol, atol, argsa)
        nfe += 2
        k1 = [_put(k, idx, v) for k, v in zip(k1, k1a)]
        h = _put(h, idx, ha * torch.sign(span))

    for iteration in range(max_steps + 1):
        num_active, num_underflow, slowest = _host_summary(active, h, t, t0, t1, tiny)
        progress.advance_to(slowest)
        if num_active == 0:
            break
        if iteration == max_steps:
            raise RuntimeError(f"odeint: {num_active} sample(s) did not reach t1 within max_steps={max_steps} steps")
        if num_underflow:
            raise RuntimeError(f"odeint: step size underflow for {num_underflow} sample(s) (stiff or non-finite func?)")
        idx = None if num_active == batch else active.nonzero().squeeze(1)
        ya, k1a = tuple(_take(p, idx) for p in y), tuple(_take(k, idx) for k in k1)
        ta, ha, t1a = _take(t, idx), _take(h, idx), _take(t1, idx)
        remaining = t1a - ta
        last = ha.abs() >= remaining.abs()
        ha = torch.where(last, remaining, ha)

        y_new, err_vec, k_last = runge_kutta_step(tableau, func, ta, _restore(ya, single), ha, _restore(k1a, single), [_take(a, idx) for a in args])
        nfe += len(tableau.c) - 1
        y_new, err_vec, k_last = _as_tuple(y_new)[0], _as_tuple(err_vec)[0], _as_tuple(k_last)[0]
        scale = tuple(atol + rtol * torch.maximum(a.abs(), b.abs()) for a, b in zip(ya, y_new))
        err = _rms_norm(err_vec, scale)
        accept = err <= 1.0  # False for NaN

        y = [_put(p, idx, torch.where(_bcast(accept, n), n, o)) for p, o, n in zip(y, ya, y_new)]
        k1 = [_put(k, idx, torch.where(_bcast(accept, n), n, o)) for k, o, n in zip(k1, k1a, k_last)]
        t = _put(t, idx, torch.where(accept, torch.where(last, t1a, ta + ha), ta))
        h = _put(h, idx, ha * _step_factor(err, tableau.error_order, _take(after_reject, idx)))
        after_reject = _put(after_reject, idx, ~accept)
        active = _put(active, idx, ~(accept & last))
        steps = _put(steps, idx, _take(steps, idx) + accept.long())
        rejected = _put(rejected, idx, _take(rejected, idx) + (~accept).long())

    return ODESolution(y=_restore(tuple(y), single), nfe=nfe, steps=steps, rejected=rejected)


def _host_summary(active: Tensor, h: Tensor, t: Tensor, t0: Tensor, t1: Tensor, tiny: float) -> tuple[int, int, float]:
    """Active count, count of active samples whose step underflowed, and the slowest sample's time: one device sync."""
    underflow = active & (h.abs() <= tiny * t.abs())
    frac = torch.where(active & (t1 != t0), (t - t0) / (t1 - t0), torch.ones_like(t))
    slowest = torch.where(frac == frac.min(), t, torch.full_like(t, float("nan"))).nanmean()
    summary = torch.stack([active.sum().to(t.dtype), underflow.sum().to(t.dtype), slowest]).tolist()
    return int(summary[0]), int(summary[1]), summary[2]


# ---------------------------------------------------------------------------------------------- scipy
def _pack(y: tuple[Tensor, ...]) -> Tensor:
    """State as ``(B, D)``: each sample's entries of all state tensors, contiguous (block-diagonal Jacobian)."""
    return torch.cat([p.reshape(p.shape[0], -1) for p in y], dim=1)


def _unpack(flat: Tensor, like: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    sizes = [p[0].numel() for p in like]
    return tuple(c.reshape(p.shape) for c, p in zip(flat.split(sizes, dim=1), like))


def _scipy_solve(
    func: ODEFunc,
    y0: tuple[Tensor, ...],
    single: bool,
    t0: float,
    t1: float,
    method: str,
    rtol: float,
    atol: float,
    args: tuple[Tensor, ...],
    progress: TimeProgress,
) -> ODESolution:
    """:func:`scipy.integrate.solve_ivp` on the flattened batch (numpy round trip per evaluation).

    The Jacobian of a batch of independent problems is block diagonal with one ``D x D`` block per sample;
    implicit methods are told so (``jac_sparsity`` for Radau/BDF, ``lband = uband = D - 1`` for LSODA), so
    their finite-difference Jacobians cost about ``D`` rather than ``B D`` evaluations. The result is the
    same as without the hint up to finite-difference round-off.
    """
    batch, like = y0[0].shape[0], y0
    dim = _pack(y0).shape[1]
    nfe = 0
    lo, hi = min(t0, t1), max(t0, t1)

    def rhs(t: float, flat: np.ndarray) -> np.ndarray:
        nonlocal nfe
        nfe += 1
        progress.advance_to(float(t))
        y = _unpack(torch.from_numpy(flat).to(device=like[0].device, dtype=like[0].dtype).reshape(batch, dim), like)
        tt = torch.full((batch,), min(max(float(t), lo), hi), dtype=like[0].dtype, device=like[0].device)
        return _pack(_call(func, tt, y, single, args)).reshape(-1).to(torch.float64).cpu().numpy()

    options: dict = {}
    if method in ("Radau", "BDF") and batch > 1 and batch * dim * dim <= _JAC_SPARSITY_MAX_NONZEROS:
        options["jac_sparsity"] = scipy.sparse.kron(scipy.sparse.identity(batch, format="csr"), np.ones((dim, dim)), format="csr")
    elif method == "LSODA" and batch > 1:
        options.update(lband=dim - 1, uband=dim - 1)
    y0_flat = _pack(y0).reshape(-1).to(torch.float64).cpu().numpy()
    sol = scipy.integrate.solve_ivp(rhs, (t0, t1), y0_flat, method=method, rtol=rtol, atol=atol, **options)
    if sol.status != 0:
        raise RuntimeError(f"odeint: scipy {method} failed: {sol.message}")
    y = _unpack(torch.from_numpy(sol.y[:, -1]).to(device=like[0].device, dtype=like[0].dtype).reshape(batch, dim), like)
    steps = torch.full((batch,), len(sol.t) - 1, dtype=torch.long, device=like[0].device)
    return ODESolution(y=_restore(y, single), nfe=nfe, steps=steps, rejected=None)


# ---------------------------------------------------------------------------------------------- entry point
def odeint(
    func: ODEFunc,
    y0: State,
    t0: float | Tensor,
    t1: float | Tensor,
    method: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    args: Sequence[Tensor] = (),
    max_steps: int = 100_000,
    progress: bool = False,
    desc: str = "odeint",
) -> ODESolution:
    """Solve the batch of initial-value problems ``dy/dt = func(t, y, *args)``, ``y(t0) = y0``, up to ``t1``.

    ``y0``: tensor ``(B, ...)`` or tuple of such tensors (see the module docstring). ``t0``, ``t1``: numbers,
    or ``(B,)`` tensors on the torch path (each sample its own interval; ``t1 < t0`` integrates backward).
    ``method``: one of :data:`TORCH_METHODS` (per-sample adaptive steps, on device) or :data:`SCIPY_METHODS`
    (scipy, one global step). Error control: a step is accepted when
    ``RMS_i(err_i / (atol + rtol max(|y_i|, |y_new_i|))) <= 1`` [HNW eq. (4.10)-(4.11)]. ``args``: per-sample
    constant tensors ``(B, ...)``. ``max_steps``: cap on torch-path iterations (accepted plus rejected).
    ``progress``: a tqdm bar over time (of the slowest sample). Gradients flow through the torch path if
    ``func`` allows it; wrap the call in ``torch.no_grad()`` for sampling.
    """
    check_choice("method", method, ODE_METHODS)
    rtol, atol = check_positive("rtol", rtol), check_positive("atol", atol)
    max_steps = check_positive_int("max_steps", max_steps)
    parts, single = _as_tuple(y0)
    batch = parts[0].shape[0]
    args = tuple(args)
    if any(not isinstance(a, Tensor) or a.ndim < 1 or a.shape[0] != batch for a in args):
        raise ValueError(f"args must be tensors with leading batch dimension {batch}")
    t0v, t1v = _time_batch(t0, batch, parts[0], "t0"), _time_batch(t1, batch, parts[0], "t1")
    if method in SCIPY_METHODS and (bool((t0v != t0v[0]).any()) or bool((t1v != t1v[0]).any())):
        raise ValueError(f"method={method!r} (scipy) integrates the whole batch over one interval: t0 and t1 must be numbers")
    bar = TimeProgress(progress, float(t0v[0]), float(t1v[0]), desc)
    try:
        if method in SCIPY_METHODS:
            return _scipy_solve(func, parts, single, float(t0v[0]), float(t1v[0]), method, rtol, atol, args, bar)
        return _adaptive_runge_kutta(func, parts, single, t0v, t1v, TABLEAUS[method], rtol, atol, args, max_steps, bar)
    finally:
        bar.close()
