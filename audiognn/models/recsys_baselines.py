"""Recommendation baselines of seed 002 §5.2 and the LightGCN reference: MostPop, BPR-MF, VBPR, NGCF, LightGCN.

Every model is a plain ``nn.Module`` built from a `datamodules.recsys.RecGraph` (training edges only)
and follows one contract, used by `audiognn.tasks.recommender.Recommender`:

- ``forward() -> RecOutput``: final user ``[U, d]`` and item ``[I, d]`` representations (full graph);
- ``score(out, users [B], items [B]) -> [B]`` and ``score_all(out, users [B]) -> [B, I]``;
- ``aux_losses(out, users, pos, neg) -> dict`` of extra, already weighted loss terms (MM-GNN);
- ``reg_loss(users, pos, neg)``: 0.5 * squared L2 norm of the batch's ego (layer-0) parameters / B,
  multiplied by λ2 in the Recommender (seed 002 §5.3, λ2 = 1e-5);
- ``trainable``: False for MostPop (no parameters to fit).

Graph propagation is LightGCN's operator Â = D^-1/2 A D^-1/2 (PyG's ``LGConv``; the tests check that
`sym_spmm` equals ``LGConv()(x, edge_index)``) applied as a torch sparse CSR matmul with a hand-written
backward. Why not LGConv itself: on 2 CPU cores, one 3-layer forward+backward over Last.fm 2K took
~0.16 s with LGConv on an edge_index (gather/scatter of every edge; torch-sparse is not available),
0.3-2 s with LGConv or ``torch.sparse.mm`` on a CSR adjacency (autograd transposes the CSR matrix,
a sort, on every backward) and 5x less with `sym_spmm`, whose backward reuses Â because Â is
symmetric (Âᵀ = Â). Training does one full propagation per batch, so this sets the epoch time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class RecOutput:
    user: torch.Tensor  # [U, d]
    item: torch.Tensor  # [I, d]
    extra: dict = field(default_factory=dict)


class RecModel(nn.Module):
    """Shared contract (see the module docstring)."""

    trainable = True

    def __init__(self, graph):
        super().__init__()
        self.num_users, self.num_items = graph.num_users, graph.num_items

    def score(self, out: RecOutput, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:  # [B]
        return (out.user[users] * out.item[items]).sum(-1)

    def score_all(self, out: RecOutput, users: torch.Tensor) -> torch.Tensor:  # [B, I]
        return out.user[users] @ out.item.T

    def aux_losses(self, out: RecOutput, users, pos, neg) -> dict[str, torch.Tensor]:
        return {}

    def ego_rows(self, users, pos, neg) -> list[torch.Tensor]:
        return []

    def reg_loss(self, users, pos, neg) -> torch.Tensor:
        rows = self.ego_rows(users, pos, neg)
        if not rows:
            return torch.zeros(())
        return 0.5 * sum(r.pow(2).sum() for r in rows) / len(users)

    def user_item_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings for plots (t-SNE of songs, user clusters)."""
        out = self()
        return out.user, out.item


class _SymSpMM(torch.autograd.Function):
    """Â @ h for a *symmetric* sparse Â (no gradient for Â): backward is Âᵀ g = Â g, no transpose."""

    @staticmethod
    def forward(ctx, adj, h):
        ctx.adj = adj
        return adj @ h

    @staticmethod
    def backward(ctx, grad):
        return None, ctx.adj @ grad


def sym_spmm(adj: torch.Tensor, h: torch.Tensor) -> torch.Tensor:  # [N, N] sparse symmetric, [N, d]
    return _SymSpMM.apply(adj, h)


def light_propagate(x: torch.Tensor, adj: torch.Tensor, num_layers: int, weights) -> torch.Tensor:
    """Σ_l w_l · Â^l x with Â the normalised symmetric adjacency (LightGCN eq. 3-4; seed 002 eqs. 2-3)."""
    out = weights[0] * x
    h = x
    for layer in range(1, num_layers + 1):
        h = sym_spmm(adj, h)
        out = out + weights[layer] * h
    return out


class MostPop(RecModel):
    """Scores every item by its number of training interactions, for every user."""

    trainable = False

    def __init__(self, graph):
        super().__init__(graph)
        self.register_buffer("popularity", graph.item_popularity, persistent=False)  # [I]

    def forward(self) -> RecOutput:
        return RecOutput(torch.ones(self.num_users, 1, device=self.popularity.device), self.popularity[:, None])


class BPRMF(RecModel):
    """Matrix factorisation trained with BPR (Rendle et al. 2009)."""

    def __init__(self, graph, embedding_dim: int = 64, init_std: float = 0.1):
        super().__init__(graph)
        self.user_emb = nn.Embedding(self.num_users, embedding_dim)
        self.item_emb = nn.Embedding(self.num_items, embedding_dim)
        nn.init.normal_(self.user_emb.weight, std=init_std)
        nn.init.normal_(self.item_emb.weight, std=init_std)

    def forward(self) -> RecOutput:
        return RecOutput(self.user_emb.weight, self.item_emb.weight)

    def ego_rows(self, users, pos, neg):
        return [self.user_emb(users), self.item_emb(pos), self.item_emb(neg)]


