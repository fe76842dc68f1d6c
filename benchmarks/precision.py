"""bf16 against float32 on this machine: does bf16 autocast use fast matrix units here?

Prints the CPU capability torch dispatches to and oneDNN's bf16 support (AVX512-BF16 / AMX), then, side by side in
one run, the time of float32 and of ``torch.autocast(bfloat16)`` for 3x3 convolutions of a few shapes and for the
README main job's network (``configs/vp/digits_ddpmpp_continuous.py``: forward, and forward + backward, batch 64),
with their ratios. Without bf16 units oneDNN has no bf16 convolution and torch uses its reference kernels
(``aten::_slow_conv2d_forward`` in a profile): bf16 is then many times slower, which is why the toolkit only
recommends bf16 where :func:`train_lib.steps.native_bf16` is true.

With ``--workdir`` of a trained digits run (the README's main job writes ``runs/digits``), it also samples that run's
last checkpoint (EMA weights) with the run's sampler in float32 and in bf16 from the same prior noise, side by side:
wall time and digits FID / class coverage of ``--samples`` samples each, and the FID of float32 sampling with other
noise (another seed), the noise level of the FID at this number of samples.

    python benchmarks/precision.py [--threads 2] [--repeats 5] [--workdir runs/digits --samples 640]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: this repository's packages, not benchmarks/models.py as `models`

import configs  # noqa: E402
import models  # noqa: E402
import sde_lib  # noqa: E402
from models.precision import native_bf16  # noqa: E402

CONV_SHAPES = ((64, 32, 8), (8, 128, 32), (8, 256, 16))  # (batch, channels, size)


def best_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * min(times)


def both(fn, repeats: int) -> tuple[float, float]:
    """(float32 ms, bf16 autocast ms) of ``fn``, interleaved."""
    fp32 = best_ms(fn, repeats)
    with torch.autocast("cpu", torch.bfloat16):
        bf16 = best_ms(fn, repeats)
    return fp32, bf16


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workdir", type=Path, help="a trained digits run: compare float32 and bf16 sampling")
    parser.add_argument("--samples", type=int, default=640, help="samples per precision (batches of eval.batch_size)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"oneDNN bf16 {native_bf16(torch.device('cpu'))}, load average {os.getloadavg()[0]:.2f}")
    print(f"{'case':40s} {'float32 ms':>11s} {'bf16 ms':>9s} {'bf16/fp32':>10s}")
    with torch.no_grad():
        for batch, channels, size in CONV_SHAPES:
            conv = torch.nn.Conv2d(channels, channels, 3, padding=1)
            x = torch.randn(batch, channels, size, size)
            fp32, bf16 = both(lambda: conv(x), args.repeats)
            print(f"{f'conv3x3 {channels}ch {size}x{size}, batch {batch}':40s} {fp32:11.2f} {bf16:9.2f} {bf16 / fp32:10.2f}")
    config = configs.load_config("configs/vp/digits_ddpmpp_continuous.py")
    torch.manual_seed(0)
    score_model = models.ScoreModel.from_config(config, models.create_model(config), sde_lib.get_sde(config))
    x, t = torch.randn(64, 1, 8, 8), torch.rand(64) * 0.9 + 0.05
    with torch.no_grad():
        fp32, bf16 = both(lambda: score_model.score(x, t), args.repeats)
    print(f"{'digits DDPM++ forward, batch 64':40s} {fp32:11.2f} {bf16:9.2f} {bf16 / fp32:10.2f}")

    def step() -> None:
        score_model.score(x, t, train=True).float().square().mean().backward()

    fp32, bf16 = both(step, args.repeats)
    print(f"{'digits DDPM++ forward+backward, batch 64':40s} {fp32:11.2f} {bf16:9.2f} {bf16 / fp32:10.2f}")
    if args.workdir is not None:
        compare_sampling(args.workdir, args.samples)


def load_sampler(workdir: Path, mixed_precision: str):
    """The run's experiment for sampling its last checkpoint (EMA weights) in ``mixed_precision``."""
    from jobs.experiment import build_experiment
    from jobs.run_config import read_record
    from train_lib import restore_checkpoint

    config = read_record(workdir)
    if config is None:
        raise SystemExit(f"--workdir {workdir}: no config.json; train a run first (README main job)")
    config.sampling.mixed_precision = mixed_precision
    checkpoints = sorted((workdir / "checkpoints").glob("checkpoint_*.pth"), key=lambda p: int(p.stem.split("_")[1]))
    if not checkpoints:
        raise SystemExit(f"--workdir {workdir}: no checkpoints/checkpoint_*.pth")
    exp = build_experiment(config, workdir / "precision_benchmark", "sample")
    restore_checkpoint(checkpoints[-1], exp.state)
    exp.ema.copy_to(exp.model.parameters())
    return exp


def compare_sampling(workdir: Path, count: int) -> None:
    """Each row samples ``count`` images in batches of the run's ``eval.batch_size``, batch ``b`` of a row drawn with
    seed ``seed * 1000 + b``. The rows take turns batch by batch, so load from other processes falls on all alike;
    the bf16 / float32 ratio is the median over batches of the ratio of the two same-noise batches' times."""
    import statistics

    from sample_quality import digits_metrics

    rows = (("float32, seed 0", "no", 0), ("bf16, seed 0 (same noise)", "bf16", 0), ("float32, seed 1", "no", 1))
    samplers = {label: load_sampler(workdir, mode) for label, mode, _ in rows}
    batch = int(next(iter(samplers.values())).config.eval.batch_size)
    images = {label: [] for label, _, _ in rows}
    seconds = {label: [] for label, _, _ in rows}
    nfe = {}
    print(f"\nsampling {workdir}: {count} samples per row, the run's sampler, EMA weights, rows interleaved batch by "
          f"batch; load average {os.getloadavg()[0]:.2f}")
    for b in range(-(-count // batch)):
        for label, _, seed in rows:
            exp = samplers[label]
            start = time.perf_counter()
            x, nfe[label] = exp.sampling_fn(exp.model, generator=torch.Generator().manual_seed(seed * 1000 + b))
            seconds[label].append(time.perf_counter() - start)
            images[label].append(x)
    print(f"{'sampling':28s} {'wall s':>7s} {'NFE':>4s} {'FID':>7s} {'coverage':>9s} {'max |x - x_fp32|':>17s}")
    reference = torch.cat(images[rows[0][0]])[:count]
    for label, _, seed in rows:
        x = torch.cat(images[label])[:count]
        metrics = digits_metrics(x.clamp(0, 1))
        diff = f"{float((x - reference).abs().max()):17.4f}" if seed == 0 and label != rows[0][0] else ""
        print(f"{label:28s} {sum(seconds[label]):7.2f} {nfe[label]:4d} {metrics['digits_fid']:7.2f} "
              f"{metrics['digits_class_coverage']:9.2f} {diff}")
    ratios = [bf / fp for bf, fp in zip(seconds[rows[1][0]], seconds[rows[0][0]])]
    print(f"FID floor (train digits, same number): {metrics['digits_fid_train_floor']:.2f}")
    print(f"bf16 / float32 sampling time, median over {len(ratios)} batch pairs: {statistics.median(ratios):.2f} "
          f"(range {min(ratios):.2f}-{max(ratios):.2f}); load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
