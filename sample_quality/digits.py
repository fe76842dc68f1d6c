"""Metrics for the embedded 8x8 digits that need no download: a small classifier trained here, its "digits FID"
and class coverage.

The classifier (:class:`DigitsClassifier`, a 3-layer CNN) is trained by :func:`train_digits_classifier` on the
1500 ``train`` digits of :func:`data_lib.digits`, reproducibly: CPU, float32, one thread, every random draw from
``spec.seed``, so two trainings give identical weights. :func:`load_digits_classifier` caches it in
``$XDG_CACHE_HOME/score-sde-toolkit/`` (default ``~/.cache``) under a name holding :data:`CLASSIFIER_VERSION` and a
hash of the hyper-parameters, written atomically, and trains it on first use (about 10 s on one core).

:func:`digits_metrics` scores samples with it: the Frechet distance between its penultimate-layer features of the
samples and of the ``test`` split ("digits FID"; like FID with the classifier in place of Inception), KID and the
"Inception score" with the same network, and class coverage of the predicted labels (:func:`class_coverage`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import data_lib

from .features import KID_SUBSET_SIZE, KID_SUBSETS, INCEPTION_SPLITS, compute_dataset_statistics, extract_features, image_batches, levels_to_uint8, metrics_from_features
from base_lib.files import atomic_write, cache_dir
from .frechet import FeatureStatistics, feature_statistics, frechet_distance

CLASSIFIER_VERSION = 1  # bump when the architecture or the training procedure changes: a new cache file
NUM_CLASSES = 10

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class DigitsClassifierSpec:
    """Architecture and training hyper-parameters of the digits classifier (all part of the cache key)."""

    channels: tuple[int, int] = (32, 64)  # widths of the 8x8 convolutions and of the 4x4 convolution
    num_features: int = 128  # width of the penultimate layer, the "digits FID" features
    dropout: float = 0.3  # dropout before the two linear layers
    epochs: int = 20  # passes over the 1500 training digits
    batch_size: int = 32  # digits per Adam step
    learning_rate: float = 1e-3  # Adam, cosine-annealed to 0 over the training
    weight_decay: float = 1e-3  # Adam's L2 penalty
    max_shift: int = 1  # augmentation: random translation by up to this many pixels (zero fill)
    seed: int = 0  # initialization, dropout, batch order and shifts

    def cache_key(self) -> str:
        text = json.dumps({"version": CLASSIFIER_VERSION, **dataclasses.asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class DigitsClassifier(nn.Module):
    """``x`` ``(B, 1, 8, 8)`` in ``[0, 1]`` -> logits ``(B, 10)``; :meth:`features_and_logits` also gives the ReLU
    features ``(B, num_features)`` of the penultimate layer."""

    def __init__(self, channels: tuple[int, int] = (32, 64), num_features: int = 128, dropout: float = 0.3):
        super().__init__()
        wide, deep = channels
        self.body = nn.Sequential(
            nn.Conv2d(1, wide, 3, padding=1), nn.ReLU(),
            nn.Conv2d(wide, wide, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 8x8 -> 4x4
            nn.Conv2d(wide, deep, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 4x4 -> 2x2
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(4 * deep, num_features), nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(num_features, NUM_CLASSES))
        self.test_accuracy: float | None = None  # accuracy on the digits test split, set after training

    def features_and_logits(self, x: Tensor) -> tuple[Tensor, Tensor]:
        features = self.body(2.0 * x - 1.0)
        return features, self.head(features)

    def forward(self, x: Tensor) -> Tensor:
        return self.features_and_logits(x)[1]

    def extract(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """The feature-extractor contract of :mod:`sample_quality.features`: 8-bit images uint8 ``(B, 1, 8, 8)`` ->
        ``(features, logits)``, in eval mode."""
        if images.dtype != torch.uint8 or tuple(images.shape[1:]) != (1, 8, 8):
            raise ValueError(f"the digits classifier takes uint8 images (B, 1, 8, 8), got {images.dtype} {tuple(images.shape)}")
        device = next(self.parameters()).device
        return self.features_and_logits(images.to(device, torch.float32) / 255.0)


# ------------------------------------------------------------------ training
@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run the block on one CPU thread (float sums then do not depend on the machine's thread count)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _digits_split(split: str) -> tuple[Tensor, Tensor]:
    """The digits of ``split`` as float32 ``(N, 1, 8, 8)`` in ``[0, 1]`` (value ``k / 16``) and their labels."""
    dataset = data_lib.digits(split)
    return dataset.data.to(torch.float32) / (dataset.num_levels - 1), dataset.labels


def random_shift(x: Tensor, max_shift: int, generator: torch.Generator) -> Tensor:
    """Translate each image ``(B, C, H, W)`` by its own uniform integer offsets in ``[-max_shift, max_shift]^2``,
    filling with zeros (the background)."""
    if max_shift == 0:
        return x
    batch, _, height, width = x.shape
    padded = F.pad(x, (max_shift,) * 4)
    offsets = torch.randint(0, 2 * max_shift + 1, (batch, 2), generator=generator)
    rows = torch.arange(height)[None] + offsets[:, :1]  # (B, H): rows of the padded image to read
    cols = torch.arange(width)[None] + offsets[:, 1:]
    return padded[torch.arange(batch)[:, None, None, None], torch.arange(x.shape[1])[None, :, None, None], rows[:, None, :, None], cols[:, None, None, :]]


def accuracy(classifier: DigitsClassifier, x: Tensor, labels: Tensor) -> float:
    """Fraction of ``x`` (floats in ``[0, 1]``) whose predicted class is its label."""
    classifier.eval()
    with torch.no_grad():
        return float((classifier(x).argmax(dim=1) == labels).double().mean())


def train_digits_classifier(spec: DigitsClassifierSpec = DigitsClassifierSpec()) -> DigitsClassifier:
    """Train :class:`DigitsClassifier` on the digits ``train`` split: cross-entropy, Adam with cosine-annealed
    learning rate, random shifts; deterministic (see the module docstring). Sets ``test_accuracy``."""
    x, labels = _digits_split("train")
    steps_per_epoch = math.ceil(len(x) / spec.batch_size)
    with _one_thread(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)  # initialization and dropout
        generator = torch.Generator().manual_seed(spec.seed)  # batch order and shifts
        classifier = DigitsClassifier(spec.channels, spec.num_features, spec.dropout)
        optimizer = torch.optim.Adam(classifier.parameters(), lr=spec.learning_rate, weight_decay=spec.weight_decay)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=spec.epochs * steps_per_epoch)
        classifier.train()
        for _ in range(spec.epochs):
            for batch in torch.randperm(len(x), generator=generator).split(spec.batch_size):
                loss = F.cross_entropy(classifier(random_shift(x[batch], spec.max_shift, generator)), labels[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
        classifier.test_accuracy = accuracy(classifier, *_digits_split("test"))
    return classifier.eval()


# ------------------------------------------------------------------ cache
def default_classifier_path(spec: DigitsClassifierSpec = DigitsClassifierSpec()) -> Path:
    return cache_dir() / f"digits_classifier-v{CLASSIFIER_VERSION}-{spec.cache_key()}.pt"


def load_digits_classifier(
    path: str | os.PathLike | None = None,
    spec: DigitsClassifierSpec = DigitsClassifierSpec(),
    device: torch.device | str | None = None,
) -> DigitsClassifier:
    """The classifier of ``spec`` from ``path`` (default :func:`default_classifier_path`), trained and saved there
    (atomically) first if the file is missing or was made with another version or other hyper-parameters."""
    path = Path(path) if path is not None else default_classifier_path(spec)
    key = spec.cache_key()
    stored = torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None
    if stored is not None and stored.get("key") == key:
        classifier = DigitsClassifier(spec.channels, spec.num_features, spec.dropout)
        classifier.load_state_dict(stored["state_dict"])
        classifier.test_accuracy = float(stored["test_accuracy"])
    else:
        if stored is not None:
            logger.warning("%s holds a digits classifier of other settings; training a new one", path)
        classifier = train_digits_classifier(spec)
        record = {"key": key, "version": CLASSIFIER_VERSION, "spec": json.dumps(dataclasses.asdict(spec)),
                  "state_dict": classifier.state_dict(), "test_accuracy": classifier.test_accuracy}
        atomic_write(path, lambda file: torch.save(record, file))
        logger.info("trained the digits classifier (test accuracy %.4f), saved to %s", classifier.test_accuracy, path)
    return classifier.to(device if device is not None else "cpu").eval()


# ------------------------------------------------------------------ metrics
def class_coverage(labels: Tensor | np.ndarray, num_classes: int = NUM_CLASSES) -> dict[str, float]:
    """Of the (predicted) class ``labels`` ``(N,)``: the number of classes that occur (``classes_covered``), that
    number over ``num_classes`` (``class_coverage``), the entropy ``H = -sum_c h_c log h_c`` of the class histogram
    ``h`` in nats (``class_entropy``) and ``KL(h || uniform) = log(num_classes) - H`` (``class_kl_uniform``)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64).ravel(), minlength=num_classes).astype(np.float64)
    if counts.size != num_classes or counts.sum() == 0:
        raise ValueError(f"labels must be classes in [0, {num_classes}) and not empty")
    h = counts[counts > 0] / counts.sum()
    entropy = float(-(h * np.log(h)).sum())
    covered = int((counts > 0).sum())
    return {"classes_covered": float(covered), "class_coverage": covered / num_classes,
            "class_entropy": entropy, "class_kl_uniform": math.log(num_classes) - entropy}


