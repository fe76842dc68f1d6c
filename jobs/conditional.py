"""Class-conditional generation from a config: classifier guidance and classifier-free guidance for ``main.py``.

[SDE] is Song et al., ICLR 2021 (section 5, eq. (14), appendix I.1); [CFG] Ho & Salimans, 2022.

Config fields:

* ``config.data.num_classes``: the number ``K`` of classes of the data (the data must carry labels:
  :func:`data_lib.check_labelled`).
* ``config.sampling.class_label`` [-1]: the class of every sample, or ``-1`` for sample ``i`` of a batch to get class
  ``i mod K`` (every batch covers the classes evenly; a grid of ``K`` columns shows one class per column).
* Classifier guidance, ``score + scale * grad_x log p_t(y | x)`` ([SDE] eq. (14)):

  * ``config.classifier``: the noise-conditional classifier's run, a config section with ``model``, ``training``
    and ``optim`` sections whose fields replace those of the score model's config: ``model.name`` =
    ``'mlp_classifier'`` or ``'conv_classifier'`` (required), its sizes and ``ema_rate``; ``training.n_iters``,
    ``batch_size``, ...; ``optim.lr``, .... The rest (the SDE's fields in ``config.model``, the data, the seed)
    is shared, so the classifier learns the perturbations of the score model's SDE. :func:`classifier_config`
    builds that run's config.
  * ``config.sampling.classifier``: the classifier run's folder (``''``: no classifier guidance); a relative path
    lies inside the score model's workdir. ``main.py --mode train_classifier`` trains it there (on the SDE
    perturbations of the score model, :func:`train_lib.get_classifier_loss_fn`); ``sample`` and ``eval`` load
    the EMA weights of its final checkpoint.
  * ``config.sampling.classifier_scale`` [1.0]: the guidance scale (1 is Bayes' rule).

* Classifier-free guidance, ``(1 + w) s(x, t, y) - w s(x, t)`` ([CFG] eq. (6)): a label-conditional network
  (``model.name = 'conditional_mlp'``, or ``'ncsnpp'`` with ``model.class_conditional = True``) trained with
  ``config.training.label_dropout`` (the probability of the null label), sampled with
  ``config.sampling.guidance_scale`` ``w`` [0.0: the conditional score].

:func:`sampling_conditioning` turns these into the score function a sampler uses (``score_factory(model,
score_model) -> score_fn``) and the class labels of a sampling batch; ``None`` for an unconditional experiment.
Only sampling is conditioned: the test loss of a label-conditional network is its training loss (with label
dropout), and likelihoods (``eval.enable_bpd``), inpainting, colorization and interpolation use the unconditional
score (the null label).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path
from typing import Any, Callable

import ml_collections
import torch
from torch import Tensor, nn

import models
from models.score_model import ScoreModel, label_conditional
from samplers.controllable import cfg_score_fn, classifier_log_prob_fn, guided_score_fn
from samplers.from_config import ScoreFactory
from sde_lib import SDE, ScoreFn
from base_lib.config import config_value

from train_lib.checkpoints import CheckpointError, restore_checkpoint

#: the sections of ``config.classifier`` that replace or update those of the score model's config
CLASSIFIER_SECTIONS = ("model", "training", "optim")
#: the classifier run's meta checkpoint, relative to its folder (train_lib.WorkdirLayout.meta_checkpoint)
CLASSIFIER_CHECKPOINT = Path("checkpoints-meta") / "checkpoint.pth"


class ConditioningError(ValueError):
    """A class-conditional setting that cannot run (re-raised as :class:`train_lib.ConfigError` by the experiment)."""


def num_classes(config: Any) -> int:
    """``config.data.num_classes``, checked to be an integer >= 2."""
    value = config_value(config, "data.num_classes", None)
    if isinstance(value, bool) or not isinstance(value, int) or value < 2:
        raise ConditioningError(
            f"config.data.num_classes must be the number of classes of the data (an integer >= 2) for class-conditional "
            f"generation, got {value!r}"
        )
    return value


def sample_class_labels(config: Any, batch: int) -> Tensor:
    """The classes ``(batch,)`` int64 of a sampling batch: ``config.sampling.class_label`` for every sample, or
    ``i mod K`` for sample ``i`` when it is -1 (the default)."""
    k = num_classes(config)
    label = config_value(config, "sampling.class_label", -1)
    if isinstance(label, bool) or not isinstance(label, int) or not -1 <= label < k:
        raise ConditioningError(f"config.sampling.class_label must be -1 (all classes in turn) or a class in [0, {k}), got {label!r}")
    if label == -1:
        return torch.arange(batch, dtype=torch.long) % k
    return torch.full((batch,), label, dtype=torch.long)


def _check_scale(field: str, default: float) -> Callable[[Any], float]:
    def read(config: Any) -> float:
        value = config_value(config, field, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConditioningError(f"config.{field} must be a finite number, got {value!r}")
        return float(value)

    return read


classifier_scale = _check_scale("sampling.classifier_scale", 1.0)
guidance_scale = _check_scale("sampling.guidance_scale", 0.0)


def check_label_dropout(config: Any, model: nn.Module) -> float | None:
    """``config.training.label_dropout`` checked against the network: a probability for a label-conditional network,
    unset (None) for an unconditional one; the network's classes must be ``config.data.num_classes``."""
    dropout = config_value(config, "training.label_dropout", None)
    if not label_conditional(model):
        if dropout is not None:
            raise ConditioningError(
                f"config.training.label_dropout={dropout!r} trains a label-conditional network, but config.model.name="
                f"{config.model.name!r} builds an unconditional one: use 'conditional_mlp', or 'ncsnpp' with "
                "model.class_conditional=True, or remove training.label_dropout"
            )
        return None
    if dropout is None:
        raise ConditioningError(
            f"the label-conditional network {type(model).__name__} needs config.training.label_dropout, the probability "
            "of training on the null label (e.g. 0.1; 0 learns no unconditional score, so no guidance)"
        )
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout <= 1.0:
        raise ConditioningError(f"config.training.label_dropout must be a probability in [0, 1], got {dropout!r}")
    if model.null_label != num_classes(config):
        raise ConditioningError(f"the network has {model.null_label} classes, config.data.num_classes is {num_classes(config)}")
    return float(dropout)


