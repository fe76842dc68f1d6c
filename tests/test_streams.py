"""The table of random streams (:class:`jobs.streams.Stream`): one number per stream, numbers that never change,
and the two streams reserved for ``data_lib`` are the ones it draws its batches from."""

from __future__ import annotations

import torch

import data_lib
from data_lib import mix_seeds
from jobs.streams import Stream

#: the numbers runs have used; a stream's number is part of what a seed produces, so these never change
NUMBERS = {
    "TRAINING_BATCH_ORDER": 0, "TRAINING_BATCH_NOISE": 1, "LOSS_NOISE": 2, "GLOBAL_RNG": 3, "EVAL_NOISE": 4,
    "SNAPSHOT_SAMPLES": 5, "EVAL_BATCH_ORDER": 6, "EVAL_SAMPLES": 7, "TEST_LOSS": 8, "LIKELIHOOD": 9,
    "SAMPLE_METRICS": 10, "SAMPLE_JOB": 11, "CLASSIFIER_ACCURACY": 12, "CONTROLLABLE": 13, "INPAINT_MASK": 14,
    "FAST_TUNING": 15,
}


def test_every_stream_has_its_own_number():
    members = Stream.__members__  # aliases (a second name for a number) included
    assert len({member.value for member in members.values()}) == len(members)


def test_the_numbers_do_not_change():
    assert {name: member.value for name, member in Stream.__members__.items()} == NUMBERS


def test_data_lib_draws_its_batch_order_from_the_reserved_stream():
    """The first training batch of seed 5 is the first ``batch`` examples of the permutation seeded by
    ``(5, TRAINING_BATCH_ORDER, epoch 0)``."""
    dataset = data_lib.InMemoryDataset("points", "train", torch.arange(40.0).reshape(20, 2), None, None)
    batch = next(data_lib.training_batches(dataset, 4, seed=5))
    order = torch.randperm(20, generator=torch.Generator().manual_seed(mix_seeds(5, Stream.TRAINING_BATCH_ORDER, 0)))
    assert torch.equal(batch, dataset.gather(order[:4]).float())
