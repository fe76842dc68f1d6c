"""The command line of the toolkit, with the 2021 reference's flags.

    python main.py --config configs/vp/toy_mlp_continuous.py --workdir runs/toy --mode train \
        --config.training.n_iters=2000

``--config`` is an ml-collections config file whose fields can be overridden as ``--config.<section>.<field>=v``;
``--workdir`` holds checkpoints, samples, TensorBoard events, ``log.txt`` and the run's resolved config
(``config.json``). A re-run of ``train`` in the same workdir resumes from its last pre-emption checkpoint when the
config trains the same way; every other mode starts from the recorded config, so ``--config`` may be left out.
``--print_config`` prints the resolved config and exits (no ``--workdir`` needed with ``--config``). Several
processes: ``torchrun --nproc_per_node=N main.py ...``.

A mistake in the command line or the config (an unknown flag or field, a value of the wrong type or out of range, a
config file that does not load) is reported in one line on stderr with exit status 2, before any work; an error of
the job itself (no checkpoint, a corrupt file, a diverged run, a busy workdir) in one line with exit status 1.
"""

from __future__ import annotations

import sys

from base_lib.openmp import set_openmp_defaults

set_openmp_defaults()  # OpenMP reads its settings once, when torch loads: before any import of torch

from absl import app, flags  # noqa: E402

from base_lib.files import WriteError  # noqa: E402
from jobs.classifier_training import train_classifier  # noqa: E402
from jobs.config_checks import check_config_values  # noqa: E402
from jobs.controllable import MASKS, colorize, inpaint, interpolate, superresolve  # noqa: E402
from jobs.evaluation import evaluate, sample, train_and_evaluate  # noqa: E402
from jobs.experiment import ConfigError, shutdown_distributed  # noqa: E402
from jobs.run import TrainingDivergedError  # noqa: E402
from jobs.run_config import format_config, reconcile_with_record, resolve_config, split_overrides  # noqa: E402
from jobs.runtime import configure_threads  # noqa: E402
from jobs.workdir import WorkdirBusyError, workdir_lock  # noqa: E402
from train_lib.checkpoints import CheckpointError  # noqa: E402

FLAGS = flags.FLAGS

#: --mode -> job(config, workdir, eval_folder, **options)
JOBS = {
    "train": train_and_evaluate,  # then evaluate the last checkpoint if config.eval.after_training
    "train_classifier": train_classifier,  # the noise-conditional classifier of config.classifier, into config.sampling.classifier
    "eval": evaluate,
    "sample": sample,
    "inpaint": inpaint,  # the first test images with the --mask region generated (PC sampler of config.sampling)
    "colorize": colorize,  # the first test images of an RGB dataset colorized from their grey level
    "superresolve": superresolve,  # the first test images upsampled from their block means (sampling.superresolution_factor)
    "interpolate": interpolate,  # pairs of test images interpolated in the latent space of the probability-flow ODE
}
USAGE_ERROR = 2  # the command line or the config is wrong; nothing was run
JOB_ERROR = 1  # the job stopped with an error

flags.DEFINE_string("config", None, "Experiment config file (ml-collections, defining get_config()); override its "
                    "fields with --config.<section>.<field>=<value>. Optional when the workdir records a run.")
flags.DEFINE_string("workdir", None, "Folder of the run: checkpoints, samples, TensorBoard events, log.txt, config.json.")
flags.DEFINE_enum("mode", "train", list(JOBS), "What to run.")
flags.DEFINE_string("eval_folder", None, "Subfolder of the workdir for the results: default 'eval' (train, eval), "
                    "'samples' (sample), 'controllable' (inpaint, colorize, superresolve, interpolate).")
flags.DEFINE_enum("mask", "right_half", list(MASKS), "--mode inpaint: the region of the test images to generate.")
flags.DEFINE_list("allow_config_change", [], "--mode train on a workdir that records a run: config fields or "
                  "sections (e.g. optim.lr,training.batch_size) allowed to differ from the recorded config.")
flags.DEFINE_bool("print_config", False, "Print the resolved config (every field with its value) and exit.")

_OVERRIDES: list[tuple[str, str]] = []


def fail(message: str, status: int = USAGE_ERROR) -> int:
    print(f"main.py: error: {' '.join(str(message).split())}", file=sys.stderr)
    return status


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flags without the ``--config.*`` overrides (kept in :data:`_OVERRIDES`); a bad flag ends the process
    with one line on stderr and status 2."""
    try:
        rest, overrides = split_overrides(argv[1:])
        _OVERRIDES[:] = overrides
        return FLAGS([argv[0], *rest])
    except (flags.Error, ConfigError) as error:
        sys.exit(fail(error))


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        return fail(f"unexpected arguments: {' '.join(argv[1:])} (flags are written --name=value)")
    if FLAGS["mask"].present and FLAGS.mode != "inpaint":
        return fail(f"--mask applies to --mode inpaint only; got --mode {FLAGS.mode}")
    if FLAGS.allow_config_change and FLAGS.mode != "train":
        return fail(f"--allow_config_change applies to --mode train only (the other modes use the recorded config); "
                    f"got --mode {FLAGS.mode}")
    if not FLAGS.workdir and not (FLAGS.print_config and FLAGS.config):
        return fail("--workdir is required: the folder of the run")
    try:
        config, notes = resolve_config(FLAGS.config, _OVERRIDES, FLAGS.workdir or None, FLAGS.mode)
        check_config_values(config)
        if FLAGS.mode == "train" and FLAGS.workdir:  # a config that trains differently from the record: refused now
            reconcile_with_record(config, FLAGS.workdir, FLAGS.allow_config_change, write=False)
    except ConfigError as error:
        return fail(error)
    for note in notes:
        print(f"main.py: {note}", file=sys.stderr)
    if FLAGS.print_config:
        print(format_config(config))
        return 0
    options = {"mask": FLAGS.mask} if FLAGS.mode == "inpaint" else {}
    if FLAGS.mode == "train":
        options["allow_config_changes"] = tuple(FLAGS.allow_config_change)
    try:
        configure_threads(config)
        with workdir_lock(FLAGS.workdir, FLAGS.mode):
            JOBS[FLAGS.mode](config, FLAGS.workdir, FLAGS.eval_folder, **options)
    except WorkdirBusyError as error:  # another job holds the workdir: not a mistake of this command line
        return fail(error, JOB_ERROR)
    except ConfigError as error:  # a config the job cannot run, found when it builds (before any long work)
        return fail(error)
    except (CheckpointError, TrainingDivergedError) as error:
        return fail(error, JOB_ERROR)
    except WriteError as error:  # a workdir that cannot be written: disk full, read-only, a file in the way
        return fail(error, JOB_ERROR)
    finally:
        shutdown_distributed()
    return 0


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
