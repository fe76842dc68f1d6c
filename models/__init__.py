"""Score networks and what turns them into score functions.

* :func:`register_model`, :func:`get_model`, :func:`create_model`: networks by config name
  (``config.model.name``), as in the 2021 reference; each model translates its own config fields.
* :class:`MLPScoreNet` (``"mlp"``): a noise-conditioned MLP for low-dimensional data;
  :class:`ConditionalMLPScoreNet` (``"conditional_mlp"``) adds a class label (with a null label, for
  classifier-free guidance) and :class:`MLPClassifier` (``"mlp_classifier"``) is a noise-conditional classifier;
  :class:`ConvClassifier` (``"conv_classifier"``) is its image counterpart (the DDPM++ encoder).
* :class:`NCSNpp` (``"ncsnpp"``: NCSN++ and DDPM++) and :class:`DDPM` (``"ddpm"``): the U-Nets, with FIR
  resampling in pure PyTorch (:func:`upfirdn2d`); on the CPU, float32 inference runs their 3x3 convolutions by
  Winograd's F(4x4, 3x3) (:class:`WinogradConv2d`; :func:`set_winograd_enabled` switches it off). ``NCSNpp(...,
  num_classes=K)`` (``config.model.class_conditional``) adds a class embedding with a null label, for classifier-free
  guidance.
* :class:`DiT` (``"dit"``): the diffusion transformer of Peebles & Xie (2023), patches of the image as tokens with
  adaLN-Zero blocks conditioned on the noise level (and a class label with a null label).
* :class:`WaveGradNet` (``"wavegrad"``): a 1-D score network for waveforms of any length (DiffWave's dilated
  residual stack, WaveGrad's FiLM noise conditioning, an optional spectrogram signal).
* :class:`NCSNv2` / :class:`NCSNv2Deeper` / :class:`NCSNv2Deepest` (``"ncsnv2_64"``, ``"ncsnv2_128"``,
  ``"ncsnv2_256"``) and :class:`NCSN` (``"ncsn"``): the RefineNet-based SMLD networks.
* :class:`ConditionMap` (:mod:`models.conditioning`): a fixed map from clean data to the signal a conditioned
  network takes (``config.model.conditioning``; :class:`LowResolution`, ``"low_resolution"``: SR3), read by
  :func:`condition_map_of`; :func:`register_condition` adds one.
* :class:`ScoreModel`: a network, its SDE and its :class:`Parameterization` (how labels and output relate to the
  time and the score: the reference's ``noise``, ``ddpm``, ``score``, ``smld``, registered by name), built once from
  the config (:meth:`ScoreModel.from_config`); gives the score, the denoiser and ``score_fn(x, t)`` for samplers.
* :func:`resolve_mixed_precision`, :func:`native_bf16`: the network's mixed precision (``'no'``, ``'bf16'``,
  ``'fp16'``, ``'auto'``) and the rule behind ``'auto'`` (:mod:`models.precision`).
* :class:`ExponentialMovingAverage`: weight averaging in the reference's format.
* :func:`load_reference_weights` (a reference ``state_dict``, strictly, through the model's
  ``reference_key_map``) and :func:`load_reference_training_state` (a reference training checkpoint: model,
  EMA and optimizer); :func:`load_reference_checkpoint` reads such a file safely.
"""

from .checkpoint import (
    NUMPY_FLOAT64_SAFE_GLOBALS,
    from_reference_keys,
    load_reference_checkpoint,
    load_reference_training_state,
    load_reference_weights,
    reference_key_map,
    strip_data_parallel_prefix,
    to_reference_keys,
    to_reference_state_dict,
)
from .ema import ExponentialMovingAverage
from .embeddings import GaussianFourierProjection, sinusoidal_embedding
from .classifier_mlp import MLPClassifier
from .conditional_mlp import ConditionalMLPScoreNet, check_class_labels
from .conv_classifier import ConvClassifier
from .ddpm import DDPM
from .dit import DiT
from .mlp import EMBEDDING_TYPES, MLPScoreNet
from .ncsn import NCSN
from .ncsnpp import NCSNpp
from .ncsnv2 import NCSNv2, NCSNv2Deeper, NCSNv2Deepest
from .normalization import ConditionalInstanceNorm2dPlus, InstanceNorm2dPlus, get_normalization
from .precision import MIXED_PRECISION, bf16_matrix_units, native_bf16, resolve_mixed_precision
from .registry import available_models, create_model, get_model, register_model
from .wavegrad import WaveGradNet
from .mel import LogMel, mel_filterbank, spectral_convergence
from .conditioning import (
    ConditionMap,
    LowResolution,
    available_conditions,
    check_signal,
    condition_map_from_config,
    condition_map_of,
    get_condition,
    register_condition,
)
from .winograd import WinogradConv2d, set_winograd_enabled, winograd_disabled
from .upfirdn2d import conv_downsample_2d, downsample_2d, fir_kernel_2d, upfirdn2d, upsample_2d, upsample_conv_2d
from .score_model import (
    VP_CONTINUOUS_LABEL_SCALE,
    Parameterization,
    ScoreModel,
    available_parameterizations,
    check_model_output,
    default_parameterization,
    get_parameterization,
    label_conditional,
    model_dtype,
    parameterization_from_config,
    register_parameterization,
    resolve_parameterization,
)

__all__ = [
    "register_model",
    "get_model",
    "create_model",
    "available_models",
    "ConditionMap",
    "LowResolution",
    "register_condition",
    "available_conditions",
    "get_condition",
    "condition_map_from_config",
    "condition_map_of",
    "check_signal",
    "MLPScoreNet",
    "WaveGradNet",
    "LogMel",
    "mel_filterbank",
    "spectral_convergence",
    "EMBEDDING_TYPES",
    "ConditionalMLPScoreNet",
    "check_class_labels",
    "MLPClassifier",
    "ConvClassifier",
    "NCSNpp",
    "DDPM",
    "DiT",
    "upfirdn2d",
    "upsample_2d",
    "downsample_2d",
    "upsample_conv_2d",
    "conv_downsample_2d",
    "fir_kernel_2d",
    "WinogradConv2d",
    "set_winograd_enabled",
    "winograd_disabled",
    "NCSNv2",
    "NCSNv2Deeper",
    "NCSNv2Deepest",
    "NCSN",
    "get_normalization",
    "InstanceNorm2dPlus",
    "ConditionalInstanceNorm2dPlus",
    "GaussianFourierProjection",
    "sinusoidal_embedding",
    "ScoreModel",
    "MIXED_PRECISION",
    "native_bf16",
    "bf16_matrix_units",
    "resolve_mixed_precision",
    "Parameterization",
    "register_parameterization",
    "get_parameterization",
    "available_parameterizations",
    "parameterization_from_config",
    "default_parameterization",
    "resolve_parameterization",
    "label_conditional",
    "check_model_output",
    "model_dtype",
    "VP_CONTINUOUS_LABEL_SCALE",
    "ExponentialMovingAverage",
    "load_reference_checkpoint",
    "load_reference_weights",
    "load_reference_training_state",
    "reference_key_map",
    "from_reference_keys",
    "to_reference_keys",
    "to_reference_state_dict",
    "strip_data_parallel_prefix",
    "NUMPY_FLOAT64_SAFE_GLOBALS",
]
