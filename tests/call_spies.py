"""Shared helper of the job tests that count how often the jobs call the functions they build."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import pytest


def count_built_calls(
    monkeypatch: pytest.MonkeyPatch,
    modules: Sequence[Any],
    name: str,
    entry: Callable[[tuple, dict], Any] = lambda args, kwargs: 1,
) -> list:
    """Replace the builder ``name`` in each of ``modules`` (``get_sampling_fn``, say) by one whose built functions,
    each time they are called, append ``entry(builder_args, builder_kwargs)`` to the list returned here."""
    calls: list = []
    for module in modules:
        real = getattr(module, name)

        def build(*args: Any, _real: Callable = real, **kwargs: Any) -> Callable:
            fn = _real(*args, **kwargs)
            return lambda *a, **k: calls.append(entry(args, kwargs)) or fn(*a, **k)

        monkeypatch.setattr(module, name, build)
    return calls
