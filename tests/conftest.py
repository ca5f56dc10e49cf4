"""Shared pytest set-up: no network, no wandb account, small thread counts, deterministic seeds."""

import os
import tempfile

_TMP = tempfile.mkdtemp(prefix="audiognn-tests-")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_DIR", _TMP)
os.environ.setdefault("WANDB_CACHE_DIR", _TMP)
os.environ.setdefault("WANDB_CONFIG_DIR", _TMP)
os.environ.setdefault("WANDB_SILENT", "true")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)  # small ops (PyG, tiny models) are faster single-threaded; no oversubscription


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


# --- shard sets -----------------------------------------------------------------------------------------
def write_shards(root, counts, split="train", extra_splits=None, frames=8, bins=16, num_classes=3, checksums=True):
    """A shard set in the prepare format with tiny fake mels: clip ``i`` (key ``clip{i:05d}``, label
    ``i % num_classes``) has every value equal to ``i``, so keys and values can be checked. ``counts`` are the
    clips per shard of ``split``; ``extra_splits`` maps more split names to their counts; ``checksums=False``
    leaves out the per-shard sha256 (a set written before checksums existed). Returns the ``dataset.json``
    written (norm mean 1, std 2)."""
    import hashlib
    import json
    from pathlib import Path

    import numpy as np
    import webdataset as wds

    from audiognn.data.shards import encode_sample, shard_name

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    splits, i = {}, 0
    for name, cnts in {split: counts, **(extra_splits or {})}.items():
        shards = []
        for s, n in enumerate(cnts):
            shards.append(shard_name(name, s))
            with open(root / shards[-1], "wb") as fh, wds.TarWriter(fh, encoder=False) as w:
                for _ in range(n):
                    meta = {"labels": [i % num_classes], "split": name, "valid_frames": frames}
                    w.write(encode_sample(f"clip{i:05d}", np.full((frames, bins), i, np.float16), meta))
                    i += 1
        splits[name] = {"shards": shards, "counts": list(cnts), "clips": sum(cnts)}
        if checksums:
            splits[name]["sha256"] = [hashlib.sha256((root / s).read_bytes()).hexdigest() for s in shards]
    info = {"classes": [f"c{k}" for k in range(num_classes)], "multilabel": False, "splits": splits,
            "features": {"target_frames": frames, "num_mel_bins": bins}, "norm": {"mean": 1.0, "std": 2.0}}
    (root / "dataset.json").write_text(json.dumps(info))
    return info


@pytest.fixture(scope="session")
def make_shards():
    """The factory :func:`write_shards` (``make_shards(root, counts, split="train", extra_splits=None, ...)``)."""
    return write_shards


@pytest.fixture(scope="session")
def synthetic_set(tmp_path_factory):
    """Factory of prepared synthetic shard sets, written once per session and per set of arguments:
    ``synthetic_set(variant="genre", train=16, val=8, test=8, seed=0, difficulty=0.0, target_frames=64)``
    returns the directory (``datamodules.readers.ensure_synthetic`` with one worker, shards of 16)."""
    from datamodules.readers import ensure_synthetic
    from datamodules.synthetic import SyntheticConfig

    made = {}

    def make(variant="genre", train=16, val=8, test=8, seed=0, difficulty=0.0, target_frames=64):
        key = (variant, train, val, test, seed, difficulty, target_frames)
        if key not in made:
            made[key] = tmp_path_factory.mktemp(f"synthetic-{variant}")
            ensure_synthetic(made[key], SyntheticConfig(*key, workers=1, shard_size=16))
        return made[key]

    return make
