"""R-GCN encoder, DistMult decoder and the link predictor combining them, for link prediction on the music graph
(Dhongade and Rovira, *Graph Neural Networks for Music Genre Classification*, §2.2 and §4.4, after Schlichtkrull
et al., *Modeling Relational Data with Graph Convolutional Networks*).

DistMult is hand-written: PyG's ``torch_geometric.nn.kge.DistMult`` is a shallow KGE model holding its own
node embeddings and cannot score the encoder's outputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import RGCNConv


class RGCNEncoder(nn.Module):
    r"""The R-GCN entity encoder of Schlichtkrull et al., *Modeling Relational Data with Graph Convolutional
    Networks* (eq. 2), as the link predictor of Dhongade and Rovira, *Graph Neural Networks for Music Genre
    Classification* (§2.2, Figure 1) uses it:

    .. math::
        \mathbf{h}_i^{(l+1)} = \sigma\Big(\mathbf{W}_0^{(l)} \mathbf{h}_i^{(l)} + \sum_{r \in \mathcal{R}}
        \sum_{j \in \mathcal{N}_i^r} \frac{1}{|\mathcal{N}_i^r|} \mathbf{W}_r^{(l)} \mathbf{h}_j^{(l)}\Big)

    (PyG ``RGCNConv`` with mean aggregation, i.e. :math:`c_{i,r} = |\mathcal{N}_i^r|`), with the basis (eq. 3)
    or block-diagonal (eq. 4) decomposition of :math:`\mathbf{W}_r`. Inverse relations are added as their own
    relation types (Schlichtkrull §2: :math:`\mathcal{R}` holds relations in canonical and inverse direction).
    Figure 1 of Dhongade and Rovira describes the encoder as "interspersed with fully connected/dense layers":
    a dense input layer (LayerNorm + Linear) maps node features to the hidden size; nodes without features
    (genres, artists) get a learned embedding; then ``num_layers`` R-GCN layers, dropout before each, ReLU
    between them (none after the last).

    Nodes ``0 .. N_f - 1`` are the feature nodes (rows of ``x``), nodes ``N_f .. N_f + num_free_nodes - 1``
    the free nodes.

    Args:
        in_dim (int): feature size of the feature nodes.
        num_free_nodes (int): nodes without features (each gets a learned embedding).
        num_relations (int): relation types of the message graph (forward relations; the encoder adds their
            inverses, so ``RGCNConv`` sees ``2 * num_relations`` types).
        hidden (int, optional): hidden and output size. (default: :obj:`64`)
        num_layers (int, optional): R-GCN layers. (default: :obj:`2`)
        num_bases (int, optional): bases of the basis decomposition (eq. 3). (default: :obj:`4`)
        num_blocks (int, optional): blocks of the block-diagonal decomposition (eq. 4); at most one of
            ``num_bases`` and ``num_blocks`` is set. (default: :obj:`None`)
        dropout (float, optional): dropout before each R-GCN layer. (default: :obj:`0.2`)

    Shapes:
        - **input:** node features :math:`(N_f, F_{in})`, edge indices :math:`(2, E)` (source, target),
          edge types :math:`(E)` in :math:`[0, |\mathcal{R}|)`
        - **output:** node states :math:`(N_f + N_{free}, H)`
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
        self.num_relations, self.hidden = num_relations, hidden
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
    r"""The DistMult decoder of Schlichtkrull et al., *Modeling Relational Data with Graph Convolutional
    Networks* (eq. 6, after Yang et al.), the decoder of Dhongade and Rovira, *Graph Neural Networks for Music
    Genre Classification* (§2.2, Figure 1): each relation is a diagonal matrix
    :math:`\mathbf{R}_r = \mathrm{diag}(\mathbf{r}_r)` and

    .. math::
        f(s, r, o) = \mathbf{e}_s^{\top} \mathbf{R}_r \mathbf{e}_o = \sum_d e_{s,d}\, r_{r,d}\, e_{o,d}.

    Args:
        num_relations (int): relation types.
        hidden (int): size of the node states :math:`\mathbf{e}`.

    Shapes:
        - **input:** node states :math:`(N, H)`, triples :math:`(E, 3)` (head, relation, tail)
        - **output:** scores :math:`(E)`; :meth:`score_all`: :math:`(E, C)`
    """

    def __init__(self, num_relations: int, hidden: int):
        super().__init__()
        self.rel = nn.Parameter(torch.empty(num_relations, hidden))
        nn.init.xavier_uniform_(self.rel)

    def forward(self, z: torch.Tensor, triples: torch.Tensor) -> torch.Tensor:
        return (z[triples[:, 0]] * self.rel[triples[:, 1]] * z[triples[:, 2]]).sum(-1)

    def score_all(
        self,
        z: torch.Tensor,
        triples: torch.Tensor,
        side: str = "tail",
        candidates: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Scores ``[E, C]`` of each triple with its ``side`` ("head" or "tail") replaced by every candidate
        node (default: all N nodes, in id order)."""
        zc = z if candidates is None else z[candidates]  # [C, H]
        if side == "tail":
            q = z[triples[:, 0]] * self.rel[triples[:, 1]]  # [E, H]
        elif side == "head":
            q = z[triples[:, 2]] * self.rel[triples[:, 1]]
        else:
            raise ValueError(f"side must be 'head' or 'tail', got {side!r}")
        return q @ zc.t()


class RGCNLinkPredictor(nn.Module):
    r"""The link-prediction auto-encoder of Dhongade and Rovira, *Graph Neural Networks for Music Genre
    Classification* (§2.2, Figure 1; §4.4), after Schlichtkrull et al., *Modeling Relational Data with Graph
    Convolutional Networks* (§4): an :class:`RGCNEncoder` maps every node to a state
    :math:`\mathbf{e}_i` from its features and relations, a :class:`DistMult` decoder scores every (potential)
    edge from the states of its two ends:

    .. math::
        \mathbf{e} = \mathrm{RGCN}(\mathbf{X}, \mathcal{E}), \qquad
        f(s, r, o) = \mathbf{e}_s^{\top} \mathrm{diag}(\mathbf{r}_r)\, \mathbf{e}_o.

    The first three arguments are the sizes the graph knows (linked from the DataModule by ``train.py``), so a
    config gives the predictor as a callable of them.

    Args:
        num_node_features (int): feature size of the feature nodes (tracks).
        num_free_nodes (int): nodes without features (genres and artists).
        num_relations (int): relation types (forward direction).
        **encoder_args (optional): the :class:`RGCNEncoder`'s other arguments: ``hidden`` (node-state size,
            default :obj:`64`), ``num_layers`` (:obj:`2`), ``num_bases`` (:obj:`4`), ``num_blocks``
            (:obj:`None`), ``dropout`` (:obj:`0.2`).

    Shapes:
        - **input:** node features :math:`(N_f, F)`, edge indices :math:`(2, E)`, edge types :math:`(E)`
        - **output:** node states :math:`(N_f + N_{free}, H)` (:meth:`forward`); scores :math:`(E')` of triples
          :math:`(E', 3)` (:meth:`score`)
    """

    def __init__(self, num_node_features: int, num_free_nodes: int, num_relations: int, **encoder_args):
        super().__init__()
        self.num_relations = num_relations
        self.encoder = RGCNEncoder(num_node_features, num_free_nodes, num_relations, **encoder_args)
        self.decoder = DistMult(num_relations, self.encoder.hidden)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, edge_type: torch.Tensor) -> torch.Tensor:
        """Node states from the message graph (the encoder)."""
        return self.encoder(x, edge_index, edge_type)

    def score(self, z: torch.Tensor, triples: torch.Tensor) -> torch.Tensor:
        """DistMult scores of ``triples`` from the node states ``z``."""
        return self.decoder(z, triples)

    def score_all(self, z: torch.Tensor, triples: torch.Tensor, side: str = "tail",
                  candidates: torch.Tensor | None = None) -> torch.Tensor:
        """See :meth:`DistMult.score_all`."""
        return self.decoder.score_all(z, triples, side, candidates)

    def regularization(self) -> torch.Tensor:
        """Mean squared relation embedding (Schlichtkrull §5's L2 penalty on the decoder)."""
        return self.decoder.rel.pow(2).mean()
