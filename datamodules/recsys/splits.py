"""Leakage-free interaction splits: per-user 8:1:1 (RecBole's rounding) and a cold-start item split.

`split_interactions` gives every interaction a split code (index into `SPLITS`). Cold items first:
``cold_item_fraction`` of the items (seeded) go to ``cold`` with all their interactions. The rest is split per
user in a seeded random order with RecBole's rounding: a user with n interactions gives floor(0.1 n) to
validation and test, and at least one to each when 0 < 0.1 n < 1 as long as training keeps more than one.
`split_csr` turns one split into per-user item lists.
"""

from __future__ import annotations

import numpy as np
import torch

from audiognn.data.recgraph import csr_from_pairs
from datamodules.recsys.readers import RecData

SPLITS = ("train", "val", "test", "cold")


def split_interactions(data: RecData, ratios=(0.8, 0.1, 0.1), cold_item_fraction: float = 0.0,
                       seed: int = 2020) -> np.ndarray:
    """Return ``[E]`` split codes (index into SPLITS: 0 train, 1 val, 2 test, 3 cold); see the module docstring."""
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


def split_csr(data: RecData, code: np.ndarray, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(indptr ``[U+1]``, indices ``[n]``) int64: the sorted items each user has in split ``name``."""
    sel = code == SPLITS.index(name)
    return csr_from_pairs(torch.from_numpy(data.user[sel]), torch.from_numpy(data.item[sel]), data.num_users)
