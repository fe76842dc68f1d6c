"""Value checks of a config, run when an experiment is built, before any long work.

Each entry of :data:`CHECKS` names a config field and what it accepts; :func:`check_config_values` raises
:class:`jobs.experiment.ConfigError` naming the first field that is out of range (the config field, not the argument
of the function it ends up in). Fields that are absent, or unset placeholders, are not checked here: the code that
reads them supplies its default. Choices that depend on registries (models, SDEs, predictors, ...) are checked
where they are resolved.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable

from base_lib.config import config_value
from models.compiled import COMPILE_MODES
from models.conditioning import available_conditions
from models.score_model import available_parameterizations
from models.precision import PRECISION_SETTINGS
from samplers.dpm_solver import MAX_ORDER
from samplers.from_config import SAMPLING_METHODS, fast_tuning_enabled
from samplers.likelihood import LIKELIHOOD_METHODS
from samplers.odeint import GRID_METHODS, ODE_METHODS
from samplers.pc import available_correctors, available_predictors
from samplers.sde_solvers import SDE_METHODS
from samplers.timesteps import SCHEDULES
from sde_lib import VP_SCHEDULES

Check = Callable[[Any], str | None]  # value -> None if acceptable, else what is accepted


def _integer(low: int, high: int | None = None, note: str = "") -> Check:
    def check(value: Any) -> str | None:
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= low
        ok = ok and (high is None or value <= high)
        if ok:
            return None
        return f"an integer >= {low}" + (f" and <= {high}" if high is not None else "") + (f" ({note})" if note else "")
    return check


def _number(low: float | None = None, high: float | None = None, low_open: bool = False, high_open: bool = False) -> Check:
    def check(value: Any) -> str | None:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
        if ok and low is not None:
            ok = value > low if low_open else value >= low
        if ok and high is not None:
            ok = value < high if high_open else value <= high
        if ok:
            return None
        bounds = []
        if low is not None:
            bounds.append(f"{'>' if low_open else '>='} {low:g}")
        if high is not None:
            bounds.append(f"{'<' if high_open else '<='} {high:g}")
        return "a finite number" + (" " + " and ".join(bounds) if bounds else "")
    return check


def _choice(*allowed: str, case: bool = True) -> Check:
    def check(value: Any) -> str | None:
        key = value if case or not isinstance(value, str) else value.lower()
        choices = allowed if case else tuple(a.lower() for a in allowed)
        return None if isinstance(value, str) and key in choices else "one of " + ", ".join(map(repr, allowed))
    return check


def _registered(available: Callable[[], list[str]]) -> Check:
    """A name of a registry that may grow after import (predictors, correctors): read when checked."""
    def check(value: Any) -> str | None:
        names = available()
        key = value.lower() if isinstance(value, str) else value
        return None if key in names else "one of " + ", ".join(map(repr, names))
    return check


def _boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "True or False"


#: config field -> its check
CHECKS: dict[str, Check] = {
    "seed": _integer(0),
    "num_threads": _integer(0, note="0: one thread per free core"),
    "training.batch_size": _integer(1),
    "training.n_iters": _integer(1),
    "training.log_freq": _integer(1),
    "training.eval_freq": _integer(1),
    "training.snapshot_freq": _integer(1),
    "training.snapshot_freq_for_preemption": _integer(1),
    "training.snapshot_sampling": _boolean,
    "training.continuous": _boolean,
    "training.reduce_mean": _boolean,
    "training.likelihood_weighting": _boolean,
    "training.importance_weighting": _boolean,
    "training.eps": _number(0.0, 1.0, low_open=True, high_open=True),
    "training.label_dropout": _number(0.0, 1.0, high_open=True),
    "training.mixed_precision": _choice(*PRECISION_SETTINGS),
    "sampling.mixed_precision": _choice(*PRECISION_SETTINGS),
    "eval.likelihood_mixed_precision": _choice(*PRECISION_SETTINGS),
    "sampling.method": _choice(*SAMPLING_METHODS, case=False),
    "sampling.predictor": _registered(available_predictors),
    "sampling.corrector": _registered(available_correctors),
    "sampling.ode_method": _choice(*ODE_METHODS),
    "sampling.snr": _number(0.0),
    "sampling.n_steps_each": _integer(1),
    "sampling.noise_removal": _boolean,
    "sampling.probability_flow": _boolean,
    "sampling.eps": _number(0.0, 1.0, low_open=True, high_open=True),
    "sampling.rtol": _number(0.0, low_open=True),
    "sampling.atol": _number(0.0, low_open=True),
    "sampling.dt": _number(0.0, low_open=True),
    "sampling.nfe": _integer(1),
    "sampling.rho": _number(0.0, low_open=True),
    "sampling.s_churn": _number(0.0),
    "sampling.s_min": _number(0.0),
    "sampling.s_max": _number(0.0),
    "sampling.s_noise": _number(0.0),
    "sampling.order": _integer(1, MAX_ORDER),
    "sampling.sde_method": _choice(*SDE_METHODS),
    "sampling.schedule": _choice(*SCHEDULES),
    "sampling.fast_tuning": _boolean,
    "sampling.fast_tuning_points": _integer(2, note="the lead over the default needs a standard error"),
    "sampling.fast_tuning_evidence": _number(0.0),
    "sampling.inpainting": _choice("replacement", "smc"),
    "sampling.smc_particles": _integer(1),
    "sampling.superresolution_factor": _integer(1),
    "sampling.classifier_scale": _number(),
    "sampling.guidance_scale": _number(),
    "sampling.class_label": _integer(-1),
    "eval.batch_size": _integer(1),
    "eval.num_samples": _integer(1),
    "eval.begin_ckpt": _integer(0),
    "eval.end_ckpt": _integer(0),
    "eval.ckpt": _integer(0),
    "eval.enable_loss": _boolean,
    "eval.enable_bpd": _boolean,
    "eval.enable_sampling": _boolean,
    "eval.after_training": _boolean,
    "eval.bpd_dataset": _choice("train", "test"),
    "eval.bpd_num_repeats": _integer(1),
    "eval.hutchinson_type": _choice("Rademacher", "Gaussian", "exact", case=False),
    "eval.likelihood_method": _choice(*LIKELIHOOD_METHODS),
    "eval.likelihood_steps": _integer(1),
    "eval.likelihood_rtol": _number(0.0, low_open=True),
    "eval.likelihood_atol": _number(0.0, low_open=True),
    "eval.likelihood_eps": _number(0.0, 1.0, low_open=True, high_open=True),
    "eval.likelihood_product": _choice("vjp", "jvp", case=False),
    "eval.likelihood_accuracy": _number(0.0, low_open=True),
    "eval.likelihood_error_samples": _integer(0),
    "model.ema_rate": _number(0.0, 1.0, high_open=True),
    "model.noise_schedule": _choice(*VP_SCHEDULES),
    "model.ema_halflife_images": _number(0.0, low_open=True),
    "model.ema_rampup_ratio": _number(0.0, low_open=True),
    "model.sigma_data": _number(0.0, low_open=True),
    "training.p_std": _number(0.0, low_open=True),
    "model.parameterization": _registered(available_parameterizations),
    "model.compile": _choice(*COMPILE_MODES),
    "model.conditioning": _registered(available_conditions),
    "model.low_resolution_factor": _integer(2, note="1 would condition on the image itself"),
    "data.center_crop": _integer(1, 25, note="faces are 25x25"),
    "model.num_scales": _integer(1),
    "model.dropout": _number(0.0, 1.0, high_open=True),
    "optim.lr": _number(0.0, low_open=True),
    "optim.warmup": _integer(0),
    "optim.beta1": _number(0.0, 1.0, high_open=True),
    "optim.beta2": _number(0.0, 1.0, high_open=True),
    "optim.eps": _number(0.0),
    "optim.weight_decay": _number(0.0),
    "data.random_flip": _boolean,
    "data.centered": _boolean,
    "data.uniform_dequantization": _boolean,
    "data.sample_rate": _integer(1),
    "data.audio_length": _integer(16),
}


def field_error(config: Any, field: str) -> str | None:
    """The message for ``config.<field>`` if its value is out of range (:data:`CHECKS`), else ``None`` (also when
    the field is absent or an unset placeholder)."""
    value = config_value(config, field, None)
    if value is None:
        return None
    accepted = CHECKS[field](value)
    return None if accepted is None else f"config.{field} must be {accepted}, got {value!r}"


def conditioning_error(config: Any) -> str | None:
    """What is wrong with ``config.model.conditioning`` beside the other fields, else ``None``: the low-resolution
    factor must divide ``data.image_size``. (A signal and class labels together are refused by the network.)"""
    name = config_value(config, "model.conditioning", None)
    if name in (None, "") or field_error(config, "model.conditioning") is not None:
        return None
    factor = config_value(config, "model.low_resolution_factor", 2)
    size = config_value(config, "data.image_size", None)
    if str(name).lower() == "low_resolution" and _integer(1)(factor) is None and isinstance(size, int) and size % factor:
        return (f"config.model.low_resolution_factor={factor} must divide config.data.image_size={size} (the "
                "low-resolution image has image_size / factor pixels a side)")
    return None


def fast_tuning_error(config: Any) -> str | None:
    """What is wrong with ``config.sampling.fast_tuning`` beside the other fields, else ``None``: the tuning chooses
    ``order`` and ``schedule``, so they must be unset; and it tunes method ``fast`` only."""
    if field_error(config, "sampling.fast_tuning") is not None:
        return None
    method = str(config_value(config, "sampling.method", "")).lower()
    if config_value(config, "sampling.fast_tuning", False) and method != "fast":
        return (f"config.sampling.fast_tuning=True tunes the options of method 'fast', but config.sampling.method is "
                f"{method!r}; set method 'fast' or fast_tuning=False")
    if not fast_tuning_enabled(config):
        return None
    given = [f"config.sampling.{name}={config_value(config, f'sampling.{name}', None)!r}"
             for name in ("order", "schedule") if config_value(config, f"sampling.{name}", None) is not None]
    if given:
        return (f"config.sampling.fast_tuning=True chooses fast_sample's order and schedule, but {' and '.join(given)} "
                f"{'is' if len(given) == 1 else 'are'} set; unset {'it' if len(given) == 1 else 'them'} or set fast_tuning=False")
    return None


def likelihood_error(config: Any) -> str | None:
    """What is wrong with the likelihood's solver beside the other fields, else ``None``: a fixed-grid
    ``eval.likelihood_method`` needs its steps, given or chosen from ``eval.likelihood_accuracy``."""
    method = config_value(config, "eval.likelihood_method", None)
    if not config_value(config, "eval.enable_bpd", False) or method not in GRID_METHODS:
        return None
    if config_value(config, "eval.likelihood_steps", None) is None and config_value(config, "eval.likelihood_accuracy", None) is None:
        return (f"config.eval.likelihood_method={method!r} (a fixed grid) needs config.eval.likelihood_steps, or "
                "config.eval.likelihood_accuracy to choose them")
    return None


def config_errors(config: Any) -> list[str]:
    """One message per field of :data:`CHECKS` whose value is out of range, then any :func:`conditioning_error`,
    :func:`fast_tuning_error` and :func:`likelihood_error`."""
    errors = [field_error(config, field) for field in CHECKS]
    errors += [conditioning_error(config), fast_tuning_error(config), likelihood_error(config)]
    return [error for error in errors if error is not None]


def check_config_values(config: Any) -> None:
    """Raise :class:`jobs.experiment.ConfigError` with the first out-of-range field (and how many more there are)."""
    from .experiment import ConfigError  # the error type of every config problem; experiment.py calls this module

    errors = config_errors(config)
    if errors:
        more = f" (and {len(errors) - 1} more field(s))" if len(errors) > 1 else ""
        raise ConfigError(errors[0] + more)
