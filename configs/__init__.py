"""Experiment configs (ml-collections), named and structured as in the 2021 reference.

Each config file defines ``get_config() -> ml_collections.ConfigDict`` and is passed by path, e.g.
``--config configs/vp/toy_mlp_continuous.py``. :func:`load_config` loads one from Python.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import ml_collections


def load_config(path: str | Path) -> ml_collections.ConfigDict:
    """Run ``get_config()`` of the config file at ``path``.

    A missing file, a file that does not run (syntax error, failing import, exception), a missing ``get_config``, or
    one that fails or returns something other than a ``ConfigDict`` raise ``ValueError`` with a one-line message.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise ValueError(f"config file {str(path)!r} {what}")
    spec = importlib.util.spec_from_file_location(f"_config_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ValueError(f"config file {str(path)!r} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as error:
        raise ValueError(f"config file {str(path)!r} has a syntax error at line {error.lineno}: {error.msg}") from None
    except Exception as error:  # the file's own code failed: report where, in one line
        raise ValueError(f"config file {str(path)!r} fails when loaded: {_one_line(error)}") from None
    get_config = getattr(module, "get_config", None)
    if not callable(get_config):
        raise ValueError(f"config file {str(path)!r} defines no get_config()")
    try:
        config = get_config()
    except Exception as error:
        raise ValueError(f"get_config() of {str(path)!r} fails: {_one_line(error)}") from None
    if not isinstance(config, ml_collections.ConfigDict):
        raise ValueError(f"get_config() of {str(path)!r} must return an ml_collections.ConfigDict, got {type(config).__name__}")
    return config


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
