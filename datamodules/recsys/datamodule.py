"""Recommendation data: readers, splits, the training graph, BPR triples and evaluation batches (issue 6).

`RecDataModule` reads one of

- ``reader="lastfm2k"``: the HetRec 2011 Last.fm 2K files in ``root`` (user_artists.dat, user_friends.dat,
  user_taggedartists.dat + tags.dat (latin-1)); the tags become a *text* modality per artist (TF-IDF of
  the artist's tag counts reduced by truncated SVD to ``text_dim``) and, through a small mood lexicon,
  an *emotion* vector per artist (seed 002 §3.3: emotion from textual signals);
- ``reader="msd"``: MSD Taste Profile triplets (``user \\t song \\t play count``, file ``interactions``)
  with per-song feature files in the modality format of `audiognn.recsys_io`;
- ``reader="table"``: a generic CSV/TSV or parquet (pyarrow) table with user and
  item columns, an optional social CSV.

Every reader may add modality files (``modality_files: {name: path.npz}``) and an emotion file.

Splits (the protocol in ../shared/notes/recsys-protocol.md): a seeded random per-user split with
ratios 8:1:1 (RecBole's per-user rounding: a user with n interactions gives floor(0.1 n) to validation
and test, and at least one to each when 0 < 0.1 n < 1 as long as training keeps more than one), and
optionally a cold-start item split that first holds out ``cold_item_fraction`` of the items with all
their interactions. The message-passing graph (`RecGraph`) holds training edges only.

Training batches are BPR triples (user, positive, negative) resampled every epoch: the epoch's pairs
are permuted by a generator seeded with (seed, epoch), split evenly across DDP ranks, and the negatives
are drawn uniformly and rejected against the user's training positives.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from lightning import LightningDataModule
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from audiognn.recsys_io import align_modality, read_modality

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test", "cold")


# --------------------------------------------------------------------------------------------------
# Containers
# --------------------------------------------------------------------------------------------------
@dataclass
class RecData:
    """Raw recommendation data with contiguous ids.

    user/item: ``[E]`` int64 interaction pairs (unique), weight ``[E]`` float (play counts, or 1).
    social: ``[2, S]`` int64 directed user-user edges (both directions present), or empty.
    modalities: name -> (features ``[I, D]`` float32, present ``[I]`` bool).
    emotion: (features ``[I, De]`` float32, present ``[I]`` bool) or None.
    """

    num_users: int
    num_items: int
    user: np.ndarray
    item: np.ndarray
    weight: np.ndarray
    social: np.ndarray = field(default_factory=lambda: np.zeros((2, 0), dtype=np.int64))
    modalities: dict = field(default_factory=dict)
    emotion: tuple | None = None
    user_keys: list | None = None
    item_keys: list | None = None

    def __post_init__(self):
        self.user = np.asarray(self.user, dtype=np.int64)
        self.item = np.asarray(self.item, dtype=np.int64)
        self.weight = np.asarray(self.weight, dtype=np.float32)
        self.social = np.asarray(self.social, dtype=np.int64).reshape(2, -1)
        if self.user.shape != self.item.shape or self.user.shape != self.weight.shape:
            raise ValueError(f"RecData: user {self.user.shape}, item {self.item.shape}, weight "
                             f"{self.weight.shape} must have one common shape [E]")
        if len(self.user) and (self.user.min() < 0 or self.user.max() >= self.num_users):
            raise ValueError(f"RecData: user ids must lie in [0, {self.num_users})")
        if len(self.item) and (self.item.min() < 0 or self.item.max() >= self.num_items):
            raise ValueError(f"RecData: item ids must lie in [0, {self.num_items})")
        key = self.user * self.num_items + self.item
        if len(np.unique(key)) != len(key):
            raise ValueError("RecData: duplicate (user, item) pairs; aggregate them first")
        for name, (f, m) in self.modalities.items():
            if f.shape[0] != self.num_items or m.shape != (self.num_items,):
                raise ValueError(f"RecData: modality {name!r} must be ([I={self.num_items}, D], [I]), "
                                 f"got {f.shape}, {m.shape}")


@dataclass
class RecGraph:
    """What a recommender model is built from: the training graph and the item side information.

    train_edge_index: ``[2, E_train]`` (user, item) training pairs only — never validation/test/cold.
    social_edge_index: ``[2, S]`` directed user-user edges. modalities / emotion as in `RecData`, torch.
    """

    num_users: int
    num_items: int
    train_edge_index: torch.Tensor
    social_edge_index: torch.Tensor
    modalities: dict
    emotion: tuple | None = None

    @property
    def item_popularity(self) -> torch.Tensor:  # [I] training interactions per item
        return torch.bincount(self.train_edge_index[1], minlength=self.num_items).float()

    def bipartite_adjacency(self) -> torch.Tensor:
        """Symmetrically normalised adjacency D^-1/2 A D^-1/2 of the user-item graph, nodes
        [users | items], as a torch sparse CSR ``[U+I, U+I]`` (built from training edges only)."""
        u, i = self.train_edge_index
        i = i + self.num_users
        ei = torch.cat([torch.stack([u, i]), torch.stack([i, u])], 1)
        return _normalised_csr(ei, self.num_users + self.num_items)

    def social_adjacency(self) -> torch.Tensor:
        """D^-1/2 A D^-1/2 of the (symmetrised) friendship graph, torch sparse CSR ``[U, U]``."""
        ei = self.social_edge_index
        ei = torch.unique(torch.cat([ei, ei.flip(0)], 1), dim=1) if ei.numel() else ei
        return _normalised_csr(ei, self.num_users)


def _normalised_csr(edge_index: torch.Tensor, n: int) -> torch.Tensor:
    # PyG's gcn_norm without self-loops (LGConv's normalisation), as a torch sparse CSR matrix that
    # audiognn.models.recsys_baselines.sym_spmm multiplies with (see why there).
    from torch_geometric.nn.conv.gcn_conv import gcn_norm

    ei, w = gcn_norm(edge_index, None, n, improved=False, add_self_loops=False)
    with warnings.catch_warnings():  # "sparse CSR support is in beta", "invariant checks disabled"
        warnings.simplefilter("ignore", UserWarning)
        adj = torch.sparse_coo_tensor(ei.flip(0), w, (n, n), check_invariants=True).coalesce()  # row = target
        return adj.to_sparse_csr()


# --------------------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------------------
def _read_tsv(path: str, ncols: int, encoding: str = "utf-8") -> list[list[str]]:
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path!r} does not exist (expected a tab-separated file with a header)")
    rows = []
    with open(path, encoding=encoding) as f:
        next(f, None)  # header
        for ln, line in enumerate(f, 2):
            parts = line.rstrip("\r\n").split("\t")
            if len(parts) < ncols:
                if not line.strip():
                    continue
                raise ValueError(f"{path}:{ln}: expected {ncols} tab-separated columns, got {len(parts)}")
            rows.append(parts[:ncols])
    return rows


def _encode(keys: np.ndarray) -> tuple[np.ndarray, list]:
    uniq, inv = np.unique(keys, return_inverse=True)
    return inv.astype(np.int64), uniq.tolist()


# Mood lexicon for Last.fm tags -> emotion quadrants of the valence/arousal plane (Russell's circumplex).
# Seed 002 §3.3 names valence-arousal labels and lyric sentiment without a recipe; this is our choice.
_MOOD_LEXICON = {
    "happy/energetic": ["happy", "upbeat", "fun", "party", "energetic", "cheerful", "joy", "feel good",
                        "summer", "dance", "uplifting", "euphoric"],
    "angry/tense": ["aggressive", "angry", "brutal", "intense", "dark", "heavy", "hate", "rage", "evil"],
    "sad/melancholic": ["sad", "melanchol", "depress", "lonely", "heartbreak", "emo", "dreary",
                        "bittersweet", "gloomy", "cry"],
    "calm/relaxed": ["chill", "relax", "calm", "mellow", "soft", "peaceful", "ambient", "dreamy", "soothing",
                     "romantic", "love", "beautiful", "sweet"],
}


def tag_emotion(tag_names: list[str]) -> np.ndarray:
    """[T, 4] membership of each tag string in the four mood quadrants (word-start substring match)."""
    out = np.zeros((len(tag_names), len(_MOOD_LEXICON)), dtype=np.float32)
    for q, words in enumerate(_MOOD_LEXICON.values()):
        pat = re.compile(r"(^|[\s\-_/])(" + "|".join(re.escape(w) for w in words) + ")")
        for t, name in enumerate(tag_names):
            if pat.search(name.lower()):
                out[t, q] = 1.0
    return out


def read_lastfm2k(root: str, text_dim: int = 64, use_tags: bool = True, emotion_from_tags: bool = True,
                  seed: int = 0) -> RecData:
    """Read HetRec 2011 Last.fm 2K in place. Items are the 17,632 artists of user_artists.dat."""
    ua = np.array(_read_tsv(os.path.join(root, "user_artists.dat"), 3), dtype=np.int64)
    user, user_keys = _encode(ua[:, 0])
    item, item_keys = _encode(ua[:, 1])
    weight = ua[:, 2].astype(np.float32)
    uidx = {k: i for i, k in enumerate(user_keys)}
    iidx = {k: i for i, k in enumerate(item_keys)}
    fr = np.array(_read_tsv(os.path.join(root, "user_friends.dat"), 2), dtype=np.int64).reshape(-1, 2)
    s = np.array([[uidx[a], uidx[b]] for a, b in fr if a in uidx and b in uidx and a != b], dtype=np.int64)
    social = np.unique(np.concatenate([s, s[:, ::-1]]), axis=0).T if len(s) else np.zeros((2, 0), np.int64)
    modalities, emotion = {}, None
    if use_tags or emotion_from_tags:
        tags = _read_tsv(os.path.join(root, "tags.dat"), 2, encoding="latin-1")
        tag_ids = np.array([int(t[0]) for t in tags], dtype=np.int64)
        tag_col = {t: j for j, t in enumerate(tag_ids)}
        uta = np.array(_read_tsv(os.path.join(root, "user_taggedartists.dat"), 3), dtype=np.int64)
        rows = np.array([iidx.get(a, -1) for a in uta[:, 1]])
        cols = np.array([tag_col.get(t, -1) for t in uta[:, 2]])
        ok = (rows >= 0) & (cols >= 0)
        from scipy.sparse import csr_matrix

        counts = csr_matrix((np.ones(ok.sum(), np.float32), (rows[ok], cols[ok])), shape=(len(item_keys), len(tags)))
        present = np.asarray(counts.sum(1)).ravel() > 0
        if use_tags:
            from sklearn.decomposition import TruncatedSVD
            from sklearn.feature_extraction.text import TfidfTransformer
            from sklearn.preprocessing import normalize

            tfidf = TfidfTransformer(sublinear_tf=True).fit_transform(counts)
            k = min(text_dim, min(tfidf.shape) - 1)
            z = TruncatedSVD(n_components=k, random_state=seed).fit_transform(tfidf)
            text = normalize(z).astype(np.float32)
            text[~present] = 0.0
            modalities["text"] = (text, present)
        if emotion_from_tags:
            mood = counts @ tag_emotion([t[1] for t in tags])  # [I, 4] mood-tag counts
            has = mood.sum(1) > 0
            emo = np.zeros_like(mood, dtype=np.float32)
            emo[has] = mood[has] / mood[has].sum(1, keepdims=True)
            emotion = (emo.astype(np.float32), has)
    return RecData(len(user_keys), len(item_keys), user, item, weight, social, modalities, emotion,
                   [str(k) for k in user_keys], [str(k) for k in item_keys])


def read_msd_triplets(path: str) -> RecData:
    """MSD Taste Profile triplets: ``user \\t song \\t play count`` (no header)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"MSD triplets file {path!r} does not exist")
    us, ss, cs = [], [], []
    with open(path) as f:
        for ln, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 3 or not parts[2].isdigit():
                raise ValueError(f"{path}:{ln}: expected 'user<TAB>song<TAB>play count', got {line.strip()!r}")
            us.append(parts[0])
            ss.append(parts[1])
            cs.append(int(parts[2]))
    return _from_keys(np.array(us), np.array(ss), np.array(cs, dtype=np.float32))


