"""bf16 against float32 on this machine: does bf16 autocast use fast matrix units here?

Prints the CPU capability torch dispatches to and oneDNN's bf16 support (AVX512-BF16 / AMX), then, side by side in
one run, the time of float32 and of ``torch.autocast(bfloat16)`` for 3x3 convolutions of a few shapes, for the
attention of the shipped networks' shapes (forward, and forward + backward; bf16 with torch's fused kernel and with
:func:`models.layers.attention`, which takes short sequences under autograd in float32), and for the README main
job's network (``configs/vp/digits_ddpmpp_continuous.py``) and its DiT twin (``digits_dit_continuous.py``): forward,
and forward + backward, batch 64, bf16 also with the fused attention kernel. The variants of a row take turns, and
each figure is the best of ``--repeats``. Without bf16 units oneDNN has no bf16 convolution and torch uses its
reference kernels (``aten::_slow_conv2d_forward`` in a profile): bf16 is then many times slower, which is why the
toolkit only recommends bf16 where :func:`models.precision.native_bf16` is true.

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
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: this repository's packages, not benchmarks/models.py as `models`

import configs  # noqa: E402
import models  # noqa: E402
import sde_lib  # noqa: E402
from models import layers  # noqa: E402
from models.precision import native_bf16  # noqa: E402

CONV_SHAPES = ((64, 32, 8), (8, 128, 32), (8, 256, 16))  # (batch, channels, size)
ATTENTION_SHAPES = {  # (batch, heads, tokens, features per head) of the shipped networks' attention
    "DDPM++ digits, 4x4 maps": (64, 1, 16, 64),
    "DiT digits, 2x2 patches": (64, 4, 16, 24),
    "DiT faces, 2x2 patches": (16, 4, 169, 16),
    "DDPM++ CIFAR-10, 16x16 maps": (8, 1, 256, 256),
}
NETWORKS = {  # the README main job's network and its DiT twin
    "digits DDPM++": "configs/vp/digits_ddpmpp_continuous.py",
    "digits DiT": "configs/vp/digits_dit_continuous.py",
}


def interleaved_ms(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """The best of ``repeats`` timings (ms) of each function, the functions taking turns so that load from other
    processes falls on all alike."""
    for fn in fns.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: 1000 * min(seconds) for name, seconds in times.items()}


def in_bf16(fn: Callable[[], object], fused_attention: bool = False) -> Callable[[], object]:
    """``fn`` under bf16 autocast; with ``fused_attention``, :func:`models.layers.attention` keeps torch's fused
    reduced-precision kernel for every sequence length (the behaviour before its float32 rule)."""
    def run() -> object:
        saved = layers.SLOW_CPU_ATTENTION_BACKWARD_BELOW
        layers.SLOW_CPU_ATTENTION_BACKWARD_BELOW = 0 if fused_attention else saved
        try:
            with torch.autocast("cpu", torch.bfloat16):
                return fn()
        finally:
            layers.SLOW_CPU_ATTENTION_BACKWARD_BELOW = saved
    return run


def both(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(float32 ms, bf16 autocast ms) of ``fn``, interleaved."""
    ms = interleaved_ms({"fp32": fn, "bf16": in_bf16(fn)}, repeats)
    return ms["fp32"], ms["bf16"]


def attention_rows(repeats: int) -> None:
    """float32, bf16 with torch's fused kernel and bf16 through :func:`models.layers.attention`, forward and
    forward + backward, at the attention shapes of the shipped networks."""
    print(f"\n{'attention (B, heads, tokens, d)':44s} {'pass':8s} {'float32':>8s} {'bf16 fused':>11s} "
          f"{'bf16 layers':>12s} {'fused/fp32':>11s} {'layers/fp32':>12s}")
    gen = torch.Generator().manual_seed(0)
    for name, shape in ATTENTION_SHAPES.items():
        q, k, v = (torch.randn(shape, generator=gen) for _ in range(3))
        for backward in (False, True):
            q, k, v = (t.detach().requires_grad_(backward) for t in (q, k, v))

            def run() -> None:
                out = layers.attention(q, k, v)
                if backward:
                    out.float().sum().backward()

            ms = interleaved_ms({"fp32": run, "fused": in_bf16(run, fused_attention=True), "layers": in_bf16(run)},
                                repeats)
            print(f"{f'{name} {tuple(shape)}':44s} {'fwd+bwd' if backward else 'forward':8s} {ms['fp32']:8.2f} "
                  f"{ms['fused']:11.2f} {ms['layers']:12.2f} {ms['fused'] / ms['fp32']:11.2f} "
                  f"{ms['layers'] / ms['fp32']:12.2f}")


def network_rows(repeats: int) -> None:
    """The digits networks (DDPM++ of the README main job, its DiT twin) at batch 64: float32, bf16, and bf16 with
    the fused attention kernel."""
    print(f"\n{'network, batch 64':40s} {'float32 ms':>11s} {'bf16 ms':>9s} {'bf16/fp32':>10s} "
          f"{'bf16 fused attention ms':>24s}")
    for name, path in NETWORKS.items():
        config = configs.load_config(path)
        torch.manual_seed(0)
        score_model = models.ScoreModel.from_config(config, models.create_model(config), sde_lib.get_sde(config))
        x, t = torch.randn(64, 1, 8, 8), torch.rand(64) * 0.9 + 0.05

        def forward() -> None:
            with torch.no_grad():
                score_model.score(x, t)

        def step() -> None:
            score_model.score(x, t, train=True).float().square().mean().backward()

        for label, fn in (("forward", forward), ("forward+backward", step)):
            ms = interleaved_ms({"fp32": fn, "bf16": in_bf16(fn), "fused": in_bf16(fn, fused_attention=True)}, repeats)
            print(f"{f'{name} {label}':40s} {ms['fp32']:11.2f} {ms['bf16']:9.2f} {ms['bf16'] / ms['fp32']:10.2f} "
                  f"{ms['fused']:24.2f}")


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
    attention_rows(args.repeats)
    network_rows(args.repeats)
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
