"""Who reads which clips: the per-epoch plan of a split's shards over ranks and DataLoader workers.

``dataset.json`` knows the clip count of every shard, so each rank and worker computes its share without
reading anything. Modes (the rules :class:`datamodules.shard_stream.ShardStream` follows):

* ``"exact"``: every clip is seen by exactly one rank per epoch. A seeded permutation (the same on every
  rank) assigns clip ``i`` to rank ``perm[i] % world``; each rank's workers split its shards (those holding
  a clip it owns). Every rank yields ``max(ceil(max_rank_clips / batch_size), num_workers)`` batches, so DDP
  never waits on a rank that ran out; batch sizes vary by at most a few clips.
* ``"resampled"``: each worker draws shards with replacement and yields a fixed number of full batches
  (:meth:`ShardPlan.resampled_batches`, open_clip's rule).
* ``"eval"``: every clip exactly once over all ranks, no padding: whole shards are dealt to ranks when
  there are at least as many shards as ranks, else clips (``i % world``); partial last batches.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np

MODES = ("exact", "resampled", "eval")


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


@dataclass
class EpochPlan:
    """One epoch's plan: ``owner[i]`` is the rank of clip ``i``; ``clips[r][w]`` / ``batches[r][w]`` the
    clips and batches of worker ``w`` of rank ``r``; ``shards[r][w]`` the shard indices it reads, in order."""

    owner: np.ndarray
    clips: list[list[int]]
    batches: list[list[int]]
    shards: list[list[list[int]]]


@dataclass
class ShardPlan:
    """The split of one split's shards over ``world`` ranks x ``num_workers`` workers (module docstring).

    Args:
        counts: clips per shard (from ``dataset.json``).
        batch_size: clips per batch on each rank.
        mode: ``"exact"``, ``"resampled"`` or ``"eval"``.
        seed: seed of the per-epoch permutation and shard order (default 0).
        world: number of ranks (default 1).
        num_workers: DataLoader workers per rank, at least 1 (default 1).
    """

    counts: list[int]
    batch_size: int
    mode: str
    seed: int = 0
    world: int = 1
    num_workers: int = 1

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be 'exact', 'resampled' or 'eval', got '{self.mode}'")
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)

    @property
    def total(self) -> int:
        """Clips in the split."""
        return int(self.offsets[-1])

    def owner(self, epoch: int) -> np.ndarray:
        """Rank that owns each clip (global index) in ``epoch``."""
        if self.mode == "exact":
            perm = np.random.default_rng([self.seed, epoch, 7]).permutation(self.total)
            return perm % self.world
        if len(self.counts) >= self.world:  # eval: deal whole shards
            shard_of = np.repeat(np.arange(len(self.counts)), self.counts)
            return shard_of % self.world
        return np.arange(self.total) % self.world

    def shard_order(self, epoch: int) -> list[int]:
        """Order in which shards are read in ``epoch`` (shuffled in exact mode)."""
        order = list(range(len(self.counts)))
        if self.mode == "exact":
            random.Random(self.seed * 1000003 + epoch).shuffle(order)
        return order

    def owned(self, owner: np.ndarray, shard: int, rank: int) -> np.ndarray:
        """Mask of the clips of ``shard`` that ``rank`` owns."""
        return owner[self.offsets[shard] : self.offsets[shard + 1]] == rank

    def epoch(self, epoch: int) -> EpochPlan:
        """The plan of ``epoch`` (exact and eval modes)."""
        owner = self.owner(epoch)
        order = self.shard_order(epoch)
        shards, clips = [], []
        for r in range(self.world):
            mine = [s for s in order if self.owned(owner, s, r).any()]  # the rank's shards, dealt to workers
            shards.append([mine[w :: self.num_workers] for w in range(self.num_workers)])
            clips.append([sum(int(self.owned(owner, s, r).sum()) for s in ws) for ws in shards[-1]])
        if self.mode == "eval":
            batches = [[math.ceil(m / self.batch_size) for m in row] for row in clips]
            return EpochPlan(owner, clips, batches, shards)
        per_rank = [sum(row) for row in clips]
        n_b = max(math.ceil(max(per_rank) / self.batch_size), self.num_workers)
        if min(per_rank) < n_b:
            raise ValueError(
                f"{self.total} training clips are too few for {self.world} ranks x {self.num_workers} workers "
                f"at batch size {self.batch_size}: lower num_workers or batch_size"
            )
        return EpochPlan(owner, clips, [allocate(n_b, row) for row in clips], shards)

    def resampled_batches(self) -> int:
        """Batches per worker in resampled mode (open_clip's rule)."""
        return max(1, math.ceil(math.ceil(self.total / (self.batch_size * self.world)) / self.num_workers))

    def batch_sizes(self, plan: EpochPlan, rank: int, worker: int) -> list[int]:
        """Sizes of the batches ``worker`` of ``rank`` yields: exact mode cuts its clips into exactly the
        planned number of batches (equal over ranks); eval mode into full batches and a partial last one."""
        m, n_b = plan.clips[rank][worker], plan.batches[rank][worker]
        if self.mode == "eval":
            return [min(self.batch_size, m - i) for i in range(0, m, self.batch_size)]
        return split_sizes(m, n_b)
