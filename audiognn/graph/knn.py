"""Dense dilated k-NN graph of Vision GNN (LHGNN, Singh et al., §II-B1 (i), ref. [10]), with pooled keys.

    S_i = k-NN(x_i, X, k)                                                    (LHGNN §II-B1 (i))

As in ViG / the official LHGNN code:
- node features are L2-normalised over channels (no gradient flows through the graph construction);
- keys are the nodes average-pooled by the stage's reduce ratio r (4, 2, 1, 1): M = N / r^2 keys;
- distance  dist[i, j] = ||x_i||^2 - 2 x_i . y_j + ||y_j||^2 - R[i, j]  (R: relative_pos.py);
- dilation d: take the k*d nearest keys (``topk(-dist, k*d)``) and keep every d-th of them.

Hand-written because PyG's knn_graph needs torch-cluster (not installed here) and has no
relative-position term or dilation. Queries are processed in chunks so the [B, n, M] distance block
never exceeds ``max_elements`` entries (bounded memory for long inputs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pool_keys(x: torch.Tensor, reduce: int) -> torch.Tensor:
    """Keys of the graph: x [B, C, H, W] -> avg-pooled [B, C, ceil(H/r), ceil(W/r)] (x itself if r = 1)."""
    if reduce == 1:
        return x
    return F.avg_pool2d(x, reduce, reduce, ceil_mode=True)


def effective_k_dilation(k: int, dilation: int, num_keys: int) -> tuple[int, int]:
    """Clamp (k, d) so that k*d <= M for short inputs: lower d first, then k. Paper sizes are unchanged."""
    k = min(k, num_keys)
    dilation = max(1, min(dilation, num_keys // k))
    return k, dilation


@torch.no_grad()
def dense_dilated_knn(
    x: torch.Tensor,
    y: torch.Tensor,
    k: int,
    dilation: int = 1,
    relative_pos: torch.Tensor | None = None,
    max_elements: int = 1 << 25,
) -> torch.Tensor:
    r"""Dense dilated k-NN of Vision GNN as used by LHGNN for :math:`\mathcal{S}_i` (Singh, Benetos, Phan, Stowell,
    *LHGNN: Local-Higher Order Graph Neural Networks for Audio Classification and Tagging*, §II-B1 (i)).

    .. math::
        d_{ij} = \lVert \hat{\mathbf{x}}_i - \hat{\mathbf{y}}_j \rVert^2 - R_{ij}, \qquad
        \mathcal{S}_i = \{ j_{1}, j_{1+d}, \dots, j_{1+(k-1)d} \}

    with :math:`\hat{\cdot}` L2-normalised features and :math:`j_1, j_2, \dots` the keys sorted by :math:`d_{ij}`.
    No gradient (graph construction).

    Args:
        x: queries (any scale; normalised here).
        y: keys (normalised here).
        k: neighbours per query (paper: 25). dilation: ViG's d (default 1). Both clamped so that k * d <= M.
        relative_pos: R (subtracted from the distance), or None (default).
        max_elements: bound on the B * n_chunk * M entries of one distance block (default 2^25).

    Shapes:
        - **x:** :math:`(B, N, C)`, **y:** :math:`(B, M, C)`, **relative_pos:** :math:`(N, M)`
        - **output:** :math:`(B, N, k)` int64 key indices, nearest first
    """
    with torch.autocast(x.device.type, enabled=False):  # rank neighbours in float32 even under bf16 autocast
        return _knn(x.float(), y.float(), k, dilation, relative_pos, max_elements)


def _knn(x, y, k, dilation, relative_pos, max_elements):
    B, N, _ = x.shape
    M = y.shape[1]
    k, dilation = effective_k_dilation(k, dilation, M)
    x = F.normalize(x, p=2.0, dim=-1)  # [B, N, C]
    y = F.normalize(y, p=2.0, dim=-1)  # [B, M, C]
    x_sq = (x * x).sum(-1, keepdim=True)  # [B, N, 1]
    y_sq = (y * y).sum(-1).unsqueeze(1)  # [B, 1, M]
    chunk = max(1, max_elements // max(1, B * M))
    out = []
    for s in range(0, N, chunk):
        e = min(N, s + chunk)
        dist = torch.baddbmm(x_sq[:, s:e] + y_sq, x[:, s:e], y.transpose(1, 2), alpha=-2.0)  # [B, n, M]
        if relative_pos is not None:
            dist = dist - relative_pos[s:e].float()
        _, nn_idx = torch.topk(dist, k * dilation, dim=-1, largest=False)  # [B, n, k*d]
        out.append(nn_idx[:, :, ::dilation])
    return torch.cat(out, dim=1) if len(out) > 1 else out[0]
