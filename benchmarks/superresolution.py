"""Super-resolution of the digits without training for it: 8x8 test digits -> 4x4 block means -> 8x8.

    python benchmarks/superresolution.py [--workdir runs/digits] [--num-images 32] [--particles 16] [--sr3-workdir W]

The run is the README's main job (``python main.py --config configs/vp/digits_ddpmpp_continuous.py --workdir
runs/digits``), an unconditional score model: its recorded config and the EMA weights of its latest numbered
checkpoint. The first ``--num-images`` test digits are reduced to the means of their 2x2 blocks and upsampled back by

* nearest: each low-resolution pixel repeated over its block (keeps the block means);
* bicubic: ``torch.nn.functional.interpolate(mode='bicubic')`` clipped to [0, 1] (does not keep them);
* replacement: :func:`samplers.controllable.pc_superresolve` with the PC settings of the run's config (reverse
  diffusion + one Langevin step at snr 0.16, N = 1000): 2000 score evaluations of batch ``--num-images``;
* smc: :func:`samplers.controllable.smc_superresolve`, ``--particles`` per image: 1000 evaluations of batch
  ``num-images * particles``;
* sr3 (with ``--sr3-workdir``): a run trained with ``config.model.conditioning = 'low_resolution'`` sampling its own
  conditional with its configured sampler (``jobs.controllable._sample_low_resolution_conditional``).

Printed per method: PSNR against the originals ([0, 1] range, outputs clipped to it; mean and standard error over
the images), the largest deviation of the outputs' block means from the input, the accuracy of the toolkit's digits
classifier (``sample_quality.digits``) on the outputs with its binomial standard error (and on the originals), the
score evaluations and the wall time; then the load average. ``--picture`` gets the first 16 images: rows originals,
low resolution (pixel repetition, which is also the nearest method's output), then one row per other method.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: this repository's packages, not benchmarks/models.py as `models`


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/digits", help="a trained unconditional digits run")
    parser.add_argument("--sr3-workdir", default=None, help="a digits run trained with model.conditioning=low_resolution")
    parser.add_argument("--num-images", type=int, default=32, help="first test digits super-resolved")
    parser.add_argument("--particles", type=int, default=16, help="SMC particles per image")
    parser.add_argument("--factor", type=int, default=2, help="side of the averaged blocks")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--picture", default=str(ROOT / "docs/images/digits_superresolve.png"))
    return parser.parse_args(argv)


if __name__ == "__main__":
    from base_lib.openmp import set_openmp_defaults

    ARGS = parse_args()
    set_openmp_defaults()
    os.environ["OMP_NUM_THREADS"] = str(ARGS.threads)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import data_lib  # noqa: E402
from jobs.controllable import _sample_low_resolution_conditional  # noqa: E402
from jobs.evaluation import latest_checkpoint, load_ema_weights  # noqa: E402
from jobs.experiment import build_experiment  # noqa: E402
from jobs.images import save_image_grid  # noqa: E402
from jobs.run_config import read_record  # noqa: E402
from sample_quality.digits import digits_predictions  # noqa: E402
from samplers.controllable import BlockAverage, pc_superresolve, smc_superresolve  # noqa: E402


def load_run(workdir: str):
    config = read_record(workdir)
    if config is None:
        raise SystemExit(f"{workdir} records no run (config.json): train it first (module docstring)")
    exp = build_experiment(config, workdir, "eval")
    step = load_ema_weights(exp, latest_checkpoint(exp))
    return exp, step


def test_digits(exp, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    batches = data_lib.iterate_batches(exp.test_ds, count, shuffle=False, uniform_dequantization=False,
                                       dtype=exp.batch_dtype)
    return next(iter(batches)).to(exp.device), exp.test_ds.labels[:count].cpu()


def figures(result: torch.Tensor, images: torch.Tensor, low: torch.Tensor, labels: torch.Tensor, operator: BlockAverage) -> dict:
    mse = (result.clamp(0, 1) - images).square().flatten(1).mean(dim=1).double()
    psnr = -10 * torch.log10(mse.clamp_min(1e-20))
    accuracy = float((digits_predictions(result.clamp(0, 1).cpu()) == labels).double().mean())
    return {"psnr": float(psnr.mean()), "psnr_se": float(psnr.std() / math.sqrt(len(psnr))),
            "deviation": float((operator.block_means(result) - low).abs().max()), "accuracy": accuracy,
            "accuracy_se": math.sqrt(accuracy * (1 - accuracy) / len(labels))}


def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    exp, step = load_run(args.workdir)
    operator = BlockAverage(args.factor)
    images, labels = test_digits(exp, args.num_images)
    low = operator.block_means(images)
    options = dict(predictor=str(exp.config.sampling.predictor), corrector=str(exp.config.sampling.corrector),
                   snr=float(exp.config.sampling.snr), n_steps=int(exp.config.sampling.n_steps_each))
    score_fn = exp.score_model.score_fn()
    rows: dict[str, tuple[torch.Tensor, int, float]] = {}

    def timed(name: str, run) -> None:
        start = time.perf_counter()
        with torch.no_grad():
            result, nfe = run()
        rows[name] = (result, nfe, time.perf_counter() - start)
        print(f"  {name}: {rows[name][2]:.0f} s", flush=True)

    timed("nearest", lambda: (operator.upsample(low), 0))
    timed("bicubic", lambda: (F.interpolate(low, scale_factor=args.factor, mode="bicubic").clamp(0, 1), 0))

    def replacement():
        generator = torch.Generator(exp.device).manual_seed(args.seed)
        x, nfe = pc_superresolve(exp.sde, score_fn, exp.scaler(low), args.factor, eps=exp.sampling_eps,
                                 generator=generator, **options)
        return exp.inverse_scaler(x), nfe

    def smc():
        generator = torch.Generator(exp.device).manual_seed(args.seed)
        x, nfe = smc_superresolve(exp.sde, score_fn, exp.scaler(low), args.factor, num_particles=args.particles,
                                  eps=exp.sampling_eps, generator=generator)
        return exp.inverse_scaler(x), nfe

    timed("replacement", replacement)
    timed(f"smc (K={args.particles})", smc)
    if args.sr3_workdir:
        sr3, sr3_step = load_run(args.sr3_workdir)
        generator = torch.Generator(sr3.device).manual_seed(args.seed)
        timed("sr3", lambda: _sample_low_resolution_conditional(sr3, images.to(sr3.device), generator))

    original_accuracy = float((digits_predictions(images.cpu()) == labels).double().mean())
    side = images.shape[-1]
    print(f"digits {args.factor}x super-resolution ({side // args.factor}x{side // args.factor} -> {side}x{side}), "
          f"{args.num_images} test digits, run {args.workdir} (step {step}); seed {args.seed}")
    print(f"{'method':<16} {'PSNR (dB)':>14} {'block-mean dev':>15} {'classifier acc':>16} {'NFE':>6} {'wall s':>7}")
    for name, (result, nfe, seconds) in rows.items():
        f = figures(result, images, low, labels, operator)
        print(f"{name:<16} {f['psnr']:>7.2f} +- {f['psnr_se']:.2f} {f['deviation']:>15.1e} "
              f"{f['accuracy']:>8.3f} +- {f['accuracy_se']:.3f} {nfe:>6d} {seconds:>7.0f}")
    print(f"classifier accuracy on the originals: {original_accuracy:.3f}")
    drawn = [name for name in rows if name != "nearest"]  # nearest is the low-resolution row itself
    picture = [images[:16], operator.upsample(low[:16])] + [rows[name][0][:16].clamp(0, 1) for name in drawn]
    path = save_image_grid(torch.cat(picture), args.picture, nrow=min(16, args.num_images))
    print(f"picture: {path} (rows: originals, low resolution, {', '.join(drawn)})")
    print(f"load average (1, 5, 15 min): {' '.join(f'{v:.2f}' for v in os.getloadavg())} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main(ARGS)
