"""Registry of SDE classes by config name, and :func:`get_sde` to build one from an ml-collections config."""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from base_lib.config import config_value

from .base import SDE

_SDES: dict[str, type[SDE]] = {}

S = TypeVar("S", bound=type[SDE])


def register_sde(name: str) -> Callable[[S], S]:
    """Class decorator: make an :class:`SDE` subclass available to :func:`get_sde` as ``config.training.sde = name``.

    The class must define ``from_config(cls, config) -> SDE``, translating the config's fields into
    constructor arguments (see :func:`config_value`).
    """
    key = name.lower()

    def decorator(cls: S) -> S:
        if not (isinstance(cls, type) and issubclass(cls, SDE)):
            raise ValueError(f"register_sde({name!r}) must decorate a subclass of sde_lib.SDE, got {cls!r}")
        if not callable(getattr(cls, "from_config", None)):
            raise ValueError(f"{cls.__name__} must define a classmethod from_config(config) to be registered")
        if key in _SDES and _SDES[key] is not cls:
            raise ValueError(f"an SDE is already registered as {name!r}: {_SDES[key].__name__}")
        _SDES[key] = cls
        return cls

    return decorator


def available_sdes() -> list[str]:
    """The registered SDE names, sorted."""
    return sorted(_SDES)


def get_sde(config: Any) -> SDE:
    """Build the SDE named by ``config.training.sde`` (``vpsde``, ``subvpsde``, ``vesde``, ``edm`` or a registered name).

    Parameters come from ``config.model`` as in the 2021 reference configs: ``beta_min``, ``beta_max``
    (VP, sub-VP), ``sigma_min``, ``sigma_max`` (VE, EDM) and ``num_scales`` (all, the ``N`` of the SDE).
    """
    name = config_value(config, "training.sde")
    if not isinstance(name, str) or name.lower() not in _SDES:
        raise ValueError(f"config.training.sde={name!r} is not a known SDE; known: {', '.join(available_sdes())}")
    try:
        return _SDES[name.lower()].from_config(config)
    except ValueError as error:  # the parameters are config.model's fields of the same names
        raise ValueError(f"config.training.sde={name!r} cannot be built from config.model: {error}") from None