def _from_keys(users: np.ndarray, items: np.ndarray, weight: np.ndarray, social_pairs=None) -> RecData:
    user, user_keys = _encode(users.astype(str))
    item, item_keys = _encode(items.astype(str))
    key = user * len(item_keys) + item
    uniq, first, inv = np.unique(key, return_index=True, return_inverse=True)
    if len(uniq) != len(key):  # aggregate duplicate pairs by summing their weights
        w = np.zeros(len(uniq), np.float64)
        np.add.at(w, inv, weight)
        user, item, weight = user[first], item[first], w.astype(np.float32)
    social = np.zeros((2, 0), np.int64)
    if social_pairs is not None and len(social_pairs):
        uidx = {k: i for i, k in enumerate(user_keys)}
        s = np.array([[uidx[a], uidx[b]] for a, b in social_pairs if a in uidx and b in uidx and a != b],
                     dtype=np.int64).reshape(-1, 2)
        if len(s):
            social = np.unique(np.concatenate([s, s[:, ::-1]]), axis=0).T
    return RecData(len(user_keys), len(item_keys), user, item, weight, social,
                   user_keys=list(user_keys), item_keys=list(item_keys))


def _read_table(path: str, sep: str) -> dict[str, np.ndarray]:
    if not os.path.exists(path):
        raise FileNotFoundError(f"table {path!r} does not exist")
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        return {c: np.asarray(table.column(c).to_pylist()) for c in table.column_names}
    import csv

    with open(path, newline="") as f:
        rows = list(csv.reader(f, delimiter="\t" if path.endswith((".tsv", ".dat")) else sep))
    if not rows:
        raise ValueError(f"table {path!r} is empty; expected a header row")
    header = [h.strip() for h in rows[0]]
    return {h: np.array([r[j] for r in rows[1:] if r]) for j, h in enumerate(header)}


