"""Every invalid argument of sde_lib raises ValueError with a message that names the parameter."""

import ml_collections
import pytest
import torch

import sde_lib

ALL_SDES = [
    lambda: sde_lib.VPSDE(),
    lambda: sde_lib.VPSDE(schedule="cosine"),
    lambda: sde_lib.subVPSDE(),
    lambda: sde_lib.VESDE(),
    lambda: sde_lib.VESDE(exact_marginal=True),
]
SDE_IDS = ["vp", "vp_cosine", "subvp", "ve", "ve_exact"]


@pytest.mark.parametrize("cls", [sde_lib.VPSDE, sde_lib.subVPSDE])
@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(beta_min=-0.1), "beta_min"),
        (dict(beta_max=-1.0), "beta_max"),
        (dict(beta_max=0.0), "beta_max"),
        (dict(beta_min=5.0, beta_max=1.0), "beta_min must be <= beta_max"),
        (dict(beta_min=float("nan")), "beta_min"),
        (dict(beta_max=float("inf")), "beta_max"),
        (dict(N=0), "N must be an integer"),
        (dict(N=-3), "N must be an integer"),
        (dict(N=2.5), "N must be an integer"),
        (dict(N=1000.0), "N must be an integer"),
        (dict(N=True), "N must be an integer"),
        (dict(N="1000"), "N must be an integer"),
        (dict(schedule="quadratic"), "schedule must be one of"),
        (dict(schedule="cosine", T=1.0), "T must be < 1"),
        (dict(schedule="cosine", T=1.5), "T must be < 1"),
        (dict(schedule="cosine", T=0.0), "T must be"),
        (dict(schedule="cosine", cosine_s=0.0), "cosine_s"),
        (dict(schedule="cosine", cosine_s=-0.01), "cosine_s"),
        (dict(T=-1.0), "T must be"),
    ],
)
def test_vp_family_constructor_errors(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(sigma_min=-0.01), "sigma_min"),
        (dict(sigma_min=0.0), "sigma_min"),
        (dict(sigma_max=-50.0), "sigma_max"),
        (dict(sigma_min=50.0, sigma_max=0.01), "sigma_min must be < sigma_max"),
        (dict(sigma_min=1.0, sigma_max=1.0), "sigma_min must be < sigma_max"),
        (dict(sigma_max=float("inf")), "sigma_max"),
        (dict(N=0), "N must be an integer"),
        (dict(N=10.5), "N must be an integer"),
    ],
)
def test_ve_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sde_lib.VESDE(**kwargs)


def test_schedule_error_lists_the_known_schedules():
    with pytest.raises(ValueError, match=r"schedule must be one of \('linear', 'cosine'\), got 'quadratic'"):
        sde_lib.VPSDE(schedule="quadratic")


def test_get_sde_unknown_name_lists_the_known_ones():
    config = ml_collections.ConfigDict({"training": {"sde": "rectified_flow"}, "model": {}})
    with pytest.raises(ValueError, match=r"config.training.sde='rectified_flow'.*known: .*edm.*subvpsde.*vesde.*vpsde"):
        sde_lib.get_sde(config)


@pytest.mark.parametrize("make", ALL_SDES, ids=SDE_IDS)
@pytest.mark.parametrize(
    "t,match",
    [
        (torch.full((3,), 0.5), r"t must have shape \(4,\)"),  # fewer times than batch elements
        (torch.full((4, 1), 0.5), r"t must have shape \(4,\)"),  # (B, 1) instead of (B,)
        (torch.full((2, 2), 0.5), r"t must have shape \(4,\)"),
        (torch.tensor([0.1, 0.2, -1e-3, 0.3]), r"t must lie in \[0, T\]"),
        (torch.tensor([0.1, 0.2, 1.5, 0.3]), r"t must lie in \[0, T\]"),
        (torch.tensor([0.1, float("nan"), 0.2, 0.3]), r"t must lie in \[0, T\]"),
    ],
)
def test_time_validation_in_every_method(make, t, match):
    """sde, marginal_prob, discretize and the reverse SDE/ODE all check t against the batch and [0, T]."""
    sde = make()
    x = torch.zeros(4, 2)
    reverse = sde.reverse(lambda x, t: -x)
    methods = [sde.sde, sde.marginal_prob, sde.discretize, reverse.sde, reverse.discretize]
    for method in methods:
        with pytest.raises(ValueError, match=match):
            method(x, t)


