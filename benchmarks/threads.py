"""Training speed under CPU contention: intra-op threads 1 vs 2, OpenMP wait policy default vs passive.

The step is that of ``configs/vp/digits_ddpmpp_continuous.py`` (the README's main job), built as
``benchmarks/training.py`` builds it (:func:`jobs.experiment.build_experiment`, the config's step function, real
digits batches made before the clock starts). For each number of competing processes (``--competitors``, default
0, 1 and 2; each one ``python -c 'while True: pass'``, a CPU-bound loop this script starts and kills) and each
OpenMP wait policy (``default``: ``OMP_WAIT_POLICY`` unset; ``passive``: ``OMP_WAIT_POLICY=PASSIVE``; ``spin1k`` and
``spin10k``: ``GOMP_SPINCOUNT`` 1000 and 10000, a short spin before sleeping; :data:`POLICIES`), a fresh
worker process is started, because the OpenMP runtime reads the policy once, when torch loads it. After one
untimed step at 2 threads, the worker times blocks of training steps at 1 and at 2 threads
(``torch.set_num_threads``) in the order 1, 2, 2, 1, each lasting ``--block-seconds`` (at least one step), so the
two thread counts are measured side by side under the same load; a count's speed is its steps over its time, over
its blocks. ``--repeats`` runs the whole table again, in reverse order of the policies, and reports the median.

Printed: steps/s per setting, the ratio 2 threads / 1 thread for each policy and competitor count, the ratio
passive / default for each thread count, the best setting per row, and the load average before each worker.

    python benchmarks/threads.py [--competitors 0 1 2] [--block-seconds 3] [--max-block-steps 60] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
#: OpenMP environment of each policy's worker: libgomp's default (a waiting thread spins 300,000 times, then sleeps),
#: sleeping at once (PASSIVE), and shorter spins before sleeping (GOMP_SPINCOUNT, libgomp's variable)
POLICIES = {
    "default": {},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "spin1k": {"GOMP_SPINCOUNT": "1000"},
    "spin10k": {"GOMP_SPINCOUNT": "10000"},
}
THREAD_ORDER = (1, 2, 2, 1)
#: variables that would pin the thread count or the wait policy of the worker
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def measure_in_this_process(block_seconds: float, max_block_steps: int) -> dict[int, float]:
    """Steps per second of the digits training step at each thread count of :data:`THREAD_ORDER`."""
    sys.path.insert(0, str(ROOT))
    import tempfile

    import torch

    from benchmarks.training import experiment_config, make_batches
    from jobs.experiment import build_experiment
    from train_lib import get_step_fn_from_config

    device = torch.device("cpu")
    config = experiment_config("digits", SimpleNamespace(batch=None, mixed_precision=None, compile="none"), device)
    with tempfile.TemporaryDirectory() as workdir:
        exp = build_experiment(config, workdir, "train")  # validated and seeded, with the optimizer state
    step_fn = get_step_fn_from_config(exp.config, exp.sde, train=True)
    exp.model.train()
    batches = make_batches("digits", exp, 8)
    generator = torch.Generator(device).manual_seed(0)
    done = 0

    def step() -> None:
        nonlocal done
        float(step_fn(exp.state, batches[done % len(batches)], generator))
        done += 1

    torch.set_num_threads(max(THREAD_ORDER))
    step()  # untimed: the one-time set-up of the first step and of the OpenMP threads
    steps = {n: 0 for n in THREAD_ORDER}
    seconds = {n: 0.0 for n in THREAD_ORDER}
    for threads in THREAD_ORDER:
        torch.set_num_threads(threads)
        start, count = time.perf_counter(), 0
        while count < 1 or (time.perf_counter() - start < block_seconds and count < max_block_steps):
            step()
            count += 1
        steps[threads] += count
        seconds[threads] += time.perf_counter() - start
    return {n: steps[n] / seconds[n] for n in steps}


def worker_env(policy: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    return {**env, **POLICIES[policy]}


def run_worker(policy: str, args: argparse.Namespace) -> dict[int, float]:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", f"--block-seconds={args.block_seconds}",
               f"--max-block-steps={args.max_block_steps}"]
    result = subprocess.run(command, env=worker_env(policy), capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise SystemExit(f"worker ({policy}) failed:\n{result.stderr[-3000:]}")
    return {int(k): v for k, v in json.loads(result.stdout.strip().splitlines()[-1]).items()}


def start_competitors(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        process.kill()
    for process in processes:
        process.wait()


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def median_rates(runs: list[dict[int, float]]) -> dict[int, float]:
    return {n: statistics.median(run[n] for run in runs) for n in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--competitors", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--block-seconds", type=float, default=3.0, help="timed seconds per block of steps")
    parser.add_argument("--max-block-steps", type=int, default=60, help="at most this many steps per block")
    parser.add_argument("--repeats", type=int, default=1, help="runs of the whole table (the median is reported)")
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=list(POLICIES))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure_in_this_process(args.block_seconds, args.max_block_steps)))
        return
    print(f"{len(os.sched_getaffinity(0))} usable cores; load average (1, 5, 15 min) at the start: {load()}")
    print("steps/s of the digits training step (batch 64); each row: one fresh worker process\n")
    print(f"{'competitors':>11}  {'policy':>7}  {'load before':>14}  {'1 thread':>8}  {'2 threads':>9}  {'2/1':>5}")
    runs: dict[tuple[int, str], list[dict[int, float]]] = {}
    for repeat in range(args.repeats):
        for count in args.competitors:
            competitors = start_competitors(count)
            try:
                time.sleep(1.0)  # let them reach the run queue
                for policy in args.policies[:: 1 if repeat % 2 == 0 else -1]:
                    before = load()
                    rates = run_worker(policy, args)
                    runs.setdefault((count, policy), []).append(rates)
                    print(f"{count:>11}  {policy:>7}  {before:>14}  {rates[1]:>8.2f}  {rates[2]:>9.2f}  "
                          f"{rates[2] / rates[1]:>5.2f}", flush=True)
            finally:
                stop(competitors)
    table = {key: median_rates(value) for key, value in runs.items()}
    if args.repeats > 1:
        print(f"\nmedian of {args.repeats} runs:")
        for (count, policy), rates in table.items():
            print(f"{count:>11}  {policy:>7}  {'':>14}  {rates[1]:>8.2f}  {rates[2]:>9.2f}  "
                  f"{rates[2] / rates[1]:>5.2f}")
    print(f"\neach policy / {args.policies[0]} at 2 threads, same competitors; the best setting and the worst:")
    for count in args.competitors:
        ratios = ", ".join(f"{policy} {table[count, policy][2] / table[count, args.policies[0]][2]:.2f}"
                           for policy in args.policies[1:])
        settings = {(policy, n): table[count, policy][n] for policy in args.policies for n in (1, 2)}
        (policy, threads), best = max(settings.items(), key=lambda item: item[1])
        print(f"  {count} competitor(s): {ratios}; best: {threads} thread(s) {policy}, {best:.2f} steps/s, "
              f"{best / min(settings.values()):.1f}x the worst")
    print(f"\nload average at the end: {load()}")


if __name__ == "__main__":
    main()
