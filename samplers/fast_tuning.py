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
pilot points). A screened pilot (``first_points``) solves every candidate on its first points, then the
:data:`FINALISTS` best of them, the best of each family and the fixed default on all points, and every candidate
and the reference on as many more points, those where the finalists disagree most: two solutions ``x_a``, ``x_b``
of one point differ in squared error by at most ``|x_a - x_b| (|x_a - x*| + |x_b - x*|)``, so where the finalists
agree their ranking cannot change, and the rare points that end in different modes are the ones referenced. The
errors over all points are then estimated by stratified sampling (:class:`Strata`): exact on the points of most
disagreement, sampled by the first points elsewhere. With a small pilot, ``evidence > 0`` keeps the fixed default
unless the best candidate's lead is that many standard errors. It is per-model step-schedule optimisation (Align
Your Steps, Sabour et al. 2024) with an exhaustive search over ``fast_sample``'s discrete options in place of a
gradient search over the grid; the choice is a small JSON record, made once per model and budget and reused.

The reference is DPM-Solver-3 with the UniC corrector (order 4), noise prediction, on the ``logSNR`` grid, solved with
``N`` and ``2N`` steps; ``N`` doubles until the two differ by at most ``reference_tolerance`` times the best
candidate's error, so that the reference's own error (about 1/16 of that difference at order 4) cannot change
the ranking. Cost, per pilot point: ``3N`` evaluations for the reference (more if it doubles) and ``nfe`` for each
distinct candidate solve (candidates that take the same steps, by :func:`samplers.dpm_solver.step_orders`, are solved
once, 150-160 of the 190): with the full grid at 20 evaluations about 1500 + 3100. A screened pilot's other points
cost ``nfe`` per finalist each (about 20 finalists), and as many of them as it has first points cost the full grid
and ``3N`` more.
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
#: a default pilot screens its finalists on at least this many points in all
MOST_PILOT_POINTS = 1024
#: a screened pilot solves this many of the best candidates on its first points on all points (finalists_of)
FINALISTS = 8


def default_pilot_points(data_shape: Sequence[int]) -> int:
    """Pilot points for samples of ``data_shape`` when none are asked for: ``max(64, ceil(4096 / D))``.

    The pilot RMS averages over points and coordinates, so a fixed number of coordinates (64 points of the 8x8
    digits) ranks the options about as well in any dimension. In low dimension that takes many points: there the
    error is decided by the few points that end between modes, and 64 points of 2-D data hold one or two of them.
    """
    dim = math.prod(int(n) for n in data_shape)
    return max(MIN_PILOT_POINTS, math.ceil(PILOT_COORDINATES / max(dim, 1)))


def default_most_pilot_points(data_shape: Sequence[int]) -> int:
    """The points of a default (screened) pilot: :data:`MOST_PILOT_POINTS`, or :func:`default_pilot_points` if more.

    Where a few points that end in another mode of the data decide the RMS error, ranking the options takes about
    a thousand points or more in any dimension; screening solves only the finalists on the points beyond the first,
    and every candidate and the reference on as many as the first. More points would leave more of those that end
    in another mode outside the referenced ones (the README has the benchmark's figures for 1024 and 2048).
    """
    return max(default_pilot_points(data_shape), MOST_PILOT_POINTS)


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


