"""The ``eval`` and ``sample`` jobs of ``main.py``: test loss, likelihood and samples of saved checkpoints.

:func:`evaluate` ``(config, workdir, eval_folder='eval')`` goes through the numbered checkpoints
``config.eval.begin_ckpt .. config.eval.end_ckpt`` that exist in ``workdir/checkpoints`` and, under the EMA
weights of each, computes what ``config.eval`` enables:

* ``enable_loss``: the training objective on the whole test split (every example once; the mean over examples).
* ``enable_bpd``: for quantized data (images with ``L = dataset.num_levels`` levels: 17 for the digits, 256 for
  8-bit images) the bits per dimension of uniformly dequantized test data through the probability-flow ODE
  ([SDE] Sec. 4.3 and Table 2; :func:`samplers.dequantized_bits_per_dim`), averaged over ``bpd_num_repeats``
  dequantizations, with its standard error over test examples; for continuous data (the 2-D toy densities) the
  exact log-likelihood in nats per example (no quantization; the exact divergence for low dimensions), beside the
  true log-density of the same points where :func:`data_lib.toy_log_prob` has one. Beside the standard error it
  reports the solver's error estimate (:func:`likelihood_error_check`: ``eval.likelihood_error_samples`` examples
  solved again at a 10x tighter tolerance, or with twice the steps of the fixed-grid ``rk4``); with
  ``eval.likelihood_accuracy`` the tolerance (the steps) is chosen from the accuracy asked for
  (:func:`samplers.likelihood.choose_tolerance`) instead of ``likelihood_rtol`` / ``_atol`` (``likelihood_steps``).
* ``enable_sampling``: ``num_samples`` samples of the configured sampler in rounds of ``eval.batch_size`` (the
  last round draws only what is left), round ``r`` saved as ``ckpt_{k}/samples_{r}.npz`` (written atomically: a
  temporary file renamed over the target) and drawn from a generator seeded by ``(config.seed, k, r)``. Each
  file records what produced it (:func:`round_record`: the checkpoint and its SHA-256, the SDE, the sampler and
  all its settings, the seed, the round's size). A re-run keeps the rounds whose record is the one asked for, so
  after a pre-emption only the missing rounds are drawn and the final set equals that of an uninterrupted run;
  a round drawn from another checkpoint or with other settings is drawn again (the log says which field
  changed), never reused. The samples are then scored by the metrics registered for the kind of data
  (:func:`register_sample_metric`, :func:`metric_kinds`): for the 2-D toy densities the sliced Wasserstein
  distance to fresh data and the mean exact log-density of the samples (:func:`sample_quality.toy_metrics`); image
  metrics (a digits classifier, FID) plug in the same way.

Results go to ``workdir/eval_folder/ckpt_{k}/report.json`` (written atomically), to ``log.txt`` and to stdout.
With several processes (``torchrun``) round ``r`` is drawn by rank ``r % WORLD_SIZE``, each rank takes its shard
of the test split and the sums are all-reduced; only rank 0 writes the report.

:func:`sample` ``(config, workdir, eval_folder='samples')`` draws ``eval.num_samples`` samples from the latest
checkpoint (``config.eval.ckpt`` if set, else the pre-emption checkpoint or the highest numbered one) in the same
resumable, recorded rounds and saves them with a PNG grid (a scatter plot for 2-D points).

A signal-conditioned network (``config.model.conditioning``, e.g. SR3) draws sample ``i`` for test example
``i mod N`` (its signal ``condition_map(x0)``; :mod:`jobs.signal_conditioned`); ``eval`` and ``sample`` save the
originals and the conditions beside the samples and report the PSNR of the samples against the originals.

:func:`train_and_evaluate` is the ``train`` job of ``main.py``: :func:`jobs.train`, then, when
``config.eval.after_training`` is set, :func:`evaluate` of the final checkpoint.

Every job holds the workdir's lock (:func:`jobs.workdir.workdir_lock`): a second job on the same workdir stops at
once with :class:`jobs.workdir.WorkdirBusyError`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
from torch import Tensor

import data_lib
import models
from base_lib.files import atomic_write
from configs.toolkit_fields import TOOLKIT_FIELDS
from sample_quality import (
    MetricSetupError,
    audio_metrics,
    class_agreement,
    digits_predictions,
    digits_metrics,
    feature_metrics,
    inception_feature_extractor,
    load_statistics,
    toy_metrics,
)
from models.compiled import eager, is_compiled
from models.precision import resolve_mixed_precision
from samplers import dequantized_bits_per_dim, log_likelihood
from samplers.from_config import get_sampling_fn
from base_lib.checks import check_choice, check_positive_int
from samplers.likelihood import (
    DIVERGENCE_PRODUCTS, DIVERGENCES, LIKELIHOOD_METHODS, choose_tolerance, grid_offsets, hutchinson_probe, solver_error,
)
from samplers.odeint import GRID_METHODS
from base_lib.config import config_value, flatten_fields

from train_lib.checkpoints import CheckpointError, restore_checkpoint
from .conditional import CLASSIFIER_CHECKPOINT, classifier_folder
from .experiment import ConfigError, EvaluationExperiment, Experiment, build_experiment
from .audio import DEFAULT_SAMPLE_RATE, sample_rate_of, save_waveforms
from .images import class_grid_columns, save_image_grid, save_scatter_plot, to_uint8
from .progress import LOGGER_NAME, ProgressLog
from . import signal_conditioned
from .fast_tuning import fast_solver_choice, report_entry
from .run import close_log, model_batch, open_log, step_seed, train
from .streams import Stream
from .workdir import workdir_lock

#: data dimension up to which the log-likelihood of continuous data uses the exact divergence (one backward pass
#: per dimension) instead of the configured Hutchinson estimator
EXACT_DIVERGENCE_MAX_DIM = 16
#: the fewest samples the feature metrics (digits FID / KID / Inception score, FID with ``eval.stats_path``) take:
#: a covariance of the samples' features
FEATURE_METRICS_MIN_SAMPLES = 2
MAX_GRID_IMAGES = 256  # the PNG grid shows at most this many images of the first round


# ------------------------------------------------------------------ sample metrics, per kind of data
@dataclasses.dataclass(frozen=True)
class MetricContext:
    """What a sample metric may use besides the samples."""

    experiment: Experiment  # the run: config, dataset splits, device, model (EMA weights loaded)
    generator: torch.Generator  # seeded per checkpoint: fresh data, projections
    labels: Tensor | None = None  # the class each sample was drawn for (class-conditional samples), else None

    @property
    def dataset_name(self) -> str:
        return str(self.experiment.config.data.dataset).lower()


SampleMetric = Callable[[Tensor, MetricContext], dict[str, float]]
"""``metric(samples, context) -> {name: value}``; ``samples`` in data space, as saved: ``(N, D)`` float points or
``(N, C, H, W)`` images in ``[0, 1]`` (8-bit levels ``k / 255``)."""

_SAMPLE_METRICS: dict[str, list[SampleMetric]] = {}


def register_sample_metric(kind: str) -> Callable[[SampleMetric], SampleMetric]:
    """Decorator: compute ``metric`` on the evaluation samples of every dataset of ``kind`` (see :func:`metric_kinds`:
    ``'toy'``, ``'image'``, or a dataset name such as ``'digits'``)."""

    def register(metric: SampleMetric) -> SampleMetric:
        _SAMPLE_METRICS.setdefault(kind.lower(), []).append(metric)
        return metric

    return register


def metric_kinds(config: Any) -> tuple[str, ...]:
    """The kinds whose metrics apply to ``config.data.dataset``: ``('toy',)`` for the 2-D densities, ``('image',
    name)`` for an image dataset (``'image'`` metrics such as FID apply to all images, ``name`` ones to that one)."""
    name = str(config.data.dataset).lower()
    if name in data_lib.AUDIO_DATASETS:
        return ("audio", name)  # waveforms (1, L): jobs.evaluation.audio_sample_metrics
    return ("toy",) if name in data_lib.TOY_DATASETS else ("image", name)


def sample_metrics(samples: Tensor, context: MetricContext) -> dict[str, float]:
    """Every registered metric of the kinds of ``context``'s dataset, merged into one dict."""
    results: dict[str, float] = {}
    for kind in metric_kinds(context.experiment.config):
        for metric in _SAMPLE_METRICS.get(kind, ()):
            results.update(metric(samples, context))
    return results


