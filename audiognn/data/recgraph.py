"""The recommender's training graph: the container every recommendation model is built from, and its matrices.

`RecGraph` holds what a model may see of the data — the (user, item) *training* pairs (never validation, test
or cold-start pairs), the user-user friendships, item modality features with presence masks and item emotion
vectors — and builds the matrices the models propagate over:

- `RecGraph.bipartite_adjacency` / `RecGraph.social_adjacency`: the symmetrically normalised adjacency
  :math:`\\hat{A} = D^{-1/2} A D^{-1/2}` (no self-loops) as a sparse CSR matrix (`normalised_csr`);
- `row_mean_adjacency`: the row-normalised (mean) adjacency of a bipartite relation;
- `concat_modalities`: the item modalities side by side, zero where an item lacks one.

`RecGraph.describe` gives a small dict of sizes (no tensors) and `RecGraph.placeholder` a graph of exactly
those sizes filled with zeros: a model built from the placeholder has the parameter and buffer shapes of one
built from the real graph, so its state dict (which carries the real graph) loads into it — this is how a
recommender checkpoint is loaded without its data.

`csr_from_pairs` and `csr_row_pairs` are the per-user item lists (CSR) of an interaction split and the
(row, item) pairs of some of its rows, used for masking and targets in full-ranking evaluation.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch_geometric.nn.conv.gcn_conv import gcn_norm

Modality = tuple[torch.Tensor, torch.Tensor]  # features [I, D] float, present [I] bool


@dataclass
class RecGraph:
    """What a recommender model is built from: the training graph and the item side information.

    Args:
        num_users (int): U, number of users.
        num_items (int): I, number of items.
        train_edge_index (torch.Tensor): ``[2, E]`` int64 (user, item) training pairs only.
        social_edge_index (torch.Tensor): ``[2, S]`` int64 directed user-user edges (both directions), may be empty.
        modalities (dict): name -> (features ``[I, D_m]`` float, present ``[I]`` bool); missing rows are zero.
        emotion (tuple, optional): (vectors ``[I, D_e]`` float, present ``[I]`` bool) or ``None``.
    """

    num_users: int
    num_items: int
    train_edge_index: torch.Tensor
    social_edge_index: torch.Tensor
    modalities: dict[str, Modality]
    emotion: Modality | None = None

    @property
    def item_popularity(self) -> torch.Tensor:
        """``[I]`` float: training interactions per item."""
        return torch.bincount(self.train_edge_index[1], minlength=self.num_items).float()

    def bipartite_adjacency(self) -> torch.Tensor:
        """:math:`D^{-1/2} A D^{-1/2}` of the user-item training graph over nodes [users | items], a sparse CSR
        ``[U+I, U+I]``."""
        u, i = self.train_edge_index
        i = i + self.num_users
        ei = torch.cat([torch.stack([u, i]), torch.stack([i, u])], 1)
        return normalised_csr(ei, self.num_users + self.num_items)

    def social_adjacency(self) -> torch.Tensor:
        """:math:`D^{-1/2} A D^{-1/2}` of the (symmetrised) friendship graph, a sparse CSR ``[U, U]``."""
        ei = self.social_edge_index
        ei = torch.unique(torch.cat([ei, ei.flip(0)], 1), dim=1) if ei.numel() else ei
        return normalised_csr(ei, self.num_users)

    def describe(self) -> dict:
        """Sizes only (ints, lists, no tensors): what `placeholder` needs to rebuild a graph of this shape.

        A modality's or the emotion's ``present`` count is kept because models leave out a modality absent for
        every item.
        """
        def part(m: Modality) -> list[int]:
            return [int(m[0].shape[1]), int(m[1].sum())]

        return {"num_users": int(self.num_users), "num_items": int(self.num_items),
                "num_train_edges": int(self.train_edge_index.shape[1]),
                "num_social_edges": int(self.social_edge_index.shape[1]),
                "modalities": {k: part(v) for k, v in self.modalities.items()},
                "emotion": None if self.emotion is None else part(self.emotion)}

    @classmethod
    def placeholder(cls, description: dict) -> RecGraph:
        """A graph of the sizes in ``description`` (from `describe`): zero edges and features, the first
        ``present`` items of each modality marked present. Its content is meant to be overwritten."""
        n_items = description["num_items"]

        def part(spec) -> Modality:
            dim, present = spec
            return torch.zeros(n_items, dim), torch.arange(n_items) < present

        emotion = description.get("emotion")
        return cls(description["num_users"], n_items,
                   torch.zeros(2, description["num_train_edges"], dtype=torch.long),
                   torch.zeros(2, description["num_social_edges"], dtype=torch.long),
                   {k: part(v) for k, v in description.get("modalities", {}).items()},
                   None if emotion is None else part(emotion))


def normalised_csr(edge_index: torch.Tensor, n: int) -> torch.Tensor:
    """:math:`D^{-1/2} A D^{-1/2}` of ``edge_index`` ``[2, E]`` (PyG's ``gcn_norm`` without self-loops, the
    normalisation of ``LGConv``) as a sparse CSR ``[n, n]`` whose row is the message target."""
    ei, w = gcn_norm(edge_index, None, n, improved=False, add_self_loops=False)
    with warnings.catch_warnings():  # "sparse CSR support is in beta", "invariant checks disabled"
        warnings.simplefilter("ignore", UserWarning)
        adj = torch.sparse_coo_tensor(ei.flip(0), w, (n, n), check_invariants=True).coalesce()
        return adj.to_sparse_csr()


def row_mean_adjacency(rows: torch.Tensor, cols: torch.Tensor, n_rows: int, n_cols: int) -> torch.Tensor:
    """Sparse COO ``[n_rows, n_cols]`` with ``1 / deg(row)`` at each (row, col) pair: ``adj @ x`` is the mean of
    ``x`` over each row's neighbours (zero for a row without any)."""
    deg = torch.bincount(rows, minlength=n_rows).clamp(min=1).float()
    return torch.sparse_coo_tensor(torch.stack([rows, cols]), 1.0 / deg[rows], (n_rows, n_cols)).coalesce()


