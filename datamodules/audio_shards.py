"""``AudioShardDataModule``: stream log-mel webdataset shards into any audio backbone.

Data flow: shards written by ``datamodules.prepare`` (format: :mod:`audiognn.data.shards`) ->
:class:`~datamodules.shard_stream.ShardStream` (one per split; local paths and any URL webdataset opens —
``pipe:``, ``http(s)://``, ``s3://`` through ``pipe:``) -> batches ``{"x": float16 [B, T, F], "y": float32
[B, C], "key": list[str]}`` -> on the device, in ``on_after_batch_transfer``: normalisation (every stage)
and, only while training, the transforms of :mod:`datamodules.transforms` (mixup, then SpecAugment): after
the normalisation by default, before it in the official LHGNN / AST order (``pipeline_order``).

How clips are split over ranks and workers (``train_mode="exact"``: every training clip seen by exactly one
rank per epoch, equal batch counts on every rank; ``"resampled"``: webdataset's recipe for huge sets;
validation / test / predict: every clip exactly once over all ranks) is :mod:`datamodules.planning`.
"""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset

from audiognn.data.shards import (  # noqa: F401  (re-exported: former home of the shard format)
    ShardError,
    is_url,
    iter_tar,
    load_dataset_info,
    load_npy,
    pooled_norm,
    split_shard_meta,
    split_shards,
)
from audiognn.features import AudioError, FeatureConfig, extract
from datamodules.planning import allocate, split_sizes  # noqa: F401  (re-exported)
from datamodules.readers.folder import FOLDER_EXTENSIONS
from datamodules.readers.synthetic import ensure_synthetic, synthetic_info
from datamodules.shard_stream import EpochLoader, ShardStream, SharedCounter
from datamodules.synthetic import SyntheticConfig
from datamodules.transforms import FilterAugment, Mixup, SpecAugment, SpecWarp


def audio_paths(paths: list[str]) -> list[str]:
    """``paths`` with every directory replaced by its audio files (recursive, sorted; hidden files left out)."""
    out = []
    for p in map(Path, paths):
        if not p.is_dir():
            out.append(str(p))
            continue
        found = sorted(str(f) for f in p.rglob("*") if f.suffix.lower() in FOLDER_EXTENSIONS
                       and f.is_file() and not any(part.startswith(".") for part in f.relative_to(p).parts))
        if not found:
            raise FileNotFoundError(f"predict_files: directory {p} holds no audio ({', '.join(FOLDER_EXTENSIONS)})")
        out += found
    return out


class AudioFiles(IterableDataset):
    """Audio files featurised on the fly with a dataset's feature parameters, in batches (for ``predict``).

    A file that cannot be decoded is skipped, warned about and listed in ``failures`` (``{"path", "reason",
    "detail"}``); every other file is predicted. Iterated in the main process (no DataLoader workers), so
    ``failures`` is the caller's list.

    Args:
        paths: audio files; features: ``dataset.json``'s ``features``; num_classes: width of the (zero) targets;
        batch_size: files per batch (default 1).
    """

    def __init__(self, paths: list[str], features: dict, num_classes: int, batch_size: int = 1):
        self.paths, self.cfg, self.num_classes = [str(p) for p in paths], FeatureConfig.from_dict(features), num_classes
        self.batch_size = batch_size
        self.failures: list[dict] = []

    def _item(self, path: str) -> dict | None:
        try:
            mel, valid = extract(path, self.cfg)
        except Exception as exc:  # AudioError, or a decoder's own error: one bad file must not stop the run
            reason, detail = (exc.reason, exc.detail) if isinstance(exc, AudioError) else ("error", repr(exc))
            self.failures.append({"path": path, "reason": reason, "detail": detail})
            warnings.warn(f"predict: skipped {path}: {reason} {detail}".rstrip(), stacklevel=2)
            return None
        return {"x": mel.to(torch.float16), "y": torch.zeros(self.num_classes), "key": path, "valid": valid}

    def __iter__(self):
        self.failures.clear()
        items = (item for item in map(self._item, self.paths) if item is not None)
        while batch := list(itertools.islice(items, self.batch_size)):
            yield {"x": torch.stack([b["x"] for b in batch]), "y": torch.stack([b["y"] for b in batch]),
                   "key": [b["key"] for b in batch], "valid": torch.tensor([b["valid"] for b in batch])}


