"""EDM's EMA by a half-life in images (``models.ema.halflife_decay``) and a per-step decay in ``ExponentialMovingAverage.update``."""

from __future__ import annotations

import math

import pytest
import torch

from models.ema import ExponentialMovingAverage, halflife_decay


@pytest.mark.parametrize(
    "batch_size,images_seen,halflife,rampup,expected_halflife",
    [
        (512, 10_000_000, 500_000, 0.05, 500_000),  # past the ramp-up: the half-life itself
        (512, 1_000_000, 500_000, 0.05, 50_000),  # ramp-up: 5 % of the images seen
        (128, 10_000, 500_000, 0.05, 500),
        (128, 10_000, 500_000, None, 500_000),  # no ramp-up
        (64, 10_000_000, 500_000, 0.2, 500_000),
        (64, 2_000_000, 500_000, 0.2, 400_000),
    ],
)
def test_decay_is_the_formula(batch_size, images_seen, halflife, rampup, expected_halflife):
    """``0.5 ** (batch_size / min(halflife, rampup * images_seen))``."""
    decay = halflife_decay(batch_size, images_seen, halflife, rampup)
    assert decay == 0.5 ** (batch_size / expected_halflife)
    assert math.isclose(decay ** (expected_halflife / batch_size), 0.5, rel_tol=1e-12)  # the half-life, in steps


def test_ramp_up_starts_from_the_weights_and_grows_to_the_half_life():
    """At 0 images seen the decay is 0 (the average is the weights); it grows with the images seen while the
    ramp-up half-life ``0.05 * images_seen`` is below ``halflife_images``, then stays."""
    assert halflife_decay(256, 0, 500_000) == 0.0
    seen = [0, 1_000, 100_000, 1_000_000, 9_999_999, 10_000_000, 20_000_000, 50_000_000]
    decays = [halflife_decay(256, n, 500_000) for n in seen]
    assert all(a < b for a, b in zip(decays[:5], decays[1:6]))
    assert decays[5] == decays[6] == decays[7] == halflife_decay(256, 0, 500_000, rampup_ratio=None)


