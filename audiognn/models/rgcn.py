"""R-GCN encoder and DistMult decoder for link prediction on the music graph (seed 000 §2.2 and §4.4,
after Schlichtkrull et al. 2017, "Modeling Relational Data with Graph Convolutional Networks").

Encoder (Schlichtkrull eq. 2): h_i^(l+1) = sigma( W_0 h_i + sum_r sum_{j in N_i^r} 1/|N_i^r| W_r h_j ),
PyG ``RGCNConv`` (mean aggregation = the 1/c_{i,r} = 1/|N_i^r| normalisation), with basis (eq. 3) or
block-diagonal (eq. 4) decomposition of W_r. Inverse relations are added as their own relation types
(the paper's "R contains relations both in canonical and inverse direction"). The seed's Figure 1
describes the encoder as "interspersed with fully connected/dense layers": here a dense input layer maps
node features (track nodes) or a learned embedding (nodes without features: genres, artists) to the
hidden size, then ``num_layers`` R-GCN layers with ReLU and dropout between them.

Decoder (Schlichtkrull eq. 6): DistMult, f(s, r, o) = e_s^T R_r e_o with diagonal R_r. Hand-written:
PyG's ``torch_geometric.nn.kge.DistMult`` is a shallow KGE model holding its own node embeddings and
cannot score the encoder's outputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import RGCNConv


class RGCNEncoder(nn.Module):
    """Nodes ``0 .. num_feature_nodes-1`` are described by features ``x: [N_f, in_dim]``; nodes
    ``num_feature_nodes .. num_feature_nodes+num_free_nodes-1`` by a learned embedding.

    Args:
        in_dim: feature size of the feature nodes; num_free_nodes: nodes without features.
        num_relations: relation types of the *message* graph (forward relations; the encoder adds their
            inverses, so RGCNConv sees 2 * num_relations types).
        hidden, num_layers, dropout; num_bases (eq. 3) or num_blocks (eq. 4): at most one of them.
    """

    def __init__(
        self,
        in_dim: int,
        num_free_nodes: int,
        num_relations: int,
        hidden: int = 64,
        num_layers: int = 2,
        num_bases: int | None = 4,
        num_blocks: int | None = None,
        dropout: float = 0.2,
    ):
        super().__init__()
        if num_bases is not None and num_blocks is not None:
            raise ValueError("RGCNEncoder: set num_bases (basis decomposition) or num_blocks, not both")
        if num_blocks is not None and hidden % num_blocks:
            raise ValueError(f"RGCNEncoder: hidden ({hidden}) must be divisible by num_blocks ({num_blocks})")
        self.num_relations = num_relations
        self.input = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden))
        self.free = nn.Embedding(max(num_free_nodes, 1), hidden)
        self.num_free_nodes = num_free_nodes
        self.convs = nn.ModuleList(
            RGCNConv(
                hidden, hidden, 2 * num_relations, num_bases=num_bases, num_blocks=num_blocks, aggr="mean"
            )
            for _ in range(num_layers)
        )
        self.dropout = dropout

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, edge_type: torch.Tensor) -> torch.Tensor:
        """``x: [N_f, in_dim]``, ``edge_index: [2, E]`` (source, target), ``edge_type: [E]`` in
        ``[0, num_relations)`` -> node states ``[N_f + num_free_nodes, hidden]``."""
        h = torch.cat([self.input(x), self.free.weight[: self.num_free_nodes]], dim=0)  # [N, H]
        ei = torch.cat([edge_index, edge_index.flip(0)], dim=1)  # [2, 2E]: canonical + inverse
        et = torch.cat([edge_type, edge_type + self.num_relations])  # [2E]
        for i, conv in enumerate(self.convs):
            h = F.dropout(h, self.dropout, self.training)
            h = conv(h, ei, et)
            if i < len(self.convs) - 1:
                h = F.relu(h)
        return h


class DistMult(nn.Module):
    """DistMult decoder (Schlichtkrull eq. 6): ``score(s, r, o) = sum_d z_s[d] * R_r[d] * z_o[d]``."""

    def __init__(self, num_relations: int, hidden: int):
        super().__init__()
        self.rel = nn.Parameter(torch.empty(num_relations, hidden))
        nn.init.xavier_uniform_(self.rel)

    def forward(self, z: torch.Tensor, triples: torch.Tensor) -> torch.Tensor:
        """``z: [N, H]``, ``triples: [E, 3]`` -> scores ``[E]``."""
        return (z[triples[:, 0]] * self.rel[triples[:, 1]] * z[triples[:, 2]]).sum(-1)

    def score_all(
        self,
        z: torch.Tensor,
        triples: torch.Tensor,
        side: str = "tail",
        candidates: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Scores ``[E, C]`` of each triple with its ``side`` replaced by every candidate node (default all
        N nodes, in id order)."""
        zc = z if candidates is None else z[candidates]  # [C, H]
        if side == "tail":
            q = z[triples[:, 0]] * self.rel[triples[:, 1]]  # [E, H]
        elif side == "head":
            q = z[triples[:, 2]] * self.rel[triples[:, 1]]
        else:
            raise ValueError(f"side must be 'head' or 'tail', got {side!r}")
        return q @ zc.t()
