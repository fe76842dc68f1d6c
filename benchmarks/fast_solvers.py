"""Few-step solver benchmark: every option of ``samplers.fast_sample`` against the converged probability-flow ODE.

The data are Gaussian mixtures with the exact score of their perturbed densities, so the only error is the solver's:
``ring`` (2-D, 8 equal components), ``uneven2d`` (2-D, a heavy narrow component beside four light wide ones),
``mix64`` (64-D, 4 components) and ``mix128x8`` (128-D, 8 components) with unequal weights and widths, and the
diagonal Gaussians ``gauss3x8x8`` and ``gauss3x32x32`` (per-pixel means and variances). For each problem and SDE
(VP, sub-VP, VE with their default parameters) a fixed set of prior points ``z`` (float64; 2000 for the mixtures,
500 and 64 for the Gaussians, where every coordinate is a separate 1-D problem, so that the errors average over
1e5-2e5 coordinates, and the full run takes ~30 minutes on one CPU thread) is integrated from ``T`` to
``eps = 1e-3`` (no denoising) by every row below at NFE 5, 6, 8, 10, 12, 15, 20, 30, 50, and compared with the
reference ``x*(z)``: the same ODE solved by DPM-Solver-3 + UniC-bh1 (order 4), noise prediction, on the ``logSNR``
grid with 2000 steps. Its convergence is printed per problem and SDE: the difference from 1000 steps
(self-convergence; the error of 2000 steps is ~1/16 of it) and from data prediction at 2000 steps (an independent
path), and, for the single-Gaussian problems, from the closed-form flow.

Rows: DPM-Solver with every order (1-3), prediction (noise / data), corrector (none / bh1 / bh2), schedule
(``samplers.timesteps.SCHEDULES``) and ``lower_order_final``; Heun of order 1 (Euler) and 2 on every schedule; and
``fast_sample`` called with no option (``default``, whose options depend on the NFE and the SDE); and ``tuned``: the
row :func:`samplers.fast_tuning.tune_fast_sample` chooses at each NFE from its own pilot points (as many as the test
points, ``--pilot-fraction``, drawn with ``seed + 1``), with that row's errors on the test points. Rows that make the
same solve (the same step orders from ``samplers.dpm_solver.step_orders``) are solved once. Measured per row, with ``D`` the dimension:

* ``rms``: ``sqrt(mean_z ||x(z) - x*(z)||^2 / D)``, the per-coordinate RMS error;
* ``max``: ``max_z ||x(z) - x*(z)|| / sqrt(D)``;
* ``switches``: points whose most probable data component (argmax of the component posterior at ``t = 0``) differs
  from that of ``x*(z)``; NA for single Gaussians;
* ``nonfinite``: points with a NaN or inf coordinate.

On the mixtures a point that ends in another component than ``x*(z)`` adds ~``|mu_i - mu_j| / sqrt(D N)`` to the RMS
of ``N`` points (0.01 for ``mix128x8``), so there the RMS at 10-30 NFE mostly counts switches.

Printed: per problem and SDE, for each NFE, the default's and the tuned row's RMS and switches, the best grid row's,
and their ratios (``*`` marks more than 1.1x the best or more switches); every (row, problem, SDE) whose RMS grows
with NFE (by more than 1 % between any two budgets, above a floor of 100x the reference's self-convergence
difference), with its worst pair; the last step of each grid in ``lambda`` (and its ratio to the one before),
which the non-monotone series follow; and the rows ranked by their worst and geometric-mean ratio to the best.

The exact score is ``GaussianMixture.score_fn`` (float64; matrix products for a batch at one time). The points are
solved in blocks of 64k numbers (every point's trajectory is independent of the others), which stay in the CPU cache.

    python benchmarks/fast_solvers.py [--quick] [--problems ring mix64 ...] [--sdes VP subVP VE] [--threads 1]
        [--seed 0] [--pilot-fraction 1 | --default-pilot] [--evidence 0] [--csv benchmarks/results/fast_solvers_cpu.csv]
"""

from __future__ import annotations

import argparse
import csv
import itertools
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable, Iterable

import torch
from torch import Tensor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run as a script: this repository's packages, not benchmarks/models.py as `models`

import sde_lib  # noqa: E402
from samplers import fast_sample  # noqa: E402
from samplers.fast_tuning import (  # noqa: E402
    REFERENCE_OPTIONS, FastSolverOptions, default_most_pilot_points, default_pilot_points, fast_solver_grid, solve_key,
    tune_fast_sample,
)
from samplers.timesteps import SCHEDULES, half_log_snr, noise_levels  # noqa: E402

