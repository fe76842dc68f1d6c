"""Data for score-based models: 2-D toy densities, datasets bundled with scikit-learn / scikit-image, real
datasets from a local folder (CIFAR-10, MNIST, CelebA, LSUN, image folders), waveforms (procedural notes,
.wav folders; :mod:`data_lib.audio`), the reference's data scalers,
uniform dequantization with the dataset's own number of levels, and seeded batches sharded across ranks.

Nothing is downloaded. torchvision is not used (its PyPI wheels are CUDA builds that do not import beside the
CPU torch this project pins); the file formats are read with numpy and Pillow (:mod:`data_lib.files`).
"""

from .audio import AUDIO_DATASETS, AudioDataset, audio_shape, read_wav, tones, wav_folder
from .base import Dataset, ImageFileDataset, InMemoryDataset
from .embedded import digits, faces, photo_patches
from .loader import (
    DATASETS,
    available_datasets,
    check_labelled,
    get_dataset,
    iterate_batches,
    mix_seeds,
    prepare_batch,
    preprocessing_options,
    shard_batches,
    training_batches,
)
from .scalers import get_data_inverse_scaler, get_data_scaler, model_data_range
from .toy import TOY_DATASETS, TOY_NUM_CLASSES, sample_toy, sample_toy_with_labels, toy_classify, toy_gaussian_mixture, toy_log_prob

__all__ = [
    "Dataset",
    "InMemoryDataset",
    "ImageFileDataset",
    "DATASETS",
    "TOY_DATASETS",
    "available_datasets",
    "check_labelled",
    "get_dataset",
    "iterate_batches",
    "mix_seeds",
    "training_batches",
    "shard_batches",
    "prepare_batch",
    "preprocessing_options",
    "get_data_scaler",
    "get_data_inverse_scaler",
    "sample_toy",
    "sample_toy_with_labels",
    "TOY_NUM_CLASSES",
    "toy_log_prob",
    "toy_classify",
    "toy_gaussian_mixture",
    "digits",
    "faces",
    "photo_patches",
    "AUDIO_DATASETS",
    "model_data_range",
    "AudioDataset",
    "audio_shape",
    "read_wav",
    "tones",
    "wav_folder",
]
