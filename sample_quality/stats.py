"""Command: the feature statistics file of a dataset, for FID / KID against it.

    python -m sample_quality.stats --config configs/vp/cifar10_ddpmpp_continuous.py --out assets/stats/cifar10_stats.npz
    python -m sample_quality.stats --config configs/vp/digits_ddpmpp_continuous.py --extractor digits --split test --out digits_test.npz

writes (atomically) an ``.npz`` with ``mu``, ``sigma`` and the features (unless ``--no_features``) of the
``--split`` of ``config.data.dataset`` under the Inception network (:mod:`sample_quality.inception`; weights from
``--weights``, else ``config.eval.inception_weights``, else the usual places) or the digits classifier
(:mod:`sample_quality.digits`). ``--set data.root=/path/to/cifar10`` overrides config fields.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from .features import DEFAULT_BATCH_SIZE, FeatureFn, compute_dataset_statistics
from .frechet import FeatureStatistics, save_statistics

EXTRACTORS = ("inception", "digits")


def load_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> Any:
    """``get_config()`` of the config file ``path``, with ``overrides`` ``"a.b=value"`` applied (``value`` read as a
    Python literal, else kept as a string)."""
    spec = importlib.util.spec_from_file_location("_stats_config", path)
    if spec is None or spec.loader is None or not Path(path).is_file():
        raise FileNotFoundError(f"no config file {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    for override in overrides:
        key, sep, text = override.partition("=")
        if not sep:
            raise ValueError(f"--set takes field=value, got {override!r}")
        *parents, leaf = key.strip().split(".")
        node = config
        for name in parents:
            node = getattr(node, name)
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        setattr(node, leaf, value)
    return config


def feature_extractor(name: str, config: Any, weights: str | None = None, device: str | None = None) -> FeatureFn:
    """The extractor ``name`` (one of :data:`EXTRACTORS`) set up from ``config``."""
    if name == "inception":
        from .inception import inception_feature_extractor

        weights = weights or getattr(getattr(config, "eval", None), "inception_weights", None)
        return inception_feature_extractor(weights, device)
    if name == "digits":
        from .digits import load_digits_classifier

        return load_digits_classifier(device=device).extract
    raise ValueError(f"extractor must be one of {', '.join(EXTRACTORS)}, got {name!r}")


def compute_config_statistics(
    config: Any,
    extractor: str = "inception",
    split: str = "train",
    weights: str | None = None,
    device: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_examples: int | None = None,
    keep_features: bool = True,
) -> FeatureStatistics:
    """:func:`compute_dataset_statistics` of the ``split`` of ``config.data.dataset`` under ``extractor``."""
    import data_lib

    feature_fn = feature_extractor(extractor, config, weights, device)
    dataset = data_lib.get_dataset(config, split)
    return compute_dataset_statistics(dataset, feature_fn, batch_size, max_examples, keep_features)


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m sample_quality.stats", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="experiment config file (its data section is used)")
    parser.add_argument("--out", required=True, help="the .npz file to write")
    parser.add_argument("--split", default="train", choices=("train", "test"))
    parser.add_argument("--extractor", default="inception", choices=EXTRACTORS)
    parser.add_argument("--weights", default=None, help="Inception weights file (default: config.eval.inception_weights, $SCORE_SDE_INCEPTION_WEIGHTS, torch hub)")
    parser.add_argument("--device", default=None, help="e.g. cpu or cuda (default: cpu)")
    parser.add_argument("--batch_size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--max_examples", type=int, default=None, help="only the first N examples")
    parser.add_argument("--no_features", action="store_true", help="store mu and sigma only (no KID against this file)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="override a config field")
    args = parser.parse_args(argv)
    config = load_config(args.config, args.set)
    statistics = compute_config_statistics(config, args.extractor, args.split, args.weights, args.device,
                                           args.batch_size, args.max_examples, not args.no_features)
    path = save_statistics(args.out, statistics)
    count = "" if statistics.features is None else f" of {len(statistics.features)} examples"
    print(f"wrote {path}: {args.extractor} feature statistics (D = {statistics.mu.shape[0]}){count}")
    return path


if __name__ == "__main__":
    from .inception import MetricSetupError

    try:
        main()
    except (MetricSetupError, FileNotFoundError, ValueError) as error:  # one clear line instead of a traceback
        sys.exit(f"error: {error}")
