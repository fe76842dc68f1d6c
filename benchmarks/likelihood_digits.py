"""Digits test-set bits/dim of a trained run: the 2021 reference's likelihood path against the accuracy-aware one.

    python benchmarks/likelihood_digits.py [--workdir runs/digits] [--threads 2] [--accuracy 1e-3] [--products]

The run is the README's main job (``python main.py --config configs/vp/digits_ddpmpp_continuous.py --workdir
runs/digits``): its recorded config and the EMA weights of its latest numbered checkpoint. Both paths solve the same
problems: every test batch is dequantized and gets its Rademacher probes once, from a generator seeded by the batch's
index, and both paths get those tensors, so the difference of their means is the solvers' alone.

* reference: scipy's RK45 at ``rtol = atol = 1e-5`` with one step size for the whole batch and the reverse-mode
  product, as the reference's ``get_likelihood_fn``;
* fast (one path per ``--accuracy``): the torch Dormand--Prince 5(4) with every sample's own steps, at the tolerance
  :func:`samplers.likelihood.choose_tolerance` picks for that accuracy (bits/dim) on the first ``--check`` problems
  (the check's solves are counted in the fast path's wall time and evaluations), and ``--product``;
* fixed (one path per ``--rtol``): dopri5 at that tolerance, its error estimated on the same ``--check`` problems
  (:func:`samplers.likelihood.solver_error`, counted), as the eval job does without ``eval.likelihood_accuracy``;
* grid (one path per ``--steps``): the classic Runge--Kutta method (``rk4``) with that many steps on the grid uniform
  in the log-SNR, shifted by a random fraction of a step per example (:func:`samplers.likelihood.likelihood_grid`),
  its error estimated the same way (against twice the steps, counted).

The batches are interleaved (reference batch ``i``, then each fast path's batch ``i``) so that load from other processes falls on
both paths alike. Printed: wall time, NFE, mean bits/dim, its standard error (over test examples), the solver error
estimate, the difference of the means in units of the standard error, the wall-time ratio and the load average.

``--time-spectrum`` only prints how the probability-flow drift oscillates in ``t`` (:func:`time_spectrum`).

``--products`` also times the divergence products ``v^T J v`` per evaluation, reverse mode (``vjp``) and forward
mode (``jvp``), with and without the Winograd convolutions, beside the forward pass alone, on the digits network and
on the full-size CIFAR-10 DDPM++ (``configs/vp/cifar10_ddpmpp_continuous.py``, initial weights) at ``--cifar-batch``.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: this repository's packages, not benchmarks/models.py as `models`


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/digits", help="a trained digits run (config.json, checkpoints/)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--accuracy", type=float, nargs="*", default=[1e-2],
                        help="fast paths: mean per-example solver error asked for, bits/dim (one path each)")
    parser.add_argument("--rtol", type=float, nargs="*", default=[],
                        help="fast paths at these fixed tolerances, each with the error estimate on --check problems")
    parser.add_argument("--steps", type=int, nargs="*", default=[],
                        help="fixed-grid paths: rk4 with these steps on the log-SNR grid, each with the error estimate")
    parser.add_argument("--check", type=int, default=4, help="fast path: problems the tolerance is chosen on")
    parser.add_argument("--method", default="dopri5", help="fast path: the torch solver (dopri5, bosh3, or rk4: steps "
                        "chosen from the accuracy)")
    parser.add_argument("--product", default="vjp", choices=["vjp", "jvp"], help="fast path: the divergence product")
    parser.add_argument("--batch", type=int, default=None, help="examples per batch; default: the run's eval.batch_size")
    parser.add_argument("--limit", type=int, default=None, help="use only the first LIMIT test examples")
    parser.add_argument("--seed", type=int, default=0, help="seeds the dequantization and probes")
    parser.add_argument("--products", action="store_true", help="also time the divergence products (module docstring)")
    parser.add_argument("--time-spectrum", action="store_true",
                        help="only print how the drift oscillates in t (time_spectrum)")
    parser.add_argument("--products-only", action="store_true", help="only time the divergence products")
    parser.add_argument("--cifar-batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="--products: timed rounds (median)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    from base_lib.openmp import set_openmp_defaults

    ARGS = parse_args()
    if ARGS.method == "rk4" and ARGS.rtol:
        raise SystemExit("--rtol paths are for the adaptive methods; with --method rk4 give --steps")
    set_openmp_defaults()  # waiting OpenMP threads sleep, as in main.py: a shared machine does not stall both paths
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = str(ARGS.threads)  # numpy's BLAS (the scipy path's stage arithmetic) reads these at load

import torch  # noqa: E402

import data_lib  # noqa: E402
from configs import load_config  # noqa: E402
from data_lib.dequantize import uniform_dequantize  # noqa: E402
from jobs.evaluation import latest_checkpoint, load_ema_weights  # noqa: E402
from jobs.experiment import build_experiment  # noqa: E402
from jobs.run_config import read_record  # noqa: E402
from models.winograd import winograd_disabled  # noqa: E402
from samplers.likelihood import (  # noqa: E402
    _drift_and_divergence,
    bits_per_dim,
    choose_tolerance,
    grid_offsets,
    hutchinson_probe,
    solver_error,
)
from samplers.ode import probability_flow_drift  # noqa: E402

REFERENCE = {"method": "RK45", "rtol": 1e-5, "atol": 1e-5, "product": "vjp"}


def full_precision(score_model):
    """The score model with the network called in full precision, as the eval job's likelihood (sampling may autocast)."""
    return score_model.in_precision("no") if hasattr(score_model, "in_precision") else score_model


