"""Recommendation data readers: HetRec 2011 Last.fm 2K, MSD Taste Profile triplets, generic tables.

Each returns a `RecData` with contiguous user and item ids (the original keys kept in ``user_keys`` /
``item_keys``):

- `read_lastfm2k`: user_artists.dat, user_friends.dat, user_taggedartists.dat + tags.dat (latin-1) in place;
  the tags become a *text* modality per artist and an *emotion* vector per artist (`datamodules.recsys.features`);
- `read_msd_triplets`: ``user \\t song \\t play count`` lines (no header);
- `read_table`: a CSV/TSV or parquet (pyarrow) table with user and item columns, an optional social table.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field

import numpy as np
import pyarrow.parquet as pq
from scipy.sparse import csr_matrix

from datamodules.recsys.features import tag_emotion_vectors, tag_text_features


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


def _social_edges(pairs, user_index: dict) -> np.ndarray:
    """``[2, S]`` both directions of the known, non-self friendship ``pairs`` (original keys), deduplicated."""
    s = np.array([[user_index[a], user_index[b]] for a, b in pairs if a in user_index and b in user_index and a != b],
                 dtype=np.int64).reshape(-1, 2)
    return np.unique(np.concatenate([s, s[:, ::-1]]), axis=0).T if len(s) else np.zeros((2, 0), np.int64)


LASTFM2K_ROOT = "data/hetrec2011-lastfm-2k"
LASTFM2K_URL = "https://grouplens.org/datasets/hetrec-2011/"


def check_lastfm2k(root: str | None, tags: bool = True) -> None:
    """Raise a one-line FileNotFoundError naming the first missing Last.fm 2K file and where to get it."""
    names = ["user_artists.dat", "user_friends.dat"] + (["user_taggedartists.dat", "tags.dat"] if tags else [])
    for name in names:
        path = os.path.join(root or LASTFM2K_ROOT, name)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"Last.fm 2K: {path} is missing; download hetrec2011-lastfm-2k.zip from {LASTFM2K_URL} and unzip "
                f"it into {LASTFM2K_ROOT}/ (or pass --data.root DIR)")


def read_lastfm2k(root: str, text_dim: int = 64, use_tags: bool = True, emotion_from_tags: bool = True,
                  seed: int = 0) -> RecData:
    """Read HetRec 2011 Last.fm 2K in place. Items are the 17,632 artists of user_artists.dat."""
    ua = np.array(_read_tsv(os.path.join(root, "user_artists.dat"), 3), dtype=np.int64)
    user, user_keys = _encode(ua[:, 0])
    item, item_keys = _encode(ua[:, 1])
    weight = ua[:, 2].astype(np.float32)
    iidx = {k: i for i, k in enumerate(item_keys)}
    fr = np.array(_read_tsv(os.path.join(root, "user_friends.dat"), 2), dtype=np.int64).reshape(-1, 2)
    social = _social_edges(fr.tolist(), {k: i for i, k in enumerate(user_keys)})
    modalities, emotion = {}, None
    if use_tags or emotion_from_tags:
        tags = _read_tsv(os.path.join(root, "tags.dat"), 2, encoding="latin-1")
        tag_col = {int(t[0]): j for j, t in enumerate(tags)}
        uta = np.array(_read_tsv(os.path.join(root, "user_taggedartists.dat"), 3), dtype=np.int64)
        rows = np.array([iidx.get(a, -1) for a in uta[:, 1]])
        cols = np.array([tag_col.get(t, -1) for t in uta[:, 2]])
        ok = (rows >= 0) & (cols >= 0)
        counts = csr_matrix((np.ones(ok.sum(), np.float32), (rows[ok], cols[ok])), shape=(len(item_keys), len(tags)))
        if use_tags:
            modalities["text"] = tag_text_features(counts, text_dim, seed)
        if emotion_from_tags:
            emotion = tag_emotion_vectors(counts, [t[1] for t in tags])
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
        social = _social_edges(social_pairs, {k: i for i, k in enumerate(user_keys)})
    return RecData(len(user_keys), len(item_keys), user, item, weight, social,
                   user_keys=list(user_keys), item_keys=list(item_keys))


def _read_table(path: str, sep: str) -> dict[str, np.ndarray]:
    if not os.path.exists(path):
        raise FileNotFoundError(f"table {path!r} does not exist")
    if path.endswith(".parquet"):
        table = pq.read_table(path)
        return {c: np.asarray(table.column(c).to_pylist()) for c in table.column_names}
    with open(path, newline="") as f:
        rows = list(csv.reader(f, delimiter="\t" if path.endswith((".tsv", ".dat")) else sep))
    if not rows:
        raise ValueError(f"table {path!r} is empty; expected a header row")
    header = [h.strip() for h in rows[0]]
    return {h: np.array([r[j] for r in rows[1:] if r]) for j, h in enumerate(header)}


def _columns(table: dict, path: str, cols) -> None:
    for c in cols:
        if c not in table:
            raise KeyError(f"{path!r}: no column {c!r}; columns are {sorted(table)}")


def read_table(interactions: str, social: str | None = None, user_col: str = "user", item_col: str = "item",
               weight_col: str | None = None, friend_col: str = "friend", sep: str = ",") -> RecData:
    """Generic CSV/TSV/parquet interactions with named user and item (and optional weight) columns."""
    t = _read_table(interactions, sep)
    _columns(t, interactions, [user_col, item_col] + ([weight_col] if weight_col else []))
    w = t[weight_col].astype(np.float32) if weight_col else np.ones(len(t[user_col]), np.float32)
    pairs = None
    if social:
        s = _read_table(social, sep)
        _columns(s, social, (user_col, friend_col))
        pairs = list(zip(s[user_col].astype(str), s[friend_col].astype(str), strict=True))
    return _from_keys(t[user_col], t[item_col], w, pairs)
