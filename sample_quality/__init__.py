"""Sample-quality metrics.

* Distances between feature distributions: :func:`frechet_distance` (FID), :func:`kernel_inception_distance` (KID),
  :func:`inception_score`, with statistics files (:func:`save_statistics`, :func:`load_statistics`, the command
  ``python -m sample_quality.stats``) and any feature extractor (:func:`feature_metrics`); the standard Inception
  network through torch-fidelity (:func:`inception_feature_extractor`, local weights only).
* For the embedded digits, no download: a classifier trained here (:func:`load_digits_classifier`) giving a
  "digits FID" and class coverage (:func:`digits_metrics`); for class-conditional samples, how often the
  classifier recognises the requested class (:func:`digits_predictions`, :func:`class_agreement`).
* For the 2-D toy densities: sliced Wasserstein distance and exact mean log-density (:func:`toy_metrics`).
* For waveforms: mean log-spectrum distance and pitch distances (:func:`audio_metrics`, :mod:`sample_quality.audio`).
"""

from .digits import DigitsClassifier, DigitsClassifierSpec, class_agreement, class_coverage, digits_metrics, digits_predictions, digits_reference_statistics, load_digits_classifier, train_digits_classifier
from .features import compute_dataset_statistics, extract_features, feature_metrics, metrics_from_features
from .frechet import FeatureStatistics, feature_statistics, frechet_distance, load_statistics, save_statistics
from .inception import MetricSetupError, inception_feature_extractor
from .inception_score import inception_score
from .kernel_distance import kernel_inception_distance
from .sliced_wasserstein import sliced_wasserstein
from .audio import audio_metrics, estimate_f0, log_spectrum_distance, pitch_distances
from .toy import mean_log_density, toy_metrics

__all__ = [
    "sliced_wasserstein",
    "toy_metrics",
    "mean_log_density",
    "frechet_distance",
    "feature_statistics",
    "FeatureStatistics",
    "save_statistics",
    "load_statistics",
    "kernel_inception_distance",
    "inception_score",
    "extract_features",
    "compute_dataset_statistics",
    "metrics_from_features",
    "feature_metrics",
    "inception_feature_extractor",
    "MetricSetupError",
    "DigitsClassifier",
    "DigitsClassifierSpec",
    "train_digits_classifier",
    "load_digits_classifier",
    "digits_reference_statistics",
    "digits_metrics",
    "class_coverage",
    "class_agreement",
    "digits_predictions",
    "audio_metrics",
    "estimate_f0",
    "log_spectrum_distance",
    "pitch_distances",
]
