"""The named random streams of a run: the one table of every seed the jobs derive from ``config.seed``.

A stream's seed at some indices (step, rank, checkpoint, round, ...) is ``mix_seeds(config.seed, stream, *indices)``
(:func:`jobs.run.step_seed`), so two streams with different numbers never share draws, and a draw depends only on
its stream and indices: a resumed, re-run or multi-process job draws what an uninterrupted one draws. The numbers
are part of the results (a new number changes what a seed produces): a new stream takes the next free number and
the others keep theirs. ``@enum.unique`` refuses two streams with one number when the module is imported.

The network's initial weights come from ``torch.manual_seed(config.seed)`` itself (:mod:`jobs.experiment`), not
from a stream; the toy datasets' points come from ``config.data.seed`` (:mod:`data_lib.loader`).
"""

from __future__ import annotations

import enum


@enum.unique
class Stream(enum.IntEnum):
    """The random streams derived from ``config.seed``, with the indices each is drawn at."""

    #: reserved by :func:`data_lib.training_batches` (which cannot import this table): the order of epoch ``e``
    TRAINING_BATCH_ORDER = 0
    #: reserved by :func:`data_lib.training_batches`: flips and dequantization noise of batch ``s`` on rank ``r``
    TRAINING_BATCH_NOISE = 1
    #: times and noise of the training loss at step ``s`` on rank ``r``
    LOSS_NOISE = 2
    #: torch's global generator (dropout), reseeded before step ``s`` on rank ``r``
    GLOBAL_RNG = 3
    #: noise of the evaluation loss logged at step ``s``
    EVAL_NOISE = 4
    #: the snapshot samples of step ``s`` (``samples/iter_{s}``)
    SNAPSHOT_SAMPLES = 5
    #: order of the test batches of the evaluation loss during training
    EVAL_BATCH_ORDER = 6
    #: the prior draw (and every later draw) of sampling round ``r`` of checkpoint ``k`` in ``--mode eval``
    EVAL_SAMPLES = 7
    #: times and noise of the test loss of checkpoint ``k``, rank ``r``, batch ``i``
    TEST_LOSS = 8
    #: dequantization noise and Hutchinson probes of the likelihood of checkpoint ``k``, rank ``r``, batch ``i``
    LIKELIHOOD = 9
    #: fresh data and projections of the sample metrics of checkpoint ``k``
    SAMPLE_METRICS = 10
    #: sampling round ``r`` of ``--mode sample`` from the checkpoint of step ``s``
    SAMPLE_JOB = 11
    #: noise of the classifier's test accuracy at the ``i``-th noise level (``--mode train_classifier``)
    CLASSIFIER_ACCURACY = 12
    #: the sampler's noise of ``--mode inpaint`` and ``--mode colorize``
    CONTROLLABLE = 13
    #: the pixels of ``--mode inpaint --mask random``
    INPAINT_MASK = 14
    #: the pilot samples of ``config.sampling.fast_tuning`` for the checkpoint of step ``s``
    FAST_TUNING = 15
