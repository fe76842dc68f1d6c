"""Samplers for score-based SDE models: every sampler is ``fn(sde, score_fn, shape, ...) -> (x, nfe)``."""

from .common import CountingScoreFn

__all__ = ["CountingScoreFn"]