@pytest.mark.parametrize("rampup", [None, 0.05])
def test_half_life_meaning(rampup):
    """With the model frozen at ``theta`` after the average was started at ``s0``, ``halflife / batch_size`` updates
    leave the old weights a share of exactly 1/2: ``s = (s0 + theta) / 2`` (past the ramp-up, or without one)."""
    batch, halflife = 100, 2_000
    start = torch.tensor([4.0, -2.0, 1.0], dtype=torch.float64)
    param = torch.nn.Parameter(start.clone())
    ema = ExponentialMovingAverage([param], decay=0.999)
    with torch.no_grad():
        param.fill_(0.5)  # frozen from here on
    images_seen = 1_000_000  # 0.05 * images_seen is far above the half-life: the ramp-up does not bind
    for _ in range(halflife // batch):
        ema.update([param], decay=halflife_decay(batch, images_seen, halflife, rampup))
        images_seen += batch
    torch.testing.assert_close(ema.shadow_params[0], 0.5 * (start + 0.5), rtol=1e-12, atol=1e-12)


def test_update_with_a_decay_overrides_this_step_only_and_keeps_the_format():
    param = torch.nn.Parameter(torch.tensor([1.0, 2.0], dtype=torch.float64))
    ema = ExponentialMovingAverage([param], decay=0.9999, use_num_updates=True)
    with torch.no_grad():
        param.mul_(3.0)
    ema.update([param], decay=0.25)
    torch.testing.assert_close(ema.shadow_params[0], 0.25 * torch.tensor([1.0, 2.0], dtype=torch.float64) + 0.75 * param.detach())
    state = ema.state_dict()
    assert set(state) == {"decay", "num_updates", "shadow_params"} and state["decay"] == 0.9999 and state["num_updates"] == 1
    before = ema.shadow_params[0].clone()
    ema.update([param])  # the stored rule again: d_2 = min(0.9999, 3 / 12)
    torch.testing.assert_close(ema.shadow_params[0], 0.25 * before + 0.75 * param.detach())
    with pytest.raises(ValueError, match="decay must lie in"):
        ema.update([param], decay=1.5)
    assert ema.num_updates == 2  # the refused update changed nothing


@pytest.mark.parametrize(
    "args,match",
    [
        ((0, 10, 100.0), "batch_size"), ((2.5, 10, 100.0), "batch_size"), ((True, 10, 100.0), "batch_size"),
        ((8, -1, 100.0), "images_seen"), ((8, float("nan"), 100.0), "images_seen"), ((8, float("inf"), 100.0), "images_seen"),
        ((8, 10, 0.0), "halflife_images"), ((8, 10, -5.0), "halflife_images"), ((8, 10, float("inf")), "halflife_images"),
        ((8, 10, 100.0, 0.0), "rampup_ratio"), ((8, 10, 100.0, -0.05), "rampup_ratio"),
    ],
)
def test_bad_arguments_are_one_line_value_errors(args, match):
    with pytest.raises(ValueError, match=match) as info:
        halflife_decay(*args)
    assert "\n" not in str(info.value)


def per_parameter_rule(shadows: list[torch.Tensor], params: list[torch.Tensor], decay: float) -> list[torch.Tensor]:
    """The reference's update, one parameter at a time: ``s - (1 - d)(s - theta)``."""
    return [s - (1.0 - decay) * (s - p.detach()) for s, p in zip(shadows, params)]


@pytest.mark.parametrize("use_num_updates", [True, False])
@pytest.mark.parametrize("halflife", [None, 2_000.0])
def test_one_foreach_update_is_the_per_parameter_rule(use_num_updates, halflife):
    """Ten updates of parameters of two dtypes (float32, float64) and shapes, one of them frozen (not averaged),
    with the warm-up decay ``min(decay, (1 + k) / (10 + k))``, the fixed decay, or EDM's half-life decay per step:
    the shadow weights equal the per-parameter rule to float rounding, and the state keeps its format."""
    generator = torch.Generator().manual_seed(0)
    params = [
        torch.nn.Parameter(torch.randn(4, 3, generator=generator)),
        torch.nn.Parameter(torch.randn(5, generator=generator, dtype=torch.float64)),
        torch.nn.Parameter(torch.randn(2, generator=generator), requires_grad=False),
        torch.nn.Parameter(torch.randn(2, 2, 3, generator=generator)),
    ]
    ema = ExponentialMovingAverage(params, decay=0.9, use_num_updates=use_num_updates)
    trainable = [p for p in params if p.requires_grad]
    expected = [p.detach().clone() for p in trainable]
    for k in range(1, 11):
        with torch.no_grad():
            for p in params:
                p.add_(torch.randn(p.shape, generator=generator, dtype=p.dtype))
        if halflife is not None:
            decay = halflife_decay(64, 64 * (k - 1), halflife)
            ema.update(params, decay=decay)
        else:
            decay = min(0.9, (1 + k) / (10 + k)) if use_num_updates else 0.9
            ema.update(params)
        expected = per_parameter_rule(expected, trainable, decay)
        for shadow, want in zip(ema.shadow_params, expected):
            assert shadow.dtype == want.dtype
            torch.testing.assert_close(shadow, want, rtol=1e-6 if want.dtype == torch.float32 else 1e-14, atol=1e-7)
    state = ema.state_dict()
    assert set(state) == {"decay", "num_updates", "shadow_params"} and len(state["shadow_params"]) == 3
    assert state["num_updates"] == (10 if use_num_updates else None)


def test_copy_to_store_restore_round_trip():
    """``store``, ``copy_to`` (the averaged weights into the trainable parameters only), ``restore`` (all back)."""
    generator = torch.Generator().manual_seed(1)
    params = [torch.nn.Parameter(torch.randn(3, generator=generator)),
              torch.nn.Parameter(torch.randn(2, generator=generator), requires_grad=False)]
    ema = ExponentialMovingAverage(params, decay=0.5, use_num_updates=False)
    with torch.no_grad():
        params[0].add_(1.0)
    ema.update(params)
    before = [p.detach().clone() for p in params]
    ema.store(params)
    ema.copy_to(params)
    torch.testing.assert_close(params[0].detach(), before[0] - 0.5)
    assert torch.equal(params[1], before[1])
    ema.restore(params)
    assert all(torch.equal(p, b) for p, b in zip(params, before))
    empty = ExponentialMovingAverage([params[1]], decay=0.5)  # nothing trainable: nothing to average or copy
    empty.update([params[1]])
    empty.copy_to([params[1]])
