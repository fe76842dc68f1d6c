"""Signal conditioning: networks that take, besides the noisy input, a signal derived from the clean data.

A *condition map* is a fixed, parameter-free map from the clean data ``x0`` (``(B, *data_shape)``) to the signal
``c`` (``(B, *signal_shape)``) a conditional network is given: SR3's low-resolution image (Saharia et al. 2021,
"Image Super-Resolution via Iterative Refinement", Sec. 2: the network sees the noisy high-resolution image with the
upsampled low-resolution one concatenated on the channels) or WaveGrad's log-mel spectrogram (Chen et al. 2021).
The same mechanism serves every such map:

* A signal-conditioned network has the attribute ``condition_map`` (a :class:`ConditionMap`) and is called
  ``network(x, labels, c)`` with ``c = condition_map(x0)`` of the same batch; :func:`condition_map_of` reads it
  (through ``DistributedDataParallel`` and ``torch.compile`` wrappers).
* ``config.model.conditioning`` names the map (unset: an unconditional network); :func:`register_condition` makes
  a :class:`ConditionMap` subclass available under a name, and :func:`condition_map_from_config` builds it with the
  class's ``from_config``.
* :class:`models.ScoreModel` binds ``c`` as it binds class labels (``score(x, t, y=c)``, ``score_fn(y=c)``), the
  training losses compute ``c = condition_map(x0)`` from their own batch, and jobs draw the conditions from
  test-split examples.
"""

from __future__ import annotations

import abc
from typing import Any, Callable, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from base_lib.checks import check_positive_int
from base_lib.config import config_value

from .registry import same_definition


class ConditionMap(nn.Module, abc.ABC):
    """A fixed map from clean data ``x0`` ``(B, *data_shape)`` to the signal ``c`` ``(B, *signal_shape)`` a
    conditioned network takes. It has no parameters (nothing in it is trained), so a network's ``state_dict`` is
    unchanged by holding one."""

    #: the name it is registered under (set by :func:`register_condition`)
    name: str = ""

    @abc.abstractmethod
    def forward(self, x0: Tensor) -> Tensor:
        """The signal ``c`` of each example of the batch ``x0``."""

    @abc.abstractmethod
    def signal_shape(self, data_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of one example's signal for data of shape ``data_shape`` (without the batch dimension);
        ``ValueError`` when the map does not apply to such data."""

    @classmethod
    def from_config(cls, config: Any) -> "ConditionMap":
        """The map as ``config`` sets it up (each registered map reads its own fields)."""
        return cls()


C = TypeVar("C", bound=type[ConditionMap])

_CONDITIONS: dict[str, type[ConditionMap]] = {}


def register_condition(name: str) -> Callable[[C], C]:
    """Class decorator registering a :class:`ConditionMap` subclass as ``config.model.conditioning = name``
    (case-insensitive); the class's ``from_config(config)`` builds it. A different class under a taken name is a
    ``ValueError``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"register_condition: the name must be a non-empty string, got {name!r}")
    key = name.lower()

    def decorator(cls: C) -> C:
        if not (isinstance(cls, type) and issubclass(cls, ConditionMap)):
            raise ValueError(f"register_condition must decorate a subclass of models.ConditionMap, got {cls!r}")
        if key in _CONDITIONS and not same_definition(_CONDITIONS[key], cls):
            raise ValueError(f"a condition map is already registered as {key!r}: {_CONDITIONS[key].__qualname__}")
        cls.name = key
        _CONDITIONS[key] = cls
        return cls

    return decorator


def available_conditions() -> list[str]:
    """The registered condition-map names, sorted."""
    return sorted(_CONDITIONS)


def get_condition(name: str) -> type[ConditionMap]:
    """The :class:`ConditionMap` class registered as ``name``; ``ValueError`` naming ``config.model.conditioning``
    and the known names if there is none."""
    if not isinstance(name, str) or name.lower() not in _CONDITIONS:
        raise ValueError(
            f"config.model.conditioning must be one of {', '.join(available_conditions())} (or unset), got {name!r}"
        )
    return _CONDITIONS[name.lower()]


