"""One declared config: every field the code reads is declared in every shipped config, overrides are typed and
checked, bad values are refused when the config is built, and the resolved config is recorded with the run.

* The inventory of fields read (``tests/config_reads.py``, from the source with ``ast``) against every config file
  under ``configs/``. Fields that belong to one kind of data, network or job are checked only where they apply
  (:data:`SCOPED`); the networks' own fields are checked by building every config's network
  (``tests/test_reference_configs.py``).
* The overrides the README documents work on every shipped config.
* ``main.py`` turns a bad command line or config into one line on stderr and exit status 2, before any work.
* ``jobs.run_config``: the record in the workdir, resuming only with a matching config, the record as the base of
  the other modes.
"""

from __future__ import annotations

import functools
import re
import subprocess
import sys
import time
from pathlib import Path

import ml_collections
import pytest

import data_lib
from config_reads import all_fields_read
from configs import load_config
from configs.toolkit_fields import declared_fields
from jobs.config_checks import CHECKS, check_config_values, config_errors
from jobs.experiment import ConfigError, build_experiment
from jobs.run_config import (
    apply_overrides,
    differences,
    read_record,
    reconcile_with_record,
    resolve_config,
    split_overrides,
    trajectory_differences,
    write_record,
)

ROOT = Path(__file__).resolve().parents[1]
CONFIG_FILES = sorted(p for p in (ROOT / "configs").rglob("*.py")
                      if not p.name.startswith(("default_", "__")) and p.name != "toolkit_fields.py")
CONFIG_IDS = [str(p.relative_to(ROOT / "configs")) for p in CONFIG_FILES]


def _is_toy(config) -> bool:
    return str(config.data.dataset).lower() in data_lib.TOY_DATASETS


def _is_audio(config) -> bool:
    return str(config.data.dataset).lower() in data_lib.AUDIO_DATASETS


def _labelled(config) -> bool:
    return config.training.get("label_dropout") is not None or "classifier" in config


#: field -> (where it applies, why); every other field read outside models/ must be declared in every config
SCOPED = {
    "classifier": (lambda c: False, "the classifier's sub-config, present only in classifier-guidance configs"),
    "classifier.model.name": (lambda c: "classifier" in c, "read from the classifier's sub-config"),
    "data.dim": (_is_toy, "the dimension of the 2-D toy densities"),
    "data.num_train": (lambda c: False, "toy densities: an optional size of the training split"),
    "data.num_test": (lambda c: False, "toy densities: an optional size of the test split"),
    "data.seed": (lambda c: False, "toy densities: an optional seed of the drawn points"),
    "data.category": (lambda c: str(c.data.dataset).upper() == "LSUN", "the LSUN category"),
    "data.patches_per_image": (lambda c: False, "photo patches: an optional count"),
    "data.photo_downscale": (lambda c: False, "photo patches: an optional factor"),
    "data.num_classes": (_labelled, "the classes of label-conditional networks and classifiers"),
    "data.image_size": (lambda c: not _is_toy(c) and not _is_audio(c), "images only"),
    "data.num_channels": (lambda c: not _is_toy(c), "images only"),
    "data.root": (lambda c: not _is_toy(c), "datasets read from files"),
    "data.random_flip": (lambda c: not _is_toy(c), "images only"),
    "data.uniform_dequantization": (lambda c: not _is_toy(c), "images only"),
    "data.skip_bad_images": (lambda c: not _is_toy(c), "image folders only"),
}


@functools.lru_cache(maxsize=1)
def _fields_read_outside_models() -> frozenset[str]:
    """Fields read outside the networks of ``models/``; the score model (``models/score_model.py``) reads fields of
    every config, so its reads count."""
    found, _ = all_fields_read()
    general = lambda place: not place.startswith("models/") or place.startswith("models/score_model.py")  # noqa: E731
    return frozenset(field for field, places in found.items() if any(general(place) for place in places))


def _has(config: ml_collections.ConfigDict, field: str) -> bool:
    node = config
    for part in field.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            return False
        node = node[part]
    return True


def test_every_config_read_is_resolved_to_a_field_name():
    _, unresolved = all_fields_read()
    assert not unresolved, f"config reads whose field name is not a literal the inventory can follow: {unresolved}"


def test_the_inventory_finds_the_fields_of_every_package():
    fields = _fields_read_outside_models()
    for expected in ("eval.ckpt", "sampling.nfe", "training.n_iters", "optim.beta2", "data.random_flip", "seed"):
        assert expected in fields
    assert all(field in fields for field in declared_fields()), "a declared toolkit field that no code reads"