def load_run(workdir: str):
    config = read_record(workdir)
    if config is None:
        raise SystemExit(f"{workdir} holds no config.json: train it first (python main.py --config "
                         "configs/vp/digits_ddpmpp_continuous.py --workdir runs/digits)")
    exp = build_experiment(config, workdir, "eval")
    step = load_ema_weights(exp, latest_checkpoint(exp))
    return exp, step


def problems(exp, batch_size: int, limit: int | None, seed: int):
    """``(y, probe, offset)`` per test batch: dequantized data in the model's space, Rademacher probes and the fixed-grid
    solver's grid offsets, seeded per batch."""
    count = 0
    for index, batch in enumerate(data_lib.iterate_batches(exp.test_ds, batch_size, shuffle=False, uniform_dequantization=False)):
        if limit is not None:
            batch = batch[: max(0, limit - count)]
            if batch.shape[0] == 0:
                return
        count += batch.shape[0]
        generator = torch.Generator().manual_seed(seed * 1_000_003 + index)
        y = exp.scaler(uniform_dequantize(batch.float(), exp.test_ds.num_levels, generator))
        probe = hutchinson_probe(y, "rademacher", generator)
        yield y, probe, grid_offsets(y, generator)


def mean_and_stderr(values: torch.Tensor) -> tuple[float, float]:
    values = values.to(torch.float64)
    return float(values.mean()), float(values.std() / math.sqrt(values.numel()))


