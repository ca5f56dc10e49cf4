"""k-means (Lloyd) clustering, the 'k-means' row of LHGNN's Table V (Singh et al., ablation).

    a_i = argmin_p ||x_i - c_p||^2 ,      c_p = mean{ x_i : a_i = p }       (v iterations)

Same initialisation and iteration count as Fuzzy C-Means (cluster_init.py). An empty cluster keeps its
previous centroid. Hard memberships cannot rank K centroids per node, so L_i is the K centroids nearest
to x_i after the update (the paper gives no detail; for FCM, top-K by u^m is also the K nearest).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from audiognn.graph.cluster_init import DistanceClustering, squared_distance


@torch.no_grad()
def kmeans(x: torch.Tensor, centroids: torch.Tensor, iters: int = 1) -> torch.Tensor:
    r"""k-means (Lloyd), the k-means row of LHGNN's Table V (Singh, Benetos, Phan, Stowell,
    *LHGNN: Local-Higher Order Graph Neural Networks for Audio Classification and Tagging*):

    .. math::
        a_i = \arg\min_p \lVert \mathbf{x}_i - \mathbf{c}_p \rVert^2, \qquad
        \mathbf{c}_p = \operatorname{mean}\{\mathbf{x}_i : a_i = p\}

    Args:
        x: nodes. centroids: initial centroids (an empty cluster keeps its own). iters: Lloyd steps (default 1).

    Shapes:
        - **x:** :math:`(B, N, C)`, **centroids:** :math:`(B, P, C)` -> **output:** :math:`(B, P, C)`
    """
    c = centroids
    P = c.shape[1]
    for _ in range(iters):
        assign = squared_distance(x, c).argmin(-1)  # [B, N]
        onehot = F.one_hot(assign, P).to(x.dtype)  # [B, N, P]
        count = onehot.sum(1)  # [B, P]
        mean = torch.einsum("bnp,bnc->bpc", onehot, x) / count.clamp_min(1).unsqueeze(-1)
        c = torch.where(count.unsqueeze(-1) > 0, mean, c)
    return c


class KMeans(DistanceClustering):
    """Clustering module of LHGNN's Table V ablation by k-means (Lloyd steps, :func:`kmeans`); see :class:`DistanceClustering`."""

    update = staticmethod(kmeans)
