"""Training of score models in your own loop: losses, time sampling, the step function, the optimizer, checkpoints.

* :func:`get_sde_loss_fn`, :func:`get_smld_loss_fn`, :func:`get_ddpm_loss_fn`, :func:`get_loss_fn`: denoising
  score matching in continuous time ([SDE] eq. (7), optional likelihood weighting and importance-sampled time)
  and the discrete NCSN / DDPM losses, with the 2021 reference's conventions. :class:`LikelihoodTimeSampler`:
  times drawn with density proportional to ``g^2 / sigma^2``.
* :func:`get_classifier_loss_fn`: the loss of the noise-conditional classifier of classifier guidance (read at
  sampling time by :func:`samplers.classifier_log_prob_fn`); :func:`get_cfg_loss_fn`: the label-dropout loss of
  classifier-free guidance.
* :func:`make_step_fn`, :func:`get_step_fn`, :func:`get_classifier_step_fn`, :func:`get_step_fn_from_config`,
  :func:`step_fn_options`: one training or evaluation step on the state ``{'model', 'optimizer', 'ema', 'step'}``
  (the EMA is updated after each optimizer step).
* :func:`get_optimizer`, :func:`optimization_manager`, :func:`warmup_lr`: Adam / AdamW from ``config.optim``,
  linear warm-up and gradient clipping.
* :func:`save_checkpoint`, :func:`restore_checkpoint`: atomic writes and strict, safe loads of training
  checkpoints in the reference's format; :class:`CheckpointError`.

The jobs behind ``main.py`` (building an experiment from a config, the training loop, evaluation, sampling) are
in :mod:`jobs`.
"""

from .classifier import get_classifier_loss_fn, perturb
from .classifier_free import drop_labels, get_cfg_loss_fn
from .checkpoints import CheckpointError, load_checkpoint_file, restore_checkpoint, save_checkpoint
from .losses import get_ddpm_loss_fn, get_edm_loss_fn, get_loss_fn, get_sde_loss_fn, get_smld_loss_fn
from .steps import (
    MIXED_PRECISION,
    get_classifier_step_fn,
    get_step_fn,
    get_step_fn_from_config,
    make_step_fn,
    step_fn_options,
)
from .optim import OPTIMIZERS, get_optimizer, optimization_manager, warmup_lr
from .time_sampling import LikelihoodTimeSampler

__all__ = [
    "get_classifier_loss_fn",
    "perturb",
    "get_cfg_loss_fn",
    "drop_labels",
    "get_sde_loss_fn",
    "get_edm_loss_fn",
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
]
