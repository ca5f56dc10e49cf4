"""Fuzzy C-Means of LHGNN (Singh, Benetos, Phan, Stowell, §II-B1 (ii), eqs. 1-2).

    u_ip = 1 / sum_{j=1..P} ( d(x_i, c_p) / d(x_i, c_j) )^(2 / (m - 1))          (1)
    c_p  = sum_{i=1..N} u_ip^m x_i / sum_{i=1..N} u_ip^m                           (2)

m = 2 and v = 1 iteration (§II-B1: "we restrict v = 1"). Eq. 1 is evaluated stably as
u_i = softmax_p(-log(d_ip^2) / (m - 1)); eq. 2 as an einsum over nodes, so no [B, N, C, P] tensor is
ever built (the official code broadcasts ``weights * x.unsqueeze(-1)``). Each iteration computes the
memberships from the current centroids, then updates the centroids; the memberships returned are those
of the last iteration (the order the paper describes and the official code runs). The K centroids of
largest u_ip^m per node form L_i (done by the caller, lhg_conv.py). Two deviations of the official code
are NOT copied: its memberships are (d^-1 / sum d^-1)^2, and its node matrix is a
``reshape`` of [B, C, H, W] without a permute. Run without gradient, as in the official code.
"""

from __future__ import annotations

import torch

from audiognn.graph.cluster_init import init_centroids, squared_distance


@torch.no_grad()
def fuzzy_c_means(
    x: torch.Tensor, centroids: torch.Tensor, m: float = 2.0, iters: int = 1, eps: float = 1e-12
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Fuzzy C-Means of LHGNN (Singh, Benetos, Phan, Stowell,
    *LHGNN: Local-Higher Order Graph Neural Networks for Audio Classification and Tagging*, §II-B1 (ii)), eqs. 1-2, ``iters`` times:

    .. math::
        u_{ip} = \Big(\sum_{j=1}^{P} \big(\tfrac{\lVert \mathbf{x}_i - \mathbf{c}_p \rVert}
            {\lVert \mathbf{x}_i - \mathbf{c}_j \rVert}\big)^{2/(m-1)}\Big)^{-1}, \qquad
        \mathbf{c}_p = \frac{\sum_i u_{ip}^m \mathbf{x}_i}{\sum_i u_{ip}^m}

    Args:
        x: nodes. centroids: initial centroids. m: fuzziness (default 2.0, must be > 1). iters: v (default 1).
        eps: floor of squared distances and membership sums (default 1e-12).

    Shapes:
        - **x:** :math:`(B, N, C)`, **centroids:** :math:`(B, P, C)`
        - **output:** centroids :math:`(B, P, C)` after the last update, memberships u :math:`(B, N, P)`
    """
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
    r"""Fuzzy C-Means clustering module of LHGNN (Singh, Benetos, Phan, Stowell,
    *LHGNN: Local-Higher Order Graph Neural Networks for Audio Classification and Tagging*, eqs. 1-2): centroids and
    the node scores that pick :math:`\mathcal{L}_i` ('K centroids with highest :math:`u^m`').

    .. math::
        \mathrm{score}_{ip} = u_{ip}^m

    Args:
        num_clusters: P (default 50). m: fuzziness (default 2.0). iters: v (default 1).
        init: initial centroids, ``"pool"`` (default) or ``"randn"`` (cluster_init.py).

    Shapes:
        - **input:** nodes :math:`(B, N, C)`, optional grid size ``hw`` = (H, W) with H * W = N
        - **output:** centroids :math:`(B, P, C)`, scores :math:`(B, N, P)`
    """

    def __init__(self, num_clusters: int = 50, m: float = 2.0, iters: int = 1, init: str = "pool"):
        super().__init__()
        self.num_clusters, self.m, self.iters, self.init = num_clusters, m, iters, init

    @torch.no_grad()
    def forward(
        self, x: torch.Tensor, hw: tuple[int, int] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        c0 = init_centroids(x, self.num_clusters, self.init, hw)
        c, u = fuzzy_c_means(x, c0, self.m, self.iters)
        return c, u.pow(self.m)

    def extra_repr(self) -> str:
        return f"P={self.num_clusters}, m={self.m}, v={self.iters}, init={self.init!r}"
