"""The 1-D score network ``wavegrad`` (:mod:`models.wavegrad`): shapes for several lengths and folds, the zero
output at initialisation, its labels under every SDE / parameterization, every sampler and the likelihood running
on it, the config that trains it, and one-line errors for bad settings; the ``'log_mel'`` condition map
(:mod:`models.mel`) against the mel scale's definition, and a network conditioned on it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import models
from configs import load_config
from jobs.experiment import ConfigError, build_experiment, data_shape
from samplers import adaptive_sde_sample, edm_sample, fast_sample, log_likelihood, ode_sample, pc_sample, sde_sample
from models.mel import hz_to_mel, mel_to_hz
from sde_lib import EDMSDE, VESDE, VPSDE, subVPSDE

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs/vp/tones_wavegrad.py"


def _net(**kwargs) -> models.WaveGradNet:
    torch.manual_seed(0)
    options = dict(residual_channels=8, num_layers=3, dilation_cycle=3, embedding_dim=16)
    options.update(kwargs)
    net = models.WaveGradNet(**options)
    torch.nn.init.normal_(net.output.weight, std=0.1)  # a non-zero output, so that shapes and values are exercised
    return net


@pytest.mark.parametrize("fold", [1, 8])
@pytest.mark.parametrize("length", [16, 37, 100, 2048])
def test_output_has_the_input_shape_for_any_length(fold, length):
    net = _net(fold=fold)
    x = torch.randn(2, 1, length)
    out = net(x, torch.tensor([3.0, 500.0]))
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_fold_is_an_exact_rearrangement_and_samples_stay_local():
    net = _net(fold=8)
    x = torch.randn(3, 1, 37)
    assert torch.equal(net._unfold(net._fold(x), 37), x)
    assert net._fold(x).shape == (3, 8, 5)
    # with one layer of dilation 1 on frames of 8 samples, sample 0 cannot see beyond frame 1 (samples 0..15)
    one = _net(fold=8, num_layers=1)
    y = torch.randn(1, 1, 64)
    moved = y.clone()
    moved[..., 16:] += 1.0
    labels = torch.tensor([10.0])
    assert torch.equal(one(y, labels)[..., :8], one(moved, labels)[..., :8])


def test_untrained_network_outputs_zero():
    """The last convolution starts at zero (DiffWave): the untrained noise prediction is 0 for every input."""
    net = models.WaveGradNet(residual_channels=8, num_layers=2)
    assert torch.equal(net(torch.randn(2, 1, 50), torch.tensor([1.0, 900.0])), torch.zeros(2, 1, 50))


@pytest.mark.parametrize("sde, parameterization, options", [
    (VPSDE(), "noise", {}),
    (subVPSDE(), "noise", {}),
    (VPSDE(), "ddpm", {}),
    (VESDE(), "score", {"embedding_type": "fourier", "scale_by_sigma": True}),
    (VESDE(), "score", {}),
    (EDMSDE(), "edm", {"embedding_type": "fourier"}),
    (VPSDE(), "edm", {}),
])
def test_every_sde_and_parameterization_gives_a_finite_score(sde, parameterization, options):
    model = models.ScoreModel(_net(**options), sde, parameterization)
    x = torch.randn(3, 1, 40)
    score = model.score(x, torch.tensor([0.01, 0.5, 1.0]) * sde.T)
    assert score.shape == x.shape and torch.isfinite(score).all()


def test_fourier_embedding_takes_noise_scales_only():
    with pytest.raises(ValueError, match="takes sigma labels"):
        models.ScoreModel(_net(embedding_type="fourier"), VPSDE(), "noise")


def test_every_sampler_and_the_likelihood_run_on_it():
    """Each sampler on an untrained network: the shape, finiteness and the evaluation count each promises."""
    net = _net(fold=4)
    sde = VPSDE(beta_max=5.0, N=5)  # N >= beta_max: the N-step discretization is defined
    score_fn = models.ScoreModel(net, sde).score_fn()
    shape = (2, 1, 24)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    runs = {
        "pc": pc_sample(sde, score_fn, shape, corrector="langevin", generator=g()),
        "ode": ode_sample(sde, score_fn, shape, method="dopri5", rtol=1e-2, atol=1e-2, generator=g()),
        "fast": fast_sample(sde, score_fn, shape, nfe=6, generator=g()),
        "sde": sde_sample(sde, score_fn, shape, dt=0.25, generator=g()),
        "adaptive": adaptive_sde_sample(sde, score_fn, shape, rtol=0.5, generator=g()),
        "edm": edm_sample(sde, score_fn, shape, steps=3, generator=g()),
    }
    for name, (x, nfe) in runs.items():
        assert x.shape == shape and torch.isfinite(x).all() and nfe > 0, name
    assert runs["pc"][1] == 2 * sde.N and runs["fast"][1] == 6 and runs["edm"][1] == 5
    logp, z, nfe = log_likelihood(sde, score_fn, torch.randn(1, 1, 16), rtol=0.1, atol=0.1, generator=g())
    assert logp.shape == (1,) and torch.isfinite(logp).all() and z.shape == (1, 1, 16)


def test_config_builds_the_network_and_the_waveform_shape(tmp_path):
    config = load_config(CONFIG)
    assert data_shape(config) == (1, config.data.audio_length)
    net = models.create_model(config)
    assert isinstance(net, models.WaveGradNet) and net.fold == config.model.fold
    with config.unlocked():
        config.data.num_train, config.data.num_test = 40, 8
    exp = build_experiment(config, tmp_path, "train")
    assert exp.data_shape == (1, 2048) and exp.train_ds.shape == (1, 2048) and exp.test_ds.labels is not None
    batch = exp.train_ds.gather(torch.arange(4))
    assert torch.equal(exp.scaler(batch), batch), "waveforms enter the model as they are"


@pytest.mark.parametrize("field, value, message", [
    ("model.embedding_type", "learned", r"embedding_type must be one of"),
    ("data.num_channels", 2, r"config\.data\.num_channels must be 1"),
    ("data.audio_length", 8, r"config\.data\.audio_length must be an integer >= 16"),
    ("data.audio_length", 100, r"config\.data\.audio_length=100 is shorter than the 256-sample frames"),
    ("data.centered", True, r"config\.data\.centered must be False"),
    ("model.fold", 0, r"fold must be"),
])
def test_bad_settings_are_one_line_config_errors(tmp_path, field, value, message):
    config = load_config(CONFIG)
    section, name = field.split(".")
    with config.unlocked():
        config[section][name] = value
        config.data.num_train, config.data.num_test = 40, 8
    with pytest.raises(ConfigError, match=message) as error:
        build_experiment(config, tmp_path, "train")
    assert "\n" not in str(error.value)


# ------------------------------------------------------------------ log-mel conditioning (models.mel)
def test_mel_filterbank_is_triangular_on_the_mel_scale():
    filters = models.mel_filterbank(20, 256, 8000)
    assert filters.shape == (20, 129) and float(filters.min()) == 0.0 and float(filters.max()) <= 1.0
    centres = mel_to_hz(torch.linspace(0.0, float(hz_to_mel(4000.0)), 22))[1:-1]
    bins = torch.arange(129, dtype=torch.float64) * 8000 / 256
    for i in range(20):  # each filter's support is (centre i - 1, centre i + 1), its peak at the bin nearest centre i
        support = bins[filters[i] > 0]
        low = 0.0 if i == 0 else float(centres[i - 1])
        high = 4000.0 if i == 19 else float(centres[i + 1])
        assert float(support.min()) > low - 1e-9 and float(support.max()) < high + 1e-9
        assert abs(float(bins[filters[i].argmax()]) - float(centres[i])) <= 8000 / 256


def test_log_mel_of_a_sine_peaks_at_its_filter_and_shapes_follow_the_hop():
    mel = models.LogMel(sample_rate=8000, n_mels=40, n_fft=256, hop=64)
    assert mel.signal_shape((1, 2048)) == (40, 33)
    t = torch.arange(2048, dtype=torch.float64) / 8000
    sine = (0.5 * torch.sin(2 * torch.pi * 1000.0 * t))[None, None]
    spectrogram = mel(sine)
    assert spectrogram.shape == (1, 40, 33) and spectrogram.dtype == torch.float64
    centres = mel_to_hz(torch.linspace(0.0, float(hz_to_mel(4000.0)), 42))[1:-1]
    assert int(spectrogram[0, :, 16].argmax()) == int((centres - 1000.0).abs().argmin())
    for shape in [(2, 2048), (1, 100), (1, 8, 8)]:
        with pytest.raises(ValueError, match="'log_mel' condition needs mono waveforms"):
            mel.signal_shape(shape)


def test_spectral_convergence_exact_values():
    x = torch.randn(3, 1, 512, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert torch.equal(models.spectral_convergence(x, x), torch.zeros(3, dtype=torch.float64))
    assert torch.allclose(models.spectral_convergence(2 * x, x), torch.ones(3, dtype=torch.float64), rtol=1e-12)


def test_mel_conditioned_network_trains_and_samples_given_spectrograms(tmp_path):
    config = load_config(ROOT / "configs/vp/tones_wavegrad_mel.py")
    with config.unlocked():
        config.data.num_train, config.data.num_test, config.training.batch_size = 16, 4, 4
        config.model.nf, config.model.num_layers = 8, 2
    exp = build_experiment(config, tmp_path, "train")
    net = exp.model
    assert isinstance(models.condition_map_of(net), models.LogMel)
    assert not any("filters" in key or "window" in key for key in net.state_dict()), "the map holds no state"
    batch = exp.train_ds.gather(torch.arange(4))
    loss = exp.train_step_fn(exp.state, batch, torch.Generator().manual_seed(0))  # the loss derives c from x0
    assert torch.isfinite(torch.as_tensor(loss))
    signal = net.condition_map(batch)
    x, nfe = fast_sample(exp.sde, models.ScoreModel(net, exp.sde).score_fn(y=signal), tuple(batch.shape), nfe=4,
                         generator=torch.Generator().manual_seed(0))
    assert x.shape == batch.shape and nfe == 4 and torch.isfinite(x).all()
    with pytest.raises(ValueError, match="c: the 'log_mel' signal must have shape"):
        net(batch, torch.ones(4), signal[:, :, :5])