@dataclass(frozen=True)
class Strata:
    """Estimates of means over ``total`` points from per-point errors known at some of them, by stratified sampling
    (Cochran, *Sampling Techniques*, 3rd ed. 1977, ch. 5).

    The known points come in the order of the errors given to :meth:`mean`. Those marked ``sampled`` are a simple
    random sample of the ``low_size`` points of the low stratum; the others are the whole high stratum. The mean is
    ``(sum_high e + low_size * mean_sampled e) / total``, unbiased for strata fixed in advance (a threshold set by
    the data, as :meth:`screened` sets it, leaves a bias far below the sampling error), and its sampling error comes
    from the low stratum alone: ``low_size / total * sd_sampled(e) / sqrt(n_sampled)`` (without the
    finite-population correction, so on the safe side).
    """

    sampled: Tensor  # bool, one per known point: a random member of the low stratum
    low_size: int  # points in the low stratum, known or not
    total: int  # all points

    @classmethod
    def everything(cls, points: int) -> Strata:
        """Every point known, all one random sample: the plain mean and its standard error."""
        return cls(torch.ones(points, dtype=torch.bool), points, points)

    @classmethod
    def screened(cls, first_spread: Tensor, spread: Tensor, widest: Tensor) -> Strata:
        """The first points (random, known) and the rest's points ``widest`` (known), strata by the finalists'
        ``spread``: the high stratum holds every point whose spread exceeds the least among ``widest`` (all known:
        ``widest`` and such first points), and the first points below it sample the rest at random. The known points'
        order: the first points, then ``widest``."""
        threshold = spread[widest].min() if widest.numel() else torch.tensor(math.inf)
        low_first = first_spread <= threshold
        low_size = spread.numel() - widest.numel() + int(low_first.sum())
        sampled = torch.cat([low_first, torch.zeros(widest.numel(), dtype=torch.bool, device=low_first.device)])
        return cls(sampled, low_size, first_spread.numel() + spread.numel())

    def mean(self, errors: Tensor) -> float:
        """The mean of ``errors`` (one per known point) over all points. With no sampled point of a non-empty low
        stratum, the known points' mean stands for it."""
        sampled = self.sampled.to(errors.device)
        high = errors[~sampled].sum()
        if not self.low_size:
            return float(high / self.total)
        low = errors[sampled].mean() if bool(sampled.any()) else errors.mean()
        return float((high + self.low_size * low) / self.total)

    def lead(self, candidate: Tensor, baseline: Tensor) -> float:
        """How many standard errors the candidate's mean squared error lies below the baseline's, from the paired
        per-point differences; ``inf`` if the baseline alone is not finite."""
        if not math.isfinite(float(baseline.sum())):
            return math.inf if math.isfinite(float(candidate.sum())) else 0.0
        difference = baseline - candidate
        mean = self.mean(difference)
        low = difference[self.sampled.to(difference.device)]
        spread = float(low.std() / math.sqrt(low.numel())) if low.numel() > 1 else 0.0
        standard_error = self.low_size / self.total * spread
        return mean / standard_error if standard_error > 0 else (math.inf if mean > 0 else 0.0)


@dataclass(frozen=True)
class FastSolverChoice:
    """The outcome of :func:`tune_fast_sample`; ``fast_sample(sde, score_fn, shape, **choice.sample_kwargs())``."""

    options: FastSolverOptions  # the configuration of least pilot error
    nfe: int  # the budget it was chosen for
    eps: float  # the end time of the ODE
    rms: float  # its per-coordinate RMS error against the reference on the pilot points (screened: estimated)
    default_rms: float  # the same for fast_sample's fixed default
    pilot_points: int  # the pilot points the choice was made on
    reference_steps: int  # steps of the finer reference solve
    reference_difference: float  # RMS between the references of reference_steps / 2 and reference_steps steps
    evaluations: int  # batched score evaluations the tuning made
    # (label, RMS on the first points) of every distinct solve, best first
    errors: tuple[tuple[str, float], ...] = field(default=())
    lead: float = math.nan  # the best solve's lead over the default, in paired standard errors (Strata.lead)
    first_points: int | None = None  # the points every candidate was solved on (None in records that predate it)
    # a screened pilot's (label, RMS over all points, estimated) of every distinct solve, best first
    screened: tuple[tuple[str, float], ...] = field(default=())

    def sample_kwargs(self) -> dict[str, Any]:
        return dict(nfe=self.nfe, eps=self.eps, **self.options.kwargs())

    def to_json(self) -> str:
        record = asdict(self)
        record["errors"] = [list(e) for e in self.errors]
        record["screened"] = [list(e) for e in self.screened]
        return json.dumps(record, indent=1, allow_nan=True)

    @classmethod
    def from_json(cls, text: str) -> FastSolverChoice:
        """Read a record written by :meth:`to_json`; a malformed one raises ``ValueError`` naming what is wrong."""
        try:
            record = json.loads(text)
            options = FastSolverOptions.from_dict(record.pop("options"))
            errors = tuple((str(label), float(value)) for label, value in record.pop("errors"))
            screened = tuple((str(label), float(value)) for label, value in record.pop("screened", ()))
            choice = cls(options=options, errors=errors, screened=screened, **record)
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"not a fast solver choice record: {error}") from None
        check_positive_int("nfe", choice.nfe)
        return choice