# ------------------------------------------------------------------ the classifier's run
def classifier_folder(config: Any, workdir: str | Path) -> Path | None:
    """The classifier run's folder, ``config.sampling.classifier`` (relative paths inside ``workdir``), or ``None``."""
    folder = config_value(config, "sampling.classifier", "")
    if folder in (None, ""):
        return None
    if not isinstance(folder, str):
        raise ConditioningError(f"config.sampling.classifier must be a folder path (or '' for none), got {folder!r}")
    path = Path(folder).expanduser()
    return path if path.is_absolute() else Path(workdir) / path


def classifier_config(config: Any) -> ml_collections.ConfigDict:
    """The config of the classifier's run: ``config`` with the fields of ``config.classifier.model`` / ``training``
    / ``optim`` set in ``model`` / ``training`` / ``optim`` (the SDE's fields of ``config.model`` are kept); no
    snapshot sampling and no evaluation after training (the classifier run has no sampler)."""
    section = config_value(config, "classifier", None)
    if section is None or config_value(config, "classifier.model.name", None) is None:
        raise ConditioningError(
            "classifier guidance needs config.classifier.model, the noise-conditional classifier (e.g. name="
            "'mlp_classifier' or 'conv_classifier'); see jobs.conditional"
        )
    unknown = sorted(set(section.keys()) - set(CLASSIFIER_SECTIONS))
    if unknown:
        raise ConditioningError(f"config.classifier has unknown sections {unknown}; allowed: {', '.join(CLASSIFIER_SECTIONS)}")
    derived = copy.deepcopy(config)
    with derived.unlocked():
        for name in CLASSIFIER_SECTIONS:
            for field, value in section.get(name, ml_collections.ConfigDict()).items():
                derived[name][field] = copy.deepcopy(value)
        derived.training.snapshot_sampling = False
        derived.eval.after_training = False
    return derived


def load_classifier(config: Any, folder: Path, device: torch.device) -> nn.Module:
    """The classifier of :func:`classifier_config` with the EMA weights of its run's final checkpoint, in eval mode."""
    path = folder / CLASSIFIER_CHECKPOINT
    if not path.is_file():  # a job error, as a missing checkpoint of the score model
        raise CheckpointError(
            f"config.sampling.classifier points to {folder}, which has no classifier checkpoint {path}: train it first "
            "with `main.py --mode train_classifier` (same --config and --workdir)"
        )
    derived = classifier_config(config)
    with torch.random.fork_rng(devices=[]):
        classifier = models.create_model(derived)
    ema = models.ExponentialMovingAverage(classifier.parameters(), decay=config_value(derived, "model.ema_rate"))
    state = {"model": classifier, "ema": ema, "step": 0}  # no optimizer: only the weights are read
    restore_checkpoint(path, state, map_location=device)
    ema.copy_to(classifier.parameters())
    return classifier.eval()


