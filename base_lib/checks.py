"""Argument checks shared by every package: each returns the value, or raises ``ValueError`` naming the parameter and
what it accepts, so that bad input fails at the boundary in one line."""

from __future__ import annotations

import math
import numbers
from typing import Iterable, Sequence


def check_positive_int(name: str, value: int) -> int:
    """Return ``value`` if it is an integer >= 1, else raise ``ValueError`` naming the parameter."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def check_bool(name: str, value: bool) -> bool:
    """``value`` if it is ``True`` or ``False`` (not 0 / 1 or another truthy value), else ``ValueError`` naming the parameter."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def check_finite_positive(name: str, value: float) -> float:
    """Return ``float(value)`` if it is a finite number > 0 (not a bool), else raise ``ValueError`` naming the parameter."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value


def check_choice(name: str, value: str, allowed: Iterable[str]) -> str:
    """``value`` if it is one of ``allowed``, else ``ValueError`` listing the allowed values."""
    allowed = list(allowed)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")
    return value


def check_shape(shape: Sequence[int]) -> tuple[int, ...]:
    """``shape`` as a tuple ``(B, ...)`` of positive integers, else ``ValueError``."""
    try:
        shape = tuple(shape)
    except TypeError:
        raise ValueError(f"shape must be a sequence of positive integers (B, ...), got {shape!r}") from None
    if not shape or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1 for s in shape):
        raise ValueError(f"shape must be a non-empty sequence of positive integers (B, ...), got {shape!r}")
    return tuple(int(s) for s in shape)
