"""The ``train_classifier`` job of ``main.py``: the noise-conditional classifier of classifier guidance.

:func:`train_classifier` ``(config, workdir)`` trains the classifier described by ``config.classifier``
(:func:`jobs.conditional.classifier_config`) in the folder ``config.sampling.classifier`` (relative paths
inside ``workdir``) with the training job of the score model (:func:`jobs.train` with ``task='classifier'``:
the same resumable loop, checkpoints, logs and seeds), on the labelled training split and the perturbations of
the config's SDE ([SDE] appendix I.1: cross-entropy of ``p_t(y | x(t))``, ``t ~ U(eps, T)``). It then reports the
test accuracy of the EMA weights at a few noise levels (:func:`classifier_accuracy`): high at small ``t``, falling
to chance (``1 / K`` for balanced classes) at ``t = T``, where ``x(T)`` has forgotten ``x(0)``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

import data_lib
from base_lib.config import config_value

from .conditional import ConditioningError, classifier_config, classifier_folder
from .experiment import ConfigError, EvaluationExperiment, TrainingExperiment
from .evaluation import write_report
from train_lib.losses import perturb_data
from .run import close_log, open_log, step_seed, train
from .streams import Stream
from .workdir import workdir_lock

#: the noise levels of the accuracy report, as fractions of the SDE's horizon T (the first is replaced by eps)
REPORT_TIME_FRACTIONS = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)


def _classifier_run(config: Any, workdir: str | os.PathLike) -> tuple[Any, Path]:
    try:
        folder = classifier_folder(config, workdir)
        if folder is None:
            raise ConditioningError(
                "config.sampling.classifier must name the classifier's run folder "
                "(e.g. 'classifier', inside the workdir)"
            )
        return classifier_config(config), folder
    except ConditioningError as error:
        raise ConfigError(str(error)) from error


def classifier_accuracy(exp: TrainingExperiment | EvaluationExperiment, times: list[float]) -> dict[str, float]:
    """Test accuracy of the classifier of ``exp`` (its current weights) on ``x(t)`` for each ``t`` in ``times``:
    every test example once per time, perturbed by the SDE's kernel with noise seeded by ``config.seed``."""
    model = exp.model.eval()
    results = {}
    batches = list(data_lib.iterate_batches(
        exp.test_ds, int(exp.config.eval.batch_size), shuffle=False, with_labels=True, dtype=exp.batch_dtype
    ))
    for i, t_value in enumerate(times):
        generator = torch.Generator(exp.device).manual_seed(step_seed(exp.config, Stream.CLASSIFIER_ACCURACY, i))
        correct = total = 0
        with torch.no_grad():
            for x, y in batches:
                x0 = exp.scaler(x.to(exp.device))
                t = torch.full((x0.shape[0],), t_value, device=exp.device, dtype=x0.dtype)
                x_t = perturb_data(exp.sde, x0, t, generator)[0]
                correct += int((model(x_t, t).argmax(dim=1).cpu() == y).sum())
                total += x0.shape[0]
        results[f"{t_value:.4g}"] = correct / total
    return results


def train_classifier(config: Any, workdir: str | os.PathLike, eval_folder: str | None = None) -> dict[str, Any]:
    """Train the noise-conditional classifier of ``config`` (module docstring), resuming its run if interrupted; then
    write its test accuracy by noise level to ``<classifier folder>/accuracy.json`` and the log. Returns the report.

    Holds the locks of ``workdir`` and of the classifier's folder (:func:`jobs.workdir.workdir_lock`) throughout:
    :class:`jobs.workdir.WorkdirBusyError` if another job holds either."""
    with workdir_lock(workdir, "train_classifier"):
        derived, folder = _classifier_run(config, workdir)
        with workdir_lock(folder, "train_classifier"):
            return _train_and_report(derived, folder)


def _train_and_report(derived: Any, folder: Path) -> dict[str, Any]:
    exp = train(derived, folder, task="classifier")
    exp.ema.copy_to(exp.model.parameters())  # training is over: evaluate the EMA weights
    step = int(exp.state["step"])
    eps = float(config_value(derived, "training.eps", 1e-5))
    times = [eps if f == 0.0 else f * exp.sde.T for f in REPORT_TIME_FRACTIONS]
    report = {"step": step, "test_examples": len(exp.test_ds), "accuracy_by_time": classifier_accuracy(exp, times),
              "chance": float(torch.bincount(exp.test_ds.labels).max()) / len(exp.test_ds)}
    if exp.distributed.is_main:
        logger = open_log(exp.layout.log_file, True)
        try:
            path = write_report(folder / "accuracy.json", report)
            accuracies = ", ".join(f"t={t}: {a:.3f}" for t, a in report["accuracy_by_time"].items())
            logger.info("classifier test accuracy by noise level (%d examples): %s; majority class %.3f; %s",
                        report["test_examples"], accuracies, report["chance"], path)
        finally:
            close_log(logger)
    return report