@register_sample_metric("toy")
def toy_sample_metrics(samples: Tensor, context: MetricContext) -> dict[str, float]:
    """:func:`sample_quality.toy_metrics`: the sliced Wasserstein distance to fresh data (and its noise floor, data
    to data) and, where the density has a closed form, the mean exact log-density of the samples (and of data)."""
    return toy_metrics(samples, context.dataset_name, context.generator)


def _metric_seed(context: MetricContext) -> int:
    return int(torch.randint(0, 2**31 - 1, (1,), generator=context.generator))


@register_sample_metric("toy")
def toy_class_metrics(samples: Tensor, context: MetricContext) -> dict[str, float]:
    """Class-conditional samples of a toy density with an exact class rule (:func:`data_lib.toy_classify`): the
    fraction that lands in the class it was drawn for (:func:`sample_quality.class_agreement`)."""
    if context.labels is None:
        return {}
    predicted = data_lib.toy_classify(context.dataset_name, samples)
    return {} if predicted is None else class_agreement(predicted.cpu(), context.labels.cpu())


@register_sample_metric("digits")
def digits_class_metrics(samples: Tensor, context: MetricContext) -> dict[str, float]:
    """Class-conditional digits: the fraction the digits classifier recognises as the class they were drawn for."""
    if context.labels is None:
        return {}
    return class_agreement(digits_predictions(samples.cpu()), context.labels.cpu())


@register_sample_metric("digits")
def digits_sample_metrics(samples: Tensor, context: MetricContext) -> dict[str, float]:
    """:func:`sample_quality.digits_metrics`: digits FID / KID / Inception score in the features of a classifier the
    toolkit trains on the digits training split (once, cached), against the test split; class coverage."""
    return digits_metrics(samples.cpu(), seed=_metric_seed(context))


@register_sample_metric("audio")
def audio_sample_metrics(samples: Tensor, context: MetricContext) -> dict[str, float]:
    """:func:`sample_quality.audio_metrics`: the distance of the samples' mean log-power spectrum to the test
    split's and the distances of their pitch distributions, beside the same figures of as many training waveforms
    (the noise floor of finite samples)."""
    exp = context.experiment
    count = min(len(samples), len(exp.test_ds))
    train = data_lib.get_dataset(exp.config, "train")
    reference = exp.test_ds.gather(torch.arange(count))
    floor = train.gather(torch.arange(min(count, len(train))))
    return audio_metrics(samples.cpu(), reference, floor, sample_rate_of(exp.config))


def waveform_signal_report(exp: Experiment, samples: Tensor) -> dict[str, Any]:
    """Waveforms drawn for the spectrograms of test examples (``exp.signal_examples``, sample ``i`` for example
    ``i``): the spectral convergence ``||S(x) - S(x_i)||_F / ||S(x_i)||_F`` of STFT magnitudes (mean, standard error,
    count; :func:`models.spectral_convergence`)."""
    originals = exp.signal_examples[: samples.shape[0]].to("cpu", torch.float64)
    values = models.spectral_convergence(samples.to("cpu", torch.float64), originals)
    mean, stderr = _mean_and_stderr(float(values.sum()), float(values.square().sum()), values.numel())
    return {"spectral_convergence_mean": mean, "spectral_convergence_stderr": stderr, "count": int(values.numel())}


def _inception_setup(config: Any, device: torch.device) -> tuple[Any, Any] | None:
    """The Inception feature extractor and the reference statistics when ``config.eval.stats_path`` is set (else
    ``None``); :class:`ConfigError` saying what is missing (torch-fidelity, weights, statistics file)."""
    stats_path = config_value(config, "eval.stats_path", None)
    if not stats_path:
        return None
    try:
        extractor = inception_feature_extractor(config_value(config, "eval.inception_weights", None), device=device)
        return extractor, load_statistics(stats_path)
    except (MetricSetupError, FileNotFoundError) as error:
        raise ConfigError(f"eval.stats_path is set, but FID cannot be computed: {error}") from error


