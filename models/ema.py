"""Exponential moving average of model weights, in the 2021 reference's checkpoint format.

After update ``k`` the shadow weights are ``s_k = d_k s_{k-1} + (1 - d_k) theta_k`` with ``d_k = min(decay,
(1 + k) / (10 + k))`` when ``use_num_updates`` (TensorFlow's ``ExponentialMovingAverage`` warm-up, which the
reference uses), else ``d_k = decay``. Only parameters with ``requires_grad=True`` are averaged (a fixed Fourier
projection ``W`` is not), in the order of ``model.parameters()``. The state is
``{'decay': float, 'num_updates': int | None, 'shadow_params': [Tensor, ...]}``, the reference's ``'ema'`` entry.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import Tensor


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

    def update(self, parameters: Iterable[Tensor]) -> None:
        """``s <- d s + (1 - d) theta`` for every trainable parameter ``theta`` (call after each optimizer step)."""
        params = self._matching(parameters)
        decay = self.current_decay()
        if self.num_updates is not None:
            self.num_updates += 1
        with torch.no_grad():
            torch._foreach_lerp_(self.shadow_params, [p.detach() for p in params], 1.0 - decay)

    def copy_to(self, parameters: Iterable[Tensor]) -> None:
        """Overwrite the trainable ``parameters`` with the averaged weights (non-trainable ones are left alone)."""
        with torch.no_grad():
            for shadow, param in zip(self.shadow_params, self._matching(parameters)):
                param.copy_(shadow)

    def store(self, parameters: Iterable[Tensor]) -> None:
        """Save a copy of all ``parameters``, e.g. before :meth:`copy_to` for an evaluation with the average."""
        self._stored = [p.detach().clone() for p in parameters]

    def restore(self, parameters: Iterable[Tensor]) -> None:
        """Put back the parameters saved by :meth:`store`."""
        parameters = list(parameters)
        if len(parameters) != len(self._stored):
            raise ValueError(f"store() saved {len(self._stored)} parameters, got {len(parameters)} to restore")
        with torch.no_grad():
            for saved, param in zip(self._stored, parameters):
                param.copy_(saved)

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
