"""Likelihood benchmark: NFE, wall time and error of the probability-flow log-likelihood, torch solver vs scipy.

Data with an exact density (a Gaussian in 3x8x8 = 192 dimensions and the 2-D 8-Gaussian mixture) and its exact score,
so the error is the solver's alone. The error is measured against the exact log p_eps(x) after swapping the prior for
the exact log p_T(z). The prior mismatch is the same for both paths and is not a solver error.

    python benchmarks/likelihood.py [--batches 64 512] [--threads 1] [--rtol 1e-5] [--repeats 7]
                                    [--networks ddpmpp_vp ncsnpp_ve digits_ddpmpp] [--batch 64] [--device auto|cpu|cuda]
                                    [--compile [MODE]] [--skip-exact]

``--networks`` adds the cost of one likelihood of a batch under a score network on ``--device`` (:func:`network_rows`);
``--skip-exact`` runs only those.

For each (data, SDE, batch) it prints three rows: scipy RK45 at ``--rtol`` (the 2021 reference's path), the torch dopri5
solver at the same tolerance, and dopri5 at matched accuracy (``*``): the loosest tolerance of a grid whose mean AND max
errors are both no worse than RK45's. The search starts at ``--rtol`` and walks up the grid while the match holds (down
the grid until it holds, if dopri5 is less accurate at ``--rtol``), so a match is never picked past a failing tolerance.
Errors and NFE are deterministic; only wall times vary. Each dopri5 row ends with the scipy/torch wall-time ratio (issue
target: >= 3 at matched accuracy). Then the time split of one solve (score, divergence, rest = solver) for both paths,
and last the spread of the Hutchinson estimators (one probe per sample) around the exact-divergence value.

Timing: torch runs on ``--threads`` threads and numpy's BLAS (the scipy path's stage arithmetic) is limited to the same
number; each wall time is the median of ``--repeats`` runs, the scipy and torch runs interleaved, so that load from other
jobs on a shared machine affects both paths alike.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: this repository's packages, not benchmarks/models.py as `models`


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 512])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rtol", type=float, default=1e-5)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="where --networks run (auto: CUDA when present); the exact-score rows run on the CPU")
    parser.add_argument("--skip-exact", action="store_true", help="leave out the exact-score rows")
    parser.add_argument("--networks", nargs="+", choices=["ddpmpp_vp", "ncsnpp_ve", "digits_ddpmpp"], default=[],
                        help="also time the likelihood of these score networks (network_rows)")
    parser.add_argument("--batch", type=int, default=64, help="--networks: images per batch")
    parser.add_argument("--compile", nargs="?", const="default", default="none",
                        choices=["none", "default", "reduce-overhead", "max-autotune"],
                        help="--networks: torch.compile the network (mode; 'default' when given bare)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    ARGS = parse_args()
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = str(ARGS.threads)  # read by numpy's BLAS when it is first loaded (by the imports below)

import torch  # noqa: E402

import samplers.likelihood  # noqa: E402
import sde_lib  # noqa: E402
from samplers.likelihood import log_likelihood  # noqa: E402

TOLERANCES = (2e-6, 3e-6, 5e-6, 7e-6, 1e-5, 1.5e-5, 2e-5, 3e-5, 5e-5, 7e-5, 1e-4, 1.5e-4, 2e-4, 3e-4, 5e-4, 1e-3)
"""The grid searched for dopri5's matched-accuracy tolerance (``--rtol`` is added to it)."""


def datasets() -> dict[str, tuple[sde_lib.GaussianMixture, str]]:
    shape = (3, 8, 8)
    d = math.prod(shape)
    gaussian = sde_lib.GaussianMixture(
        torch.ones(1, dtype=torch.float64),
        torch.linspace(-1, 1, d, dtype=torch.float64).reshape(1, *shape),
        torch.linspace(0.1, 1.5, d, dtype=torch.float64).reshape(1, *shape),
    )
    # the Gaussian's Jacobian is diagonal, where Rademacher probes are exact and cheap; the mixture needs the exact trace
    return {"gaussian-3x8x8": (gaussian, "rademacher"), "mixture-2d": (sde_lib.GaussianMixture.ring(), "exact")}


