"""Filtered link-prediction evaluation and filtered negative sampling (Dhongade and Rovira, *Graph Neural
Networks for Music Genre Classification*, §2.2 and §4.4, following Schlichtkrull et al., *Modeling Relational
Data with Graph Convolutional Networks*, §5, and the "filtered" setting of Bordes et al., *Translating
Embeddings for Modeling Multi-relational Data*).

Hand-written because neither library has a vectorised filtered variant: PyG's ``negative_sampling`` works on
homogeneous ``edge_index`` without relations, its R-GCN link-prediction example filters with a Python loop per
test triple, and PyG's ``LinkPred*`` / torchmetrics' retrieval metrics take top-k lists or per-query scores
without a filter.

A triple is ``(head, relation, tail)``, a row of a ``[E, 3]`` long tensor; node ids lie in
``[0, num_nodes)`` and relation ids in ``[0, num_relations)``. Triples are hashed to one int64 key,
``(h * R + r) * N + t``, so membership is a ``torch.isin`` against the sorted keys of the known triples.
"""

from __future__ import annotations

import torch

HITS_AT = (1, 3, 10)


def triple_keys(triples: torch.Tensor, num_nodes: int, num_relations: int) -> torch.Tensor:
    """``[E, 3]`` (h, r, t) -> ``[E]`` int64 keys ``(h * R + r) * N + t``."""
    if triples.dim() != 2 or triples.shape[1] != 3:
        raise ValueError(f"triples must be [E, 3] (head, relation, tail), got shape {tuple(triples.shape)}")
    t = triples.long()
    return (t[:, 0] * num_relations + t[:, 1]) * num_nodes + t[:, 2]


def known_triple_keys(triples: torch.Tensor, num_nodes: int, num_relations: int) -> torch.Tensor:
    """Sorted unique keys of every true triple (train + validation + test): the filter."""
    return torch.unique(triple_keys(triples, num_nodes, num_relations))


def filtered_negative_sampling(
    positives: torch.Tensor,
    known_keys: torch.Tensor,
    num_nodes: int,
    num_relations: int,
    num_negatives: int = 1,
    node_lo: torch.Tensor | None = None,
    node_hi: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    max_tries: int = 100,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Corrupt each positive triple ``num_negatives`` times, replacing its head or its tail (each with
    probability 1/2) by a random node, and resample every corruption that is a true triple
    (``known_keys``) -- filtered negatives for the "negative injection" of Dhongade and Rovira §2.2.

    ``node_lo[v]`` / ``node_hi[v]`` (optional, ``[N]``): the replacement for node v is drawn uniformly from
    ``[node_lo[v], node_hi[v])`` (e.g. the id range of v's node type: typed corruption); default: all nodes.
    Corruptions still true after ``max_tries`` rounds (a positive with no false corruption in its range)
    are dropped, so the result never contains a true triple.

    Returns ``(negatives [M, 3], source [M])`` with ``source`` the index of the positive each came from.
    """
    device = positives.device
    pos = positives.long().repeat_interleave(num_negatives, dim=0)  # [E*n, 3]
    source = torch.arange(positives.shape[0], device=device).repeat_interleave(num_negatives)
    if pos.numel() == 0:
        return pos, source
    side = torch.randint(0, 2, (pos.shape[0],), device=device, generator=generator) * 2  # 0 = head, 2 = tail
    rows = torch.arange(pos.shape[0], device=device)
    replaced = pos[rows, side]  # [M]
    lo = node_lo[replaced] if node_lo is not None else torch.zeros_like(replaced)
    hi = node_hi[replaced] if node_hi is not None else torch.full_like(replaced, num_nodes)
    neg = pos.clone()
    todo = torch.ones(pos.shape[0], dtype=torch.bool, device=device)
    for _ in range(max_tries):
        idx = todo.nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        u = torch.rand(idx.numel(), device=device, generator=generator)
        cand = lo[idx] + (u * (hi[idx] - lo[idx]).to(u.dtype)).long()
        cand = torch.minimum(cand, hi[idx] - 1)  # guard against u * n rounding up to n
        neg[idx, side[idx]] = cand
        bad = torch.isin(triple_keys(neg[idx], num_nodes, num_relations), known_keys)
        todo[idx] = bad
    keep = ~todo
    return neg[keep], source[keep]


def filtered_ranks(
    scores: torch.Tensor,
    triples: torch.Tensor,
    known_keys: torch.Tensor,
    num_nodes: int,
    num_relations: int,
    side: str = "tail",
) -> torch.Tensor:
    """Filtered rank of each test triple among its corruptions.

    ``scores: [E, N]``: ``scores[e, c]`` is the score of triple e with its ``side`` ("head" or "tail")
    replaced by node c (so ``scores[e, true node]`` is the triple's own score). Corruptions that are true
    triples (in ``known_keys``, other than e itself) are removed; rank = 1 + #(scores above the true one)
    + #(ties) / 2 (ties counted half, so a constant scorer gets the mean rank, not rank 1).
    Returns ``[E]`` float ranks (1 = best).
    """
    if side not in ("head", "tail"):
        raise ValueError(f"side must be 'head' or 'tail', got {side!r}")
    E, N = scores.shape
    if N != num_nodes or triples.shape[0] != E:
        raise ValueError(f"scores must be [E={triples.shape[0]}, N={num_nodes}], got {tuple(scores.shape)}")
    t = triples.long()
    col = 0 if side == "head" else 2
    true_node = t[:, col]
    cand = torch.arange(N, device=scores.device)
    # keys of every corruption: [E, N]
    if side == "tail":
        keys = (t[:, 0:1] * num_relations + t[:, 1:2]) * num_nodes + cand.view(1, N)
    else:
        keys = (cand.view(1, N) * num_relations + t[:, 1:2]) * num_nodes + t[:, 2:3]
    is_true = torch.isin(keys, known_keys)  # [E, N]
    is_true[torch.arange(E, device=scores.device), true_node] = False  # keep the test triple itself
    own = scores.gather(1, true_node.view(E, 1))  # [E, 1]
    valid = ~is_true
    valid[torch.arange(E, device=scores.device), true_node] = False  # compare against the others only
    greater = ((scores > own) & valid).sum(1).float()
    ties = ((scores == own) & valid).sum(1).float()
    return 1.0 + greater + 0.5 * ties


def ranking_metrics(ranks: torch.Tensor, hits_at: tuple[int, ...] = HITS_AT) -> dict[str, torch.Tensor]:
    """Mean reciprocal rank and Hits@k of ``[E]`` ranks (1 = best)."""
    ranks = ranks.float()
    out = {"mrr": (1.0 / ranks).mean()}
    for k in hits_at:
        out[f"hits@{k}"] = (ranks <= k).float().mean()
    return out
