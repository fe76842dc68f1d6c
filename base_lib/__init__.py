"""The lowest layer: argument checks, config field access and atomic file writes, used by every other package.

* :mod:`base_lib.checks`: ``check_positive_int``, ``check_finite_positive``, ``check_bool``, ``check_choice``,
  ``check_shape``: the value, or a one-line ``ValueError`` naming the parameter and its allowed values.
* :mod:`base_lib.config`: ``config_value(config, "section.field", default)``, ``flatten_fields(config)``.
* :mod:`base_lib.files`: ``atomic_write``, for every file that must never be seen half-written, and
  ``WriteError``, its one-line error when the file system refuses the write.
"""

from .checks import check_bool, check_choice, check_finite_positive, check_positive_int, check_shape
from .config import config_value, flatten_fields
from .files import WriteError, atomic_write

__all__ = [
    "check_bool",
    "check_choice",
    "check_finite_positive",
    "check_positive_int",
    "check_shape",
    "config_value",
    "flatten_fields",
    "atomic_write",
    "WriteError",
]