def class_agreement(predicted: Tensor | np.ndarray, requested: Tensor | np.ndarray) -> dict[str, float]:
    """How often samples drawn for class ``requested[i]`` are recognised as it: ``class_accuracy`` (the fraction with
    ``predicted == requested``) and its binomial standard error ``class_accuracy_stderr = sqrt(a (1 - a) / N)``."""
    predicted, requested = np.asarray(predicted).ravel(), np.asarray(requested).ravel()
    if predicted.shape != requested.shape or predicted.size == 0:
        raise ValueError(f"predicted and requested classes must be equal-length and not empty, got {predicted.shape} and {requested.shape}")
    agree = float((predicted == requested).mean())
    return {"class_accuracy": agree, "class_accuracy_stderr": math.sqrt(agree * (1 - agree) / predicted.size)}


def digits_predictions(samples: Tensor, classifier: DigitsClassifier | None = None) -> Tensor:
    """The classes ``(N,)`` the digits classifier (default :func:`load_digits_classifier`) predicts for ``samples``
    ``(N, 1, 8, 8)`` (floats in ``[0, 1]``, rounded to 8 bits as saved, or uint8)."""
    classifier = load_digits_classifier() if classifier is None else classifier.eval()
    _, logits = extract_features(classifier.extract, image_batches(samples))
    return torch.from_numpy(np.asarray(logits).argmax(axis=1))