def concat_modalities(graph, names=None) -> torch.Tensor:
    """``[I, ΣD]`` concatenation of the item modalities, zeros where an item lacks one."""
    feats = [f * m[:, None].to(f.dtype) for k, (f, m) in graph.modalities.items() if names is None or k in names]
    if not feats:
        raise ValueError("VBPR needs at least one item modality (RecGraph.modalities is empty)")
    return torch.cat(feats, 1).float()


class VBPR(RecModel):
    """VBPR (He & McAuley 2016): x̂_ui = β_i + γ_u·γ_i + θ_u·(E f_i) + β'·f_i, f_i the item's content
    features (here: the concatenated modalities of the graph, zero where missing — early fusion, the
    reference point of seed 002 §5.2). d is split evenly between the latent and the content factors."""

    def __init__(self, graph, embedding_dim: int = 64, modalities: list[str] | None = None, init_std: float = 0.1):
        super().__init__(graph)
        self.register_buffer("features", concat_modalities(graph, modalities), persistent=False)  # [I, F]
        h = embedding_dim // 2
        self.gamma_u = nn.Embedding(self.num_users, h)
        self.theta_u = nn.Embedding(self.num_users, embedding_dim - h)
        self.gamma_i = nn.Embedding(self.num_items, h)
        self.beta_i = nn.Embedding(self.num_items, 1)
        self.proj = nn.Linear(self.features.shape[1], embedding_dim - h, bias=False)  # E
        self.beta_f = nn.Linear(self.features.shape[1], 1, bias=False)  # β'
        for e in (self.gamma_u, self.theta_u, self.gamma_i):
            nn.init.normal_(e.weight, std=init_std)
        nn.init.zeros_(self.beta_i.weight)

    def forward(self) -> RecOutput:
        bias = self.beta_i.weight + self.beta_f(self.features)  # [I, 1]
        item = torch.cat([self.gamma_i.weight, self.proj(self.features), bias], 1)  # [I, d+1]
        user = torch.cat([self.gamma_u.weight, self.theta_u.weight, torch.ones_like(self.gamma_u.weight[:, :1])], 1)
        return RecOutput(user, item)

    def ego_rows(self, users, pos, neg):
        return [self.gamma_u(users), self.theta_u(users), self.gamma_i(pos), self.gamma_i(neg)]


class LightGCN(RecModel):
    """LightGCN (He et al. 2020): e^(l+1) = Â e^(l) (PyG LGConv's operator); final = mean over layers 0..L."""

    def __init__(self, graph, embedding_dim: int = 64, num_layers: int = 3, init_std: float = 0.1):
        super().__init__(graph)
        self.num_layers = num_layers
        self.emb = nn.Embedding(self.num_users + self.num_items, embedding_dim)
        nn.init.normal_(self.emb.weight, std=init_std)
        self.register_buffer("adj", graph.bipartite_adjacency(), persistent=False)

    def forward(self) -> RecOutput:
        w = [1.0 / (self.num_layers + 1)] * (self.num_layers + 1)
        x = light_propagate(self.emb.weight, self.adj, self.num_layers, w)  # [U+I, d]
        return RecOutput(x[: self.num_users], x[self.num_users:])

    def ego_rows(self, users, pos, neg):
        return [self.emb(users), self.emb(pos + self.num_users), self.emb(neg + self.num_users)]


class NGCF(RecModel):
    """NGCF (Wang et al. 2019): e^(l+1) = LeakyReLU(W1 (e^(l) + Â e^(l)) + W2 (Â e^(l) ⊙ e^(l))), message
    dropout, each layer L2-normalised, final = concatenation of layers 0..L (as the authors' code)."""

    def __init__(self, graph, embedding_dim: int = 64, num_layers: int = 3, dropout: float = 0.1,
                 init_std: float = 0.1):
        super().__init__(graph)
        self.emb = nn.Embedding(self.num_users + self.num_items, embedding_dim)
        nn.init.normal_(self.emb.weight, std=init_std)
        self.w1 = nn.ModuleList(nn.Linear(embedding_dim, embedding_dim) for _ in range(num_layers))
        self.w2 = nn.ModuleList(nn.Linear(embedding_dim, embedding_dim) for _ in range(num_layers))
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("adj", graph.bipartite_adjacency(), persistent=False)

    def forward(self) -> RecOutput:
        h = self.emb.weight  # [U+I, d]
        outs = [h]
        for w1, w2 in zip(self.w1, self.w2, strict=True):
            side = sym_spmm(self.adj, h)  # Â e
            h = F.leaky_relu(w1(side + h) + w2(side * h), 0.2)
            h = self.dropout(h)
            outs.append(F.normalize(h, dim=1))
        x = torch.cat(outs, 1)  # [U+I, d (L+1)]
        return RecOutput(x[: self.num_users], x[self.num_users:])

    def ego_rows(self, users, pos, neg):
        return [self.emb(users), self.emb(pos + self.num_users), self.emb(neg + self.num_users)]
