"""``AudioShardDataModule``: stream log-mel webdataset shards into any audio backbone.

Data flow (DESIGN.md): shards written by ``datamodules.prepare`` -> :class:`ShardStream` (one per split,
an ``IterableDataset`` that reads tars with webdataset's ``gopen`` + tar iterator, so local paths and any URL
webdataset accepts — ``pipe:``, ``http(s)://``, ``s3://`` through ``pipe:`` — work) -> batches
``{"x": float16 [B, T, F], "y": float32 [B, C], "key": list[str]}`` -> on the device, in
``on_after_batch_transfer``: normalisation (every stage) and, only while training, mixup and SpecAugment.

How clips are split over ranks and workers (``dataset.json`` knows the clip count of every shard, so each
rank and worker computes its share without reading anything):

* ``train_mode="exact"`` (default): every training clip is seen by exactly one rank per epoch. Each epoch a
  seeded permutation (the same on every rank) assigns clip ``i`` to rank ``perm[i] % world``; workers split
  the rank's reading by shards. Every rank yields the same number of batches,
  ``max(ceil(max_rank_clips / batch_size), num_workers)``, so DDP never waits on a rank that ran out —
  also with fewer shards than ranks x workers. Batch sizes vary by at most a few clips. Cost: every rank
  reads every shard's bytes (it decodes only its own clips).
* ``train_mode="resampled"``: webdataset's recipe for huge sets (AudioSet): each worker draws shards with
  replacement (seeded by seed, epoch, rank, worker) and yields a fixed ``ceil(clips / (batch x world) /
  workers)`` batches; each rank reads only what it uses, but clips may repeat or be missed within an epoch.
* validation / test / predict: every clip exactly once over all ranks, no padding: shards are dealt to ranks
  when there are at least as many shards as ranks (each rank reads only its own shards), else clips are
  (``i % world``); partial last batches.

Mixup (Zhang et al. 2018) has two parametrisations: ``mixup_alpha=0.5, mixup_prob=1.0`` is seed 001
§III-A's ("mixup ... with α = 0.5"); ``mixup_alpha=10, mixup_prob=0.5`` is the official LHGNN code's and
AST's (mix a clip with probability 0.5, λ ~ Beta(10, 10)). λ is drawn per example and the labels are mixed by
the same λ. The official code mixes waveforms before the fbank; here log-mels are mixed on the device (no
re-featurisation; the issue asks for GPU-side augmentation). SpecAugment (Park et al. 2019) uses torchaudio's
``FrequencyMasking(48)`` and ``TimeMasking(192)`` (seed 001 §III-A) with masks drawn per example.
"""

from __future__ import annotations

import io
import itertools
import json
import math
import multiprocessing as mp
import random
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torchaudio
import webdataset as wds
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info


class SharedCounter:
    """A counter shared with forked DataLoader workers; deep copies share it (modules holding it stay copyable)."""

    def __init__(self):
        self.value = mp.Value("i", 0)

    def add(self, n: int = 1) -> None:
        with self.value.get_lock():
            self.value.value += n

    def get(self) -> int:
        return int(self.value.value)

    def __deepcopy__(self, memo):
        return self


class ShardError(RuntimeError):
    """A shard that cannot be read; the message names it."""


def is_url(root: str) -> bool:
    """True for anything webdataset opens that is not a local path (``pipe:...``, ``http://``, ``s3://`` ...)."""
    return "://" in root or root.startswith("pipe:")


def _join(root: str, name: str) -> str:
    if is_url(root):
        return root.rstrip("/") + "/" + name
    return str(Path(root) / name)


def load_dataset_info(root: str | Path) -> dict:
    """Read ``dataset.json`` from a local directory or a URL prefix webdataset can open."""
    root = str(root)
    path = _join(root, "dataset.json")
    try:
        if is_url(root):
            with wds.gopen(path) as f:
                info = json.loads(f.read())
        else:
            with open(path) as f:
                info = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path} not found: '{root}' is not a prepared shard directory; "
            "run `python -m datamodules.prepare READER ... --out DIR` first"
        ) from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); re-run prepare") from None
    for key in ("classes", "multilabel", "splits", "features", "norm"):
        if key not in info:
            raise ValueError(f"{path} lacks the key '{key}'; re-run prepare")
    return info


_NPY_HEADER = re.compile(rb"'descr':\s*'([<>|]?\w+)'.*'fortran_order':\s*False.*'shape':\s*\((\d+),\s*(\d+)\)")


