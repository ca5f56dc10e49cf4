"""k-means (Lloyd) clustering, the 'k-means' row of seed 001 Table V (ablation).

    a_i = argmin_p ||x_i - c_p||^2 ,      c_p = mean{ x_i : a_i = p }       (v iterations)

Same initialisation and iteration count as Fuzzy C-Means (cluster_init.py). An empty cluster keeps its
previous centroid. Hard memberships cannot rank K centroids per node, so L_i is the K centroids nearest
to x_i after the update (the paper gives no detail; for FCM, top-K by u^m is also the K nearest).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from audiognn.graph.cluster_init import init_centroids, squared_distance


@torch.no_grad()
def kmeans(x: torch.Tensor, centroids: torch.Tensor, iters: int = 1) -> torch.Tensor:
    """x [B, N, C], initial centroids [B, P, C] -> centroids [B, P, C] after ``iters`` Lloyd steps."""
    c = centroids
    P = c.shape[1]
    for _ in range(iters):
        assign = squared_distance(x, c).argmin(-1)  # [B, N]
        onehot = F.one_hot(assign, P).to(x.dtype)  # [B, N, P]
        count = onehot.sum(1)  # [B, P]
        mean = torch.einsum("bnp,bnc->bpc", onehot, x) / count.clamp_min(1).unsqueeze(-1)
        c = torch.where(count.unsqueeze(-1) > 0, mean, c)
    return c


class KMeans(torch.nn.Module):
    """Centroids and node scores (negative squared distance: larger = nearer)."""

    def __init__(self, num_clusters: int = 50, iters: int = 1, init: str = "pool"):
        super().__init__()
        self.num_clusters, self.iters, self.init = num_clusters, iters, init

    @torch.no_grad()
    def forward(self, x: torch.Tensor, hw: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        c = kmeans(x, init_centroids(x, self.num_clusters, self.init, hw), self.iters)
        return c, -squared_distance(x, c)
