"""``config.sampling.fast_tuning``: ``fast_sample``'s options chosen once per checkpoint and sampler settings.

With ``config.sampling.method='fast'`` and ``fast_tuning=True``, the ``sample`` and ``eval`` jobs call
:func:`fast_solver_choice` after loading a checkpoint's EMA weights and before drawing its rounds:
:func:`samplers.tune_fast_sample` measures every option combination for the ODE's share of ``config.sampling.nfe``
(less ``noise_removal``'s evaluation) against a converged solve from pilot prior samples
(:func:`samplers.from_config.fast_tuning_points`; seeded by ``(config.seed, FAST_TUNING, step)``), following
the score the rounds follow (guidance and ``clip_denoised`` included), and the rounds are drawn with the best.

The choice is cached as ``workdir/fast_tuning/<key>.json``: the rounds' sampling source
(:func:`jobs.evaluation.sampling_source`: the checkpoint's SHA-256, the SDE, all of ``config.sampling``, ``eps``,
the parameterization, the data shape, ``config.seed``, the device type, the guidance) beside the
:class:`samplers.FastSolverChoice`, with ``key`` the first 20 hexadecimal digits of the SHA-256 of that source. A
later job with the same source reads it instead of tuning again; a record that cannot be read or was made for
another source is tuned again and replaced. Records are JSON (nothing in them runs) written atomically. The chosen
options enter the rounds' records, so rounds drawn with other options are drawn again. Training snapshots sample
with ``fast_sample``'s fixed default.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from base_lib.config import config_value
from base_lib.files import atomic_write
from samplers.fast_tuning import FastSolverChoice
from samplers.from_config import ScoreFactory, fast_tuning_enabled, fast_tuning_points, get_fast_tuning_fn

from .conditional import sample_class_labels
from .experiment import Experiment
from .progress import ProgressLog
from .run import step_seed
from .streams import Stream


def canonical_source(source: dict[str, Any]) -> dict[str, Any]:
    """``source`` as it reads back from JSON (sorted keys; values JSON cannot hold as their ``str``)."""
    return json.loads(json.dumps(source, sort_keys=True, default=str))


def record_path(exp: Experiment, source: dict[str, Any]) -> Path:
    """Where the choice for the canonical sampling ``source`` is cached."""
    text = json.dumps(source, sort_keys=True)
    return exp.layout.fast_tuning_dir / f"{hashlib.sha256(text.encode('utf-8')).hexdigest()[:20]}.json"


def read_record(path: Path, source: dict[str, Any]) -> FastSolverChoice | None:
    """The choice cached at ``path`` for the canonical ``source``; ``None`` if there is none, it is unreadable or it
    was made for another source."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if record.get("source") != source:
            return None
        return FastSolverChoice.from_json(json.dumps(record["choice"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def write_record(path: Path, source: dict[str, Any], choice: FastSolverChoice) -> None:
    record = {"source": source, "choice": json.loads(choice.to_json())}
    text = json.dumps(record, indent=1, sort_keys=True, allow_nan=True) + "\n"
    atomic_write(path, lambda file: file.write(text.encode("utf-8")))


def fast_solver_choice(
    exp: Experiment, source: dict[str, Any], step: int, logger: logging.Logger
) -> FastSolverChoice | None:
    """The tuned options for the loaded checkpoint (module docstring), or ``None`` when ``config.sampling`` does not
    ask for them. Rank 0 tunes and writes the record; the other ranks read it."""
    config = exp.config
    if not fast_tuning_enabled(config):
        return None
    source = canonical_source(source)
    path = record_path(exp, source)
    choice = read_record(path, source)
    if choice is not None:
        logger.info("fast_sample options for step %d from %s: %s", step, path, choice.options.label())
        return choice
    if exp.distributed.is_main:
        first, most = fast_tuning_points(config, exp.data_shape)
        factory_for_points = None
        if exp.conditioning is not None:
            labels = sample_class_labels(config, most)

            def factory_for_points(index: torch.Tensor) -> ScoreFactory:
                return dataclasses.replace(exp.conditioning, labels=labels[index]).score_factory

        tuning_fn = get_fast_tuning_fn(config, exp.sde, exp.data_shape, exp.sampling_eps, factory_for_points)
        pilot = (f"{most} pilot samples" if first == most else
                 f"{most} pilot samples, every option on the first {first}, the finalists on all")
        logger.info("tuning fast_sample's options for step %d at nfe=%s on %s", step,
                    config_value(config, "sampling.nfe", 20), pilot)
        generator = torch.Generator(exp.device).manual_seed(step_seed(config, Stream.FAST_TUNING, step))
        start = time.perf_counter()
        lines = ProgressLog(logger, None, label="fast_sample tuning: score evaluations of the pilot batch", unit="evaluations")
        choice = tuning_fn(exp.model, generator=generator, on_progress=lambda done, planned: lines.tick(done))
        write_record(path, source, choice)
        logger.info(
            "fast_sample options for step %d: %s (pilot RMS error %.3g on %d samples; the fixed default's %.3g; lead "
            "%.1f standard errors; reference %d steps; %d score evaluations, %.0f s) -> %s", step,
            choice.options.label(), choice.rms, choice.pilot_points, choice.default_rms, choice.lead,
            choice.reference_steps, choice.evaluations, time.perf_counter() - start, path,
        )
    if exp.distributed.is_distributed:
        torch.distributed.barrier()
        choice = read_record(path, source)
    return choice


def report_entry(choice: FastSolverChoice) -> dict[str, Any]:
    """What a sampling report says about the tuned options."""
    return {"options": choice.options.label(), "pilot_rms": choice.rms, "default_pilot_rms": choice.default_rms,
            "pilot_points": choice.pilot_points, "first_points": choice.first_points, "lead": choice.lead,
            "evaluations": choice.evaluations}
