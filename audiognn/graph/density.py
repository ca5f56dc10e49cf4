"""Density-based clustering for the 'Density based clustering' row of LHGNN's Table V (Singh et al.,
ablation).

The paper does not name its density-based method. Chosen here: mean shift (Fukunaga & Hostetler 1975;
Comaniciu & Meer 2002), which moves P seeds uphill on a Gaussian kernel density estimate of the nodes
towards its modes (clusters = basins of attraction of the density), and is batched like FCM:

    c_p <- sum_i K(x_i, c_p) x_i / sum_i K(x_i, c_p),     K(x, c) = exp(-||x - c||^2 / (2 h^2))

for v iterations, seeds from cluster_init.py. Bandwidth h^2: per clip, the median over nodes of the
squared distance to the nearest seed (lower median, a common heuristic). DBSCAN-like methods need N x N distances
(N = 8192 in stage 1) and a variable cluster count, hence not used. L_i: the K centroids nearest to x_i.
"""

from __future__ import annotations

import torch

from audiognn.graph.cluster_init import DistanceClustering, squared_distance


@torch.no_grad()
def mean_shift(x: torch.Tensor, centroids: torch.Tensor, iters: int = 1, eps: float = 1e-12) -> torch.Tensor:
    r"""Mean shift, the density-based row of LHGNN's Table V (Singh, Benetos, Phan, Stowell,
    *LHGNN: Local-Higher Order Graph Neural Networks for Audio Classification and Tagging*):

    .. math::
        \mathbf{c}_p \leftarrow \frac{\sum_i K(\mathbf{x}_i, \mathbf{c}_p)\, \mathbf{x}_i}{\sum_i K(\mathbf{x}_i, \mathbf{c}_p)},
        \qquad K(\mathbf{x}, \mathbf{c}) = \exp\big(-\lVert \mathbf{x} - \mathbf{c} \rVert^2 / 2h^2\big)

    Args:
        x: nodes. centroids: seeds. iters: steps (default 1). eps: floor of the bandwidth h^2 (default 1e-12).

    Shapes:
        - **x:** :math:`(B, N, C)`, **centroids:** :math:`(B, P, C)` -> **output:** :math:`(B, P, C)`
    """
    c = centroids
    d2 = squared_distance(x, c)  # [B, N, P]
    h2 = d2.min(-1).values.median(-1).values.clamp_min(eps).view(-1, 1, 1)  # [B, 1, 1]
    for _ in range(iters):
        w = torch.softmax(-d2 / (2 * h2), dim=1)  # kernel weights normalised over nodes, [B, N, P]
        c = torch.einsum("bnp,bnc->bpc", w, x)
        d2 = squared_distance(x, c)
    return c


class MeanShift(DistanceClustering):
    """Clustering module of LHGNN's Table V ablation by mean shift (:func:`mean_shift`); see :class:`DistanceClustering`."""

    update = staticmethod(mean_shift)
