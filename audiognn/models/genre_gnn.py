"""Genre GNN: a clip as a graph of its segments (Dhongade and Rovira, *Graph Neural Networks for Music Genre
Classification*, §4.2-4.3).

The paper is a proposal and leaves the architecture open. What it fixes:
- §4.2: MFCCs computed from the mel spectrogram are "passed as nodes for the graph" (the vectorised
  mel spectrogram is named as the alternative in §5);
- §4.3: "edges between nodes defined on the similarity of the respective node's features", message
  passing with PyG layers.

What this implementation chooses (the paper does not say):
- a node is a segment of ``segment_frames`` log-mel frames, overlapping (hop ``segment_hop``: 32 and 8 give
  S = 1 + (T - 32) // 8 segments, 29 for 256 frames, 34 for a 3 s crop, 47 for 4 s), so that a clip has
  many more segments than the ``k`` similarity neighbours (with S - 1 <= k the graph would be complete and
  "edges by feature similarity" would mean nothing: :class:`~audiognn.graph.segment_graph.CompleteGraphWarning`);
  its features are the mean and standard deviation over the segment's frames of either its MFCCs
  (``node_features="mfcc"``, :func:`audiognn.features.mfcc_from_logmel`, ``n_mfcc`` coefficients) or of the
  log-mel itself (``"logmel"``), or of learned frame features (``"conv"``: :class:`FrameEncoder`, a small
  2-D conv stack that pools the mel axis away and keeps every frame; a departure from §4.2 for recordings where
  hand-made statistics of 0.32 s segments fall short). The input is the *normalised* log-mel; the DCT is linear, so the MFCCs
  are those of the raw log-mel up to an affine map, which the first linear layer absorbs;
- edges: each segment receives messages from its ``k`` nearest segments of the same clip
  (cosine or Euclidean distance of the node features, self excluded), plus optional temporal edges
  i <-> i+1; the graph is built per clip with dense batched ops (no torch-cluster, see
  :func:`audiognn.graph.segment_graph.segment_knn_graph`);
- ``num_layers`` message-passing layers of one kind (GCN, GraphSAGE, GAT, GIN or EdgeConv), each with
  BatchNorm, ReLU, dropout and a residual connection;
- readout: the concatenation of global mean and global max pooling (the clip embedding, ``embed``),
  then a two-layer MLP classifier.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.data import Batch
from torch_geometric.nn import (
    EdgeConv,
    GATConv,
    GCNConv,
    GINConv,
    SAGEConv,
    global_max_pool,
    global_mean_pool,
)

from audiognn.features import mfcc_from_logmel
from audiognn.graph.segment_graph import (  # noqa: F401  (re-exported)
    CompleteGraphWarning,
    num_segments,
    segment_frames_of,
    segment_knn_graph,
)
from audiognn.models.base import AudioBackbone, check_choice

CONVS = ("gcn", "sage", "gat", "gin", "edge")
NODE_FEATURES = ("mfcc", "logmel", "conv")


def _mlp(i: int, h: int, o: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(i, h), nn.BatchNorm1d(h), nn.ReLU(), nn.Linear(h, o))


def _make_conv(kind: str, hidden: int, heads: int) -> nn.Module:
    if kind == "gcn":
        return GCNConv(hidden, hidden)
    if kind == "sage":
        return SAGEConv(hidden, hidden)
    if kind == "gat":
        if hidden % heads:
            raise ValueError(f"GAT: hidden ({hidden}) must be divisible by heads ({heads})")
        return GATConv(hidden, hidden // heads, heads=heads)
    if kind == "gin":
        return GINConv(_mlp(hidden, hidden, hidden), train_eps=True)
    if kind == "edge":
        return EdgeConv(_mlp(2 * hidden, hidden, hidden), aggr="max")
    raise ValueError(f"conv must be one of {CONVS}, got {kind!r}")


class FrameEncoder(nn.Module):
    """Learned frame features for ``node_features="conv"``: blocks of conv 3x3 -> BN -> ReLU -> max-pool of 4
    mel bins (time kept whole), then the mean over the remaining bins.

    Shapes: x [B, T, F] -> [B, T, channels[-1]]."""

    def __init__(self, channels: tuple[int, ...] = (16, 32, 64)):
        super().__init__()
        layers, cin = [], 1
        for c in channels:
            layers += [nn.Conv2d(cin, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
            layers.append(nn.MaxPool2d((1, 4), ceil_mode=True))
            cin = c
        self.net = nn.Sequential(*layers)
        self.out_dim = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.float().unsqueeze(1)).mean(-1).transpose(1, 2)  # [B, C, T, F'] -> [B, T, C]


class GenreGNN(AudioBackbone):
    r"""Segment-graph GNN for genre classification, from Dhongade and Rovira, *Graph Neural Networks for
    Music Genre Classification* (§4.2-4.3; the choices the paper leaves open are in the module docstring).

    Each clip becomes a graph whose nodes are its segments (features :math:`\mathbf{x}_i`: mean and
    standard deviation of the segment's MFCCs or log-mel), linked to their k nearest segments; with
    residual message passing and mean ⊕ max readout:

    .. math::
        \mathbf{h}_i^{(0)} = \mathrm{ReLU}(\mathbf{W} \, \mathrm{BN}(\mathbf{x}_i)), \quad
        \mathbf{h}_i^{(l+1)} = \mathbf{h}_i^{(l)} + \mathrm{Dropout}(\mathrm{ReLU}(\mathrm{BN}(
        \mathrm{Conv}^{(l)}(\mathbf{h}^{(l)}, \mathcal{E})_i))), \quad
        \mathbf{z} = \tfrac{1}{S} \textstyle\sum_i \mathbf{h}_i^{(L)} \,\Vert\, \max_i \mathbf{h}_i^{(L)}

    Args:
        num_classes (int): number of genres.
        n_mels (int, optional): mel bins F of the input. (default: ``128``)
        segment_frames (int, optional): frames per segment (node); 32 frames = 0.32 s at a 10 ms hop.
            (default: ``32``)
        segment_hop (int, optional): hop between segments in frames (overlapping segments: S >> k);
            ``None``: segment_frames (non-overlapping). (default: ``8``)
        node_features (str, optional): ``"mfcc"`` (§4.2), ``"logmel"`` (§5's alternative) or ``"conv"``
            (learned frame features, :class:`FrameEncoder`; not in the paper). (default: ``"mfcc"``)
        encoder_channels (tuple[int, ...], optional): :class:`FrameEncoder` channels (``"conv"`` only).
            (default: ``(16, 32, 64)``)
        n_mfcc (int, optional): MFCC coefficients (librosa's default, which the paper uses via LibRosa).
            (default: ``20``)
        k (int, optional): nearest segments per node. (default: ``8``)
        temporal (bool, optional): add i <-> i+1 edges. (default: ``True``)
        metric (str, optional): ``"cosine"`` or ``"euclidean"``. (default: ``"cosine"``)
        conv (str, optional): ``"gcn"``, ``"sage"``, ``"gat"``, ``"gin"`` or ``"edge"``. (default: ``"sage"``)
        hidden (int, optional): node state size H; the embedding is ``embed_dim = 2 H``. (default: ``128``)
        num_layers (int, optional): message-passing layers L. (default: ``3``)
        heads (int, optional): GAT attention heads (H must be divisible by it). (default: ``4``)
        dropout (float, optional): dropout of node states and of the head. (default: ``0.2``)

    Shapes:
        - **input:** normalised log-mel :math:`(B, T, F)`
        - **embed output:** :math:`(B, 2H)`
        - **output:** logits :math:`(B, C)`
    """

    def __init__(
        self,
        num_classes: int,
        n_mels: int = 128,
        segment_frames: int = 32,
        segment_hop: int | None = 8,
        node_features: str = "mfcc",
        n_mfcc: int = 20,
        encoder_channels: tuple[int, ...] = (16, 32, 64),
        k: int = 8,
        temporal: bool = True,
        metric: str = "cosine",
        conv: str = "sage",
        hidden: int = 128,
        num_layers: int = 3,
        heads: int = 4,
        dropout: float = 0.2,
    ):
        super().__init__()
        check_choice("node_features", node_features, NODE_FEATURES)
        check_choice("conv", conv, CONVS)
        if segment_frames < 1 or (segment_hop is not None and segment_hop < 1):
            raise ValueError(
                f"segment_frames / segment_hop must be >= 1, got {segment_frames} / {segment_hop}"
            )
        self.n_mels = n_mels
        self.segment_frames = segment_frames
        self.segment_hop = segment_hop or segment_frames
        self.node_features = node_features
        self.k, self.temporal, self.metric, self.conv_kind = k, temporal, metric, conv
        self.n_mfcc = n_mfcc if node_features == "mfcc" else None
        self.encoder = FrameEncoder(tuple(encoder_channels)) if node_features == "conv" else None
        in_dim = 2 * (self.encoder.out_dim if self.encoder is not None else self.n_mfcc or n_mels)
        self.input = nn.Sequential(nn.BatchNorm1d(in_dim), nn.Linear(in_dim, hidden), nn.ReLU())
        self.convs = nn.ModuleList(_make_conv(conv, hidden, heads) for _ in range(num_layers))
        self.norms = nn.ModuleList(nn.BatchNorm1d(hidden) for _ in range(num_layers))
        self.dropout = dropout
        self.embed_dim = 2 * hidden
        self.head = nn.Sequential(
            nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, num_classes)
        )

    def node_features_of(self, x: torch.Tensor) -> torch.Tensor:
        """``x: [B, T, F]`` -> node features ``[B, S, D]`` (mean and std over each segment's frames)."""
        if x.dim() != 3 or x.shape[-1] != self.n_mels:
            raise ValueError(f"GenreGNN expects x [B, T, {self.n_mels}] log-mel, got shape {tuple(x.shape)}")
        if self.encoder is not None:
            x = self.encoder(x)  # [B, T, C]
        else:
            x = x.float() if self.n_mfcc is None else mfcc_from_logmel(x, self.n_mfcc)  # [B, T, D']
        seg = segment_frames_of(x, self.segment_frames, self.segment_hop)  # [B, S, L, D']
        return torch.cat([seg.mean(2), seg.std(2, unbiased=False)], dim=-1)  # [B, S, 2D']

    def num_segments(self, frames: int) -> int:
        """S, the nodes of the graph of a clip of ``frames`` frames."""
        return num_segments(frames, self.segment_frames, self.segment_hop)

    def graph(self, x: torch.Tensor) -> Batch:
        """The clips' segment graphs as one PyG ``Batch`` (x: [B*S, D], edge_index, batch, ptr)."""
        feats = self.node_features_of(x)  # [B, S, D]
        B, S, D = feats.shape
        edge_index = segment_knn_graph(feats, self.k, self.temporal, self.metric)
        batch = torch.arange(B, device=x.device).repeat_interleave(S)  # [B*S]
        ptr = torch.arange(B + 1, device=x.device) * S
        return Batch(x=feats.reshape(B * S, D), edge_index=edge_index, batch=batch, ptr=ptr)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``x: [B, T, F]`` -> clip embedding ``[B, 2*hidden]`` (mean and max pooled node states)."""
        g = self.graph(x)
        h = self.input(g.x)  # [N, H]
        for conv, norm in zip(self.convs, self.norms, strict=True):
            h = h + F.dropout(F.relu(norm(conv(h, g.edge_index))), self.dropout, self.training)
        return torch.cat(
            [global_mean_pool(h, g.batch, g.num_graphs), global_max_pool(h, g.batch, g.num_graphs)], -1
        )
