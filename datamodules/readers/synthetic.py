"""The ``synthetic`` reader and the one function that writes a synthetic shard set where it is missing.

The clips are rendered by :mod:`datamodules.synthetic` at feature time (the reader lists them with
``meta["synthetic"]`` = variant, index, seed, difficulty; labels come from the generator).
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

from audiognn.data.shards import is_url
from audiognn.features import FeatureConfig
from datamodules.readers.base import BaseReader, Clip, ReadResult, arg
from datamodules.shard_writer import Summary, prepare
from datamodules.synthetic import VARIANTS, SyntheticConfig

SPLITS = ("train", "val", "test")


def synthetic_result(variant: str, train: int, val: int, test: int, seed: int = 0,
                     difficulty: float = 0.0) -> ReadResult:
    """The clip list of a synthetic set: ``train`` / ``val`` / ``test`` clips of ``variant``, keys
    ``<variant>-NNNNNN`` numbered over the splits in that order."""
    classes, multilabel = VARIANTS[variant]
    clips, i = [], 0
    for split, n in zip(SPLITS, (train, val, test)):
        for _ in range(n):
            meta = {"synthetic": {"variant": variant, "index": i, "seed": seed, "difficulty": difficulty}}
            clips.append(Clip(key=f"{variant}-{i:06d}", labels=[], split=split, meta=meta))  # labels: generator
            i += 1
    return ReadResult(name=f"synthetic-{variant}", classes=list(classes), multilabel=multilabel, clips=clips,
                      failures=[])


def synthetic_info(config: SyntheticConfig) -> dict:
    """What ``dataset.json`` of the set will hold, before it is written: classes, multilabel, features and
    the names of the non-empty splits (``norm`` None, shard lists unknown)."""
    classes, multilabel = VARIANTS[config.variant]
    sizes = {"train": config.train, "val": config.val, "test": config.test}
    return {"classes": list(classes), "multilabel": multilabel,
            "features": FeatureConfig(target_frames=config.target_frames).to_dict(), "norm": None,
            "splits": {s: {"clips": n} for s, n in sizes.items() if n}}


def ensure_synthetic(root: str | Path, config: SyntheticConfig | dict) -> Summary | None:
    """Write the synthetic set ``config`` into ``root`` unless ``root`` already holds a ``dataset.json``.

    Every field of the config is honoured (``difficulty`` included) and recorded in ``dataset.json``'s
    ``source``. Returns the write summary (also printed), or None when nothing was written (the set exists,
    or ``root`` is a URL).
    """
    config = SyntheticConfig.coerce(config)
    if is_url(root) or (Path(root) / "dataset.json").exists():
        return None
    result = synthetic_result(config.variant, config.train, config.val, config.test, config.seed,
                              config.difficulty)
    summary = prepare(result, root, FeatureConfig(target_frames=config.target_frames), workers=config.workers,
                      shard_size=config.shard_size, source={"reader": "synthetic", **asdict(config)})
    print(summary)
    return summary


class SyntheticReader(BaseReader):
    """Procedural audio with planted classes (``genre``: 8 styles; ``events``: 10 sound events, multi-label)."""

    name = "synthetic"
    arguments = (
        arg("--variant", choices=list(VARIANTS), default="genre"),
        arg("--train", type=int, default=800, help="clips in the train split"),
        arg("--val", type=int, default=200, help="clips in the val split"),
        arg("--test", type=int, default=200, help="clips in the test split"),
        arg("--seed", type=int, default=0),
        arg("--difficulty", type=float, default=0.0,
            help="genre only: probability that each attribute comes from another class (0 = clean)"),
    )

    @staticmethod
    def read(args: argparse.Namespace) -> ReadResult:
        """The clip list of the set the options describe."""
        return synthetic_result(args.variant, args.train, args.val, args.test, args.seed, args.difficulty)
