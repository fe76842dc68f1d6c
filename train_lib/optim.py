"""The optimizer of ``config.optim`` and the update rule of the 2021 reference: linear warm-up, then gradient clipping.

``config.optim`` fields (the reference's): ``optimizer`` (``'Adam'`` or ``'AdamW'``, case-insensitive), ``lr``,
``beta1`` (``beta2`` [0.999] is optional), ``eps``, ``weight_decay`` (Adam adds it to the gradient as an L2 penalty,
AdamW decays the weights directly, Loshchilov & Hutter 2019), ``warmup`` (steps) and ``grad_clip`` (the largest
global gradient norm; negative disables clipping).

The Adam update runs over all parameters at once: torch's fused Adam (one kernel reading each parameter, gradient
and moment once) where every parameter is a floating-point tensor on a device with fused optimizer kernels (the CPU
and CUDA among them), else its ``foreach`` kernels, rather than torch's CPU default, a Python loop of several
operations per parameter (``benchmarks/training.py --experiments loop`` times both). The choice is made once, when
:func:`get_optimizer` builds the optimizer, and is kept when a state dict is loaded (whose parameter groups carry the
writer's ``fused`` and ``foreach`` flags). The state dict's format (``step``, ``exp_avg``, ``exp_avg_sq`` per
parameter) is the same for every kernel, so checkpoints move between them. Clipping takes the per-tensor norms with
torch's ``foreach`` norm.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Iterable

import torch
from torch import Tensor

from base_lib.config import config_value
from base_lib.checks import check_finite_positive, check_choice

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
_OPTIMIZER_NAMES = ("Adam", "AdamW")
KERNELS = ("auto", "fused", "foreach", "loop")  # how the Adam update runs: see adam_kernel

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


def _fused_devices() -> tuple[str, ...]:
    """The device types on which torch has fused optimizer kernels (its own list, where this torch exposes it)."""
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
    except ImportError:  # a torch without the list: the two device types every fused Adam build supports
        return ("cpu", "cuda")
    return tuple(_get_fused_kernels_supported_devices())


def adam_kernel(params: Iterable[Tensor]) -> str:
    """``'fused'`` when every tensor of ``params`` is floating point on a device type with fused optimizer kernels
    (what ``torch.optim.Adam(fused=True)`` requires of its parameters), else ``'foreach'``."""
    devices = _fused_devices()
    fused = all(p.is_floating_point() and p.device.type in devices for p in params)
    return "fused" if fused else "foreach"


def _kernel_flags(kernel: str) -> dict[str, bool]:
    """The ``fused`` and ``foreach`` arguments of ``torch.optim.Adam`` that select ``kernel``."""
    return {"fused": kernel == "fused", "foreach": kernel == "foreach"}


def _keep_kernel(optimizer: torch.optim.Optimizer, kernel: str) -> None:
    """Keep ``kernel`` across ``optimizer.load_state_dict``, which replaces the parameter groups' options, the
    ``fused`` and ``foreach`` flags among them, by those of the state it loads (a checkpoint written with another
    kernel, or by a torch that had no such flags)."""
    flags = _kernel_flags(kernel)

    def restore_flags(loaded: torch.optim.Optimizer) -> None:
        for group in loaded.param_groups:
            group.update(flags)

    optimizer.register_load_state_dict_post_hook(restore_flags)


def _materialized(params: Iterable[Tensor] | Iterable[dict]) -> list[Tensor] | list[dict]:
    """``params`` as a list, each parameter group's ``'params'`` as a list too: they are read twice, once to choose
    the kernel and once by the optimizer, and may be generators such as ``model.parameters()``."""
    items = list(params)
    return [
        {**item, "params": [item["params"]] if isinstance(item["params"], Tensor) else list(item["params"])}
        if isinstance(item, dict) else item
        for item in items
    ]


def _tensors(params: list[Tensor] | list[dict]) -> list[Tensor]:
    """The parameters of a :func:`_materialized` list of tensors or parameter groups."""
    return [p for item in params for p in (item["params"] if isinstance(item, dict) else [item])]


def get_optimizer(config: Any, params: Iterable[Tensor] | Iterable[dict], kernel: str = "auto") -> torch.optim.Optimizer:
    """``torch.optim.Adam`` or ``AdamW`` over ``params`` with ``lr``, ``betas=(beta1, beta2)``, ``eps`` and
    ``weight_decay`` from ``config.optim``; ``ValueError`` for an unknown optimizer (listing the allowed ones)
    or an out-of-range value.

    ``kernel``: how the update runs, ``'auto'`` (:func:`adam_kernel`: fused where torch has it for the parameters'
    devices and dtypes, else foreach), ``'fused'``, ``'foreach'`` or ``'loop'`` (torch's per-parameter update). The
    choice holds for the optimizer's life, also after ``load_state_dict``.
    """
    name = config_value(config, "optim.optimizer")
    if not isinstance(name, str) or name.lower() not in OPTIMIZERS:
        raise ValueError(f"config.optim.optimizer={name!r} is not supported; allowed: {', '.join(_OPTIMIZER_NAMES)}")
    check_choice("kernel", kernel, KERNELS)
    params = _materialized(params)
    if kernel == "auto":
        kernel = adam_kernel(_tensors(params))
    optimizer = OPTIMIZERS[name.lower()](
        params,
        lr=check_finite_positive("config.optim.lr", config_value(config, "optim.lr")),
        betas=(
            _check_number("config.optim.beta1", config_value(config, "optim.beta1"), 0.0, 1.0, high_open=True),
            _check_number("config.optim.beta2", config_value(config, "optim.beta2", 0.999), 0.0, 1.0, high_open=True),
        ),
        eps=_check_number("config.optim.eps", config_value(config, "optim.eps"), 0.0),
        weight_decay=_check_number("config.optim.weight_decay", config_value(config, "optim.weight_decay", 0.0), 0.0),
        **_kernel_flags(kernel),
    )
    _keep_kernel(optimizer, kernel)
    return optimizer


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
    (``torch.nn.utils.clip_grad_norm_``, which takes the per-tensor norms with one ``foreach`` call on the CPU and
    CUDA); then ``optimizer.step()``. With an fp16 ``grad_scaler`` the gradients are unscaled before clipping and
    the step is skipped when they overflowed. Returns the global gradient norm before clipping (``None`` when
    clipping is off).
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