def read_table(interactions: str, social: str | None = None, user_col: str = "user", item_col: str = "item",
               weight_col: str | None = None, friend_col: str = "friend", sep: str = ",") -> RecData:
    """Generic CSV/TSV/parquet interactions with named user and item (and optional weight) columns."""
    t = _read_table(interactions, sep)
    for c in [user_col, item_col] + ([weight_col] if weight_col else []):
        if c not in t:
            raise KeyError(f"{interactions!r}: no column {c!r}; columns are {sorted(t)}")
    w = t[weight_col].astype(np.float32) if weight_col else np.ones(len(t[user_col]), np.float32)
    pairs = None
    if social:
        s = _read_table(social, sep)
        for c in (user_col, friend_col):
            if c not in s:
                raise KeyError(f"{social!r}: no column {c!r}; columns are {sorted(s)}")
        pairs = list(zip(s[user_col].astype(str), s[friend_col].astype(str), strict=True))
    return _from_keys(t[user_col], t[item_col], w, pairs)


# --------------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------------
def split_interactions(data: RecData, ratios=(0.8, 0.1, 0.1), cold_item_fraction: float = 0.0,
                       seed: int = 2020) -> np.ndarray:
    """Return ``[E]`` split codes (index into SPLITS: 0 train, 1 val, 2 test, 3 cold).

    Cold items (``cold_item_fraction`` of all items, seeded) go to 'cold' with all their interactions;
    the rest is split per user in random order with RecBole's rounding (see module docstring).
    """
    if len(ratios) != 3 or abs(sum(ratios) - 1) > 1e-6 or min(ratios) < 0:
        raise ValueError(f"split ratios must be three non-negative numbers summing to 1, got {ratios}")
    rng = np.random.default_rng(seed)
    code = np.zeros(len(data.user), dtype=np.int64)
    if cold_item_fraction > 0:
        n_cold = int(round(cold_item_fraction * data.num_items))
        cold_items = rng.choice(data.num_items, n_cold, replace=False)
        code[np.isin(data.item, cold_items)] = 3
    idx = np.flatnonzero(code == 0)
    order = idx[np.lexsort((rng.random(len(idx)), data.user[idx]))]  # grouped by user, random within
    users = data.user[order]
    starts = np.r_[0, np.flatnonzero(np.diff(users)) + 1]
    counts = np.diff(np.r_[starts, len(users)])
    cnt = [np.floor(r * counts).astype(np.int64) for r in ratios]
    cnt[0] = counts - cnt[1] - cnt[2]
    for j in (2, 1):  # RecBole's _calcu_split_ids: small users give one to test, then val
        frac = ratios[j] * counts
        bump = (cnt[0] > 1) & (frac > 0) & (frac < 1)
        cnt[j] += bump
        cnt[0] -= bump
    rank = np.arange(len(users)) - np.repeat(starts, counts)
    n0, n1 = np.repeat(cnt[0], counts), np.repeat(cnt[1], counts)
    code[order] = np.where(rank < n0, 0, np.where(rank < n0 + n1, 1, 2))
    return code


