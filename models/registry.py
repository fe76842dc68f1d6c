"""Registry of score networks by config name, and :func:`create_model` to build one from an ml-collections config.

A network is an ``nn.Module`` subclass called as ``model(x, labels)``; registering it under a name makes it
available as ``config.model.name = name``. The translation from a config to the constructor's keyword
arguments lives in exactly one place per model: its ``from_config(config)`` classmethod, or a translation
function given to :func:`register_model`. Constructors themselves take explicit keyword arguments, never a
config, so a network can be built, tested and reused without one.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

import torch
from torch import nn

from base_lib.config import config_value

ConfigTranslator = Callable[[Any], nn.Module]
"""``build(config) -> nn.Module``: the one place where a model's config fields become constructor arguments."""

M = TypeVar("M", bound=type[nn.Module])

_MODELS: dict[str, tuple[type[nn.Module], ConfigTranslator]] = {}


def same_definition(a: type, b: type) -> bool:
    """True when ``a`` and ``b`` are the same class or the same definition re-executed (module reload, notebook)."""
    return a is b or (a.__module__ == b.__module__ and a.__qualname__ == b.__qualname__)


def register_model(
    cls: M | None = None, *, name: str | None = None, from_config: ConfigTranslator | None = None
) -> M | Callable[[M], M]:
    """Class decorator making a score network available to :func:`get_model` and :func:`create_model`.

    Usable bare (``@register_model``, registered under the class name) or with arguments
    (``@register_model(name="mlp")``). Names are case-insensitive, as those of :func:`sde_lib.get_sde`.
    ``from_config(config) -> nn.Module`` translates a config into a model; without it the class must define
    a ``from_config`` classmethod. Registering a different class under a taken name raises ``ValueError``.
    """

    def decorator(model_cls: M) -> M:
        if not (isinstance(model_cls, type) and issubclass(model_cls, nn.Module)):
            raise ValueError(f"register_model must decorate a subclass of torch.nn.Module, got {model_cls!r}")
        build = from_config if from_config is not None else getattr(model_cls, "from_config", None)
        if not callable(build):
            raise ValueError(
                f"{model_cls.__name__} must define a classmethod from_config(config), or be registered with "
                "register_model(from_config=...), to be built from a config"
            )
        key = (name if name is not None else model_cls.__name__).lower()
        if not key:
            raise ValueError("register_model: the model name must be a non-empty string")
        if key in _MODELS and not same_definition(_MODELS[key][0], model_cls):
            raise ValueError(f"a model is already registered as {key!r}: {_MODELS[key][0].__qualname__}")
        _MODELS[key] = (model_cls, build)
        return model_cls

    if cls is not None:
        return decorator(cls)
    return decorator


def available_models() -> list[str]:
    """The registered model names, sorted."""
    return sorted(_MODELS)


def _entry(name: Any) -> tuple[type[nn.Module], ConfigTranslator]:
    if not isinstance(name, str) or name.lower() not in _MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(available_models())}")
    return _MODELS[name.lower()]


def get_model(name: str) -> type[nn.Module]:
    """The model class registered as ``name``; ``ValueError`` listing the known names if there is none."""
    return _entry(name)[0]


def create_model(config: Any) -> nn.Module:
    """Build the network named by ``config.model.name`` and move it to ``config.device`` (the CPU if absent).

    The model's own fields are read by its registered translation (see each model's ``from_config``). Unlike
    the 2021 reference, the model is not wrapped in ``torch.nn.DataParallel``: the reference's checkpoints
    therefore carry a ``module.`` key prefix that :func:`models.strip_data_parallel_prefix` removes.
    """
    _, build = _entry(config_value(config, "model.name"))
    model = build(config)
    device = config_value(config, "device", None)
    return model.to(torch.device(device) if device is not None else torch.device("cpu"))
