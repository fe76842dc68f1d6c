"""Score networks and what turns them into score functions.

* :func:`register_model`, :func:`get_model`, :func:`create_model`: networks by config name
  (``config.model.name``), as in the 2021 reference; each model translates its own config fields.
* :class:`MLPScoreNet` (``"mlp"``): a noise-conditioned MLP for low-dimensional data.
* :func:`get_score_fn` / :func:`get_sampling_score_fn`: a network as ``score_fn(x, t)`` for the samplers, with
  the reference's label and scaling conventions for VP, sub-VP and VE.
* :class:`ExponentialMovingAverage` and :func:`load_reference_checkpoint`: weight averaging and the
  reference's training checkpoints.
"""

from .checkpoint import NUMPY_FLOAT64_SAFE_GLOBALS, load_reference_checkpoint, strip_data_parallel_prefix
from .ema import ExponentialMovingAverage
from .embeddings import GaussianFourierProjection, sinusoidal_embedding
from .mlp import EMBEDDING_TYPES, MLPScoreNet
from .registry import available_models, create_model, get_model, register_model
from .score_fn import VP_CONTINUOUS_LABEL_SCALE, get_model_fn, get_sampling_score_fn, get_score_fn, model_dtype

__all__ = [
    "register_model",
    "get_model",
    "create_model",
    "available_models",
    "MLPScoreNet",
    "EMBEDDING_TYPES",
    "GaussianFourierProjection",
    "sinusoidal_embedding",
    "get_model_fn",
    "get_score_fn",
    "get_sampling_score_fn",
    "model_dtype",
    "VP_CONTINUOUS_LABEL_SCALE",
    "ExponentialMovingAverage",
    "load_reference_checkpoint",
    "strip_data_parallel_prefix",
    "NUMPY_FLOAT64_SAFE_GLOBALS",
]
