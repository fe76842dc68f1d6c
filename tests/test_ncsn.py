"""NCSN v1 (``ncsn``) and its conditional InstanceNorm++.

* The conditional layer equals InstanceNorm++ with the affine parameters of row ``labels[b]`` for each sample.
* Parity with the 2021 reference (as repaired in the fixtures' README): ``ve_ncsn`` loads strictly, same keys in
  the same order, and gives the stored output within the README tolerance, in float32 and float64.
* The network depends on the noise level only through the table rows of the given labels: other rows can be
  changed freely, gradients reach only those rows, and each sample uses its own row.
"""

from __future__ import annotations

import ml_collections
import numpy as np
import pytest
import torch

import models
from models.ncsn import NCSN
from models.normalization import ConditionalInstanceNorm2dPlus, get_normalization
from reference_fixtures import PARITY_TOLERANCE, needs_fixtures, parity_error
from test_ncsnv2 import load_fixture_model, numpy_instance_norm_plus, randomize_


def small_ncsn(seed: int = 0, **kwargs) -> NCSN:
    torch.manual_seed(seed)
    return NCSN(**{"image_size": 16, "nf": 4, "num_classes": 6, **kwargs}).eval()


def embedding_tables(model: NCSN) -> list[torch.nn.Parameter]:
    return [p for n, p in model.named_parameters() if n.endswith("embed.weight")]


def test_conditional_instance_norm_plus_uses_row_labels_b_per_sample():
    g = torch.Generator().manual_seed(0)
    layer = ConditionalInstanceNorm2dPlus(4, num_classes=5).double()
    with torch.no_grad():
        layer.embed.weight.copy_(torch.randn(5, 12, generator=g, dtype=torch.float64))
    offsets = torch.randn(3, 4, 1, 1, generator=g, dtype=torch.float64)  # channel means that differ
    x = torch.randn(3, 4, 5, 6, generator=g, dtype=torch.float64) + offsets
    labels = torch.tensor([4, 0, 4])
    rows = layer.embed.weight.detach().numpy()[labels.numpy()]
    gamma, alpha, beta = rows[:, :4], rows[:, 4:8], rows[:, 8:]  # the reference's column order
    expected = numpy_instance_norm_plus(x.numpy(), gamma, alpha, beta)
    np.testing.assert_allclose(layer(x, labels).detach().numpy(), expected, rtol=1e-12, atol=1e-12)


def test_conditional_norm_initialisation_and_choices():
    layer = ConditionalInstanceNorm2dPlus(64, num_classes=50)
    table = layer.embed.weight.detach()
    assert table.shape == (50, 192) and torch.equal(table[:, 128:], torch.zeros(50, 64))
    # gamma and alpha ~ N(1, 0.02^2): 6400 draws, the mean within 5 standard errors (5 * 0.02 / 80) of 1
    assert abs(table[:, :128].mean().item() - 1) < 5 * 0.02 / 80 and 0.018 < table[:, :128].std().item() < 0.022
    with pytest.raises(ValueError, match=r"one of \('InstanceNorm\+\+',\) for a noise-conditional"):
        get_normalization("VarianceNorm", num_classes=3)


@needs_fixtures
def test_parity_with_reference_fixture():
    """``ve_ncsn`` (nf=16, 10 noise levels, CIFAR-10 config): README tolerance 1e-4; measured about 1.1e-6."""
    fixture, model = load_fixture_model("ve_ncsn")
    assert isinstance(model, NCSN) and model.num_classes == 10 and "sigmas" not in model.state_dict()
    with torch.no_grad():
        out = model(fixture["x"], fixture["labels"])
        out64 = model.double()(fixture["x"].double(), fixture["labels"])
    assert out.dtype == torch.float32 and out64.dtype == torch.float64
    assert parity_error(out, fixture["out"]) <= PARITY_TOLERANCE
    assert parity_error(out64, fixture["out"]) <= PARITY_TOLERANCE


