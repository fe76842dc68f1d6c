"""The config of a run: loaded from a file, overridden from the command line, recorded in the workdir, reconciled.

* :func:`parse_override` / :func:`apply_overrides`: ``--config.section.field=value`` with the declared field's type
  (a typed placeholder of :mod:`configs.toolkit_fields` included); an unknown field fails with "did you mean".
* :func:`write_record` / :func:`read_record`: the resolved config, every field with its value and type, in
  ``workdir/config.json`` (written atomically).
* :func:`trajectory_differences`: the fields in which two configs train differently. Everything but
  :data:`FREE_FIELDS` (evaluation, sampling, the device, the thread count and the network's compilation, which change
  results by float rounding only, the cadence of logs and checkpoints, the run length, the data folder) changes the
  trajectory of a training run.
* :func:`reconcile_with_record`: ``train`` on a workdir with a record resumes only when the trajectory fields match
  (or the user allowed the change); :func:`resolve_config`: what ``main.py`` runs for each mode (the record is the
  base of every mode but ``train``, so a user does not retype the overrides of the training run).

Every error is a :class:`jobs.experiment.ConfigError` with a one-line message.
"""

from __future__ import annotations

import ast
import copy
import difflib
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable

import ml_collections
from ml_collections.config_dict import FieldReference, placeholder

from base_lib.config import flatten_fields
from base_lib.files import atomic_write
from configs import load_config

from .experiment import ConfigError

RECORD_NAME = "config.json"

#: fields (or sections, ending in '.') that do not change what a training run computes at a given step
FREE_FIELDS = (
    "eval.", "sampling.", "classifier.", "device", "num_threads", "model.compile", "data.root",
    "training.n_iters", "training.log_freq", "training.eval_freq", "training.snapshot_freq",
    "training.snapshot_freq_for_preemption", "training.snapshot_sampling",
)
_TYPES = {"bool": bool, "int": int, "float": float, "str": str}
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


# ------------------------------------------------------------------ fields
def _declared_type(node: ml_collections.ConfigDict, name: str) -> type | None:
    """The type an override of ``node.name`` is parsed as: a placeholder's declared type, else its value's type."""
    field = node._fields.get(name)  # noqa: SLF001 - ml_collections keeps placeholders' types only there
    if isinstance(field, FieldReference):
        return field.get_type()
    value = node[name]
    return None if value is None else type(value)


def _is_free(field: str) -> bool:
    return any(field == free or (free.endswith(".") and field.startswith(free)) for free in FREE_FIELDS)