@pytest.mark.parametrize("path", CONFIG_FILES, ids=CONFIG_IDS)
def test_every_field_the_code_reads_is_declared(path):
    config = load_config(path)
    missing = sorted(field for field in _fields_read_outside_models()
                     if SCOPED.get(field, (lambda c: True,))[0](config) and not _has(config, field))
    assert not missing, f"{path.name} lacks fields the code reads: {missing}"


#: the overrides the README shows, each with the value it must produce
DOCUMENTED_OVERRIDES = [
    ("eval.ckpt", "2", 2), ("sampling.predictor", "reverse_diffusion", "reverse_diffusion"),
    ("sampling.corrector", "langevin", "langevin"), ("sampling.nfe", "10", 10),
    ("eval.likelihood_method", "RK23", "RK23"), ("sampling.method", "ode", "ode"), ("eval.num_samples", "64", 64),
    ("training.n_iters", "5", 5), ("sampling.rtol", "1e-3", 1e-3), ("sampling.classifier_scale", "2", 2.0),
    ("device", "cpu", "cpu"), ("num_threads", "1", 1),
]


@pytest.mark.parametrize("path", CONFIG_FILES, ids=CONFIG_IDS)
def test_documented_overrides_work_on_every_config(path):
    config = apply_overrides(load_config(path), [(field, raw) for field, raw, _ in DOCUMENTED_OVERRIDES])
    for field, _, value in DOCUMENTED_OVERRIDES:
        node = config
        for part in field.split("."):
            node = node[part]
        assert node == value and type(node) is type(value), (field, node)
    assert not config_errors(config), config_errors(config)


def test_shipped_configs_pass_the_value_checks():
    bad = {str(p): config_errors(load_config(p)) for p in CONFIG_FILES}
    assert not {k: v for k, v in bad.items() if v}


def test_overrides_are_parsed_as_the_declared_type():
    config = load_config(ROOT / "configs/vp/toy_mlp_continuous.py")
    out = apply_overrides(config, [("training.snapshot_sampling", "false"), ("optim.lr", "3"), ("eval.ckpt", "None"),
                                   ("sampling.order", "2"), ("sampling.schedule", "logSNR")])
    assert out.training.snapshot_sampling is False and out.optim.lr == 3.0 and isinstance(out.optim.lr, float)
    assert out.eval.ckpt is None and out.sampling.order == 2 and out.sampling.schedule == "logSNR"
    assert config.optim.lr != 3.0, "the original config is not changed"
    for overrides, message in [
        ([("training.n_iter", "5")], "did you mean config.training.n_iters"),
        ([("trainin.n_iters", "5")], "no section config.trainin; did you mean config.training.n_iters"),
        ([("training.n_iters", "2.5")], "expected int"),
        ([("training.snapshot_sampling", "maybe")], "expected bool"),
        ([("training", "1")], "is a section"),
    ]:
        with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
            apply_overrides(config, overrides)


def test_split_overrides_takes_both_spellings():
    rest, overrides = split_overrides(["--workdir=w", "--config.eval.ckpt=2", "--config.sampling.nfe", "10", "--mode=eval"])
    assert rest == ["--workdir=w", "--mode=eval"] and overrides == [("eval.ckpt", "2"), ("sampling.nfe", "10")]


@pytest.mark.parametrize("field, value", [
    ("eval.num_samples", 0), ("sampling.snr", -0.1), ("sampling.n_steps_each", 0), ("eval.bpd_dataset", "foo"),
    ("model.ema_rate", 2.0), ("eval.batch_size", 0), ("optim.lr", -1.0), ("sampling.nfe", 0),
    ("eval.hutchinson_type", "cauchy"), ("sampling.smc_particles", 0),
])
def test_out_of_range_values_are_refused_naming_the_field(field, value):
    config = load_config(ROOT / "configs/vp/toy_mlp_continuous.py")
    section, name = field.split(".")
    with config.unlocked():
        config[section][name] = value
    with pytest.raises(ConfigError, match=rf"^config\.{section}\.{name} must be"):
        check_config_values(config)


def test_every_checked_field_exists_in_the_default_configs():
    config = load_config(ROOT / "configs/vp/cifar10_ddpmpp_continuous.py")
    assert all(_has(config, field) for field in CHECKS), [f for f in CHECKS if not _has(config, f)]


# ------------------------------------------------------------------ the record of a run
def _toy():
    return load_config(ROOT / "configs/vp/toy_mlp_continuous.py")


def test_record_round_trips_every_field_and_type(tmp_path):
    config = load_config(ROOT / "configs/ve/cifar10_ncsnpp_continuous.py")
    write_record(config, tmp_path)
    again = read_record(tmp_path)
    assert differences(config, again) == {}
    assert isinstance(again.model.ch_mult, tuple) and again.sampling.eps is None
    assert apply_overrides(again, [("sampling.eps", "1e-4")]).sampling.eps == 1e-4, "placeholders keep their type"


