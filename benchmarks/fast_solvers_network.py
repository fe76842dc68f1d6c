"""Few-step options on a trained network: the fixed default and the tuned choice against the converged ODE.

    python benchmarks/fast_solvers_network.py [--workdir runs/digits] [--nfe 5 10 20 30] [--pilot 64] [--most N]
        [--fresh 128] [--top 3] [--threads 2] [--public-unipc DIR]

The run is a trained workdir (the README's main job: ``python main.py --config configs/vp/digits_ddpmpp_continuous.py
--workdir runs/digits``), read with its recorded config and the EMA weights of its latest checkpoint; the score is
the one its sampling rounds follow. For each NFE, :func:`samplers.tune_fast_sample` ranks every option combination
of ``fast_sample`` on ``--pilot`` prior samples (seed 1), as ``config.sampling.fast_tuning`` does (with ``--most``: a
screened pilot of ``--most`` samples, every combination on the first ``--pilot``, as the config's default pilot).
Then the fixed default, the tuned choice and the next ``--top`` combinations of the pilot's ranking (a screened
pilot's: by its estimate over all its samples) are solved from ``--fresh``
other prior samples (seed 2) and compared with one converged solve from those (DPM-Solver-3 + UniC on ``logSNR``
steps, doubled until two solves differ by at most 1/10 of the smallest error measured): a choice that was lucky on
the pilot shows there. The exact-score benchmark (``benchmarks/fast_solvers.py``) has no network error; this one
has the network's, which is what samples are drawn with.

Printed per NFE: the pilot's RMS errors (fixed default, tuned) and its cost, and the fresh samples' RMS errors of
each solved row with its ratio to the tuned row's. With ``--public-unipc DIR`` (a folder holding ``uni_pc.py`` of
github.com/wl-zhao/UniPC, which is not a dependency) public UniPC and ``fast_sample`` with the same options solve
from the same fresh samples, against the same reference.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run as a script: this repository's packages, not benchmarks/models.py as `models`

from jobs.evaluation import latest_checkpoint, load_ema_weights  # noqa: E402
from jobs.experiment import build_experiment  # noqa: E402
from jobs.run_config import read_record  # noqa: E402
from samplers import fast_sample  # noqa: E402
from samplers.fast_tuning import (  # noqa: E402
    REFERENCE_OPTIONS, FastSolverOptions, fast_solver_grid, squared_errors, tune_fast_sample,
)
from samplers.from_config import followed_score  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/digits", help="a trained run (config.json, checkpoints/)")
    parser.add_argument("--nfe", type=int, nargs="+", default=[5, 10, 20, 30])
    parser.add_argument("--pilot", type=int, default=64, help="pilot samples of the tuning (seed 1)")
    parser.add_argument("--most", type=int, default=None,
                        help="a screened pilot of this many samples, every combination on the first --pilot")
    parser.add_argument("--fresh", type=int, default=128, help="other samples the chosen rows are re-measured on (seed 2)")
    parser.add_argument("--top", type=int, default=3, help="rows of the pilot's ranking re-measured after the tuned one")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--public-unipc", default=None, metavar="DIR",
                        help="a folder with uni_pc.py of github.com/wl-zhao/UniPC: also solve with it, beside ours")
    return parser.parse_args(argv)


def rms(x: torch.Tensor, reference: torch.Tensor) -> float:
    return math.sqrt(float(squared_errors(x, reference).mean()))


def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    config = read_record(args.workdir)
    if config is None:
        raise SystemExit(f"{args.workdir} holds no config.json: train it first (module docstring)")
    exp = build_experiment(config, args.workdir, "sample")
    step = load_ema_weights(exp, latest_checkpoint(exp))
    score = followed_score(exp.config, exp.sde, None)(exp.model)
    shape = (args.fresh, *exp.data_shape)
    print(f"run {args.workdir} (step {step}), {exp.sde!r}, eps {exp.sampling_eps}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s); load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    with torch.no_grad():
        fresh = exp.sde.prior_sampling(shape, generator=torch.Generator().manual_seed(2))
        choices = {}
        for nfe in args.nfe:
            start = time.perf_counter()
            pilot = (args.pilot if args.most is None else args.most, *exp.data_shape)
            choices[nfe] = tune_fast_sample(exp.sde, score, pilot, nfe, eps=exp.sampling_eps,
                                            generator=torch.Generator().manual_seed(1),
                                            first_points=None if args.most is None else args.pilot)
            c = choices[nfe]
            print(f"NFE {nfe:3d}: pilot ({c.first_points} of {c.pilot_points}) RMS fixed default {c.default_rms:.4g}, "
                  f"tuned {c.rms:.4g} "
                  f"({c.options.label()}, lead {c.lead:.1f} SE); "
                  f"reference {c.reference_steps} steps; {c.evaluations} evaluations, "
                  f"{time.perf_counter() - start:.0f} s", flush=True)

        def solve(options: dict, nfe: int) -> torch.Tensor:
            return fast_sample(exp.sde, score, shape, nfe=nfe, eps=exp.sampling_eps, x_init=fresh, **options)[0]

        rows: dict[int, list[tuple[str, torch.Tensor]]] = {}
        for nfe, choice in choices.items():
            ranking = choice.screened or choice.errors
            labels = [FastSolverOptions.default(exp.sde, nfe).label()] + [label for label, _ in ranking[: 1 + args.top]]
            by_label = {o.label(): o for o in _grid_with_default(exp.sde, nfe)}
            rows[nfe] = [(label, solve(by_label[label].kwargs(), nfe)) for label in dict.fromkeys(labels)]
        steps, coarse, fine = 512, solve(REFERENCE_OPTIONS, 512), solve(REFERENCE_OPTIONS, 1024)
        while True:  # the tuning's reference rule, against the smallest error of the rows solved
            smallest = min(rms(x, fine) for solved in rows.values() for _, x in solved)
            difference = rms(coarse, fine)
            if difference <= 0.1 * smallest or 2 * steps >= 4096:
                break
            steps, coarse, fine = 2 * steps, fine, solve(REFERENCE_OPTIONS, 4 * steps)
        reference = fine
        print(f"\nfresh samples ({args.fresh}): reference {2 * steps} steps, vs {steps} steps RMS {difference:.2g} "
              f"(smallest row error {smallest:.3g})")
        print(f"  {'NFE':>4s}  {'row':40s} {'fresh RMS':>10s} {'/ tuned':>8s}")
        for nfe, solved in rows.items():
            tuned = rms(dict(solved)[choices[nfe].options.label()], reference)
            for index, (label, x) in enumerate(solved):
                error = rms(x, reference)
                role = " ".join(name for name, yes in (("default", index == 0),
                                                      ("tuned", label == choices[nfe].options.label())) if yes)
                print(f"  {nfe:4d}  {label:40s} {error:10.4g} {error / tuned:8.2f}  {role}")
    if args.public_unipc:
        compare_public_unipc(args, exp, score, fresh, reference)
    print(f"\nload average at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def compare_public_unipc(args: argparse.Namespace, exp, score, fresh: torch.Tensor, reference: torch.Tensor) -> None:
    """Public UniPC (multistep, noise prediction, ``time_quadratic``, ``lower_order_final``) and ``fast_sample`` with
    the same options, from the same fresh samples, against the same reference: RMS errors and their difference."""
    sys.path.insert(0, args.public_unipc)
    import uni_pc  # noqa: E402  (the public file, run beside ours, not part of this toolkit)

    sde = exp.sde
    beta_min, beta_max = sde.schedule.beta_min, sde.schedule.beta_max  # a linear VP schedule
    schedule = uni_pc.NoiseScheduleVP("linear", continuous_beta_0=beta_min, continuous_beta_1=beta_max)

    def noise_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        sigma = sde.marginal_coeffs(t)[1]
        return -sigma.reshape(-1, *([1] * (x.ndim - 1))) * score(x, t)

    model_fn = uni_pc.model_wrapper(noise_model, schedule, model_type="noise")
    print(f"\npublic UniPC ({args.public_unipc}/uni_pc.py) beside fast_sample, noise prediction, time_quadratic, "
          f"lower_order_final, from the same {fresh.shape[0]} fresh samples")
    print(f"  {'NFE':>4s} {'order':>5s} {'variant':>7s} {'public RMS':>11s} {'ours RMS':>10s} {'|public - ours|':>16s}")
    with torch.no_grad():
        for nfe in args.nfe:
            for order in (2, 3):
                for variant in ("bh1", "bh2"):
                    solver = uni_pc.UniPC(model_fn, schedule, algorithm_type="noise_prediction", variant=variant)
                    with contextlib.redirect_stdout(io.StringIO()):  # it prints at its last step
                        public = solver.sample(fresh.clone(), steps=nfe, t_start=sde.T, t_end=exp.sampling_eps,
                                               order=order, skip_type="time_quadratic", method="multistep",
                                               lower_order_final=True)
                    ours = fast_sample(sde, score, fresh.shape, nfe=nfe, eps=exp.sampling_eps, x_init=fresh,
                                       method="dpm_solver", order=order, prediction="noise", corrector=variant,
                                       schedule="time_quadratic", lower_order_final=True)[0]
                    print(f"  {nfe:4d} {order:5d} {variant:>7s} {rms(public, reference):11.4g} "
                          f"{rms(ours, reference):10.4g} {rms(public, ours):16.2g}", flush=True)


def _grid_with_default(sde, nfe: int) -> list[FastSolverOptions]:
    return [FastSolverOptions.default(sde, nfe)] + fast_solver_grid()


if __name__ == "__main__":
    main(parse_args())
