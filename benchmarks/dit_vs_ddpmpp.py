"""DiT against DDPM++ at equal wall time: the ratio of their training-step times, measured side by side.

For a pair of configs (``--pair digits``: ``configs/vp/digits_ddpmpp_continuous.py`` against
``configs/vp/digits_dit_continuous.py``; ``--pair faces``: the ``faces_`` pair) both training states are built as
:func:`jobs.train` builds them (:func:`jobs.experiment.build_experiment`, the config's optimizer and step function)
and trained on the same pre-built training batches of the dataset. The clock runs in ``--rounds`` rounds, each
``--steps`` steps of one network then ``--steps`` of the other (the order alternating between rounds), after
``--warmup`` untimed steps each, so that both see the same load on a shared machine. Each step is timed twice: wall
seconds and the process's CPU seconds (OpenMP's waiting threads sleep, ``OMP_WAIT_POLICY=PASSIVE`` as in ``main.py``,
so CPU time counts the work done, not the waiting). On a loaded machine the wall time mostly measures the scheduler
(other processes' share of the cores), the CPU time much less: the medians of both, their ratios and the DiT step
count that takes the time of DDPM++'s ``training.n_iters`` steps, ``n_iters(DiT) = n_iters(DDPM++) * t(DDPM++) /
t(DiT)``, are printed, with the parameter counts and the load average before and after.

    python benchmarks/dit_vs_ddpmpp.py [--pair digits|faces] [--rounds 6] [--steps 10] [--warmup 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: this repository's packages, not benchmarks/models.py as `models`

from base_lib.openmp import set_openmp_defaults  # noqa: E402

set_openmp_defaults()  # before torch's OpenMP starts: waiting threads sleep, as in main.py

import data_lib  # noqa: E402
from configs import load_config  # noqa: E402
from jobs.experiment import build_experiment  # noqa: E402
from train_lib import get_optimizer, get_step_fn_from_config  # noqa: E402

PAIRS = {
    "digits": ("configs/vp/digits_ddpmpp_continuous.py", "configs/vp/digits_dit_continuous.py"),
    "faces": ("configs/vp/faces_ddpmpp_continuous.py", "configs/vp/faces_dit_continuous.py"),
}


def load() -> str:
    """The 1, 5 and 15 minute load averages."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def trainer(path: str, workdir: Path, batches: int) -> tuple[Any, Callable[[int], None]]:
    """The config of ``path`` and ``step(i)``: one training step of its network on the ``i``-th training batch."""
    config = load_config(ROOT / path)
    config.device = "cpu"
    exp = build_experiment(config, workdir, "sample")  # validated and seeded; the state without an optimizer
    exp.state["optimizer"] = get_optimizer(exp.config, exp.model.parameters())
    step_fn = get_step_fn_from_config(exp.config, exp.sde, train=True)
    exp.model.train()
    dataset = data_lib.get_dataset(exp.config, "train")
    source = data_lib.training_batches(
        dataset, int(config.training.batch_size), seed=int(config.seed),
        **data_lib.preprocessing_options(exp.config, train=True), dtype=exp.batch_dtype,
    )
    data = [exp.scaler(next(source)) for _ in range(batches)]
    generator = torch.Generator().manual_seed(0)
    return exp, lambda i: step_fn(exp.state, data[i % len(data)], generator)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pair", choices=sorted(PAIRS), default="digits")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=10, help="steps of each network per round")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"load average (1, 5, 15 min) before: {load()}; {os.cpu_count()} cores, {args.threads} threads")
    names = ("DDPM++", "DiT")
    with tempfile.TemporaryDirectory() as tmp:
        built = [trainer(path, Path(tmp) / name, args.steps) for path, name in zip(PAIRS[args.pair], names)]
        times: dict[str, list[float]] = {name: [] for name in names}
        cpu: dict[str, list[float]] = {name: [] for name in names}
        for (_, step), name in zip(built, names):
            for i in range(args.warmup):
                step(i)
        for r in range(args.rounds):
            order = list(zip(built, names))[:: 1 if r % 2 == 0 else -1]
            for (_, step), name in order:
                for i in range(args.steps):
                    start, start_cpu = time.perf_counter(), time.process_time()
                    step(i)
                    times[name].append(time.perf_counter() - start)
                    cpu[name].append(time.process_time() - start_cpu)
    print(f"load average after: {load()}")
    median = {name: statistics.median(values) for name, values in times.items()}
    median_cpu = {name: statistics.median(values) for name, values in cpu.items()}
    for (exp, _), (name, path) in zip(built, zip(names, PAIRS[args.pair])):
        params = sum(p.numel() for p in exp.model.parameters() if p.requires_grad)
        print(f"{name:7s} {path}: {params:,} trained parameters, batch {exp.config.training.batch_size}, "
              f"{len(times[name])} steps: wall median {median[name] * 1e3:.1f} ms/step (min {min(times[name]) * 1e3:.1f}), "
              f"CPU median {median_cpu[name] * 1e3:.1f} ms/step (min {min(cpu[name]) * 1e3:.1f})")
    n_iters = int(built[0][0].config.training.n_iters)
    for what, ratio in (("wall median", median["DDPM++"] / median["DiT"]),
                        ("wall min", min(times["DDPM++"]) / min(times["DiT"])),
                        ("CPU median", median_cpu["DDPM++"] / median_cpu["DiT"])):
        print(f"step-time ratio t(DDPM++) / t(DiT), {what:11s}: {ratio:.3f}; DDPM++'s {n_iters} steps take the time of "
              f"{round(n_iters * ratio)} DiT steps")

if __name__ == "__main__":
    main()