PIPELINE_ORDERS = ("normalise_first", "augment_first")
_EXPECTED = {"batch_size": "an integer >= 1", "num_workers": "an integer >= 0",
             "train_mode": "'exact' or 'resampled'", "pipeline_order": "'normalise_first' or 'augment_first'",
             "norm": "'dataset' or a mapping {mean: number, std: number > 0}",
             "mixup_domain": "'logmel', or 'power' with pipeline_order 'augment_first' (it mixes raw log-mels)"}


def _fixed_norm(norm) -> bool:
    """Whether ``norm`` is a valid fixed normalisation ``{mean, std}`` (std > 0)."""
    return (isinstance(norm, dict) and set(norm) == {"mean", "std"}
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in norm.values())
            and norm["std"] > 0)


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
        shuffle_buffer: webdataset shuffle buffer while training.
        mixup_alpha / mixup_prob: :class:`~datamodules.transforms.Mixup`, λ ~ Beta(α, α) per example, applied
            with probability p. LHGNN (Singh et al., §III-A, read as α = 0.5): α = 0.5, p = 1; official LHGNN /
            AST: α = 10, p = 0.5; p = 0 disables mixup.
        mixup_domain: ``"logmel"`` (default: the convex mix of log-mels) or ``"power"`` (the waveform-equivalent
            mix of the raw log-mels, :func:`~datamodules.transforms.power_mix`; needs ``"augment_first"``).
        pipeline_order: ``"normalise_first"`` (default: normalise, then mixup and SpecAugment on the normalised
            log-mel, masks at 0 = the mean) or ``"augment_first"`` (the official LHGNN / AST order: mixup and
            SpecAugment on the raw log-mel, masks at raw 0, then normalise).
        norm: ``"dataset"`` (default: the statistics of ``train_splits`` from ``dataset.json``) or fixed
            statistics ``{mean, std}``; the official LHGNN code's are ``{mean: -4.6476, std: 4.5699}`` (FSD50K's,
            used for AudioSet too). ``data_info["norm"]`` records the ones used.
        freq_mask / time_mask: :class:`~datamodules.transforms.SpecAugment` widths, in bins / frames (int) or
            as a fraction of the clip's (float < 1: one setting for every clip length); LHGNN §III-A: 48 bins,
            192 frames of 1024; 0 disables.
        time_stretch / pitch_shift / time_shift / gain_db: :class:`~datamodules.transforms.SpecWarp`, the
            log-mel counterparts of SB-CNN's waveform augmentation (Salamon and Bello 2017): largest relative
            rate change (0.25: rates 0.8-1.25), largest shift in mel bins, largest time shift as a fraction of
            the clip, largest gain in dB; drawn per example, before mixup; 0 disables each (the default).
        filter_db: :class:`~datamodules.transforms.FilterAugment`, a random piecewise-linear filter over the mel
            bins per example (a recording's microphone and room), gains up to this many dB at 3-6 band edges;
            after SpecWarp, before mixup; 0 disables it (the default).
        seed: seed of the per-epoch plan, crops and shuffling.
        skip_corrupt_shards: warn about and skip a corrupt shard instead of stopping (counted in
            ``corrupt_shards``, logged as ``data/corrupt_shards`` by the ``DataHealth`` callback). A shard is corrupt
            when it cannot be read or its clip count or sha256 differs from ``dataset.json``. Training
            epochs keep their planned length on every rank (clips of the readable shards fill in); a
            validation / test pass lacks the skipped shard's clips.
        synthetic: a :class:`~datamodules.synthetic.SyntheticConfig` (in YAML, its fields as a mapping):
            when set, ``prepare_data`` writes that synthetic set to ``root`` if it is missing.
        predict_files: audio files or directories of them (expanded to their audio files, sorted) for
            ``predict`` (else the test splits are predicted). Files that cannot be decoded are skipped,
            warned about and listed in ``predict_failures``.

    Bad settings (``batch_size`` < 1, ``num_workers`` < 0, an unknown ``train_mode``) and a missing
    ``dataset.json`` raise a one-line error from ``__init__``, before anything runs.
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
        mixup_domain: Literal["logmel", "power"] = "logmel",
        pipeline_order: Literal["normalise_first", "augment_first"] = "normalise_first",
        norm: Literal["dataset"] | dict[str, float] = "dataset",
        freq_mask: int | float = 48,
        time_mask: int | float = 192,
        time_stretch: float = 0.0,
        pitch_shift: float = 0.0,
        time_shift: float = 0.0,
        gain_db: float = 0.0,
        filter_db: float = 0.0,
        seed: int = 0,
        skip_corrupt_shards: bool = False,
        synthetic: SyntheticConfig | None = None,
        predict_files: list[str] | None = None,
    ):
        super().__init__()
        for key, value, ok in (("batch_size", batch_size, isinstance(batch_size, int) and batch_size >= 1),
                               ("num_workers", num_workers, isinstance(num_workers, int) and num_workers >= 0),
                               ("train_mode", train_mode, train_mode in ("exact", "resampled")),
                               ("pipeline_order", pipeline_order, pipeline_order in PIPELINE_ORDERS),
                               ("norm", norm, norm == "dataset" or _fixed_norm(norm)),
                               ("mixup_domain", mixup_domain, mixup_domain == "logmel" or (
                                   mixup_domain == "power" and pipeline_order == "augment_first"))):
            if not ok:
                raise ValueError(f"data.{key} must be {_EXPECTED[key]}, got {value!r}")
        self.save_hyperparameters()
        self.root = str(root)
        self.synthetic = SyntheticConfig.coerce(synthetic)
        if self.synthetic is not None and not is_url(self.root) and not (Path(self.root) / "dataset.json").exists():
            self.info = synthetic_info(self.synthetic)  # written by prepare_data
        else:
            self.info = load_dataset_info(self.root)  # a clear FileNotFoundError when missing
        self.class_names: list[str] = list(self.info["classes"])
        self.num_classes: int = len(self.class_names)
        self.multilabel: bool = bool(self.info["multilabel"])
        self.corrupt = SharedCounter()
        self.predict_failures: list[dict] = []
        self.mixup = Mixup(mixup_alpha, mixup_prob, mixup_domain)
        self.spec_augment = SpecAugment(freq_mask, time_mask)
        self.spec_warp = SpecWarp(time_stretch, pitch_shift, time_shift, gain_db)
        self.filter_augment = FilterAugment(filter_db)

    @property
    def data_info(self) -> dict:
        """What a model must remember about its data: classes, features, normalisation (that of the
        training splits: ``{"mean", "std", "over"}``; None before a synthetic set is written; fixed statistics
        ``norm``: ``{"mean", "std", "over": [], "fixed": True}``)."""
        norm = None
        if self.hparams.norm != "dataset":
            norm = {"mean": float(self.hparams.norm["mean"]), "std": float(self.hparams.norm["std"]), "over": [],
                    "fixed": True}
        elif self.info.get("norm") is not None:
            mean, std, over = pooled_norm(self.info, self.hparams.train_splits)
            norm = {"mean": mean, "std": std, "over": over}
        return {"classes": self.class_names, "multilabel": self.multilabel, "features": self.info["features"],
                "norm": norm, "name": self.info.get("name", "")}

    @property
    def corrupt_shards(self) -> int:
        """Shards skipped as corrupt so far (with ``skip_corrupt_shards``)."""
        return self.corrupt.get()

    # --- data preparation ---------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Write the synthetic set to ``root`` when ``synthetic`` is set and it is missing."""
        if self.synthetic is not None:
            ensure_synthetic(self.root, self.synthetic)

    def setup(self, stage: str | None = None) -> None:
        """Read ``dataset.json`` (written by now) and the normalisation statistics of ``train_splits``, pooled
        from its per-split statistics (:func:`~audiognn.data.shards.pooled_norm`; a set written before those
        existed gives its single statistics): ``mean``, ``std`` and the splits they cover, ``norm_over``; with
        fixed statistics ``norm``, those (``norm_over`` empty)."""
        self.info = load_dataset_info(self.root)
        if (fixed := self.hparams.norm) != "dataset":
            self.mean, self.std, self.norm_over = float(fixed["mean"]), float(fixed["std"]), []
        else:
            self.mean, self.std, self.norm_over = pooled_norm(self.info, self.hparams.train_splits)
        unverified = sorted(s for s, m in self.info["splits"].items() if not m.get("sha256"))
        if unverified and not getattr(self, "_warned_unverified", False):
            self._warned_unverified = True
            warnings.warn(f"{self.root}: dataset.json records no shard checksums for {unverified} (written by an "
                          "older prepare): those shards are read without sha256 verification; re-run prepare",
                          stacklevel=2)

    # --- loaders -------------------------------------------------------------------------------------
    def _rank_world(self) -> tuple[int, int]:
        t = self.trainer
        return (t.global_rank, t.world_size) if t is not None else (0, 1)

    def _loader(self, names: list[str], mode: str) -> DataLoader:
        urls, counts, digests = split_shard_meta(self.info, self.root, names)
        hp = self.hparams
        ds = ShardStream(urls, counts, self.num_classes, hp.batch_size, mode, seed=hp.seed,
                         crop_frames=hp.train_crop_frames if mode != "eval" else None,
                         shuffle_buffer=hp.shuffle_buffer, skip_corrupt=hp.skip_corrupt_shards, counter=self.corrupt,
                         sha256=digests)
        ds.rank, ds.world = self._rank_world()
        ds.num_workers = max(1, hp.num_workers)
        epoch_fn = (lambda: self.trainer.current_epoch) if self.trainer is not None else None
        return EpochLoader(ds, batch_size=None, num_workers=hp.num_workers, epoch_fn=epoch_fn,
                           persistent_workers=hp.num_workers > 0, prefetch_factor=2 if hp.num_workers else None)

    def train_dataloader(self):
        """The training splits in ``train_mode``."""
        return self._loader(self.hparams.train_splits, self.hparams.train_mode)

    def val_dataloader(self):
        """The validation splits, every clip once over all ranks."""
        return self._loader(self.hparams.val_splits, "eval")

    def test_dataloader(self):
        """The test splits, every clip once over all ranks."""
        return self._loader(self.hparams.test_splits, "eval")

    def predict_dataloader(self):
        """``predict_files`` featurised on the fly, else the test splits."""
        if self.hparams.predict_files:
            ds = AudioFiles(audio_paths(self.hparams.predict_files), self.info["features"], self.num_classes,
                            self.hparams.batch_size)
            self.predict_failures = ds.failures
            return DataLoader(ds, batch_size=None, num_workers=0)
        return self._loader(self.hparams.test_splits, "eval")

    # --- on the device -------------------------------------------------------------------------------
    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """Normalise ``x`` with ``mean``/``std``; while training, apply SpecWarp, mixup then SpecAugment: after the
        normalisation (``"normalise_first"``) or before it, on the raw log-mel (``"augment_first"``)."""
        x, y = batch["x"].float(), batch["y"]  # [B, T, F], [B, C]
        train = self.trainer is not None and self.trainer.training
        first = self.hparams.pipeline_order == "augment_first"
        if not first:
            x = (x - self.mean) / self.std
        if train:
            x, y = self.spec_warp(x, y, log_scale=1.0 if first else 1.0 / self.std)
            x, y = self.filter_augment(x, y, log_scale=1.0 if first else 1.0 / self.std)
            for transform in (self.mixup, self.spec_augment):
                x, y = transform(x, y)
        if first:
            x = (x - self.mean) / self.std
        return {**batch, "x": x, "y": y}