def check_sample_metrics(config: Any) -> None:
    """:class:`ConfigError`, before any work, when ``eval.enable_sampling`` asks for fewer samples than the sample
    metrics of the data take (:data:`FEATURE_METRICS_MIN_SAMPLES` for the digits metrics and for FID)."""
    if not bool(config_value(config, "eval.enable_sampling", False)):
        return
    kinds = metric_kinds(config)
    features = "digits" in kinds or ("image" in kinds and bool(config_value(config, "eval.stats_path", None)))
    count = config_value(config, "eval.num_samples", None)
    if features and isinstance(count, int) and count < FEATURE_METRICS_MIN_SAMPLES:
        raise ConfigError(
            f"config.eval.num_samples={count}: the sample metrics of {config.data.dataset} (Frechet distance of the "
            f"samples' features) need at least {FEATURE_METRICS_MIN_SAMPLES} samples"
        )


@register_sample_metric("image")
def inception_sample_metrics(samples: Tensor, context: MetricContext) -> dict[str, float]:
    """FID, KID and Inception score with the standard Inception network against the statistics file
    ``config.eval.stats_path`` (weights from ``config.eval.inception_weights``); nothing when no file is set."""
    setup = _inception_setup(context.experiment.config, context.experiment.device)
    if setup is None:
        return {}
    extractor, reference = setup
    return feature_metrics(samples, extractor, reference, seed=_metric_seed(context))


# ------------------------------------------------------------------ files
@dataclasses.dataclass(frozen=True)
class SampleRound:
    """One saved sampling round, back in data space."""

    samples: Tensor  # images (N, C, H, W) in [0, 1], or points (N, D)
    nfe: int  # score evaluations of the sampler
    labels: Tensor | None  # (N,) classes of class-conditional samples, else None
    record: dict[str, Any] | None  # what produced it (round_record); None in files written without one


def _save_round(path: Path, samples: Tensor, nfe: int, labels: Tensor | None, record: dict[str, Any]) -> None:
    """One sampling round: images as uint8 ``(N, H, W, C)`` (the reference's layout), points as float32 ``(N, D)``;
    the classes ``labels`` ``(N,)`` of class-conditional samples; ``record`` as a JSON string, in the same file so
    that the samples and what produced them are written together."""
    array = to_uint8(samples) if samples.ndim == 4 else samples.detach().to("cpu", torch.float32).numpy()
    extra = {} if labels is None else {"labels": labels.to("cpu", torch.int64).numpy()}
    text = np.array(json.dumps(record, sort_keys=True))
    atomic_write(path, lambda file: np.savez_compressed(file, samples=array, nfe=np.int64(nfe), record=text, **extra))


def load_round(path: Path) -> SampleRound:
    """A round saved by :func:`sampling_rounds`."""
    with np.load(path) as file:
        array, nfe = file["samples"], int(file["nfe"])
        labels = torch.from_numpy(file["labels"]) if "labels" in file.files else None
        record = json.loads(str(file["record"])) if "record" in file.files else None
    if array.dtype == np.uint8:
        array = torch.from_numpy(array).permute(0, 3, 1, 2).to(torch.float32) / 255.0
    else:
        array = torch.from_numpy(array)
    return SampleRound(array, nfe, labels, record)


def _stored_record(path: Path) -> dict[str, Any] | None:
    """The record of the round file ``path`` (only that member is read); ``None`` if it has none or is unreadable."""
    try:
        with np.load(path) as file:
            return json.loads(str(file["record"])) if "record" in file.files else None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, in hexadecimal."""
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def write_report(path: Path, report: dict[str, Any]) -> Path:
    """``report`` as indented JSON at ``path``, written atomically (never seen half-written)."""
    text = json.dumps(report, indent=2, sort_keys=False, allow_nan=True) + "\n"
    return atomic_write(path, lambda file: file.write(text.encode("utf-8")))


# ------------------------------------------------------------------ checkpoints
def numbered_checkpoints(exp: Experiment) -> dict[int, Path]:
    """The numbered checkpoints ``checkpoint_{k}.pth`` of the workdir, by ``k``."""
    found = {}
    for path in exp.layout.checkpoint_dir.glob("checkpoint_*.pth"):
        suffix = path.stem.removeprefix("checkpoint_")
        if suffix.isdigit():
            found[int(suffix)] = path
    return dict(sorted(found.items()))


def _checkpoint_range(exp: Experiment) -> list[int]:
    config = exp.config
    begin = int(config_value(config, "eval.begin_ckpt", 1))
    end = int(config_value(config, "eval.end_ckpt", begin))
    existing = numbered_checkpoints(exp)
    chosen = [k for k in existing if begin <= k <= end]
    if not chosen:
        have = ", ".join(map(str, existing)) or "none"
        raise CheckpointError(
            f"no checkpoint to evaluate: config.eval.begin_ckpt..end_ckpt = {begin}..{end}, but "
            f"{exp.layout.checkpoint_dir} holds checkpoints {have} (train first, or set --config.eval.begin_ckpt/end_ckpt)"
        )
    return chosen


def latest_checkpoint(exp: Experiment) -> Path:
    """``config.eval.ckpt`` if set (a numbered checkpoint), else the pre-emption checkpoint or, if there is none,
    the highest numbered one; :class:`CheckpointError` if the workdir has no checkpoint."""
    chosen = config_value(exp.config, "eval.ckpt", None)
    existing = numbered_checkpoints(exp)
    if chosen is not None:
        path = exp.layout.checkpoint_path(int(chosen))
        if not path.exists():
            raise CheckpointError(f"config.eval.ckpt={chosen}: {path} does not exist (have {list(existing) or 'none'})")
        return path
    if exp.layout.meta_checkpoint.exists():
        return exp.layout.meta_checkpoint
    if existing:
        return existing[max(existing)]
    raise CheckpointError(f"no checkpoint in {exp.layout.workdir}: train first (python main.py --mode train ...)")


def load_ema_weights(exp: Experiment, path: Path) -> int:
    """Restore ``path`` strictly into the state, put the EMA weights into the model; the checkpoint's step."""
    restore_checkpoint(path, exp.state, map_location=exp.device)
    exp.ema.copy_to(exp.model.parameters())
    exp.model.eval()
    return int(exp.state["step"])


