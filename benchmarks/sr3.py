"""SR3 super-resolution of the test set by a trained run (digits, faces), against nearest and bicubic upsampling.

    python benchmarks/sr3.py [--workdir /work/runs/B_digits_sr3] [--repeats 8] [--threads 2]
                               [--clip-denoised config|on|off] [--measurement-consistency config|on|off]

The run is ``python main.py --config configs/vp/digits_sr3_continuous.py --workdir <workdir>`` (its recorded
config and the EMA weights of its latest checkpoint). Every test digit (8x8, levels k / 16) is reduced to its 2x2
block means (4x4) and brought back to 8x8 by:

* nearest: each block mean repeated (the network's own input signal);
* bicubic: ``F.interpolate(mode='bicubic')`` of the 4x4 image (Saharia et al. 2021 upsample with bicubic), clipped;
* SR3: one sample of the trained conditional model per digit, the configured sampler (``config.sampling``), seeded
  (``--clip-denoised on``: with its denoised estimate clipped to the data's range, :func:`samplers.clip_denoised`;
  ``--measurement-consistency on``: projected onto the images with the measured block means,
  :func:`samplers.consistent_denoised`; by default the run's own settings);
* SR3 mean of ``--repeats`` samples: a Monte-Carlo estimate of the posterior mean ``E[x | c]``, the estimator that
  minimises the MSE (a single sample's expected MSE is twice the posterior variance larger: PSNR favours means).

Printed for each: PSNR against the originals in ``[0, 1]`` (outputs clipped to it; mean and standard error over the
test digits), the paired PSNR difference to bicubic with its standard error, the digits classifier's accuracy
(:func:`sample_quality.digits_predictions`) on the outputs beside its accuracy on the originals, and how far the outputs' block means stray from the measured ones (consistency: 0 for nearest by
construction; bicubic interpolation does not keep block means; the samples keep them only as well as they learned). The load average is printed too: the machine is shared.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: this repository's packages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="/work/runs/B_digits_sr3", help="a trained digits SR3 run")
    parser.add_argument("--repeats", type=int, default=8, help="samples per digit for the posterior-mean estimate")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clip-denoised", choices=("config", "on", "off"), default="config",
                        help="config.sampling.clip_denoised (the denoised estimate kept in the data's range): the "
                             "run's own setting, or on / off")
    parser.add_argument("--measurement-consistency", choices=("config", "on", "off"), default="config",
                        help="config.sampling.measurement_consistency (the denoised estimate kept on the images with "
                             "the measured block means): the run's own setting, or on / off")
    args = parser.parse_args()

    import torch
    import torch.nn.functional as F

    from jobs import signal_conditioned
    from jobs.evaluation import latest_checkpoint, load_ema_weights
    from jobs.experiment import build_experiment
    from jobs.run_config import read_record
    from sample_quality import digits_predictions

    torch.set_num_threads(args.threads)
    workdir = Path(args.workdir)
    config = read_record(workdir)
    if config is None:
        raise SystemExit(f"{workdir} holds no config.json: train it first (python main.py --config "
                         "configs/vp/digits_sr3_continuous.py --workdir ...)")
    with config.unlocked():
        for field, choice in (("clip_denoised", args.clip_denoised), ("measurement_consistency", args.measurement_consistency)):
            if choice != "config":
                config.sampling[field] = choice == "on"
            elif field not in config.sampling:  # a run recorded before the field existed: its sampling had none
                config.sampling[field] = False
    exp = build_experiment(config, workdir, "eval")
    step = load_ema_weights(exp, latest_checkpoint(exp))
    lowres = exp.score_model.condition_map
    test = exp.test_ds
    originals = signal_conditioned.test_examples(exp.config, len(test))
    labels = test.labels
    low = lowres.downsample(originals)

    outputs = {
        "nearest": lowres.upsample(low),
        "bicubic": F.interpolate(low, scale_factor=lowres.factor, mode="bicubic", align_corners=False).clamp(0, 1),
    }
    generator = torch.Generator().manual_seed(args.seed)
    draws, nfe, start = [], 0, time.perf_counter()
    x0 = exp.scaler(originals)
    with torch.no_grad():
        for _ in range(max(1, args.repeats)):
            x, n = signal_conditioned.sample_given_conditions(exp, x0, generator)
            draws.append(exp.inverse_scaler(x).clamp(0, 1))
            nfe += n
    seconds = time.perf_counter() - start
    outputs["SR3 (one sample)"] = draws[0]
    outputs[f"SR3 (mean of {len(draws)})"] = torch.stack(draws).mean(0)

    def psnr_stats(images):
        values = signal_conditioned.psnr(images, originals)
        return values, *signal_conditioned.mean_and_stderr(values)

    bicubic_values = psnr_stats(outputs["bicubic"])[0]
    digits = test.name == "digits"  # the classifier's figures: digits only

    def accuracy(images) -> float:
        return float((digits_predictions(images) == labels).double().mean()) if digits else math.nan

    n, side = len(originals), originals.shape[-1]
    low_side = side // lowres.factor
    print(f"{test.name} test set: {n} images {side}x{side} from {lowres.factor}x{lowres.factor} block means "
          f"({low_side}x{low_side}); run {workdir} at step {step}; "
          f"sampler {exp.config.sampling.method} (nfe {exp.config.sampling.nfe}, clip_denoised "
          f"{exp.config.sampling.clip_denoised}, measurement_consistency {exp.config.sampling.measurement_consistency}), "
          f"{len(draws)} sample(s) per image, "
          f"{nfe} score evaluations in {seconds:.1f} s")
    if digits:
        print(f"classifier accuracy on the originals: {accuracy(originals):.4f}")
    print(f"{'method':<20} {'PSNR dB':>8} {'+- SE':>6} {'vs bicubic':>11} {'+- SE':>6} {'accuracy':>9} {'max |block mean - low|':>23}")
    for name, images in outputs.items():
        values, mean, stderr = psnr_stats(images)
        diff = values - bicubic_values
        d_mean, d_se = signal_conditioned.mean_and_stderr(diff)
        consistency = float((lowres.downsample(images) - low).abs().max())
        print(f"{name:<20} {mean:8.3f} {stderr:6.3f} {d_mean:+11.3f} {d_se:6.3f} {accuracy(images):9.4f} {consistency:23.4f}")
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores (shared machine), {args.threads} threads")


if __name__ == "__main__":
    main()
