"""Exponential moving average of model weights, in the 2021 reference's checkpoint format.

After update ``k`` the shadow weights are ``s_k = d_k s_{k-1} + (1 - d_k) theta_k`` with ``d_k = min(decay,
(1 + k) / (10 + k))`` when ``use_num_updates`` (TensorFlow's ``ExponentialMovingAverage`` warm-up, which the
reference uses), else ``d_k = decay``. Only parameters with ``requires_grad=True`` are averaged (a fixed Fourier
projection ``W`` is not), in the order of ``model.parameters()``. The state is
``{'decay': float, 'num_updates': int | None, 'shadow_params': [Tensor, ...]}``, the reference's ``'ema'`` entry.

EDM (Karras et al., "Elucidating the Design Space of Diffusion-Based Generative Models", NeurIPS 2022, appendix
F.1) sets the decay of each step from a half-life measured in training images instead: :func:`halflife_decay`
gives it, and ``update(parameters, decay=...)`` uses it for that step (the stored ``decay`` and the state's format
are unchanged).

:meth:`~ExponentialMovingAverage.update` moves all shadow tensors with one ``torch._foreach_lerp_`` call,
``s <- s + (1 - d_k)(theta_k - s)``, the rule above up to float rounding; :meth:`~ExponentialMovingAverage.copy_to`
and :meth:`~ExponentialMovingAverage.restore` copy with one ``torch._foreach_copy_``. On CUDA these are single
kernels over all tensors; on the CPU one call still replaces a Python loop over the parameters.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Iterable

import torch
from torch import Tensor

from base_lib.checks import check_finite_positive, check_positive_int

MIN_HALFLIFE_IMAGES = 1e-8  # floor of the half-life: decay 0 (the average restarts at the weights) at 0 images


def halflife_decay(batch_size: int, images_seen: int, halflife_images: float, rampup_ratio: float | None = 0.05) -> float:
    """EMA decay of one step of ``batch_size`` images under a half-life of ``halflife_images`` images (EDM's rule).

    The half-life is ``h = min(halflife_images, rampup_ratio * images_seen)`` (``halflife_images`` when
    ``rampup_ratio`` is None) and the decay ``d = 0.5 ** (batch_size / max(h, 1e-8))``: after ``h / batch_size``
    steps the weights of before hold a share ``d^(h / batch_size) = 1/2`` of the average. With the ramp-up the
    average covers at most the last ``rampup_ratio`` of training, so early weights are forgotten quickly;
    ``images_seen`` counts the images trained on before this step (0 at the first step: decay 0, the average starts
    at the weights). EDM's CIFAR-10 setting: half-life 500k images, ramp-up 0.05.
    """
    batch_size = check_positive_int("batch_size", batch_size)
    if isinstance(images_seen, bool) or not isinstance(images_seen, numbers.Real) or not images_seen >= 0:
        raise ValueError(f"images_seen must be a number >= 0, got {images_seen!r}")
    if math.isinf(images_seen):
        raise ValueError(f"images_seen must be finite, got {images_seen!r}")
    halflife = check_finite_positive("halflife_images", halflife_images)
    if rampup_ratio is not None:
        halflife = min(halflife, check_finite_positive("rampup_ratio", rampup_ratio) * float(images_seen))
    return 0.5 ** (batch_size / max(halflife, MIN_HALFLIFE_IMAGES))


def _trainable(parameters: Iterable[Tensor]) -> list[Tensor]:
    return [p for p in parameters if p.requires_grad]


class ExponentialMovingAverage:
    """Shadow copy ``s`` of the trainable parameters, moved towards them by :meth:`update` after each optimizer step."""

    def __init__(self, parameters: Iterable[Tensor], decay: float, use_num_updates: bool = True):
        self.decay = self._check_decay(decay)  # the largest decay d, reached once (1 + k) / (10 + k) exceeds it
        self.num_updates: int | None = 0 if use_num_updates else None  # updates so far; None: no warm-up
        self.shadow_params = [p.detach().clone() for p in _trainable(parameters)]  # the averaged weights
        self._stored: list[Tensor] = []  # parameters saved by store(), put back by restore()

    @staticmethod
    def _check_decay(decay: Any) -> float:
        try:
            decay = float(decay)
        except (TypeError, ValueError):
            raise ValueError(f"decay must be a number in [0, 1], got {decay!r}") from None
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay must lie in [0, 1], got {decay}")
        return decay

    def _matching(self, parameters: Iterable[Tensor]) -> list[Tensor]:
        params = _trainable(parameters)
        if len(params) != len(self.shadow_params):
            raise ValueError(
                f"got {len(params)} trainable parameters, but the average holds {len(self.shadow_params)}: "
                "pass the parameters it was built from"
            )
        return params

    def current_decay(self) -> float:
        """The decay ``d_k`` that the next :meth:`update` will use."""
        if self.num_updates is None:
            return self.decay
        k = self.num_updates + 1
        return min(self.decay, (1 + k) / (10 + k))

    def update(self, parameters: Iterable[Tensor], decay: float | None = None) -> None:
        """``s <- d s + (1 - d) theta`` for every trainable parameter ``theta`` (call after each optimizer step).

        ``d`` is :meth:`current_decay`, or ``decay`` (in ``[0, 1]``) for this step when given, e.g. EDM's
        :func:`halflife_decay`; the stored ``decay`` is left as it is and ``num_updates`` still counts the step.
        """
        decay = self.current_decay() if decay is None else self._check_decay(decay)
        params = self._matching(parameters)
        if self.num_updates is not None:
            self.num_updates += 1
        if params:  # a model without trainable parameters has nothing to average
            with torch.no_grad():  # no_grad: the parameters are read without detached copies
                torch._foreach_lerp_(self.shadow_params, params, 1.0 - decay)

    def copy_to(self, parameters: Iterable[Tensor]) -> None:
        """Overwrite the trainable ``parameters`` with the averaged weights (non-trainable ones are left alone)."""
        params = self._matching(parameters)
        if params:
            with torch.no_grad():
                torch._foreach_copy_(params, self.shadow_params)

    def store(self, parameters: Iterable[Tensor]) -> None:
        """Save a copy of all ``parameters``, e.g. before :meth:`copy_to` for an evaluation with the average."""
        self._stored = [p.detach().clone() for p in parameters]

    def restore(self, parameters: Iterable[Tensor]) -> None:
        """Put back the parameters saved by :meth:`store`."""
        parameters = list(parameters)
        if len(parameters) != len(self._stored):
            raise ValueError(f"store() saved {len(self._stored)} parameters, got {len(parameters)} to restore")
        if parameters:
            with torch.no_grad():
                torch._foreach_copy_(parameters, self._stored)

    def state_dict(self) -> dict[str, Any]:
        """``{'decay', 'num_updates', 'shadow_params'}``, the reference's format (the shadow tensors, not copies)."""
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow_params": list(self.shadow_params)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load a :meth:`state_dict` (or a reference checkpoint's ``'ema'``) into the existing shadow tensors.

        The shadow list must match the current one in length and shapes; values are copied, keeping this
        object's devices and dtypes.
        """
        missing = {"decay", "num_updates", "shadow_params"} - set(state)
        if missing:
            raise ValueError(f"EMA state is missing {sorted(missing)}")
        shadows = list(state["shadow_params"])
        if len(shadows) != len(self.shadow_params):
            raise ValueError(
                f"EMA state has {len(shadows)} shadow parameters, this average has {len(self.shadow_params)}"
            )
        for i, (new, old) in enumerate(zip(shadows, self.shadow_params)):
            if new.shape != old.shape:
                raise ValueError(f"EMA shadow parameter {i} has shape {tuple(new.shape)}, expected {tuple(old.shape)}")
        num_updates = state["num_updates"]
        is_count = isinstance(num_updates, int) and not isinstance(num_updates, bool) and num_updates >= 0
        if num_updates is not None and not is_count:
            raise ValueError(f"EMA num_updates must be None or an integer >= 0, got {num_updates!r}")
        self.decay = self._check_decay(state["decay"])
        self.num_updates = None if num_updates is None else int(num_updates)
        with torch.no_grad():
            for new, old in zip(shadows, self.shadow_params):
                old.copy_(new)
