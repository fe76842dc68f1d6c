"""Sample-quality figures that need no download: distances between sample sets and exact log-densities."""

from .sliced_wasserstein import sliced_wasserstein

__all__ = ["sliced_wasserstein"]
