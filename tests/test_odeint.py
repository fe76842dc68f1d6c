"""Tests of samplers.odeint against ODEs with exact solutions.

Every accuracy bound is relative to the requested tolerance: an adaptive solver keeps each step's local error
below ``tol`` and the global error is a problem-dependent multiple of it (measured below; the constants are
stated per test with a margin of 3x or more over the measured value).
"""

from __future__ import annotations

import math

import pytest
import torch

from samplers.odeint import (
    BOSH3, DOPRI5, MAX_FACTOR, MIN_FACTOR, ODE_METHODS, SAFETY, TORCH_METHODS, _step_factor, odeint, odeint_grid, runge_kutta_step,
)

F64 = torch.float64


def _rotation_decay(t, y, k, w):
    """``dy/dt = A(t) y`` with ``A(t) = -k t I + w (1 + t) J`` (``J`` the 90-degree rotation), per-sample ``k``, ``w``."""
    a, om = -k * t, w * (1 + t)
    return torch.stack([a * y[:, 0] - om * y[:, 1], om * y[:, 0] + a * y[:, 1]], 1)


def _rotation_decay_exact(y0, k, w, t):
    """``y(t) = exp(int_0^t a) R(int_0^t omega) y0`` since ``A(s)`` commute for all ``s``."""
    decay, angle = torch.exp(-k * t**2 / 2), w * (t + t**2 / 2)
    c, s = torch.cos(angle), torch.sin(angle)
    return decay[:, None] * torch.stack([c * y0[:, 0] - s * y0[:, 1], s * y0[:, 0] + c * y0[:, 1]], 1)