# ------------------------------------------------------------------ distributed sums
def _all_reduce_sums(values: list[float], exp: Experiment) -> list[float]:
    """Element-wise sum of ``values`` over ranks (float64); the values themselves for one process."""
    if not exp.distributed.is_distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=exp.device)
    torch.distributed.all_reduce(tensor)
    return tensor.tolist()


def _barrier(exp: Experiment) -> None:
    if exp.distributed.is_distributed:
        torch.distributed.barrier()


# ------------------------------------------------------------------ the measurements
def _test_batches(
    exp: EvaluationExperiment, dequantize: bool, with_labels: bool = False, dataset: data_lib.Dataset | None = None
) -> Iterator[Tensor] | Iterator[tuple[Tensor, Tensor]]:
    """This rank's shard of the test split (or of ``dataset``), in dataset order, ``eval.batch_size`` per batch, in
    ``[0, 1]`` (or the toy coordinates); quantized levels ``k / (L - 1)`` unless ``dequantize`` (the config's
    training preprocessing); pairs ``(x, y)`` with the class labels if ``with_labels``."""
    return data_lib.iterate_batches(
        exp.test_ds if dataset is None else dataset, int(exp.config.eval.batch_size), shuffle=False,
        rank=exp.distributed.rank, world_size=exp.distributed.world_size, uniform_dequantization=dequantize, dtype=exp.batch_dtype,
        with_labels=with_labels,
    )


def _mean_and_stderr(total: float, total_sq: float, count: float) -> tuple[float, float]:
    """Mean and standard error of the mean ``s / sqrt(n)`` (unbiased ``s``) from the sums of values and squares."""
    mean = total / count
    variance = max(total_sq - count * mean * mean, 0.0) / (count - 1) if count > 1 else float("nan")
    return mean, math.sqrt(variance / count)


def test_loss(exp: EvaluationExperiment, ckpt: int) -> dict[str, float]:
    """The loss of ``config.training`` on every test example once, under the EMA weights (the mean over examples;
    the noise of batch ``i`` on rank ``r`` is seeded by ``(seed, k, r, i)``)."""
    dequantize = data_lib.preprocessing_options(exp.config, train=False)["uniform_dequantization"]
    total = count = 0.0
    generator = torch.Generator(exp.device)
    for index, batch in enumerate(_test_batches(exp, dequantize, with_labels=exp.labelled)):
        generator.manual_seed(step_seed(exp.config, Stream.TEST_LOSS, ckpt, exp.distributed.rank, index))
        batch = model_batch(exp, batch)
        loss = exp.eval_step_fn(exp.state, batch, generator)
        size = (batch[0] if isinstance(batch, tuple) else batch).shape[0]
        total += float(loss) * size
        count += size
    total, count = _all_reduce_sums([total, count], exp)
    return {"mean": total / count, "count": int(count)}


def likelihood_options(config: Any) -> dict[str, Any]:
    """The solver settings of :func:`samplers.log_likelihood` from ``config.eval``; a field the config lacks takes
    its declared default (:data:`configs.toolkit_fields.TOOLKIT_FIELDS`: those of the 2021 reference's
    ``get_likelihood_fn``)."""
    get = lambda name: config_value(config, f"eval.{name}", TOOLKIT_FIELDS["eval"][name][0])  # noqa: E731
    return {
        "divergence": check_choice("config.eval.hutchinson_type", str(get("hutchinson_type")).lower(), DIVERGENCES),
        "rtol": float(get("likelihood_rtol")), "atol": float(get("likelihood_atol")),
        "method": check_choice("config.eval.likelihood_method", str(get("likelihood_method")), LIKELIHOOD_METHODS),
        "eps": float(get("likelihood_eps")), "steps": get("likelihood_steps"),
        "product": check_choice("config.eval.likelihood_product", str(get("likelihood_product")).lower(), DIVERGENCE_PRODUCTS),
    }


def likelihood_error_samples(config: Any) -> int:
    """``eval.likelihood_error_samples``: the test examples the solver's error is estimated on (0: no estimate)."""
    default = TOOLKIT_FIELDS["eval"]["likelihood_error_samples"][0]
    return int(config_value(config, "eval.likelihood_error_samples", default))


def likelihood_error_check(exp: EvaluationExperiment, ckpt: int, score_fn: Any, options: dict[str, Any],
                           coarse: Tensor | None = None) -> dict[str, Any]:
    """The solver's error estimate, in the likelihood's unit, and with ``eval.likelihood_accuracy`` the tolerance
    chosen from it (:func:`samplers.likelihood.choose_tolerance`; ``options`` gets ``rtol = atol``, or a fixed-grid
    method's ``steps``).

    It is taken on the first ``eval.likelihood_error_samples`` problems of the measured split's first batch, with the
    dequantization and probes that batch gets (its seed, drawn in the order of ``dequantized_bits_per_dim``), so on the
    torch solvers and fixed grids it is the error of values in the reported mean. ``coarse``: those values (nats, the
    first dequantization) when the pass has computed them; only the finer solve is then made. Every rank computes the
    same (unsharded) check, so all ranks solve at one tolerance. An error of ``e`` nats per example is ``e / (D ln 2)``
    bits/dim.
    """
    accuracy = config_value(exp.config, "eval.likelihood_accuracy", None)
    samples = likelihood_error_samples(exp.config)
    if accuracy is not None:
        check_positive_int("config.eval.likelihood_error_samples (with config.eval.likelihood_accuracy)", samples)
    if samples < 1:
        return {"accuracy": None, "solver_error": None, "solver_error_samples": 0, "solver_error_nfe": 0}
    dataset = exp.likelihood_ds
    batch = next(iter(data_lib.iterate_batches(
        dataset, int(exp.config.eval.batch_size), shuffle=False, rank=0, world_size=1, uniform_dequantization=False,
        dtype=exp.batch_dtype,
    ))).to(exp.device)
    generator = torch.Generator(exp.device).manual_seed(step_seed(exp.config, Stream.LIKELIHOOD, ckpt, 0, 0))
    quantized = dataset.num_levels is not None
    x = exp.scaler(data_lib.dequantize.uniform_dequantize(batch, dataset.num_levels, generator) if quantized else batch)
    probe = None if options["divergence"] == "exact" else hutchinson_probe(x, options["divergence"], generator)[:samples]
    offset = grid_offsets(x, generator)[:samples] if options["method"] in GRID_METHODS else None  # drawn as the pass does
    x = x[:samples]
    if isinstance(score_fn, models.ScoreModel):  # a signal-conditioned network: given these examples' signals
        score_fn = signal_conditioned.score_fn_for(score_fn, exp.scaler, batch[:samples])
    nats_per_unit = math.prod(exp.data_shape) * math.log(2.0) if quantized else 1.0
    solve = {"divergence": options["divergence"], "method": options["method"], "eps": options["eps"], "product": options["product"]}
    if offset is not None:
        solve["grid_offset"] = offset
    if accuracy is None:
        estimate = solver_error(exp.sde, score_fn, x, options["rtol"], options["atol"], probe=probe,
                                steps=options["steps"], coarse=coarse, **solve)
    else:
        estimate = choose_tolerance(exp.sde, score_fn, x, float(accuracy) * nats_per_unit, probe=probe, **solve)
        options["rtol"] = options["atol"] = estimate.rtol
        options["steps"] = estimate.steps
    return {"accuracy": accuracy, "solver_error": estimate.error / nats_per_unit, "solver_error_samples": estimate.samples,
            "solver_error_nfe": estimate.nfe}