def test_time_just_above_T_is_rejected_for_cosine():
    sde = sde_lib.VPSDE(schedule="cosine")
    with pytest.raises(ValueError, match=r"t must lie in \[0, T\] = \[0, 0.9946\]"):
        sde.marginal_prob(torch.zeros(1, 2), torch.tensor([0.995]))


@pytest.mark.parametrize("make", ALL_SDES, ids=SDE_IDS)
def test_reverse_rejects_bad_score_fn(make):
    sde = make()
    x, t = torch.zeros(4, 2), torch.full((4,), 0.5)
    with pytest.raises(ValueError, match="score_fn must be callable"):
        sde.reverse(None)
    for probability_flow in (False, True):
        for wrong in (lambda x, t: x[:, :1], lambda x, t: x.flatten(), lambda x, t: x[None]):
            reverse = sde.reverse(wrong, probability_flow=probability_flow)
            with pytest.raises(ValueError, match=r"score_fn returned shape .* expected the shape of x \(4, 2\)"):
                reverse.sde(x, t)
            with pytest.raises(ValueError, match=r"score_fn returned shape"):
                reverse.discretize(x, t)


@pytest.mark.parametrize("make", ALL_SDES, ids=SDE_IDS)
def test_prior_argument_errors(make):
    sde = make()
    for shape in [(), (0, 2), (3, -1), (2.5, 2)]:
        with pytest.raises(ValueError, match="shape must be"):
            sde.prior_sampling(shape)
    with pytest.raises(ValueError, match="z must be a tensor"):
        sde.prior_logp(torch.tensor(1.0))
    with pytest.raises(ValueError, match="x must be a tensor"):
        sde.marginal_prob(torch.tensor(1.0), torch.tensor(0.5))


@pytest.fixture
def range_checks(monkeypatch):
    """Each time an SDE looks whether a time tensor was range-checked already: ``True`` when it then checks it on the
    device (a host sync on a GPU), ``False`` when it skips that."""
    checks = []
    original = sde_lib.SDE._already_in_range

    def spy(self, t):
        seen = original(self, t)
        checks.append(not seen)
        return seen

    monkeypatch.setattr(sde_lib.SDE, "_already_in_range", spy)
    return checks


def test_range_check_runs_once_per_time_tensor_and_sees_in_place_changes(range_checks):
    """One reverse step validates the same ``t`` three times (forward SDE, reverse drift, score function); its
    range check (a host sync on a GPU) must run once, yet a ``t`` changed in place must be checked again."""
    sde = sde_lib.VPSDE()
    x = torch.randn(4, 2)
    t = torch.full((4,), 0.5)
    reverse = sde.reverse(lambda x, t: -x / sde.marginal_prob(x, t)[1][:, None])
    reverse.sde(x, t)
    assert sum(range_checks) == 1 and len(range_checks) >= 3
    t.add_(1.0)  # now 1.5 > T, same object: the version counter changed, so it is checked again
    with pytest.raises(ValueError, match=r"t must lie in \[0, T\]"):
        reverse.sde(x, t)
    with pytest.raises(ValueError, match=r"t must lie in \[0, T\]"):
        sde.sde(x, torch.full((4,), -0.1))