# --------------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------------
class BPRTriples(IterableDataset):
    """BPR batches ``(users, positives, negatives)``, each ``[B]`` int64, resampled every epoch.

    Epoch e permutes the training pairs with a generator seeded by (seed, e), gives rank r the r-th of
    ``world_size`` equal slices (the remainder of E mod world_size pairs is left out of that epoch), and
    draws each batch's negatives uniformly from all items with a generator seeded by (seed, e, r, batch),
    redrawing any that is a training positive of its user — so batches do not depend on worker count.
    Keep DataLoader workers persistent (the datamodule does): the epoch counter lives in the dataset.
    """

    def __init__(self, user: np.ndarray, item: np.ndarray, num_items: int, batch_size: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1, epoch: int = 0):
        self.user, self.item, self.num_items = user.astype(np.int64), item.astype(np.int64), num_items
        self.batch_size, self.seed, self.rank, self.world_size, self.epoch = batch_size, seed, rank, world_size, epoch
        self.pos_keys = np.sort(self.user * num_items + self.item)
        n_pos = np.bincount(self.user)
        if len(n_pos) and n_pos.max() >= num_items:
            raise ValueError(f"user {int(n_pos.argmax())} has every item as a positive: no negative exists")
        self.per_rank = len(self.user) // world_size

    def __len__(self) -> int:
        return -(-self.per_rank // self.batch_size)

    def is_positive(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        key = users * self.num_items + items
        pos = np.searchsorted(self.pos_keys, key).clip(max=len(self.pos_keys) - 1)
        return self.pos_keys[pos] == key

    def sample_negatives(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        neg = rng.integers(0, self.num_items, len(users))
        bad = self.is_positive(users, neg)
        while bad.any():  # rejection sampling against the user's positives
            neg[bad] = rng.integers(0, self.num_items, int(bad.sum()))
            bad[bad] = self.is_positive(users[bad], neg[bad])
        return neg

    def batches(self, epoch: int):
        perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.user))
        mine = perm[self.rank * self.per_rank:(self.rank + 1) * self.per_rank]
        wi = get_worker_info()
        wid, nw = (wi.id, wi.num_workers) if wi is not None else (0, 1)
        for b in range(wid, len(self), nw):
            sel = mine[b * self.batch_size:(b + 1) * self.batch_size]
            u, p = self.user[sel], self.item[sel]
            n = self.sample_negatives(u, np.random.default_rng([self.seed, epoch, self.rank, b]))
            yield torch.from_numpy(u), torch.from_numpy(p), torch.from_numpy(n)

    def __iter__(self):
        epoch = self.epoch
        self.epoch += 1
        return self.batches(epoch)


class UserBatches(IterableDataset):
    """Evaluation batches of user ids ``[B]``: this rank's users ``users[rank::world_size]``, no padding,
    so that sums reduced over ranks count every user exactly once."""

    def __init__(self, users: np.ndarray, batch_size: int, rank: int = 0, world_size: int = 1):
        self.users = np.asarray(users, dtype=np.int64)[rank::world_size]
        self.batch_size = batch_size

    def __len__(self) -> int:
        return -(-len(self.users) // self.batch_size)

    def __iter__(self):
        for b in range(len(self)):
            yield torch.from_numpy(self.users[b * self.batch_size:(b + 1) * self.batch_size])


class RecDataModule(LightningDataModule):
    """Interactions, social edges, item modalities and emotion; splits; BPR training and ranking evaluation.

    After ``setup()``: ``data`` (`RecData`), ``split`` (``[E]`` codes), ``graph`` (`RecGraph`, training edges
    only), ``csr(name)`` (per-user item lists of a split), ``eval_users(name)``.
    """

    def __init__(self, root: str | None = None, reader: str = "lastfm2k", interactions: str | None = None,
                 social: str | None = None, modality_files: dict[str, str] | None = None,
                 emotion_file: str | None = None, text_dim: int = 64, use_tags: bool = True,
                 emotion_from_tags: bool = True, use_social: bool = True, user_col: str = "user",
                 item_col: str = "item", weight_col: str | None = None, friend_col: str = "friend",
                 sep: str = ",", split_ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
                 cold_item_fraction: float = 0.0, seed: int = 2020, batch_size: int = 1024,
                 eval_batch_size: int = 512, num_workers: int = 0):
        super().__init__()
        if reader not in ("lastfm2k", "msd", "table"):
            raise ValueError(f"RecDataModule: reader must be 'lastfm2k', 'msd' or 'table', got {reader!r}")
        if reader == "lastfm2k" and not root:
            raise ValueError("RecDataModule(reader='lastfm2k') needs root= the hetrec2011-lastfm-2k directory")
        if reader in ("msd", "table") and not interactions:
            raise ValueError(f"RecDataModule(reader={reader!r}) needs interactions= a file path")
        self.save_hyperparameters()
        self.data: RecData | None = None
        self._given: RecData | None = None
        self._train_epoch = 0
        self._train_ds: BPRTriples | None = None

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
        for name, path in (h.modality_files or {}).items():
            keys, emb = read_modality(path)
            feats, present = align_modality(keys, emb, data.item_keys or [str(i) for i in range(data.num_items)])
            log.info("modality %s from %s: %d of %d items present", name, path, present.sum(), data.num_items)
            data.modalities[name] = (feats, present)
        if h.emotion_file:
            keys, emb = read_modality(h.emotion_file)
            data.emotion = align_modality(keys, emb, data.item_keys or [str(i) for i in range(data.num_items)])
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
        seen = np.zeros(d.num_items, bool)
        seen[d.item[tr]] = True
        te = self.split == 2
        log.info("RecDataModule: %d users, %d items, %s interactions per split; %d of %d test items unseen in "
                 "training", d.num_users, d.num_items, np.bincount(self.split, minlength=4).tolist(),
                 (~seen[np.unique(d.item[te])]).sum(), len(np.unique(d.item[te])))

    def csr(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(indptr ``[U+1]``, indices ``[n]``) of the items each user has in split ``name``."""
        code = SPLITS.index(name)
        sel = self.split == code
        u, i = self.data.user[sel], self.data.item[sel]
        order = np.lexsort((i, u))
        indptr = np.r_[0, np.cumsum(np.bincount(u, minlength=self.data.num_users))]
        return torch.from_numpy(indptr.astype(np.int64)), torch.from_numpy(i[order].astype(np.int64))

    def eval_users(self, name: str) -> np.ndarray:
        return np.unique(self.data.user[self.split == SPLITS.index(name)])

    @property
    def has_cold(self) -> bool:
        return bool((self.split == 3).any())

    # -- loaders ------------------------------------------------------------------------------------
    def _rank_world(self) -> tuple[int, int]:
        t = getattr(self, "trainer", None)
        return (t.global_rank, t.world_size) if t is not None else (0, 1)

    def train_dataloader(self) -> DataLoader:
        rank, world = self._rank_world()
        tr = self.split == 0
        self._train_ds = BPRTriples(self.data.user[tr], self.data.item[tr], self.data.num_items,
                                    self.hparams.batch_size, self.hparams.seed, rank, world, self._train_epoch)
        nw = self.hparams.num_workers
        return DataLoader(self._train_ds, batch_size=None, num_workers=nw, persistent_workers=nw > 0)

    def _eval_loader(self, name: str) -> DataLoader:
        rank, world = self._rank_world()
        return DataLoader(UserBatches(self.eval_users(name), self.hparams.eval_batch_size, rank, world),
                          batch_size=None)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self):
        return [self._eval_loader("test"), self._eval_loader("cold")] if self.has_cold else self._eval_loader("test")

    def state_dict(self) -> dict:
        return {"train_epoch": self._train_ds.epoch if self._train_ds is not None else self._train_epoch}

    def load_state_dict(self, state: dict) -> None:
        self._train_epoch = int(state.get("train_epoch", 0))