def test_likelihood(exp: EvaluationExperiment, ckpt: int) -> dict[str, Any]:
    """Bits/dim of the dequantized test split (the train split with ``eval.bpd_dataset='train'``; quantized data) or
    its log-likelihood in nats (continuous data); for a signal-conditioned network, that of each example given its
    own signal ``condition_map(x0)``.

    The network runs uncompiled here (``config.model.compile`` is for training and sampling): the adaptive solvers
    drop the examples that finish, so the batch changes shape from step to step, and a compiled network compiles
    its forward and backward again for new shapes and then runs a dynamic-shape graph, slower than eager on the
    CPU."""
    if is_compiled(exp.model):
        logging.getLogger(LOGGER_NAME).info("likelihood: the network runs uncompiled (its batches change shape as "
                                            "examples finish; config.model.compile applies to training and sampling)")
    with eager(exp.model):
        return _test_likelihood(exp, ckpt)


def _test_likelihood(exp: EvaluationExperiment, ckpt: int) -> dict[str, Any]:
    precision = resolve_mixed_precision(
        config_value(exp.config, "eval.likelihood_mixed_precision", "no"), exp.device,
        name="config.eval.likelihood_mixed_precision",
    )
    score_model = exp.score_model.in_precision(precision)  # full precision unless the config asks
    # a signal-conditioned network: the likelihood of each test example given its own signal (bits/dim of x | c)
    conditioned = score_model.condition_map is not None
    score_fn = score_model if conditioned else score_model.score_fn()
    options = likelihood_options(exp.config)
    dataset = exp.likelihood_ds
    quantized = dataset.num_levels is not None
    if not quantized and math.prod(exp.data_shape) <= EXACT_DIVERGENCE_MAX_DIM:
        options["divergence"] = "exact"
    # a tolerance chosen from the accuracy must come before the pass; a plain estimate comes after it, and on one
    # process takes the first examples' values from the pass (their dequantization, probes and grids are the check's)
    chooses = config_value(exp.config, "eval.likelihood_accuracy", None) is not None
    error_check = likelihood_error_check(exp, ckpt, score_fn, options) if chooses else None  # may set the tolerance
    reuse = likelihood_error_samples(exp.config) if not chooses and exp.distributed.world_size == 1 else 0
    first_values = None
    repeats = check_positive_int("config.eval.bpd_num_repeats", int(config_value(exp.config, "eval.bpd_num_repeats", 1)))
    total = total_sq = count = nfe = true_total = 0.0
    toy = dataset.name.lower() in data_lib.TOY_DATASETS
    true_log_prob = data_lib.toy_log_prob(dataset.name) if toy and not quantized else None
    generator = torch.Generator(exp.device)
    progress = ProgressLog(logging.getLogger(LOGGER_NAME), None, label="likelihood batch", unit="batches")
    for index, batch in enumerate(_test_batches(exp, dequantize=False, dataset=dataset)):
        generator.manual_seed(step_seed(exp.config, Stream.LIKELIHOOD, ckpt, exp.distributed.rank, index))
        batch = batch.to(exp.device)
        batch_score_fn = signal_conditioned.score_fn_for(score_model, exp.scaler, batch) if conditioned else score_fn
        if quantized:
            result = dequantized_bits_per_dim(
                exp.sde, batch_score_fn, batch, n_bins=dataset.num_levels, scaler=exp.scaler,
                inverse_scaler=exp.inverse_scaler, num_repeats=repeats, generator=generator, **options,
            )
            values, batch_nfe, nats = result.per_sample, result.nfe, result.log_likelihood[0]
        else:
            values, _, batch_nfe = log_likelihood(exp.sde, batch_score_fn, exp.scaler(batch), generator=generator, **options)
            nats = values
            if true_log_prob is not None:
                true_total += float(true_log_prob(batch.to(torch.float64)).sum())
        if index == 0 and reuse:
            first_values = nats[:reuse]
        values = values.detach().to(torch.float64)
        total, total_sq = total + float(values.sum()), total_sq + float((values**2).sum())
        count, nfe = count + values.numel(), nfe + batch_nfe
        progress.tick(index + 1)
    if error_check is None:
        error_check = likelihood_error_check(exp, ckpt, score_fn, options, coarse=first_values)
    nfe += error_check["solver_error_nfe"]  # the check's solves are part of the cost
    total, total_sq, count, nfe, true_total = _all_reduce_sums([total, total_sq, count, nfe, true_total], exp)
    mean, stderr = _mean_and_stderr(total, total_sq, count)
    report = {"split": dataset.split, "mean": mean, "stderr": stderr, "count": int(count), "nfe": int(nfe),
              **error_check, **options}
    if quantized:
        return {"unit": "bits/dim", "n_bins": dataset.num_levels, "num_repeats": repeats, **report}
    report = {"unit": "nats", **report}
    if true_log_prob is not None:
        report["true_log_density_mean"] = true_total / count
    return report