def test_train_resumes_only_with_the_recorded_trajectory(tmp_path):
    config = _toy()
    assert reconcile_with_record(config, tmp_path) == {}
    assert read_record(tmp_path) is not None
    longer = apply_overrides(config, [("training.n_iters", "99"), ("sampling.method", "ode"),
                                      ("model.compile", "default")])
    assert set(reconcile_with_record(longer, tmp_path)) == {"training.n_iters", "sampling.method", "model.compile"}
    changed = apply_overrides(longer, [("optim.lr", "0.5"), ("model.nf", "64")])
    with pytest.raises(ConfigError, match=r"config\.model\.nf \(128 -> 64\), config\.optim\.lr \(0\.001 -> 0\.5\).*"
                                          r"--allow_config_change=model\.nf,optim\.lr"):
        reconcile_with_record(changed, tmp_path)
    assert read_record(tmp_path).optim.lr == config.optim.lr, "a refused config is not recorded"
    reconcile_with_record(changed, tmp_path, ["optim", "model.nf"])
    assert read_record(tmp_path).optim.lr == 0.5


def test_other_modes_start_from_the_record(tmp_path):
    trained = apply_overrides(_toy(), [("model.nf", "32"), ("training.n_iters", "7")])
    write_record(trained, tmp_path)
    config, notes = resolve_config(None, [("eval.num_samples", "8"), ("model.compile", "default")], tmp_path, "eval")
    assert config.model.nf == 32 and config.eval.num_samples == 8 and config.model.compile == "default" and not notes
    file = str(ROOT / "configs/vp/toy_mlp_continuous.py")
    config, notes = resolve_config(file, [("sampling.method", "ode")], tmp_path, "sample")
    assert config.model.nf == 32 and config.sampling.method == "ode"
    assert notes and "config.model.nf (32 -> 128)" in notes[0]
    with pytest.raises(ConfigError, match=r"--config\.model\.nf changes a field the run .* was trained with"):
        resolve_config(None, [("model.nf", "64")], tmp_path, "eval")
    with pytest.raises(ConfigError, match="--config is required"):
        resolve_config(None, [], tmp_path / "new", "eval")
    assert trajectory_differences(trained, config) == {}


def test_fields_the_record_lacks_come_from_the_file(tmp_path):
    """The README's classifier guidance of the main job: the unconditional run's record has no ``data.num_classes``;
    ``train_classifier`` with the guidance config takes it (and the classifier section) from the file, the
    score model's fields from the record."""
    trained = apply_overrides(load_config(ROOT / "configs/vp/digits_ddpmpp_continuous.py"), [("model.nf", "16")])
    assert "num_classes" not in trained.data
    write_record(trained, tmp_path)
    file = str(ROOT / "configs/vp/digits_ddpmpp_classifier_guidance.py")
    config, notes = resolve_config(file, [], tmp_path, "train_classifier")
    assert config.data.num_classes == 10 and config.model.nf == 16 and config.classifier.model.name == "conv_classifier"
    assert notes and "num_classes" not in notes[0] and "config.model.nf (16 -> 32)" in notes[0]


def test_model_fields_the_record_lacks_keep_the_recorded_network(tmp_path):
    """A VP toy run recorded without ``model.scale_by_sigma`` and ``model.fourier_scale`` (their defaults built it),
    sampled with the VE toy file: the network stays the recorded one, not a hybrid of the two files."""
    trained = _toy()
    with trained.unlocked():
        del trained.model["scale_by_sigma"], trained.model["fourier_scale"]
    write_record(trained, tmp_path)
    config, notes = resolve_config(str(ROOT / "configs/ve/toy_mlp_continuous.py"), [], tmp_path, "sample")
    assert "scale_by_sigma" not in config.model and "fourier_scale" not in config.model
    assert config.model.embedding_type == "positional" and config.training.sde == "vpsde"
    assert notes and "config.training.sde ('vpsde' -> 'vesde')" in notes[0]
    build_experiment(config, tmp_path, "sample")  # builds: the recorded network


