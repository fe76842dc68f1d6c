"""OpenMP settings that must be in the environment before torch is imported.

The OpenMP runtime that torch loads reads its environment once, when it loads. ``main.py`` therefore calls
:func:`set_openmp_defaults` before its first import of torch. This module imports nothing heavy, so importing it
loads no torch.
"""

from __future__ import annotations

import os
from typing import MutableMapping

#: The toolkit's defaults. ``OMP_WAIT_POLICY=PASSIVE``: a thread that waits for the others of a parallel region
#: sleeps instead of spinning. A spinning thread burns the core that other processes, and the late threads of its
#: own region, need; a training step has hundreds of regions, so on a machine shared with busy processes spinning
#: threads make training many times slower than one thread, and sleeping ones do not (benchmarks/threads.py).
OPENMP_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}


def set_openmp_defaults(environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """Set each variable of :data:`OPENMP_DEFAULTS` that ``environ`` does not have (a user's own setting wins);
    returns the variables set. Has an effect only before torch is imported."""
    chosen = {name: value for name, value in OPENMP_DEFAULTS.items() if name not in environ}
    environ.update(chosen)
    return chosen
