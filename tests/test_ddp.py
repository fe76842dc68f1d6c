"""Two-process DistributedDataParallel training (``torchrun``, gloo on the CPU) equals one process on the combined batch.

``torchrun --nproc_per_node=2 main.py`` trains the VP toy config for ``N_STEPS`` steps with a global batch of
``BATCH`` (``BATCH / 2`` per rank). The oracle is one process that, at step ``s``, takes the two ranks' batches
(their union is the single-process batch ``s`` of size ``BATCH``, checked below), draws each half's loss noise from
the same per-(step, rank) generator as the rank does, and minimizes the mean loss over the ``BATCH`` examples,
``(l_0 + l_1) / 2``, with the same update rule (warm-up, clipping, Adam, EMA). With ``reduce_mean=True`` each
example's loss is a mean over coordinates, with ``reduce_mean=False`` half a sum; either way ``l_r`` is a batch mean,
so DDP's gradient average ``(g_0 + g_1) / 2`` is the gradient of the combined mean. Halving is exact in floating
point and a sum of two terms does not depend on the order, so the trajectories agree to float32 round-off; the
tolerance ``ATOL`` allows ``1e-6`` absolute on weights of order 1 (measured: bit-identical, ``DDP_TEST_ATOL=0``
passes). Adam's ``eps`` is set to 1 so that the update depends on the gradient's scale: an oracle whose gradient
is twice as large (the sum over ranks instead of the mean) misses the final losses by 3.7e-2. The same holds for
the classifier-free-guidance config (labelled batches ``(x, y)`` sharded with their labels; the label dropout drawn
from the per-(step, rank) loss generator; the label-conditional network inside DistributedDataParallel).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import data_lib
from train_lib import get_cfg_loss_fn, get_loss_fn, optimization_manager, step_fn_options
from jobs.experiment import build_experiment
from jobs.run import step_seed
from jobs.streams import Stream

ROOT = Path(__file__).resolve().parents[1]
N_STEPS = 6
BATCH = 64
ATOL = float(os.environ.get("DDP_TEST_ATOL", 1e-6))  # float32 round-off on weights and losses of order 1
RUN = {
    "training.n_iters": N_STEPS,
    "training.batch_size": BATCH,
    "training.log_freq": 1,
    "training.eval_freq": 3,
    "training.snapshot_freq": N_STEPS,
    "training.snapshot_freq_for_preemption": 2,
    "training.snapshot_sampling": True,
    "model.nf": 32,
    "optim.warmup": 2,
    "optim.lr": 1e-2,
    "optim.eps": 1.0,  # Adam's update ~ lr g / (sqrt(v) + 1): scale-sensitive, so a wrong gradient scale shows
    "optim.grad_clip": -1.0,  # no clipping, which would also hide the gradient's scale
    "sampling.corrector": "none",
    "model.num_scales": 50,
    "training.mixed_precision": "no",  # the oracle computes in float32; 'auto' is bf16 on AMX CPUs
}


#: the configs trained: the VP toy config, and its classifier-free-guidance twin (labelled batches (x, y), the
#: label-conditional MLP, label dropout drawn from the loss generator)
CONFIGS = {"unconditional": "toy_mlp_continuous", "label_conditional": "toy_mlp_cfg"}


def toy_config_path(name: str = "unconditional") -> Path:
    return ROOT / "configs" / "vp" / f"{CONFIGS[name]}.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config_with(fields: dict, name: str = "unconditional"):
    from configs import load_config

    config = load_config(toy_config_path(name))
    for path, value in fields.items():
        section, field = path.split(".")
        setattr(config[section], field, value)
    return config


def run_torchrun(workdir: Path, fields: dict, name: str = "unconditional") -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
        f"--master_port={free_port()}", str(ROOT / "main.py"), f"--config={toy_config_path(name)}",
        f"--workdir={workdir}", *[f"--config.{k}={v}" for k, v in fields.items()],
    ]
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]


def single_process_on_combined_batch(config, workdir: Path) -> tuple[list[float], dict]:
    """The oracle of the module docstring: returns the per-step losses and the final state."""
    exp = build_experiment(config, workdir, "train")
    model, ema, optimizer = exp.model, exp.ema, exp.optimizer
    options = {k: v for k, v in step_fn_options(config, exp.sde).items() if k not in ("mixed_precision", "p_mean", "p_std")}
    if exp.labelled:
        cfg_loss = get_cfg_loss_fn(exp.sde, config.training.label_dropout, train=True, **options)
        loss_fn = lambda model, batch, generator: cfg_loss(model, exp.scaler(batch[0]), batch[1], generator)  # noqa: E731
    else:
        score_loss = get_loss_fn(exp.sde, train=True, **options)
        loss_fn = lambda model, batch, generator: score_loss(model, exp.scaler(batch), generator)  # noqa: E731
    optimize_fn = optimization_manager(config)
    half = BATCH // 2
    options = {"seed": config.seed, "with_labels": exp.labelled}
    streams = [data_lib.training_batches(exp.train_ds, half, rank=r, world_size=2, **options) for r in (0, 1)]
    whole = data_lib.training_batches(exp.train_ds, BATCH, **options)
    points = lambda batch: batch[0] if exp.labelled else batch  # noqa: E731
    losses = []
    for step in range(N_STEPS):
        halves = [next(stream) for stream in streams]
        combined, w = torch.cat([points(h) for h in halves]), points(next(whole))
        assert torch.equal(combined[combined[:, 0].argsort()], w[w[:, 0].argsort()])  # same examples
        optimizer.zero_grad(set_to_none=True)
        per_rank = [
            loss_fn(model, batch, torch.Generator().manual_seed(step_seed(config, Stream.LOSS_NOISE, step, rank)))
            for rank, batch in enumerate(halves)
        ]
        loss = (per_rank[0] + per_rank[1]) / 2  # the mean over all BATCH examples
        loss.backward()
        optimize_fn(optimizer, model.parameters(), step=step)
        ema.update(model.parameters())
        losses.append(float(loss.detach()))
    return losses, {"model": model.state_dict(), "ema": ema.state_dict()["shadow_params"]}


def tensorboard_losses(workdir: Path) -> dict[int, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = list((workdir / "tensorboard").glob("events.out.tfevents.*"))
    assert len(files) == 1, f"expected one event file (rank 0 only), got {files}"
    accumulator = EventAccumulator(str(files[0]))
    accumulator.Reload()
    return {event.step: event.value for event in accumulator.Scalars("training_loss")}


@pytest.mark.parametrize("name, reduce_mean", [("unconditional", True), ("unconditional", False), ("label_conditional", True)])
def test_two_process_ddp_equals_one_process_on_the_combined_batch(name, reduce_mean, tmp_path):
    fields = {**RUN, "training.reduce_mean": reduce_mean}
    run_torchrun(tmp_path / "ddp", fields, name)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        losses, state = single_process_on_combined_batch(config_with(fields, name), tmp_path / "single")
    finally:
        torch.set_num_threads(threads)

    logged = tensorboard_losses(tmp_path / "ddp")
    assert sorted(logged) == list(range(1, N_STEPS + 1))
    torch.testing.assert_close(torch.tensor([logged[s + 1] for s in range(N_STEPS)]), torch.tensor(losses), rtol=0, atol=ATOL)
    checkpoint = torch.load(tmp_path / "ddp" / "checkpoints" / "checkpoint_1.pth", weights_only=True)
    assert checkpoint["step"] == N_STEPS
    for name, tensor in state["model"].items():
        torch.testing.assert_close(checkpoint["model"][name], tensor, rtol=0, atol=ATOL, msg=name)
    for ours, theirs in zip(checkpoint["ema"]["shadow_params"], state["ema"], strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=ATOL)

    # only rank 0 wrote: one event file (checked above), each step logged once, no stray temporary files
    log = (tmp_path / "ddp" / "log.txt").read_text()
    assert log.count("training_loss") == N_STEPS and log.count("2 process(es) of 32") == 1
    written = sorted(str(p.relative_to(tmp_path / "ddp")) for p in (tmp_path / "ddp").rglob("*") if p.is_file())
    assert [p for p in written if not p.startswith("tensorboard/")] == [
        ".lock", "checkpoints-meta/checkpoint.pth", "checkpoints/checkpoint_1.pth", "config.json", "log.txt",
        f"samples/iter_{N_STEPS}/sample.npz", f"samples/iter_{N_STEPS}/sample.png",
    ]
