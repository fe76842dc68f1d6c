"""The jobs behind ``main.py``: from a config to a trained, evaluated and sampled run in a workdir.

* :func:`build_experiment` (:mod:`jobs.experiment`): a config checked and turned into the pieces of a run, before
  any long work; :class:`ConfigError`; :class:`WorkdirLayout` (the reference's folders).
* :func:`train` (:mod:`jobs.run`): the resumable training loop (multi-process with ``torchrun``);
  :class:`TrainingDivergedError`.
* :func:`evaluate`, :func:`sample`, :func:`train_and_evaluate` (:mod:`jobs.evaluation`): test loss, bits/dim or
  exact log-likelihood, resumable sampling rounds, per-dataset sample metrics (:func:`register_sample_metric`).
* :func:`train_classifier` (:mod:`jobs.classifier_training`), :mod:`jobs.conditional`: class-conditional
  generation from a config, with classifier guidance or classifier-free guidance.
* :func:`inpaint`, :func:`colorize`, :func:`superresolve`, :func:`interpolate` (:mod:`jobs.controllable`).
* :func:`save_samples`, :func:`save_image_grid`, :func:`save_scatter_plot` (:mod:`jobs.images`): PNG grids,
  scatter plots and ``.npz`` files.
"""

from .experiment import (
    ConfigError,
    DistributedContext,
    EvaluationExperiment,
    Experiment,
    SamplingExperiment,
    TrainingExperiment,
    WorkdirLayout,
    build_experiment,
)
from .images import image_grid, save_image_grid, save_samples, save_scatter_plot
from .run import TrainingDivergedError, train
from .evaluation import evaluate, register_sample_metric, sample, train_and_evaluate
from .controllable import MASKS, colorize, inpaint, interpolate, region_mask, superresolve
from .classifier_training import classifier_accuracy, train_classifier
from .conditional import classifier_config, sample_class_labels, sampling_conditioning

__all__ = [
    "inpaint",
    "train_classifier",
    "classifier_accuracy",
    "classifier_config",
    "sample_class_labels",
    "sampling_conditioning",
    "colorize",
    "superresolve",
    "interpolate",
    "region_mask",
    "MASKS",
    "build_experiment",
    "Experiment",
    "TrainingExperiment",
    "EvaluationExperiment",
    "SamplingExperiment",
    "ConfigError",
    "WorkdirLayout",
    "DistributedContext",
    "train",
    "TrainingDivergedError",
    "save_samples",
    "save_image_grid",
    "save_scatter_plot",
    "image_grid",
    "evaluate",
    "sample",
    "train_and_evaluate",
    "register_sample_metric",
]
