"""Segment graphs of audio clips: a clip cut into segments (the nodes), each linked to its nearest segments.

The graph operator of Dhongade and Rovira, *Graph Neural Networks for Music Genre Classification* (§4.3:
"edges between nodes defined on the similarity of the respective node's features"), used by
:class:`~audiognn.models.genre_gnn.GenreGNN` per clip and by the genre-graph data module over tracks.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch_geometric.utils import coalesce

__all__ = ["CompleteGraphWarning", "num_segments", "segment_frames_of", "segment_knn_graph"]


class CompleteGraphWarning(UserWarning):
    """``k >= S - 1``: every segment is linked to every other, so the similarity edges carry no information."""


def num_segments(frames: int, segment_frames: int, segment_hop: int) -> int:
    """S, the number of segments :func:`segment_frames_of` cuts a clip of ``frames`` frames into:
    ``1 + (T - L) // hop`` (1 for a clip shorter than one segment)."""
    return 1 + max(0, frames - segment_frames) // segment_hop


def segment_frames_of(x: torch.Tensor, segment_frames: int, segment_hop: int) -> torch.Tensor:
    """Cut ``x: [B, T, F]`` into segments ``[B, S, L, F]`` (L = segment_frames, S = 1 + (T - L) // hop).

    A clip shorter than one segment is zero-padded (zero = the mean of the normalised log-mel) to one
    segment; otherwise trailing frames that do not fill a whole segment are dropped.

    Args:
        x: frames of a batch of clips.
        segment_frames: L, frames per segment.
        segment_hop: frames between the starts of consecutive segments.

    Shapes:
        - **input:** :math:`(B, T, F)`
        - **output:** :math:`(B, S, L, F)` (a view when no padding is needed)
    """
    B, T, Fd = x.shape
    if T < segment_frames:
        x = F.pad(x, (0, 0, 0, segment_frames - T))
    # unfold over time: [B, S, F, L] -> [B, S, L, F]
    return x.unfold(1, segment_frames, segment_hop).transpose(2, 3)


def segment_knn_graph(
    feats: torch.Tensor, k: int, temporal: bool = True, metric: str = "cosine"
) -> torch.Tensor:
    r"""Segment graph of a batch of clips: ``feats: [B, S, D]`` -> ``edge_index: [2, E]`` over the B*S
    nodes numbered ``b * S + i``.

    Edge j -> i (source j, target i) for each of the ``min(k, S-1)`` nearest segments j of i in the same
    clip (with ``k >= S - 1 > 1`` that is every other segment: the graph is complete, the similarity has no
    effect, and a :class:`CompleteGraphWarning` says so; choose segments so that S >> k) (distance: ``"cosine"`` = 1 - cosine similarity, or ``"euclidean"``; self excluded; ties broken
    by ``torch.topk``), plus, with ``temporal``, i -> i+1 and i+1 -> i. Duplicates are merged and the
    result sorted (``torch_geometric.utils.coalesce``). Hand-written because PyG's ``knn_graph`` needs
    torch-cluster, which this project does not install; per-clip graphs are small (S ~ 10-100), so the
    dense [B, S, S] distance matrix is cheap.

    .. math::
        \mathcal{E} = \{ (j, i) : j \in \mathrm{kNN}_k(i) \} \cup
        \{ (i, i + 1), (i + 1, i) \}_{\text{temporal}}

    Args:
        feats: node features of each clip's segments.
        k: neighbours per node (at most S - 1 are used).
        temporal (bool, optional): add the edges between consecutive segments. (default: ``True``)
        metric (str, optional): ``"cosine"`` or ``"euclidean"``. (default: ``"cosine"``)

    Shapes:
        - **input:** :math:`(B, S, D)`
        - **output:** ``edge_index`` :math:`(2, E)`, E <= B S (k + 2)
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
    if k >= S - 1 > 1:
        warnings.warn(f"segment_knn_graph: k={k} >= S-1={S - 1} segments: the similarity graph is complete "
                      "(every segment linked to every other); use a shorter segment hop or a smaller k",
                      CompleteGraphWarning, stacklevel=2)
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