def run_one(sde, data, divergence, batch, method, rtol, seed=0, score_fn=None):
    """``(nfe, wall seconds, mean error, max error)`` of one log-likelihood solve at ``rtol = atol``."""
    x = data.sample(batch, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    start = time.perf_counter()
    logp, z, nfe = log_likelihood(
        sde, score_fn or data.score_fn(sde), x, divergence=divergence, method=method, rtol=rtol, atol=rtol,
        generator=torch.Generator().manual_seed(seed + 1),
    )
    wall = time.perf_counter() - start
    eps = 1e-5
    exact = data.log_prob_fn(sde)
    corrected = logp - sde.prior_logp(z) + exact(z, torch.full((batch,), sde.T, dtype=x.dtype))
    err = (corrected - exact(x, torch.full((batch,), eps, dtype=x.dtype))).abs()
    return nfe, wall, float(err.mean()), float(err.max())


def matched_tolerance(sde, data, divergence, batch, rtol, reference) -> float | None:
    """The loosest grid tolerance at which dopri5's mean and max errors are both <= ``reference``'s (see the module doc)."""
    grid = sorted(set(TOLERANCES) | {rtol})
    at = grid.index(rtol)

    def matches(tol: float) -> bool:
        _, _, mean_err, max_err = run_one(sde, data, divergence, batch, "dopri5", tol)
        return mean_err <= reference[2] and max_err <= reference[3]

    if matches(grid[at]):
        while at + 1 < len(grid) and matches(grid[at + 1]):
            at += 1
        return grid[at]
    for tol in reversed(grid[:at]):
        if matches(tol):
            return tol
    return None


def median_walls(runs: dict[str, Callable[[], tuple]], repeats: int) -> dict[str, float]:
    """Median wall time of each run, the runs interleaved ``repeats`` times (after one warm-up round)."""
    walls: dict[str, list[float]] = {name: [] for name in runs}
    for round_ in range(repeats + 1):
        for name, run in runs.items():
            wall = run()[1]
            if round_:
                walls[name].append(wall)
    return {name: statistics.median(w) for name, w in walls.items()}


def compare(sde_name, sde, data_name, data, divergence, batch, rtol, repeats, summary) -> None:
    scipy_row = run_one(sde, data, divergence, batch, "RK45", rtol)
    matched = matched_tolerance(sde, data, divergence, batch, rtol, scipy_row)
    runs = {"RK45": lambda: run_one(sde, data, divergence, batch, "RK45", rtol)}
    runs["same"] = lambda: run_one(sde, data, divergence, batch, "dopri5", rtol)
    if matched is not None and matched != rtol:
        runs["matched"] = lambda: run_one(sde, data, divergence, batch, "dopri5", matched)
    walls = median_walls(runs, repeats)
    rows = [(f"RK45 {rtol:.1e}", scipy_row, walls["RK45"], "")]
    same = run_one(sde, data, divergence, batch, "dopri5", rtol)
    rows.append((f"dopri5 {rtol:.1e}" + ("*" if matched == rtol else ""), same, walls["same"], "same tol"))
    if "matched" in runs:
        rows.append((f"dopri5 {matched:.1e}*", run_one(sde, data, divergence, batch, "dopri5", matched), walls["matched"], "matched"))
    for label, (nfe, _, mean_err, max_err), wall, kind in rows:
        ratio = f"{walls['RK45'] / wall:11.2f}" if kind else ""
        print(f"{data_name:15s} {sde_name:5s} {batch:5d} {label:15s} {nfe:5d} {wall * 1e3:8.1f} {mean_err:9.2e} {max_err:9.2e} {ratio}")
    matched_wall = walls["matched"] if "matched" in runs else walls["same"] if matched == rtol else None
    summary.append((data_name, sde_name, batch, matched, None if matched_wall is None else walls["RK45"] / matched_wall))


def time_split(sde, data, divergence, batch, methods, rtol, repeats) -> dict[str, tuple[float, float, float]]:
    """Median ``(score, divergence, rest)`` seconds of one solve per method (runs interleaved): the score function, the
    rest of the augmented ODE's right-hand side (the divergence's autograd pass and the drift's linear part), and
    everything else (the solver, including the packing of the state and the scipy path's numpy round trips)."""
    clock = {"score": 0.0, "rhs": 0.0}
    score_fn, rhs = data.score_fn(sde), samplers.likelihood._drift_and_divergence

    def timed_score(x, t):
        start = time.perf_counter()
        try:
            return score_fn(x, t)
        finally:
            clock["score"] += time.perf_counter() - start

    def timed_rhs(*args):
        start = time.perf_counter()
        try:
            return rhs(*args)
        finally:
            clock["rhs"] += time.perf_counter() - start

    splits: dict[str, list] = {method: [] for method in methods}
    with mock.patch.object(samplers.likelihood, "_drift_and_divergence", timed_rhs):
        for round_ in range(repeats + 1):
            for method in methods:
                clock.update(score=0.0, rhs=0.0)
                wall = run_one(sde, data, divergence, batch, method, rtol, score_fn=timed_score)[1]
                if round_:
                    splits[method].append((clock["score"], clock["rhs"] - clock["score"], wall - clock["rhs"]))
    return {method: tuple(statistics.median(column) for column in zip(*rows)) for method, rows in splits.items()}


def hutchinson_spread(sde, copies: int = 200) -> None:
    """Spread of the Hutchinson estimators on the 2-D mixture (non-diagonal Jacobian), against the exact divergence."""
    data = sde_lib.GaussianMixture.ring()
    points = data.sample(8, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    exact, _, _ = log_likelihood(sde, data.score_fn(sde), points, divergence="exact")
    print(f"\nHutchinson spread, 2-D mixture, VP, 8 points x {copies} probes (nats):")
    for divergence in ("rademacher", "gaussian"):
        x = points.repeat_interleave(copies, dim=0)
        logp, _, nfe = log_likelihood(sde, data.score_fn(sde), x, divergence=divergence, generator=torch.Generator().manual_seed(6))
        logp = logp.reshape(8, copies)
        bias = (logp.mean(1) - exact).abs().max()
        stderr = (logp.std(1) / copies**0.5).max()
        print(f"  {divergence:10s} std per sample {float(logp.std(1).mean()):.4f}; max |mean - exact| {float(bias):.4f} "
              f"(max SE {float(stderr):.4f}); NFE {nfe}")


def network_rows(key: str, args: argparse.Namespace) -> None:
    """Wall time, NFE and images/s of one probability-flow log-likelihood (dopri5, Rademacher divergence, ``--rtol``)
    of a batch of ``--batch`` random images under the network ``key`` (random weights of unit scale: the cost does
    not depend on the weights) on ``--device``, float32; on CUDA the peak memory. With ``--compile`` the first
    (compiling) evaluation of the score and its divergence is timed apart."""
    import models
    from configs import load_config
    from models.compiled import compile_network

    name = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device.replace("auto", "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device available")
    device = torch.device(name)
    path = {"ddpmpp_vp": "vp/cifar10_ddpmpp_continuous.py", "ncsnpp_ve": "ve/cifar10_ncsnpp_continuous.py",
            "digits_ddpmpp": "vp/digits_ddpmpp_continuous.py"}[key]
    config = load_config(ROOT / "configs" / path)
    config.device = str(device)
    sde = sde_lib.get_sde(config)
    torch.manual_seed(0)
    network = models.create_model(config)
    with torch.no_grad():
        for p in network.parameters():
            p.add_(0.05 * torch.randn_like(p))
    network = compile_network(network, args.compile)
    score_fn = models.ScoreModel(network, sde, models.parameterization_from_config(config, sde)).score_fn()
    shape = (args.batch, config.data.num_channels, config.data.image_size, config.data.image_size)
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0)).to(device) * 2 - 1

    def solve() -> tuple[int, float]:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        _, _, nfe = log_likelihood(sde, score_fn, x, rtol=args.rtol, atol=args.rtol,
                                   generator=torch.Generator(device).manual_seed(1))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return nfe, time.perf_counter() - start

    compiled = ""
    if args.compile != "none":  # one divergence evaluation compiles the score with autograd, as the solve calls it
        start = time.perf_counter()
        probe = x.clone().requires_grad_(True)
        with torch.enable_grad():
            torch.autograd.grad(score_fn(probe, torch.full((args.batch,), 0.5, device=device)).sum(), probe)
        compiled = f", torch.compile {args.compile!r}, compilation {time.perf_counter() - start:.1f} s"
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    nfe, wall = solve()
    peak = f", peak {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB" if device.type == "cuda" else ""
    print(f"\n{key} ({path}), batch {args.batch}, {device}, float32{compiled}: dopri5 rtol=atol={args.rtol:g}, "
          f"Rademacher divergence: NFE {nfe}, wall {wall:.2f} s, {args.batch / wall:.2f} images/s{peak}")