def compare(exp, args: argparse.Namespace) -> None:
    score_fn = full_precision(exp.score_model).score_fn()
    n_bins, dim = exp.test_ds.num_levels, math.prod(exp.data_shape)
    nats_per_bit_dim = dim * math.log(2.0)
    batch_size = args.batch or int(exp.config.eval.batch_size)
    eps = float(exp.config.eval.likelihood_eps)
    common = {"n_bins": n_bins, "inverse_scaler": exp.inverse_scaler, "eps": eps, "divergence": "rademacher"}
    batches = list(problems(exp, batch_size, args.limit, args.seed))
    load_start = os.getloadavg()

    # each fast path's tolerance, from the accuracy asked for, on the first problems of the first batch (counted)
    paths = {"reference": dict(REFERENCE)}
    walls, nfes, choices = {"reference": 0.0}, {"reference": 0}, {}
    y0, probe0, offset0 = batches[0]

    def grid(method: str, offset: torch.Tensor) -> dict:
        """The fixed-grid solver's offsets for these problems; nothing for an adaptive one."""
        return {"grid_offset": offset} if method == "rk4" else {}

    for accuracy in args.accuracy:
        name = f"fast {accuracy:.0e}"
        start = time.perf_counter()
        choices[name] = choose_tolerance(
            exp.sde, score_fn, y0[: args.check], accuracy * nats_per_bit_dim, probe=probe0[: args.check],
            method=args.method, eps=eps, product=args.product, **grid(args.method, offset0[: args.check]),
        )
        walls[name], nfes[name] = time.perf_counter() - start, choices[name].nfe
        paths[name] = {"method": args.method, "rtol": choices[name].rtol, "atol": choices[name].atol, "product": args.product,
                       "steps": choices[name].steps}
        chosen = f"{choices[name].steps} steps" if choices[name].steps else f"rtol = atol = {choices[name].rtol:.0e}"
        print(f"  {name}: {chosen} chosen on {choices[name].samples} problems "
              f"({choices[name].nfe} evaluations, {walls[name]:.1f} s, counted below)", flush=True)

    # fixed paths: a tolerance or a grid, each with its error estimated on the same problems (counted)
    fixed = [(f"fixed {rtol:.0e}", {"method": args.method, "rtol": rtol, "atol": rtol}) for rtol in args.rtol]
    fixed += [(f"rk4 {steps}", {"method": "rk4", "steps": steps}) for steps in args.steps]
    for name, options in fixed:
        start = time.perf_counter()
        choices[name] = solver_error(
            exp.sde, score_fn, y0[: args.check], probe=probe0[: args.check], eps=eps, product=args.product, **options,
            **grid(options["method"], offset0[: args.check]),
        )
        walls[name], nfes[name] = time.perf_counter() - start, choices[name].nfe
        paths[name] = {**options, "product": args.product}
        print(f"  {name}: error estimated on {choices[name].samples} problems ({choices[name].nfe} evaluations, "
              f"{walls[name]:.1f} s, counted below)", flush=True)

    values: dict[str, list[torch.Tensor]] = {name: [] for name in paths}
    for index, (y, probe, offset) in enumerate(batches):
        for name, options in paths.items():
            start = time.perf_counter()
            bpd, _, nfe = bits_per_dim(exp.sde, score_fn, y, probe=probe, **common, **options, **grid(options["method"], offset))
            walls[name] += time.perf_counter() - start
            nfes[name] += nfe
            values[name].append(bpd.detach())
        so_far = ", ".join(f"{name} {wall:.1f} s" for name, wall in walls.items())
        print(f"  batch {index + 1}/{len(batches)} ({y.shape[0]} examples): {so_far}; load {os.getloadavg()[0]:.2f}", flush=True)
    load_end = os.getloadavg()

    reference = torch.cat(values["reference"]).double()
    ref_mean, ref_se = mean_and_stderr(reference)
    print(f"\n{reference.numel()} test examples, batches of {batch_size}, the same dequantization and probes for every "
          f"path; load average at start {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}, at end "
          f"{load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f} ({os.cpu_count()} cores)")
    print("solver err: the fast path's estimate of its mean per-example error (choose_tolerance, bits/dim); "
          "diff/SE: (mean - reference mean) / reference SE; ratio: reference wall / wall")
    print(f"{'path':11s} {'solver':24s} {'wall s':>8s} {'NFE':>6s} {'mean bpd':>9s} {'SE':>8s} {'solver err':>10s} "
          f"{'diff/SE':>8s} {'mean|diff|':>10s} {'ratio':>6s}")
    for name, options in paths.items():
        bpd = torch.cat(values[name]).double()
        mean, se = mean_and_stderr(bpd)
        resolution = f"{options['steps']} steps" if options.get("steps") else f"{options['rtol']:.0e}"
        solver = f"{options['method']} {resolution} {options['product']}"
        err = f"{choices[name].error / nats_per_bit_dim:10.2e}" if name in choices else f"{'-':>10s}"
        print(f"{name:11s} {solver:24s} {walls[name]:8.1f} {nfes[name]:6d} {mean:9.5f} {se:8.5f} {err} "
              f"{(mean - ref_mean) / ref_se:+8.3f} {float((bpd - reference).abs().mean()):10.2e} "
              f"{walls['reference'] / walls[name]:6.2f}")
    for name in choices:
        diff = float(torch.cat(values[name]).double().mean() - ref_mean)
        ratio = walls["reference"] / walls[name]
        print(f"{name}: wall-time ratio {ratio:.2f} (target >= 3: {'met' if ratio >= 3 else 'not met'}), "
              f"|mean difference| {abs(diff) / ref_se:.3f} SE (target <= 0.1: {'met' if abs(diff) <= 0.1 * ref_se else 'not met'})")


