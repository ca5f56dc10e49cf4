r"""The recommendation baselines of Ziaoddini, *Socially Aware Music Recommendation: a Multi-Modal GNN* (§5.2),
and the LightGCN reference: MostPop, BPR-MF, VBPR, NGCF, LightGCN.

Each is a `audiognn.models.recsys_base.RecModel` built from an `audiognn.data.recgraph.RecGraph` (training
edges only). Graph propagation is LightGCN's operator :math:`\hat{A} = D^{-1/2} A D^{-1/2}` applied by
`audiognn.graph.sparse_propagation.sym_spmm` (why not PyG's ``LGConv``: see there).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from audiognn.data.recgraph import RecGraph, concat_modalities
from audiognn.graph.sparse_propagation import light_propagate, sym_spmm
from audiognn.models.recsys_base import RecModel, RecOutput

__all__ = ["BPRMF", "NGCF", "VBPR", "LightGCN", "MostPop", "RecModel", "RecOutput", "concat_modalities",
           "light_propagate", "sym_spmm"]


class MostPop(RecModel):
    r"""Most popular: every user gets the items ranked by their number of training interactions.

    .. math::
        \hat{y}_{ui} = |\{v : (v, i) \in \mathcal{E}_{\text{train}}\}|

    Args:
        graph (RecGraph): the training graph.

    Shapes:
        - **output:** user ``[U, 1]`` (ones), item ``[I, 1]`` (popularity)
    """

    trainable = False

    def __init__(self, graph: RecGraph):
        super().__init__(graph)
        self.build(graph)

    def build(self, graph: RecGraph) -> None:
        self.register_buffer("popularity", graph.item_popularity, persistent=False)  # [I]

    def forward(self) -> RecOutput:
        return RecOutput(torch.ones(self.num_users, 1, device=self.popularity.device), self.popularity[:, None])


class BPRMF(RecModel):
    r"""Matrix factorisation trained with BPR, from Rendle et al., *BPR: Bayesian Personalized Ranking from
    Implicit Feedback*.

    .. math::
        \hat{y}_{ui} = p_u^\top q_i

    Args:
        graph (RecGraph): the training graph (its sizes).
        embedding_dim (int, optional): d. (default: ``64``)
        init_std (float, optional): standard deviation of the normal initialisation. (default: ``0.1``)

    Shapes:
        - **output:** user ``[U, d]``, item ``[I, d]``
    """

    def __init__(self, graph: RecGraph, embedding_dim: int = 64, init_std: float = 0.1):
        super().__init__(graph)
        self.user_emb = nn.Embedding(self.num_users, embedding_dim)
        self.item_emb = nn.Embedding(self.num_items, embedding_dim)
        nn.init.normal_(self.user_emb.weight, std=init_std)
        nn.init.normal_(self.item_emb.weight, std=init_std)

    def forward(self) -> RecOutput:
        return RecOutput(self.user_emb.weight, self.item_emb.weight)

    def ego_rows(self, users, pos, neg):
        return [self.user_emb(users), self.item_emb(pos), self.item_emb(neg)]


class VBPR(RecModel):
    r"""VBPR, from He and McAuley, *VBPR: Visual Bayesian Personalized Ranking from Implicit Feedback*.

    .. math::
        \hat{y}_{ui} = \beta_i + \gamma_u^\top \gamma_i + \theta_u^\top (E f_i) + \beta'^\top f_i

    :math:`f_i` is the item's content feature: here the graph's modalities concatenated, zero where an item
    lacks one (early fusion, the reference point of Ziaoddini §5.2). d is split evenly between the latent
    (:math:`\gamma`) and the content (:math:`\theta`) factors.

    Args:
        graph (RecGraph): the training graph with at least one item modality.
        embedding_dim (int, optional): d. (default: ``64``)
        modalities (list[str], optional): modalities forming :math:`f_i`; ``None``: all. (default: ``None``)
        init_std (float, optional): standard deviation of the normal initialisation. (default: ``0.1``)

    Shapes:
        - **output:** user ``[U, d+1]``, item ``[I, d+1]`` (the last column carries the item bias)
    """

    def __init__(self, graph: RecGraph, embedding_dim: int = 64, modalities: list[str] | None = None,
                 init_std: float = 0.1):
        kept = [m for m in graph.modalities if modalities is None or m in modalities]
        super().__init__(graph, modalities=kept)
        self.build(graph)
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

    def build(self, graph: RecGraph) -> None:
        feats = concat_modalities(graph.modalities, self.graph.modality_names)
        self.register_buffer("features", feats, persistent=False)  # [I, F]

    def forward(self) -> RecOutput:
        bias = self.beta_i.weight + self.beta_f(self.features)  # [I, 1]
        item = torch.cat([self.gamma_i.weight, self.proj(self.features), bias], 1)  # [I, d+1]
        user = torch.cat([self.gamma_u.weight, self.theta_u.weight, torch.ones_like(self.gamma_u.weight[:, :1])], 1)
        return RecOutput(user, item)

    def ego_rows(self, users, pos, neg):
        return [self.gamma_u(users), self.theta_u(users), self.gamma_i(pos), self.gamma_i(neg)]


class _GraphEmbeddings(RecModel):
    """Shared by LightGCN and NGCF: one embedding table over [users | items] and the bipartite :math:`\\hat{A}`."""

    def __init__(self, graph: RecGraph, embedding_dim: int, init_std: float):
        super().__init__(graph)
        self.emb = nn.Embedding(self.num_users + self.num_items, embedding_dim)
        nn.init.normal_(self.emb.weight, std=init_std)

    def build(self, graph: RecGraph) -> None:
        self.register_buffer("adj", graph.bipartite_adjacency(), persistent=False)  # [U+I, U+I]

    def split(self, x: torch.Tensor) -> RecOutput:
        return RecOutput(x[: self.num_users], x[self.num_users:])

    def ego_rows(self, users, pos, neg):
        return [self.emb(users), self.emb(pos + self.num_users), self.emb(neg + self.num_users)]


class LightGCN(_GraphEmbeddings):
    r"""LightGCN, from He et al., *LightGCN: Simplifying and Powering Graph Convolution Network for
    Recommendation* (eqs. 3-4; PyG ``LGConv``'s operator).

    .. math::
        e^{(l+1)} = \hat{A} e^{(l)}, \qquad e = \frac{1}{L+1} \sum_{l=0}^{L} e^{(l)}, \qquad
        \hat{y}_{ui} = e_u^\top e_i

    Args:
        graph (RecGraph): the training graph.
        embedding_dim (int, optional): d. (default: ``64``)
        num_layers (int, optional): L. (default: ``3``)
        init_std (float, optional): standard deviation of the normal initialisation. (default: ``0.1``)

    Shapes:
        - **output:** user ``[U, d]``, item ``[I, d]``
    """

    def __init__(self, graph: RecGraph, embedding_dim: int = 64, num_layers: int = 3, init_std: float = 0.1):
        super().__init__(graph, embedding_dim, init_std)
        self.num_layers = num_layers
        self.build(graph)

    def forward(self) -> RecOutput:
        w = [1.0 / (self.num_layers + 1)] * (self.num_layers + 1)
        return self.split(light_propagate(self.emb.weight, self.adj, self.num_layers, w))  # [U+I, d]


class NGCF(_GraphEmbeddings):
    r"""NGCF, from Wang et al., *Neural Graph Collaborative Filtering* (eq. 7, as the authors' code: message
    dropout, each layer L2-normalised, the layers concatenated).

    .. math::
        e^{(l+1)} = \mathrm{LeakyReLU}\big(W_1 (e^{(l)} + \hat{A} e^{(l)}) + W_2 (\hat{A} e^{(l)} \odot
        e^{(l)})\big), \qquad e = e^{(0)} \,\|\, \bar{e}^{(1)} \,\|\, \dots \,\|\, \bar{e}^{(L)}

    with :math:`\bar{e}^{(l)}` the L2-normalised layer, LeakyReLU slope 0.2.

    Args:
        graph (RecGraph): the training graph.
        embedding_dim (int, optional): d. (default: ``64``)
        num_layers (int, optional): L. (default: ``3``)
        dropout (float, optional): message dropout. (default: ``0.1``)
        init_std (float, optional): standard deviation of the normal initialisation. (default: ``0.1``)

    Shapes:
        - **output:** user ``[U, d(L+1)]``, item ``[I, d(L+1)]``
    """

    def __init__(self, graph: RecGraph, embedding_dim: int = 64, num_layers: int = 3, dropout: float = 0.1,
                 init_std: float = 0.1):
        super().__init__(graph, embedding_dim, init_std)
        self.w1 = nn.ModuleList(nn.Linear(embedding_dim, embedding_dim) for _ in range(num_layers))
        self.w2 = nn.ModuleList(nn.Linear(embedding_dim, embedding_dim) for _ in range(num_layers))
        self.dropout = nn.Dropout(dropout)
        self.build(graph)

    def forward(self) -> RecOutput:
        h = self.emb.weight  # [U+I, d]
        outs = [h]
        for w1, w2 in zip(self.w1, self.w2, strict=True):
            side = sym_spmm(self.adj, h)  # Â e
            h = F.leaky_relu(w1(side + h) + w2(side * h), 0.2)
            h = self.dropout(h)
            outs.append(F.normalize(h, dim=1))
        return self.split(torch.cat(outs, 1))  # [U+I, d (L+1)]
