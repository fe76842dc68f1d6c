"""Loading reference weights and training checkpoints into networks whose modules carry other names.

A small "reference" network keeps its layers in one flat ``all_modules`` list, as NCSN++ and DDPM do in the 2021
reference; its twin here names them and registers them in another order, and describes the correspondence with
``reference_key_map``. The twin must then load the reference's weights, EMA and optimizer state so that both
networks compute the same outputs and take the same optimizer steps.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from torch import nn

import models
import train_lib
from models.checkpoint import NUMPY_FLOAT64_SAFE_GLOBALS
from reference_fixtures import CHECKPOINT, CHECKPOINT_EXPECTED, PARITY_TOLERANCE, fixture_config, needs_fixtures, parity_error


class FlatReference(nn.Module):
    """The reference's layout: positional names, a fixed (untrainable) projection first, a float64 buffer."""

    def __init__(self):
        super().__init__()
        self.register_buffer("sigmas", torch.linspace(0.1, 1.0, 5, dtype=torch.float64))
        self.all_modules = nn.ModuleList(
            [
                nn.Linear(3, 4),  # 0: embedding
                nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4)),  # 1: body
                nn.Linear(4, 3),  # 2: head
            ]
        )
        self.all_modules[0].weight.requires_grad_(False)

    def forward(self, x):
        h = self.all_modules[0](x)
        return self.all_modules[2](torch.tanh(self.all_modules[1](h)))


