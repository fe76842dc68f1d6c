"""From a config to the validated pieces of an experiment, before any long work: the one place shared by all modes.

:func:`build_experiment` ``(config, workdir, mode)`` checks the whole config up front (unknown dataset, model,
SDE or sampler; a resolution or channel count the model or the data cannot take; a missing data path; a batch
that does not split over the ranks; a bad mode) and returns what the mode uses: every mode gets an
:class:`Experiment` (the SDE, the sampling ``eps``, the model with its EMA, the state checkpoints are restored
into, the data scalers, the sampler, the device, the rank layout and the workdir layout, :class:`WorkdirLayout`;
with ``config.model.compile`` the network's forward is ``torch.compile``'d in place, :func:`_compile_model`),
and ``train`` adds the optimizer, the step functions and both splits (:class:`TrainingExperiment`), ``eval`` the
evaluation loss and the test split (:class:`EvaluationExperiment`); ``sample`` needs nothing more
(:class:`SamplingExperiment`). A signal-conditioned network (``config.model.conditioning``) also gets the test
examples its samples are drawn for (:mod:`jobs.signal_conditioned`), and its sampler is conditioned on them.

Multi-process runs are launched by ``torchrun``, which sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``;
:func:`distributed_context` reads them and :func:`init_distributed` starts the process group (NCCL on CUDA, gloo
on the CPU). Every error raised while building is a :class:`ConfigError` (a ``ValueError``) naming the field.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

import data_lib
import models
from samplers.fast_tuning import FastSolverChoice
from samplers.from_config import check_continuous_time, fast_tuning_enabled, get_sampling_fn
from sde_lib import SDE, get_sde
from base_lib.config import config_value
from base_lib.checks import check_positive_int
from models.compiled import compile_network
from models.precision import resolve_mixed_precision
from sample_quality.audio import SPECTRUM_FFT

from . import signal_conditioned
from .config_checks import check_config_values
from .progress import LOGGER_NAME
from .conditional import ConditioningError, SamplingConditioning, check_label_dropout, num_classes, sampling_conditioning
from train_lib.checkpoints import CheckpointError
from train_lib.optim import get_optimizer
from train_lib.steps import TASKS, StepFn, get_step_fn_from_config

MODES = ("train", "eval", "sample")

#: sampling ``eps`` (the smallest time reached by a sampler) per SDE family, the 2021 reference's ``run_lib.py``
#: values (``train`` and ``evaluate``: 1e-3 for VP and sub-VP, 1e-5 for VE); ``config.sampling.eps`` overrides them

Scaler = Callable[[Tensor], Tensor]
SamplingFn = Callable[..., tuple[Tensor, int]]  # fn(model, generator, progress) -> (inverse-scaled x, nfe)


class ConfigError(ValueError):
    """A config that cannot run: raised by :func:`build_experiment` before any training, sampling or evaluation."""


# ------------------------------------------------------------------ processes and devices
@dataclasses.dataclass(frozen=True)
class DistributedContext:
    """Where this process sits among the ``torchrun`` workers (``rank 0 of 1`` for a plain run)."""

    rank: int = 0  # global rank, RANK
    world_size: int = 1  # number of processes, WORLD_SIZE
    local_rank: int = 0  # rank on this machine, LOCAL_RANK: picks the GPU

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes checkpoints, logs, TensorBoard events and samples."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name} must be an integer (set by torchrun), got {value!r}") from None


def distributed_context() -> DistributedContext:
    """The rank layout from ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (as ``torchrun`` sets them); one process if unset."""
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", rank)
    if world_size < 1 or not 0 <= rank < world_size or local_rank < 0:
        raise ConfigError(f"bad torchrun environment: RANK={rank}, WORLD_SIZE={world_size}, LOCAL_RANK={local_rank}")
    return DistributedContext(rank, world_size, local_rank)


def init_distributed(context: DistributedContext, device: torch.device) -> None:
    """Start the default process group for a multi-process run, once: NCCL on CUDA, gloo otherwise.

    The rendezvous comes from ``MASTER_ADDR`` / ``MASTER_PORT`` (set by ``torchrun``). A no-op for one process
    or when the group already exists.
    """
    if not context.is_distributed or torch.distributed.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    torch.distributed.init_process_group(backend, rank=context.rank, world_size=context.world_size)


def shutdown_distributed() -> None:
    """Destroy the default process group if one was started."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def resolve_device(config: Any, context: DistributedContext) -> torch.device:
    """``config.device`` (default ``'cpu'``); on CUDA with several processes, the GPU ``LOCAL_RANK`` (unless indexed)."""
    name = config_value(config, "device", "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as error:
        raise ConfigError(f"config.device={name!r} is not a torch device ({error})") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"config.device={name!r} but CUDA is not available here; use --config.device=cpu")
        if device.index is None:
            device = torch.device("cuda", context.local_rank if context.is_distributed else torch.cuda.current_device())
        if device.index >= torch.cuda.device_count():
            raise ConfigError(f"config.device={name!r} resolves to {device}, but only {torch.cuda.device_count()} GPU(s) exist")
        torch.cuda.set_device(device)
    return device


