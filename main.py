"""The command line of the toolkit, with the 2021 reference's flags.

    python main.py --config configs/vp/toy_mlp_continuous.py --workdir runs/toy --mode train \
        --config.training.n_iters=2000

``--config`` is an ml-collections config file whose fields can be overridden as ``--config.<section>.<field>=v``;
``--workdir`` holds checkpoints, samples, TensorBoard events and ``log.txt``; a re-run in the same workdir resumes
from its last pre-emption checkpoint. Several processes: ``torchrun --nproc_per_node=N main.py ...``.
"""

from __future__ import annotations

import sys

from absl import app, flags
from ml_collections.config_flags import config_flags

from train_lib.checkpoints import CheckpointError
from jobs.classifier_training import train_classifier
from jobs.controllable import MASKS, colorize, inpaint, interpolate
from jobs.evaluation import evaluate, sample, train_and_evaluate
from jobs.experiment import ConfigError, shutdown_distributed
from jobs.run import TrainingDivergedError

FLAGS = flags.FLAGS

#: --mode -> job(config, workdir, eval_folder)
JOBS = {
    "train": train_and_evaluate,  # then evaluate the last checkpoint if config.eval.after_training
    "train_classifier": train_classifier,  # the noise-conditional classifier of config.classifier, into config.sampling.classifier
    "eval": evaluate,
    "sample": sample,
    "inpaint": inpaint,  # the first test images with the --mask region generated (PC sampler of config.sampling)
    "colorize": colorize,  # the first test images of an RGB dataset colorized from their grey level
    "interpolate": interpolate,  # pairs of test images interpolated in the latent space of the probability-flow ODE
}

config_flags.DEFINE_config_file("config", None, "Experiment config file (ml-collections).", lock_config=True)
flags.DEFINE_string("workdir", None, "Folder of the run: checkpoints, samples, TensorBoard events, log.txt.")
flags.DEFINE_enum("mode", "train", list(JOBS), "What to run.")
flags.DEFINE_string("eval_folder", None, "Subfolder of the workdir for the results: default 'eval' (train, eval), "
                    "'samples' (sample), 'controllable' (inpaint, colorize, interpolate).")
flags.DEFINE_enum("mask", "right_half", list(MASKS), "--mode inpaint: the region of the test images to generate.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        options = {"mask": FLAGS.mask} if FLAGS.mode == "inpaint" else {}
        JOBS[FLAGS.mode](FLAGS.config, FLAGS.workdir, FLAGS.eval_folder, **options)
    except (ConfigError, CheckpointError, TrainingDivergedError) as error:
        print(f"main.py: error: {error}", file=sys.stderr)
        return 1
    finally:
        shutdown_distributed()
    return 0


if __name__ == "__main__":
    app.run(main)
