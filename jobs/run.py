"""The training job: :func:`train` ``(config, workdir)``, resumable after pre-emption, on one or many processes.

The loop follows the 2021 reference's ``run_lib.train`` with these conventions: ``state['step']`` counts the
optimizer steps done; the run stops after ``config.training.n_iters`` of them (the reference's loop makes one
more). After step ``s``:

* every ``log_freq`` steps: the training loss (averaged over ranks) to ``workdir/log.txt``, stdout and
  TensorBoard (``training_loss``), with the speed in steps per second and the time left at that speed;
* when stderr is not a terminal (no tqdm bar), a progress line (step, steps per second, time left) to the log
  a few seconds after the start and then every 20 seconds without another line (:class:`jobs.progress.ProgressLog`);
* every ``snapshot_freq_for_preemption`` steps and at the end: ``checkpoints-meta/checkpoint.pth``, from which a
  re-run resumes;
* every ``eval_freq`` steps: the loss of a test batch under the EMA weights (``eval_loss``);
* every ``snapshot_freq`` steps and at the end: ``checkpoints/checkpoint_{ceil(s / snapshot_freq)}.pth`` (the
  reference's ``s // snapshot_freq``, except that a last step between two multiples takes the next number) and, with
  ``snapshot_sampling``, samples of the configured sampler under the EMA weights in ``samples/iter_{s}/``
  (``sample.png``: an image grid, or a scatter plot of 2-D points; ``sample.npz``).

Determinism: the weights are initialized from ``config.seed``; batch ``s`` of rank ``r`` depends only on
``(seed, s, r)`` (:func:`data_lib.training_batches`); the loss noise of step ``s`` comes from a generator seeded
with ``(seed, s, r)`` and the global RNG (dropout) is reseeded from ``(seed, s, r)`` before the step. A run resumed
from the meta checkpoint of step ``s`` therefore continues the uninterrupted trajectory exactly.

Several processes (``torchrun``): the model is wrapped in ``DistributedDataParallel`` (gradients averaged over
ranks), each rank trains on ``batch_size / WORLD_SIZE`` examples of its own shard, every rank resumes from the
meta checkpoint, and only rank 0 writes checkpoints, logs, TensorBoard events and samples.

A non-finite loss (or non-finite weights at a checkpoint) stops training with :class:`TrainingDivergedError`
before anything of the bad state is saved. The step losses stay on the device until a step that logs, evaluates
or saves, where they are read and checked together, so the device is not waited for at every step; nor at the
batch: batch ``s + 1`` is built and sent once step ``s`` is queued, from page-locked memory on CUDA (a copy from
pageable memory would wait for the queued step).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
from torch import Tensor
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

import data_lib
from data_lib import mix_seeds
from base_lib.config import config_value
from base_lib.checks import check_positive_int
from models.compiled import is_compiled
from models.precision import native_bf16, resolve_mixed_precision

from train_lib.checkpoints import (
    CheckpointError, checkpoint_payload, load_checkpoint_file, nonfinite_entries, restore_checkpoint, save_checkpoint,
)
from .experiment import ConfigError, Experiment, TrainingExperiment, build_experiment
from .run_config import reconcile_with_record
from .audio import sample_rate_of
from .images import save_samples
from .progress import LOGGER_NAME, ProgressLog, output_is_terminal
from .runtime import thread_line
from .streams import Stream
from .workdir import workdir_lock

LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"
MAX_UNREAD_LOSSES = 1000  # the loop reads the step losses at least this often (they are kept on the device till then)


class TrainingDivergedError(RuntimeError):
    """The loss or the weights became NaN or infinite; the last good checkpoint is left as it was."""


@dataclasses.dataclass(frozen=True)
class Schedule:
    """The step counts of ``config.training`` (the reference's fields)."""

    n_iters: int  # optimizer steps of the whole run
    log_freq: int  # log the training loss every this many steps
    eval_freq: int  # evaluate the loss on a test batch every this many steps
    snapshot_freq: int  # numbered checkpoint (and samples) every this many steps
    snapshot_freq_for_preemption: int  # meta checkpoint every this many steps
    snapshot_sampling: bool  # sample at every numbered checkpoint

    @classmethod
    def from_config(cls, config: Any) -> "Schedule":
        field = lambda name: config_value(config, f"training.{name}")  # noqa: E731
        try:
            counts = {
                name: check_positive_int(f"config.training.{name}", field(name))
                for name in ("n_iters", "log_freq", "eval_freq", "snapshot_freq", "snapshot_freq_for_preemption")
            }
        except ValueError as error:
            raise ConfigError(str(error)) from error
        sampling = field("snapshot_sampling")
        if not isinstance(sampling, bool):
            raise ConfigError(f"config.training.snapshot_sampling must be True or False, got {sampling!r}")
        return cls(**counts, snapshot_sampling=sampling)


# ------------------------------------------------------------------ logging
def open_log(log_file: Path, enabled: bool) -> logging.Logger:
    """The run's logger: ``log_file`` (appended) and stdout on rank 0, silent elsewhere. Its first line says how
    many CPU threads the job uses and why (:func:`jobs.runtime.thread_line`)."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    if not enabled:
        logger.addHandler(logging.NullHandler())
        return logger
    log_file.parent.mkdir(parents=True, exist_ok=True)
    formatter = logging.Formatter(LOG_FORMAT)
    for handler in (logging.FileHandler(log_file, encoding="utf-8"), logging.StreamHandler(sys.stdout)):
        handler.setFormatter(formatter)
        logger.addHandler(handler)
    logger.info(thread_line())
    return logger


def close_log(logger: logging.Logger) -> None:
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()


def _summary_writer(folder: Path, enabled: bool):
    if not enabled:
        return None
    from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

    return SummaryWriter(str(folder))


# ------------------------------------------------------------------ pieces of the loop
def step_seed(config: Any, stream: Stream, *indices: int) -> int:
    """A 64-bit seed for ``stream`` (:class:`jobs.streams.Stream`) at ``indices`` (step, rank), derived from
    ``config.seed``."""
    return mix_seeds(int(config_value(config, "seed", 0)), stream, *indices) % 2**63


def _reseed_global_rng(device: torch.device, seed: int) -> None:
    """Reseed torch's global generator of ``device``, what dropout draws from. Only that one generator: a full
    ``torch.manual_seed`` also reseeds every accelerator and costs about a millisecond."""
    if device.type == "cuda":
        torch.cuda.default_generators[device.index].manual_seed(seed)
    elif device.type == "cpu":
        torch.default_generator.manual_seed(seed)
    else:
        torch.manual_seed(seed)


def _read_losses(losses: list[Tensor], exp: TrainingExperiment, step: int, schedule: Schedule) -> float:
    """The losses of the steps up to ``step`` not read yet, averaged over ranks (the loss of the combined batch) and
    checked; returns that of ``step`` and empties ``losses``.

    Reading a loss waits for the device to finish its step, so the loop reads them in one go (one wait, one
    all-reduce) when it needs them. :class:`TrainingDivergedError` names the first step whose loss is not finite."""
    values = torch.stack(losses)
    if exp.distributed.is_distributed:
        torch.distributed.all_reduce(values)
        values /= exp.distributed.world_size
    values, first_step = values.tolist(), step - len(losses) + 1
    losses.clear()
    for offset, value in enumerate(values):
        _check_finite_loss(value, first_step + offset, exp, schedule)
    return values[-1]


def _check_finite_weights(exp: TrainingExperiment, step: int) -> None:
    """:class:`TrainingDivergedError` if a weight, an EMA weight or an optimizer moment is NaN or infinite."""
    bad = nonfinite_entries(checkpoint_payload(exp.state))
    if bad:
        raise TrainingDivergedError(
            f"the weights are not finite after step {step} ({bad[0]}); nothing was saved from this state. "
            f"{_last_good(exp)}"
        )


def _last_good(exp: TrainingExperiment) -> str:
    """Where the run can restart from: the meta checkpoint, if it loads and passes every check."""
    meta = exp.layout.meta_checkpoint
    if not meta.exists():
        return "No checkpoint had been saved."
    try:
        step = int(load_checkpoint_file(meta)["step"])
    except CheckpointError as error:
        return f"The meta checkpoint is not usable either: {error}."
    return f"The last good checkpoint is kept: {meta} (step {step})."


def _save(path: Path, exp: TrainingExperiment, step: int) -> None:
    """Write the state to ``path`` atomically, after checking that no weight is NaN or infinite."""
    _check_finite_weights(exp, step)
    save_checkpoint(path, exp.state)


Batch = Tensor | tuple[Tensor, Tensor]  # x, or (x, y) with class labels (Experiment.labelled)


def _to_device(tensor: Tensor, device: torch.device) -> Tensor:
    """``tensor`` on ``device`` without waiting for it: to CUDA from page-locked memory, since a copy from pageable
    memory first waits for the device to finish all its queued work (CUDA's rule for pageable transfers)."""
    if device.type == "cuda" and not tensor.is_pinned():
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


def model_batch(exp: Experiment, batch: Batch) -> Batch:
    """A batch from :func:`data_lib.training_batches` on the experiment's device, the data scaler applied to ``x``."""
    if isinstance(batch, tuple):
        x, y = batch
        return exp.scaler(_to_device(x, exp.device)), _to_device(y, exp.device)
    return exp.scaler(_to_device(batch, exp.device))


def _eval_batches(exp: TrainingExperiment, start_step: int, eval_freq: int) -> Iterator[Batch]:
    """Test batches, the ``k``-th used at step ``(k + 1) eval_freq``; a resumed run continues the same sequence."""
    test_ds = exp.test_ds
    batch = min(int(exp.config.training.batch_size), len(test_ds))
    return data_lib.training_batches(
        test_ds, batch, seed=step_seed(exp.config, Stream.EVAL_BATCH_ORDER), start_step=start_step // eval_freq,
        **data_lib.preprocessing_options(exp.config, train=False), dtype=exp.batch_dtype, with_labels=exp.labelled,
    )


def _evaluate(exp: TrainingExperiment, batches: Iterator[Batch], step: int) -> float:
    """Loss of the next test batch under the EMA weights (on this process only)."""
    batch = model_batch(exp, next(batches))
    generator = torch.Generator(exp.device).manual_seed(step_seed(exp.config, Stream.EVAL_NOISE, step))
    return float(exp.eval_step_fn(exp.state, batch, generator))


def _snapshot_samples(exp: TrainingExperiment, step: int) -> dict[str, Path]:
    """Samples of the configured sampler under the EMA weights, saved in ``samples/iter_{step}/``."""
    model, ema = exp.model, exp.ema
    generator = torch.Generator(exp.device).manual_seed(step_seed(exp.config, Stream.SNAPSHOT_SAMPLES, step))
    ema.store(model.parameters())
    ema.copy_to(model.parameters())
    try:
        samples, nfe = exp.sampling_fn(model, generator=generator)
    finally:
        ema.restore(model.parameters())
    title = f"step {step}, {nfe} score evaluations"
    if exp.conditioning is not None:
        title += f", {exp.conditioning.describe()}"
    return save_samples(samples, exp.layout.sample_folder(step), title=title, labels=exp.sample_labels,
                        sample_rate=sample_rate_of(exp.config))


def _resume(exp: TrainingExperiment, logger: logging.Logger) -> int:
    """Restore the meta checkpoint into the state if there is one (every rank); the step to continue from."""
    meta = exp.layout.meta_checkpoint
    if meta.exists():
        restore_checkpoint(meta, exp.state, map_location=exp.device)
        logger.info("resumed from %s at step %d", meta, exp.state["step"])
    else:
        logger.info("no checkpoint at %s: starting at step 0", meta)
    return int(exp.state["step"])


def _training_state(exp: TrainingExperiment) -> dict[str, Any]:
    """The state the training step updates: ``exp.state``, with the model in ``DistributedDataParallel`` when
    several processes train (its gradients are averaged over ranks in the backward pass)."""
    if not exp.distributed.is_distributed:
        return exp.state
    device_ids = [exp.device.index] if exp.device.type == "cuda" else None
    ddp = torch.nn.parallel.DistributedDataParallel(exp.model, device_ids=device_ids)
    return {**exp.state, "model": ddp}


def _describe(exp: TrainingExperiment, schedule: Schedule) -> str:
    config = exp.config
    what = "the noise-conditional classifier " if exp.task == "classifier" else ""
    if exp.labelled and exp.task == "score":
        what = f"the label-conditional network (label dropout {config.training.label_dropout}) "
    return (
        f"training {what}{config.model.name} on {config.data.dataset} {exp.data_shape} with {type(exp.sde).__name__}, "
        f"{schedule.n_iters} steps of batch {config.training.batch_size} "
        f"({exp.distributed.world_size} process(es) of {exp.per_rank_batch_size}) on {exp.device}; "
        f"workdir {exp.layout.workdir}"
    )


# ------------------------------------------------------------------ the job
def train(config: Any, workdir: str | os.PathLike, task: str = "score", allow_config_changes: Iterable[str] = ()) -> TrainingExperiment:
    """Train the model of ``config`` in ``workdir`` (module docstring), resuming from its meta checkpoint.

    ``task='classifier'``: ``config.model`` is the noise-conditional classifier of classifier guidance
    (:func:`jobs.build_experiment`), trained on labelled batches; no samples are drawn.

    Every config error is raised (:class:`ConfigError`) before any step; a corrupt meta checkpoint raises
    :class:`train_lib.CheckpointError` naming the file; a NaN or infinite loss raises
    :class:`TrainingDivergedError` naming the step; another job in ``workdir`` raises
    :class:`jobs.workdir.WorkdirBusyError` before anything is read or written (the lock is held until the end).
    A workdir that already holds a run resumes it only if ``config`` trains as the recorded one
    (``workdir/config.json``; :func:`jobs.run_config.reconcile_with_record`), apart from the fields or sections
    named in ``allow_config_changes``; the config is then recorded.

    Returns the :class:`TrainingExperiment`, whose ``state`` is final.
    """
    with workdir_lock(workdir, "train" if task == "score" else "train_classifier"):
        schedule = Schedule.from_config(config)
        exp = build_experiment(config, workdir, "train", task=task)
        reconcile_with_record(config, workdir, allow_config_changes, write=exp.distributed.is_main)
        main = exp.distributed.is_main
        logger = open_log(exp.layout.log_file, main)
        writer = None
        try:
            logger.info(_describe(exp, schedule))
            setting = config_value(config, "training.mixed_precision", "auto")
            logger.info(
                "mixed precision of the training step: %s (training.mixed_precision=%r on %s)",
                resolve_mixed_precision(setting, exp.device), setting, exp.device,
            )
            if setting == "bf16" and not native_bf16(exp.device):
                logger.warning(
                    "training.mixed_precision='bf16': %s has no bf16 matrix units (CPU capability %s), so bf16 runs "
                    "many times slower than float32 here (benchmarks/precision.py); 'no' is faster", exp.device,
                    torch.backends.cpu.get_cpu_capability() if exp.device.type == "cpu" else exp.device.type,
                )
            step = _resume(exp, logger)
            if step >= schedule.n_iters:
                logger.info("training already finished: step %d of %d", step, schedule.n_iters)
                return exp
            writer = _summary_writer(exp.layout.tensorboard_dir, main)
            _train_loop(exp, schedule, step, logger, writer)
            if exp.distributed.is_distributed:
                torch.distributed.barrier()  # every rank returns once rank 0 has written the last files
            return exp
        finally:
            if writer is not None:
                writer.close()
            close_log(logger)


def _check_finite_loss(loss: float, step: int, exp: TrainingExperiment, schedule: Schedule) -> None:
    if not math.isfinite(loss):
        raise TrainingDivergedError(
            f"the training loss is {loss} at step {step} of {schedule.n_iters}; training stopped and nothing was "
            f"saved from this state. {_last_good(exp)} Lower config.optim.lr, keep config.optim.grad_clip >= 0, "
            "or check the data."
        )


def _losses_due(schedule: Schedule, step: int, unread: int) -> bool:
    """Whether the loop reads the losses after ``step``: at every step that logs, evaluates or saves, so that a
    non-finite loss stops the run before anything of its state is written, and after at most
    :data:`MAX_UNREAD_LOSSES` steps. Every rank decides alike (the reading is an all-reduce)."""
    periods = (schedule.log_freq, schedule.eval_freq, schedule.snapshot_freq, schedule.snapshot_freq_for_preemption)
    return step == schedule.n_iters or unread >= MAX_UNREAD_LOSSES or any(step % period == 0 for period in periods)


def _train_loop(exp: TrainingExperiment, schedule: Schedule, step: int, logger: logging.Logger, writer: Any) -> None:
    """Steps ``step + 1 .. n_iters``: the update on every rank, then rank 0's periodic work (:func:`_after_step`)."""
    config, context = exp.config, exp.distributed
    batches = data_lib.training_batches(
        exp.train_ds, exp.per_rank_batch_size, seed=int(config_value(config, "seed", 0)), start_step=step,
        rank=context.rank, world_size=context.world_size,
        **data_lib.preprocessing_options(config, train=True), dtype=exp.batch_dtype, with_labels=exp.labelled,
    )
    eval_batches = _eval_batches(exp, step, schedule.eval_freq) if context.is_main else None
    state = _training_state(exp)
    generator = torch.Generator(exp.device)
    losses: list[Tensor] = []  # the losses of the steps not read yet (:func:`_read_losses`), on the device
    show_bar = context.is_main and output_is_terminal()
    progress = ProgressLog(logger, schedule.n_iters, step, enabled=context.is_main and not show_bar)
    with tqdm(total=schedule.n_iters, initial=step, desc="train", dynamic_ncols=True, disable=not show_bar) as bar, (
        logging_redirect_tqdm([logger]) if show_bar else contextlib.nullcontext()
    ):
        batch = model_batch(exp, next(batches))
        first_step = step
        while step < schedule.n_iters:
            generator.manual_seed(step_seed(config, Stream.LOSS_NOISE, step, context.rank))
            _reseed_global_rng(exp.device, step_seed(config, Stream.GLOBAL_RNG, step, context.rank))
            losses.append(exp.train_step_fn(state, batch, generator).detach())
            step = exp.state["step"] = int(state["step"])
            if step < schedule.n_iters:  # the next batch, built and sent while an accelerator still runs this step
                batch = model_batch(exp, next(batches))
            if step == first_step + 1 and is_compiled(exp.model):
                progress.restart(step)  # the first step compiled the graphs: its time is no measure of the rest
            bar.update(1)
            loss = None
            if _losses_due(schedule, step, len(losses)):
                loss = _read_losses(losses, exp, step, schedule)
                bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
            if context.is_main:
                _after_step(exp, schedule, step, loss, eval_batches, logger, writer, progress)
                progress.tick(step)
    logger.info("finished training at step %d", step)


def _after_step(
    exp: TrainingExperiment, schedule: Schedule, step: int, loss: float | None, eval_batches: Iterator[Batch],
    logger: logging.Logger, writer: Any, progress: ProgressLog,
) -> None:
    """Rank 0, after step ``step``: log, evaluation, numbered checkpoint, samples and, last, the meta checkpoint,
    when due. The meta checkpoint of a step is written only once everything else of that step is on disk: a run
    killed at any moment resumes from a step whose outputs are all there, and redoes (identically) what followed.
    ``loss``: the step's loss, read and checked at every step where something is due (:func:`_losses_due`), else
    ``None``."""
    n_iters, layout = schedule.n_iters, exp.layout
    if step % schedule.log_freq == 0:
        logger.info("step %d/%d  training_loss %.6e  %s", step, n_iters, loss, progress.speed(step))
        writer.add_scalar("training_loss", loss, step)
    if step % schedule.eval_freq == 0:
        eval_loss = _evaluate(exp, eval_batches, step)
        logger.info("step %d/%d  eval_loss %.6e", step, n_iters, eval_loss)
        writer.add_scalar("eval_loss", eval_loss, step)
    if step % schedule.snapshot_freq == 0 or step == n_iters:
        path = layout.checkpoint_path(layout.checkpoint_index(step, schedule.snapshot_freq))
        _save(path, exp, step)
        logger.info("step %d/%d  saved %s", step, n_iters, path)
        if schedule.snapshot_sampling and exp.sampling_fn is not None:
            paths = _snapshot_samples(exp, step)
            logger.info("step %d/%d  samples in %s", step, n_iters, paths["png"])
    if step % schedule.snapshot_freq_for_preemption == 0 or step == n_iters:
        _save(layout.meta_checkpoint, exp, step)
