"""Genre GNN: a clip as a graph of its segments (seed 000, "Graph Neural Networks for Music Genre
Classification", §4.2-4.3).

The seed is a proposal and leaves the architecture open. What it fixes:
- §4.2: MFCCs computed from the mel spectrogram are "passed as nodes for the graph" (the vectorised
  mel spectrogram is named as the alternative in §5);
- §4.3: "edges between nodes defined on the similarity of the respective node's features", message
  passing with PyG layers.

What this implementation chooses (the paper does not say):
- a node is a segment of ``segment_frames`` log-mel frames (hop ``segment_hop``); its features are the
  mean and standard deviation over the segment's frames of either its MFCCs (``node_features="mfcc"``,
  DCT-II of the log-mel, ``n_mfcc`` coefficients, via ``torchaudio.functional.create_dct``) or of the
  log-mel itself (``"logmel"``). The input is the *normalised* log-mel; the DCT is linear, so the MFCCs
  are those of the raw log-mel up to an affine map, which the first linear layer absorbs;
- edges: each segment receives messages from its ``k`` nearest segments of the same clip
  (cosine or Euclidean distance of the node features, self excluded), plus optional temporal edges
  i <-> i+1; the graph is built per clip with dense batched ops (no torch-cluster, see
  :func:`segment_knn_graph`);
- ``num_layers`` message-passing layers of one kind (GCN, GraphSAGE, GAT, GIN or EdgeConv), each with
  BatchNorm, ReLU, dropout and a residual connection;
- readout: the concatenation of global mean and global max pooling (the clip embedding, ``embed``),
  then a two-layer MLP classifier.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchaudio.functional as AF
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
from torch_geometric.utils import coalesce

CONVS = ("gcn", "sage", "gat", "gin", "edge")
NODE_FEATURES = ("mfcc", "logmel")


def segment_frames_of(x: torch.Tensor, segment_frames: int, segment_hop: int) -> torch.Tensor:
    """Cut ``x: [B, T, F]`` into segments ``[B, S, L, F]`` (L = segment_frames).

    A clip shorter than one segment is zero-padded (zero = the mean of the normalised log-mel) to one
    segment; otherwise trailing frames that do not fill a whole segment are dropped.
    """
    B, T, Fd = x.shape
    if T < segment_frames:
        x = F.pad(x, (0, 0, 0, segment_frames - T))
    # unfold over time: [B, S, F, L] -> [B, S, L, F]
    return x.unfold(1, segment_frames, segment_hop).transpose(2, 3)


def segment_knn_graph(
    feats: torch.Tensor, k: int, temporal: bool = True, metric: str = "cosine"
) -> torch.Tensor:
    """Segment graph of a batch of clips: ``feats: [B, S, D]`` -> ``edge_index: [2, E]`` over the B*S
    nodes numbered ``b * S + i``.

    Edge j -> i (source j, target i) for each of the ``min(k, S-1)`` nearest segments j of i in the same
    clip (distance: ``"cosine"`` = 1 - cosine similarity, or ``"euclidean"``; self excluded; ties broken
    by ``torch.topk``), plus, with ``temporal``, i -> i+1 and i+1 -> i. Duplicates are merged and the
    result sorted (``torch_geometric.utils.coalesce``). Hand-written because PyG's ``knn_graph`` needs
    torch-cluster, which this project does not install; per-clip graphs are small (S ~ 10-100), so the
    dense [B, S, S] distance matrix is cheap.
    """
    if feats.dim() != 3:
        raise ValueError(f"segment_knn_graph expects feats [B, S, D], got shape {tuple(feats.shape)}")
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")
    B, S, _ = feats.shape
    device = feats.device
    offsets = (torch.arange(B, device=device) * S).view(B, 1, 1)  # [B, 1, 1]
    edges = []
    kk = min(k, S - 1)
    if kk > 0:
        with torch.no_grad():
            if metric == "cosine":
                f = F.normalize(feats.float(), dim=-1)
                dist = 1.0 - f @ f.transpose(1, 2)  # [B, S, S]
            else:
                dist = torch.cdist(feats.float(), feats.float())  # [B, S, S]
            eye = torch.eye(S, dtype=torch.bool, device=device)
            dist = dist.masked_fill(eye, float("inf"))
            nbr = dist.topk(kk, dim=-1, largest=False).indices  # [B, S, k]
        tgt = torch.arange(S, device=device).view(1, S, 1).expand(B, S, kk)
        edges.append(torch.stack([(nbr + offsets).reshape(-1), (tgt + offsets).reshape(-1)]))
    if temporal and S > 1:
        i = torch.arange(S - 1, device=device).view(1, S - 1)
        a = (i + offsets.view(B, 1)).reshape(-1)
        edges.append(torch.stack([a, a + 1]))
        edges.append(torch.stack([a + 1, a]))
    if not edges:
        return torch.empty(2, 0, dtype=torch.long, device=device)
    return coalesce(torch.cat(edges, dim=1), num_nodes=B * S)


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


class GenreGNN(nn.Module):
    """Segment-graph GNN for genre classification (seed 000 §4.2-4.3; choices in the module docstring).

    Args:
        num_classes: number of genres.
        n_mels: mel bins F of the input (the DCT matrix is built for it).
        segment_frames: frames per segment (node); 32 frames = 0.32 s at a 10 ms hop.
        segment_hop: hop between segments in frames (default: segment_frames, non-overlapping).
        node_features: "mfcc" (seed §4.2) or "logmel" (seed §5's alternative).
        n_mfcc: MFCC coefficients (20, librosa's default, which the seed uses via LibRosa).
        k: nearest segments per node; temporal: add i <-> i+1 edges; metric: "cosine" | "euclidean".
        conv: "gcn" | "sage" | "gat" | "gin" | "edge"; hidden, num_layers, heads (GAT), dropout.
    """

    def __init__(
        self,
        num_classes: int,
        n_mels: int = 128,
        segment_frames: int = 32,
        segment_hop: int | None = None,
        node_features: str = "mfcc",
        n_mfcc: int = 20,
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
        if node_features not in NODE_FEATURES:
            raise ValueError(f"node_features must be one of {NODE_FEATURES}, got {node_features!r}")
        if conv not in CONVS:
            raise ValueError(f"conv must be one of {CONVS}, got {conv!r}")
        if segment_frames < 1 or (segment_hop is not None and segment_hop < 1):
            raise ValueError(
                f"segment_frames / segment_hop must be >= 1, got {segment_frames} / {segment_hop}"
            )
        self.n_mels = n_mels
        self.segment_frames = segment_frames
        self.segment_hop = segment_hop or segment_frames
        self.node_features = node_features
        self.k, self.temporal, self.metric, self.conv_kind = k, temporal, metric, conv
        if node_features == "mfcc":
            # [F, n_mfcc], DCT-II with orthonormal scaling (librosa / torchaudio.transforms.MFCC default)
            self.register_buffer("dct", AF.create_dct(n_mfcc, n_mels, norm="ortho"), persistent=False)
            in_dim = 2 * n_mfcc
        else:
            self.dct = None
            in_dim = 2 * n_mels
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
        x = x.float()
        if self.dct is not None:
            x = x @ self.dct  # [B, T, n_mfcc]
        seg = segment_frames_of(x, self.segment_frames, self.segment_hop)  # [B, S, L, D']
        return torch.cat([seg.mean(2), seg.std(2, unbiased=False)], dim=-1)  # [B, S, 2D']

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: [B, T, F]`` normalised log-mel -> logits ``[B, num_classes]``."""
        return self.head(self.embed(x))