NFES = (5, 6, 8, 10, 12, 15, 20, 30, 50)
EPS = 1e-3
REFERENCE_STEPS = (1000, 2000)
INCREASE_TOLERANCE = 1.01  # an error growing by more than 1 % with NFE is listed
FLOOR_FACTOR = 100.0  # ... unless it is below this multiple of the reference's self-convergence difference (RMS)
HIGHLIGHT_RATIO = 1.1
CHUNK_ELEMENTS = 65536  # numbers per solver call (float64: 512 KiB per tensor)
TOP_ROWS = 15
DTYPE = torch.float64
CSV_COLUMNS = ("problem", "sde", "nfe", "method", "order", "prediction", "corrector", "schedule",
               "lower_order_final", "is_default", "is_tuned", "rms", "max", "switches", "nonfinite")


# ---------------------------------------------------------------------------------------------------- problems
@dataclass(frozen=True)
class Problem:
    name: str
    data: sde_lib.GaussianMixture
    points: int  # prior points of the full run


def _random_mixture(
    seed: int, dim: int, weights: list[float], variances: list[float], radius: tuple[float, float]
) -> sde_lib.GaussianMixture:
    """Means in random directions at norms uniform in ``radius``; component ``k`` has per-coordinate variances
    ``variances[k]`` times a factor log-uniform in ``[e^-0.3, e^0.3]``."""
    gen = torch.Generator().manual_seed(seed)
    k = len(weights)
    directions = torch.randn(k, dim, generator=gen, dtype=DTYPE)
    norms = radius[0] + (radius[1] - radius[0]) * torch.rand(k, 1, generator=gen, dtype=DTYPE)
    means = norms * directions / directions.norm(dim=1, keepdim=True)
    spread = torch.exp(0.6 * torch.rand(k, dim, generator=gen, dtype=DTYPE) - 0.3)
    return sde_lib.GaussianMixture(weights, means, torch.tensor(variances, dtype=DTYPE)[:, None] * spread)


def _random_gaussian(seed: int, shape: tuple[int, ...]) -> sde_lib.GaussianMixture:
    """Per-pixel means uniform in [-0.5, 0.5] and variances uniform in [0.01, 0.3]."""
    gen = torch.Generator().manual_seed(seed)
    mean = torch.rand(shape, generator=gen, dtype=DTYPE) - 0.5
    variance = 0.01 + 0.29 * torch.rand(shape, generator=gen, dtype=DTYPE)
    return sde_lib.GaussianMixture.gaussian(mean, variance)


def _uneven2d() -> sde_lib.GaussianMixture:
    """A heavy narrow component (weight 0.6, std 0.1) and four light wide ones (std 0.5-1.0) 2.3-3.4 away."""
    means = torch.tensor([[0.3, -0.2], [2.5, 0.5], [-1.0, 2.8], [-2.2, -2.0], [0.8, -3.6]], dtype=DTYPE)
    stds = torch.tensor([0.1, 0.5, 0.7, 0.9, 1.0], dtype=DTYPE)
    return sde_lib.GaussianMixture([0.6, 0.15, 0.12, 0.08, 0.05], means, stds[:, None].square())


def make_problems() -> dict[str, Problem]:
    problems = [
        Problem("ring", sde_lib.GaussianMixture.ring(), 2000),
        Problem("uneven2d", _uneven2d(), 2000),
        Problem("mix64", _random_mixture(64, 64, [0.4, 0.3, 0.2, 0.1], [0.05, 0.12, 0.25, 0.5], (3.0, 5.0)), 2000),
        Problem("mix128x8", _random_mixture(
            128, 128, [0.3, 0.2, 0.15, 0.1, 0.1, 0.07, 0.05, 0.03],
            [0.02, 0.6, 0.05, 0.3, 0.1, 0.4, 0.2, 0.03], (3.0, 6.0)), 2000),
        Problem("gauss3x8x8", _random_gaussian(388, (3, 8, 8)), 500),
        Problem("gauss3x32x32", _random_gaussian(33232, (3, 32, 32)), 64),
    ]
    return {p.name: p for p in problems}


QUICK_PROBLEMS = ("ring", "uneven2d", "mix64", "gauss3x8x8")
QUICK_POINTS_DIVISOR = 10


def make_sdes() -> dict[str, sde_lib.LinearSDE]:
    return {"VP": sde_lib.VPSDE(), "subVP": sde_lib.subVPSDE(), "VE": sde_lib.VESDE()}


