"""SR3 end to end: the samplers of a signal-conditioned model against the exact conditional law, and the jobs that
sample it for test-split conditions.

Exact answer: Gaussian data ``x0 ~ N(mu, Sigma)`` (``1 x 4 x 4`` images) measured by the 2x2 block means
``b = D x0`` has the Gaussian conditional law ``x0 | b ~ N(m_b, S)`` with ``m_b = mu + K (b - D mu)``,
``S = Sigma - K D Sigma`` and ``K = Sigma D^T (D Sigma D^T)^-1``; under a VP SDE ``x(t) | b ~ N(alpha m_b,
alpha^2 S + std^2 I)``, whose score is exact. A "network" returning that score (in the noise parameterization, read
from the signal ``c = LowResolution(2)(x0)`` it is given) makes every remaining error the sampler's: the samples of
each condition must have mean ``m_b`` and variances ``diag(S)`` within 5 standard errors (``sqrt(S_ii / n)`` for
a mean, ``S_ii sqrt(2 / (n - 1))`` for a variance, ``n`` samples a condition; the end-time bias, ``std(eps)^2 ~
1e-4``, is far below either). Two conditions share each batch, so a sampler that mixed up the rows' signals (e.g.
a torch ODE solver dropping finished rows) would fail.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

import sde_lib
from configs import load_config
from jobs import signal_conditioned
from jobs.experiment import build_experiment
from jobs.run_config import apply_overrides
from models.conditioning import LowResolution

ROOT = Path(__file__).resolve().parents[1]
N_PER_CONDITION = 800
K_SE = 5.0


class ExactConditionalNoise(nn.Module):
    """The exact noise prediction ``-std(t) grad log p_t(x | b)`` of Gaussian data given its block means (module
    docstring), labelled as a continuously trained VP network (``t * 999``) and conditioned like SR3's U-Net."""

    label_kinds = None

    def __init__(self, sde: sde_lib.VPSDE, mu: Tensor, sigma: Tensor):
        super().__init__()
        self.sde = sde
        self.condition_map = LowResolution(2)
        d = mu.numel()
        eye = torch.eye(d, dtype=torch.float64)
        D = self.condition_map.downsample(eye.reshape(d, 1, 4, 4)).reshape(d, -1).T  # (4, 16): b = D x0
        K = sigma @ D.T @ torch.linalg.inv(D @ sigma @ D.T)
        S = sigma - K @ D @ sigma
        S = (S + S.T) / 2
        lam, U = torch.linalg.eigh(S)
        self.register_buffer("mu", mu.reshape(-1))
        self.register_buffer("D", D)
        self.register_buffer("K", K)
        self.register_buffer("lam", lam.clamp_min(0))
        self.register_buffer("U", U)

    def conditional_mean(self, c: Tensor) -> Tensor:
        b = c[..., ::2, ::2].reshape(c.shape[0], -1).double()
        return self.mu + (b - self.D @ self.mu) @ self.K.T

    def forward(self, x: Tensor, labels: Tensor, c: Tensor) -> Tensor:
        t = labels.double() / 999
        alpha, std = self.sde.marginal_coeffs(t)
        r = x.reshape(x.shape[0], -1).double() - alpha[:, None] * self.conditional_mean(c)
        inv = 1.0 / (alpha[:, None] ** 2 * self.lam + std[:, None] ** 2)  # (B, d) eigenvalues of the inverse covariance
        score = -((r @ self.U) * inv) @ self.U.T
        return (-std[:, None] * score).reshape(x.shape).to(x.dtype)


def gaussian_problem():
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(16, 16, generator=generator, dtype=torch.float64)
    sigma = 0.5 * a @ a.T / 16 + 0.05 * torch.eye(16, dtype=torch.float64)
    mu = 0.3 * torch.randn(16, generator=generator, dtype=torch.float64)
    sde = sde_lib.VPSDE(N=200)  # the pc sampler's steps: its discretization bias stays far inside the tolerance
    network = ExactConditionalNoise(sde, mu, sigma)
    # two conditions: the block means of two draws of the data, each given to N_PER_CONDITION samples
    draws = mu + torch.randn(2, 16, generator=generator, dtype=torch.float64) @ torch.linalg.cholesky(sigma).T
    x0 = draws.reshape(2, 1, 4, 4).repeat_interleave(N_PER_CONDITION, dim=0)
    return sde, network, x0


