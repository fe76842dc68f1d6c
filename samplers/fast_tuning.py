"""Choosing ``fast_sample``'s options for one model by measuring them against the converged ODE.

Which few-step configuration of :func:`samplers.fast_sample` is the most accurate depends on the data, not only on
what the sampler knows before it starts (the budget, the SDE, the dimension): on a 2-D mixture with a heavy narrow
component data prediction on a quadratic time grid is the more accurate at 5-20 evaluations, and the less accurate
on other data (``benchmarks/fast_solvers.py``; the README has the tables). The model itself
is known before sampling, so :func:`tune_fast_sample` asks it: it draws pilot points ``z`` from the prior, solves the
probability-flow ODE [SDE, eq. (13)] from them to convergence (``x*(z)``), solves it from the same points with every
candidate configuration at the given budget, and returns the configuration of least per-coordinate RMS error
``sqrt(mean_z ||x(z) - x*(z)||^2 / D)``, the benchmark's criterion. The per-point errors are heavy-tailed where a
few points end in another mode of the data (each adds about ``|mu_i - mu_j|^2 / (D P)`` to the mean over ``P``
points), so the pilot must be large enough to see such points (the README has the benchmark's figures for 2000
pilot points). A sequential pilot (``first_points``) starts small and doubles while its best candidate is not the
fixed default and leads it by fewer than ``GROWTH_EVIDENCE`` standard errors of the paired per-point differences
(a group-sequential test of the default as the null hypothesis; with repeated looks the threshold is a rule of
thumb, not a test level), so that a clear choice costs a small pilot and an unclear one a larger. With a small
pilot, ``evidence > 0`` keeps the fixed default unless the best candidate's lead is that many standard errors. It is per-model step-schedule optimisation
(Align Your Steps, Sabour et al. 2024) with an exhaustive search over ``fast_sample``'s discrete options in place of
a gradient search over the grid; the choice is a small JSON record, made once per model and budget and reused.

The reference is DPM-Solver-3 with the UniC corrector (order 4), noise prediction, on the ``logSNR`` grid, solved with
``N`` and ``2N`` steps; ``N`` doubles until the two differ by at most ``reference_tolerance`` times the best
candidate's error, so that the reference's own error (about 1/16 of that difference at order 4) cannot change
the ranking. Cost, per pilot point: ``3N`` evaluations for the reference (more if it doubles) and ``nfe`` for each
distinct candidate solve (candidates that take the same steps, by :func:`samplers.dpm_solver.step_orders`, are solved
once, 150-160 of the 190): with the full grid at 20 evaluations about 1500 + 3100.
"""

from __future__ import annotations

import itertools
import json
import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from base_lib.checks import check_finite_positive, check_positive_int
from sde_lib import LinearSDE, ScoreFn

from .common import CountingScoreFn, check_eps, check_linear_sde, check_shape, initial_state, resolve_device, resolve_dtype
from .dpm_solver import CORRECTORS, MAX_ORDER, PREDICTIONS, step_orders
from .edm import HEUN_ORDERS
from .fast import DEFAULT_CORRECTOR, METHODS, default_order, default_schedule, fast_sample, solver_steps
from .timesteps import SCHEDULES, noise_levels

REFERENCE_OPTIONS = dict(method="dpm_solver", order=3, prediction="noise", corrector="bh1", schedule="logSNR")

#: the default pilot: at least this many points, and at least PILOT_COORDINATES coordinates in all
MIN_PILOT_POINTS = 64
PILOT_COORDINATES = 64 * 64
#: a default pilot grows to at most PILOT_GROWTH times its first points and MOST_PILOT_POINTS points
PILOT_GROWTH = 8
MOST_PILOT_POINTS = 2048
#: a sequential pilot stops growing once a candidate other than the fixed default leads it by this many standard errors
GROWTH_EVIDENCE = 2.0


def default_pilot_points(data_shape: Sequence[int]) -> int:
    """Pilot points for samples of ``data_shape`` when none are asked for: ``max(64, ceil(4096 / D))``.

    The pilot RMS averages over points and coordinates, so a fixed number of coordinates (64 points of the 8x8
    digits) ranks the options about as well in any dimension. In low dimension that takes many points: there the
    error is decided by the few points that end between modes, and 64 points of 2-D data hold one or two of them.
    """
    dim = math.prod(int(n) for n in data_shape)
    return max(MIN_PILOT_POINTS, math.ceil(PILOT_COORDINATES / max(dim, 1)))