def finalists_of(ranked: Sequence[tuple], chosen: dict[tuple, FastSolverOptions], default_key: tuple) -> list[tuple]:
    """A screened pilot's finalists, best first: the :data:`FINALISTS` best on the first points, the best of each
    family (method, prediction, schedule) and the fixed default. A family's best is there because a few points that
    end in another mode can decide the error over all points, and which options move fewer points to another mode
    tends to follow the family, not the error on the first points."""
    finalists = list(ranked[:FINALISTS])
    families = set()
    for key in ranked:
        options = chosen[key]
        family = (options.method, options.prediction, options.schedule)
        if family not in families:
            families.add(family)
            if key not in finalists:
                finalists.append(key)
    return finalists + ([] if default_key in finalists else [default_key])


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
    score_for_points: Callable[[Tensor], ScoreFn] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> FastSolverChoice:
    """Choose ``fast_sample``'s options for ``score_fn`` at budget ``nfe`` by their error on pilot points.

    Args:
        sde, score_fn, eps: as for :func:`samplers.fast_sample`.
        shape: ``(P, ...)``: the pilot points' shape (``P`` points of the samples' shape).
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
        evidence: the fixed default is kept unless the best candidate's mean squared error is lower than the
            default's by at least this many standard errors of their paired per-point difference (0: always take the
            best).
        first_points: a screened pilot: every candidate and the reference are solved on the first ``n`` of the
            ``P`` points, the finalists (:func:`finalists_of`) on all ``P``, and every candidate and the reference
            on ``n`` more, those where the finalists disagree most; the errors over all ``P`` points are estimated
            by :class:`Strata`. Default: every candidate and the reference on all ``P``.
        score_for_points: for a score that depends on the points it is given (e.g. guided towards a class label per
            point): ``score_for_points(index)`` is the score of the pilot points at ``index`` (int64 positions among
            the ``P``, on the CPU), which a screened pilot's solves of part of the points take; ``score_fn`` is then
            the score of all ``P`` points in order. Default: ``score_fn`` for any points.
        on_progress: called after each solve with ``(evaluations made, evaluations planned)``, each a call of
            ``score_fn`` on a pilot batch (the plan grows if the reference's steps double), for progress lines.

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
    counters = [CountingScoreFn(score_fn)]  # the score of all points first; one more per part of a screen
    if score_for_points is not None and not callable(score_for_points):
        raise ValueError(f"score_for_points must be callable as score_for_points(index) -> score_fn; got {score_for_points!r}")

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
    screen = size < shape[0]
    # a screen solves each candidate and the reference once more: the finalists on the rest, the others on the widest
    planned = (len(chosen) * nfe + 3 * reference_steps) * (2 if screen else 1)
    bar = tqdm(total=planned, desc="tune_fast_sample", unit="eval", leave=False, dynamic_ncols=True, disable=not progress)

    def points_at(index: Tensor) -> tuple[Tensor, CountingScoreFn]:
        """The pilot points at ``index`` and their (counted) score."""
        if score_for_points is not None and index.numel() < shape[0]:
            counters.append(CountingScoreFn(score_for_points(index)))
            return z[index.to(z.device)], counters[-1]
        return z[index.to(z.device)], counters[0]

    def solve(options: dict[str, Any], steps: int, points: tuple[Tensor, CountingScoreFn]) -> Tensor:
        x_init, counting = points
        x = fast_sample(sde, counting, tuple(x_init.shape), nfe=steps, eps=eps, x_init=x_init, **options)[0]
        evaluations = sum(c.nfe for c in counters)
        bar.update(evaluations - bar.n)
        if on_progress is not None:
            on_progress(evaluations, planned)
        return x

    def errors_against_reference(
        points: tuple[Tensor, CountingScoreFn], solutions: dict[tuple, Tensor], later: int
    ) -> tuple[dict[tuple, Tensor], float]:
        """Per-point squared errors of ``solutions`` against the reference from ``points``, whose steps double
        until its two resolutions differ by at most ``reference_tolerance`` times the best solution's RMS error
        there; and that difference. ``later`` reference solves follow, which start from the doubled steps."""
        nonlocal reference_steps, planned
        coarse = solve(REFERENCE_OPTIONS, reference_steps, points)
        fine = solve(REFERENCE_OPTIONS, 2 * reference_steps, points)
        while True:
            per_point = {key: squared_errors(x, fine) for key, x in solutions.items()}
            best = min(math.sqrt(float(e.mean())) for e in per_point.values())
            difference = math.sqrt(float(squared_errors(coarse, fine).mean()))
            if difference <= reference_tolerance * best or 4 * reference_steps > max_reference_steps:
                break
            reference_steps *= 2
            # this stage's finer solve, and each later stage's two solves (3N) from the doubled N
            planned += 2 * reference_steps + later * 3 * reference_steps // 2
            bar.total = planned
            coarse, fine = fine, solve(REFERENCE_OPTIONS, 2 * reference_steps, points)
        if difference > reference_tolerance * best:
            warnings.warn(
                f"tune_fast_sample: the reference solves of {reference_steps} and {2 * reference_steps} steps differ "
                f"by {difference:.3g} (RMS), more than {reference_tolerance} x the best candidate's error {best:.3g}; "
                f"raise max_reference_steps for a firmer choice",
                stacklevel=3,
            )
        return per_point, difference

    first = points_at(torch.arange(size))
    solved = {key: solve(options.kwargs(), nfe, first) for key, options in chosen.items()}
    per_point, difference = errors_against_reference(first, solved, later=int(screen))
    strata = Strata.everything(size)
    errors = {key: math.sqrt(strata.mean(e)) for key, e in per_point.items()}
    ranked = sorted(errors, key=lambda key: errors[key])  # stable: the default first among equals
    first_errors = tuple((labels[key], errors[key]) for key in ranked)
    if screen:
        finalists = finalists_of(ranked, chosen, default_key)
        rest = points_at(torch.arange(size, shape[0]))
        screened = {key: solve(chosen[key].kwargs(), nfe, rest) for key in finalists}
        leader, others = ranked[0], [key for key in finalists if key != ranked[0]]
        # each finalist's distance from the leader relative to its typical one: the points where one of them
        # leaves the others (to another mode of the data) stand out whatever its error elsewhere
        typical = [squared_errors(screened[key], screened[leader]).median().clamp_min(1e-300) for key in others]

        def spread_of(x: dict[tuple, Tensor]) -> Tensor:
            ratios = [squared_errors(x[key], x[leader]) / scale for key, scale in zip(others, typical)]
            return torch.stack(ratios + [squared_errors(x[leader], x[leader])]).nan_to_num(nan=math.inf).amax(dim=0)

        spread, first_spread = spread_of(screened), spread_of(solved)
        widest = spread.topk(min(size, shape[0] - size)).indices
        strata = Strata.screened(first_spread, spread, widest)
        # every candidate on the widest points too: the high stratum is then known for all of them
        at_widest = points_at(size + widest.cpu())
        solved_at_widest = {key: screened[key][widest] if key in screened else solve(options.kwargs(), nfe, at_widest)
                            for key, options in chosen.items()}
        added, _ = errors_against_reference(at_widest, solved_at_widest, later=0)
        per_point = {key: torch.cat([per_point[key], added[key]]) for key in chosen}
        errors = {key: math.sqrt(strata.mean(per_point[key])) for key in chosen}
        ranked = sorted(errors, key=lambda key: errors[key])
    bar.close()
    winner = ranked[0]
    lead = strata.lead(per_point[winner], per_point[default_key]) if winner != default_key else 0.0
    if lead < evidence:
        winner = default_key
    return FastSolverChoice(
        options=chosen[winner],
        nfe=nfe,
        eps=eps,
        rms=errors[winner],
        default_rms=errors[default_key],
        pilot_points=shape[0],
        reference_steps=2 * reference_steps,
        reference_difference=difference,
        evaluations=sum(c.nfe for c in counters),
        errors=first_errors,
        lead=lead,
        first_points=size,
        screened=tuple((labels[key], errors[key]) for key in ranked) if screen else (),
    )
