"""Experiment configs (ml-collections), named and structured as in the 2021 reference.

Each config file defines ``get_config() -> ml_collections.ConfigDict`` and is passed by path, e.g.
``--config configs/vp/toy_mlp_continuous.py``. :func:`load_config` loads one from Python.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import ml_collections


def load_config(path: str | Path) -> ml_collections.ConfigDict:
    """Run ``get_config()`` of the config file at ``path``; ``ValueError`` if the file or the function is missing."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file {str(path)!r} does not exist")
    spec = importlib.util.spec_from_file_location(f"_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not callable(getattr(module, "get_config", None)):
        raise ValueError(f"config file {str(path)!r} defines no get_config()")
    return module.get_config()