def sampling_config(method: str, **fields):
    config = load_config(ROOT / "configs/vp/digits_sr3_continuous.py")
    overrides = {"sampling.method": method, "sampling.mixed_precision": "no", "data.image_size": 4,
                 "sampling.clip_denoised": False, **fields}  # Gaussian data leave [-1, 1]: no clip
    return apply_overrides(config, [(key, str(value)) for key, value in overrides.items()])


@pytest.mark.parametrize("consistency", [False, True])
@pytest.mark.parametrize("method, fields", [
    ("pc", {"sampling.predictor": "reverse_diffusion", "sampling.corrector": "none"}),
    ("ode", {"sampling.ode_method": "dopri5", "sampling.rtol": 1e-5, "sampling.atol": 1e-5}),
    ("fast", {"sampling.nfe": 30}),
])
def test_conditioned_samplers_follow_the_exact_conditional_law(method, fields, consistency):
    """Also with ``sampling.measurement_consistency``: the exact conditional estimate has the measured block means, so
    the projection must leave the law unchanged."""
    sde, network, x0 = gaussian_problem()
    config = sampling_config(method, **fields, **{"sampling.measurement_consistency": consistency})
    sampling_fn = signal_conditioned.conditioned_sampling_fn(config, sde, network, x0, None, 1e-3)
    x, nfe = sampling_fn(network, generator=torch.Generator().manual_seed(1))
    assert nfe > 0 and x.shape == x0.shape
    S_diag = (network.U**2 * network.lam).sum(dim=1)  # diag(U diag(lam) U^T)
    for group in range(2):
        rows = slice(group * N_PER_CONDITION, (group + 1) * N_PER_CONDITION)
        samples = x[rows].reshape(N_PER_CONDITION, -1).double()
        mean = network.conditional_mean(network.condition_map(x0[rows][:1]))[0]
        mean_se = (S_diag / N_PER_CONDITION).sqrt()
        assert ((samples.mean(0) - mean).abs() <= K_SE * mean_se).all(), (method, group, (samples.mean(0) - mean) / mean_se)
        var_se = S_diag * (2 / (N_PER_CONDITION - 1)) ** 0.5
        assert ((samples.var(0) - S_diag).abs() <= K_SE * var_se + 1e-3).all(), (method, group)


def test_psnr_closed_form():
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.8
    values = signal_conditioned.psnr(x + 0.1, x)  # MSE 0.01: 20 dB
    torch.testing.assert_close(values, torch.full((3,), 20.0, dtype=torch.float64), rtol=0, atol=1e-9)
    assert torch.isinf(signal_conditioned.psnr(x, x)).all()
    mean, stderr = signal_conditioned.mean_and_stderr(torch.tensor([1.0, 2.0, 3.0]))
    assert mean == 2.0 and abs(stderr - 1 / 3**0.5) < 1e-12


def tiny_sr3_config(**fields):
    overrides = {"model.nf": 4, "model.num_scales": 21, "training.batch_size": 2, "eval.batch_size": 3,
                 "eval.num_samples": 5, "sampling.nfe": 3, **fields}
    return apply_overrides(load_config(ROOT / "configs/vp/digits_sr3_continuous.py"),
                           [(key, str(value)) for key, value in overrides.items()])