def concat_modalities(modalities: dict[str, Modality], names: list[str] | None = None) -> torch.Tensor:
    """``[I, ΣD_m]`` float: the modalities ``names`` (None: all) side by side, zero where an item lacks one."""
    feats = [f * m[:, None].to(f.dtype) for k, (f, m) in modalities.items() if names is None or k in names]
    if not feats:
        raise ValueError(f"no item modality to concatenate (available: {sorted(modalities)}, asked: {names})")
    return torch.cat(feats, 1).float()


def csr_from_pairs(rows: torch.Tensor, cols: torch.Tensor, n_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(indptr ``[n_rows+1]``, indices ``[n]``) int64: the sorted ``cols`` of each row of the pairs ``[n]``."""
    order = torch.argsort(rows * (int(cols.max()) + 1 if len(cols) else 1) + cols)
    indptr = torch.zeros(n_rows + 1, dtype=torch.long)
    indptr[1:] = torch.bincount(rows, minlength=n_rows).cumsum(0)
    return indptr, cols[order].long()


def csr_row_pairs(indptr: torch.Tensor, indices: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``[2, n]`` (position in ``rows``, column) of every entry of the CSR rows ``rows`` ``[B]``."""
    start, end = indptr[rows], indptr[rows + 1]
    counts = end - start  # [B]
    r = torch.repeat_interleave(torch.arange(len(rows), device=rows.device), counts)
    offs = torch.arange(int(counts.sum()), device=rows.device) - torch.repeat_interleave(counts.cumsum(0) - counts,
                                                                                          counts)
    return torch.stack([r, indices[torch.repeat_interleave(start, counts) + offs]])
