"""Batches of the recommender: BPR triples for training, user batches with their masks for full-ranking evaluation.

`BPRTriples`: the epoch's training pairs are permuted by a generator seeded with (seed, epoch), split evenly
across DDP ranks, and the negatives are drawn uniformly and rejected against the user's training positives
(BPR: one negative per positive).

`UserBatches`: each rank evaluates ``users[rank::world_size]`` (no padding, so sums reduced over ranks count
every user exactly once); every batch carries what the evaluation needs besides the model: the items to mask
(training, and validation at test time), the target items and, for a cold-start split, the candidate items.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from audiognn.data.recgraph import csr_row_pairs

CSR = tuple[torch.Tensor, torch.Tensor]  # (indptr [U+1], indices [n]) int64


class BPRTriples(IterableDataset):
    """BPR batches ``(users, positives, negatives)``, each ``[B]`` int64, resampled every epoch.

    Epoch e permutes the training pairs with a generator seeded by (seed, e), gives rank r the r-th of
    ``world_size`` equal slices (the remainder of E mod world_size pairs is left out of that epoch), and
    draws each batch's negatives uniformly from all items with a generator seeded by (seed, e, r, batch),
    redrawing any that is a training positive of its user — so batches do not depend on worker count.

    The epoch is set from outside (`set_epoch`, by `EpochLoader` before every iteration) and held in shared
    memory, so DataLoader workers — persistent ones included — read the value the main process set; iterating
    does not advance it.
    """

    def __init__(self, user: np.ndarray, item: np.ndarray, num_items: int, batch_size: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1, epoch: int = 0):
        self.user, self.item, self.num_items = user.astype(np.int64), item.astype(np.int64), num_items
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self._epoch = torch.tensor(epoch, dtype=torch.long).share_memory_()
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

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(int(epoch))

    def __iter__(self):
        return self.batches(self.epoch)


class EpochLoader(DataLoader):
    """A DataLoader over `BPRTriples` (whole batches) that sets the dataset's epoch to ``epoch_fn()`` each time
    an iteration starts, in the main process (the trainer's epoch: see ``RecDataModule.sampling_epoch``)."""

    def __init__(self, dataset: BPRTriples, epoch_fn: Callable[[], int], **kwargs):
        super().__init__(dataset, batch_size=None, **kwargs)
        self.epoch_fn = epoch_fn

    def __iter__(self):
        self.dataset.set_epoch(self.epoch_fn())
        return super().__iter__()


class UserBatches(IterableDataset):
    """Evaluation batches: dicts with

    - ``users`` ``[B]`` int64: this rank's users ``users[rank::world_size]``, in order;
    - ``exclude`` ``[2, n]`` int64: (position in the batch, item) pairs to rank below every other item (the
      items of the ``exclude`` CSRs: training, and validation at test time);
    - ``target`` ``[2, m]`` int64: (position in the batch, item) pairs of the items to retrieve;
    - ``candidates`` ``[I]`` bool, only when ``candidates`` is given: the items that may be ranked at all.

    Args:
        users (np.ndarray): ``[N]`` users to evaluate (each with at least one target item).
        batch_size (int): users per batch.
        rank (int, optional): this process's rank. (default: ``0``)
        world_size (int, optional): number of processes. (default: ``1``)
        target (CSR, optional): per-user target items. (default: ``None``: no ``target`` key)
        exclude (list[CSR], optional): per-user items to mask. (default: ``()``)
        candidates (torch.Tensor, optional): ``[I]`` bool candidate items. (default: ``None``)
    """

    def __init__(self, users: np.ndarray, batch_size: int, rank: int = 0, world_size: int = 1,
                 target: CSR | None = None, exclude: list[CSR] = (), candidates: torch.Tensor | None = None):
        self.users = torch.as_tensor(np.asarray(users, dtype=np.int64)[rank::world_size])
        self.batch_size, self.target, self.exclude, self.candidates = batch_size, target, list(exclude), candidates

    def __len__(self) -> int:
        return -(-len(self.users) // self.batch_size)

    def __iter__(self):
        for b in range(len(self)):
            users = self.users[b * self.batch_size:(b + 1) * self.batch_size]
            batch = {"users": users,
                     "exclude": torch.cat([csr_row_pairs(*m, users) for m in self.exclude], 1) if self.exclude
                     else torch.zeros(2, 0, dtype=torch.long)}
            if self.target is not None:
                batch["target"] = csr_row_pairs(*self.target, users)
            if self.candidates is not None:
                batch["candidates"] = self.candidates
            yield batch
