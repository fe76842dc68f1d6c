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
``fp16`` on CUDA only); by default the config's own value (``auto`` for all three: bf16 where the device has bf16
matrix units). ``--compile [MODE]`` sets ``config.model.compile``.

``--experiments loop`` times the training loop itself, :func:`jobs.run._train_loop` on the digits config (the
README's main job) for ``--loop-steps`` steps, its logging, seeding, batches and loss reads included (no
evaluation, checkpoint or samples: those run every few hundred steps and are not a per-step cost), beside the bare
step function on pre-built batches of the same experiment: ``--rounds`` rounds, each the loop then the bare steps, so
that both see the same load, after an untimed loop of ``--warmup`` steps. Reported: wall and CPU seconds per step of
the loop (less the two checkpoints written at its last step, reported apart), of the step function inside it and of
the rest (outside the step function), and of the bare steps; then the per-part costs, each timed alone (median
over repetitions): the batch (:func:`data_lib.training_batches`), its upload and scaling, the step's seeds, listing
the parameters, ``zero_grad``, gradient clipping, the Adam update with the kernel the optimizer chose and with
torch's per-parameter loop, the EMA update (one foreach call, and parameter by parameter) and reading the losses of
a logging window.

Reported per experiment, after ``--warmup`` untimed steps: the median (and minimum) seconds per step over
``--steps`` timed steps (``--digits-steps`` for the digits), steps/s and images/s at the median; the peak memory
of one more step above what was allocated before it (:func:`benchmarks.models.peak_memory`: on CUDA
``torch.cuda.max_memory_allocated``, on the CPU the profiler's tensor allocations at operator granularity), and
the persistent training state (weights, gradients, Adam moments, EMA copy); the FLOPs of a step's matrix products
(:func:`step_flops`) and the rate they ran at in the median step; the process's peak resident size last.

    python benchmarks/training.py [--device auto|cpu|cuda] [--threads 2] [--batch 4] [--steps 3]
                                  [--digits-steps 20] [--warmup 1] [--mixed-precision no|bf16|fp16]
                                  [--loop-steps 300] [--rounds 3]
                                  [--experiments ncsnpp_ve ddpmpp_vp digits loop]
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: this repository's packages, not benchmarks/models.py as `models`

import data_lib  # noqa: E402
from benchmarks.models import peak_memory, synchronize, timed  # noqa: E402
from configs import load_config  # noqa: E402
from models.compiled import COMPILE_MODES  # noqa: E402
from train_lib import get_optimizer, get_step_fn_from_config  # noqa: E402
from jobs import run as job  # noqa: E402
from jobs.experiment import Experiment, TrainingExperiment, build_experiment  # noqa: E402
from jobs.streams import Stream  # noqa: E402

EXPERIMENTS = {
    "ncsnpp_ve": ROOT / "configs" / "ve" / "cifar10_ncsnpp_continuous.py",
    "ddpmpp_vp": ROOT / "configs" / "vp" / "cifar10_ddpmpp_continuous.py",
    "digits": ROOT / "configs" / "vp" / "digits_ddpmpp_continuous.py",
}
REAL_DATA = {"digits"}  # experiments trained on their dataset; the others on random images of the right shape
LOOP = "loop"  # the training loop of jobs.train on the digits config, beside its bare step function
MIB = 2**20
PART_REPEATS = 40  # repetitions of each per-part timing (median)


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
    config.model.compile = args.compile
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


def step_flops(run_step: Callable[[], None]) -> int:
    """Floating-point operations of the matrix products in one step, forward and backward, as
    ``torch.utils.flop_counter`` counts them (convolutions, matrix multiplications, attention: the work that matrix
    units speed up; elementwise work and normalisations are not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        run_step()
    return int(counter.get_total_flops())


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
    flops = step_flops(step(batches[-1]))
    median, low = statistics.median(seconds), min(seconds)
    batch = int(exp.config.training.batch_size)
    params = sum(p.numel() for p in exp.model.parameters())
    precision = exp.config.training.get("mixed_precision", "auto")
    data = "digits training batches" if key in REAL_DATA else f"random images {tuple(batches[0].shape)}"
    print(f"\n{key}: {EXPERIMENTS[key].relative_to(ROOT)}, {params:,} parameters, batch {batch}, {data}, "
          f"mixed precision {precision}")
    print(f"  {timed_steps} timed steps after {args.warmup} warm-up: median {median:.3f} s/step (min {low:.3f}), "
          f"{1 / median:.2f} steps/s, {batch / median:.1f} images/s")
    print(f"  peak memory of a step above the state: {peak / MIB:.1f} MiB; training state (weights, grads, Adam, "
          f"EMA): {state_bytes(exp) / MIB:.1f} MiB; losses finite: {all(map(math.isfinite, losses))}")
    print(f"  matrix products of a step (convolutions, matmuls, attention; forward and backward): {flops / 1e9:.2f} "
          f"GFLOP, {flops / median / 1e9:.0f} GFLOP/s at the median step")


# ------------------------------------------------------------------ the training loop
class _Clock:
    """Wall and CPU seconds accumulated over calls of a wrapped function."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed_fn(*args: Any, **kwargs: Any) -> Any:
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.wall += time.perf_counter() - wall
                self.cpu += time.process_time() - cpu

        return timed_fn


def loop_config(args: argparse.Namespace, device: torch.device) -> Any:
    """The digits config for ``--loop-steps`` steps, logging as configured, without evaluation, checkpoints or
    samples inside the timed steps."""
    config = experiment_config("digits", args, device)
    config.training.n_iters = args.loop_steps
    never = 10 * args.loop_steps  # > n_iters: not due inside the run (the end's checkpoint is not part of the loop)
    config.training.eval_freq = config.training.snapshot_freq = config.training.snapshot_freq_for_preemption = never
    config.training.snapshot_sampling = False
    return config


def time_loop(args: argparse.Namespace, device: torch.device, workdir: Path) -> tuple[TrainingExperiment, dict[str, float]]:
    """One run of :func:`jobs.run._train_loop` from step 0 in a fresh ``workdir``: seconds per step (wall, CPU) of
    the loop and of the step function inside it."""
    config = loop_config(args, device)
    exp = build_experiment(config, workdir, "train")
    schedule = job.Schedule.from_config(config)
    inside = _Clock()
    exp.train_step_fn = inside.wrap(exp.train_step_fn)
    exp.layout.log_file.parent.mkdir(parents=True, exist_ok=True)
    logger = job.open_log(exp.layout.log_file, enabled=False)  # the run's logger, writing to its log file only
    logger.handlers.clear()
    logger.addHandler(logging.FileHandler(exp.layout.log_file, encoding="utf-8"))
    writer = job._summary_writer(exp.layout.tensorboard_dir, True)
    whole, saves, save = _Clock(), _Clock(), job._save
    job._save = saves.wrap(save)  # the checkpoints written at the last step: timed apart, not a per-step cost
    try:
        whole.wrap(job._train_loop)(exp, schedule, 0, logger, writer)
    finally:
        job._save = save
        writer.close()
        job.close_log(logger)
    n = args.loop_steps
    return exp, {"loop_wall": (whole.wall - saves.wall) / n, "loop_cpu": (whole.cpu - saves.cpu) / n,
                 "step_wall": inside.wall / n, "step_cpu": inside.cpu / n, "saves_wall": saves.wall}


def time_bare_steps(exp: TrainingExperiment, count: int) -> dict[str, float]:
    """Seconds per step (wall, CPU) of ``exp``'s step function alone on ``count`` batches built beforehand."""
    source = data_lib.training_batches(exp.train_ds, exp.per_rank_batch_size, seed=int(exp.config.seed),
                                       **data_lib.preprocessing_options(exp.config, train=True), dtype=exp.batch_dtype)
    batches = [job.model_batch(exp, next(source)) for _ in range(count)]
    generator = torch.Generator(exp.device).manual_seed(0)
    synchronize(exp.device)
    wall, cpu = time.perf_counter(), time.process_time()
    for batch in batches:
        exp.train_step_fn(exp.state, batch, generator)
    synchronize(exp.device)
    return {"bare_wall": (time.perf_counter() - wall) / count, "bare_cpu": (time.process_time() - cpu) / count}


def part_costs(exp: TrainingExperiment, log_freq: int) -> dict[str, float]:
    """Median seconds of each per-step part of the loop and of the step, each timed alone (module docstring). Run
    last: the Adam timings move the weights."""
    device, model, config = exp.device, exp.model, exp.config
    params = list(model.parameters())
    trainable = [p for p in params if p.requires_grad]
    if any(p.grad is None for p in trainable):
        raise RuntimeError("part_costs needs the gradients of a step")
    source = data_lib.training_batches(exp.train_ds, exp.per_rank_batch_size, seed=int(config.seed),
                                       **data_lib.preprocessing_options(config, train=True), dtype=exp.batch_dtype)
    raw = next(source)
    generator = torch.Generator(device)
    losses = [torch.rand((), device=device) for _ in range(log_freq)]
    grads = [p.grad for p in trainable]
    adam = exp.state["optimizer"]
    loop_adam = get_optimizer(config, trainable, kernel="loop")
    kernel = "fused" if adam.param_groups[0]["fused"] else "foreach" if adam.param_groups[0]["foreach"] else "loop"
    shadows = exp.ema.shadow_params

    def seeds() -> None:
        generator.manual_seed(job.step_seed(config, Stream.LOSS_NOISE, 7, 0))
        job._reseed_global_rng(device, job.step_seed(config, Stream.GLOBAL_RNG, 7, 0))

    def restore_grads() -> None:
        for p, g in zip(trainable, grads):
            p.grad = g

    def zero_grad() -> None:
        adam.zero_grad(set_to_none=True)
        restore_grads()  # untimed share: a loop over the parameters setting an attribute

    def ema_per_parameter() -> None:
        with torch.no_grad():
            for shadow, p in zip(shadows, trainable):
                shadow.lerp_(p, 1e-3)

    parts: dict[str, Callable[[], object]] = {
        "batch (training_batches)": lambda: next(source),
        "upload + data scaler": lambda: job.model_batch(exp, raw),
        "seeds of the step": seeds,
        "list the parameters": lambda: list(model.parameters()),
        "zero_grad (+ grads put back)": zero_grad,
        "clip (foreach norms)": lambda: torch.nn.utils.clip_grad_norm_(trainable, 1e9),
        f"Adam, {kernel} kernel": adam.step,
        "Adam, per-parameter loop": loop_adam.step,
        "EMA update, one foreach call": lambda: exp.ema.update(params),
        "EMA update, per parameter": ema_per_parameter,
        f"read {log_freq} losses": lambda: torch.stack(losses).tolist(),
    }
    seconds: dict[str, list[float]] = {name: [] for name in parts}
    for _ in range(PART_REPEATS):
        for name, fn in parts.items():
            seconds[name].append(timed(fn, device))
    return {name: statistics.median(values) for name, values in seconds.items()}


def run_loop(args: argparse.Namespace, device: torch.device, workdir: Path) -> None:
    """The ``loop`` experiment (module docstring)."""
    warm = argparse.Namespace(**{**vars(args), "loop_steps": max(args.warmup, 1)})
    time_loop(warm, device, workdir / "loop_warmup")  # untimed: the first run's one-off costs (lazy imports, oneDNN)
    rounds: list[dict[str, float]] = []
    for index in range(args.rounds):
        exp, figures = time_loop(args, device, workdir / f"loop_{index}")
        figures.update(time_bare_steps(exp, args.loop_steps))
        figures["load"] = os.getloadavg()[0]
        rounds.append(figures)
        print(f"  round {index}: loop {1e3 * figures['loop_wall']:.1f} ms/step (step function inside it "
              f"{1e3 * figures['step_wall']:.1f}, outside {1e3 * (figures['loop_wall'] - figures['step_wall']):.2f}); "
              f"bare step {1e3 * figures['bare_wall']:.1f} ms/step; load average {figures['load']:.2f}", flush=True)
    median = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    kernel = exp.state["optimizer"].param_groups[0]
    kernel = "fused" if kernel["fused"] else "foreach" if kernel["foreach"] else "per-parameter"
    print(f"\n{LOOP}: jobs.run._train_loop on {EXPERIMENTS['digits'].relative_to(ROOT)}, {args.loop_steps} steps of "
          f"batch {exp.config.training.batch_size} (log every {exp.config.training.log_freq}), {args.rounds} rounds, "
          f"medians; Adam kernel {kernel}; the two checkpoints of the last step took "
          f"{statistics.median(r['saves_wall'] for r in rounds):.2f} s (not counted below)")
    print(f"  wall: loop {1e3 * median['loop_wall']:.1f} ms/step ({1 / median['loop_wall']:.2f} steps/s), step function "
          f"inside it {1e3 * median['step_wall']:.1f}, outside it {1e3 * (median['loop_wall'] - median['step_wall']):.2f}; "
          f"bare step {1e3 * median['bare_wall']:.1f} ms/step ({1 / median['bare_wall']:.2f} steps/s)")
    print(f"  CPU:  loop {1e3 * median['loop_cpu']:.1f} ms/step, step function inside it {1e3 * median['step_cpu']:.1f}, "
          f"outside it {1e3 * (median['loop_cpu'] - median['step_cpu']):.2f}; bare step {1e3 * median['bare_cpu']:.1f}")
    print(f"  per-part costs (each alone, median of {PART_REPEATS}):")
    for name, value in part_costs(exp, int(exp.config.training.log_freq)).items():
        print(f"    {name:32s} {1e3 * value:8.3f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--batch", type=int, default=4, help="batch of the CIFAR-10 nets (digits: its config's)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps of the CIFAR-10 nets")
    parser.add_argument("--digits-steps", type=int, default=20, help="timed steps of the digits config")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--mixed-precision", choices=["auto", "no", "bf16", "fp16"], default=None,
                        help="override config.training.mixed_precision (default: the config's, 'auto')")
    parser.add_argument("--compile", nargs="?", const="default", default="none", choices=COMPILE_MODES,
                        help="config.model.compile: torch.compile the network (the first steps pay the compilation)")
    parser.add_argument("--loop-steps", type=int, default=300, help="steps of the training loop (experiment loop)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of loop and bare steps (experiment loop)")
    parser.add_argument("--experiments", nargs="+", choices=[*EXPERIMENTS, LOOP], default=list(EXPERIMENTS))
    args = parser.parse_args()
    for name in ("threads", "batch", "steps", "digits_steps", "loop_steps", "rounds"):
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
            if key == LOOP:
                run_loop(args, device, Path(workdir))
            else:
                run_experiment(key, args, device, Path(workdir))
            synchronize(device)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nprocess peak resident memory: {rss:.0f} MiB ({rss - rss_before:+.0f} MiB over the start); "
          f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