@pytest.mark.parametrize("importance_weighting", [False, True])
def test_training_loss_runs_no_range_check(range_checks, importance_weighting):
    """The loss draws its times in ``[eps, T]`` itself: no range check (a host sync per step on a GPU) runs, while
    a bad ``eps`` is still refused before any draw."""
    from train_lib.losses import get_sde_loss_fn, uniform_times

    sde = sde_lib.VPSDE()

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(3, 3)

        def forward(self, x, labels):
            return self.linear(x) * labels[:, None]

    loss_fn = get_sde_loss_fn(sde, train=True, likelihood_weighting=importance_weighting,
                              importance_weighting=importance_weighting, parameterization="noise")
    loss = loss_fn(Net(), torch.randn(8, 3), torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and len(range_checks) >= 1 and not any(range_checks)
    with pytest.raises(ValueError, match=r"eps must lie in \[0, T\)"):
        uniform_times(sde, torch.zeros(2, 3), 1.5, None)


@pytest.mark.parametrize("sampler", ["dpm_solver", "heun", "pc", "edm"])
def test_samplers_check_their_step_times_on_the_host(range_checks, sampler):
    """A sampler's per-step times carry their host value (``sde_lib.time_batch``): the SDE checks their range on the
    host, never on the device (a sync per evaluation on a GPU); a time out of range is still refused, and one
    changed in place is checked on the device again."""
    from samplers import edm_sample, fast_sample, pc_sample

    sde = sde_lib.VPSDE(N=50)
    score = lambda x, t: -x / sde.marginal_prob(x, t)[1][:, None] ** 2  # noqa: E731  (reads the SDE at t)
    gen = torch.Generator().manual_seed(0)
    if sampler == "pc":
        x, _ = pc_sample(sde, score, (4, 2), generator=gen)
    elif sampler == "edm":
        x, _ = edm_sample(sde, score, (4, 2), steps=5, S_churn=1.0, generator=gen)
    else:
        x, _ = fast_sample(sde, score, (4, 2), nfe=6, method=sampler, generator=gen)
    assert torch.isfinite(x).all() and range_checks == []  # not even looked up: checked on the host
    times = sde_lib.time_batch(1.5, 4, x)
    with pytest.raises(ValueError, match=r"t must lie in \[0, T\] = \[0, 1.0\], got 1.5"):
        sde.marginal_prob(x, times)
    times = sde_lib.time_batch(0.5, 4, x)
    times.add_(1.0)
    with pytest.raises(ValueError, match=r"t must lie in \[0, T\]"):
        sde.marginal_prob(x, times)
    assert range_checks == [True]


def test_sdes_still_copy_and_pickle_after_a_check():
    import copy
    import pickle

    sde = sde_lib.VESDE()
    sde.sde(torch.zeros(2, 3), torch.full((2,), 0.3))
    for clone in (copy.deepcopy(sde), pickle.loads(pickle.dumps(sde))):
        assert clone.sigma_max == sde.sigma_max and not hasattr(clone, "_last_in_range")


@pytest.mark.parametrize("cls", [sde_lib.VPSDE, sde_lib.subVPSDE])
def test_too_few_vp_steps_are_refused_before_the_tables_turn_nan(cls):
    """DDPM's betas are ``beta(t_i) / N``: with ``N <= beta_max`` the last reaches 1 and ``sqrt(1 - alpha_bar)`` is NaN."""
    sde = cls(N=8)  # the continuous SDE is usable; its 8-step discretization is not
    x, t = torch.zeros(2, 3), torch.full((2,), 0.5)
    assert torch.isfinite(sde.sde(x, t)[1]).all()
    with pytest.raises(ValueError, match=r"N=8 is too few steps for beta_max=20.0: the discrete betas reach 2.5 > 1"):
        sde._table("alphas", x)  # e.g. the Langevin corrector's step size (VP and sub-VP)
    if cls is sde_lib.VPSDE:  # DDPM's discretization (sub-VP's is Euler-Maruyama, which needs no table)
        with pytest.raises(ValueError, match="N=8 is too few steps"):
            sde.discretize(x, t)
    assert torch.isfinite(cls(N=21).discretize(x, t)[1]).all()
