"""The data scaler and its inverse, as in the 2021 reference (``config.data.centered``).

Images enter the model as values in ``[0, 1]``; with ``config.data.centered`` they are mapped to ``[-1, 1]`` by
``x -> 2 x - 1`` and back by ``y -> (y + 1) / 2``. Both maps are affine, which is what
:func:`samplers.bits_per_dim` needs to account for the change of variables (``log2|a|`` per dimension).

:func:`model_data_range` is the interval every coordinate of the data lies in, in the model's coordinates
(images: the scaler's image of ``[0, 1]``; waveforms: ``[-1, 1]``; the toy densities have none).

The 2-D toy densities are already in the model's coordinates, so their scalers are the identity whatever
``centered`` says (mapping a ring of radius 4 by ``2 x - 1`` would only move it off the origin).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from .audio import AUDIO_DATASETS
from .toy import TOY_DATASETS

Scaler = Callable[[Tensor], Tensor]


def _is_centered(config: Any) -> bool:
    """``config.data.centered`` (default ``False``), except for toy data whose points are used as they are."""
    data = config.data
    if str(data.get("dataset", "")).lower() in TOY_DATASETS:
        return False
    return bool(data.get("centered", False))


def _centre(x: Tensor) -> Tensor:
    """``[0, 1] -> [-1, 1]``: ``2 x - 1``."""
    return x * 2.0 - 1.0


def _uncentre(y: Tensor) -> Tensor:
    """``[-1, 1] -> [0, 1]``: ``(y + 1) / 2``."""
    return (y + 1.0) / 2.0


def _identity(x: Tensor) -> Tensor:
    return x


def get_data_scaler(config: Any) -> Scaler:
    """The map from data in ``[0, 1]`` to the model's space: ``2 x - 1`` if ``config.data.centered``, else the identity."""
    return _centre if _is_centered(config) else _identity


def get_data_inverse_scaler(config: Any) -> Scaler:
    """The inverse of :func:`get_data_scaler`: ``(y + 1) / 2`` if ``config.data.centered``, else the identity."""
    return _uncentre if _is_centered(config) else _identity


def model_data_range(config: Any) -> tuple[float, float] | None:
    """``(low, high)``: every coordinate of ``config.data.dataset``'s examples lies in it, in the model's coordinates
    (after :func:`get_data_scaler`); ``None`` for the toy densities, whose support is unbounded."""
    name = str(config.data.get("dataset", "")).lower()
    if name in TOY_DATASETS:
        return None
    if name in AUDIO_DATASETS:
        return -1.0, 1.0  # waveforms are already in the model's coordinates
    scale = get_data_scaler(config)
    return float(scale(torch.tensor(0.0))), float(scale(torch.tensor(1.0)))