# ------------------------------------------------------------------ workdir
@dataclasses.dataclass(frozen=True)
class WorkdirLayout:
    """The files of a run under ``workdir``, with the 2021 reference's folder names."""

    workdir: Path  # root folder of the run

    @property
    def checkpoint_dir(self) -> Path:
        """Numbered checkpoints ``checkpoint_{k}.pth``, ``k = ceil(step / snapshot_freq)``
        (:meth:`checkpoint_index`)."""
        return self.workdir / "checkpoints"

    @property
    def meta_checkpoint(self) -> Path:
        """The pre-emption checkpoint, overwritten every ``snapshot_freq_for_preemption`` steps and resumed from."""
        return self.workdir / "checkpoints-meta" / "checkpoint.pth"

    @property
    def sample_dir(self) -> Path:
        return self.workdir / "samples"

    @property
    def fast_tuning_dir(self) -> Path:
        """``config.sampling.fast_tuning``'s choices of ``fast_sample`` options, one JSON record per checkpoint and
        sampler settings (:mod:`jobs.fast_tuning`)."""
        return self.workdir / "fast_tuning"

    @property
    def tensorboard_dir(self) -> Path:
        return self.workdir / "tensorboard"

    @property
    def log_file(self) -> Path:
        """The human-readable log of every run in this workdir (appended to)."""
        return self.workdir / "log.txt"

    @staticmethod
    def checkpoint_index(step: int, snapshot_freq: int) -> int:
        """The number of the checkpoint of ``step``: ``ceil(step / snapshot_freq)``. At multiples of ``snapshot_freq``
        it is the reference's ``step // snapshot_freq``; a run that ends between two multiples writes its last step
        into the next number, so it neither replaces the checkpoint of the multiple before it nor gets number 0 (which
        no evaluation range starts at). Training on past that step replaces it with a later state of the same
        interval, up to the multiple itself."""
        return -(-step // snapshot_freq)

    def checkpoint_path(self, index: int) -> Path:
        return self.checkpoint_dir / f"checkpoint_{index}.pth"

    def sample_folder(self, step: int) -> Path:
        return self.sample_dir / f"iter_{step}"


# ------------------------------------------------------------------ the experiment
@dataclasses.dataclass(kw_only=True)
class Experiment:
    """What every mode of a run uses (see :func:`build_experiment`); each mode's own parts are in its subclass."""

    config: Any  # the (copied) config; config.device is the resolved device
    mode: str  # "train", "eval" or "sample"
    layout: WorkdirLayout  # where checkpoints, samples, logs go
    device: torch.device  # where the model and batches live
    distributed: DistributedContext  # rank layout
    sde: SDE  # the forward SDE of config.training.sde
    sampling_eps: float  # smallest time of the samplers (config.sampling.eps, else sde.sampling_eps)
    model: nn.Module  # the score network (not wrapped in DistributedDataParallel; compiled in place: model.compile)
    score_model: models.ScoreModel | None  # the network read through its parameterization; None for a classifier
    ema: models.ExponentialMovingAverage  # EMA of the weights, config.model.ema_rate
    state: dict[str, Any]  # what checkpoints are restored into: {'model', 'ema', 'step'} (+ 'optimizer' to train)
    scaler: Scaler  # data in [0, 1] -> model space
    inverse_scaler: Scaler  # model space -> [0, 1]
    data_shape: tuple[int, ...]  # one example: (C, H, W) or (dim,)
    task: str = "score"  # "score": the score network; "classifier": the noise-conditional classifier of guidance
    labelled: bool = False  # batches are pairs (x, y) with class labels: a classifier or a label-conditional network
    conditioning: SamplingConditioning | None = None  # class labels and guidance of the samples; None: unconditional
    sampling_shape: tuple[int, ...] = ()  # (batch, *data_shape) of the sampling function
    sampling_fn: SamplingFn | None = None  # the configured sampler; None for a classifier, which draws no samples
    signal_examples: Tensor | None = None  # signal-conditioned network: test examples ([0, 1]) sample i is drawn for
    fast_choice: FastSolverChoice | None = None  # fast_sample's options tuned for the loaded checkpoint (jobs.fast_tuning)

    @property
    def sample_labels(self) -> Tensor | None:
        """The classes ``(B,)`` of a sampling batch, or ``None`` for unconditional samples."""
        return None if self.conditioning is None else self.conditioning.labels

    @property
    def per_rank_batch_size(self) -> int:
        """``config.training.batch_size / world_size``: the batch of each process, the global batch in total."""
        return int(self.config.training.batch_size) // self.distributed.world_size

    @property
    def batch_dtype(self) -> torch.dtype:
        """The dtype of the model's parameters, in which batches are built."""
        return models.model_dtype(self.model)


@dataclasses.dataclass(kw_only=True)
class TrainingExperiment(Experiment):
    """Mode ``train``: the optimizer (also in ``state``), the step functions and both splits."""

    optimizer: torch.optim.Optimizer  # from config.optim
    train_step_fn: StepFn  # one optimizer step (and EMA update) on a batch
    eval_step_fn: StepFn  # loss of a batch under the EMA weights
    train_ds: data_lib.Dataset  # training split
    test_ds: data_lib.Dataset  # test split: the periodic evaluation loss


@dataclasses.dataclass(kw_only=True)
class EvaluationExperiment(Experiment):
    """Mode ``eval`` (also the controllable jobs): the evaluation loss and the test split (the training split too
    when ``config.eval.bpd_dataset`` is ``'train'``); no optimizer."""

    eval_step_fn: StepFn  # loss of a batch under the EMA weights
    test_ds: data_lib.Dataset  # test split
    train_ds: data_lib.Dataset | None = None  # training split, for bits/dim on it

    @property
    def likelihood_ds(self) -> data_lib.Dataset:
        """The split whose likelihood (bits/dim) is measured: ``config.eval.bpd_dataset``, ``'test'`` by default."""
        train = str(config_value(self.config, "eval.bpd_dataset", "test")) == "train"
        if train and self.train_ds is None:
            raise ConfigError("config.eval.bpd_dataset='train', but the train split was not loaded")
        return self.train_ds if train else self.test_ds


@dataclasses.dataclass(kw_only=True)
class SamplingExperiment(Experiment):
    """Mode ``sample``: the model and its sampler only; no optimizer, no dataset, no loss."""


def sampling_eps(config: Any, sde: SDE) -> float:
    """``config.sampling.eps`` if set, else the SDE's own end time ``sde.sampling_eps`` (the reference's 1e-3 for VP
    and sub-VP, 1e-5 for VE; EDM's ``sigma_min``)."""
    value = config_value(config, "sampling.eps", None)
    if value is not None:
        return float(value)
    if sde.sampling_eps is None:
        raise ConfigError(f"no default sampling eps for {type(sde).__name__}: set config.sampling.eps")
    return float(sde.sampling_eps)


def _check_classes(config: Any, datasets: list[data_lib.Dataset], train_ds: data_lib.Dataset | None) -> None:
    """``config.data.num_classes`` must be the classes of the labelled data: no label at or above it, and, where the
    training split is loaded, no class beyond its labels (samples of such a class would follow a label the network
    never saw)."""
    if not datasets:
        return
    classes = num_classes(config)  # a ConditioningError, a ValueError: build_experiment makes it a ConfigError
    present = max(int(d.labels.max()) + 1 for d in datasets)
    if present > classes or (train_ds is not None and present != classes):
        raise ConfigError(f"config.data.num_classes={classes}, but the labels of {datasets[0].name} are 0..{present - 1}; "
                          f"set it to {present}")


def _check_waveform_metrics(config: Any, mode: str, shape: tuple[int, ...]) -> None:
    """Waveform samples that an evaluation will score (``eval.enable_sampling`` in ``eval``, or in ``train`` with
    ``eval.after_training``) must be long enough for the spectra of :mod:`sample_quality.audio`: refused here, not
    after training."""
    evaluates = mode == "eval" or (mode == "train" and bool(config_value(config, "eval.after_training", False)))
    scores = evaluates and bool(config_value(config, "eval.enable_sampling", True))
    if len(shape) == 2 and scores and shape[-1] < SPECTRUM_FFT:
        raise ConfigError(f"config.data.audio_length={shape[-1]} is shorter than the {SPECTRUM_FFT}-sample frames of the "
                          f"spectral sample metrics of the evaluation; use at least {SPECTRUM_FFT} (or "
                          f"config.eval.enable_sampling=False)")


def data_shape(config: Any) -> tuple[int, ...]:
    """One example's shape from ``config.data``: ``(dim,)`` for the toy densities, ``(1, audio_length)`` for
    waveforms, ``(num_channels, image_size, image_size)`` for images."""
    name = config_value(config, "data.dataset")
    known = {known.lower() for known in data_lib.DATASETS}
    if not isinstance(name, str) or name.lower() not in known:
        raise ConfigError(f"unknown config.data.dataset {name!r}; known: {', '.join(data_lib.DATASETS)}")
    if name.lower() in data_lib.TOY_DATASETS:
        return (check_positive_int("config.data.dim", config_value(config, "data.dim", 2)),)
    if name.lower() in data_lib.AUDIO_DATASETS:
        return data_lib.audio_shape(config)  # waveforms: (1, config.data.audio_length)
    channels = check_positive_int("config.data.num_channels", config_value(config, "data.num_channels"))
    size = check_positive_int("config.data.image_size", config_value(config, "data.image_size"))
    return (channels, size, size)


def _check_mode(mode: Any) -> str:
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


def _check_batch_split(config: Any, context: DistributedContext) -> None:
    batch = check_positive_int("config.training.batch_size", config_value(config, "training.batch_size"))
    if batch % context.world_size:
        raise ConfigError(
            f"config.training.batch_size={batch} must be divisible by the number of processes WORLD_SIZE="
            f"{context.world_size} (each process trains on batch_size / WORLD_SIZE examples)"
        )


def _check_model_name(config: Any) -> None:
    try:
        models.get_model(config_value(config, "model.name"))
    except ValueError as error:  # its message lists the known names
        raise ConfigError(f"config.model.name: {error}") from None


def _create_model(config: Any) -> nn.Module:
    """The network of ``config.model``, initialized from ``torch.manual_seed(config.seed)`` on the CPU generator
    only (the global RNG state is put back), then moved to ``config.device``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(config_value(config, "seed", 0)))
        try:
            return models.create_model(config)
        except ValueError as error:  # a setting the network cannot take, named by the network
            raise ConfigError(f"config.model.name={config.model.name!r} cannot be built from this config: {error}") from None


def _compile_model(config: Any, model: nn.Module) -> nn.Module:
    """``config.model.compile``: ``'none'`` leaves ``model`` as it is; a ``torch.compile`` mode compiles its forward
    in place (:func:`models.compiled.compile_network`: parameters, state dict, EMA, checkpoints and DDP see the same
    module). Each compilation's cost (the first call of each kind: train or eval, a new shape) goes to the run's log."""
    mode = str(config_value(config, "model.compile", "none"))
    name = str(config_value(config, "model.name"))

    def report(seconds: float, count: int, autograd: bool) -> None:
        again = "" if count == 1 else f" (compilation {count}: a new input shape, train/eval mode or autograd)"
        backward = "; its backward pass compiles at the first backward" if autograd else ""
        logging.getLogger(LOGGER_NAME).info("compiled %s (torch.compile mode %r) in %.1f s%s%s", name, mode, seconds,
                                            again, backward)

    return compile_network(model, mode, on_compile=report)


def check_model_input(score_model: models.ScoreModel, shape: tuple[int, ...], device: torch.device) -> None:
    """One score evaluation on a single example of ``shape`` at ``t = T / 2``: a resolution or channel count the
    network cannot take fails here, with the model's error, instead of at the first training step."""
    x = torch.zeros((1, *shape), device=device, dtype=models.model_dtype(score_model.network))
    try:
        with torch.no_grad():
            signal = None if score_model.condition_map is None else score_model.condition_map(x)
            out = score_model.score(x, score_model.sde.T / 2, signal)
    except (ValueError, RuntimeError, IndexError) as error:
        raise ConfigError(
            f"the model {type(score_model.network).__name__} cannot take data of shape {shape} (config.data): {error}"
        ) from error
    if out.shape != x.shape:
        raise ConfigError(f"the model returned {tuple(out.shape)} for an input of shape {tuple(x.shape)}")


def _check_continuous_time(config: Any, mode: str, score_model: models.ScoreModel) -> None:
    """A likelihood evaluation (``eval.enable_bpd``, run by ``eval`` and by ``train`` with ``eval.after_training``)
    of a step-indexed network is refused before any work, as :func:`samplers.get_sampling_fn` refuses the
    continuous-time samplers."""
    evaluates = mode == "eval" or (mode == "train" and bool(config_value(config, "eval.after_training", False)))
    if evaluates and bool(config_value(config, "eval.enable_bpd", False)):
        check_continuous_time(score_model.parameterization, "config.eval.enable_bpd=True (the likelihood of the "
                              "probability-flow ODE)", score_model.sde, "set config.eval.enable_bpd=False")


def check_classifier_input(classifier: nn.Module, sde: SDE, shape: tuple[int, ...], classes: int, device: torch.device) -> None:
    """One forward pass of the noise-conditional classifier on a single example of ``shape`` at ``t = T / 2``: it
    must return ``(1, classes)`` logits (``config.data.num_classes``)."""
    x = torch.zeros((1, *shape), device=device, dtype=models.model_dtype(classifier))
    t = torch.full((1,), sde.T / 2, device=device, dtype=x.dtype)
    try:
        with torch.no_grad():
            logits = classifier.eval()(x, t)
    except (ValueError, RuntimeError, IndexError, TypeError) as error:
        raise ConfigError(f"the classifier {type(classifier).__name__} cannot take data of shape {shape}: {error}") from error
    if not isinstance(logits, Tensor) or logits.shape != (1, classes):
        got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ConfigError(f"the classifier must return logits (B, config.data.num_classes) = (1, {classes}), got {got}")


def _load_datasets(config: Any, mode: str, shape: tuple[int, ...]) -> tuple[data_lib.Dataset | None, data_lib.Dataset | None]:
    """The splits a mode reads: train and test for training, test (and train when ``config.eval.bpd_dataset`` is
    ``'train'``) for evaluation, none for sampling. Each must have examples of ``shape``."""
    needed = {"train": ("train", "test"), "eval": ("test",), "sample": ()}[mode]
    if mode == "eval" and str(config_value(config, "eval.bpd_dataset", "test")) == "train":
        needed = ("train", "test")
    loaded = {split: data_lib.get_dataset(config, split) for split in needed}
    for split, dataset in loaded.items():
        if dataset.shape != shape:
            raise ConfigError(
                f"the {split} split of {dataset.name} has examples of shape {dataset.shape}, but config.data "
                f"describes {shape}"
            )
    return loaded.get("train"), loaded.get("test")


def build_experiment(config: Any, workdir: str | os.PathLike, mode: str = "train", task: str = "score") -> Experiment:
    """Check ``config`` for ``mode`` and build what that mode uses; :class:`ConfigError` naming the field otherwise.

    Returns a :class:`TrainingExperiment` (``'train'``: optimizer, step functions, both splits), an
    :class:`EvaluationExperiment` (``'eval'``: the evaluation loss and the test split) or a
    :class:`SamplingExperiment` (``'sample'``: no optimizer, no dataset). Each piece is built once.

    ``task`` is ``'score'`` (the score network of ``config.model``) or ``'classifier'`` (``config.model`` is the
    noise-conditional classifier of classifier guidance, trained on labelled data: the config of
    :func:`jobs.conditional.classifier_config`; it has no sampler).

    Cheap checks come first (mode, rank layout, device, SDE, model name, sampler), then the model is built
    (seeded by ``config.seed``) and called once on one example, and the datasets are opened last (a missing
    ``config.data.root`` fails there). Nothing is written to ``workdir``; nothing is restored from it.
    In a ``torchrun`` job the process group is started here (:func:`init_distributed`).
    """
    try:
        return _build(config, Path(workdir), mode, task)
    except (ConfigError, CheckpointError):  # a missing classifier checkpoint is a job error, as the model's
        raise
    except ValueError as error:
        raise ConfigError(str(error)) from error


def _build(config: Any, workdir: Path, mode: str, task: str) -> Experiment:
    mode = _check_mode(mode)
    check_config_values(config)
    if task not in TASKS:
        raise ConfigError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    context = distributed_context()
    _check_batch_split(config, context)
    device = resolve_device(config, context)
    config = copy.deepcopy(config)
    with config.unlocked():
        config.device = str(device)
    sde = get_sde(config)
    eps = sampling_eps(config, sde)
    shape = data_shape(config)
    _check_waveform_metrics(config, mode, shape)
    _check_model_name(config)
    scaler, inverse_scaler = data_lib.get_data_scaler(config), data_lib.get_data_inverse_scaler(config)
    batch_field = "training.batch_size" if mode == "train" else "eval.batch_size"
    sample_batch = check_positive_int(f"config.{batch_field}", config_value(config, batch_field))
    sampling_shape = (sample_batch, *shape)
    model = _create_model(config)
    conditioning = score_model = examples = None
    try:
        if task == "classifier":
            check_classifier_input(model, sde, shape, num_classes(config), device)
        else:
            score_model = models.ScoreModel.from_config(config, model, sde)
            _check_continuous_time(config, mode, score_model)
            check_model_input(score_model, shape, device)
            check_label_dropout(config, model)
            conditioning = sampling_conditioning(config, model, sample_batch, workdir, device, load=mode != "train")
            signal_conditioned.check_signal_conditioning(config, model)
            examples = signal_conditioned.signal_examples(
                config, model, signal_conditioned.sampling_count(config, mode, sample_batch)
            )
            if examples is not None and fast_tuning_enabled(config):
                raise ConfigError("config.sampling.fast_tuning=True is not available for a signal-conditioned network "
                                  "(its samples are conditioned on test examples); set it to False")
    except ConditioningError as error:
        raise ConfigError(str(error)) from error
    model = _compile_model(config, model)  # after the one-example checks, so that building compiles nothing
    sampling_fn = None
    if task == "score":
        factory = None if conditioning is None else conditioning.score_factory
        sampling_fn = get_sampling_fn(config, sde, sampling_shape, inverse_scaler, eps, factory)
        if examples is not None:  # samples of a signal-conditioned network: for the first test examples
            sampling_fn = signal_conditioned.conditioned_sampling_fn(
                config, sde, model, scaler(examples[:sample_batch].to(device)), inverse_scaler, eps
            )
    ema = models.ExponentialMovingAverage(model.parameters(), decay=config_value(config, "model.ema_rate"))
    state: dict[str, Any] = {"model": model, "ema": ema, "step": 0}
    common = dict(
        config=config, mode=mode, layout=WorkdirLayout(workdir), device=device, distributed=context, sde=sde,
        sampling_eps=eps, model=model, score_model=score_model, ema=ema, state=state, scaler=scaler, inverse_scaler=inverse_scaler,
        data_shape=shape, task=task, conditioning=conditioning, sampling_shape=sampling_shape, sampling_fn=sampling_fn,
        signal_examples=examples,
        labelled=task == "classifier" or config_value(config, "training.label_dropout", None) is not None,
    )
    if mode == "sample":
        init_distributed(context, device)
        return SamplingExperiment(**common)
    train_ds, test_ds = _load_datasets(config, mode, shape)
    if common["labelled"]:
        _check_classes(config, [data_lib.check_labelled(d) for d in (train_ds, test_ds) if d is not None], train_ds)
    eval_step_fn = get_step_fn_from_config(config, sde, train=False, task=task)
    if mode == "eval":
        init_distributed(context, device)
        return EvaluationExperiment(**common, eval_step_fn=eval_step_fn, test_ds=test_ds, train_ds=train_ds)
    # fp16 needs CUDA: refused here (build_experiment makes the ValueError a ConfigError), not at the first step
    resolve_mixed_precision(config_value(config, "training.mixed_precision", "auto"), device,
                            name="config.training.mixed_precision")
    if len(train_ds) < int(config.training.batch_size):
        raise ConfigError(f"config.training.batch_size={config.training.batch_size} is more than the {len(train_ds)} "
                          f"examples of the train split of {train_ds.name}; use at most {len(train_ds)}")
    optimizer = state["optimizer"] = get_optimizer(config, model.parameters())
    train_step_fn = get_step_fn_from_config(config, sde, train=True, task=task)
    init_distributed(context, device)
    return TrainingExperiment(**common, optimizer=optimizer, train_step_fn=train_step_fn, eval_step_fn=eval_step_fn,
                              train_ds=train_ds, test_ds=test_ds)
