"""Run ``main.py`` with bad command lines and bad configs, and classify what a user sees.

    python benchmarks/bad_invocations.py [--out benchmarks/results/bad_invocations.txt] [--timeout 120]

Each case is one invocation in a fresh folder with the words its error message must contain. Outcomes:

* ``one-line``: stderr is one line ``main.py: error: ...`` that contains the expected words, the exit status is the
  case's (2 for a mistake in the command line or the config, 1 for an error of the job: no checkpoint, a workdir in
  use or not writable), no checkpoint was written (the error came before any training);
* ``status``: such a line, with another exit status than the case's;
* ``unclear``: a one-line error that lacks the expected words (it does not name the problem);
* ``traceback``: a Python traceback, or more than one line on stderr;
* ``silent``: exit status 0: the mistake was accepted;
* ``hang``: still running after ``--timeout`` seconds.

The target is every case ``one-line``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TOY = str(ROOT / "configs/vp/toy_mlp_continuous.py")
DIGITS = str(ROOT / "configs/vp/digits_ddpmpp_continuous.py")
CIFAR = str(ROOT / "configs/vp/cifar10_ddpmpp_continuous.py")
GUIDED_TOY = str(ROOT / "configs/vp/toy_mlp_classifier_guidance.py")

#: config files written into the case's folder: name -> source
BAD_FILES = {
    "syntax.py": "def get_config(:\n",
    "no_get_config.py": "X = 1\n",
    "returns_dict.py": "def get_config():\n    return {'training': {}}\n",
    "returns_none.py": "def get_config():\n    pass\n",
    "raises.py": "def get_config():\n    raise KeyError('oops')\n",
    "bad_import.py": "import not_a_module_anywhere\n\ndef get_config():\n    return None\n",
    "empty.py": "",
    "notes.txt": "this is not a config\n",
    "not_callable.py": "get_config = 3\n",
}


@dataclasses.dataclass
class Case:
    name: str
    arguments: list[str]  # after main.py; {dir} is the case's folder
    expect: str  # a regular expression the one-line message must match
    setup: str = ""  # 'record', 'corrupt_record', 'lock', 'workdir_file'
    status: int = 2  # the exit status: 2 for a mistake in the command line or config, 1 for an error of the job


def cases() -> list[Case]:
    out: list[Case] = []

    def add(name: str, arguments: list[str], expect: str, setup: str = "", status: int = 2) -> None:
        out.append(Case(name, arguments, expect, setup, status))

    toy = [f"--config={TOY}", "--workdir={dir}/run"]
    digits = [f"--config={DIGITS}", "--workdir={dir}/run"]
    # the config file
    add("config path does not exist", ["--config={dir}/missing.py", "--workdir={dir}/run"], "does not exist")
    add("config path is a folder", ["--config={dir}", "--workdir={dir}/run"], "is a folder")
    for name, expect in [("syntax.py", "syntax error at line 1"), ("no_get_config.py", "defines no get_config"),
                         ("returns_dict.py", "must return an ml_collections.ConfigDict, got dict"),
                         ("returns_none.py", "got NoneType"), ("raises.py", "fails: KeyError"),
                         ("bad_import.py", "ModuleNotFoundError"), ("empty.py", "defines no get_config"),
                         ("notes.txt", "not a Python file|syntax error|defines no get_config"),
                         ("not_callable.py", "defines no get_config")]:
        add(f"config file {name}", [f"--config={{dir}}/{name}", "--workdir={dir}/run"], expect)
    # overrides: names and types
    add("override: misspelt field", [*toy, "--config.training.n_iter=5"], "did you mean config.training.n_iters")
    add("override: misspelt section", [*toy, "--config.trainin.n_iters=5"], "no section config.trainin")
    add("override: a section", [*toy, "--config.training=3"], "is a section")
    add("override: int field given text", [*toy, "--config.training.n_iters=abc"], "expected int")
    add("override: int field given 2.5", [*toy, "--config.training.n_iters=2.5"], "expected int")
    add("override: bool field given maybe", [*toy, "--config.training.snapshot_sampling=maybe"], "expected bool")
    add("override: float field given text", [*toy, "--config.optim.lr=fast"], "expected float")
    add("override: no value", [*toy, "--config.training.n_iters"], "--config.training.n_iters")
    add("override: unknown top-level field", [*toy, "--config.sead=3"], "did you mean config.seed")
    # values out of range
    for field, value, expect in [
        ("eval.num_samples", "0", "config.eval.num_samples must be an integer >= 1"),
        ("sampling.snr", "-0.1", "config.sampling.snr must be"),
        ("sampling.n_steps_each", "0", "config.sampling.n_steps_each must be"),
        ("eval.bpd_dataset", "foo", "config.eval.bpd_dataset must be one of"),
        ("model.ema_rate", "2", "config.model.ema_rate must be"),
        ("model.ema_rate", "-0.1", "config.model.ema_rate must be"),
        ("optim.lr", "0", "config.optim.lr must be"),
        ("optim.lr", "-1", "config.optim.lr must be"),
        ("training.batch_size", "0", "config.training.batch_size must be"),
        ("training.batch_size", "-3", "config.training.batch_size must be"),
        ("eval.batch_size", "0", "config.eval.batch_size must be"),
        ("eval.hutchinson_type", "cauchy", "config.eval.hutchinson_type must be one of"),
        ("eval.likelihood_rtol", "0", "config.eval.likelihood_rtol must be"),
        ("training.mixed_precision", "fp8", "config.training.mixed_precision must be one of"),
        ("num_threads", "-1", "config.num_threads must be"),
        ("seed", "-1", "config.seed must be"),
        ("training.n_iters", "0", "config.training.n_iters must be"),
        ("training.snapshot_freq", "0", "config.training.snapshot_freq must be"),
        ("sampling.nfe", "0", "config.sampling.nfe must be"),
        ("sampling.smc_particles", "0", "config.sampling.smc_particles must be"),
        ("sampling.inpainting", "foo", "config.sampling.inpainting must be one of"),
        ("sampling.class_label", "-2", "config.sampling.class_label must be"),
        ("sampling.guidance_scale", "nan", "config.sampling.guidance_scale must be"),
        ("training.label_dropout", "1.5", "config.training.label_dropout must be"),
        ("optim.warmup", "-1", "config.optim.warmup must be"),
        ("optim.beta1", "1", "config.optim.beta1 must be"),
        ("training.eps", "0", "config.training.eps must be"),
        ("sampling.eps", "2", "config.sampling.eps must be"),
        ("model.dropout", "1", "config.model.dropout must be"),
        ("sampling.fast_tuning_points", "1", "config.sampling.fast_tuning_points must be an integer >= 2"),
    ]:
        add(f"value: {field}={value}", [*toy, f"--config.{field}={value}"], re.escape(expect))
    # names resolved against registries, and what the data or the network cannot take
    for field, value, expect in [
        ("model.name", "foo", "foo"), ("training.sde", "foo", "foo"), ("data.dataset", "foo", "config.data.dataset"),
        ("sampling.method", "foo", "config.sampling.method"), ("sampling.predictor", "foo", "config.sampling.predictor"),
        ("sampling.corrector", "foo", "config.sampling.corrector"), ("sampling.ode_method", "foo", "config.sampling.ode_method"),
        ("optim.optimizer", "SGD", "config.optim.optimizer"), ("device", "cuda", "CUDA"), ("device", "foo", "config.device"),
        ("model.noise_schedule", "foo", "config.model.noise_schedule"),
    ]:
        add(f"name: {field}={value}", [*toy, f"--config.{field}={value}"], expect)
    add("image size the network cannot take", [*digits, "--config.data.image_size=7"], "config.model.name.*image_size=7")
    add("channels the data does not have", [*digits, "--config.data.num_channels=3"], "num_channels|channels")
    # combinations the job finds when it builds the run
    for overrides, expect in [
        (["--config.model.beta_min=30"], "config.model: beta_min"),
        (["--config.training.sde=vesde", "--config.model.sigma_min=100", "--config.model.sigma_max=1"],
         "config.model: sigma_min"),
        (["--config.training.sde=subvpsde", "--config.training.continuous=False"], "continuous"),
        (["--config.sampling.clip_denoised=True"], "clip_denoised"),
        (["--config.model.nf=0"], "nf"),
        (["--config.training.importance_weighting=True"], "importance_weighting"),
        (["--config.sampling.method=edm", "--config.sampling.s_min=5", "--config.sampling.s_max=1"],
         "config.sampling .*s_min"),
        (["--config.sampling.method=fast", "--config.sampling.nfe=1"], "config.sampling.nfe"),
        (["--config.training.batch_size=200000"], "config.training.batch_size"),
        (["--config.device=gpu"], "config.device"),
    ]:
        add(f"build: {' '.join(o.removeprefix('--config.') for o in overrides)}", [*toy, *overrides], expect)
    add("superresolution factor the image cannot take", [*digits, "--mode=superresolve",
                                                         "--config.sampling.superresolution_factor=3"], "factor")
    add("CIFAR-10 without data.root", [f"--config={CIFAR}", "--workdir={dir}/run", "--config.training.batch_size=4"],
        "config.data.root")
    add("CIFAR-10 with a missing data.root", [f"--config={CIFAR}", "--workdir={dir}/run", "--config.data.root={dir}/none",
                                             "--config.training.batch_size=4"], "none")
    # flags
    add("misspelt flag", [*toy, "--mdoe=eval"], "Unknown command line flag 'mdoe'")
    add("unknown mode", [*toy, "--mode=fit"], "mode")
    add("unknown mask", [*digits, "--mode=inpaint", "--mask=circle"], "mask")
    add("--mask outside inpaint", [*toy, "--mask=center"], "--mask applies to --mode inpaint")
    add("--allow_config_change outside train", [*toy, "--mode=sample", "--allow_config_change=optim.lr"],
        "--allow_config_change applies to --mode train")
    add("no --workdir", [f"--config={TOY}"], "--workdir is required")
    add("no --config on a new workdir", ["--workdir={dir}/run"], "--config is required")
    add("positional argument", [*toy, "extra"], "unexpected arguments")
    add("workdir is a file", [f"--config={TOY}", "--workdir={dir}/file", "--config.training.n_iters=2"],
        "exists and is not a folder", setup="workdir_file")
    # jobs on a workdir without what they need
    add("eval without checkpoints", [*toy, "--mode=eval"], "no checkpoint", status=1)
    add("sample without checkpoints", [*toy, "--mode=sample"], "checkpoint", status=1)
    add("guidance of an unconditional network", [*toy, "--mode=sample", "--config.sampling.guidance_scale=3"],
        "network is unconditional")
    add("classifier guidance before train_classifier", [f"--config={GUIDED_TOY}", "--workdir={dir}/run", "--mode=sample"],
        "no classifier checkpoint", status=1)
    add("colorize on grey digits", [*digits, "--mode=colorize"], "colorize needs RGB")
    add("train on a workdir recorded with another network", [*toy, "--config.model.nf=64"],
        r"config\.model\.nf.*--allow_config_change", setup="record")
    add("eval overriding a recorded trajectory field", [*toy, "--mode=eval", "--config.model.nf=64"],
        "was trained with", setup="record")
    add("corrupt recorded config", [*toy, "--mode=eval"], "config.json", setup="corrupt_record")
    add("workdir in use", [*toy, "--config.training.n_iters=2"], "in use|busy|locked|held", setup="lock", status=1)
    return out


@dataclasses.dataclass
class Outcome:
    case: Case
    kind: str
    seconds: float
    message: str


def _prepare(case: Case, folder: Path):
    for name, source in BAD_FILES.items():
        (folder / name).write_text(source)
    holder = None
    if case.setup == "workdir_file":
        (folder / "file").write_text("not a folder\n")
    elif case.setup in ("record", "corrupt_record"):
        from configs import load_config
        from jobs.run_config import write_record

        (folder / "run").mkdir()
        write_record(load_config(TOY), folder / "run")
        if case.setup == "corrupt_record":
            (folder / "run" / "config.json").write_text("{not json")
    elif case.setup == "lock":
        code = ("import sys, time; sys.path.insert(0, %r); from jobs.workdir import workdir_lock\n"
                "with workdir_lock(sys.argv[1], 'train'):\n    print('held', flush=True); time.sleep(600)\n" % str(ROOT))
        holder = subprocess.Popen([sys.executable, "-c", code, str(folder / "run")], stdout=subprocess.PIPE, text=True)
        holder.stdout.readline()
    return holder


def run_case(case: Case, timeout: float) -> Outcome:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        holder = _prepare(case, folder)
        arguments = [a.replace("{dir}", str(folder)) for a in case.arguments]
        start = time.perf_counter()
        try:
            done = subprocess.run([sys.executable, str(ROOT / "main.py"), *arguments], cwd=folder, capture_output=True,
                                  text=True, timeout=timeout, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        except subprocess.TimeoutExpired:
            return Outcome(case, "hang", time.perf_counter() - start, "")
        finally:
            if holder is not None:
                holder.kill()
                holder.wait()
        seconds = time.perf_counter() - start
        stderr = done.stderr.strip()
        trained = any((folder / "run").glob("checkpoints*/*.pth"))
        if done.returncode == 0:
            kind = "silent"
        elif "Traceback" in stderr or stderr.count("\n") > 0 or not stderr.startswith("main.py: error: "):
            kind = "traceback"
        elif trained or not re.search(case.expect, stderr):
            kind = "unclear"
        elif done.returncode != case.status:
            kind = "status"
        else:
            kind = "one-line"
        return Outcome(case, kind, seconds, f"[{done.returncode}] {stderr.splitlines()[-1] if stderr else ''}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/bad_invocations.txt")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--only", default="", help="run the cases whose name contains this text")
    args = parser.parse_args()
    selected = [case for case in cases() if args.only in case.name]
    lines = [f"{len(selected)} bad invocations of main.py (load average {os.getloadavg()[0]:.1f} at start)", ""]
    counts: dict[str, int] = {}
    slowest = 0.0
    for case in selected:
        outcome = run_case(case, args.timeout)
        counts[outcome.kind] = counts.get(outcome.kind, 0) + 1
        slowest = max(slowest, outcome.seconds)
        line = f"{outcome.kind:<9} {outcome.seconds:5.1f} s  {case.name:<48} {outcome.message[:150]}"
        print(line, flush=True)
        lines.append(line)
    summary = "outcomes: " + ", ".join(f"{kind} {count}" for kind, count in sorted(counts.items()))
    lines += ["", summary, f"slowest case: {slowest:.1f} s (mostly importing torch)"]
    print(lines[-2], lines[-1], sep="\n")
    if not args.only:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")
    return 0 if counts.get("one-line", 0) == len(selected) else 1


if __name__ == "__main__":
    sys.exit(main())
