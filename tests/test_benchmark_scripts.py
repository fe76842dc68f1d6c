"""Every script of ``benchmarks/`` starts as documented: ``python benchmarks/<name>.py --help`` from another folder
prints its usage (a script must put the repository first on ``sys.path``, or ``import models`` finds
``benchmarks/models.py``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_a_benchmark_script_prints_its_usage(script, tmp_path):
    done = subprocess.run([sys.executable, str(script), "--help"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0 and "usage:" in done.stdout, done.stderr[-2000:]