def test_num_classes_defaults_to_num_scales():
    config = ml_collections.ConfigDict(
        {"data": {"num_channels": 3, "image_size": 16, "centered": False},
         "model": {"name": "ncsn", "nf": 4, "num_scales": 7, "normalization": "InstanceNorm++", "nonlinearity": "elu"}}
    )
    model = models.create_model(config)
    assert type(model) is NCSN and all(t.shape[0] == 7 for t in embedding_tables(model))
    config.model.num_classes = 3
    assert all(t.shape[0] == 3 for t in embedding_tables(models.create_model(config)))


def test_only_the_rows_of_the_given_labels_matter():
    """Changing the label changes the output; overwriting every other row changes nothing; gradients reach only
    the used rows; each sample uses its own row (a batch equals its samples run one by one)."""
    model = randomize_(small_ncsn())
    g = torch.Generator().manual_seed(1)
    x, labels = torch.rand(2, 3, 16, 16, generator=g), torch.tensor([1, 4])
    with torch.no_grad():
        out = model(x, labels)
        one_by_one = torch.cat([model(x[i : i + 1], labels[i : i + 1]) for i in range(2)])
        other = model(x, torch.tensor([1, 2]))
        unused = torch.tensor([0, 2, 3, 5])
        for table in embedding_tables(model):
            table[unused] = torch.randn(len(unused), table.shape[1], generator=g)
        after = model(x, labels)
    torch.testing.assert_close(one_by_one, out, rtol=1e-5, atol=1e-5)
    assert torch.equal(other[0], out[0]) and not torch.allclose(other[1], out[1], atol=1e-3)
    assert torch.equal(after, out)

    model.train()
    model(x, labels).square().sum().backward()
    for table in embedding_tables(model):
        assert table.grad[unused].abs().max() == 0 and (table.grad[labels].abs().amax(1) > 0).all()
    silent = [n for n, p in model.named_parameters() if not p.grad.abs().max() > 0]
    assert silent == []


def test_refine_blocks_are_conditional_and_use_average_pooling():
    model = small_ncsn()
    keys = model.state_dict().keys()
    assert "refine4.crp.norms.1.embed.weight" in keys and "refine4.adapt_convs.1.2_2_norm.embed.weight" in keys
    assert "refine2.msf.norms.0.embed.weight" in keys and model.refine1.crp.pool == "avg"
    assert model.res3[0].shortcut.dilation == (2, 2) and model.res4[1].conv1.dilation == (4, 4)


def test_float64_and_determinism():
    model = randomize_(small_ncsn())
    x, labels = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2)), torch.tensor([0, 5])
    with torch.no_grad():
        out, again = model(x, labels), model(x, labels)
        out64 = model.double()(x.double(), labels)
    assert torch.equal(out, again) and out64.dtype == torch.float64
    assert parity_error(out, out64) <= PARITY_TOLERANCE


def test_bad_inputs():
    with pytest.raises(ValueError, match="image_size must be a multiple of 2"):
        NCSN(image_size=15, nf=4)
    with pytest.raises(ValueError, match="normalization must be one of"):
        NCSN(nf=4, normalization="InstanceNorm")
    with pytest.raises(ValueError, match="num_classes"):
        NCSN(nf=4, num_classes=0)
    model = small_ncsn()
    x = torch.rand(2, 3, 16, 16)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 6\)"):
        model(x, torch.tensor([0, 6]))
    with pytest.raises(ValueError, match="labels must be integer noise-level indices"):
        model(x, torch.tensor([0.1, 0.5]))
    with pytest.raises(ValueError, match=r"labels must have shape \(B,\)"):
        model(x, torch.tensor([[0, 1]]))
    with pytest.raises(ValueError, match=r"x must be a floating-point tensor of shape \(B, 3, 16, 16\)"):
        model(torch.rand(2, 3, 16, 8), torch.tensor([0, 1]))
