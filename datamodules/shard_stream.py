"""One split's shards as an ``IterableDataset`` of ready batches, for every rank and DataLoader worker.

Shards are read with the one-read tar iterator of :mod:`audiognn.data.shards` (local paths and any URL
webdataset opens — ``pipe:``, ``http(s)://``, ``s3://`` through ``pipe:``); who reads what follows
:class:`datamodules.planning.ShardPlan`. Batches are ``{"x": float16 [B, T, F], "y": float32 [B, C],
"key": list[str]}``.
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import random
import warnings

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from audiognn.data.shards import ShardError, decode_sample, read_shard
from datamodules.planning import ShardPlan


class SharedCounter:
    """A counter shared with forked DataLoader workers; deep copies share it (modules holding it stay copyable)."""

    def __init__(self):
        self.value = mp.Value("i", 0)

    def add(self, n: int = 1) -> None:
        """Add ``n`` (atomically)."""
        with self.value.get_lock():
            self.value.value += n

    def get(self) -> int:
        """The current count."""
        return int(self.value.value)

    def __deepcopy__(self, memo):
        return self


def _read_shard(url: str, count: int, sha256: str | None, skip: bool, counter) -> list[dict] | None:
    """Raw samples ({"__key__", "mel.npy", "json"}) of one tar, verified (:func:`read_shard`: clip count and
    sha256 of ``dataset.json``); errors name the shard.

    With ``skip`` a damaged shard is warned about, counted in ``counter`` and left whole (None); else
    :class:`ShardError` is raised.
    """
    try:
        return read_shard(url, count, sha256)
    except Exception as exc:  # ShardError (damaged, count or checksum differs), OSError (missing, unreadable)
        msg = str(exc) if isinstance(exc, ShardError) else f"cannot read shard {url}: {exc}"
        if not skip:
            raise ShardError(msg) from exc
        warnings.warn(msg + " (skipped: skip_corrupt_shards=True)", stacklevel=2)
        if counter is not None:
            counter.add()
        return None


def _example(sample: dict, num_classes: int, crop: int | None, rng: random.Random | None) -> tuple:
    """(key, mel [T', F], multi-hot y, valid frames in mel) of a raw sample, randomly cropped to ``crop``
    valid frames (a clip shorter than ``crop``: its start, padding included)."""
    key, mel, meta = decode_sample(sample)
    valid = min(int(meta.get("valid_frames") or mel.shape[0]), mel.shape[0])
    if crop is not None and mel.shape[0] > crop:
        s = rng.randint(0, max(0, valid - crop)) if rng is not None else 0
        mel = mel[s : s + crop]
        valid = min(crop, valid - s)
    y = np.zeros(num_classes, dtype=np.float32)
    y[meta["labels"]] = 1.0
    return key, mel, y, valid


class ShardStream(IterableDataset):
    """One split's shards as a stream of ready batches (splitting rules: :mod:`datamodules.planning`).

    Args:
        urls: shard paths or URLs; counts: clips per shard (both from ``dataset.json``).
        num_classes: width of the multi-hot targets.
        batch_size: clips per batch on each rank.
        mode: ``"exact"``, ``"resampled"`` or ``"eval"``.
        seed: seed of the plan, crops and shuffling (default 0).
        crop_frames: random crops of this many frames outside eval mode (default None: whole clips).
        shuffle_buffer: webdataset shuffle buffer outside eval mode (default 1000).
        skip_corrupt: warn about and skip a damaged shard instead of raising (default False).
        counter: :class:`SharedCounter` of skipped shards (default None).
        sha256: sha256 per shard, None where unknown (default None: shards are not checksummed).

    Every worker yields exactly its planned batches outside eval mode: when skipped shards leave it short,
    it fills the epoch from the other readable shards of the split (clips then repeat), so every rank
    reaches the same step count and Lightning's end-of-epoch validation runs. Eval mode never repeats a
    clip: a skipped shard's clips are missing from that pass.

    ``rank``, ``world`` and ``num_workers`` are set by the loader before iterating; ``epoch`` lives in
    shared memory so persistent workers see it.
    """

    def __init__(self, urls: list[str], counts: list[int], num_classes: int, batch_size: int, mode: str,
                 seed: int = 0, crop_frames: int | None = None, shuffle_buffer: int = 1000,
                 skip_corrupt: bool = False, counter=None, sha256: list[str | None] | None = None):
        ShardPlan(list(counts), batch_size, mode, seed)  # checks the mode
        if len(urls) != len(counts) or not urls:
            raise ValueError("ShardStream needs one clip count per shard and at least one shard")
        self.urls, self.counts = list(urls), list(counts)
        self.sha256 = list(sha256) if sha256 is not None else [None] * len(urls)
        self.num_classes, self.batch_size, self.mode = num_classes, batch_size, mode
        self.seed, self.crop_frames, self.shuffle_buffer = seed, crop_frames, shuffle_buffer
        self.skip_corrupt, self.counter = skip_corrupt, counter
        self.rank, self.world, self.num_workers = 0, 1, 1
        self._epoch = mp.Value("i", 0)  # shared with (persistent) workers: set by the loader each epoch

    @property
    def epoch(self) -> int:
        """The epoch whose plan is iterated."""
        return int(self._epoch.value)

    @epoch.setter
    def epoch(self, value: int) -> None:
        self._epoch.value = int(value)

    @property
    def plan(self) -> ShardPlan:
        """The split of these shards over ``world`` ranks x ``num_workers`` workers."""
        return ShardPlan(self.counts, self.batch_size, self.mode, self.seed, self.world, self.num_workers)

    @property
    def total(self) -> int:
        """Clips in the split."""
        return sum(self.counts)

    def __len__(self) -> int:
        if self.mode == "resampled":
            return self.plan.resampled_batches() * self.num_workers
        return sum(self.plan.epoch(self.epoch).batches[self.rank])

    def _shard(self, s: int, bad: set[int]) -> list[dict]:
        """Samples of shard ``s``; [] for a shard skipped as corrupt (remembered in ``bad``, counted once)."""
        if s in bad:
            return []
        samples = _read_shard(self.urls[s], self.counts[s], self.sha256[s], self.skip_corrupt, self.counter)
        if samples is None:
            bad.add(s)
        return samples or []

    def _samples(self, shards, keep, bad: set[int]):
        offsets = self.plan.offsets
        for s in shards:
            for pos, raw in enumerate(self._shard(s, bad)):
                if keep is None or keep[offsets[s] + pos]:
                    yield raw

    def _refill(self, rng: random.Random, bad: set[int], draw: bool = False):
        """Endless samples of the readable shards in random order (``draw``: one shard drawn with
        replacement at a time); :class:`ShardError` when every shard is corrupt."""
        while len(bad) < len(self.urls):
            order = [rng.randrange(len(self.urls))] if draw else rng.sample(range(len(self.urls)), len(self.urls))
            yield from self._samples(order, None, bad)
        raise ShardError(f"every one of the {len(self.urls)} shards of this split is corrupt (first: {self.urls[0]})")

    @staticmethod
    def _collate(items: list[tuple]) -> dict:
        keys, mels, ys, valid = zip(*items)
        return {"x": torch.from_numpy(np.stack(mels)), "y": torch.from_numpy(np.stack(ys)), "key": list(keys),
                "valid": torch.tensor(valid, dtype=torch.long)}  # frames of audio in each x, the rest padding

    def __iter__(self):
        info = get_worker_info()
        worker = info.id if info is not None else 0
        if info is not None and info.num_workers != self.num_workers:
            raise RuntimeError("ShardStream.num_workers must match the DataLoader's num_workers")
        rng = random.Random(hash((self.seed, self.epoch, self.rank, worker)) & 0xFFFFFFFF)
        train = self.mode != "eval"
        bad: set[int] = set()
        if self.mode == "resampled":
            source, sizes = self._refill(rng, bad, draw=True), [self.batch_size] * self.plan.resampled_batches()
        else:
            planner = self.plan
            plan = planner.epoch(self.epoch)
            source = self._samples(plan.shards[self.rank][worker], plan.owner == self.rank, bad)
            sizes = planner.batch_sizes(plan, self.rank, worker)
        crop = self.crop_frames if train else None
        items = (_example(s, self.num_classes, crop, rng) for s in source)
        if train:  # webdataset's buffer shuffle; starts yielding once a tenth of the buffer is filled
            items = wds.shuffle(self.shuffle_buffer, max(1, self.shuffle_buffer // 10), rng=rng)(items)
        if self.mode == "exact":  # after the planned clips (outside the shuffle buffer): a short epoch's fill
            items = itertools.chain(items, (_example(s, self.num_classes, crop, rng) for s in self._refill(rng, bad)))
        for size in sizes:
            batch = list(itertools.islice(items, size))
            if not batch:  # eval mode only: a corrupt shard was skipped
                return
            yield self._collate(batch)


class EpochLoader(DataLoader):
    """A DataLoader that tells its :class:`ShardStream` the epoch (``epoch_fn()``) before each pass.

    The epoch lives in shared memory, so persistent workers (started once per run, not per epoch) see it.
    """

    def __init__(self, *args, epoch_fn=None, **kw):
        super().__init__(*args, **kw)
        self._epoch_fn = epoch_fn

    def __iter__(self):
        if self._epoch_fn is not None:
            self.dataset.epoch = self._epoch_fn()
        return super().__iter__()
