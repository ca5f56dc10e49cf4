"""The per-item modality file format of the recommender (read by `datamodules.recsys.RecDataModule`).

A modality file is an ``.npz`` archive with two arrays:

- ``keys``: ``[N]`` unicode strings, the item identifiers as they appear in the interaction data
  (Last.fm 2K: the artist id, e.g. ``"51"``; MSD Taste Profile: the song id, e.g. ``"SOAKIMP12A8C130995"``);
- ``emb``: ``[N, D]`` float32 embeddings, one row per key.

A key may repeat (several clips of one song or artist): the reader averages its rows. Items of the
interaction data that have no key in the file are *missing* for that modality (presence mask False);
keys that match no item are ignored (and counted in a log message).

`write_modality` is what ``train.py predict``/``embed`` calls to turn per-clip embeddings from an audio
checkpoint into the audio modality of the recommender.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np


def write_modality(path: str | os.PathLike, keys: Sequence[str], emb) -> None:
    """Write ``keys`` ``[N]`` and ``emb`` ``[N, D]`` (numpy array or torch tensor) to ``path`` (.npz)."""
    if hasattr(emb, "detach"):
        emb = emb.detach().cpu().numpy()
    emb = np.asarray(emb, dtype=np.float32)
    keys = np.asarray([str(k) for k in keys])
    if emb.ndim != 2 or emb.shape[0] != len(keys):
        raise ValueError(f"write_modality({path}): expected emb of shape [len(keys)={len(keys)}, D], got {emb.shape}")
    if not np.isfinite(emb).all():
        raise ValueError(f"write_modality({path}): emb contains NaN or inf")
    path = os.fspath(path)
    if not path.endswith(".npz"):
        raise ValueError(f"write_modality: the modality file must end in .npz, got {path!r}")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    np.savez(path, keys=keys, emb=emb)


def read_modality(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a modality file; returns (keys ``[N]`` str, emb ``[N, D]`` float32). Raises on a bad layout."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"modality file {path!r} does not exist")
    with np.load(path, allow_pickle=False) as z:
        missing = {"keys", "emb"} - set(z.files)
        if missing:
            raise ValueError(f"modality file {path!r} lacks array(s) {sorted(missing)}; expected 'keys' [N] and 'emb' [N, D]")
        keys, emb = z["keys"].astype(str), z["emb"].astype(np.float32)
    if emb.ndim != 2 or emb.shape[0] != keys.shape[0]:
        raise ValueError(f"modality file {path!r}: 'emb' must be [N={keys.shape[0]}, D], got {emb.shape}")
    return keys, emb


def align_modality(keys: np.ndarray, emb: np.ndarray, item_keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Average rows per key and align to ``item_keys``: returns (features ``[I, D]``, present ``[I]`` bool)."""
    index = {str(k): i for i, k in enumerate(item_keys)}
    rows = np.array([index.get(str(k), -1) for k in keys], dtype=np.int64)
    ok = rows >= 0
    feats = np.zeros((len(item_keys), emb.shape[1]), dtype=np.float64)
    counts = np.zeros(len(item_keys), dtype=np.int64)
    np.add.at(feats, rows[ok], emb[ok])
    np.add.at(counts, rows[ok], 1)
    present = counts > 0
    feats[present] /= counts[present, None]
    return feats.astype(np.float32), present