def sampling_source(exp: Experiment, checkpoint: Path, step: int) -> dict[str, Any]:
    """What the sampling rounds of ``checkpoint`` (loaded, at ``step``) are drawn from and with, the part of their
    records shared by all rounds: the checkpoint (its path inside the workdir, step and SHA-256, hashed here once),
    the SDE, the sampler and every setting of it (all of ``config.sampling``, the sampling ``eps``,
    the network's parameterization, ``config.data.centered``), the data shape, ``config.seed``, the device type
    (CPU and CUDA generators draw differently) and, for class-conditional samples, the guidance and the classifier
    checkpoint's SHA-256."""
    config = exp.config
    source: dict[str, Any] = {
        "checkpoint": checkpoint.relative_to(exp.layout.workdir).as_posix(),  # a copied or moved workdir still matches
        "step": step,
        "checkpoint_sha256": file_sha256(checkpoint),
        "sde": repr(exp.sde),
        "sampling": config.sampling.to_dict(),
        "sampling_eps": exp.sampling_eps,
        "parameterization": exp.score_model.parameterization.name,
        "data_centered": config_value(config, "data.centered", False),
        "data_shape": list(exp.data_shape),
        "seed": config_value(config, "seed", 0),
        "device": exp.device.type,
    }
    if exp.conditioning is not None:
        source["conditioning"] = exp.conditioning.describe()
        if exp.conditioning.kind == "classifier":
            folder = classifier_folder(config, exp.layout.workdir)
            source["classifier_sha256"] = file_sha256(folder / CLASSIFIER_CHECKPOINT)
    return source


def round_record(
    source: dict[str, Any], seed_key: tuple[int, ...], r: int, size: int, labels: Tensor | None
) -> dict[str, Any]:
    """The record of sampling round ``r``: ``source`` (:func:`sampling_source`), the seed key ``(*seed_key, r)`` of
    its generator, its size and, for class-conditional samples, its classes; as it reads back from a file (JSON)."""
    record = {**source, "seed_key": [*map(int, seed_key), r], "round_size": size}
    if labels is not None:
        record["labels"] = labels.tolist()
    return json.loads(json.dumps(record, sort_keys=True, default=str))


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def record_changes(stored: dict[str, Any] | None, wanted: dict[str, Any]) -> str:
    """Why a round recorded as ``stored`` is not the round ``wanted``: the first differing fields, old -> new."""
    if stored is None:
        return "it has no (readable) record of what produced it"
    old, new = flatten_fields(stored), flatten_fields(wanted)
    unset = "<unset>"
    changed = sorted(key for key in old.keys() | new.keys() if old.get(key, unset) != new.get(key, unset))
    shown = ", ".join(f"{key} {_short(old.get(key, unset))} -> {_short(new.get(key, unset))}" for key in changed[:3])
    more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
    return f"it was drawn with other settings: {shown}{more}"


def _round_sampler(exp: Experiment, size: int, start: int = 0) -> Callable[..., tuple[Tensor, int]]:
    """The sampling function of a round of ``size`` samples: the experiment's for a full round (``eval.batch_size``),
    built the same way for a smaller last round, so that no more samples are drawn than asked for. A
    signal-conditioned network's round starting at sample ``start`` is conditioned on the test examples
    ``start .. start + size - 1`` (:mod:`jobs.signal_conditioned`)."""
    if exp.signal_examples is not None:
        x0 = exp.scaler(exp.signal_examples[start : start + size].to(exp.device))
        return signal_conditioned.conditioned_sampling_fn(
            exp.config, exp.sde, exp.model, x0, exp.inverse_scaler, exp.sampling_eps
        )
    options = None if exp.fast_choice is None else exp.fast_choice.options
    if size == exp.sampling_shape[0] and options is None:
        return exp.sampling_fn
    factory = None if exp.conditioning is None else exp.conditioning.for_batch(size).score_factory
    return get_sampling_fn(exp.config, exp.sde, (size, *exp.data_shape), exp.inverse_scaler, exp.sampling_eps, factory,
                           fast_options=options)


def tuned_sampling_source(exp: Experiment, source: dict[str, Any], step: int, logger: logging.Logger) -> dict[str, Any]:
    """``source`` with the ``fast_sample`` options :func:`jobs.fast_tuning.fast_solver_choice` tunes for the loaded
    checkpoint (kept in ``exp.fast_choice`` for the rounds), or ``source`` itself when none are tuned."""
    exp.fast_choice = fast_solver_choice(exp, source, step, logger)
    if exp.fast_choice is None:
        return source
    return {**source, "fast_options": exp.fast_choice.options.kwargs()}


