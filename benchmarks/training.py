"""Training-step benchmark: steps per second and peak memory of the real train step, CPU or CUDA.

Experiments (``--experiments``):

* ``ncsnpp_ve``: ``configs/ve/cifar10_ncsnpp_continuous.py`` (NCSN++, VE SDE), at ``--batch`` (default 4);
* ``ddpmpp_vp``: ``configs/vp/cifar10_ddpmpp_continuous.py`` (DDPM++, VP SDE), at ``--batch``;
* ``digits``: ``configs/vp/digits_ddpmpp_continuous.py`` (the README's main job), at its own batch size (64).

One step is what :func:`jobs.train` runs: the step function of :func:`train_lib.get_step_fn_from_config`
(the config's loss, Adam with warm-up and gradient clipping, the EMA update) on the state that
:func:`jobs.experiment.build_experiment` builds from the config (validated, seeded; built in ``sample`` mode
so that no dataset is opened). The CIFAR-10 nets train on uniform random images ``(B, 3, 32, 32)`` in ``[0, 1]``
(no dataset needed; the step's cost does not depend on the pixel values), the digits on batches of the real
training split with the config's preprocessing; batches are built before the clock starts and passed through the
config's data scaler. ``--mixed-precision`` overrides ``config.training.mixed_precision`` (``no``, ``bf16``;
``fp16`` on CUDA only); by default the config's own value (``no`` for all three).

Reported per experiment, after ``--warmup`` untimed steps: the median (and minimum) seconds per step over
``--steps`` timed steps (``--digits-steps`` for the digits), steps/s and images/s at the median; the peak memory
of one more step above what was allocated before it (:func:`benchmarks.models.peak_memory`: on CUDA
``torch.cuda.max_memory_allocated``, on the CPU the profiler's tensor allocations at operator granularity), and
the persistent training state (weights, gradients, Adam moments, EMA copy); the process's peak resident size last.

    python benchmarks/training.py [--device auto|cpu|cuda] [--threads 2] [--batch 4] [--steps 3]
                                  [--digits-steps 20] [--warmup 1] [--mixed-precision no|bf16|fp16]
                                  [--experiments ncsnpp_ve ddpmpp_vp digits]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import resource
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: this repository's packages, not benchmarks/models.py as `models`

import data_lib  # noqa: E402
from benchmarks.models import peak_memory, synchronize, timed  # noqa: E402
from configs import load_config  # noqa: E402
from train_lib import get_optimizer, get_step_fn_from_config  # noqa: E402
from jobs.experiment import Experiment, build_experiment  # noqa: E402

EXPERIMENTS = {
    "ncsnpp_ve": ROOT / "configs" / "ve" / "cifar10_ncsnpp_continuous.py",
    "ddpmpp_vp": ROOT / "configs" / "vp" / "cifar10_ddpmpp_continuous.py",
    "digits": ROOT / "configs" / "vp" / "digits_ddpmpp_continuous.py",
}
REAL_DATA = {"digits"}  # experiments trained on their dataset; the others on random images of the right shape
MIB = 2**20


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when present, else the CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device available")
    return torch.device(name)


def experiment_config(key: str, args: argparse.Namespace, device: torch.device) -> Any:
    """The experiment's config on ``device``, with ``--batch`` for the CIFAR-10 nets and ``--mixed-precision``."""
    config = load_config(EXPERIMENTS[key])
    config.device = str(device)
    if key not in REAL_DATA:
        config.training.batch_size = args.batch
        config.eval.batch_size = args.batch  # the sampling shape of the (unused) sampler: no large allocation
    if args.mixed_precision is not None:
        config.training.mixed_precision = args.mixed_precision
    return config


def make_batches(key: str, exp: Experiment, count: int) -> list[torch.Tensor]:
    """``count`` scaled batches on the device: random images, or the digits' training batches 0, 1, ..."""
    batch = int(exp.config.training.batch_size)
    if key in REAL_DATA:
        dataset = data_lib.get_dataset(exp.config, "train")
        source = data_lib.training_batches(
            dataset, batch, seed=int(exp.config.seed), **data_lib.preprocessing_options(exp.config, train=True),
            dtype=exp.batch_dtype,
        )
        raw = [next(source) for _ in range(count)]
    else:
        gen = torch.Generator().manual_seed(0)
        raw = [torch.rand((batch, *exp.data_shape), generator=gen, dtype=exp.batch_dtype) for _ in range(count)]
    return [exp.scaler(x.to(exp.device)) for x in raw]