def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    if args.skip_exact:
        for key in args.networks:
            network_rows(key, args)
        return
    sdes = {"vp": sde_lib.VPSDE(), "subvp": sde_lib.subVPSDE(), "ve": sde_lib.VESDE(sigma_max=10.0)}
    print(f"torch {torch.__version__}, {args.threads} torch thread(s) and numpy BLAS thread(s), rtol=atol={args.rtol}, float64")
    print(f"wall = median of {args.repeats} runs, scipy and torch runs interleaved (load from other jobs hits both alike)")
    print("* = matched accuracy: mean and max error both <= RK45's; ratio = RK45 wall / dopri5 wall")
    print(f"{'data':15s} {'sde':5s} {'batch':>5s} {'solver':15s} {'NFE':>5s} {'wall ms':>8s} {'mean err':>9s} {'max err':>9s} {'scipy/torch':>11s}")
    summary: list = []
    for data_name, (data, divergence) in datasets().items():
        for sde_name, sde in sdes.items():
            for batch in args.batches:
                compare(sde_name, sde, data_name, data, divergence, batch, args.rtol, args.repeats, summary)

    print("\nscipy/torch wall-time ratio at matched accuracy (target >= 3):")
    for data_name, sde_name, batch, matched, ratio in summary:
        verdict = "no matching tolerance in the grid" if ratio is None else f"{ratio:5.2f}  ({'met' if ratio >= 3 else 'not met'})"
        tol = "" if matched is None else f"dopri5 {matched:.1e}"
        print(f"  {data_name:15s} {sde_name:5s} {batch:5d}  {tol:15s} {verdict}")

    print(f"\nTime split of one solve at rtol {args.rtol:.0e}, VP (ms; median of {args.repeats}, interleaved): score function | "
          "rest of the ODE right-hand side (divergence) | solver (all else)")
    for data_name, (data, divergence) in datasets().items():
        for batch in args.batches:
            splits = time_split(sdes["vp"], data, divergence, batch, ("dopri5", "RK45"), args.rtol, args.repeats)
            for method, (score, div, rest) in splits.items():
                total = score + div + rest
                print(f"  {data_name:15s} {batch:5d} {method:7s} total {total * 1e3:7.1f} = score {score * 1e3:6.1f} "
                      f"+ divergence {div * 1e3:6.1f} + solver {rest * 1e3:6.1f} ({100 * rest / total:4.1f}% solver)")
    hutchinson_spread(sdes["vp"])
    for key in args.networks:
        network_rows(key, args)


if __name__ == "__main__":
    main(ARGS)