def sampling_rounds(
    exp: Experiment, folder: Path, seed_key: tuple[int, ...], source: dict[str, Any], logger: logging.Logger
) -> tuple[Tensor, list[int], Tensor | None]:
    """Draw the rounds of ``config.eval.num_samples`` samples into ``folder/samples_{r}.npz`` and return all samples
    with the NFE of each round and, for class-conditional samples, their classes. Every rank returns them once all
    rounds are written.

    Round ``r`` holds ``eval.batch_size`` samples (the last one what is left), is drawn by rank ``r mod
    WORLD_SIZE`` from a generator seeded by ``(seed, *seed_key, r)``, and records what produced it
    (:func:`round_record` of ``source``). A round whose file has the record asked for is kept (a job re-run after a
    pre-emption only draws the missing rounds); any other is drawn again, and the log says why. Round files beyond
    the last (from an earlier job that asked for more samples) are removed, so the folder holds these samples only.
    """
    config, context = exp.config, exp.distributed
    num_samples = check_positive_int("config.eval.num_samples", config_value(config, "eval.num_samples"))
    batch = exp.sampling_shape[0]
    sizes = [min(batch, num_samples - start) for start in range(0, num_samples, batch)]
    rounds = len(sizes)
    paths = [folder / f"samples_{r}.npz" for r in range(rounds)]
    generator = torch.Generator(exp.device)
    for r in range(context.rank, rounds, context.world_size):
        labels = None if exp.sample_labels is None else exp.sample_labels[: sizes[r]]
        wanted = round_record(source, seed_key, r, sizes[r], labels)
        if paths[r].exists():
            stored = _stored_record(paths[r])
            if stored == wanted:
                logger.info("sampling round %d/%d: %s exists, skipped", r + 1, rounds, paths[r])
                continue
            logger.info("sampling round %d/%d: %s is stale, %s; drawing it again", r + 1, rounds, paths[r],
                        record_changes(stored, wanted))
        generator.manual_seed(step_seed(config, *seed_key, r))
        samples, nfe = _round_sampler(exp, sizes[r], r * batch)(exp.model, generator=generator)
        _save_round(paths[r], samples, nfe, labels, wanted)
        logger.info("sampling round %d/%d: %d samples, %d score evaluations -> %s", r + 1, rounds, samples.shape[0], nfe, paths[r])
    if context.is_main:  # rounds of an earlier, larger request would mix into the folder's samples
        beyond = sorted(p for p in folder.glob("samples_*.npz")
                        if p.stem.removeprefix("samples_").isdigit() and int(p.stem.removeprefix("samples_")) >= rounds)
        for path in beyond:
            path.unlink()
        if beyond:
            logger.info("sampling: removed %d round(s) beyond the %d of config.eval.num_samples=%d (%s ...)",
                        len(beyond), rounds, num_samples, beyond[0].name)
    _barrier(exp)
    loaded = [load_round(path) for path in paths]
    samples = torch.cat([round_.samples for round_ in loaded])
    labels = None if exp.sample_labels is None else torch.cat([round_.labels for round_ in loaded])
    return samples, [round_.nfe for round_ in loaded], labels


def save_sample_picture(samples: Tensor, path: Path, title: str, labels: Tensor | None = None,
                        sample_rate: int | None = None) -> Path:
    """A PNG of the samples: a grid of the first :data:`MAX_GRID_IMAGES` images (one class per column for
    class-conditional samples of cycling classes), a scatter plot of all points (coloured by class), or for
    waveforms ``(N, 1, L)`` their spectrograms, with ``.wav`` files beside it (:func:`jobs.audio.save_waveforms`)."""
    if samples.ndim == 3:
        return save_waveforms(samples, path, sample_rate or DEFAULT_SAMPLE_RATE, title)
    labels = None if labels is None else labels[: len(samples)]
    if samples.ndim == 4:
        labels = None if labels is None else labels[:MAX_GRID_IMAGES]
        return save_image_grid(samples[:MAX_GRID_IMAGES], path, nrow=class_grid_columns(labels))
    return save_scatter_plot(samples, path, title=title, labels=labels)


def _sampling_report(
    exp: Experiment, folder: Path, seed_key: tuple[int, ...], source: dict[str, Any], logger: logging.Logger,
    with_metrics: bool,
) -> dict[str, Any]:
    samples, nfes, labels = sampling_rounds(exp, folder, seed_key, source, logger)
    report: dict[str, Any] = {
        "count": samples.shape[0], "rounds": len(nfes), "nfe_per_round": nfes,
        "files": [f"samples_{r}.npz" for r in range(len(nfes))],
    }
    if exp.conditioning is not None:
        report["conditioning"] = exp.conditioning.describe()
    if exp.fast_choice is not None:
        report["fast_tuning"] = report_entry(exp.fast_choice)
    if exp.distributed.is_main:
        first_round = samples[: exp.sampling_shape[0]] if samples.ndim == 4 else samples
        title = f"{samples.shape[0]} samples, {nfes[0]} score evaluations"
        if exp.conditioning is not None:
            title += f"\n{exp.conditioning.describe()}"
        png = save_sample_picture(first_round, folder / "samples.png", title, labels, sample_rate_of(exp.config))
        report["png"] = str(png)
    if exp.signal_examples is not None and samples.ndim == 3:  # waveforms given spectrograms: vs their originals
        report["signal"] = waveform_signal_report(exp, samples)
    elif exp.signal_examples is not None:  # samples with originals: PSNR, and the originals and conditions beside them
        report["signal"] = signal_conditioned.signal_report(exp, samples, folder if exp.distributed.is_main else None)
    if with_metrics:
        generator = torch.Generator().manual_seed(step_seed(exp.config, Stream.SAMPLE_METRICS, *seed_key[1:]))
        report["metrics"] = sample_metrics(samples, MetricContext(exp, generator, labels))
    return report


# ------------------------------------------------------------------ human-readable lines
def _describe(ckpt: int, step: int, report: dict[str, Any]) -> list[str]:
    head = f"ckpt {ckpt} (step {step}):"
    lines = []
    if "loss" in report:
        lines.append(f"{head} test loss {report['loss']['mean']:.6e} over {report['loss']['count']} examples")
    if "likelihood" in report:
        lik = report["likelihood"]
        what = "bits/dim" if lik["unit"] == "bits/dim" else "log-likelihood (nats per example)"
        line = (f"{head} {lik.get('split', 'test')} {what} {lik['mean']:.4f} +- {lik['stderr']:.4f} over "
                f"{lik['count']} examples")
        if lik["unit"] == "bits/dim":
            line += f" ({lik['num_repeats']} dequantization(s), {lik['n_bins']} levels)"
        if "true_log_density_mean" in lik:
            line += f"; true log-density of the same points {lik['true_log_density_mean']:.4f}"
        if lik.get("solver_error") is not None and lik.get("steps") is not None:
            line += (f"; solver error ~{lik['solver_error']:.2g} ({lik['method']} {lik['steps']} steps, estimated on "
                     f"{lik['solver_error_samples']} examples against {2 * lik['steps']} steps)")
        elif lik.get("solver_error") is not None:
            line += (f"; solver error ~{lik['solver_error']:.2g} (rtol {lik['rtol']:.2g}, estimated on "
                     f"{lik['solver_error_samples']} examples at rtol / 10)")
        lines.append(f"{line}; {lik['nfe']} score evaluations")
    if "samples" in report:
        samples = report["samples"]
        lines.append(
            f"{head} {samples['count']} samples in {samples['rounds']} round(s), score evaluations per round "
            f"{samples['nfe_per_round'][0]}; picture {samples.get('png', '-')}"
        )
        for name, value in samples.get("metrics", {}).items():
            lines.append(f"{head} {name} {value:.6g}")
        if "signal" in samples and "spectral_convergence_mean" in samples["signal"]:
            signal = samples["signal"]
            lines.append(f"{head} spectral convergence vs the originals {signal['spectral_convergence_mean']:.4f} +- "
                         f"{signal['spectral_convergence_stderr']:.4f} over {signal['count']} samples")
        elif "signal" in samples:
            signal = samples["signal"]
            lines.append(f"{head} PSNR vs the originals {signal['psnr_mean']:.3f} +- {signal['psnr_stderr']:.3f} dB "
                         f"over {signal['count']} samples")
    return lines


