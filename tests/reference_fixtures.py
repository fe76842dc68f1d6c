"""The reference-model fixtures (``../shared/fixtures/reference_models``, see its README) and their parity criterion.

One place for the path (``$SCORE_SDE_FIXTURES`` overrides it), the skip marker, loading a fixture and its model,
and the README's normalised error ``max|out - expected| / max(1, max|expected|)`` with its tolerance 1e-4.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import ml_collections
import pytest
import torch

import models

# the shared fixtures live beside the repository (../shared), where CI places them; SCORE_SDE_FIXTURES overrides
FIXTURES = Path(os.environ.get("SCORE_SDE_FIXTURES", Path(__file__).resolve().parents[2] / "shared" / "fixtures")) / "reference_models"
REFERENCE_VARIANTS = ["ve_ncsnpp_continuous", "vp_ddpmpp_continuous", "vp_ddpm_continuous", "ve_ncsnv2", "ve_ncsn"]
CHECKPOINT = FIXTURES / "reference_checkpoint_ve_ncsnpp.pth"
CHECKPOINT_EXPECTED = FIXTURES / "reference_checkpoint_ve_ncsnpp_expected.pt"
FULL_SIZE_KEYS = FIXTURES / "full_size_keys.json"
needs_fixtures = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"reference fixtures not found at {FIXTURES}")

#: the README's parity criterion on the normalised error
PARITY_TOLERANCE = 1e-4


def load_fixture(variant: str) -> dict:
    """The stored dict of ``<variant>.pt`` (``state_dict``, ``x``, ``labels``, ``out``, ``config``, ...)."""
    return torch.load(FIXTURES / f"{variant}.pt", weights_only=True)


def fixture_config(variant: str) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(load_fixture(variant)["config"])


def fixture_model(variant: str) -> tuple[dict, torch.nn.Module]:
    """The fixture and the model built here from its config with the reference's weights loaded, in eval mode."""
    fixture = load_fixture(variant)
    model = models.create_model(ml_collections.ConfigDict(fixture["config"]))
    models.load_reference_weights(model, fixture["state_dict"])
    return fixture, model.eval()


def parity_error(out: torch.Tensor, expected: torch.Tensor) -> float:
    """The README's normalised parity error ``max|out - expected| / max(1, max|expected|)``."""
    scale = max(1.0, expected.abs().max().item())
    return (out.to(expected.dtype) - expected).abs().max().item() / scale


def full_size_entry(config_name: str) -> dict:
    """The ``full_size_keys.json`` entry of ``config_name`` (e.g. ``"ve/cifar10_ncsnpp_continuous"``)."""
    return json.loads(FULL_SIZE_KEYS.read_text())[config_name]
