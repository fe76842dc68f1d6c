"""ODE solvers for batches of independent initial-value problems ``dy/dt = func(t, y)``.

Used by the probability-flow ODE sampler ([SDE] eq. (13)) and by likelihood computation, which integrates
an augmented state (``x`` together with a per-sample log-density accumulator). Two back ends:

* **torch** (``"dopri5"``, ``"bosh3"``): embedded explicit Runge--Kutta pairs, Dormand & Prince (1980) 5(4)
  and Bogacki & Shampine (1989) 3(2), both FSAL, run entirely on the tensors' device. Every batch element
  is its own initial-value problem with its **own time, step size and error norm**: a sample's result does
  not depend on the rest of the batch, an easy sample is not stepped at the stiffest sample's rate, and
  finished samples are frozen and dropped from later evaluations (``func`` sees only the active ones).
* **fixed grid** (``"rk4"``, :func:`odeint_grid`): the classic Runge--Kutta method on a grid of times the caller
  chooses (e.g. uniform in the log-SNR), the same for the whole batch; no error control, no host synchronisation.
* **scipy** (``"RK45"``, ``"RK23"``, ``"DOP853"``, ``"Radau"``, ``"BDF"``, ``"LSODA"``):
  :func:`scipy.integrate.solve_ivp` on the flattened batch, one global step size and error norm for the
  whole batch, as the 2021 reference does (a numpy round trip per evaluation, for parity).

State: ``y0`` is a tensor ``(B, ...)`` or a tuple of tensors each with the same leading batch dimension
``B`` (e.g. ``(x, logp)`` with ``x`` ``(B, C, H, W)`` and ``logp`` ``(B,)``); ``func(t, y, *args)`` gets ``t``
of shape ``(b,)`` and ``y`` of the same structure (``b <= B`` active samples on the torch path), and returns
derivatives of the same structure. ``args`` are per-sample constant tensors ``(B, ...)`` (e.g. Hutchinson
probes) handed to ``func`` restricted to the same samples as ``y``. The error norm of a sample is the RMS
over all entries of all its state tensors. Both back ends work on the state packed as one ``(B, N)`` matrix,
a sample per row, so a Runge--Kutta stage, an error norm or dropping finished samples is a few whole-batch
operations whatever the state's structure; ``func`` always gets contiguous tensors of the state's shapes.

References: E. Hairer, S. P. Norsett, G. Wanner, "Solving Ordinary Differential Equations I" (2nd ed.,
1993), [HNW] sections II.4 (error control, eq. (4.10)-(4.13); starting step size) and II.5 (Dormand--Prince
tableau, Table 5.2).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, Sequence, Union

import numpy as np
import scipy.integrate
import scipy.sparse
import torch
from torch import Tensor

from sde_lib import time_batch

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


@dataclass(frozen=True)
class FixedStepTableau:
    """An explicit Runge--Kutta method without error estimate, for steps on a given grid:
    ``k_i = f(t + c_i h, y + h sum_j a_ij k_j)``, ``y_new = y + h sum_i b_i k_i``."""

    order: int  # order of the solution: the global error is O(h^order)
    c: tuple[float, ...]  # stage times, c_1 = 0
    a: tuple[tuple[float, ...], ...]  # rows a_i (i >= 2) of the Runge-Kutta matrix
    b: tuple[float, ...]  # weights of the solution


RK4 = FixedStepTableau(
    order=4, c=(0.0, 1 / 2, 1 / 2, 1.0), a=((1 / 2,), (0.0, 1 / 2), (0.0, 0.0, 1.0)), b=(1 / 6, 1 / 3, 1 / 3, 1 / 6)
)
"""Kutta (1901), "the" Runge--Kutta method, [HNW] Table II.1.2 (left)."""

GRID_TABLEAUS = {"rk4": RK4}
GRID_METHODS = tuple(GRID_TABLEAUS)


# ---------------------------------------------------------------------------------------------- result
@dataclass
class ODESolution:
    """Result of :func:`odeint`: the state at ``t1``, the number of batched ``func`` calls and step counts."""

    y: State  # solution at t1, same structure, dtype and device as y0
    nfe: int  # number of (batched) func evaluations made
    steps: Tensor  # (B,) accepted steps per sample (the same for every sample on the scipy path)
    rejected: Tensor | None  # (B,) rejected steps per sample on the torch path; None on the scipy path


# ---------------------------------------------------------------------------------------------- state layout
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


@dataclass(frozen=True)
class _Layout:
    """How a state (a tensor or a tuple of tensors, batch first) maps to one ``(b, N)`` matrix, a sample per row.

    The solvers work on that matrix, so a Runge--Kutta stage or an error norm is a few whole-batch operations
    whatever the state's structure; ``func`` still sees (contiguous) tensors of the state's own shapes.
    """

    shapes: tuple[tuple[int, ...], ...]  # per-sample shape of each state tensor
    single: bool  # the state is one tensor rather than a tuple
    dtype: torch.dtype  # dtype of the state

    @classmethod
    def of(cls, y: State, name: str = "y0") -> tuple["_Layout", Tensor]:
        """The layout of a state (checked as in :func:`_as_tuple`) and the state packed as ``(B, N)``."""
        parts, single = _as_tuple(y, name)
        layout = cls(tuple(tuple(p.shape[1:]) for p in parts), single, parts[0].dtype)
        return layout, layout.pack(parts, name)

    def pack(self, parts: State, name: str = "func", batch: int | None = None) -> Tensor:
        """``(b, N)`` from a state of this layout (of ``batch`` samples if given); ``ValueError`` naming ``name`` if the
        structure or shapes differ."""
        parts = (parts,) if isinstance(parts, Tensor) else tuple(parts)
        if batch is None:
            batch = parts[0].shape[0] if parts and isinstance(parts[0], Tensor) and parts[0].ndim else -1
        if len(parts) != len(self.shapes) or any(not isinstance(p, Tensor) or p.shape[1:] != s or p.shape[0] != batch for p, s in zip(parts, self.shapes)):
            got = [tuple(p.shape) if isinstance(p, Tensor) else type(p).__name__ for p in parts]
            what = "func must return derivatives" if name == "func" else f"{name} must be"
            raise ValueError(f"{what} shaped like the state {[(batch, *s) for s in self.shapes]}, got {got}")
        rows = [p if p.ndim == 2 else p.reshape(batch, -1) for p in parts]
        flat = rows[0] if self.single else torch.cat(rows, dim=1)
        return flat if flat.dtype == self.dtype else flat.to(self.dtype)

    def unpack(self, flat: Tensor) -> State:
        """The state (a tensor or a tuple of contiguous tensors) held in the rows of ``flat`` ``(b, N)``."""
        batch = flat.shape[0]
        if self.single:
            return flat.reshape(batch, *self.shapes[0])
        columns = flat.split([math.prod(shape) for shape in self.shapes], dim=1)
        return tuple(c.reshape(batch, *shape).contiguous() for c, shape in zip(columns, self.shapes))


PackedFunc = Callable[[Tensor, Tensor, tuple[Tensor, ...]], Tensor]
"""``f(t, y, args)`` on packed states: ``t`` ``(b,)``, ``y`` ``(b, N)``, returns ``dy/dt`` ``(b, N)``."""


def _packed(func: ODEFunc, layout: _Layout) -> PackedFunc:
    """``func`` on packed states, its output checked to have the state's structure and shapes."""

    def f(t: Tensor, y: Tensor, args: tuple[Tensor, ...]) -> Tensor:
        return layout.pack(func(t, layout.unpack(y), *args), "func", y.shape[0])

    return f


