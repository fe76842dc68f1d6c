"""The Inception extractor's setup: a clear error when torch-fidelity cannot be imported or the weights are not
found, the weight lookup order, and the wrapper's contract (tested with a stand-in torch_fidelity module). Where
torch-fidelity and its weights are really installed, our formulas are checked against torch-fidelity's own."""

import sys
import types

import numpy as np
import pytest
import torch

from sample_quality import MetricSetupError, frechet_distance, inception_feature_extractor, kernel_inception_distance
from sample_quality import inception
from sample_quality.inception import INCEPTION_WEIGHTS_ENV, INCEPTION_WEIGHTS_FILE, INCEPTION_WEIGHTS_URL


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """torch hub pointed at an empty folder and no weights variable, so only what a test adds is found."""
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    monkeypatch.delenv(INCEPTION_WEIGHTS_ENV, raising=False)
    return tmp_path / "hub" / "checkpoints"


def test_missing_torch_fidelity_says_what_to_install_and_which_weights(monkeypatch, empty_hub):
    monkeypatch.setitem(sys.modules, "torch_fidelity", None)  # makes `import torch_fidelity...` fail
    with pytest.raises(MetricSetupError) as error:
        inception_feature_extractor()
    message = str(error.value)
    for needed in ("pip install torch-fidelity", "torchvision", INCEPTION_WEIGHTS_FILE, INCEPTION_WEIGHTS_URL, str(empty_hub / INCEPTION_WEIGHTS_FILE)):
        assert needed in message


class FakeInception(torch.nn.Module):
    """Stands in for torch_fidelity's FeatureExtractorInceptionV3: records its arguments and inputs."""

    created = []

    def __init__(self, name, features_list, feature_extractor_weights_path=None):
        super().__init__()
        self.args = (name, list(features_list), feature_extractor_weights_path)
        self.inputs = []
        FakeInception.created.append(self)

    def forward(self, x):
        self.inputs.append(x)
        flat = x.flatten(1).float().mean(1, keepdim=True)
        return flat.expand(-1, 2048), flat.expand(-1, 1008)


@pytest.fixture
def fake_torch_fidelity(monkeypatch):
    package = types.ModuleType("torch_fidelity")
    module = types.ModuleType("torch_fidelity.feature_extractor_inceptionv3")
    module.FeatureExtractorInceptionV3 = FakeInception
    package.feature_extractor_inceptionv3 = module
    monkeypatch.setitem(sys.modules, "torch_fidelity", package)
    monkeypatch.setitem(sys.modules, "torch_fidelity.feature_extractor_inceptionv3", module)
    FakeInception.created.clear()
    return FakeInception


def test_missing_weights_list_the_places_looked_at(fake_torch_fidelity, empty_hub):
    with pytest.raises(MetricSetupError, match="not found") as error:
        inception_feature_extractor()
    assert str(empty_hub / INCEPTION_WEIGHTS_FILE) in str(error.value) and INCEPTION_WEIGHTS_ENV in str(error.value)
    with pytest.raises(MetricSetupError, match="does not exist"):  # an explicit path is not silently skipped
        inception_feature_extractor(empty_hub / "nope.pth")


def test_weights_are_looked_up_in_order(fake_torch_fidelity, empty_hub, tmp_path, monkeypatch):
    empty_hub.mkdir(parents=True)
    hub_file = empty_hub / inception.PYTORCH_FID_WEIGHTS_FILE  # pytorch-fid's copy of the same weights
    hub_file.touch()
    inception_feature_extractor()
    env_file = tmp_path / "env.pth"
    env_file.touch()
    monkeypatch.setenv(INCEPTION_WEIGHTS_ENV, str(env_file))
    inception_feature_extractor()
    given = tmp_path / "given.pth"
    given.touch()
    inception_feature_extractor(given)
    paths = [fake.args[2] for fake in fake_torch_fidelity.created]
    assert paths == [str(hub_file), str(env_file), str(given)]
    assert all(fake.args[:2] == ("inception-v3-compat", ["2048", "logits_unbiased"]) for fake in fake_torch_fidelity.created)


def test_the_extractor_takes_8bit_grey_or_rgb_images(fake_torch_fidelity, tmp_path):
    weights = tmp_path / "w.pth"
    weights.touch()
    extract = inception_feature_extractor(weights)
    grey = torch.arange(2 * 8 * 8, dtype=torch.uint8).view(2, 1, 8, 8)
    features, logits = extract(grey)
    seen = fake_torch_fidelity.created[-1].inputs[-1]
    assert seen.dtype == torch.uint8 and seen.shape == (2, 3, 8, 8) and torch.equal(seen[:, 2], grey[:, 0])  # repeated to RGB
    assert features.shape == (2, 2048) and logits.shape == (2, 1008)
    with pytest.raises(ValueError, match="uint8"):
        extract(grey.float())


def real_torch_fidelity():
    try:
        from torch_fidelity.metric_fid import fid_statistics_to_metric
        from torch_fidelity.metric_kid import kid_features_to_metric
    except Exception:
        pytest.skip("torch-fidelity does not import here (it needs a torch + torchvision pair that import together)")
    return fid_statistics_to_metric, kid_features_to_metric


def test_formulas_agree_with_torch_fidelity():
    fid_fn, kid_fn = real_torch_fidelity()
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(300, 16)), rng.normal(0.2, 1.1, size=(300, 16))
    stats = [{"mu": x.mean(0), "sigma": np.cov(x, rowvar=False)} for x in (a, b)]
    ours = frechet_distance(stats[0]["mu"], stats[0]["sigma"], stats[1]["mu"], stats[1]["sigma"])
    assert ours == pytest.approx(fid_fn(stats[0], stats[1], verbose=False)["frechet_inception_distance"], rel=1e-8)
    theirs = kid_fn(torch.from_numpy(a), torch.from_numpy(b), kid_subsets=1, kid_subset_size=300, verbose=False)
    assert kernel_inception_distance(a, b, subsets=1, subset_size=300)[0] == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-8)


def test_real_inception_features_if_installed():
    real_torch_fidelity()
    try:
        extract = inception_feature_extractor()
    except MetricSetupError as error:
        pytest.skip(str(error))
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    features, logits = extract(images)
    again, _ = extract(images.flip(0))
    assert features.shape == (4, 2048) and logits.shape == (4, 1008)
    torch.testing.assert_close(again.flip(0), features)  # per-image features, independent of the batch
    assert not torch.allclose(features[0], features[1])