class NamedTwin(nn.Module):
    """The same network with names that explain themselves, registered in a different order."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(4, 3)
        self.body = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
        self.embed = nn.Linear(3, 4)
        self.embed.weight.requires_grad_(False)
        self.register_buffer("sigmas", torch.zeros(5))

    def reference_key_map(self):
        return {"all_modules.0": "embed", "all_modules.1": "body", "all_modules.1.1": "body.1", "all_modules.2": "head"}

    def forward(self, x):
        return self.head(torch.tanh(self.body(self.embed(x))))


@pytest.fixture
def pair():
    torch.manual_seed(0)
    reference, ours = FlatReference(), NamedTwin()
    return reference, ours


def test_weights_load_and_give_the_same_outputs(pair):
    reference, ours = pair
    models.load_reference_weights(ours, reference.state_dict())
    x = torch.randn(7, 3)
    torch.testing.assert_close(ours(x), reference(x), rtol=0, atol=0)
    assert ours.sigmas.dtype == torch.float32  # the float64 buffer is cast to the model's dtype
    torch.testing.assert_close(ours.sigmas, reference.sigmas.float())


def test_data_parallel_prefix_and_the_inverse_map(pair):
    reference, ours = pair
    wrapped = {"module." + key: value for key, value in reference.state_dict().items()}
    models.load_reference_weights(ours, wrapped)
    back = models.to_reference_state_dict(ours)
    assert list(back) != list(reference.state_dict())  # registration order differs ...
    assert set(back) == set(reference.state_dict())  # ... the names do not
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(back[key], value.to(back[key].dtype))


def test_longest_prefix_wins_and_unmapped_keys_stay():
    ours = NamedTwin()
    keys = ["all_modules.1.1.weight", "all_modules.10.weight", "all_modules.1.0.bias", "sigmas"]
    # "all_modules.1" must not capture "all_modules.10": prefixes match only at a "." boundary
    assert models.from_reference_keys(ours, keys) == ["body.1.weight", "all_modules.10.weight", "body.0.bias", "sigmas"]
    assert models.to_reference_keys(ours, ["body.1.weight", "embed.bias"]) == ["all_modules.1.1.weight", "all_modules.0.bias"]


def test_mismatches_are_listed_before_anything_is_copied(pair):
    reference, ours = pair
    before = {key: value.clone() for key, value in ours.state_dict().items()}
    state = reference.state_dict()
    state.pop("all_modules.2.bias")
    state["all_modules.7.weight"] = torch.zeros(1)
    state["all_modules.1.0.weight"] = torch.zeros(4, 5)
    with pytest.raises(ValueError) as error:
        models.load_reference_weights(ours, state)
    message = str(error.value)
    assert "missing keys (1): all_modules.2.bias" in message
    assert "unexpected keys (1): all_modules.7.weight" in message
    assert "body.0.weight: checkpoint (4, 5) vs model (4, 4)" in message
    for key, value in ours.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)


def _reference_training_run(reference: FlatReference, steps: int = 3):
    """Adam steps and EMA updates on the reference, then a checkpoint dict as the reference saves it."""
    optimizer = torch.optim.Adam(reference.parameters(), lr=1e-2)
    ema = models.ExponentialMovingAverage(reference.parameters(), decay=0.9)
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        optimizer.zero_grad()
        reference(torch.randn(8, 3, generator=generator)).square().mean().backward()
        optimizer.step()
        ema.update(reference.parameters())
    state = optimizer.state_dict()
    state["param_groups"][0]["lr"] = np.float64(state["param_groups"][0]["lr"])  # the reference's numpy lr
    return {
        "model": {"module." + key: value for key, value in reference.state_dict().items()},
        "ema": ema.state_dict(),
        "optimizer": state,
        "step": steps,
    }


def test_training_state_restores_model_ema_and_optimizer(pair):
    reference, ours = pair
    checkpoint = _reference_training_run(reference)
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    buffer.seek(0)

    ema = models.ExponentialMovingAverage(ours.parameters(), decay=0.5)
    optimizer = torch.optim.Adam(ours.parameters(), lr=1.0)
    with torch.serialization.safe_globals(NUMPY_FLOAT64_SAFE_GLOBALS):
        step = models.load_reference_training_state(buffer, ours, ema=ema, optimizer=optimizer)
    assert step == 3
    assert ema.decay == 0.9 and ema.num_updates == 3
    assert type(optimizer.param_groups[0]["lr"]) is float

    # one more identical step on both: same weights after it (Adam moments were reordered correctly)
    reference_optimizer = torch.optim.Adam(reference.parameters(), lr=1.0)
    reference_optimizer.load_state_dict(checkpoint["optimizer"])
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(2))
    for net, opt in ((reference, reference_optimizer), (ours, optimizer)):
        opt.zero_grad()
        net(x).square().mean().backward()
        opt.step()
    torch.testing.assert_close(ours(x), reference(x), rtol=1e-6, atol=1e-7)

    # the EMA weights, copied in, give the reference's EMA network
    reference_ema = models.ExponentialMovingAverage(reference.parameters(), decay=0.9)
    reference_ema.load_state_dict(checkpoint["ema"])
    reference_ema.copy_to(reference.parameters())
    ema.copy_to(ours.parameters())
    torch.testing.assert_close(ours(x), reference(x), rtol=0, atol=0)


def test_training_state_reports_what_is_missing(pair):
    reference, ours = pair
    checkpoint = _reference_training_run(reference, steps=1)
    del checkpoint["ema"]
    with pytest.raises(ValueError, match=r"lacks \['ema'\]"):
        models.load_reference_training_state(checkpoint, ours, ema=models.ExponentialMovingAverage(ours.parameters(), 0.9))
    checkpoint["ema"] = {"decay": 0.9, "num_updates": 1, "shadow_params": [torch.zeros(1)]}
    with pytest.raises(ValueError, match="EMA holds 1 tensors"):
        models.load_reference_training_state(checkpoint, ours, ema=models.ExponentialMovingAverage(ours.parameters(), 0.9))


# ============================================================================ the reference's own training checkpoint


@needs_fixtures
@pytest.mark.parametrize("through", ["models", "train_lib"])
def test_reference_training_checkpoint_gives_the_stored_outputs(through):
    """The NCSN++ checkpoint written by the reference's training loop: raw weights give ``out_model``, the EMA
    weights ``out_ema`` (README criterion), the Adam moments land on the right parameters, and the step is 2."""
    expected = torch.load(CHECKPOINT_EXPECTED, weights_only=True)
    model = models.create_model(fixture_config("ve_ncsnpp_continuous")).eval()
    ema = models.ExponentialMovingAverage(model.parameters(), decay=0.5)
    optimizer = torch.optim.Adam(model.parameters(), lr=1.0)
    if through == "models":
        step = models.load_reference_training_state(CHECKPOINT, model, ema=ema, optimizer=optimizer)
    else:
        state = train_lib.restore_checkpoint(CHECKPOINT, {"model": model, "ema": ema, "optimizer": optimizer, "step": 0})
        step = state["step"]
    assert step == 2 and ema.num_updates == 2 and ema.decay == 0.999
    assert optimizer.param_groups[0]["lr"] == 4e-8 and type(optimizer.param_groups[0]["lr"]) is float

    with torch.no_grad():
        out_model = model(expected["x"], expected["labels"])
        ema.copy_to(model.parameters())
        out_ema = model(expected["x"], expected["labels"])
    assert parity_error(out_model, expected["out_model"]) <= PARITY_TOLERANCE
    assert parity_error(out_ema, expected["out_ema"]) <= PARITY_TOLERANCE
    assert parity_error(out_ema, expected["out_model"]) > 1e-2  # the two weight sets really differ

    # Adam's second moments sit on parameters of the same shape as in the reference's order (a permutation error
    # would put a (C,) moment on a (C, C, 3, 3) weight, or similar)
    raw = models.load_reference_checkpoint(CHECKPOINT)
    reference_names = models.from_reference_keys(model, models.strip_data_parallel_prefix(raw["model"]).keys())
    named = dict(model.named_parameters())
    reference_params = [name for name in reference_names if name in named]
    for index, moments in raw["optimizer"]["state"].items():
        ours = optimizer.state[named[reference_params[index]]]
        torch.testing.assert_close(ours["exp_avg_sq"], moments["exp_avg_sq"], rtol=0, atol=0)