def _did_you_mean(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"; did you mean config.{close[0]}?" if close else ""


def parse_value(field: str, raw: str, kind: type | None) -> Any:
    """The command-line text ``raw`` as a value of ``kind`` (the field's declared type); ``ConfigError`` otherwise."""
    if raw.strip().lower() == "none" and kind is not str:
        return None
    try:
        if kind is bool:
            if raw.strip().lower() in _TRUE:
                return True
            if raw.strip().lower() in _FALSE:
                return False
            raise ValueError
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
        if kind is str or kind is None:
            return raw
        if kind in (tuple, list):
            text = raw.strip()
            value = ast.literal_eval(text if text[:1] in "([" else f"({text},)")
            if not isinstance(value, (tuple, list)):
                raise ValueError
            return kind(value)
    except (ValueError, SyntaxError):
        raise ConfigError(f"--config.{field}={raw}: expected {kind.__name__}") from None
    raise ConfigError(f"--config.{field}: a field of type {kind.__name__} cannot be set from the command line")


def apply_overrides(config: ml_collections.ConfigDict, overrides: Iterable[tuple[str, str]]) -> ml_collections.ConfigDict:
    """A copy of ``config`` with each ``(field, text)`` set; an unknown field fails naming the closest one."""
    config = copy.deepcopy(config)
    known = flatten_fields(config)
    for field, raw in overrides:
        parts = field.split(".")
        node = config
        for depth, part in enumerate(parts[:-1]):
            if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
                prefix = ".".join(parts[:depth + 1])
                raise ConfigError(f"--config.{field}: the config has no section config.{prefix}"
                                  f"{_did_you_mean(field, known)}")
            node = node[part]
        name = parts[-1]
        if name not in node:
            raise ConfigError(f"--config.{field}: the config has no field config.{field}{_did_you_mean(field, known)}")
        if isinstance(node[name], ml_collections.ConfigDict):
            raise ConfigError(f"--config.{field} is a section; set its fields (e.g. --config.{field}.<name>=...)")
        value = parse_value(field, raw, _declared_type(node, name))
        with config.unlocked():
            try:
                node[name] = value
            except (TypeError, ValueError) as error:
                raise ConfigError(f"--config.{field}={raw}: {error}") from None
    return config


def parse_override(argument: str) -> tuple[str, str] | None:
    """``'--config.a.b=v'`` -> ``('a.b', 'v')``; None for any other argument."""
    for prefix in ("--config.", "-config."):
        if argument.startswith(prefix):
            field, sep, value = argument[len(prefix):].partition("=")
            if not sep:
                raise ConfigError(f"{argument}: write the override as --config.{field}=<value>")
            return field, value
    return None


def split_overrides(argv: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Separate ``--config.field=value`` arguments (also ``--config.field value``) from the other arguments."""
    rest, overrides = [], []
    i = 0
    while i < len(argv):
        argument = argv[i]
        if argument.startswith(("--config.", "-config.")) and "=" not in argument and i + 1 < len(argv):
            argument = f"{argument}={argv[i + 1]}"
            i += 1
        parsed = parse_override(argument)
        if parsed is None:
            rest.append(argv[i])
        else:
            overrides.append(parsed)
        i += 1
    return rest, overrides


# ------------------------------------------------------------------ the record
def _encode(config: ml_collections.ConfigDict) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in config.keys():
        value = config[key]
        if isinstance(value, ml_collections.ConfigDict):
            out[key] = _encode(value)
        elif value is None:
            kind = _declared_type(config, key)
            out[key] = {"__placeholder__": kind.__name__ if kind in _TYPES.values() else None}
        elif isinstance(value, tuple):
            out[key] = {"__tuple__": list(value)}
        elif isinstance(value, (bool, int, float, str, list)):
            out[key] = value
        else:
            out[key] = {"__repr__": repr(value)}
    return out


def _decode(tree: dict[str, Any]) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    for key, value in tree.items():
        if isinstance(value, dict) and "__placeholder__" in value:
            kind = _TYPES.get(value["__placeholder__"])
            config[key] = placeholder(kind) if kind is not None else None
        elif isinstance(value, dict) and "__tuple__" in value:
            config[key] = tuple(value["__tuple__"])
        elif isinstance(value, dict) and "__repr__" in value:
            config[key] = value["__repr__"]
        elif isinstance(value, dict):
            config[key] = _decode(value)
        else:
            config[key] = value
    return config


def record_path(workdir: str | os.PathLike) -> Path:
    return Path(workdir) / RECORD_NAME


def write_record(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> Path:
    """Write ``config`` (every field, its value and its type) to ``workdir/config.json``, atomically."""
    text = json.dumps({"config": _encode(config)}, indent=2, sort_keys=True, allow_nan=True) + "\n"
    return atomic_write(record_path(workdir), lambda file: file.write(text.encode("utf-8")))


def read_record(workdir: str | os.PathLike) -> ml_collections.ConfigDict | None:
    """The config recorded in ``workdir``, or None if there is none; ``ConfigError`` for an unreadable record."""
    path = record_path(workdir)
    if not path.is_file():
        return None
    try:
        tree = json.loads(path.read_text(encoding="utf-8"))["config"]
        return _decode(tree)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"the recorded config {path} cannot be read ({type(error).__name__}: {error}); "
                          "move it away to start the record anew") from None


def _same(a: Any, b: Any) -> bool:
    """Equal values (a list equals the tuple of its items, as in a record; NaN equals NaN; True is not 1)."""
    a, b = (tuple(v) if isinstance(v, list) else v for v in (a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b and (isinstance(a, bool) == isinstance(b, bool))


def differences(recorded: ml_collections.ConfigDict, config: ml_collections.ConfigDict) -> dict[str, tuple[Any, Any]]:
    """``{field: (recorded value, new value)}`` for every field that differs (``'<absent>'`` where one lacks it)."""
    a, b = flatten_fields(recorded), flatten_fields(config)
    absent = "<absent>"
    return {field: (a.get(field, absent), b.get(field, absent)) for field in sorted(set(a) | set(b))
            if field not in a or field not in b or not _same(a[field], b[field])}


def trajectory_differences(recorded: ml_collections.ConfigDict, config: ml_collections.ConfigDict) -> dict[str, tuple[Any, Any]]:
    """:func:`differences` in the fields that change what training computes (all but :data:`FREE_FIELDS`)."""
    return {field: values for field, values in differences(recorded, config).items() if not _is_free(field)}


def _describe(diffs: dict[str, tuple[Any, Any]], limit: int = 6) -> str:
    shown = [f"config.{field} ({old!r} -> {new!r})" for field, (old, new) in list(diffs.items())[:limit]]
    more = f" and {len(diffs) - limit} more" if len(diffs) > limit else ""
    return ", ".join(shown) + more


def reconcile_with_record(
    config: ml_collections.ConfigDict, workdir: str | os.PathLike, allow_changes: Iterable[str] = (), write: bool = True,
) -> dict[str, tuple[Any, Any]]:
    """Before training in ``workdir``: refuse a config that trains differently from the recorded one, then record it.

    ``allow_changes`` names fields (``'optim.lr'``) or sections (``'optim'``) whose change is deliberate. Returns the
    differences from the record (empty for a new run). With ``write=False`` (ranks other than 0) nothing is written.
    """
    recorded = read_record(workdir)
    diffs = {} if recorded is None else differences(recorded, config)
    allowed = tuple(allow_changes)
    refused = {field: values for field, values in diffs.items() if not _is_free(field)
               and not any(field == a or field.startswith(f"{a}.") for a in allowed)}
    if refused:
        raise ConfigError(
            f"{record_path(workdir)} records a run that trains differently: {_describe(refused)}; use a new --workdir, "
            f"or pass --allow_config_change={','.join(refused)} to continue with the change"
        )
    if write:
        write_record(config, workdir)
    return diffs


def resolve_config(
    config_file: str | None, overrides: list[tuple[str, str]], workdir: str | os.PathLike | None, mode: str,
) -> tuple[ml_collections.ConfigDict, list[str]]:
    """The config ``main.py`` runs in ``mode``, and notes for the log.

    ``train``: the file (or, without ``--config``, the workdir's record) with the overrides; the record is checked
    when training starts (:func:`reconcile_with_record`). Every other mode on a workdir with a record: the fields
    that define the trained model come from the record, the others (evaluation, sampling, ..., and fields the record
    lacks) from the file when one is given, then the overrides; an override of a recorded trajectory field is
    refused. ``workdir=None``: the file and the overrides alone.
    """
    recorded = None if workdir is None else read_record(workdir)
    if config_file is None and recorded is None:
        raise ConfigError(f"--config is required: {workdir} has no recorded config ({RECORD_NAME}) to run from")
    try:
        base = load_config(config_file) if config_file is not None else recorded
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if not isinstance(base, ml_collections.ConfigDict):
        raise ConfigError(f"get_config() of {config_file} must return an ml_collections.ConfigDict, "
                          f"got {type(base).__name__}")
    notes = []
    if mode != "train" and recorded is not None and config_file is not None:
        known = flatten_fields(recorded)
        taken = {field: values for field, values in trajectory_differences(recorded, base).items() if field in known}
        base = _with_trajectory_of(base, recorded)
        if taken:
            notes.append(f"the run's recorded {RECORD_NAME} defines the model; the config file differs in "
                         f"{_describe(taken)}: the recorded values are used")
    config = apply_overrides(base, overrides)
    if mode != "train" and recorded is not None:
        changed = {field for field, _ in overrides} & set(trajectory_differences(recorded, config))
        if changed:
            raise ConfigError(f"--config.{sorted(changed)[0]} changes a field the run in {workdir} was trained with "
                              f"(recorded in {RECORD_NAME}); only evaluation, sampling and similar fields may differ")
    return config, notes


def _with_trajectory_of(config: ml_collections.ConfigDict, recorded: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """``recorded``, with the free fields (:data:`FREE_FIELDS`) that ``config`` sets taken from ``config``, and the
    fields the record lacks outside ``model.`` (they cannot have defined the recorded model: e.g. ``data.num_classes``
    of a classifier that guides an unconditional run). A ``model.`` field the record lacks is left out: the recorded
    network was built with its default."""
    out = copy.deepcopy(recorded)
    known = flatten_fields(recorded)
    with out.unlocked():
        for field, value in flatten_fields(config).items():
            if not _is_free(field) and (field in known or field.startswith("model.")):
                continue
            parts = field.split(".")
            node, source = out, config
            for part in parts[:-1]:
                if part not in node:
                    node[part] = ml_collections.ConfigDict()
                node, source = node[part], source[part]
            kind = _declared_type(source, parts[-1])
            if value is None and kind is not None and parts[-1] not in node:  # an unset placeholder keeps its type
                node[parts[-1]] = placeholder(kind)
            else:
                node[parts[-1]] = copy.deepcopy(value)
    return out


def format_config(config: ml_collections.ConfigDict) -> str:
    """Every field of ``config`` with its value, one per line, sorted: what ``main.py --print_config`` shows."""
    return "\n".join(f"config.{field} = {value!r}" for field, value in sorted(flatten_fields(config).items()))
