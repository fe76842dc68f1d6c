"""How many CPU threads a job's torch uses: ``config.num_threads``, or a count chosen from the free cores.

torch's default is one thread per core of the machine, and OpenMP's default lets a thread that waits for the
others of a parallel region spin. If other processes are busy on those cores, every region of a step waits for a
thread that is not running while its partner burns a core, and a small network trains many times slower than on
one thread (``benchmarks/threads.py``). With the passive wait policy, which ``main.py`` sets before torch is
imported (:func:`base_lib.openmp.set_openmp_defaults`), a waiting thread sleeps: other processes then slow the step
but do not collapse it. :func:`configure_threads` therefore picks, unless told otherwise, one thread per core this
process may use (affinity, cgroup quota, processes per machine); if the threads spin, only the cores the load
average leaves free. ``main.py`` calls it once, before the job; every job's log then opens with
:func:`thread_line`.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Mapping

import torch

from base_lib.config import config_value

from .config_checks import field_error
from .experiment import ConfigError

#: cgroup v2's CPU quota of this process (``max 100000`` when there is none)
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")

_chosen: tuple[int, str] | None = None  # the last choice of configure_threads: (count, why)


def requested_threads(config: Any) -> int:
    """``config.num_threads``: an integer >= 0, 0 (or no field) meaning choose automatically; else
    :class:`jobs.ConfigError` (a ``ValueError``) naming the field (the check of :data:`jobs.config_checks.CHECKS`)."""
    error = field_error(config, "num_threads")
    if error is not None:
        raise ConfigError(error)
    return int(config_value(config, "num_threads", 0))


def usable_cores(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """The cores this process may run on: its CPU affinity, capped by a cgroup CPU quota (a container's limit)."""
    cores = len(os.sched_getaffinity(0))
    try:
        quota, period = cpu_max.read_text().split()
    except (OSError, ValueError):
        return cores
    if quota == "max":
        return cores
    return max(1, min(cores, math.ceil(int(quota) / int(period))))


def passive_wait_policy(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether ``OMP_WAIT_POLICY`` is ``PASSIVE`` (as :func:`base_lib.openmp.set_openmp_defaults` sets it): waiting
    OpenMP threads then sleep. What the runtime uses is what the variable held when torch was imported."""
    return environ.get("OMP_WAIT_POLICY", "").strip().upper() == "PASSIVE"


def automatic_threads(cores: int, load: float, passive: bool) -> int:
    """With a passive wait policy, one thread per usable core: a waiting thread sleeps, so other processes on the
    cores slow the step but do not collapse it. With spinning threads, one per core not busy (``cores - load``
    rounded, between 1 and ``cores``), since a spinning thread takes the core a late one of its region needs.
    ``load``: the 1-minute load average, which this process barely adds to before its job starts."""
    if passive:
        return cores
    return max(1, min(cores, math.floor(cores - load + 0.5)))


def choose_threads(config: Any, environ: Mapping[str, str] = os.environ, cores: int | None = None,
                   load: float | None = None) -> tuple[int, str]:
    """The thread count for ``config`` and why: ``config.num_threads`` if > 0, else torch's count when
    ``OMP_NUM_THREADS`` is set (``torchrun`` sets it to 1 per process), else :func:`automatic_threads` of this
    process's share of the usable cores (``LOCAL_WORLD_SIZE`` processes on this machine), the load average and
    the wait policy. ``cores`` and ``load`` override what is read from the machine (for tests)."""
    requested = requested_threads(config)
    if requested > 0:
        return requested, "config.num_threads"
    if "OMP_NUM_THREADS" in environ:
        return torch.get_num_threads(), f"OMP_NUM_THREADS={environ['OMP_NUM_THREADS']}"
    local_processes = max(1, int(environ.get("LOCAL_WORLD_SIZE", "1")))
    cores = max(1, (usable_cores() if cores is None else cores) // local_processes)
    load = os.getloadavg()[0] if load is None else load
    passive = passive_wait_policy(environ)
    share = f" of {local_processes} processes" if local_processes > 1 else ""
    rule = "one per core, waiting threads sleep" if passive else "one per free core, waiting threads spin"
    return automatic_threads(cores, load, passive), (
        f"automatic, {rule}: {cores} usable core(s){share}, load average {load:.2f}; set config.num_threads to choose"
    )


def configure_threads(config: Any, logger: logging.Logger | None = None, environ: Mapping[str, str] = os.environ,
                      cores: int | None = None, load: float | None = None) -> int:
    """Set torch's intra-op thread count from ``config`` (:func:`choose_threads`), log :func:`thread_line` to
    ``logger`` if given, and return the count. :class:`jobs.ConfigError` for a bad ``config.num_threads``."""
    global _chosen
    count, why = choose_threads(config, environ, cores, load)
    torch.set_num_threads(count)
    _chosen = count, why
    if logger is not None:
        logger.info(thread_line(environ))
    return count


def thread_line(environ: Mapping[str, str] = os.environ) -> str:
    """``threads: N (why)``: torch's thread count now, the reason :func:`configure_threads` gave for it (or that it
    was set elsewhere), and the OpenMP wait policy."""
    count = torch.get_num_threads()
    why = _chosen[1] if _chosen is not None and _chosen[0] == count else "not set from the config"
    return f"threads: {count} ({why}; OpenMP wait policy {environ.get('OMP_WAIT_POLICY', 'default')})"
