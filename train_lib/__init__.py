"""Training of score models: losses, the optimizer and its update rule, the one-step train / eval function.

* :func:`get_sde_loss_fn`, :func:`get_smld_loss_fn`, :func:`get_ddpm_loss_fn`, :func:`get_loss_fn`: denoising
  score matching in continuous time ([SDE] eq. (7), optional likelihood weighting and importance-sampled time)
  and the discrete NCSN / DDPM losses, with the 2021 reference's conventions.
* :func:`get_step_fn`, :func:`get_step_fn_from_config`, :func:`step_fn_options`: one training or evaluation step
  on the state ``{'model', 'optimizer', 'ema', 'step'}``, driven by ``config.training``.
* :func:`get_optimizer`, :func:`optimization_manager`, :func:`warmup_lr`: Adam / AdamW from ``config.optim``,
  linear warm-up and gradient clipping.
* :class:`LikelihoodTimeSampler`: times drawn with density proportional to ``g^2 / sigma^2``.
* :func:`save_checkpoint`, :func:`restore_checkpoint`: atomic writes and strict, safe loads of training
  checkpoints in the reference's format (``{'model', 'ema', 'optimizer', 'step'}``); :class:`CheckpointError`.
"""

from .checkpoints import CheckpointError, load_checkpoint_file, restore_checkpoint, save_checkpoint
from .losses import (
    MIXED_PRECISION,
    get_ddpm_loss_fn,
    get_loss_fn,
    get_sde_loss_fn,
    get_smld_loss_fn,
    get_step_fn,
    get_step_fn_from_config,
    step_fn_options,
)
from .optim import OPTIMIZERS, get_optimizer, optimization_manager, warmup_lr
from .time_sampling import LikelihoodTimeSampler

__all__ = [
    "get_sde_loss_fn",
    "get_smld_loss_fn",
    "get_ddpm_loss_fn",
    "get_loss_fn",
    "get_step_fn",
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