# ---------------------------------------------------------------------------------------------------- solver rows
@dataclass(frozen=True)
class Config:
    """One row: the options given to ``fast_sample`` (``None`` leaves an option to its default), or the ``tuned`` row:
    the options :func:`samplers.fast_tuning.tune_fast_sample` chooses from pilot points."""

    method: str | None = None
    order: int | None = None
    prediction: str | None = None
    corrector: str | None = None
    schedule: str | None = None
    lower_order_final: bool | None = None
    tuned: bool = False

    @property
    def is_default(self) -> bool:
        return self == Config()

    @classmethod
    def of(cls, options: FastSolverOptions) -> Config:
        return cls(**options.kwargs())

    def options(self) -> FastSolverOptions:
        if self.method == "heun":
            return FastSolverOptions("heun", self.order, None, None, self.schedule, False)
        return FastSolverOptions(**self.kwargs())

    def kwargs(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None and k != "tuned"}

    def label(self) -> str:
        if self.is_default:
            return "default"
        if self.tuned:
            return "tuned"
        return self.options().label()

    def effective(self, sde: sde_lib.LinearSDE, nfe: int) -> Config:
        """The options ``fast_sample`` uses for this row at ``nfe`` (for the default row: its defaults, from ``samplers.fast``)."""
        return Config.of(FastSolverOptions.default(sde, nfe)) if self.is_default else self

    def solve_key(self, nfe: int, sde: sde_lib.LinearSDE) -> tuple:
        """Rows with the same key make the same solve (``lower_order_final`` enters only through ``step_orders``)."""
        if self.is_default:
            return (self, nfe)
        return solve_key(self.options(), sde, nfe, EPS)


def make_configs() -> list[Config]:
    return [Config()] + [Config.of(options) for options in fast_solver_grid()]


# ---------------------------------------------------------------------------------------------------- measurement
@dataclass
class Row:
    problem: str
    sde: str
    nfe: int
    config: Config
    effective: Config  # the options in effect (differs from config for the default row)
    rms: float | None  # None: refused by fast_sample
    max: float | None
    switches: int | None  # None: single Gaussian (or refused)
    nonfinite: int | None

    def csv_record(self) -> dict:
        c = self.effective
        return {
            "problem": self.problem, "sde": self.sde, "nfe": self.nfe,
            "method": c.method, "order": c.order, "prediction": c.prediction or "",
            "corrector": c.corrector or "", "schedule": c.schedule,
            "lower_order_final": "" if c.lower_order_final is None else c.lower_order_final,
            "is_default": self.config.is_default,
            "is_tuned": self.config.tuned,
            "rms": "refused" if self.rms is None else f"{self.rms:.6e}",
            "max": "" if self.max is None else f"{self.max:.6e}",
            "switches": "NA" if self.switches is None else self.switches,
            "nonfinite": "" if self.nonfinite is None else self.nonfinite,
        }


Solve = Callable[[Config, int], Tensor]
ScoreFn = Callable[[Tensor, Tensor], Tensor]


