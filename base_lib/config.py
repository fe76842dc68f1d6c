"""Reading fields of a config (an ml-collections ``ConfigDict``, a plain dict or any attribute tree)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ml_collections import ConfigDict


def config_value(config: Any, path: str, default: Any = ...) -> Any:
    """Read a dotted field such as ``"model.beta_min"`` from a config.

    A missing field, or one declared as an unset placeholder (``None``), gives ``default`` when one is passed;
    without a default a missing field raises ``ValueError`` naming it.
    """
    node = config
    for part in path.split("."):
        try:
            node = node[part] if isinstance(node, dict) else getattr(node, part)
        except (AttributeError, KeyError):
            if default is not ...:
                return default
            raise ValueError(f"config.{path} is required but missing") from None
    if node is None and default is not ...:
        return default
    return node


def flatten_fields(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{'section.field': value}`` for every leaf of a config (``ConfigDict``) or nested mapping, in its order."""
    out: dict[str, Any] = {}
    for key in tree.keys():
        value = tree[key]
        if isinstance(value, (Mapping, ConfigDict)):
            out.update(flatten_fields(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
