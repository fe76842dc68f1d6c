"""The installed packages import from any directory (not only from the repository root)."""

import subprocess
import sys


def test_packages_import_outside_the_repository(tmp_path):
    code = (
        "import base_lib, sde_lib, samplers, models, configs, sample_quality, train_lib, data_lib, jobs, configs.default_toy_configs, pathlib, os; "
        "assert not pathlib.Path(sde_lib.__file__).is_relative_to(os.getcwd()); print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