def make_solver(sde: sde_lib.LinearSDE, score: ScoreFn, z: Tensor) -> Solve:
    """``solve(config, nfe)``: ``fast_sample`` from every point of ``z``, in blocks of ~:data:`CHUNK_ELEMENTS` numbers
    (each point's solve is independent of the others; small blocks stay in the CPU cache)."""
    block = max(1, CHUNK_ELEMENTS // z[0].numel())

    def solve_block(config: Config, nfe: int, part: Tensor) -> Tensor:
        x, used = fast_sample(sde, score, tuple(part.shape), nfe=nfe, eps=EPS, x_init=part, **config.kwargs())
        assert used <= nfe, (config, nfe, used)
        return x

    def solve(config: Config, nfe: int) -> Tensor:
        return torch.cat([solve_block(config, nfe, part) for part in z.split(block)])

    return solve


def errors(x: Tensor, reference: Tensor) -> tuple[float, float, int]:
    """(per-coordinate RMS, max over points of ||x - x*|| / sqrt(D), points with a non-finite coordinate)."""
    flat, ref = x.reshape(x.shape[0], -1), reference.reshape(reference.shape[0], -1)
    per_point = (flat - ref).norm(dim=1) / math.sqrt(flat.shape[1])
    nonfinite = int((~torch.isfinite(flat)).any(dim=1).sum())
    return float(per_point.square().mean().sqrt()), float(per_point.max()), nonfinite


@dataclass
class Reference:
    x: Tensor
    labels: Tensor | None  # components of x*(z), None for single Gaussians
    self_diff: tuple[float, float]  # (RMS, max) of 1000 vs 2000 steps
    cross_diff: tuple[float, float]  # (RMS, max) of noise vs data prediction at 2000 steps
    closed_form_diff: tuple[float, float] | None


def closed_form_flow(data: sde_lib.GaussianMixture, sde: sde_lib.LinearSDE, z: Tensor) -> Tensor:
    """The exact flow of a single Gaussian from ``T`` to ``EPS``: a per-coordinate affine map."""
    ends = torch.tensor([sde.T, EPS], dtype=DTYPE)
    (alpha_T, alpha_eps), (sigma_T, sigma_eps) = (c.tolist() for c in sde.marginal_coeffs(ends))
    mean, var = data.means[0], data.variances[0]
    std_T, std_eps = (alpha_T**2 * var + sigma_T**2).sqrt(), (alpha_eps**2 * var + sigma_eps**2).sqrt()
    return alpha_eps * mean + std_eps * (z - alpha_T * mean) / std_T


def make_reference(
    problem: Problem, sde: sde_lib.LinearSDE, score: ScoreFn, solve: Solve, z: Tensor
) -> Reference:
    coarse, fine = (solve(Config(**REFERENCE_OPTIONS), n) for n in REFERENCE_STEPS)  # noise prediction
    other = solve(Config(**(REFERENCE_OPTIONS | {"prediction": "data"})), REFERENCE_STEPS[-1])
    single = problem.data.num_components == 1
    closed = errors(closed_form_flow(problem.data, sde, z), fine)[:2] if single else None
    labels = None if single else problem.data.most_probable_component(fine)
    return Reference(fine, labels, errors(coarse, fine)[:2], errors(other, fine)[:2], closed)


@dataclass
class Case:
    """One problem under one SDE: its prior points, exact score, reference and solver."""

    problem: Problem
    sde_name: str
    sde: sde_lib.LinearSDE
    score: ScoreFn
    solve: Solve
    reference: Reference

    def row(self, nfe: int, config: Config, x: Tensor | None) -> Row:
        effective = config.effective(self.sde, nfe)
        if x is None:
            return Row(self.problem.name, self.sde_name, nfe, config, effective, None, None, None, None)
        rms, worst, nonfinite = errors(x, self.reference.x)
        switches = None
        if self.reference.labels is not None:
            labels = self.problem.data.most_probable_component(torch.nan_to_num(x))
            switches = int((labels != self.reference.labels).sum())
        return Row(self.problem.name, self.sde_name, nfe, config, effective, rms, worst, switches, nonfinite)


def solve_rows(case: Case, configs: list[Config]) -> list[Row]:
    """Every row at every NFE; rows with the same :meth:`Config.solve_key` share one solve."""
    rows = []
    for nfe in NFES:
        cache: dict[tuple, Tensor | None] = {}
        for config in configs:
            key = config.solve_key(nfe, case.sde)
            if key not in cache:
                try:
                    cache[key] = case.solve(config, nfe)
                except ValueError as error:  # refused by fast_sample
                    print(f"  refused: {config.label()} nfe={nfe}: {error}")
                    cache[key] = None
            rows.append(case.row(nfe, config, cache[key]))
    return rows


def check_default(rows: list[Row]) -> str:
    """The default row against the explicit configuration it stands for (a separate solve: the same errors)."""
    defaults = [r for r in rows if r.config.is_default]
    explicit = {(r.nfe, r.config): r for r in rows}
    same = all((r.rms, r.max) == (explicit[r.nfe, r.effective].rms, explicit[r.nfe, r.effective].max) for r in defaults)
    labels = sorted({f"{r.effective.label()} at {r.nfe}" for r in defaults}, key=lambda text: int(text.rsplit(" ", 1)[1]))
    return f"default == {', '.join(labels)}: {'yes' if same else 'NO'}"


# ---------------------------------------------------------------------------------------------------- reports
def fmt_switches(value: int | None) -> str:
    return "NA" if value is None else str(value)


def by_nfe(rows: list[Row]) -> dict[int, list[Row]]:
    groups: dict[int, list[Row]] = {}
    for row in rows:
        if row.rms is not None:
            groups.setdefault(row.nfe, []).append(row)
    return groups


def best_of(rows: list[Row]) -> Row:
    """The row of least RMS (then fewest switches; the default wins ties, then the first row)."""
    return min(rows, key=lambda r: (math.inf if math.isnan(r.rms) else r.rms, r.switches or 0, not r.config.is_default))


def misses_target(row: Row, best: Row) -> bool:
    """The benchmark's target: RMS within :data:`HIGHLIGHT_RATIO` of the best row's and no more switched points."""
    return row.rms > HIGHLIGHT_RATIO * best.rms or (row.switches or 0) > (best.switches or 0)


def print_table(rows: list[Row]) -> None:
    """Per NFE: the default's and the tuned row's RMS and switches, the best grid row's, and their ratios to it."""
    print(f"  {'NFE':>4s} {'default RMS':>11s} {'sw':>4s} {'tuned RMS':>10s} {'sw':>4s}   {'best row':38s} {'RMS':>9s} "
          f"{'sw':>4s}  {'def/best':>8s} {'tuned/best':>10s}")
    for nfe, group in sorted(by_nfe(rows).items()):
        default = next(r for r in group if r.config.is_default)
        tuned = next(r for r in group if r.config.tuned)
        best = best_of([r for r in group if not r.config.tuned])
        cells = []
        for row in (default, tuned):
            cells.append(f"{row.rms / best.rms:.2f}{'*' if misses_target(row, best) else ' '}")
        print(f"  {nfe:4d} {default.rms:11.3e} {fmt_switches(default.switches):>4s} {tuned.rms:10.3e} "
              f"{fmt_switches(tuned.switches):>4s}   {best.config.label():38s} {best.rms:9.3e} "
              f"{fmt_switches(best.switches):>4s}  {cells[0]:>8s} {cells[1]:>10s}")


def worst_increase(rows: list[Row], floor: float) -> tuple[float, Row, Row] | None:
    """The largest ``rms(n2) / rms(n1)`` over ``n1 < n2`` of one row's series, if above the tolerance and the floor."""
    series = sorted((r for r in rows if r.rms is not None), key=lambda r: r.nfe)
    candidates = [
        (later.rms / earlier.rms, earlier, later)
        for earlier, later in itertools.combinations(series, 2)
        if later.rms > INCREASE_TOLERANCE * earlier.rms and later.rms > floor
    ]
    return max(candidates, key=lambda c: c[0]) if candidates else None


def non_monotone(rows: list[Row], floors: dict[tuple[str, str], float]) -> list[tuple[float, Row, Row]]:
    groups: dict[tuple, list[Row]] = {}
    for row in rows:
        groups.setdefault((row.config, row.problem, row.sde), []).append(row)
    found = (worst_increase(group, floors[key[1], key[2]]) for key, group in groups.items())
    return sorted((f for f in found if f is not None), key=lambda f: -f[0])


def print_non_monotone(rows: list[Row], floors: dict[tuple[str, str], float]) -> None:
    found = non_monotone(rows, floors)
    print(f"\nRMS error growing with NFE (> {100 * (INCREASE_TOLERANCE - 1):.0f} % between two budgets, above "
          f"{FLOOR_FACTOR:.0f}x the reference's self-convergence RMS): {len(found)} (row, problem, SDE) series, "
          f"worst pair of each, worst first")
    print(f"  {'row':38s} {'problem':13s} {'sde':6s} {'NFE pair':>9s} {'RMS':>21s} {'ratio':>7s}")
    for ratio, earlier, later in found:
        pair = f"{earlier.nfe:>4d}->{later.nfe:<4d}"
        print(f"  {earlier.config.label():38s} {earlier.problem:13s} {earlier.sde:6s} {pair} "
              f"{earlier.rms:9.3e}->{later.rms:9.3e} {ratio:7.2f}")
    print_counts("  series per option value:", [r.config for _, r, _ in found])


def print_counts(title: str, configs: list[Config]) -> None:
    print(title)
    for field in ("method", "order", "prediction", "corrector", "schedule", "lower_order_final"):
        counts: dict[str, int] = {}
        for config in configs:
            value = "default" if config.is_default else "tuned" if config.tuned else str(getattr(config, field))
            counts[value] = counts.get(value, 0) + 1
        print(f"    {field}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])))


def merged_labels(rows: list[Row]) -> dict[Config, str]:
    """One representative per set of rows with the same RMS everywhere, labelled ``"a = b = ..."``."""
    series: dict[Config, list[float | None]] = {}
    for row in sorted(rows, key=lambda r: (r.problem, r.sde, r.nfe)):
        series.setdefault(row.config, []).append(row.rms)
    groups: dict[tuple, list[Config]] = {}
    for config, values in series.items():
        groups.setdefault(tuple(values), []).append(config)
    return {group[0]: " = ".join(c.label() for c in group) for group in groups.values()}


def ratio_summary(rows: list[Row]) -> list[tuple[Config, float, float, str]]:
    """Per row: (config, worst ratio to the best RMS, geometric-mean ratio, where the worst is)."""
    ratios: dict[Config, list[tuple[float, str]]] = {}
    groups: dict[tuple, list[Row]] = {}
    for row in rows:
        if row.rms is not None:
            groups.setdefault((row.problem, row.sde, row.nfe), []).append(row)
    for (problem, sde, nfe), group in groups.items():
        best = best_of(group).rms
        for row in group:
            ratio = row.rms / best if math.isfinite(row.rms) else math.inf
            ratios.setdefault(row.config, []).append((ratio, f"{problem}/{sde}/{nfe}"))
    summary = []
    for config, values in ratios.items():
        worst = max(values)
        geo = math.exp(sum(math.log(v) for v, _ in values) / len(values)) if worst[0] < math.inf else math.inf
        summary.append((config, worst[0], geo, worst[1]))
    return summary


def print_target(rows: list[Row], misses: list[Miss]) -> None:
    """How many (problem, SDE, NFE) cells the default and tuned rows meet the target in, and the tuned row's misses."""
    groups: dict[tuple, list[Row]] = {}
    for row in rows:
        if row.rms is not None:
            groups.setdefault((row.problem, row.sde, row.nfe), []).append(row)
    met = {"default": 0, "tuned": 0}
    for group in groups.values():
        best = best_of([r for r in group if not r.config.tuned])
        for name, row in (("default", next(r for r in group if r.config.is_default)),
                          ("tuned", next(r for r in group if r.config.tuned))):
            met[name] += not misses_target(row, best)
    fresh_met = sum(not misses_target(m.fresh_tuned, m.fresh_best) for m in misses)
    print(f"\nTarget (RMS within {HIGHLIGHT_RATIO}x of the best row, no more switches) met in {len(groups)} cells: "
          f"default {met['default']}, tuned {met['tuned']}; of the tuned row's {len(misses)} misses, "
          f"{fresh_met} meet it on fresh points")
    for miss in misses:
        print(f"  {miss.line()}")


def print_rankings(rows: list[Row]) -> None:
    labels = merged_labels(rows)
    summary = [s for s in ratio_summary(rows) if s[0] in labels]
    print(f"\n{len(labels)} distinct rows (rows with the same RMS everywhere merged: a = b)")
    for title, key in (("worst", lambda s: (s[1], s[2])), ("geometric-mean", lambda s: (s[2], s[1]))):
        print(f"\nRows by {title} ratio of RMS to the best row over every problem / SDE / NFE (top {TOP_ROWS}):")
        print(f"  {'worst':>8s} {'geo-mean':>8s}  {'worst at':24s} row")
        for config, worst, geo, where in sorted(summary, key=key)[:TOP_ROWS]:
            print(f"  {worst:8.2f} {geo:8.3f}  {where:24s} {labels[config]}")
    ranked = sorted(summary, key=lambda s: (s[1], s[2]))
    for name, special in (("default", next(s for s in summary if s[0].is_default)),
                          ("tuned", next(s for s in summary if s[0].tuned))):
        print(f"  {name}: worst {special[1]:.2f} at {special[3]}, geometric mean {special[2]:.3f} "
              f"(rank {ranked.index(special) + 1} by worst)")


# ---------------------------------------------------------------------------------------------------- driver
def prior_points(sde: sde_lib.LinearSDE, problem: Problem, points: int, seed: int) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return sde.prior_sampling((points, *problem.data.event_shape), generator=gen, dtype=DTYPE)


def tuned_rows(case: Case, rows: list[Row], pilot: Tensor, evidence: float,
               first_points: int | None) -> tuple[list[Row], str]:
    """The ``tuned`` row at each NFE: :func:`tune_fast_sample` on the pilot points (independent of the test points;
    its ``evidence`` and ``first_points``) chooses a grid row, whose errors on the test points are copied; and a
    summary of the tuning's cost."""
    by_key = {(r.nfe, r.config): r for r in rows}
    tuned, evaluations, pilot_ratios, leads = [], [], [], []
    for nfe in NFES:
        choice = tune_fast_sample(case.sde, case.score, tuple(pilot.shape), nfe, eps=EPS, x_init=pilot,
                                  evidence=evidence, first_points=first_points)
        chosen = by_key[nfe, Config.of(choice.options)]
        tuned.append(Row(chosen.problem, chosen.sde, nfe, Config(tuned=True), chosen.config, chosen.rms, chosen.max,
                         chosen.switches, chosen.nonfinite))
        evaluations.append(choice.evaluations)
        pilot_ratios.append(choice.default_rms / choice.rms)
        leads.append(choice.lead)
    screened = "" if first_points is None else f", every row on the first {first_points} and the widest, the finalists on all"
    summary = (f"tuned on {pilot.shape[0]} pilot points{screened} (evidence {evidence:g}): "
               f"{min(evaluations)}-{max(evaluations)} evaluations per NFE "
               f"(reference {choice.reference_steps} steps); pilot default/tuned RMS "
               f"{min(pilot_ratios):.2f}-{max(pilot_ratios):.2f}; the pilot's best row's lead over the default "
               f"{', '.join(f'{lead:.1f}' for lead in leads)} SE at NFE {', '.join(map(str, NFES))}")
    return tuned, summary


@dataclass
class Miss:
    """A cell where the tuned row misses the target on the test points, and the tuned and best rows re-measured on
    fresh points (the best row was picked on the test points themselves, among ~100 distinct solves)."""

    tuned: Row
    best: Row
    fresh_tuned: Row
    fresh_best: Row

    def line(self) -> str:
        def pair(tuned: Row, best: Row) -> str:
            return (f"{tuned.rms / best.rms:5.2f} ({tuned.rms:.3e} / {best.rms:.3e}), switches "
                    f"{fmt_switches(tuned.switches)} / {fmt_switches(best.switches)}")

        return (f"{self.tuned.problem}/{self.tuned.sde}/{self.tuned.nfe}: tuned {self.tuned.effective.label()}, best "
                f"{self.best.config.label()}; tuned/best on the test points {pair(self.tuned, self.best)}; on fresh "
                f"points {pair(self.fresh_tuned, self.fresh_best)}"
                f"{'' if misses_target(self.fresh_tuned, self.fresh_best) else '  (meets the target there)'}")


def check_misses(case: Case, rows: list[Row], fresh: Tensor) -> list[Miss]:
    """Where the tuned row misses the target, solve its configuration and the best row's from ``fresh`` prior points
    (with their own reference): a best row whose lead does not hold on fresh points won it by the luck of the test
    points, which no choice made before sampling can match."""
    found = []
    for nfe, group in sorted(by_nfe(rows).items()):
        tuned = next(r for r in group if r.config.tuned)
        best = best_of([r for r in group if not r.config.tuned])
        if misses_target(tuned, best):
            found.append((tuned, best))
    if not found:
        return []
    solve = make_solver(case.sde, case.score, fresh)
    reference = make_reference(case.problem, case.sde, case.score, solve, fresh)
    other = Case(case.problem, case.sde_name, case.sde, case.score, solve, reference)
    misses = [Miss(tuned, best, other.row(tuned.nfe, tuned.effective, solve(tuned.effective, tuned.nfe)),
                   other.row(best.nfe, best.config, solve(best.config, best.nfe))) for tuned, best in found]
    print(f"  tuned row's misses re-measured on {fresh.shape[0]} fresh points:")
    for miss in misses:
        print(f"    {miss.line()}")
    return misses


def run_case(problem: Problem, sde_name: str, sde: sde_lib.LinearSDE, points: int, seed: int,
             configs: list[Config], pilot_points: int, evidence: float,
             first_points: int | None) -> tuple[list[Row], Reference, list[Miss]]:
    start = time.perf_counter()
    z = prior_points(sde, problem, points, seed)
    score = problem.data.score_fn(sde)
    solve = make_solver(sde, score, z)
    reference = make_reference(problem, sde, score, solve, z)
    case = Case(problem, sde_name, sde, score, solve, reference)
    rows = solve_rows(case, configs)
    tuned, tuning = tuned_rows(case, rows, prior_points(sde, problem, pilot_points, seed + 1), evidence,
                                first_points)
    rows += tuned
    closed = "" if reference.closed_form_diff is None else \
        f"; closed form - ref RMS {reference.closed_form_diff[0]:.1e} max {reference.closed_form_diff[1]:.1e}"
    print(f"\n{problem.name} ({math.prod(problem.data.event_shape)}-D, K={problem.data.num_components}), {sde_name}, "
          f"{points} points ({time.perf_counter() - start:.0f} s)")
    print(f"  reference {REFERENCE_STEPS[-1]} steps: vs {REFERENCE_STEPS[0]} steps RMS {reference.self_diff[0]:.1e} "
          f"max {reference.self_diff[1]:.1e}; vs data prediction RMS {reference.cross_diff[0]:.1e} "
          f"max {reference.cross_diff[1]:.1e}{closed}; {check_default(rows)}")
    print(f"  {tuning}")
    print_table(rows)
    misses = check_misses(case, rows, prior_points(sde, problem, points, seed + 2))
    return rows, reference, misses


def print_grids(sdes: dict[str, sde_lib.LinearSDE]) -> None:
    """The last step of each schedule in ``lambda`` and its ratio to the one before (``h_last (h_last / h_prev)``)."""
    print("\nGrids: last step h = lambda(eps) - lambda(t_N-1) in half-log-SNR and its ratio to the step before")
    for sde_name, sde in sdes.items():
        ends = half_log_snr(sde, torch.tensor([sde.T, EPS], dtype=DTYPE)).tolist()
        print(f"  {sde_name} (lambda from {ends[0]:.2f} to {ends[1]:.2f})")
        print(f"    {'schedule':18s} " + " ".join(f"{'NFE ' + str(n):>13s}" for n in NFES))
        for schedule in SCHEDULES:
            cells = []
            for nfe in NFES:
                lam = [level.lam for level in noise_levels(sde, schedule, nfe, EPS, torch.device("cpu"))]
                last, previous = lam[-1] - lam[-2], lam[-2] - lam[-3]
                cells.append(f"{last:5.2f} ({last / previous:4.1f})")
            print(f"    {schedule:18s} " + " ".join(f"{c:>13s}" for c in cells))


def write_csv(path: str, rows: Iterable[Row]) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(row.csv_record() for row in rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    problems, sdes = list(make_problems()), list(make_sdes())
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"problems {', '.join(QUICK_PROBLEMS)} only, {QUICK_POINTS_DIVISOR}x fewer points")
    parser.add_argument("--problems", nargs="+", choices=problems, default=None)
    parser.add_argument("--sdes", nargs="+", choices=sdes, default=sdes)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0, help="seed of the prior points")
    parser.add_argument("--pilot-fraction", type=float, default=1.0,
                        help="the tuned row's pilot points, drawn with seed + 1, as a fraction of the test points")
    parser.add_argument("--default-pilot", action="store_true",
                        help="the tuned row's pilot as config.sampling.fast_tuning takes it by default: every "
                             "candidate on default_pilot_points, finalists screened on default_most_pilot_points "
                             "(not a fraction)")
    parser.add_argument("--evidence", type=float, default=0.0, help="tune_fast_sample's evidence for the tuned row")
    parser.add_argument("--csv", default=None, help="write every row to this CSV file")
    return parser.parse_args(argv)


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    problems, sdes = make_problems(), make_sdes()
    names = args.problems or (list(QUICK_PROBLEMS) if args.quick else list(problems))
    divisor = QUICK_POINTS_DIVISOR if args.quick else 1
    configs = make_configs()
    start = time.perf_counter()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), float64, exact score, eps={EPS}; "
          f"{len(configs)} rows x NFE {', '.join(map(str, NFES))}; load average {load()}")
    rows: list[Row] = []
    misses: list[Miss] = []
    floors: dict[tuple[str, str], float] = {}
    for name in names:
        for sde_name in args.sdes:
            problem = problems[name]
            points = max(problem.points // divisor, 16)
            shape = problem.data.event_shape
            fraction = max(round(args.pilot_fraction * points), 8)
            pilot = default_most_pilot_points(shape) if args.default_pilot else fraction
            first = default_pilot_points(shape) if args.default_pilot else None
            case_rows, reference, case_misses = run_case(problem, sde_name, sdes[sde_name], points, args.seed,
                                                         configs, pilot, args.evidence, first)
            rows += case_rows
            misses += case_misses
            floors[name, sde_name] = FLOOR_FACTOR * reference.self_diff[0]
    print_grids({name: sdes[name] for name in args.sdes})
    print_non_monotone(rows, floors)
    print_rankings(rows)
    print_target(rows, misses)
    if args.csv:
        write_csv(args.csv, rows)
    print(f"\ntotal {time.perf_counter() - start:.0f} s; load average {load()}")


if __name__ == "__main__":
    main()