def _problem(batch=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    y0 = torch.randn(batch, 2, generator=g, dtype=F64)
    k = 2 * torch.rand(batch, generator=g, dtype=F64)
    w = 2 * torch.rand(batch, generator=g, dtype=F64)
    return y0, k, w


def _rel_err(y, exact):
    return ((y - exact).norm(dim=1) / (exact.norm(dim=1) + 1)).max().item()


@pytest.mark.parametrize("method", ODE_METHODS)
def test_time_varying_linear_system_matches_exact_solution(method):
    """All methods on ``dy/dt = A(t) y`` (rotation + decay, a different problem per sample via ``args``).

    Measured at tol 1e-7: global error / tol between 0.01 (Radau) and 25 (BDF); the bound is 100 tol.
    """
    y0, k, w = _problem()
    tol = 1e-7
    sol = odeint(_rotation_decay, y0, 0.0, 2.0, method=method, rtol=tol, atol=tol, args=(k, w))
    assert sol.y.dtype == F64 and sol.y.shape == y0.shape
    assert _rel_err(sol.y, _rotation_decay_exact(y0, k, w, 2.0)) < 100 * tol


@pytest.mark.parametrize("method", TORCH_METHODS + ("RK45",))
def test_error_is_proportional_to_tolerance(method):
    """Exponential growth/decay ``y' = lam y``: tightening rtol = atol by 1000x reduces the error ~1000x.

    Per-step error control with the standard controller keeps the global error roughly proportional to tol
    (the exponent is ``order / (error_order + 1)`` at worst: 0.8 for dopri5, 1 for bosh3), so the error ratio
    over three decades lies in [10^2, 10^4] (measured 770 dopri5, 1050 bosh3, 1400 RK45); each error also
    stays below 150 tol (measured <= 47 tol, bosh3).
    """
    lam = torch.tensor([1.5, -2.0, 0.5], dtype=F64)
    y0 = torch.tensor([[1.0], [2.0], [-3.0]], dtype=F64)
    exact = y0 * torch.exp(2.0 * lam)[:, None]
    errs = []
    for tol in (1e-5, 1e-8):
        sol = odeint(lambda t, y, lam: lam[:, None] * y, y0, 0.0, 2.0, method=method, rtol=tol, atol=tol, args=(lam,))
        errs.append(((sol.y - exact).abs() / exact.abs()).max().item())
        assert errs[-1] < 150 * tol
    assert 1e2 < errs[0] / errs[1] < 1e4


def _fixed_step_error(tableau, steps, T=2.0):
    """Global error of ``steps`` fixed steps on ``y' = y cos t``, ``y(0) = 1`` (exact ``exp(sin t)``)."""
    f = lambda t, y: y * torch.cos(t)[:, None]
    y, t = torch.ones(1, 1, dtype=F64), torch.zeros(1, dtype=F64)
    h = torch.full((1,), T / steps, dtype=F64)
    k = f(t, y)
    for _ in range(steps):
        y, _, k = runge_kutta_step(tableau, f, t, y, h, k)
        t = t + h
    return abs(y.item() - math.exp(math.sin(T)))


def _one_step_errors(tableau, h, t0=0.3):
    """``(|y_new - y(t0 + h)|, |error estimate|)`` of one step from the exact solution of ``y' = y cos t``."""
    f = lambda t, y: y * torch.cos(t)[:, None]
    t = torch.full((1,), t0, dtype=F64)
    y = torch.full((1, 1), math.exp(math.sin(t0)), dtype=F64)
    y_new, err, _ = runge_kutta_step(tableau, f, t, y, torch.full((1,), h, dtype=F64), f(t, y))
    return abs(y_new.item() - math.exp(math.sin(t0 + h))), abs(err.item())


@pytest.mark.parametrize("tableau", [DOPRI5, BOSH3], ids=["dopri5", "bosh3"])
def test_runge_kutta_orders(tableau):
    """Observed orders from halving the step: global ``p`` (dopri5 5, bosh3 3), local ``p + 1``, estimate ``q + 1``.

    Measured (h 0.05 -> 0.025): dopri5 5.09 / 6.02 / 5.02, bosh3 3.04 / 3.95 / 3.07; the bound is 0.25 off.
    """
    global_order = math.log2(_fixed_step_error(tableau, 40) / _fixed_step_error(tableau, 80))
    (local_a, est_a), (local_b, est_b) = _one_step_errors(tableau, 0.05), _one_step_errors(tableau, 0.025)
    assert abs(global_order - tableau.order) < 0.25
    assert abs(math.log2(local_a / local_b) - (tableau.order + 1)) < 0.25
    assert abs(math.log2(est_a / est_b) - (tableau.error_order + 1)) < 0.25


def test_tableaus_are_consistent():
    """Row sums of ``a`` equal ``c``; ``b`` (last row) and ``b_hat`` are quadrature rules (sum 1, error weights sum 0)."""
    for tab in (DOPRI5, BOSH3):
        for c_i, a_i in zip(tab.c[1:], tab.a):
            assert math.isclose(sum(a_i), c_i, abs_tol=1e-14)
        assert math.isclose(sum(tab.a[-1]), 1.0, abs_tol=1e-14) and abs(sum(tab.error)) < 1e-14


def test_step_size_controller():
    """[HNW] eq. (4.13): factor ``SAFETY err^(-1/(q+1))`` clipped to ``[MIN_FACTOR, MAX_FACTOR]``; a zero error gives the
    largest factor, an infinite or NaN error the smallest, and no growth directly after a rejected step."""
    err = torch.tensor([0.0, 1e-8, 0.5, 1.0, 3.0, 1e9, float("inf"), float("nan")], dtype=F64)
    expected = (SAFETY * err[1:6] ** -0.2).clamp(MIN_FACTOR, MAX_FACTOR)
    factor = _step_factor(err, 4, torch.zeros(8, dtype=torch.bool))
    torch.testing.assert_close(factor[1:6], expected, rtol=1e-15, atol=0)
    assert factor[0] == MAX_FACTOR and factor[1] == MAX_FACTOR and factor[5] == factor[6] == factor[7] == MIN_FACTOR
    after_reject = _step_factor(err, 4, torch.ones(8, dtype=torch.bool))
    torch.testing.assert_close(after_reject, factor.clamp(max=1.0), rtol=0, atol=0)


def _prothero_robinson(t, y, lam):
    """``y' = -lam (y - cos t) - sin t``: exact ``y = cos t`` from ``y(0) = 1``; stiff for large ``lam``."""
    return -lam[:, None] * (y - torch.cos(t)[:, None]) - torch.sin(t)[:, None]


def test_stiff_problem_and_per_sample_step_sizes():
    """A stiff (lam = 2000) and a mild (lam = 1) Prothero--Robinson problem in one batch.

    The explicit dopri5 is stability-limited on the stiff one (|h lam| <= ~3.3 on the negative real axis, so
    ~1200 steps; measured 1225) but still accurate (measured error 0.2 tol); with per-sample steps the mild
    problem takes as few steps as it would alone (11). Radau (implicit) needs 18 steps on both.
    """
    lam = torch.tensor([1.0, 2000.0], dtype=F64)
    y0 = torch.ones(2, 1, dtype=F64)
    tol = 1e-6
    exact = torch.full((2, 1), math.cos(2.0), dtype=F64)
    sol = odeint(_prothero_robinson, y0, 0.0, 2.0, rtol=tol, atol=tol, args=(lam,))
    alone = odeint(_prothero_robinson, y0[:1], 0.0, 2.0, rtol=tol, atol=tol, args=(lam[:1],))
    assert (sol.y - exact).abs().max() < 10 * tol
    assert sol.steps[1] > 1000 and sol.steps[0] == alone.steps[0] < 50
    radau = odeint(_prothero_robinson, y0, 0.0, 2.0, method="Radau", rtol=tol, atol=tol, args=(lam,))
    assert (radau.y - exact).abs().max() < 10 * tol and radau.steps[0] < 100


@pytest.mark.parametrize("method", TORCH_METHODS)
def test_sample_result_is_independent_of_batch(method):
    """Each sample has its own step sequence: solving element i alone gives the same result as in the batch."""
    y0, k, w = _problem(batch=6, seed=1)
    batch = odeint(_rotation_decay, y0, 0.0, 2.0, method=method, rtol=1e-6, atol=1e-6, args=(k, w))
    for i in range(6):
        sl = slice(i, i + 1)
        alone = odeint(_rotation_decay, y0[sl], 0.0, 2.0, method=method, rtol=1e-6, atol=1e-6, args=(k[sl], w[sl]))
        torch.testing.assert_close(alone.y, batch.y[sl], rtol=0, atol=1e-14)
        assert alone.steps.item() == batch.steps[i].item() and alone.rejected.item() == batch.rejected[i].item()
    assert batch.steps.unique().numel() > 1  # the problems really do take different step sequences


@pytest.mark.parametrize("method", ["dopri5", "RK45"])
def test_tuple_state_integrates_each_component(method):
    """Tuple state ``(x (B, 3, 2), s (B,))`` with ``x' = lam x`` and ``s' = sum(x)``: ``s(t) = sum(x0) (e^{lam t} - 1) / lam``."""
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(4, 3, 2, generator=g, dtype=F64)
    lam = torch.tensor([0.5, -1.0, 1.0, -0.25], dtype=F64)

    def func(t, state, lam):
        x, _ = state
        return lam[:, None, None] * x, x.sum((1, 2))

    sol = odeint(func, (x0, torch.zeros(4, dtype=F64)), 0.0, 1.5, method=method, rtol=1e-9, atol=1e-9, args=(lam,))
    x, s = sol.y
    assert isinstance(sol.y, tuple) and x.shape == x0.shape and s.shape == (4,)
    torch.testing.assert_close(x, x0 * torch.exp(1.5 * lam)[:, None, None], rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(s, x0.sum((1, 2)) * torch.expm1(1.5 * lam) / lam, rtol=1e-7, atol=1e-7)


def test_per_sample_intervals_backward_and_empty():
    """Per-sample ``t0``, ``t1`` tensors: forward, backward and an empty interval (returned unchanged, no steps)."""
    y0, k, w = _problem(batch=3, seed=3)
    t0 = torch.tensor([0.0, 2.0, 1.0], dtype=F64)
    t1 = torch.tensor([2.0, 0.5, 1.0], dtype=F64)
    sol = odeint(_rotation_decay, y0, t0, t1, rtol=1e-9, atol=1e-9, args=(k, w))
    # backward from t0 to t1: map y0 back to time 0 with the exact flow's inverse, then forward to t1
    y_at_0 = torch.linalg.solve(_flow_matrix(k, w, t0), y0.unsqueeze(-1)).squeeze(-1)
    exact = (_flow_matrix(k, w, t1) @ y_at_0.unsqueeze(-1)).squeeze(-1)
    assert _rel_err(sol.y, exact) < 1e-7
    assert sol.steps[2] == 0 and torch.equal(sol.y[2], y0[2])


def _flow_matrix(k, w, t):
    """``Phi(t)`` with ``y(t) = Phi(t) y(0)`` for :func:`_rotation_decay`, shape ``(B, 2, 2)``."""
    eye = torch.eye(2, dtype=F64).expand(k.shape[0], 2, 2)
    return torch.stack([_rotation_decay_exact(eye[:, :, j], k, w, t) for j in range(2)], dim=2)


def test_func_sees_contiguous_state_and_stays_within_each_interval():
    """On the torch path ``func`` gets contiguous tensors of the state's own shapes (a user's model may ``view`` them),
    only for samples still running, and never a time outside a sample's interval, even on the clipped last step."""
    g = torch.Generator().manual_seed(8)
    x0 = torch.randn(5, 2, 3, generator=g, dtype=F64)
    lam = torch.tensor([0.5, -1.0, 1.0, -0.25, 2.0], dtype=F64)
    t0 = torch.tensor([0.0, 1.0, 0.3, 0.0, 0.7], dtype=F64)
    t1 = torch.tensor([1.0, 0.1, 0.3, 0.9, 1.0], dtype=F64)  # forward, backward, empty, forward, forward
    lo, hi = torch.minimum(t0, t1), torch.maximum(t0, t1)
    seen = []

    def func(t, state, lam, index):
        x, s = state
        assert x.is_contiguous() and s.is_contiguous() and x.shape[1:] == (2, 3) and s.ndim == 1
        assert ((t >= lo[index]) & (t <= hi[index])).all() and (t0[index] != t1[index]).all()
        seen.append(x.shape[0])
        return lam[:, None, None] * x.view(-1, 6).view(-1, 2, 3), x.sum((1, 2))

    index = torch.arange(5)
    sol = odeint(func, (x0, torch.zeros(5, dtype=F64)), t0, t1, rtol=1e-10, atol=1e-10, args=(lam, index))
    x, s = sol.y
    span = (t1 - t0)[:, None, None]
    torch.testing.assert_close(x, x0 * torch.exp(lam[:, None, None] * span), rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(s, x0.sum((1, 2)) * torch.expm1(lam * (t1 - t0)) / lam, rtol=1e-8, atol=1e-8)
    assert max(seen) == 4 and min(seen) < 4  # the empty interval is never evaluated; finished samples are dropped
    assert sol.steps[2] == 0 and torch.equal(x[2], x0[2])


def test_gradients_flow_through_the_torch_path():
    """Backpropagation through the solver: for ``y' = lam y``, ``y(T) = y0 e^{lam T}``, so ``d y(T) / d y0 = e^{lam T}``
    and ``d y(T) / d lam = T y0 e^{lam T}``; both match to the solver's accuracy (1e-6 at tol 1e-9)."""
    lam = torch.tensor([1.5, -2.0, 0.5], dtype=F64, requires_grad=True)
    y0 = torch.tensor([[1.0], [2.0], [-3.0]], dtype=F64, requires_grad=True)
    sol = odeint(lambda t, y, lam: lam[:, None] * y, y0, 0.0, 2.0, rtol=1e-9, atol=1e-9, args=(lam,))
    sol.y.sum().backward()
    growth = torch.exp(2.0 * lam.detach())
    torch.testing.assert_close(y0.grad.squeeze(1), growth, rtol=1e-6, atol=0)
    torch.testing.assert_close(lam.grad, 2.0 * y0.detach().squeeze(1) * growth, rtol=1e-6, atol=0)


def test_scipy_and_torch_paths_agree():
    """dopri5 (torch) and RK45 (scipy) are the same Dormand--Prince pair; at tol 1e-10 both are within 1e-8 of each other."""
    y0, k, w = _problem(batch=5, seed=4)
    a = odeint(_rotation_decay, y0, 0.0, 2.0, method="dopri5", rtol=1e-10, atol=1e-10, args=(k, w)).y
    b = odeint(_rotation_decay, y0, 0.0, 2.0, method="RK45", rtol=1e-10, atol=1e-10, args=(k, w)).y
    torch.testing.assert_close(a, b, rtol=0, atol=1e-8)


@pytest.mark.parametrize("method", ODE_METHODS)
def test_nfe_counts_every_evaluation(method):
    """``nfe`` equals the number of calls of ``func``, including finite-difference Jacobians of implicit methods."""
    calls = []
    y0, k, w = _problem(batch=4, seed=5)

    def func(t, y, k, w):
        calls.append(t.shape[0])
        return _rotation_decay(t, y, k, w)

    sol = odeint(func, y0, 0.0, 1.0, method=method, rtol=1e-6, atol=1e-6, args=(k, w))
    assert sol.nfe == len(calls) > 0
    if method in TORCH_METHODS:  # 2 start-up calls, then (stages - 1) per iteration
        stages = len((DOPRI5 if method == "dopri5" else BOSH3).c)
        iterations = int((sol.steps + sol.rejected).max())
        assert sol.nfe == 2 + (stages - 1) * iterations


@pytest.mark.parametrize("method", ["Radau", "BDF", "LSODA"])
def test_implicit_scipy_jacobian_cost_does_not_grow_with_batch(method):
    """The block-diagonal sparsity hint makes a finite-difference Jacobian cost ~D calls, not B D: NFE for a batch
    of 64 copies of a problem is within 1.5x of the NFE for one copy (it would be ~64x larger without the hint)."""
    lam = torch.tensor([50.0], dtype=F64)
    one = odeint(_prothero_robinson, torch.ones(1, 1, dtype=F64), 0.0, 1.0, method=method, args=(lam,))
    many = odeint(_prothero_robinson, torch.ones(64, 1, dtype=F64), 0.0, 1.0, method=method, args=(lam.expand(64),))
    assert many.nfe <= 1.5 * one.nfe
    torch.testing.assert_close(many.y, one.y.expand(64, 1), rtol=1e-6, atol=1e-6)


def test_float32_state():
    y0, k, w = _problem(batch=4, seed=6)
    sol = odeint(_rotation_decay, y0.float(), 0.0, 2.0, rtol=1e-5, atol=1e-5, args=(k.float(), w.float()))
    assert sol.y.dtype == torch.float32
    assert _rel_err(sol.y.double(), _rotation_decay_exact(y0, k, w, 2.0)) < 1e-3


def test_invalid_arguments_raise():
    y0, k, w = _problem(batch=2)
    f = lambda t, y: -y
    with pytest.raises(ValueError, match="method must be one of.*dopri5.*RK45"):
        odeint(f, y0, 0.0, 1.0, method="rk4")
    for name in ("rtol", "atol"):
        with pytest.raises(ValueError, match=name):
            odeint(f, y0, 0.0, 1.0, **{name: 0.0})
    with pytest.raises(ValueError, match="same leading batch size"):
        odeint(lambda t, y: y, (y0, torch.zeros(3, dtype=F64)), 0.0, 1.0)
    with pytest.raises(ValueError, match="derivatives shaped like the state"):
        odeint(lambda t, y: y[:, :1], y0, 0.0, 1.0)
    with pytest.raises(ValueError, match="t1 must be a number or a tensor of shape"):
        odeint(f, y0, 0.0, torch.ones(3, dtype=F64))
    with pytest.raises(ValueError, match="scipy"):
        odeint(f, y0, 0.0, torch.tensor([1.0, 2.0], dtype=F64), method="RK45")
    with pytest.raises(ValueError, match="args must be tensors"):
        odeint(lambda t, y, a: y, y0, 0.0, 1.0, args=(torch.ones(5),))


def test_failures_are_reported():
    """Exceeding ``max_steps`` and a non-finite derivative (every step rejected until the step underflows) raise."""
    y0, k, w = _problem(batch=2)
    with pytest.raises(RuntimeError, match="max_steps=3"):
        odeint(_rotation_decay, y0, 0.0, 5.0, rtol=1e-10, atol=1e-10, args=(k, w), max_steps=3)
    nan_after_half = lambda t, y: torch.where((t > 0.5)[:, None], torch.full_like(y, float("nan")), -y)
    with pytest.raises(RuntimeError, match="underflow"):
        odeint(nan_after_half, y0, 0.0, 1.0)


# ---------------------------------------------------------------------------------------------- fixed grid
def test_fixed_grid_rk4_converges_at_order_four_forward_and_backward():
    """Classic RK4 on the exactly solvable rotation-decay system: halving the step divides the maximum error by
    2^4 = 16 (within [12, 20] at 16-128 steps on [0, 2], where higher-order terms are small), in both directions."""
    y0, k, w = _problem()
    for t0, t1 in ((0.0, 2.0), (2.0, 0.0)):
        start = _rotation_decay_exact(y0, k, w, torch.full((8,), t0, dtype=F64)) if t0 else y0
        exact = _rotation_decay_exact(y0, k, w, torch.full((8,), t1, dtype=F64)) if t1 else y0
        errors = []
        for steps in (16, 32, 64, 128):
            times = torch.linspace(t0, t1, steps + 1, dtype=F64).tolist()
            solution = odeint_grid(lambda t, y, k, w: _rotation_decay(t, y, k, w), start, times, args=(k, w))
            assert solution.nfe == 4 * steps and solution.rejected is None and bool((solution.steps == steps).all())
            errors.append(float((solution.y - exact).abs().max()))
        assert all(12 <= coarse / fine <= 20 for coarse, fine in zip(errors, errors[1:])), errors


def test_fixed_grid_steps_a_tuple_state_on_an_uneven_grid():
    """``(y, q)`` with ``dq/dt = |y|^2``: both parts follow the exact solution on a grid that is not uniform (largest
    step 0.01, where RK4's global error is about 1e-8; bounds 1e-7)."""
    y0, k, w = _problem(seed=1)
    times = (torch.linspace(0, 1, 201, dtype=F64) ** 2).tolist()

    def func(t, state, k, w):
        y, _ = state
        return _rotation_decay(t, y, k, w), y.square().sum(1)

    y, q = odeint_grid(func, (y0, torch.zeros(8, dtype=F64)), times, args=(k, w)).y
    torch.testing.assert_close(y, _rotation_decay_exact(y0, k, w, torch.ones(8, dtype=F64)), rtol=0, atol=1e-7)
    # |y(t)|^2 = exp(-k t^2) |y0|^2 (rotations keep the norm): q(1) = |y0|^2 sqrt(pi / (4k)) erf(sqrt(k))
    exact_q = y0.square().sum(1) * torch.sqrt(math.pi / (4 * k)) * torch.erf(torch.sqrt(k))
    torch.testing.assert_close(q, exact_q, rtol=1e-7, atol=0)


@pytest.mark.parametrize("times, message", [
    ([0.0], "times must hold at least two"), ([0.0, 0.5, 0.5, 1.0], "strictly monotone"),
    ([0.0, 1.0, 0.5], "strictly monotone"), ([0.0, float("nan")], "finite"),
])
def test_fixed_grid_refuses_bad_grids(times, message):
    with pytest.raises(ValueError, match=message):
        odeint_grid(lambda t, y: -y, torch.ones(2, 1, dtype=F64), times)
    with pytest.raises(ValueError, match="method"):
        odeint_grid(lambda t, y: -y, torch.ones(2, 1, dtype=F64), [0.0, 1.0], method="euler")