def time_products(name: str, score_model, batch: int, shape: tuple[int, ...], sde, repeats: int) -> None:
    """Median milliseconds per evaluation of the forward pass and of ``(drift, v^T J v)`` by each product."""
    score_fn = full_precision(score_model).score_fn()
    drift_fn = probability_flow_drift(sde, score_fn)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn((batch, *shape), generator=generator)
    probe = hutchinson_probe(x, "rademacher", generator)
    t = torch.full((batch,), 0.5)

    def forward():
        with torch.no_grad():
            return drift_fn(t, x), None

    calls = {"forward only": forward,
             "vjp": lambda: _drift_and_divergence(drift_fn, t, x, probe, "vjp"),
             "jvp": lambda: _drift_and_divergence(drift_fn, t, x, probe, "jvp")}
    results, times = {}, {}
    for winograd in (True, False):
        samples = {key: [] for key in calls}
        for round_ in range(repeats + 1):
            for key, call in calls.items():
                with (winograd_disabled() if not winograd else contextlib.nullcontext()):
                    start = time.perf_counter()
                    out = call()
                    elapsed = time.perf_counter() - start
                if round_:
                    samples[key].append(elapsed)
                results[(key, winograd)] = out
        for key in calls:
            times[(key, winograd)] = 1e3 * statistics.median(samples[key])
    reference = results[("vjp", False)][1]
    for (key, winograd), ms in times.items():
        div = results[(key, winograd)][1]
        agree = "" if div is None else f"  max |div - div(vjp, direct)| / max |div| = {float((div - reference).abs().max() / reference.abs().max()):.1e}"
        print(f"  {name:26s} batch {batch:3d}  {key:13s} Winograd {'on ' if winograd else 'off'} {ms:9.1f} ms{agree}")


def products(exp, args: argparse.Namespace) -> None:
    print(f"\nDivergence products v^T J v per evaluation (median of {args.repeats}; load {os.getloadavg()[0]:.2f}). "
          "Winograd applies only without autograd, so it can only speed up the forward pass alone:")
    time_products("digits DDPM++ (trained)", exp.score_model, int(exp.config.eval.batch_size), exp.data_shape, exp.sde, args.repeats)
    cifar = load_config(ROOT / "configs/vp/cifar10_ddpmpp_continuous.py")
    cifar.device = "cpu"
    cifar_exp = build_experiment(cifar, ROOT / "runs/_unused", "sample")
    cifar_exp.model.eval()
    torch.set_num_threads(args.threads)
    time_products("CIFAR-10 DDPM++ (initial)", cifar_exp.score_model, args.cifar_batch, cifar_exp.data_shape, cifar_exp.sde,
                  max(1, args.repeats // 2))


def time_spectrum(exp, args: argparse.Namespace) -> None:
    """How smooth the probability-flow drift is in ``t``: at 4 fixed test examples, the drift on 601 times in each of
    three windows of width 0.03, less a degree-8 polynomial fit in ``t``; the RMS of what is left and the frequencies
    (cycles per unit ``t``) where it is largest. The continuous DDPM++ embeds ``999 t`` with sinusoids of frequencies up
    to 1 rad per unit, that is ``999 / (2 pi) = 159`` cycles per unit ``t`` (the frequency resolution here is 1/0.03)."""
    import numpy as np

    from samplers.common import CountingScoreFn

    flow = probability_flow_drift(exp.sde, CountingScoreFn(full_precision(exp.score_model).score_fn()))
    x = next(problems(exp, 4, 4, args.seed))[0]
    print(f"\nprobability-flow drift in t at 4 test examples (degree-8 fit removed; top embedding frequency "
          f"{999 / (2 * math.pi):.0f} cycles per unit t):")
    for low in (0.01, 0.1, 0.3):
        times = torch.linspace(low, low + 0.03, 601, dtype=torch.float64)
        with torch.no_grad():
            drift = torch.stack([flow(torch.full((4,), float(t)), x) for t in times]).flatten(1).double().numpy()
        u = (times.numpy() - times.numpy().mean()) / 0.015
        basis = np.vander(u, 9)
        residual = drift - basis @ np.linalg.lstsq(basis, drift, rcond=None)[0]
        spectrum = np.abs(np.fft.rfft(residual, axis=0)).mean(1)
        top = np.fft.rfftfreq(601, d=0.03 / 600)[np.argsort(spectrum)[-3:][::-1]]
        print(f"  t in [{low:.2f}, {low + 0.03:.2f}]: drift RMS {np.sqrt((drift**2).mean()):.3f}, left after the fit "
              f"{np.sqrt((residual**2).mean()):.2e}, largest at {', '.join(f'{f:.0f}' for f in top)} cycles per unit t")


def main(args: argparse.Namespace) -> None:
    exp, step = load_run(args.workdir)
    exp.model.eval()
    torch.set_num_threads(args.threads)  # after the build, which applies the run's own thread setting
    print(f"run {args.workdir} (step {step}), torch {torch.__version__}, {torch.get_num_threads()} torch thread(s); "
          f"fast path(s) {args.method}, accuracy {args.accuracy} bits/dim, fixed rtol {args.rtol}, rk4 steps {args.steps}, product {args.product}")
    if args.time_spectrum:
        time_spectrum(exp, args)
        return
    if not args.products_only:
        compare(exp, args)
    if args.products or args.products_only:
        products(exp, args)


if __name__ == "__main__":
    main(ARGS)