def load_npy(buf: bytes) -> np.ndarray:
    """``np.load`` of a 2-D C-order .npy without ``ast.literal_eval`` of its header (a hot path)."""
    if buf[:8] == b"\x93NUMPY\x01\x00":
        hlen = int.from_bytes(buf[8:10], "little")
        m = _NPY_HEADER.search(buf[10 : 10 + hlen])
        if m:
            return np.frombuffer(buf, dtype=np.dtype(m.group(1).decode()), offset=10 + hlen).reshape(
                int(m.group(2)), int(m.group(3)))
    return np.load(io.BytesIO(buf), allow_pickle=False)


def _decode(sample: dict, num_classes: int, crop: int | None, rng: random.Random | None) -> tuple:
    mel = load_npy(sample["mel.npy"])  # [T, F] float16
    meta = json.loads(sample["json"])
    if crop is not None and mel.shape[0] > crop:
        valid = int(meta.get("valid_frames", mel.shape[0]))
        hi = max(0, min(valid, mel.shape[0]) - crop)
        s = rng.randint(0, hi) if rng is not None else 0
        mel = mel[s : s + crop]
    y = np.zeros(num_classes, dtype=np.float32)
    y[meta["labels"]] = 1.0
    return sample["__key__"], mel, y


def iter_tar(stream) -> Iterator[tuple[str, bytes]]:
    """(member name, bytes) of the regular files of an uncompressed tar stream (ustar, GNU or pax headers).

    Hand-written because Python's streaming ``tarfile`` (what webdataset's ``tar_file_iterator`` uses) reads
    member data in small blocks and dominates the cost of loading a pre-computed log-mel; this reads each
    member with one ``read``. Raises ``ValueError`` on a damaged header or a truncated member.
    """
    pending_name = None
    while True:
        header = stream.read(512)
        if len(header) == 0:
            return
        if len(header) < 512:
            raise ValueError("truncated tar header")
        if header == b"\0" * 512:
            return  # end-of-archive marker
        chksum = int(header[148:156].split(b"\0", 1)[0].strip() or b"0", 8)
        if chksum != sum(header[:148]) + 256 + sum(header[156:]):
            raise ValueError("bad tar header checksum")
        size_field = header[124:136]
        size = int.from_bytes(size_field[1:], "big") if size_field[0] & 0x80 else int(size_field.split(b"\0", 1)[0].strip() or b"0", 8)
        kind = header[156:157]
        data = stream.read(size)
        if len(data) < size:
            raise ValueError(f"truncated tar member ({len(data)} of {size} bytes)")
        pad = (-size) % 512
        if pad and len(stream.read(pad)) < pad:
            raise ValueError("truncated tar padding")
        if kind == b"x":  # pax extended header: take its path record
            for rec in data.decode("utf-8", "replace").split("\n"):
                if " path=" in rec:
                    pending_name = rec.split(" path=", 1)[1]
            continue
        if kind == b"L":  # GNU long name
            pending_name = data.rstrip(b"\0").decode("utf-8", "replace")
            continue
        if kind not in (b"0", b"\0"):
            pending_name = None
            continue
        if pending_name is not None:
            name, pending_name = pending_name, None
        else:
            name = header[:100].split(b"\0", 1)[0].decode("utf-8", "replace")
            prefix = header[345:500].split(b"\0", 1)[0].decode("utf-8", "replace") if header[257:262] == b"ustar" else ""
            name = f"{prefix}/{name}" if prefix else name
        yield name, data


def _read_shard(url: str, skip: bool, counter):
    """Yield raw samples ({"__key__", "mel.npy", "json"}) of one tar; errors name the shard."""
    try:
        if url.endswith((".gz", ".tgz")):  # compressed shards: webdataset's (tarfile-based) reader
            stream = wds.gopen(url)
            files = ((f["fname"], f["data"]) for f in wds.tariterators.tar_file_iterator(stream))
        else:
            stream = wds.gopen(url, bufsize=1 << 20) if is_url(url) else open(url, "rb", buffering=1 << 20)
            files = iter_tar(stream)
        current: dict | None = None
        for name, data in files:
            base = name.rsplit("/", 1)[-1]
            key, _, ext = base.partition(".")  # webdataset's rule: the key ends at the first dot
            if current is not None and key != current["__key__"]:
                yield _checked(current)
                current = None
            if current is None:
                current = {"__key__": key}
            current[ext] = data
        if current is not None:
            yield _checked(current)
        stream.close()
    except Exception as exc:  # ValueError from the tar reader, OSError, ShardError, ...
        msg = f"corrupt or truncated shard {url}: {exc}"
        if not skip:
            raise ShardError(msg) from exc
        warnings.warn(msg + " (skipped: skip_corrupt_shards=True)", stacklevel=2)
        if counter is not None:
            counter.add()


