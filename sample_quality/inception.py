"""The standard Inception-v3 feature extractor of FID / KID / IS, through torch-fidelity, with local weights only.

torch-fidelity (``pip install torch-fidelity``, the ``metrics`` extra of this package) holds the port of the
TensorFlow Inception graph of 2015-12-05 that FID is defined with (``FeatureExtractorInceptionV3``, registered as
``inception-v3-compat``); its 2048 pool features give FID and KID, its ``logits_unbiased`` the Inception score.
torch-fidelity imports torchvision, so it needs a torch / torchvision pair that import together.

Nothing is downloaded here. The weights file (:data:`INCEPTION_WEIGHTS_FILE`, from :data:`INCEPTION_WEIGHTS_URL`)
is looked up, in this order, at the ``weights_path`` given (``config.eval.inception_weights``), at
``$SCORE_SDE_INCEPTION_WEIGHTS``, and in torch hub's checkpoint folder (``$TORCH_HOME/hub/checkpoints``, where
torch-fidelity's own download puts it; pytorch-fid's copy of the same file, :data:`PYTORCH_FID_WEIGHTS_FILE`, is
accepted there too).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor

INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_WEIGHTS_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_WEIGHTS_FILE}"
PYTORCH_FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_WEIGHTS_ENV = "SCORE_SDE_INCEPTION_WEIGHTS"
INCEPTION_FEATURES = ("2048", "logits_unbiased")  # torch-fidelity's layers for FID / KID and for IS
INSTALL_HINT = (
    "install a torch and torchvision pair that import together (e.g. `pip install torch torchvision` from the same "
    "index, CPU or CUDA alike), then `pip install torch-fidelity` (or this package's extra: `pip install -e .[metrics]`)"
)


class MetricSetupError(RuntimeError):
    """A metric's library or weights are missing; the message says how to get them."""


def hub_checkpoint_dir() -> Path:
    """torch hub's checkpoint folder, ``$TORCH_HOME/hub/checkpoints`` (default ``~/.cache/torch/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def inception_weight_candidates(weights_path: str | os.PathLike | None = None) -> list[Path]:
    """The places looked at for the Inception weights, in order (see the module docstring)."""
    candidates = [Path(weights_path).expanduser()] if weights_path else []
    if os.environ.get(INCEPTION_WEIGHTS_ENV):
        candidates.append(Path(os.environ[INCEPTION_WEIGHTS_ENV]).expanduser())
    hub = hub_checkpoint_dir()
    return candidates + [hub / INCEPTION_WEIGHTS_FILE, hub / PYTORCH_FID_WEIGHTS_FILE]


def find_inception_weights(weights_path: str | os.PathLike | None = None) -> Path:
    """The first existing file among :func:`inception_weight_candidates`; ``MetricSetupError`` saying where to put
    which file if there is none, or if an explicit ``weights_path`` does not exist (it is not silently skipped)."""
    candidates = inception_weight_candidates(weights_path)
    if weights_path and not candidates[0].is_file():
        raise MetricSetupError(f"the Inception weights file {candidates[0]} does not exist. {_weights_hint()}")
    found = next((path for path in candidates if path.is_file()), None)
    if found is None:
        looked = ", ".join(str(path) for path in candidates)
        raise MetricSetupError(f"the Inception weights were not found (looked at {looked}). {_weights_hint()}")
    return found


def _weights_hint() -> str:
    return (
        f"Download {INCEPTION_WEIGHTS_URL} (the TensorFlow Inception 2015-12-05 weights converted by torch-fidelity) "
        f"and either put it at {hub_checkpoint_dir() / INCEPTION_WEIGHTS_FILE}, or set ${INCEPTION_WEIGHTS_ENV} or "
        "config.eval.inception_weights to its path."
    )


def _import_torch_fidelity_inception() -> type:
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    return FeatureExtractorInceptionV3


class InceptionFeatures:
    """``images`` uint8 ``(B, C, H, W)`` (``C`` = 1 or 3; any size, resized to 299 inside) -> ``(pool features
    (B, 2048), logits (B, 1008))``, float32, on the network's device. Grey images are repeated to RGB."""

    def __init__(self, network: torch.nn.Module, device: torch.device):
        self.network = network  # torch-fidelity's FeatureExtractorInceptionV3, eval mode
        self.device = device  # where the images are sent

    def __call__(self, images: Tensor) -> tuple[Tensor, Tensor]:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"images must be uint8 (B, 1 or 3, H, W), got {images.dtype} {tuple(images.shape)}")
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        features, logits = self.network(images.to(self.device))
        return features, logits


def inception_feature_extractor(weights_path: str | os.PathLike | None = None, device: torch.device | str | None = None) -> InceptionFeatures:
    """torch-fidelity's Inception-v3 with the local weights (:func:`find_inception_weights`), as a feature extractor
    (:class:`InceptionFeatures`) on ``device`` (default: CPU). ``MetricSetupError`` saying what to install, and
    where to put which file, when torch-fidelity does not import or the weights are not found (both are checked,
    so one error lists everything missing)."""
    problems = []
    try:
        network_class = _import_torch_fidelity_inception()
    except Exception as error:  # ImportError, or torchvision failing to load its operators beside this torch
        problems.append(f"torch-fidelity's Inception network cannot be imported here ({type(error).__name__}: {error}); "
                        f"to fix it, {INSTALL_HINT}")
    try:
        path = find_inception_weights(weights_path)
    except MetricSetupError as error:
        problems.append(str(error))
    if problems:
        raise MetricSetupError("FID / KID / Inception score cannot be computed: " + ". Also, ".join(problems))
    device = torch.device(device) if device is not None else torch.device("cpu")
    network = network_class("inception-v3-compat", list(INCEPTION_FEATURES), feature_extractor_weights_path=str(path))
    return InceptionFeatures(network.to(device).eval(), device)