def test_sample_given_conditions_and_test_split_conditions(tmp_path):
    exp = build_experiment(tiny_sr3_config(), tmp_path, "sample")
    # the conditions of a run are the test split's first examples, in order, cycled
    test = signal_conditioned.test_examples(exp.config, 5)
    assert exp.signal_examples is not None and torch.equal(exp.signal_examples, test)
    x0 = exp.scaler(test[:2])
    x, nfe = signal_conditioned.sample_given_conditions(exp, x0, torch.Generator().manual_seed(0))
    again, _ = signal_conditioned.sample_given_conditions(exp, x0, torch.Generator().manual_seed(0))
    assert x.shape == x0.shape and nfe == 3 and torch.equal(x, again)
    # the configured sampler of the experiment is conditioned on its first batch of test examples
    samples, _ = exp.sampling_fn(exp.model, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (3, 1, 8, 8)


def test_the_sample_job_saves_originals_and_reports_psnr(tmp_path):
    from jobs import sample
    from train_lib import get_optimizer, save_checkpoint

    config = tiny_sr3_config()
    exp = build_experiment(config, tmp_path, "sample")  # an untrained checkpoint: the job's plumbing is tested
    state = {**exp.state, "optimizer": get_optimizer(exp.config, exp.model.parameters())}
    save_checkpoint(tmp_path / "checkpoints" / "checkpoint_1.pth", state)
    report = sample(config, tmp_path)
    folder = tmp_path / "samples" / "step_0"
    assert {"originals.npz", "originals.png", "conditions.png", "samples_0.npz", "samples_1.npz"} <= {
        p.name for p in folder.iterdir()}
    with np.load(folder / "originals.npz") as saved:
        originals, conditions = saved["originals"], saved["conditions"]
    assert originals.shape == conditions.shape == (5, 8, 8, 1)
    # the saved conditions are the 2x2 block means of the originals, repeated (up to 8-bit rounding)
    lowres = originals.astype(np.float64).reshape(5, 4, 2, 4, 2).mean(axis=(2, 4))
    assert np.abs(conditions[:, ::2, ::2, 0] - lowres).max() <= 0.5 + 1e-9
    # the PSNR is that of the saved samples against the saved originals
    samples = np.concatenate([np.load(folder / f"samples_{r}.npz")["samples"] for r in range(2)]).astype(np.float64) / 255
    mse = ((samples - originals / 255.0) ** 2).reshape(5, -1).mean(axis=1)
    expected = 10 * np.log10(1 / mse)
    signal = report["signal"]
    assert signal["count"] == 5 and abs(signal["psnr_mean"] - expected.mean()) < 1e-6


def test_measurement_consistency_keeps_the_block_means_of_an_untrained_network(tmp_path):
    """The last step of noise removal is the projected estimate: its block means are the measured ones (to float32
    round-off), which an untrained network's own samples are far from."""
    x0 = None
    means = {}
    for consistency in (False, True):
        config = tiny_sr3_config(**{"sampling.measurement_consistency": consistency, "sampling.clip_denoised": False,
                                    "sampling.noise_removal": True})
        exp = build_experiment(config, tmp_path / str(consistency), "sample")
        x0 = exp.scaler(signal_conditioned.test_examples(exp.config, 4))
        x, _ = signal_conditioned.sample_given_conditions(exp, x0, torch.Generator().manual_seed(0))
        means[consistency] = (exp.model.condition_map.downsample(x) - exp.model.condition_map.downsample(x0)).abs().max()
    assert means[True] < 1e-5 < 0.01 < means[False]


def test_measurement_consistency_needs_a_measurement(tmp_path):
    from jobs.experiment import ConfigError

    config = apply_overrides(load_config(ROOT / "configs/vp/digits_ddpmpp_continuous.py"),
                             [("model.nf", "4"), ("sampling.measurement_consistency", "True")])
    with pytest.raises(ConfigError, match="config.sampling.measurement_consistency"):
        build_experiment(config, tmp_path, "sample")


def test_fast_tuning_is_refused_for_a_signal_conditioned_network(tmp_path):
    from jobs.experiment import ConfigError

    config = tiny_sr3_config(**{"sampling.method": "fast", "sampling.fast_tuning": True})
    with pytest.raises(ConfigError, match="config.sampling.fast_tuning=True is not available for a signal-conditioned"):
        build_experiment(config, tmp_path / "run", "sample")
    assert not (tmp_path / "run").exists()