def condition_map_from_config(config: Any) -> ConditionMap | None:
    """The condition map named by ``config.model.conditioning``, or ``None`` when it is unset (or empty)."""
    name = config_value(config, "model.conditioning", None)
    if name is None or name == "":
        return None
    return get_condition(name).from_config(config)


def _inner(network: nn.Module) -> nn.Module:
    """``network`` without its ``DistributedDataParallel`` / ``torch.compile`` (``OptimizedModule``) wrappers."""
    for _ in range(8):  # wrappers nest a few deep at most
        if isinstance(network, nn.parallel.DistributedDataParallel):
            network = network.module
        elif isinstance(getattr(network, "_orig_mod", None), nn.Module):
            network = network._orig_mod
        else:
            break
    return network


def condition_map_of(network: nn.Module) -> ConditionMap | None:
    """The network's ``condition_map`` attribute, or ``None`` for a network that takes no signal."""
    condition_map = getattr(_inner(network), "condition_map", None)
    return condition_map if isinstance(condition_map, ConditionMap) else None


def check_signal(c: Any, x: Tensor, condition_map: ConditionMap, name: str = "y") -> Tensor:
    """``c`` if it is a tensor of shape ``(B, *signal_shape)`` for the batch ``x``, else a one-line ``ValueError``
    naming ``name`` (the signal of a conditioned network must be given: there is no null signal)."""
    if not isinstance(c, Tensor):
        raise ValueError(
            f"{name}: the network is conditioned on a {condition_map.name!r} signal; give its signal "
            f"c = condition_map(x0) as a tensor, got {type(c).__name__}"
        )
    expected = (x.shape[0], *condition_map.signal_shape(tuple(x.shape[1:])))
    if tuple(c.shape) != expected:
        raise ValueError(f"{name}: the {condition_map.name!r} signal must have shape {expected}, got {tuple(c.shape)}")
    return c


@register_condition("low_resolution")
class LowResolution(ConditionMap):
    """SR3's low-resolution input: the mean of each ``factor x factor`` block, upsampled back to the full size by
    nearest-neighbour repetition (so the signal has the data's shape and concatenates to it on the channels).

    Saharia et al. upsample with bicubic interpolation; nearest repetition is used here because it keeps the
    measurement exactly: the block means of the signal are the low-resolution image itself (bicubic would mix
    neighbouring blocks, and would not invert to them), and the low-resolution pixels are the signal's
    ``factor``-strided entries. The network is free to learn any interpolation from it.
    """

    def __init__(self, factor: int = 2):
        super().__init__()
        self.factor = check_positive_int("low_resolution_factor", factor)  # the side of the averaged blocks

    @classmethod
    def from_config(cls, config: Any) -> "LowResolution":
        return cls(config_value(config, "model.low_resolution_factor", 2))

    def signal_shape(self, data_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(data_shape) != 3 or data_shape[1] % self.factor or data_shape[2] % self.factor:
            raise ValueError(
                f"low_resolution_factor={self.factor}: the data must be images (C, H, W) with H and W divisible by "
                f"the factor, got shape {tuple(data_shape)}"
            )
        return tuple(data_shape)

    def downsample(self, x0: Tensor) -> Tensor:
        """The low-resolution image ``(B, C, H / factor, W / factor)``: the mean of each block."""
        self.signal_shape(tuple(x0.shape[1:]))
        return F.avg_pool2d(x0, self.factor) if self.factor > 1 else x0

    def upsample(self, low: Tensor) -> Tensor:
        """Nearest-neighbour upsampling of a low-resolution image by ``factor`` (each pixel to a block)."""
        return low.repeat_interleave(self.factor, dim=-2).repeat_interleave(self.factor, dim=-1)

    def forward(self, x0: Tensor) -> Tensor:
        return self.upsample(self.downsample(x0))

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


__all__ = [
    "ConditionMap",
    "LowResolution",
    "register_condition",
    "available_conditions",
    "get_condition",
    "condition_map_from_config",
    "condition_map_of",
    "check_signal",
]
