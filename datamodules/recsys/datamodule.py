"""`RecDataModule`: interactions, friendships, item modalities and emotion; splits; BPR training batches and
full-ranking evaluation batches.

Readers (`datamodules.recsys.readers`): ``reader="lastfm2k"`` (HetRec 2011 Last.fm 2K in ``root``; tags become
a text modality and emotion vectors), ``"msd"`` (MSD Taste Profile triplets in ``interactions``) or ``"table"``
(CSV/TSV/parquet ``interactions`` with an optional ``social`` table). Every reader may add modality files
(``modality_files: {name: path.npz}``, `audiognn.data.modality_file`) and an emotion file.

Splits (`datamodules.recsys.splits`): seeded per-user 8:1:1 and optionally cold-start items. The training graph
(`audiognn.data.recgraph.RecGraph`, exposed as ``rec_graph``) holds training edges only; ``train.py`` links it
into the model (``LINKED_FROM_DATA``), which reads it right after instantiating this DataModule — so the first
access to ``rec_graph`` reads and splits the data (``setup`` then has nothing left to do).

Batches (`datamodules.recsys.samplers`): BPR triples resampled every epoch for training; for evaluation, user
batches that carry the items to mask (training, and validation at test time), the target items and, for the
cold-start loader, the candidate items — so a model evaluates on any data without holding its splits.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from lightning import LightningDataModule
from torch.utils.data import DataLoader

from audiognn.data.modality_file import align_modality, read_modality
from audiognn.data.recgraph import RecGraph
from datamodules.recsys.readers import (
    LASTFM2K_ROOT,
    RecData,
    check_lastfm2k,
    read_lastfm2k,
    read_msd_triplets,
    read_table,
)
from datamodules.recsys.samplers import BPRTriples, EpochLoader, UserBatches
from datamodules.recsys.splits import SPLITS, split_csr, split_interactions

log = logging.getLogger(__name__)


class RecDataModule(LightningDataModule):
    """Interactions, social edges, item modalities and emotion; splits; BPR training and ranking evaluation.

    Public after ``setup()`` (or the first access to ``rec_graph``): ``data`` (`RecData`), ``split`` (``[E]``
    codes into `SPLITS`), ``rec_graph`` (`RecGraph`, training edges only; ``graph`` is the same object),
    ``csr(name)`` (per-user item lists of a split), ``eval_users(name)``, ``has_cold``.

    Args:
        root: the Last.fm 2K directory (``reader="lastfm2k"``; default ``data/hetrec2011-lastfm-2k``, see
            `datamodules.recsys.readers.check_lastfm2k`: a missing file is named at construction).
        reader: ``"lastfm2k"``, ``"msd"`` or ``"table"``.
        interactions, social, user_col, item_col, weight_col, friend_col, sep: files and columns of the
            ``msd`` / ``table`` readers.
        modality_files, emotion_file: extra item modalities / emotion vectors (`audiognn.data.modality_file`).
        text_dim, use_tags, emotion_from_tags: Last.fm tags as a text modality of ``text_dim`` and as emotion.
        use_social: keep the friendships (False: the graph has no social edges).
        split_ratios, cold_item_fraction, seed: the split (`datamodules.recsys.splits`); ``seed`` also seeds the
            BPR sampling unless ``sample_seed`` is given (a bench varies it with the model seed).
        batch_size, eval_batch_size, num_workers: loaders (BPR triples; users per evaluation batch).
    """

    def __init__(self, root: str | None = LASTFM2K_ROOT, reader: str = "lastfm2k", interactions: str | None = None,
                 social: str | None = None, modality_files: dict[str, str] | None = None,
                 emotion_file: str | None = None, text_dim: int = 64, use_tags: bool = True,
                 emotion_from_tags: bool = True, use_social: bool = True, user_col: str = "user",
                 item_col: str = "item", weight_col: str | None = None, friend_col: str = "friend",
                 sep: str = ",", split_ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
                 cold_item_fraction: float = 0.0, seed: int = 2020, sample_seed: int | None = None,
                 batch_size: int = 1024, eval_batch_size: int = 512, num_workers: int = 0):
        super().__init__()
        if reader not in ("lastfm2k", "msd", "table"):
            raise ValueError(f"RecDataModule: reader must be 'lastfm2k', 'msd' or 'table', got {reader!r}")
        if reader == "lastfm2k" and not root:
            raise ValueError("RecDataModule(reader='lastfm2k') needs root= the hetrec2011-lastfm-2k directory")
        if reader in ("msd", "table") and not interactions:
            raise ValueError(f"RecDataModule(reader={reader!r}) needs interactions= a file path")
        if reader == "lastfm2k":  # before any run starts (train.py instantiates the logger after this)
            check_lastfm2k(root, use_tags or emotion_from_tags)
        self.save_hyperparameters()
        self.data: RecData | None = None
        self._given: RecData | None = None
        self._epochs_started = 0  # sampling epoch when no trainer drives this DataModule

    @classmethod
    def from_data(cls, data: RecData, **kwargs) -> RecDataModule:
        """A datamodule over in-memory `RecData` (tests, synthetic data)."""
        dm = cls(reader="table", interactions="<memory>", **kwargs)
        dm._given = data
        return dm

    # -- loading ------------------------------------------------------------------------------------
    def _load(self) -> RecData:
        h = self.hparams
        if self._given is not None:
            data = self._given
        elif h.reader == "lastfm2k":
            data = read_lastfm2k(h.root, h.text_dim, h.use_tags, h.emotion_from_tags, seed=h.seed)
        elif h.reader == "msd":
            data = read_msd_triplets(h.interactions)
        else:
            data = read_table(h.interactions, h.social, h.user_col, h.item_col, h.weight_col, h.friend_col, h.sep)
        item_keys = data.item_keys or [str(i) for i in range(data.num_items)]
        for name, path in (h.modality_files or {}).items():
            feats, present = align_modality(*read_modality(path), item_keys)
            log.info("modality %s from %s: %d of %d items present", name, path, present.sum(), data.num_items)
            data.modalities[name] = (feats, present)
        if h.emotion_file:
            data.emotion = align_modality(*read_modality(h.emotion_file), item_keys)
        if not h.use_social:
            data.social = np.zeros((2, 0), np.int64)
        return data

    def setup(self, stage: str | None = None) -> None:
        if self.data is not None:
            return
        h = self.hparams
        self.data = d = self._load()
        self.split = split_interactions(d, tuple(h.split_ratios), h.cold_item_fraction, h.seed)
        tr = self.split == 0
        self.graph = RecGraph(
            d.num_users, d.num_items,
            torch.from_numpy(np.stack([d.user[tr], d.item[tr]])),
            torch.from_numpy(d.social),
            {k: (torch.from_numpy(f), torch.from_numpy(m)) for k, (f, m) in d.modalities.items()},
            None if d.emotion is None else (torch.from_numpy(d.emotion[0]), torch.from_numpy(d.emotion[1])),
        )
        self._csr = {name: split_csr(d, self.split, name) for name in SPLITS}
        seen = np.zeros(d.num_items, bool)
        seen[d.item[tr]] = True
        te = self.split == 2
        log.info("RecDataModule: %d users, %d items, %s interactions per split; %d of %d test items unseen in "
                 "training", d.num_users, d.num_items, np.bincount(self.split, minlength=4).tolist(),
                 (~seen[np.unique(d.item[te])]).sum(), len(np.unique(d.item[te])))

    @property
    def rec_graph(self) -> RecGraph:
        """The training graph a recommender model is built from (reads and splits the data on first access)."""
        self.setup()
        return self.graph

    def csr(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(indptr ``[U+1]``, indices ``[n]``) of the items each user has in split ``name``."""
        return self._csr[name]

    def eval_users(self, name: str) -> np.ndarray:
        """Sorted users with at least one interaction in split ``name``."""
        return np.unique(self.data.user[self.split == SPLITS.index(name)])

    @property
    def has_cold(self) -> bool:
        return bool((self.split == 3).any())

    # -- loaders ------------------------------------------------------------------------------------
    def _rank_world(self) -> tuple[int, int]:
        t = getattr(self, "trainer", None)
        return (t.global_rank, t.world_size) if t is not None else (0, 1)

    def sampling_epoch(self) -> int:
        """The epoch whose BPR triples the next training iteration draws: the trainer's current epoch (restored
        on resume, whatever ``num_workers``), or the number of iterations started without a trainer."""
        t = getattr(self, "trainer", None)
        if t is not None:
            return int(t.current_epoch)
        self._epochs_started += 1
        return self._epochs_started - 1

    def train_dataloader(self) -> DataLoader:
        rank, world = self._rank_world()
        tr = self.split == 0
        h = self.hparams
        ds = BPRTriples(self.data.user[tr], self.data.item[tr], self.data.num_items, h.batch_size,
                        h.seed if h.sample_seed is None else h.sample_seed, rank, world)
        return EpochLoader(ds, self.sampling_epoch, num_workers=h.num_workers, persistent_workers=h.num_workers > 0)

    def _eval_loader(self, name: str) -> DataLoader:
        """Users of split ``name`` with their targets; training items masked, and validation items after
        validation; the cold-start split ranks only the cold items."""
        rank, world = self._rank_world()
        exclude = [self.csr("train")] + ([self.csr("val")] if name != "val" else [])
        candidates = None
        if name == "cold":
            candidates = torch.zeros(self.data.num_items, dtype=torch.bool)
            candidates[self.csr("cold")[1]] = True
        return DataLoader(UserBatches(self.eval_users(name), self.hparams.eval_batch_size, rank, world,
                                      target=self.csr(name), exclude=exclude, candidates=candidates),
                          batch_size=None)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self):
        return [self._eval_loader("test"), self._eval_loader("cold")] if self.has_cold else self._eval_loader("test")

    def state_dict(self) -> dict:
        return {"epochs_started": self._epochs_started}

    def load_state_dict(self, state: dict) -> None:
        # with a trainer (the resume case) the sampling epoch is the trainer's restored epoch; this counter only
        # serves loops without one
        self._epochs_started = int(state.get("epochs_started", state.get("train_epoch", 0)))
