"""Progress lines for long loops whose output is not a terminal (a log file, a batch system's capture).

A tqdm bar needs a terminal. Written to a file, a job would otherwise stay silent until its first periodic log
line, which on a busy machine can be minutes away. :class:`ProgressLog` writes ``step 120/2000  3.40 steps/s  ETA
9m12s`` a few seconds after the loop starts and then at a steady wall-clock interval. It only reads a count the
loop already has and a clock, so it never waits for an accelerator.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from typing import Callable

from base_lib.checks import check_finite_positive

LOGGER_NAME = "train_lib"  # the run's logger: the log file's handlers hang on it, progress lines and messages go to it
FIRST_LINE_AFTER_S = 5.0  # the first line: soon enough to show the job is alive, late enough to have a speed
LINE_INTERVAL_S = 20.0  # then one line per interval (a speed over the interval, so a change of load shows)


def output_is_terminal() -> bool:
    """Whether tqdm's stream (stderr) is a terminal, where a bar is shown instead of progress lines."""
    return sys.stderr.isatty()


def format_duration(seconds: float) -> str:
    """``45s``, ``9m12s``, ``2h05m``: a duration rounded to the precision that matters at its size."""
    if not math.isfinite(seconds):
        return "unknown"
    total = max(int(round(seconds)), 0)
    if total < 60:
        return f"{total}s"
    if total < 3600:
        return f"{total // 60}m{total % 60:02d}s"
    return f"{total // 3600}h{total % 3600 // 60:02d}m"


class ProgressLog:
    """Lines ``{label} {done}/{total}  {rate} {unit}/s  ETA {eta}`` on ``logger``, when :meth:`tick` finds one due.

    The first line is due ``first_after`` seconds after construction, each next one ``every`` seconds after the
    previous line or :meth:`speed` reading. The rate is that since the previous line or reading; the ETA assumes
    it continues. ``total=None``: a loop of unknown length (no ETA). ``enabled=False``: :meth:`tick` never logs
    (a terminal shows a bar instead), while :meth:`speed` still reads the rate. ``clock`` (seconds) is injectable
    for tests.
    """

    def __init__(
        self, logger: logging.Logger, total: int | None, done: int = 0, *, label: str = "step", unit: str = "steps",
        enabled: bool = True, first_after: float = FIRST_LINE_AFTER_S, every: float = LINE_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._logger, self._total, self._label, self._unit, self._enabled = logger, total, label, unit, enabled
        self._every = check_finite_positive("every", every)
        self._clock = clock
        self._first_after = check_finite_positive("first_after", first_after)
        self._mark_time, self._mark_done = clock(), done
        self._next_line = self._mark_time + self._first_after

    def tick(self, done: int) -> bool:
        """Log a line if one is due and units were done since the previous line or reading (a loop's own work
        at the same count, such as samples drawn at a checkpoint, gives no rate); whether a line was logged."""
        if not self._enabled or self._clock() < self._next_line or done == self._mark_done:
            return False
        count = f"{done}/{self._total}" if self._total is not None else f"{done}"
        self._logger.info("%s %s  %s", self._label, count, self.speed(done))
        return True

    def restart(self, done: int) -> None:
        """Measure from now, ``done`` units being done, and log the next line ``first_after`` seconds from now: for
        a loop whose work so far held one-off costs (a compilation) that would make the ETA far too long."""
        self._mark_time, self._mark_done = self._clock(), done
        self._next_line = self._mark_time + self._first_after

    def speed(self, done: int) -> str:
        """``3.40 steps/s  ETA 9m12s`` since the previous line or reading; restarts the interval (the next line is
        due ``every`` seconds from now), so a loop that logs its own periodic lines with this speed gets no extra
        progress line right after them."""
        now = self._clock()
        rate = (done - self._mark_done) / max(now - self._mark_time, 1e-9)
        self._mark_time, self._mark_done, self._next_line = now, done, now + self._every
        text = f"{rate:.2f} {self._unit}/s" if rate >= 0.1 else f"{rate:.2g} {self._unit}/s"  # 0.0031, not 0.00
        if self._total is not None:
            eta = (self._total - done) / rate if rate > 0 else math.inf
            text += f"  ETA {format_duration(eta)}"
        return text