def test_a_placeholder_the_record_lacks_keeps_its_type(tmp_path):
    """A run recorded before a field existed: an unset placeholder the file declares (``eval.likelihood_steps``, an
    int) still parses an override as its type, not as text."""
    trained = load_config(ROOT / "configs/vp/digits_ddpmpp_continuous.py")
    with trained.unlocked():
        del trained.eval["likelihood_steps"]
    write_record(trained, tmp_path)
    file = str(ROOT / "configs/vp/digits_ddpmpp_continuous.py")
    config, _ = resolve_config(file, [("eval.likelihood_steps", "24"), ("eval.likelihood_method", "rk4")], tmp_path, "eval")
    assert config.eval.likelihood_steps == 24 and config_errors(config) == []
    config, _ = resolve_config(file, [], tmp_path, "eval")
    assert config.eval.likelihood_steps is None
    assert resolve_config(file, [("eval.likelihood_steps", "24")], tmp_path, "eval")[0].eval.likelihood_steps == 24


# ------------------------------------------------------------------ main.py's front door
BAD_FILES = {
    "syntax.py": ("def get_config(:\n", "has a syntax error at line 1"),
    "no_get_config.py": ("X = 1\n", "defines no get_config()"),
    "returns_dict.py": ("def get_config():\n    return {'a': 1}\n", "must return an ml_collections.ConfigDict, got dict"),
    "raises.py": ("def get_config():\n    raise KeyError('oops')\n", "get_config() of .* fails: KeyError"),
}


def _main(*arguments: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *arguments], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_main_reports_a_bad_command_line_in_one_line_before_any_work(tmp_path):
    for name, (source, _) in BAD_FILES.items():
        (tmp_path / name).write_text(source)
    toy = str(ROOT / "configs/vp/toy_mlp_continuous.py")
    cases = [
        ([f"--config={toy}", "--config.training.n_iter=5"], "did you mean config.training.n_iters?"),
        ([f"--config={toy}", "--config.trainin.n_iters=5"], "no section config.trainin"),
        ([f"--config={tmp_path / 'missing.py'}"], "does not exist"),
        ([f"--config={toy}", "--config.eval.num_samples=0"], "config.eval.num_samples must be an integer >= 1"),
        ([f"--config={toy}", "--mdoe=eval"], "Unknown command line flag 'mdoe'"),
        *[([f"--config={tmp_path / name}"], message) for name, (_, message) in BAD_FILES.items()],
    ]
    for arguments, message in cases:
        start = time.perf_counter()
        done = _main(*arguments, f"--workdir={tmp_path / 'run'}", cwd=tmp_path)
        assert done.returncode == 2, (arguments, done.stderr[-2000:])
        assert done.stderr.count("\n") == 1 and done.stderr.startswith("main.py: error: "), done.stderr[-2000:]
        assert re.search(message.replace("?", r"\?").replace("(", r"\(").replace(")", r"\)"), done.stderr)
        assert time.perf_counter() - start < 60
    assert not (tmp_path / "run").exists(), "nothing is written for a refused command line"


def test_main_reports_a_config_the_job_cannot_build_with_status_2_before_any_work(tmp_path):
    """Mistakes found when the job builds the run (an unknown SDE, a budget the fast sampler cannot start with, a
    batch larger than the data) and flags of another mode: one line, status 2, no checkpoint and no record."""
    toy = str(ROOT / "configs/vp/toy_mlp_continuous.py")
    cases = [
        (["--config.training.sde=foo"], "config.training.sde='foo' is not a known SDE"),
        (["--config.sampling.method=fast", "--config.sampling.nfe=1"], r"config.sampling.nfe is too small .* >= 2"),
        (["--config.training.batch_size=200000"], r"config.training.batch_size=200000 is more than the 100000"),
        (["--mask=center"], "--mask applies to --mode inpaint only"),
    ]
    for index, (arguments, message) in enumerate(cases):
        run = tmp_path / f"run{index}"
        done = _main(f"--config={toy}", f"--workdir={run}", "--config.training.n_iters=5", *arguments, cwd=tmp_path)
        assert done.returncode == 2, (arguments, done.stderr[-2000:])
        assert done.stderr.count("\n") == 1 and done.stderr.startswith("main.py: error: "), done.stderr[-2000:]
        assert re.search(message, done.stderr), done.stderr
        assert not (run / "checkpoints").exists() and not (run / "config.json").exists()


def test_main_prints_the_resolved_config(tmp_path):
    done = _main(f"--config={ROOT / 'configs/vp/toy_mlp_continuous.py'}", f"--workdir={tmp_path}",
                 "--config.sampling.nfe=7", "--print_config", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "config.sampling.nfe = 7" in lines and "config.model.name = 'mlp'" in lines
    assert len(lines) == len(set(lines)) > 60
    alone = _main(f"--config={ROOT / 'configs/vp/toy_mlp_continuous.py'}", "--config.sampling.nfe=7", "--print_config",
                  cwd=tmp_path)  # no --workdir: the file and the overrides
    assert alone.returncode == 0 and alone.stdout == done.stdout, alone.stderr
