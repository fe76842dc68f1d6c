"""``benchmarks/gpu.sh``: valid bash, a one-line refusal without CUDA, and every benchmark command line of its CUDA
sequence accepted by that benchmark's argument parser (parsed only: nothing runs, no GPU needed).

The full ``--cpu-smoke`` run (a few minutes on 2 cores) is left to ``bash benchmarks/gpu.sh --cpu-smoke``.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu.sh"
BENCHMARKS = ("models", "training", "sampling", "likelihood")

#: runs each benchmark script given as JSON ``[[script, args], ...]`` as ``__main__`` with ``sys.argv`` set, stopped
#: right after its arguments are parsed; prints one line per script: ``<exit status> <script>``
PARSE_ONLY = """
import argparse, json, runpy, sys
parse = argparse.ArgumentParser.parse_args
def parse_then_stop(self, *args, **kwargs):
    parse(self, *args, **kwargs)
    raise SystemExit(0)
argparse.ArgumentParser.parse_args = parse_then_stop
for script, arguments in json.loads(sys.argv[1]):
    sys.argv = [script, *arguments]
    try:
        runpy.run_path(script, run_name="__main__")
        code = "ran"
    except SystemExit as stop:
        code = stop.code
    print(code, script, flush=True)
"""

needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def benchmark_commands(mode: str) -> list[tuple[str, list[str]]]:
    """``(script, arguments)`` of every ``benchmarks/<name>.py`` call in one branch of gpu.sh (``'cuda'``: the
    ``else`` branch; ``'smoke'``: the ``--cpu-smoke`` branch), line continuations joined."""
    text = SCRIPT.read_text().replace("\\\n", " ")
    smoke, cuda = text.split("if ((SMOKE)); then\n  step tests", 1)[1].split("\nelse\n", 1)
    branch = cuda.split("\nfi\n", 1)[0] if mode == "cuda" else smoke
    calls = re.findall(r"(benchmarks/\w+\.py)((?:[ \t]+(?!&&)[^\s\"&]+)*)", branch)
    return [(script, shlex.split(arguments)) for script, arguments in calls]


@needs_bash
def test_syntax():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


@needs_bash
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_refuses_without_cuda_in_one_line():
    result = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stdout == "" and result.stderr.count("\n") == 1 and "no CUDA device" in result.stderr


@pytest.mark.parametrize("mode", ["cuda", "smoke"])
def test_every_benchmark_accepts_its_options(mode):
    commands = benchmark_commands(mode)
    assert sorted({Path(script).stem for script, _ in commands}) == sorted(BENCHMARKS)
    result = subprocess.run([sys.executable, "-c", PARSE_ONLY, json.dumps(commands)], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.stdout.splitlines() == [f"0 {script}" for script, _ in commands], result.stderr[-3000:]