def digits_reference_statistics(classifier: DigitsClassifier, split: str = "test") -> FeatureStatistics:
    """The classifier's feature statistics (with the features) of the digits ``split``."""
    with torch.no_grad():
        return compute_dataset_statistics(data_lib.digits(split), classifier.extract)


def digits_metrics(
    samples: Tensor,
    classifier: DigitsClassifier | None = None,
    reference: FeatureStatistics | None = None,
    seed: int = 0,
    kid_subsets: int = KID_SUBSETS,
    kid_subset_size: int = KID_SUBSET_SIZE,
    inception_splits: int = INCEPTION_SPLITS,
) -> dict[str, float]:
    """Digit metrics of ``samples`` ``(N, 1, 8, 8)`` (floats in ``[0, 1]``, rounded to 8 bits as saved, or uint8),
    keys prefixed ``digits_``: ``fid``, ``kid``, ``kid_std``, ``inception_score`` (and its std) with the classifier
    (default :func:`load_digits_classifier`) against ``reference`` (default: the ``test`` split); the class coverage
    of the predicted labels (:func:`class_coverage`); and ``fid_train_floor``, the digits FID of ``N`` random
    ``train`` digits (drawn with ``seed``) against the same reference: what a perfect sampler scores at this ``N``
    (the FID of ``N`` samples is biased upwards, the more so for small ``N``)."""
    classifier = load_digits_classifier() if classifier is None else classifier.eval()
    reference = digits_reference_statistics(classifier) if reference is None else reference
    features, logits = extract_features(classifier.extract, image_batches(samples))
    results = metrics_from_features(features, logits, reference, kid_subsets, kid_subset_size, inception_splits, seed)
    results.update(class_coverage(logits.argmax(axis=1)))
    train = data_lib.digits("train")
    subset = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[: min(len(features), len(train))]
    floor_features, _ = extract_features(classifier.extract, [levels_to_uint8(train.gather(subset), train.num_levels)])
    results["fid_train_floor"] = frechet_distance(*feature_statistics(floor_features), reference.mu, reference.sigma)
    return {f"digits_{name}": value for name, value in results.items()}
