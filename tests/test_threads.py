"""CPU threads of a job (:mod:`jobs.runtime`) and the OpenMP defaults set before torch loads (:mod:`base_lib.openmp`).

* ``config.num_threads`` > 0 is what torch uses afterwards; a bad value (negative, not an integer) is a one-line
  ``ValueError`` naming the field; the choice is logged as ``threads: N (why)``, first in every job's log.
* 0 chooses from the usable cores (affinity, cgroup quota, processes per machine): one thread per core when waiting
  threads sleep (``OMP_WAIT_POLICY=PASSIVE``), else one per core the load average leaves free;
  ``OMP_NUM_THREADS`` (set by ``torchrun``) is respected.
* ``OMP_WAIT_POLICY=PASSIVE`` is set unless the user set a policy, and importing :mod:`base_lib.openmp` does not
  load torch (``main.py`` calls it before torch is imported).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from base_lib.openmp import set_openmp_defaults
from jobs.experiment import ConfigError
from jobs.run import close_log, open_log
from jobs.runtime import automatic_threads, choose_threads, configure_threads, thread_line, usable_cores
from test_progress import ListHandler

ROOT = Path(__file__).resolve().parents[1]
NO_OMP = {}  # an environment without OMP_NUM_THREADS


@pytest.fixture(autouse=True)
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def logger_with_lines() -> tuple[logging.Logger, list[str]]:
    handler = ListHandler()
    logger = logging.getLogger(f"test_threads.{id(handler)}")
    logger.propagate, logger.level = False, logging.INFO
    logger.addHandler(handler)
    return logger, handler.lines


@pytest.mark.parametrize("count", [1, 2, 3])
def test_config_value_is_what_torch_uses(count):
    logger, lines = logger_with_lines()
    assert configure_threads({"num_threads": count}, logger, environ={"OMP_WAIT_POLICY": "PASSIVE"}) == count
    assert torch.get_num_threads() == count
    assert lines == [f"threads: {count} (config.num_threads; OpenMP wait policy PASSIVE)"]


@pytest.mark.parametrize("value", [-1, 1.5, "2", True])
def test_bad_values_name_the_field(value):
    threads = torch.get_num_threads()
    with pytest.raises(ValueError, match=r"^config\.num_threads must be an integer >= 0 .*, got ") as error:
        configure_threads({"num_threads": value})
    assert isinstance(error.value, ConfigError) and "\n" not in str(error.value)
    assert torch.get_num_threads() == threads  # nothing changed


@pytest.mark.parametrize("cores, load, expected", [(2, 0.0, 2), (2, 0.4, 2), (2, 0.6, 1), (2, 1.2, 1), (2, 5.0, 1),
                                                   (4, 1.0, 3), (8, 2.6, 5), (1, 0.0, 1)])
def test_spinning_threads_take_the_free_cores(cores, load, expected):
    assert automatic_threads(cores, load, passive=False) == expected


@pytest.mark.parametrize("cores, load", [(2, 0.0), (2, 5.0), (8, 7.9)])
def test_sleeping_threads_take_every_core(cores, load):
    assert automatic_threads(cores, load, passive=True) == cores


def test_automatic_choice_with_its_reason():
    logger, lines = logger_with_lines()
    assert configure_threads({"num_threads": 0}, logger, environ=NO_OMP, cores=2, load=1.7) == 1
    assert torch.get_num_threads() == 1
    assert lines == ["threads: 1 (automatic, one per free core, waiting threads spin: 2 usable core(s), load average "
                     "1.70; set config.num_threads to choose; OpenMP wait policy default)"]
    passive = {"OMP_WAIT_POLICY": "passive"}
    assert configure_threads({}, logger, environ=passive, cores=2, load=1.7) == 2  # no field: automatic too
    assert lines[-1] == ("threads: 2 (automatic, one per core, waiting threads sleep: 2 usable core(s), load average "
                         "1.70; set config.num_threads to choose; OpenMP wait policy passive)")
    assert choose_threads({"num_threads": None}, NO_OMP, cores=2, load=0.1)[0] == 2  # an unset placeholder too


def test_processes_on_one_machine_share_the_cores():
    count, why = choose_threads({}, {"LOCAL_WORLD_SIZE": "2", "OMP_WAIT_POLICY": "PASSIVE"}, cores=8, load=3.0)
    assert count == 4 and "4 usable core(s) of 2 processes" in why


def test_omp_num_threads_is_respected():
    torch.set_num_threads(1)
    assert choose_threads({}, {"OMP_NUM_THREADS": "1"}, cores=2, load=0.0) == (1, "OMP_NUM_THREADS=1")
    assert choose_threads({"num_threads": 2}, {"OMP_NUM_THREADS": "1"})[0] == 2  # the config wins


@pytest.mark.parametrize("cpu_max, cap", [("150000 100000\n", 2), ("50000 100000\n", 1), ("max 100000\n", None),
                                          ("nonsense", None)])
def test_usable_cores_respect_a_cgroup_quota(tmp_path, cpu_max, cap):
    affinity = len(os.sched_getaffinity(0))
    (tmp_path / "cpu.max").write_text(cpu_max)
    assert usable_cores(tmp_path / "cpu.max") == (affinity if cap is None else min(affinity, cap))
    assert usable_cores(tmp_path / "missing") == affinity


def test_thread_line_says_when_the_count_was_set_elsewhere():
    configure_threads({"num_threads": 2}, environ=NO_OMP)
    torch.set_num_threads(1)
    assert thread_line(NO_OMP) == "threads: 1 (not set from the config; OpenMP wait policy default)"


def test_every_job_log_starts_with_the_thread_line(tmp_path):
    configure_threads({"num_threads": 1})
    logger = open_log(tmp_path / "log.txt", True)
    close_log(logger)
    first = (tmp_path / "log.txt").read_text().splitlines()[0]
    assert first.endswith(thread_line()) and "threads: 1 (config.num_threads;" in first


def test_openmp_defaults_do_not_override_the_user():
    environ: dict[str, str] = {}
    assert set_openmp_defaults(environ) == {"OMP_WAIT_POLICY": "PASSIVE"} == environ
    environ = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert set_openmp_defaults(environ) == {} and environ == {"OMP_WAIT_POLICY": "ACTIVE"}


def test_openmp_defaults_can_be_set_before_torch_loads():
    code = "import sys, base_lib.openmp; assert 'torch' not in sys.modules, 'importing base_lib.openmp loads torch'"
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
