"""Training of score models: losses, the optimizer and its update rule, the one-step train / eval function.

* :func:`get_sde_loss_fn`, :func:`get_smld_loss_fn`, :func:`get_ddpm_loss_fn`, :func:`get_loss_fn`: denoising
  score matching in continuous time ([SDE] eq. (7), optional likelihood weighting and importance-sampled time)
  and the discrete NCSN / DDPM losses, with the 2021 reference's conventions.
* :func:`make_step_fn`, :func:`get_step_fn`, :func:`get_classifier_step_fn`, :func:`get_step_fn_from_config`,
  :func:`step_fn_options` (:mod:`train_lib.steps`): one training or evaluation step on the state ``{'model',
  'optimizer', 'ema', 'step'}`` for the score network (optionally label-conditional, for classifier-free guidance)
  or the noise-conditional classifier, driven by ``config.training``.
* :func:`get_optimizer`, :func:`optimization_manager`, :func:`warmup_lr`: Adam / AdamW from ``config.optim``,
  linear warm-up and gradient clipping.
* :class:`LikelihoodTimeSampler`: times drawn with density proportional to ``g^2 / sigma^2``.
* :func:`save_checkpoint`, :func:`restore_checkpoint`: atomic writes and strict, safe loads of training
  checkpoints in the reference's format (``{'model', 'ema', 'optimizer', 'step'}``); :class:`CheckpointError`.
* :func:`build_experiment`: a config checked and turned into the pieces of a run (:class:`Experiment`), before
  any long work; :class:`ConfigError`; :class:`WorkdirLayout` (the reference's folders).
* :func:`train`: the training job of ``main.py`` (resumable, multi-process with ``torchrun``);
  :class:`TrainingDivergedError`.
* :func:`save_samples`, :func:`save_image_grid`, :func:`save_scatter_plot`: PNG grids / scatter plots and ``.npz``.
* :func:`train_classifier` (:mod:`train_lib.classifier_training`), :mod:`train_lib.conditional`: class-conditional
  generation from a config, with classifier guidance or classifier-free guidance (``main.py --mode
  train_classifier``, then ``sample`` / ``eval``).
* :func:`evaluate`, :func:`sample`, :func:`train_and_evaluate`: the ``eval``, ``sample`` and ``train`` jobs of
  ``main.py`` (test loss, bits/dim or exact log-likelihood, resumable sampling rounds, per-dataset sample metrics
  registered with :func:`register_sample_metric`).
"""

from .classifier import classifier_log_prob_fn, get_classifier_loss_fn, perturb
from .classifier_free import cfg_score_fns, drop_labels, get_cfg_loss_fn
from .checkpoints import CheckpointError, load_checkpoint_file, restore_checkpoint, save_checkpoint
from .losses import get_ddpm_loss_fn, get_loss_fn, get_sde_loss_fn, get_smld_loss_fn
from .steps import (
    MIXED_PRECISION,
    get_classifier_step_fn,
    get_step_fn,
    get_step_fn_from_config,
    make_step_fn,
    step_fn_options,
)
from .optim import OPTIMIZERS, get_optimizer, optimization_manager, warmup_lr
from .experiment import ConfigError, DistributedContext, Experiment, WorkdirLayout, build_experiment
from .images import image_grid, save_image_grid, save_samples, save_scatter_plot
from .run import TrainingDivergedError, train
from .evaluation import evaluate, register_sample_metric, sample, train_and_evaluate
from .controllable import MASKS, colorize, inpaint, interpolate, region_mask
from .classifier_training import classifier_accuracy, train_classifier
from .conditional import classifier_config, sample_class_labels, sampling_conditioning
from .time_sampling import LikelihoodTimeSampler

__all__ = [
    "inpaint",
    "train_classifier",
    "classifier_accuracy",
    "classifier_config",
    "sample_class_labels",
    "sampling_conditioning",
    "colorize",
    "interpolate",
    "region_mask",
    "MASKS",
    "get_classifier_loss_fn",
    "classifier_log_prob_fn",
    "perturb",
    "get_cfg_loss_fn",
    "cfg_score_fns",
    "drop_labels",
    "get_sde_loss_fn",
    "get_smld_loss_fn",
    "get_ddpm_loss_fn",
    "get_loss_fn",
    "get_step_fn",
    "make_step_fn",
    "get_classifier_step_fn",
    "get_step_fn_from_config",
    "step_fn_options",
    "MIXED_PRECISION",
    "get_optimizer",
    "optimization_manager",
    "warmup_lr",
    "OPTIMIZERS",
    "LikelihoodTimeSampler",
    "save_checkpoint",
    "restore_checkpoint",
    "load_checkpoint_file",
    "CheckpointError",
    "build_experiment",
    "Experiment",
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
