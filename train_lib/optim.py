"""The optimizer of ``config.optim`` and the update rule of the 2021 reference: linear warm-up, then gradient clipping.

``config.optim`` fields (the reference's): ``optimizer`` (``'Adam'`` or ``'AdamW'``, case-insensitive), ``lr``,
``beta1`` (``beta2`` [0.999] is optional), ``eps``, ``weight_decay`` (Adam adds it to the gradient as an L2 penalty,
AdamW decays the weights directly, Loshchilov & Hutter 2019), ``warmup`` (steps) and ``grad_clip`` (the largest
global gradient norm; negative disables clipping).
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Iterable

import torch
from torch import Tensor

from base_lib.config import config_value
from base_lib.checks import check_finite_positive

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
_OPTIMIZER_NAMES = ("Adam", "AdamW")

OptimizeFn = Callable[..., Tensor | None]
"""``optimize_fn(optimizer, params, step, lr=..., warmup=..., grad_clip=..., grad_scaler=None) -> grad norm | None``."""


def _check_number(name: str, value: Any, low: float, high: float = math.inf, high_open: bool = False) -> float:
    """``float(value)`` if it is a real number (not a bool) in ``[low, high]`` (``[low, high)`` when ``high_open``)."""
    interval = f"[{low}, {high}{')' if high_open else ']'}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number in {interval}, got {value!r}")
    value = float(value)
    if not (low <= value <= high) or (high_open and value == high) or math.isnan(value):
        raise ValueError(f"{name} must lie in {interval}, got {value}")
    return value


def get_optimizer(config: Any, params: Iterable[Tensor] | Iterable[dict]) -> torch.optim.Optimizer:
    """``torch.optim.Adam`` or ``AdamW`` over ``params`` with ``lr``, ``betas=(beta1, beta2)``, ``eps`` and
    ``weight_decay`` from ``config.optim``; ``ValueError`` for an unknown optimizer (listing the allowed ones)
    or an out-of-range value."""
    name = config_value(config, "optim.optimizer")
    if not isinstance(name, str) or name.lower() not in OPTIMIZERS:
        raise ValueError(f"config.optim.optimizer={name!r} is not supported; allowed: {', '.join(_OPTIMIZER_NAMES)}")
    return OPTIMIZERS[name.lower()](
        params,
        lr=check_finite_positive("config.optim.lr", config_value(config, "optim.lr")),
        betas=(
            _check_number("config.optim.beta1", config_value(config, "optim.beta1"), 0.0, 1.0, high_open=True),
            _check_number("config.optim.beta2", config_value(config, "optim.beta2", 0.999), 0.0, 1.0, high_open=True),
        ),
        eps=_check_number("config.optim.eps", config_value(config, "optim.eps"), 0.0),
        weight_decay=_check_number("config.optim.weight_decay", config_value(config, "optim.weight_decay", 0.0), 0.0),
    )


def warmup_lr(lr: float, step: int, warmup: float) -> float:
    """Learning rate at optimizer step ``step`` (counted from 0): ``lr * min(step / warmup, 1)``, or ``lr`` when
    ``warmup <= 0``. As in the reference, step 0 has learning rate 0. A Python float, so that optimizer state
    dicts hold no numpy scalars and load with ``torch.load(weights_only=True)``."""
    if warmup <= 0:
        return float(lr)
    return float(lr) * min(float(step) / float(warmup), 1.0)


def optimization_manager(config: Any) -> OptimizeFn:
    """``optimize_fn(optimizer, params, step, lr, warmup, grad_clip, grad_scaler=None)`` with defaults from ``config.optim``.

    One update: every parameter group's learning rate is set to :func:`warmup_lr` ``(lr, step, warmup)``; if
    ``grad_clip >= 0`` the gradients of ``params`` are scaled so that their global 2-norm is at most ``grad_clip``
    (``torch.nn.utils.clip_grad_norm_``); then ``optimizer.step()``. With an fp16 ``grad_scaler`` the gradients
    are unscaled before clipping and the step is skipped when they overflowed. Returns the global gradient norm
    before clipping (``None`` when clipping is off).
    """
    default_lr = check_finite_positive("config.optim.lr", config_value(config, "optim.lr"))
    default_warmup = _check_number("config.optim.warmup", config_value(config, "optim.warmup", 0), 0.0)
    default_clip = _check_number("config.optim.grad_clip", config_value(config, "optim.grad_clip", -1.0), -math.inf)

    def optimize_fn(
        optimizer: torch.optim.Optimizer,
        params: Iterable[Tensor],
        step: int,
        lr: float = default_lr,
        warmup: float = default_warmup,
        grad_clip: float = default_clip,
        grad_scaler: torch.amp.GradScaler | None = None,
    ) -> Tensor | None:
        params = list(params)
        lr_now = warmup_lr(lr, step, warmup)
        for group in optimizer.param_groups:
            group["lr"] = lr_now
        if grad_scaler is not None:
            grad_scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm=grad_clip) if grad_clip >= 0 else None
        if grad_scaler is not None:
            grad_scaler.step(optimizer)
            grad_scaler.update()
        else:
            optimizer.step()
        return grad_norm

    return optimize_fn