# ------------------------------------------------------------------ sampling
@dataclasses.dataclass(frozen=True)
class SamplingConditioning:
    """How the samples of an experiment are conditioned on classes."""

    kind: str  # "classifier" (classifier guidance) or "classifier_free"
    labels: Tensor  # (B,) int64 classes of a sampling batch (CPU)
    scale: float  # classifier_scale, or the guidance_scale w
    guided_score: Callable[[ScoreModel, Tensor], ScoreFn]  # (score_model, labels) -> guided score_fn

    def score_factory(self, score_model: ScoreModel) -> ScoreFn:
        """The guided score of ``score_model`` towards :attr:`labels` (a :data:`samplers.from_config.ScoreFactory`)."""
        return self.guided_score(score_model, self.labels)

    def for_batch(self, size: int) -> "SamplingConditioning":
        """The same conditioning for a batch of the first ``size`` samples (the classes of a batch are a prefix of
        those of a larger one: :func:`sample_class_labels`)."""
        return dataclasses.replace(self, labels=self.labels[:size])

    def describe(self) -> str:
        what = "classifier scale" if self.kind == "classifier" else "guidance scale w"
        return f"{self.kind.replace('_', '-')} guidance, {what} {self.scale:g}"


def sampling_conditioning(
    config: Any, model: nn.Module, batch: int, workdir: str | Path, device: torch.device, load: bool
) -> SamplingConditioning | None:
    """The class conditioning of the samples of ``config`` (module docstring), or ``None`` for unconditional samples.

    A label-conditional ``model`` samples with classifier-free guidance; ``config.sampling.classifier`` set (and
    ``load``) adds classifier guidance, whose classifier is loaded here so that a missing one fails before any
    sampling. Both at once is refused. With ``load=False`` (a training run, whose classifier may not exist yet)
    classifier guidance is left out.
    """
    folder = classifier_folder(config, workdir)
    conditional = label_conditional(model)
    if folder is None and not conditional:
        values = {"class_label": (config_value(config, "sampling.class_label", -1), -1),
                  "guidance_scale": (config_value(config, "sampling.guidance_scale", 0.0), 0.0),
                  "classifier_scale": (config_value(config, "sampling.classifier_scale", 1.0), 1.0)}
        asked = [f"config.sampling.{name}={value!r}" for name, (value, unconditional) in values.items()
                 if value != unconditional]
        if asked:
            raise ConditioningError(
                f"{', '.join(asked)} asks for class-conditional samples, but the network is unconditional and "
                f"config.sampling.classifier is unset; train with config.training.label_dropout (classifier-free "
                f"guidance) or set config.sampling.classifier (classifier guidance)"
            )
    if folder is not None and config_value(config, "sampling.guidance_scale", 0.0) != 0.0:
        raise ConditioningError("config.sampling.guidance_scale is the w of classifier-free guidance, but this run "
                                "samples with classifier guidance (config.sampling.classifier); set "
                                "config.sampling.classifier_scale instead")
    if conditional and config_value(config, "sampling.classifier_scale", 1.0) != 1.0:
        raise ConditioningError("config.sampling.classifier_scale scales classifier guidance, but the network is "
                                "label-conditional (classifier-free guidance); set config.sampling.guidance_scale")
    if folder is not None and conditional:
        raise ConditioningError(
            "config.sampling.classifier (classifier guidance) and a label-conditional network (classifier-free "
            "guidance) were both given; use one"
        )
    if conditional:
        w = guidance_scale(config)

        def cfg_guided(score_model: ScoreModel, labels: Tensor) -> ScoreFn:
            return cfg_score_fn(score_model.score, score_model.score_fn(), labels.to(device), w)

        return SamplingConditioning("classifier_free", sample_class_labels(config, batch), w, cfg_guided)
    if folder is None or not load:
        return None
    scale = classifier_scale(config)
    log_prob = classifier_log_prob_fn(load_classifier(config, folder, device))

    def classifier_guided(score_model: ScoreModel, labels: Tensor) -> ScoreFn:
        return guided_score_fn(score_model.score_fn(), log_prob, labels.to(device), scale)

    return SamplingConditioning("classifier", sample_class_labels(config, batch), scale, classifier_guided)