def state_bytes(exp: Experiment) -> int:
    """Bytes of the persistent training state: weights, gradients, optimizer state, EMA shadow weights."""
    tensors = [*exp.model.parameters(), *exp.ema.shadow_params]
    tensors += [p.grad for p in exp.model.parameters() if p.grad is not None]
    tensors += [v for s in exp.state["optimizer"].state.values() for v in s.values() if torch.is_tensor(v)]
    return sum(t.numel() * t.element_size() for t in tensors)


def run_experiment(key: str, args: argparse.Namespace, device: torch.device, workdir: Path) -> None:
    config = experiment_config(key, args, device)
    exp = build_experiment(config, workdir / key, "sample")  # validated and seeded; opens no dataset
    exp.state["optimizer"] = get_optimizer(exp.config, exp.model.parameters())  # the sample mode builds none
    step_fn = get_step_fn_from_config(exp.config, exp.sde, train=True)
    exp.model.train()
    timed_steps = args.digits_steps if key in REAL_DATA else args.steps
    batches = make_batches(key, exp, args.warmup + timed_steps + 1)
    generator = torch.Generator(device).manual_seed(0)
    losses: list[float] = []

    def step(batch: torch.Tensor) -> Callable[[], None]:
        return lambda: losses.append(float(step_fn(exp.state, batch, generator)))

    for batch in batches[: args.warmup]:
        step(batch)()
    seconds = [timed(step(batch), device) for batch in batches[args.warmup : args.warmup + timed_steps]]
    peak = peak_memory(step(batches[-1]), device)
    median, low = statistics.median(seconds), min(seconds)
    batch = int(exp.config.training.batch_size)
    params = sum(p.numel() for p in exp.model.parameters())
    precision = exp.config.training.get("mixed_precision", "no")
    data = "digits training batches" if key in REAL_DATA else f"random images {tuple(batches[0].shape)}"
    print(f"\n{key}: {EXPERIMENTS[key].relative_to(ROOT)}, {params:,} parameters, batch {batch}, {data}, "
          f"mixed precision {precision}")
    print(f"  {timed_steps} timed steps after {args.warmup} warm-up: median {median:.3f} s/step (min {low:.3f}), "
          f"{1 / median:.2f} steps/s, {batch / median:.1f} images/s")
    print(f"  peak memory of a step above the state: {peak / MIB:.1f} MiB; training state (weights, grads, Adam, "
          f"EMA): {state_bytes(exp) / MIB:.1f} MiB; losses finite: {all(map(math.isfinite, losses))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--batch", type=int, default=4, help="batch of the CIFAR-10 nets (digits: its config's)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps of the CIFAR-10 nets")
    parser.add_argument("--digits-steps", type=int, default=20, help="timed steps of the digits config")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"], default=None,
                        help="override config.training.mixed_precision (default: the config's, 'no')")
    parser.add_argument("--experiments", nargs="+", choices=list(EXPERIMENTS), default=list(EXPERIMENTS))
    args = parser.parse_args()
    for name in ("threads", "batch", "steps", "digits_steps"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0:
        raise SystemExit("--warmup must be >= 0")
    device = resolve_device(args.device)
    if args.mixed_precision == "fp16" and device.type != "cuda":
        raise SystemExit("--mixed-precision fp16 needs CUDA; use bf16 or no on the CPU")
    torch.set_num_threads(args.threads)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.machine()}), {args.threads} threads"
    print(f"torch {torch.__version__}, {name}; load average {os.getloadavg()[0]:.2f}")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with tempfile.TemporaryDirectory() as workdir:  # build_experiment writes nothing; a path is all it needs
        for key in args.experiments:
            run_experiment(key, args, device, Path(workdir))
            synchronize(device)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nprocess peak resident memory: {rss:.0f} MiB ({rss - rss_before:+.0f} MiB over the start); "
          f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