def _take(x: Tensor, idx: Tensor) -> Tensor:
    return x.index_select(0, idx)


def _time_batch(t: float | Tensor, batch: int, like: Tensor, name: str) -> Tensor:
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    if t.ndim == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"{name} must be a number or a tensor of shape ({batch},), got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite")
    return t.clone()


def _rms_norm(v: Tensor, scale: Tensor) -> Tensor:
    """Per-sample RMS ``sqrt(mean_i (v_i / scale_i)^2)`` over the row of a packed state, shape ``(b,)``."""
    return torch.linalg.vector_norm(v / scale, dim=1) / math.sqrt(v.shape[1])


def _weighted_sum(weights: Sequence[float], ks: Sequence[Tensor]) -> Tensor | None:
    """``sum_j w_j k_j`` over the nonzero weights (``None`` if all are zero)."""
    total = None
    for w, k in zip(weights, ks):
        if w != 0.0:
            total = k * w if total is None else total.add_(k, alpha=w)
    return total


# ---------------------------------------------------------------------------------------------- Runge--Kutta
@functools.lru_cache(maxsize=32)
def _stage_fractions(tableau: ButcherTableau, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``c_2, ..., c_s`` as a ``(s - 1, 1)`` tensor on ``device`` (made once, not per step)."""
    return torch.tensor(tableau.c[1:], dtype=dtype, device=device).unsqueeze(1)


def _stages(
    tableau: ButcherTableau, f: PackedFunc, t: Tensor, y: Tensor, h: Tensor, k1: Tensor, t_end: Tensor, args: tuple[Tensor, ...]
) -> tuple[Tensor, Tensor, Tensor]:
    """One embedded FSAL Runge--Kutta step on packed states: ``(y_new, h sum_i (b_i - b_hat_i) k_i, f(t_end, y_new))``.

    ``t_end`` is ``t + h`` (exactly ``t1`` on a sample's last step); stage times are clamped to ``[t, t_end]``
    so round-off never evaluates ``f`` outside a sample's interval.
    """
    h_col = h.unsqueeze(1)
    c = _stage_fractions(tableau, t.dtype, t.device)
    times = torch.clamp(torch.addcmul(t, c, h), torch.minimum(t, t_end), torch.maximum(t, t_end))  # (stages - 1, b)
    ks = [k1]
    y_stage = y
    for t_i, a_i in zip(times, tableau.a):
        y_stage = torch.addcmul(y, h_col, _weighted_sum(a_i, ks))
        ks.append(f(t_i, y_stage, args))
    error = h_col * _weighted_sum(tableau.error, ks)
    return y_stage, error, ks[-1]


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
    layout, y_flat = _Layout.of(y, "y")
    k1_flat = layout.pack(k1, "k1", y_flat.shape[0])
    y_new, error, k_last = _stages(tableau, _packed(func, layout), t, y_flat, h, k1_flat, t + h, tuple(args))
    return layout.unpack(y_new), layout.unpack(error), layout.unpack(k_last)


def _starting_step(
    f: PackedFunc, t0: Tensor, y0: Tensor, f0: Tensor, span: Tensor, error_order: int, rtol: float, atol: float, args: tuple[Tensor, ...]
) -> Tensor:
    """:func:`initial_step_size` on packed states."""
    scale = atol + rtol * y0.abs()
    d0, d1 = _rms_norm(y0, scale), _rms_norm(f0, scale)
    h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1)
    h0 = torch.minimum(h0, span.abs())
    direction = torch.sign(span)
    t_end = t0 + span
    t_probe = torch.clamp(t0 + direction * h0, torch.minimum(t0, t_end), torch.maximum(t0, t_end))
    f1 = f(t_probe, torch.addcmul(y0, (direction * h0).unsqueeze(1), f0), args)
    d2 = _rms_norm(f1 - f0, scale) / h0
    d12 = torch.maximum(d1, d2)
    h1 = torch.where(
        d12 <= 1e-15, torch.clamp(h0 * 1e-3, min=1e-6), (0.01 / d12.clamp(min=1e-15)) ** (1.0 / (error_order + 1))
    )
    return torch.minimum(torch.minimum(100 * h0, h1), span.abs())


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
    layout, y0_flat = _Layout.of(y0)
    f = _packed(func, layout)
    return _starting_step(f, t0, y0_flat, layout.pack(f0, "f0", y0_flat.shape[0]), span, error_order, rtol, atol, tuple(args))


def _step_factor(err: Tensor, error_order: int, after_reject: Tensor) -> Tensor:
    """Step-size factor ``SAFETY * err^(-1 / (q + 1))`` clipped to ``[MIN_FACTOR, MAX_FACTOR]`` [HNW eq. (4.13)].

    A zero error gives ``MAX_FACTOR``, a non-finite one ``MIN_FACTOR``; directly after a rejected step the step
    is not allowed to grow ([HNW] II.4, ``facmax = 1``).
    """
    factor = (SAFETY * err.clamp(min=torch.finfo(err.dtype).tiny) ** (-1.0 / (error_order + 1))).clamp(MIN_FACTOR, MAX_FACTOR)
    factor = factor.nan_to_num(nan=MIN_FACTOR)  # an infinite error already gives MIN_FACTOR through the clamp
    return torch.where(after_reject, factor.clamp(max=1.0), factor)


@dataclass
class _Batch:
    """The samples still being integrated: packed state, FSAL derivative and per-sample solver state, rows aligned."""

    index: Tensor  # (b,) position of each row in the full batch
    y: Tensor  # (b, N) packed state at time t
    k1: Tensor  # (b, N) func(t, y)
    t: Tensor  # (b,) current time
    h: Tensor  # (b,) next signed step
    t0: Tensor  # (b,) start of each sample's interval
    t1: Tensor  # (b,) end of each sample's interval
    after_reject: Tensor  # (b,) the last step was rejected
    steps: Tensor  # (b,) accepted steps
    rejected: Tensor  # (b,) rejected steps
    args: tuple[Tensor, ...]  # per-sample constant tensors

    def select(self, rows: Tensor) -> "_Batch":
        """The batch restricted to ``rows`` (an index tensor)."""
        fields = {k: _take(v, rows) for k, v in vars(self).items() if k != "args"}
        return _Batch(**fields, args=tuple(_take(a, rows) for a in self.args))

    def slowest_time(self) -> float:
        """Time of the sample that has covered the smallest fraction of its interval (for the progress bar)."""
        frac = (self.t - self.t0) / (self.t1 - self.t0)
        return float(self.t[frac.argmin()])


def _adaptive_runge_kutta(
    func: ODEFunc,
    y0: State,
    t0: Tensor,
    t1: Tensor,
    tableau: ButcherTableau,
    rtol: float,
    atol: float,
    args: tuple[Tensor, ...],
    max_steps: int,
    progress: TimeProgress,
    show_progress: bool,
) -> ODESolution:
    """Integrate every sample from ``t0[i]`` to ``t1[i]`` with its own adaptive step (see the module docstring).

    Only the samples still running are stepped: a sample leaves the working batch (one ``index_select`` of the
    solver state) on the step that reaches its ``t1``, and the final states are scattered back at the end. One
    host synchronisation per step (accept/finish/underflow counts).
    """
    layout, y0_flat = _Layout.of(y0)
    f = _packed(func, layout)
    batch = y0_flat.shape[0]
    zeros = torch.zeros(batch, dtype=torch.long, device=y0_flat.device)
    tiny = 4 * torch.finfo(t0.dtype).eps  # a step below tiny |t| no longer changes t
    nfe = 0
    done: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []  # (index, y, steps, rejected) of finished samples

    index = (t0 != t1).nonzero().squeeze(1)
    work = None
    if index.numel() > 0:
        y, ta, t1a, argsa = _take(y0_flat, index), _take(t0, index), _take(t1, index), tuple(_take(a, index) for a in args)
        k1 = f(ta, y, argsa)
        span = t1a - ta
        h = _starting_step(f, ta, y, k1, span, tableau.error_order, rtol, atol, argsa) * torch.sign(span)
        nfe += 2
        none = torch.zeros_like(index)
        work = _Batch(index, y, k1, ta, h, ta, t1a, torch.zeros_like(index, dtype=torch.bool), none, none, argsa)

    for iteration in range(max_steps + 1):
        if work is None:
            break
        if show_progress:
            progress.advance_to(work.slowest_time())
        if iteration == max_steps:
            raise RuntimeError(f"odeint: {work.index.numel()} sample(s) did not reach t1 within max_steps={max_steps} steps")
        remaining = work.t1 - work.t
        last = work.h.abs() >= remaining.abs()
        h = torch.where(last, remaining, work.h)
        t_end = torch.where(last, work.t1, work.t + h)
        y_new, err_vec, k_last = _stages(tableau, f, work.t, work.y, h, work.k1, t_end, work.args)
        nfe += len(tableau.c) - 1
        err = _rms_norm(err_vec, atol + rtol * torch.maximum(work.y.abs(), y_new.abs()))
        accept = err <= 1.0  # False for NaN
        finished = accept & last
        t = torch.where(accept, t_end, work.t)
        h_next = h * _step_factor(err, tableau.error_order, work.after_reject)
        underflow = ~finished & (h_next.abs() <= tiny * t.abs())
        num_rejected, num_finished, num_underflow = torch.stack([(~accept).sum(), finished.sum(), underflow.sum()]).tolist()
        if num_underflow:
            raise RuntimeError(f"odeint: step size underflow for {num_underflow} sample(s) (stiff or non-finite func?)")
        if num_rejected:
            keep = accept.unsqueeze(1)
            y_new, k_last = torch.where(keep, y_new, work.y), torch.where(keep, k_last, work.k1)
        work = _Batch(
            work.index, y_new, k_last, t, h_next, work.t0, work.t1, ~accept,
            work.steps + accept.long(), work.rejected + (~accept).long(), work.args,
        )
        if num_finished:
            rows = finished.nonzero().squeeze(1)
            done.append((_take(work.index, rows), _take(work.y, rows), _take(work.steps, rows), _take(work.rejected, rows)))
            work = work.select((~finished).nonzero().squeeze(1)) if num_finished < work.index.numel() else None

    if show_progress:
        progress.advance_to(float(t1[0]))
    y_out, steps, rejected = y0_flat, zeros, zeros
    if done:
        index, y_done, steps_done, rejected_done = (torch.cat(parts) for parts in zip(*done))
        y_out = y0_flat.index_copy(0, index, y_done)
        steps, rejected = zeros.index_copy(0, index, steps_done), zeros.index_copy(0, index, rejected_done)
    return ODESolution(y=layout.unpack(y_out), nfe=nfe, steps=steps, rejected=rejected)


# ---------------------------------------------------------------------------------------------- scipy
def _scipy_solve(
    func: ODEFunc,
    y0: State,
    t0: float,
    t1: float,
    method: str,
    rtol: float,
    atol: float,
    args: tuple[Tensor, ...],
    progress: TimeProgress,
) -> ODESolution:
    """:func:`scipy.integrate.solve_ivp` on the flattened batch (numpy round trip per evaluation).

    The state is packed as ``(B, D)``, each sample's entries contiguous, so the Jacobian of a batch of independent
    problems is block diagonal with one ``D x D`` block per sample; implicit methods are told so (``jac_sparsity``
    for Radau/BDF, ``lband = uband = D - 1`` for LSODA), so their finite-difference Jacobians cost about ``D``
    rather than ``B D`` evaluations. The result is the same as without the hint up to finite-difference round-off.
    """
    layout, y0_flat = _Layout.of(y0)
    f = _packed(func, layout)
    batch, dim = y0_flat.shape
    device, dtype = y0_flat.device, y0_flat.dtype
    nfe = 0
    lo, hi = min(t0, t1), max(t0, t1)

    def rhs(t: float, flat: np.ndarray) -> np.ndarray:
        nonlocal nfe
        nfe += 1
        progress.advance_to(float(t))
        y = torch.from_numpy(flat).to(device=device, dtype=dtype).reshape(batch, dim)
        tt = torch.full((batch,), min(max(float(t), lo), hi), dtype=dtype, device=device)
        return f(tt, y, args).reshape(-1).to(torch.float64).cpu().numpy()

    options: dict = {}
    if method in ("Radau", "BDF") and batch > 1 and batch * dim * dim <= _JAC_SPARSITY_MAX_NONZEROS:
        options["jac_sparsity"] = scipy.sparse.kron(scipy.sparse.identity(batch, format="csr"), np.ones((dim, dim)), format="csr")
    elif method == "LSODA" and batch > 1:
        options.update(lband=dim - 1, uband=dim - 1)
    sol = scipy.integrate.solve_ivp(rhs, (t0, t1), y0_flat.reshape(-1).to(torch.float64).cpu().numpy(), method=method, rtol=rtol, atol=atol, **options)
    if sol.status != 0:
        raise RuntimeError(f"odeint: scipy {method} failed: {sol.message}")
    y = torch.from_numpy(sol.y[:, -1]).to(device=device, dtype=dtype).reshape(batch, dim)
    steps = torch.full((batch,), len(sol.t) - 1, dtype=torch.long, device=device)
    return ODESolution(y=layout.unpack(y), nfe=nfe, steps=steps, rejected=None)


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
    parts, _ = _as_tuple(y0)
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
            return _scipy_solve(func, y0, float(t0v[0]), float(t1v[0]), method, rtol, atol, args, bar)
        return _adaptive_runge_kutta(func, y0, t0v, t1v, TABLEAUS[method], rtol, atol, args, max_steps, bar, bool(progress))
    finally:
        bar.close()


def _grid_times(times: Sequence[float] | Tensor, like: Tensor) -> tuple[list[float] | None, Tensor | None]:
    """``times`` checked: host floats of one grid for the whole batch, or a ``(steps + 1, B)`` tensor of one grid per
    sample on ``like``'s device and dtype; the other is ``None``."""
    batch = like.shape[0]
    if isinstance(times, Tensor) and times.ndim == 2:
        if times.shape[0] < 2 or times.shape[1] != batch or not times.is_floating_point():
            raise ValueError(f"times must be a tensor (steps + 1, {batch}) with steps >= 1, got {tuple(times.shape)}")
        steps = times[1:] - times[:-1]
        total = times[-1] - times[0]
        same_way = (steps * total.sign() >= 0).all() & (total != 0).all()  # zero-length steps are allowed
        if not bool(torch.isfinite(times).all() & same_way):
            raise ValueError("times must be finite, and each sample's grid monotone with t0 != t1")
        return None, times.to(device=like.device, dtype=like.dtype)
    grid = [float(t) for t in (times.tolist() if isinstance(times, Tensor) else times)]
    steps = [b - a for a, b in zip(grid[:-1], grid[1:])]
    if not steps or not all(math.isfinite(t) for t in grid) or not (all(h > 0 for h in steps) or all(h < 0 for h in steps)):
        raise ValueError(f"times must hold at least two finite numbers in strictly monotone order, got {grid[:4]}...")
    return grid, None


def odeint_grid(
    func: ODEFunc,
    y0: State,
    times: Sequence[float] | Tensor,
    method: str = "rk4",
    args: Sequence[Tensor] = (),
    progress: bool = False,
    desc: str = "odeint",
) -> ODESolution:
    """Solve ``dy/dt = func(t, y, *args)``, ``y(times[0]) = y0``, up to ``times[-1]`` with one step of ``method``
    (:data:`GRID_METHODS`) between consecutive grid times.

    ``times``: one grid for the whole batch (at least two finite numbers, strictly increasing or strictly
    decreasing; the stage times are host values, so an SDE checks their range without a device sync), or a tensor
    ``(steps + 1, B)`` with each sample's own grid in its column (monotone; steps of length zero change nothing).
    The global error is ``O(h^order)`` in the largest step, so solves on a grid and on its refinement estimate
    their own error (Richardson). Costs ``len(tableau.c)`` evaluations per step; ``func`` always gets the whole batch.
    """
    check_choice("method", method, GRID_METHODS)
    tableau = GRID_TABLEAUS[method]
    layout, y = _Layout.of(y0)
    grid, per_sample = _grid_times(times, y)
    f = _packed(func, layout)
    batch = y.shape[0]
    args = tuple(args)
    if any(not isinstance(a, Tensor) or a.ndim < 1 or a.shape[0] != batch for a in args):
        raise ValueError(f"args must be tensors with leading batch dimension {batch}")
    stage_rows = ((),) + tableau.a
    if grid is not None:
        nodes = [(t, t_next, t_next - t) for t, t_next in zip(grid[:-1], grid[1:])]
        start, end = grid[0], grid[-1]
    else:
        nodes = list(zip(per_sample[:-1], per_sample[1:], per_sample[1:] - per_sample[:-1]))
        marks = per_sample[:, 0].tolist() if progress else [0.0] * per_sample.shape[0]  # the first sample's grid
        start, end = marks[0], marks[-1]
    bar = TimeProgress(progress, start, end, desc)
    try:
        for index, (t, t_next, h) in enumerate(nodes):
            step = h if grid is not None else h.unsqueeze(1)  # a number, or (B, 1) against the packed state
            ks: list[Tensor] = []
            for c_i, a_i in zip(tableau.c, stage_rows):
                increment = _weighted_sum(a_i, ks)
                y_stage = y if increment is None else y + step * increment
                t_stage = t_next if c_i == 1.0 else t + c_i * h
                ks.append(f(time_batch(t_stage, batch, y) if grid is not None else t_stage, y_stage, args))
            y = y + step * _weighted_sum(tableau.b, ks)
            bar.advance_to(t_next if grid is not None else marks[index + 1])
    finally:
        bar.close()
    count = torch.full((batch,), len(nodes), dtype=torch.long, device=y.device)
    return ODESolution(y=layout.unpack(y), nfe=len(tableau.c) * len(nodes), steps=count, rejected=None)
