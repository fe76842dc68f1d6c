"""One training or evaluation step on the 2021 reference's training state ``{'model', 'optimizer', 'ema', 'step'}``.

:func:`make_step_fn` is the one implementation of a step for every objective: ``zero_grad``, the loss and its
gradient (autocast and fp16 loss scaling on request), ``optimize_fn`` (warm-up, clipping), ``step += 1`` and the
EMA update; or, for evaluation, the loss under the EMA weights without gradients. The objectives:

* :func:`get_step_fn`: denoising score matching (:func:`train_lib.get_loss_fn`), on batches ``x``; with
  ``label_dropout`` set, a label-conditional network trained for classifier-free guidance
  (:func:`train_lib.get_cfg_loss_fn`) on batches ``(x, y)``.
* :func:`get_classifier_step_fn`: the cross-entropy of a noise-conditional classifier
  (:func:`train_lib.get_classifier_loss_fn`) on batches ``(x, y)``.
* :func:`get_step_fn_from_config` reads ``config.training`` (:func:`step_fn_options`) for either task.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn

from models.ema import halflife_decay
from models.precision import MIXED_PRECISION, PRECISION_SETTINGS, autocast, resolve_mixed_precision
from models.score_model import Parameterization, parameterization_from_config, resolve_parameterization
from sde_lib import SDE
from base_lib.config import config_value
from base_lib.checks import check_bool, check_choice

from .classifier import get_classifier_loss_fn
from .classifier_free import get_cfg_loss_fn
from .losses import get_loss_fn
from .optim import optimization_manager

StepFn = Callable[..., Tensor]
"""``step_fn(state, batch, generator=None)``: the (detached) loss of one training or evaluation step."""

BatchLossFn = Callable[[nn.Module, Any, "torch.Generator | None"], Tensor]
"""``loss_fn(model, batch, generator)``: the scalar loss of a batch (a tensor, or a pair ``(x, y)``)."""

TASKS = ("score", "classifier")  # what a training run fits: the score network, or the classifier of guidance


def _batch_device(batch: Any) -> torch.device:
    """The device of a batch ``x`` or ``(x, y)``."""
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    if not isinstance(x, Tensor):
        raise ValueError(f"batch must be a tensor x or a pair (x, y) of tensors, got {type(batch).__name__}")
    return x.device


def _labelled(batch: Any) -> tuple[Tensor, Tensor]:
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise ValueError(
            f"this step trains on labelled data: batch must be a pair (x, y) of examples and class labels, got "
            f"{type(batch).__name__}"
        )
    return batch[0], batch[1]


def _grad_scaler(state: dict, mode: str, device: torch.device) -> torch.amp.GradScaler | None:
    """The fp16 loss scaler of a resolved ``mode``, kept in ``state['grad_scaler']`` (created on the first fp16
    step); ``None`` otherwise."""
    if mode != "fp16":
        return None
    if state.get("grad_scaler") is None:
        state["grad_scaler"] = torch.amp.GradScaler(device.type)
    return state["grad_scaler"]


def make_step_fn(
    loss_fn: BatchLossFn,
    train: bool,
    optimize_fn: Callable[..., Any] | None = None,
    mixed_precision: str = "no",
    ema_decay: Callable[[int], float] | None = None,
) -> StepFn:
    """``step_fn(state, batch, generator=None) -> loss`` of the objective ``loss_fn(model, batch, generator)``.

    Training (``train=True``): ``zero_grad``, the loss and its gradient, ``optimize_fn(optimizer, params,
    step=state['step'])`` (see :func:`train_lib.optimization_manager`), ``step += 1`` and an EMA update.
    Evaluation: the loss under the EMA weights (``ema.store``, ``copy_to``, then ``restore``) without gradients.
    ``mixed_precision`` (``'no'``, ``'bf16'``, ``'fp16'``, or ``'auto'``: bf16 where the batch's device has bf16 matrix
    units, :func:`models.precision.resolve_mixed_precision`) autocasts the forward pass; fp16 (CUDA only) scales the
    loss with a ``torch.amp.GradScaler`` kept in ``state['grad_scaler']``. ``ema_decay(step)``, when given, is the
    EMA decay of the update after step ``step`` (counted from 0; e.g. EDM's half-life rule,
    :func:`models.ema.halflife_decay`); else the EMA's own decay. Returns the detached loss.
    """
    if ema_decay is not None and not callable(ema_decay):
        raise ValueError(f"ema_decay must be callable as ema_decay(step) -> decay, got {ema_decay!r}")
    check_bool("train", train)
    check_choice("mixed_precision", mixed_precision, PRECISION_SETTINGS)
    if train and not callable(optimize_fn):
        raise ValueError(
            "a training step_fn needs optimize_fn(optimizer, params, step), e.g. optimization_manager(config)"
        )

    def train_step(state: dict, batch: Any, generator: torch.Generator | None) -> Tensor:
        model, optimizer = state["model"], state["optimizer"]
        device = _batch_device(batch)
        mode = resolve_mixed_precision(mixed_precision, device)
        optimizer.zero_grad(set_to_none=True)
        with autocast(mode, device):
            loss = loss_fn(model, batch, generator)
        scaler = _grad_scaler(state, mode, device)
        params = list(model.parameters())  # listed once: each model.parameters() walks every submodule
        if scaler is None:
            loss.backward()
            optimize_fn(optimizer, params, step=state["step"])
        else:
            scaler.scale(loss).backward()
            optimize_fn(optimizer, params, step=state["step"], grad_scaler=scaler)
        decay = None if ema_decay is None else ema_decay(state["step"])
        state["step"] += 1
        state["ema"].update(params, decay=decay)
        return loss.detach()

    def eval_step(state: dict, batch: Any, generator: torch.Generator | None) -> Tensor:
        model, ema = state["model"], state["ema"]
        with torch.no_grad():
            ema.store(model.parameters())
            ema.copy_to(model.parameters())
            try:
                device = _batch_device(batch)
                with autocast(resolve_mixed_precision(mixed_precision, device), device):
                    loss = loss_fn(model, batch, generator)
            finally:
                ema.restore(model.parameters())
        return loss

    def step_fn(state: dict, batch: Any, generator: torch.Generator | None = None) -> Tensor:
        missing = {"model", "ema", "step", *(("optimizer",) if train else ())} - set(state)
        if missing:
            raise ValueError(f"state is missing {sorted(missing)}; it must hold 'model', 'optimizer', 'ema', 'step'")
        return (train_step if train else eval_step)(state, batch, generator)

    return step_fn


def get_step_fn(
    sde: SDE,
    train: bool,
    optimize_fn: Callable[..., Any] | None = None,
    reduce_mean: bool = False,
    parameterization: Parameterization | str | None = None,
    likelihood_weighting: bool = False,
    importance_weighting: bool = False,
    eps: float = 1e-5,
    mixed_precision: str = "no",
    label_dropout: float | None = None,
    p_mean: float = -1.2,
    p_std: float = 1.2,
    ema_decay: Callable[[int], float] | None = None,
) -> StepFn:
    """The step (:func:`make_step_fn`) of denoising score matching, :func:`train_lib.get_loss_fn` with these options.

    ``label_dropout=None``: an unconditional network, batches ``x``. A probability: a label-conditional network
    (``model(x, labels, class_labels)`` with a ``null_label``) trained for classifier-free guidance on batches
    ``(x, y)``, each label replaced by the null label with that probability (:func:`train_lib.get_cfg_loss_fn`).
    ``p_mean``, ``p_std``: the noise levels of EDM's loss (the ``edm`` parameterization); ``ema_decay``: as
    :func:`make_step_fn`.
    """
    parameterization = resolve_parameterization(sde, parameterization)
    options = dict(
        reduce_mean=reduce_mean, parameterization=parameterization, likelihood_weighting=likelihood_weighting,
        importance_weighting=importance_weighting, eps=eps,
    )
    if label_dropout is None:
        score_loss = get_loss_fn(sde, train, p_mean=p_mean, p_std=p_std, **options)
        loss_fn = lambda model, batch, generator: score_loss(model, batch, generator)  # noqa: E731
    else:
        if parameterization.objective != "dsm":
            raise ValueError(
                f"label-conditional training (label_dropout set) needs a continuous-time network; the "
                f"{parameterization.name!r} network trains with the {parameterization.objective} loss"
            )
        cfg_loss = get_cfg_loss_fn(sde, label_dropout, train, **options)
        loss_fn = lambda model, batch, generator: cfg_loss(model, *_labelled(batch), generator)  # noqa: E731
    return make_step_fn(loss_fn, train, optimize_fn, mixed_precision, ema_decay)


def get_classifier_step_fn(
    sde: SDE, train: bool, optimize_fn: Callable[..., Any] | None = None, eps: float = 1e-5, mixed_precision: str = "no"
) -> StepFn:
    """The step (:func:`make_step_fn`) of the noise-conditional classifier's cross-entropy on batches ``(x, y)``
    (:func:`train_lib.get_classifier_loss_fn`: ``t ~ U(eps, T)``, ``x(t)`` from the SDE's perturbation kernel)."""
    classifier_loss = get_classifier_loss_fn(sde, eps, train)
    loss_fn = lambda model, batch, generator: classifier_loss(model, *_labelled(batch), generator)  # noqa: E731
    return make_step_fn(loss_fn, train, optimize_fn, mixed_precision)


def step_fn_options(config: Any, sde: SDE) -> dict[str, Any]:
    """The keyword arguments of :func:`get_step_fn` read from ``config`` (the one place they are read).

    ``parameterization`` (:func:`models.parameterization_from_config`), ``reduce_mean`` [False], ``likelihood_weighting`` [False], ``importance_weighting``
    [False], ``eps`` [1e-5] (``config.training.eps``; the reference fixes it at 1e-5) and ``mixed_precision``
    [``'auto'``]. (``label_dropout``, read by :func:`get_step_fn_from_config`, is :func:`get_step_fn`'s only other
    option.)
    """
    field = lambda name, default: config_value(config, f"training.{name}", default)  # noqa: E731
    return {
        "parameterization": parameterization_from_config(config, sde),
        "reduce_mean": field("reduce_mean", False),
        "likelihood_weighting": field("likelihood_weighting", False),
        "importance_weighting": field("importance_weighting", False),
        "eps": field("eps", 1e-5),
        "mixed_precision": field("mixed_precision", "auto"),
        "p_mean": field("p_mean", -1.2),
        "p_std": field("p_std", 1.2),
    }


def get_step_fn_from_config(
    config: Any, sde: SDE, train: bool, optimize_fn: Callable[..., Any] | None = None, task: str = "score"
) -> StepFn:
    """The step of ``task`` (``'score'``: :func:`get_step_fn`; ``'classifier'``: :func:`get_classifier_step_fn`)
    with the options of ``config.training`` (:func:`step_fn_options`, and ``label_dropout`` [None] for the score);
    a training step defaults to ``optimize_fn = optimization_manager(config)`` (warm-up and clipping from
    ``config.optim``). With ``config.model.ema_halflife_images`` set, the score's EMA follows EDM's half-life rule
    (:func:`models.ema.halflife_decay` with ``model.ema_rampup_ratio`` and the global ``training.batch_size``)
    instead of the fixed ``model.ema_rate``."""
    check_choice("task", task, TASKS)
    if train and optimize_fn is None:
        optimize_fn = optimization_manager(config)
    options = step_fn_options(config, sde)
    if task == "classifier":
        return get_classifier_step_fn(sde, train, optimize_fn, eps=options["eps"], mixed_precision=options["mixed_precision"])
    label_dropout = config_value(config, "training.label_dropout", None)
    halflife = config_value(config, "model.ema_halflife_images", None)
    ema_decay = None
    if halflife is not None:
        batch = int(config_value(config, "training.batch_size"))
        rampup = config_value(config, "model.ema_rampup_ratio", 0.05)
        halflife_decay(batch, 0, halflife, rampup)  # checks the fields before any step

        def ema_decay(step: int) -> float:
            return halflife_decay(batch, step * batch, halflife, rampup)

    return get_step_fn(sde, train, optimize_fn=optimize_fn, label_dropout=label_dropout, ema_decay=ema_decay, **options)