# ------------------------------------------------------------------ the jobs
def evaluate(config: Any, workdir: str | os.PathLike, eval_folder: str | None = "eval", checkpoints: list[int] | None = None) -> dict[int, dict[str, Any]]:
    """Evaluate the numbered checkpoints of ``workdir`` (module docstring); the reports by checkpoint number.

    ``eval_folder`` ``None`` means ``'eval'``. ``checkpoints`` overrides the range ``config.eval.begin_ckpt .. end_ckpt``. :class:`CheckpointError` when no
    checkpoint of the range exists or one cannot be loaded; :class:`ConfigError` for a config that cannot run;
    :class:`jobs.workdir.WorkdirBusyError` when another job holds the workdir.
    """
    with workdir_lock(workdir, "eval"):
        return _evaluate(config, workdir, eval_folder or "eval", checkpoints)


def _evaluate(
    config: Any, workdir: str | os.PathLike, eval_folder: str, checkpoints: list[int] | None
) -> dict[int, dict[str, Any]]:
    exp = build_experiment(config, workdir, "eval")
    check_sample_metrics(exp.config)
    if bool(config_value(exp.config, "eval.enable_sampling", False)):
        _inception_setup(exp.config, exp.device)  # a missing library, weights or statistics file fails before any work
    logger = open_log(exp.layout.log_file, exp.distributed.is_main)
    enabled = {name: bool(config_value(exp.config, f"eval.enable_{name}", False)) for name in ("loss", "bpd", "sampling")}
    try:
        indices = checkpoints if checkpoints is not None else _checkpoint_range(exp)
        reports = {}
        for ckpt in indices:
            path = exp.layout.checkpoint_path(ckpt)
            if not path.exists():
                raise CheckpointError(f"checkpoint {path} does not exist")
            step = load_ema_weights(exp, path)
            folder = exp.layout.workdir / eval_folder / f"ckpt_{ckpt}"
            logger.info("evaluating %s (step %d) under its EMA weights; results in %s", path, step, folder)
            report: dict[str, Any] = {"checkpoint": str(path), "ckpt": ckpt, "step": step, "dataset": exp.test_ds.name}
            if enabled["loss"]:
                report["loss"] = test_loss(exp, ckpt)
            if enabled["bpd"]:
                report["likelihood"] = test_likelihood(exp, ckpt)
            if enabled["sampling"]:
                source = tuned_sampling_source(exp, sampling_source(exp, path, step), step, logger)
                seed_key = (Stream.EVAL_SAMPLES, ckpt)
                report["samples"] = _sampling_report(exp, folder, seed_key, source, logger, with_metrics=True)
            if exp.distributed.is_main:
                report_path = write_report(folder / "report.json", report)
                for line in _describe(ckpt, step, report):
                    logger.info(line)
                logger.info("ckpt %d: report %s", ckpt, report_path)
            reports[ckpt] = report
        _barrier(exp)
        return reports
    finally:
        close_log(logger)


def sample(config: Any, workdir: str | os.PathLike, eval_folder: str | None = "samples") -> dict[str, Any]:
    """Draw ``config.eval.num_samples`` samples from the latest checkpoint (module docstring) into
    ``workdir/eval_folder/step_{s}/`` (``None`` means ``'samples'``): resumable ``samples_{r}.npz`` rounds and
    ``samples.png``. Returns the report. :class:`jobs.workdir.WorkdirBusyError` when another job holds the workdir."""
    with workdir_lock(workdir, "sample"):
        return _sample(config, workdir, eval_folder or "samples")


def _sample(config: Any, workdir: str | os.PathLike, eval_folder: str) -> dict[str, Any]:
    exp = build_experiment(config, workdir, "sample")
    logger = open_log(exp.layout.log_file, exp.distributed.is_main)
    try:
        path = latest_checkpoint(exp)
        step = load_ema_weights(exp, path)
        folder = exp.layout.workdir / eval_folder / f"step_{step}"
        logger.info("sampling from %s (step %d) under its EMA weights into %s", path, step, folder)
        source = tuned_sampling_source(exp, sampling_source(exp, path, step), step, logger)
        report = {"checkpoint": str(path), "step": step,
                  **_sampling_report(exp, folder, (Stream.SAMPLE_JOB, step), source, logger, with_metrics=False)}
        if exp.distributed.is_main:
            logger.info(
                "%d samples (%d score evaluations per round) in %s; picture %s",
                report["count"], report["nfe_per_round"][0], folder, report["png"],
            )
        _barrier(exp)
        return report
    finally:
        close_log(logger)


def train_and_evaluate(
    config: Any, workdir: str | os.PathLike, eval_folder: str | None = "eval", allow_config_changes: Iterable[str] = (),
) -> None:
    """The ``train`` job of ``main.py``: :func:`jobs.train`, then, if ``config.eval.after_training`` is True,
    :func:`evaluate` of the run's last numbered checkpoint into ``workdir/eval_folder``; the workdir stays locked
    from the first step to the report (:func:`jobs.workdir.workdir_lock`)."""
    with workdir_lock(workdir, "train"):
        if bool(config_value(config, "eval.after_training", False)):
            check_sample_metrics(config)  # before training, not after it
        exp = train(config, workdir, allow_config_changes=allow_config_changes)
        if bool(config_value(config, "eval.after_training", False)):
            existing = numbered_checkpoints(exp)
            if not existing:
                raise CheckpointError(
                    f"training wrote no numbered checkpoint in {exp.layout.checkpoint_dir} to evaluate"
                )
            evaluate(config, workdir, eval_folder, checkpoints=[max(existing)])