def default_most_pilot_points(data_shape: Sequence[int]) -> int:
    """The most points a default (sequential) pilot grows to: :data:`PILOT_GROWTH` times
    :func:`default_pilot_points`, at most :data:`MOST_PILOT_POINTS` (but never fewer than the start).

    Where a few points that end in another mode of the data decide the RMS error, ranking the options takes about
    2000 points in any dimension; a pilot that starts smaller grows only while its choice is not clear, and at most
    to 8 times its first cost.
    """
    first = default_pilot_points(data_shape)
    return max(first, min(MOST_PILOT_POINTS, PILOT_GROWTH * first))


@dataclass(frozen=True)
class FastSolverOptions:
    """One configuration of :func:`samplers.fast_sample` (its solver options; the budget is separate)."""

    method: str = "dpm_solver"  # "dpm_solver" or "heun"
    order: int = 3  # DPM-Solver 1-3, Heun 1-2
    prediction: str | None = "noise"  # DPM-Solver's parameterization; None for Heun
    corrector: str | None = DEFAULT_CORRECTOR  # UniPC corrector "bh1" / "bh2" / "none"; None for Heun
    schedule: str = "vp_time_quadratic"  # samplers.timesteps.SCHEDULES
    lower_order_final: bool = True  # DPM-Solver only

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``fast_sample``."""
        if self.method == "heun":
            return dict(method="heun", order=self.order, schedule=self.schedule)
        return asdict(self)

    def label(self) -> str:
        if self.method == "heun":
            return f"heun{self.order} {self.schedule}"
        lof = " lof" if self.lower_order_final else ""
        return f"dpm{self.order} {self.prediction} {self.corrector} {self.schedule}{lof}"

    @classmethod
    def default(cls, sde: LinearSDE, nfe: int) -> FastSolverOptions:
        """The options ``fast_sample`` uses when given none (:func:`samplers.fast.default_order` etc.)."""
        return cls("dpm_solver", default_order("dpm_solver", nfe), "noise", DEFAULT_CORRECTOR,
                   default_schedule(sde, "dpm_solver", "noise"), True)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FastSolverOptions:
        """Checked: every field must be present and allowed (a JSON record is untrusted input)."""
        names = [f for f in cls.__dataclass_fields__]
        if sorted(values) != sorted(names):
            raise ValueError(f"fast solver options must have exactly the fields {', '.join(names)}; got {sorted(values)}")
        options = cls(**values)
        grid = fast_solver_grid()
        if options not in grid:
            raise ValueError(f"not a fast_sample configuration: {values}")
        return options


def fast_solver_grid() -> list[FastSolverOptions]:
    """Every configuration ``fast_sample`` offers: DPM-Solver of each order, prediction, corrector, schedule and
    ``lower_order_final``, and Heun of order 1 (Euler) and 2 on each schedule."""
    dpm = [
        FastSolverOptions("dpm_solver", order, prediction, corrector, schedule, lower_order_final)
        for order, prediction, corrector, schedule, lower_order_final in itertools.product(
            range(1, MAX_ORDER + 1), sorted(PREDICTIONS, reverse=True), ("none",) + CORRECTORS, SCHEDULES, (True, False)
        )
    ]
    heun = [FastSolverOptions("heun", order, None, None, schedule, False) for order in HEUN_ORDERS for schedule in SCHEDULES]
    assert {o.method for o in dpm + heun} == set(METHODS)
    return dpm + heun


def solve_key(options: FastSolverOptions, sde: LinearSDE, nfe: int, eps: float) -> tuple:
    """Configurations with equal keys make the same solve (``lower_order_final`` acts only through the step orders)."""
    if options.method == "heun":
        return (options,)
    lambdas = [level.lam for level in noise_levels(sde, options.schedule, nfe, eps, torch.device("cpu"))]
    orders = tuple(step_orders(lambdas, options.order, options.lower_order_final))
    return (options.order, options.prediction, options.corrector, options.schedule, orders)


def squared_errors(x: Tensor, reference: Tensor) -> Tensor:
    """Per point ``||x(z) - x*(z)||^2 / D`` in float64; ``inf`` where a coordinate is not finite."""
    flat = (x - reference).double().reshape(x.shape[0], -1)
    return torch.nan_to_num(flat.square().mean(dim=1), nan=math.inf)


def improvement_evidence(candidate: Tensor, baseline: Tensor) -> float:
    """How many standard errors the candidate's mean squared error lies below the baseline's, from the paired
    per-point differences (the same pilot points); ``inf`` if the baseline alone is not finite."""
    if not math.isfinite(float(baseline.sum())):
        return math.inf if math.isfinite(float(candidate.sum())) else 0.0
    difference = baseline - candidate
    standard_error = float(difference.std() / math.sqrt(difference.numel())) if difference.numel() > 1 else 0.0
    mean = float(difference.mean())
    return mean / standard_error if standard_error > 0 else (math.inf if mean > 0 else 0.0)


@dataclass(frozen=True)
class FastSolverChoice:
    """The outcome of :func:`tune_fast_sample`; ``fast_sample(sde, score_fn, shape, **choice.sample_kwargs())``."""

    options: FastSolverOptions  # the configuration of least pilot error
    nfe: int  # the budget it was chosen for
    eps: float  # the end time of the ODE
    rms: float  # its per-coordinate RMS error against the reference on the pilot points
    default_rms: float  # the same for fast_sample's fixed default
    pilot_points: int  # the pilot points the choice was made on (a sequential pilot: those it grew to)
    reference_steps: int  # steps of the finer reference solve
    reference_difference: float  # RMS between the references of reference_steps / 2 and reference_steps steps
    evaluations: int  # batched score evaluations the tuning made
    errors: tuple[tuple[str, float], ...] = field(default=())  # (label, pilot RMS) of every distinct solve, best first
    lead: float = math.nan  # the best solve's lead over the default, in paired standard errors (improvement_evidence)

    def sample_kwargs(self) -> dict[str, Any]:
        return dict(nfe=self.nfe, eps=self.eps, **self.options.kwargs())

    def to_json(self) -> str:
        record = asdict(self)
        record["errors"] = [list(e) for e in self.errors]
        return json.dumps(record, indent=1, allow_nan=True)

    @classmethod
    def from_json(cls, text: str) -> FastSolverChoice:
        """Read a record written by :meth:`to_json`; a malformed one raises ``ValueError`` naming what is wrong."""
        try:
            record = json.loads(text)
            options = FastSolverOptions.from_dict(record.pop("options"))
            errors = tuple((str(label), float(value)) for label, value in record.pop("errors"))
            choice = cls(options=options, errors=errors, **record)
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"not a fast solver choice record: {error}") from None
        check_positive_int("nfe", choice.nfe)
        return choice


def tune_fast_sample(
    sde: LinearSDE,
    score_fn: ScoreFn,
    shape: Sequence[int],
    nfe: int,
    eps: float = 1e-3,
    x_init: Tensor | None = None,
    dtype: torch.dtype | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
    *,
    candidates: Sequence[FastSolverOptions] | None = None,
    reference_steps: int = 512,
    reference_tolerance: float = 0.1,
    max_reference_steps: int = 8192,
    evidence: float = 0.0,
    first_points: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> FastSolverChoice:
    """Choose ``fast_sample``'s options for ``score_fn`` at budget ``nfe`` by their error on pilot points.

    Args:
        sde, score_fn, eps: as for :func:`samplers.fast_sample`.
        shape: ``(P, ...)``: the pilot points' shape (``P`` points of the samples' shape), the most the pilot takes.
        nfe: the budget the options are chosen for.
        x_init: the pilot points ``z`` at ``t = T``; default ``P`` draws from the prior with ``generator``.
        dtype, generator, device: as for ``fast_sample``.
        progress: a tqdm bar of the evaluations made over those planned.
        candidates: configurations to compare; default :func:`fast_solver_grid`. The fixed default is always
            compared too, and wins ties.
        reference_steps: ``N``, the coarser reference's steps (the finer takes ``2N``); doubled as needed.
        reference_tolerance: the largest RMS difference between the two references, relative to the best
            candidate's error.
        max_reference_steps: bound on ``2N``; if the references still differ by more, a warning says so.
        evidence: with all ``P`` points, the fixed default is kept unless the best candidate's mean squared error is
            lower than the default's by at least this many standard errors of their paired per-point difference
            (0: always take the best on the pilot points).
        first_points: a sequential pilot: start with this many of the ``P`` points and double them while the best
            candidate is not the fixed default and leads it by fewer than :data:`GROWTH_EVIDENCE` standard errors
            (default: all ``P`` at once). Points are solved once; the candidates' errors are those on all points so far.
        on_progress: called after each solve with ``(evaluations made, evaluations planned)``, each a call of
            ``score_fn`` on a pilot batch (the plan grows if the reference's steps double or the pilot grows), for
            progress lines.

    Returns:
        a :class:`FastSolverChoice`.
    """
    sde = check_linear_sde(sde)
    shape = check_shape(shape)
    nfe = check_positive_int("nfe", nfe)
    eps = check_eps(eps, sde)
    reference_steps = check_positive_int("reference_steps", reference_steps)
    reference_tolerance = check_finite_positive("reference_tolerance", reference_tolerance)
    max_reference_steps = check_positive_int("max_reference_steps", max_reference_steps)
    if isinstance(evidence, bool) or not isinstance(evidence, (int, float)) or not 0 <= evidence < math.inf:
        raise ValueError(f"evidence must be a finite number >= 0; got {evidence!r}")
    if 2 * reference_steps > max_reference_steps:
        raise ValueError(f"max_reference_steps must be >= 2 * reference_steps = {2 * reference_steps}; got {max_reference_steps}")
    size = shape[0] if first_points is None else min(check_positive_int("first_points", first_points), shape[0])
    default = FastSolverOptions.default(sde, nfe)
    candidates = [default] + [c for c in (fast_solver_grid() if candidates is None else candidates) if c != default]
    bad = [c for c in candidates if not isinstance(c, FastSolverOptions)]
    if bad:
        raise TypeError(f"candidates must be FastSolverOptions; got {type(bad[0]).__name__}")

    dtype = resolve_dtype(dtype, x_init)
    device = resolve_device(device, generator, x_init)
    z = initial_state(sde, shape, x_init, generator, device, dtype).to(dtype)
    counting = CountingScoreFn(score_fn)

    labels: dict[tuple, str] = {}
    chosen: dict[tuple, FastSolverOptions] = {}
    for options in candidates:
        key = solve_key(options, sde, nfe, eps)
        if key in chosen:
            continue
        try:
            solver_steps(options.method, options.order, nfe, False)
        except ValueError:
            continue  # the budget is too small for this order
        chosen[key], labels[key] = options, options.label()
    default_key = solve_key(default, sde, nfe, eps)
    planned = len(chosen) * nfe + 3 * reference_steps
    bar = tqdm(total=planned, desc="tune_fast_sample", unit="eval", leave=False, dynamic_ncols=True, disable=not progress)

    def solve(options: dict[str, Any], steps: int, points: Tensor) -> Tensor:
        x = fast_sample(sde, counting, tuple(points.shape), nfe=steps, eps=eps, x_init=points, **options)[0]
        bar.update(counting.nfe - bar.n)
        if on_progress is not None:
            on_progress(counting.nfe, planned)
        return x

    done = 0  # points solved so far: z[:done]
    solved: dict[tuple, Tensor] = {}
    coarse = fine = z[:0]
    while True:
        batch = z[done:size]
        solved = {key: torch.cat([solved[key], solve(options.kwargs(), nfe, batch)]) if done else
                  solve(options.kwargs(), nfe, batch) for key, options in chosen.items()}
        coarse = torch.cat([coarse, solve(REFERENCE_OPTIONS, reference_steps, batch)])
        fine = torch.cat([fine, solve(REFERENCE_OPTIONS, 2 * reference_steps, batch)])
        done = size
        while True:  # the reference of every point so far, refined until it cannot change the ranking
            per_point = {key: squared_errors(x, fine) for key, x in solved.items()}  # type: ignore[arg-type]
            errors = {key: math.sqrt(float(e.mean())) for key, e in per_point.items()}
            best = min(errors.values())
            difference = math.sqrt(float(squared_errors(coarse, fine).mean()))
            if difference <= reference_tolerance * best or 4 * reference_steps > max_reference_steps:
                break
            reference_steps *= 2
            planned += 2 * reference_steps
            bar.total = planned
            coarse, fine = fine, solve(REFERENCE_OPTIONS, 2 * reference_steps, z[:done])
        ranked = sorted(errors, key=lambda key: errors[key])  # stable: the default first among equals
        winner = ranked[0]
        lead = improvement_evidence(per_point[winner], per_point[default_key]) if winner != default_key else 0.0
        if done == shape[0] or winner == default_key or lead >= GROWTH_EVIDENCE:
            break
        size = min(2 * done, shape[0])
        planned += len(chosen) * nfe + 3 * reference_steps  # calls on the new points' batch
        bar.total = planned
    bar.close()
    if difference > reference_tolerance * best:
        warnings.warn(
            f"tune_fast_sample: the reference solves of {reference_steps} and {2 * reference_steps} steps differ by "
            f"{difference:.3g} (RMS), more than {reference_tolerance} x the best candidate's error {best:.3g}; raise "
            f"max_reference_steps for a firmer choice",
            stacklevel=2,
        )
    if lead < evidence:
        winner = default_key
    return FastSolverChoice(
        options=chosen[winner],
        nfe=nfe,
        eps=eps,
        rms=errors[winner],
        default_rms=errors[default_key],
        pilot_points=done,
        reference_steps=2 * reference_steps,
        reference_difference=difference,
        evaluations=counting.nfe,
        errors=tuple((labels[key], errors[key]) for key in ranked),
        lead=lead,
    )