def _checked(sample: dict) -> dict:
    if "mel.npy" not in sample or "json" not in sample:
        raise ShardError(f"sample '{sample.get('__key__')}' lacks mel.npy or json")
    return sample


def split_sizes(total: int, parts: int) -> list[int]:
    """``total`` items in ``parts`` chunks whose sizes differ by at most one."""
    if parts == 0:
        return []
    q, r = divmod(total, parts)
    return [q + (i < r) for i in range(parts)]


def allocate(batches: int, sizes: list[int]) -> list[int]:
    """Deal ``batches`` over workers holding ``sizes`` clips: ∝ size, ≥ 1 where size > 0, ≤ size."""
    nonzero = [i for i, s in enumerate(sizes) if s > 0]
    if batches < len(nonzero) or batches > sum(sizes):
        raise ValueError(f"cannot cut {sum(sizes)} clips held by {len(nonzero)} workers into {batches} batches")
    out = [1 if s > 0 else 0 for s in sizes]
    for _ in range(batches - len(nonzero)):  # greedy: give the next batch to the worker with the largest batches
        i = max((i for i in nonzero if out[i] < sizes[i]), key=lambda i: sizes[i] / out[i])
        out[i] += 1
    return out


class ShardStream(IterableDataset):
    """One split's shards as a stream of ready batches (see the module docstring for the splitting rules)."""

    def __init__(self, urls: list[str], counts: list[int], num_classes: int, batch_size: int, mode: str,
                 seed: int = 0, crop_frames: int | None = None, shuffle_buffer: int = 1000,
                 skip_corrupt: bool = False, counter=None):
        if mode not in ("exact", "resampled", "eval"):
            raise ValueError(f"mode must be 'exact', 'resampled' or 'eval', got '{mode}'")
        if len(urls) != len(counts) or not urls:
            raise ValueError("ShardStream needs one clip count per shard and at least one shard")
        self.urls, self.counts = list(urls), list(counts)
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.num_classes, self.batch_size, self.mode = num_classes, batch_size, mode
        self.seed, self.crop_frames, self.shuffle_buffer = seed, crop_frames, shuffle_buffer
        self.skip_corrupt, self.counter = skip_corrupt, counter
        self.rank, self.world, self.num_workers = 0, 1, 1
        self._epoch = mp.Value("i", 0)  # shared with (persistent) workers: set by the loader each epoch

    @property
    def epoch(self) -> int:
        return int(self._epoch.value)

    @epoch.setter
    def epoch(self, value: int) -> None:
        self._epoch.value = int(value)

    # --- who reads what ----------------------------------------------------------------------------
    @property
    def total(self) -> int:
        return int(self.offsets[-1])

    def _owner(self) -> np.ndarray:
        """Rank that owns each clip (global index) this epoch."""
        if self.mode == "exact":
            perm = np.random.default_rng([self.seed, self.epoch, 7]).permutation(self.total)
            return perm % self.world
        if len(self.urls) >= self.world:  # eval: deal whole shards
            shard_of = np.repeat(np.arange(len(self.urls)), self.counts)
            return shard_of % self.world
        return np.arange(self.total) % self.world

    def _shard_order(self) -> list[int]:
        order = list(range(len(self.urls)))
        if self.mode == "exact":
            random.Random(self.seed * 1000003 + self.epoch).shuffle(order)
        return order

    def _worker_shards(self, owner: np.ndarray, rank: int, worker: int) -> list[int]:
        """Shards that ``worker`` of ``rank`` reads: the rank's shards (those holding a clip it owns), dealt."""
        mine = [s for s in self._shard_order() if (owner[self.offsets[s] : self.offsets[s + 1]] == rank).any()]
        return mine[worker :: self.num_workers]

    def _plan(self) -> tuple[np.ndarray, list[list[int]], list[list[int]]]:
        """(owner per clip, clips per (rank, worker), batches per (rank, worker)) for exact/eval modes."""
        owner = self._owner()
        per = [[0] * self.num_workers for _ in range(self.world)]
        for r in range(self.world):
            for w in range(self.num_workers):
                for s in self._worker_shards(owner, r, w):
                    per[r][w] += int((owner[self.offsets[s] : self.offsets[s + 1]] == r).sum())
        if self.mode == "eval":
            batches = [[math.ceil(m / self.batch_size) for m in row] for row in per]
            return owner, per, batches
        per_rank = [sum(row) for row in per]
        n_b = max(math.ceil(max(per_rank) / self.batch_size), self.num_workers)
        if min(per_rank) < n_b:
            raise ValueError(
                f"{self.total} training clips are too few for {self.world} ranks x {self.num_workers} workers "
                f"at batch size {self.batch_size}: lower num_workers or batch_size"
            )
        return owner, per, [allocate(n_b, row) for row in per]

    def __len__(self) -> int:
        if self.mode == "resampled":
            return self.resampled_batches() * self.num_workers
        return sum(self._plan()[2][self.rank])

    def resampled_batches(self) -> int:
        """Batches per worker in resampled mode (open_clip's rule)."""
        return max(1, math.ceil(math.ceil(self.total / (self.batch_size * self.world)) / self.num_workers))

    # --- iteration -----------------------------------------------------------------------------------
    def _samples(self, shards, keep):
        for s in shards:
            for pos, raw in enumerate(_read_shard(self.urls[s], self.skip_corrupt, self.counter)):
                if keep is None or keep[self.offsets[s] + pos]:
                    yield raw

    def _collate(self, items: list[tuple]) -> dict:
        keys, mels, ys = zip(*items)
        return {"x": torch.from_numpy(np.stack(mels)), "y": torch.from_numpy(np.stack(ys)), "key": list(keys)}

    def __iter__(self):
        info = get_worker_info()
        worker = info.id if info is not None else 0
        if info is not None and info.num_workers != self.num_workers:
            raise RuntimeError("ShardStream.num_workers must match the DataLoader's num_workers")
        rng = random.Random(hash((self.seed, self.epoch, self.rank, worker)) & 0xFFFFFFFF)
        train = self.mode != "eval"
        if self.mode == "resampled":
            def endless():
                while True:
                    yield from self._samples([rng.randrange(len(self.urls))], None)
            source, sizes = endless(), [self.batch_size] * self.resampled_batches()
        else:
            owner, per, batches = self._plan()
            source = self._samples(self._worker_shards(owner, self.rank, worker), owner == self.rank)
            m, n_b = per[self.rank][worker], batches[self.rank][worker]
            # exact: this worker's m clips in exactly n_b batches (n_b is fixed by the plan, equal over ranks)
            sizes = split_sizes(m, n_b) if train else [min(self.batch_size, m - i) for i in range(0, m, self.batch_size)]
        items = (_decode(s, self.num_classes, self.crop_frames if train else None, rng) for s in source)
        if train:  # webdataset's buffer shuffle; starts yielding once a tenth of the buffer is filled
            items = wds.shuffle(self.shuffle_buffer, max(1, self.shuffle_buffer // 10), rng=rng)(items)
        for size in sizes:
            batch = list(itertools.islice(items, size))
            if not batch:  # only when a corrupt shard was skipped
                return
            yield self._collate(batch)


class _EpochLoader(DataLoader):
    """A DataLoader that tells its ShardStream the epoch (from the trainer) before each pass.

    The epoch lives in shared memory, so persistent workers (started once per run, not per epoch) see it.
    """

    def __init__(self, *args, epoch_fn=None, **kw):
        super().__init__(*args, **kw)
        self._epoch_fn = epoch_fn

    def __iter__(self):
        if self._epoch_fn is not None:
            self.dataset.epoch = self._epoch_fn()
        return super().__iter__()


class AudioFiles(Dataset):
    """Audio files featurised on the fly with a dataset's feature parameters (for ``predict``)."""

    def __init__(self, paths: list[str], features: dict, num_classes: int):
        from audiognn.features import FeatureConfig

        self.paths, self.cfg, self.num_classes = [str(p) for p in paths], FeatureConfig.from_dict(features), num_classes

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i):
        from audiognn.features import extract

        mel, _ = extract(self.paths[i], self.cfg)
        return {"x": mel.to(torch.float16), "y": torch.zeros(self.num_classes), "key": self.paths[i]}


class AudioShardDataModule(L.LightningDataModule):
    """Shards of log-mel from ``datamodules.prepare`` for every audio model.

    Args:
        root: directory (or URL prefix) holding ``dataset.json`` and the shards.
        batch_size: clips per batch on each rank.
        num_workers: DataLoader worker processes per rank.
        train_splits / val_splits / test_splits: split names from dataset.json (ESC-50: "fold1".."fold5").
        train_mode: "exact" (every clip once per epoch over all ranks) or "resampled" (webdataset's
            resampled shards + fixed batches per epoch; for very large sets).
        train_crop_frames: random crops of this many frames while training (GTZAN: 300 = 3 s of a 30 s clip).
        mixup_alpha / mixup_prob: λ ~ Beta(α, α) per example, applied with probability p. Seed 001 §III-A:
            α = 0.5, p = 1; official LHGNN / AST: α = 10, p = 0.5; p = 0 disables mixup.
        freq_mask / time_mask: SpecAugment widths (seed 001 §III-A: 48 bins, 192 frames); 0 disables.
        skip_corrupt_shards: warn about and skip a corrupt shard instead of stopping (counted in
            ``corrupt_shards`` and logged by AudioClassifier as ``data/corrupt_shards``). In exact mode a
            skipped shard leaves its worker short of clips, so under DDP that rank may end an epoch a
            batch early; on unreliable storage prefer ``train_mode="resampled"``.
        synthetic: when set, ``prepare_data`` writes the synthetic set to ``root`` if it is missing:
            {"variant": "genre"|"events", "train": n, "val": n, "test": n, "seed": 0, "target_frames": 256,
            "difficulty": 0.0 (genre: probability that an attribute comes from another class)}.
        predict_files: audio files for ``predict`` (else the test splits are predicted).
    """

    def __init__(
        self,
        root: str = "data/synthetic-genre",
        batch_size: int = 32,
        num_workers: int = 2,
        train_splits: list[str] = ["train"],  # noqa: B006 (jsonargparse needs literal defaults)
        val_splits: list[str] = ["val"],  # noqa: B006
        test_splits: list[str] = ["test"],  # noqa: B006
        train_mode: str = "exact",
        train_crop_frames: int | None = None,
        shuffle_buffer: int = 1000,
        mixup_alpha: float = 0.5,
        mixup_prob: float = 1.0,
        freq_mask: int = 48,
        time_mask: int = 192,
        seed: int = 0,
        skip_corrupt_shards: bool = False,
        synthetic: dict | None = None,
        predict_files: list[str] | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.root = str(root)
        if is_url(self.root) or (Path(self.root) / "dataset.json").exists():
            self.info = load_dataset_info(self.root)
        elif synthetic is not None:
            from audiognn.features import FeatureConfig
            from datamodules.synthetic import VARIANTS

            classes, multilabel = VARIANTS[synthetic.get("variant", "genre")]
            cfg = FeatureConfig(target_frames=synthetic.get("target_frames", 256))
            self.info = {"classes": list(classes), "multilabel": multilabel, "features": cfg.to_dict(),
                         "norm": None, "splits": {}}
        else:
            self.info = load_dataset_info(self.root)  # raises a clear FileNotFoundError
        self.class_names: list[str] = list(self.info["classes"])
        self.num_classes: int = len(self.class_names)
        self.multilabel: bool = bool(self.info["multilabel"])
        self.corrupt = SharedCounter()
        self.freq_masking = torchaudio.transforms.FrequencyMasking(freq_mask, iid_masks=True) if freq_mask else None
        self.time_masking = torchaudio.transforms.TimeMasking(time_mask, iid_masks=True) if time_mask else None

    @property
    def data_info(self) -> dict:
        """What a model must remember about its data: classes, features, normalisation."""
        return {"classes": self.class_names, "multilabel": self.multilabel, "features": self.info["features"],
                "norm": self.info.get("norm"), "name": self.info.get("name", "")}

    @property
    def corrupt_shards(self) -> int:
        return self.corrupt.get()

    # --- data preparation ---------------------------------------------------------------------------
    def prepare_data(self) -> None:
        syn = self.hparams.synthetic
        if syn is None or is_url(self.root) or (Path(self.root) / "dataset.json").exists():
            return
        from audiognn.features import FeatureConfig
        from datamodules.prepare import prepare, synthetic_result

        result = synthetic_result(syn.get("variant", "genre"), syn.get("train", 800), syn.get("val", 200),
                                  syn.get("test", 200), syn.get("seed", 0), syn.get("difficulty", 0.0))
        summary = prepare(result, self.root, FeatureConfig(target_frames=syn.get("target_frames", 256)),
                          workers=syn.get("workers", 2), shard_size=syn.get("shard_size", 64),
                          source={"reader": "synthetic", **syn})
        print(summary)

    def setup(self, stage: str | None = None) -> None:
        self.info = load_dataset_info(self.root)
        norm = self.info["norm"]
        self.mean, self.std = float(norm["mean"]), float(norm["std"])

    # --- loaders -------------------------------------------------------------------------------------
    def _split(self, names: list[str]) -> tuple[list[str], list[int]]:
        urls, counts = [], []
        for name in names:
            if name not in self.info["splits"]:
                raise KeyError(f"split '{name}' is not in {_join(self.root, 'dataset.json')}: "
                               f"it has {sorted(self.info['splits'])}")
            meta = self.info["splits"][name]
            urls += [_join(self.root, s) for s in meta["shards"]]
            counts += list(meta["counts"])
        return urls, counts

    def _rank_world(self) -> tuple[int, int]:
        t = self.trainer
        return (t.global_rank, t.world_size) if t is not None else (0, 1)

    def _loader(self, names: list[str], mode: str) -> DataLoader:
        urls, counts = self._split(names)
        hp = self.hparams
        ds = ShardStream(urls, counts, self.num_classes, hp.batch_size, mode, seed=hp.seed,
                         crop_frames=hp.train_crop_frames if mode != "eval" else None,
                         shuffle_buffer=hp.shuffle_buffer, skip_corrupt=hp.skip_corrupt_shards, counter=self.corrupt)
        ds.rank, ds.world = self._rank_world()
        ds.num_workers = max(1, hp.num_workers)
        epoch_fn = (lambda: self.trainer.current_epoch) if self.trainer is not None else None
        return _EpochLoader(ds, batch_size=None, num_workers=hp.num_workers, epoch_fn=epoch_fn,
                            persistent_workers=hp.num_workers > 0, prefetch_factor=2 if hp.num_workers else None)

    def train_dataloader(self):
        return self._loader(self.hparams.train_splits, self.hparams.train_mode)

    def val_dataloader(self):
        return self._loader(self.hparams.val_splits, "eval")

    def test_dataloader(self):
        return self._loader(self.hparams.test_splits, "eval")

    def predict_dataloader(self):
        if self.hparams.predict_files:
            ds = AudioFiles(self.hparams.predict_files, self.info["features"], self.num_classes)
            return DataLoader(ds, batch_size=self.hparams.batch_size, num_workers=0)
        return self._loader(self.hparams.test_splits, "eval")

    # --- on the device -------------------------------------------------------------------------------
    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        x = (batch["x"].float() - self.mean) / self.std  # [B, T, F]
        y = batch["y"]
        trainer = self.trainer
        if trainer is not None and trainer.training:
            x, y = self.mixup(x, y)
            x = self.spec_augment(x)
        return {**batch, "x": x, "y": y}

    def mixup(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-example mixup; returns mixed (x, y). λ_i = 1 for examples left unmixed."""
        a, p = self.hparams.mixup_alpha, self.hparams.mixup_prob
        if p <= 0 or a <= 0 or x.shape[0] < 2:
            return x, y
        b = x.shape[0]
        lam = torch.distributions.Beta(a, a).sample((b,)).to(x.device)  # [B]
        lam = torch.where(torch.rand(b, device=x.device) < p, lam, torch.ones_like(lam))
        perm = torch.randperm(b, device=x.device)
        self.last_mixup = (lam, perm)  # kept for inspection (tests, debugging)
        lx = lam.view(b, 1, 1)
        ly = lam.view(b, 1)
        return lx * x + (1 - lx) * x[perm], ly * y + (1 - ly) * y[perm]

    def spec_augment(self, x: torch.Tensor) -> torch.Tensor:
        """SpecAugment on ``[B, T, F]`` with per-example masks (torchaudio, iid_masks=True)."""
        if self.freq_masking is None and self.time_masking is None:
            return x
        s = x.transpose(1, 2).unsqueeze(1)  # [B, 1, F, T]: torchaudio's (..., freq, time)
        if self.freq_masking is not None:
            s = self.freq_masking(s)
        if self.time_masking is not None:
            s = self.time_masking(s)
        return s.squeeze(1).transpose(1, 2)
