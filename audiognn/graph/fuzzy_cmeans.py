"""Fuzzy C-Means (seed 001 §II-B1 (ii), eqs. 1-2).

    u_ip = 1 / sum_{j=1..P} ( d(x_i, c_p) / d(x_i, c_j) )^(2 / (m - 1))          (1)
    c_p  = sum_{i=1..N} u_ip^m x_i / sum_{i=1..N} u_ip^m                           (2)

m = 2 and v = 1 iteration (§II-B1: "we restrict v = 1"). Eq. 1 is evaluated stably as
u_i = softmax_p(-log(d_ip^2) / (m - 1)); eq. 2 as an einsum over nodes, so no [B, N, C, P] tensor is
ever built (the official code broadcasts ``weights * x.unsqueeze(-1)``). Each iteration computes the
memberships from the current centroids, then updates the centroids; the memberships returned are those
of the last iteration (the order the paper describes and the official code runs). The K centroids of
largest u_ip^m per node form L_i (done by the caller, lhg_conv.py). Two deviations of the official code
are NOT copied (DESIGN.md): its memberships are (d^-1 / sum d^-1)^2, and its node matrix is a
``reshape`` of [B, C, H, W] without a permute. Run without gradient, as in the official code.
"""

from __future__ import annotations

import torch

from audiognn.graph.cluster_init import init_centroids, squared_distance


@torch.no_grad()
def fuzzy_c_means(
    x: torch.Tensor, centroids: torch.Tensor, m: float = 2.0, iters: int = 1, eps: float = 1e-12
) -> tuple[torch.Tensor, torch.Tensor]:
    """x [B, N, C], initial centroids [B, P, C] -> (centroids [B, P, C] after ``iters`` updates, u [B, N, P])."""
    if m <= 1:
        raise ValueError(f"fuzzy c-means: fuzziness m must be > 1, got {m}")
    if iters < 1:
        raise ValueError(f"fuzzy c-means: iterations v must be >= 1, got {iters}")
    c = centroids
    for _ in range(iters):
        d2 = squared_distance(x, c)  # [B, N, P]
        u = torch.softmax(-torch.log(d2.clamp_min(eps)) / (m - 1.0), dim=-1)  # eq. 1, [B, N, P]
        w = u.pow(m)  # u_ip^m
        c = torch.einsum("bnp,bnc->bpc", w, x) / w.sum(1).clamp_min(eps).unsqueeze(-1)  # eq. 2
    return c, u


class FuzzyCMeans(torch.nn.Module):
    """Centroids and the node scores used to pick L_i: score = u^m (seed 001: 'K centroids with highest u^m')."""

    def __init__(self, num_clusters: int = 50, m: float = 2.0, iters: int = 1, init: str = "pool"):
        super().__init__()
        self.num_clusters, self.m, self.iters, self.init = num_clusters, m, iters, init

    @torch.no_grad()
    def forward(self, x: torch.Tensor, hw: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        c0 = init_centroids(x, self.num_clusters, self.init, hw)
        c, u = fuzzy_c_means(x, c0, self.m, self.iters)
        return c, u.pow(self.m)

    def extra_repr(self) -> str:
        return f"P={self.num_clusters}, m={self.m}, v={self.iters}, init={self.init!r}"
