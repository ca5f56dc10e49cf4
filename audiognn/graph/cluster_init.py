"""Initial centroids for the clustering operators (fuzzy_cmeans.py, kmeans.py, density.py).

The LHGNN paper (Singh et al., §II-B1 (ii)) does not say how the P centroids start. Two choices:
- ``"randn"``: c ~ N(0, I) drawn afresh on every forward, as the official code does
  (``torch.randn(B, C, P)``); training and inference are then stochastic.
- ``"pool"`` (default here): deterministic; the node grid is average-pooled to P cells
  (an a x b grid with a * b = P, a chosen so the cells are as square as possible), so the
  centroids start spread over the time-frequency plane. Deterministic inference and tests.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

INITS = ("pool", "randn")


def _pool_grid(num: int, height: int, width: int) -> tuple[int, int]:
    """Divisor pair (a, b), a * b = num, with a / b closest to height / width."""
    target = math.log(max(height, 1) / max(width, 1))
    pairs = [(a, num // a) for a in range(1, num + 1) if num % a == 0]
    return min(pairs, key=lambda p: abs(math.log(p[0] / p[1]) - target))


def init_centroids(
    x: torch.Tensor, num: int, init: str = "pool", hw: tuple[int, int] | None = None
) -> torch.Tensor:
    """x [B, N, C] nodes (row-major over an H x W grid when ``hw`` is given) -> centroids [B, P, C]."""
    B, N, C = x.shape
    if init == "randn":
        return torch.randn(B, num, C, device=x.device, dtype=x.dtype)
    if init != "pool":
        raise ValueError(f"cluster init {init!r} is not one of {INITS}")
    if hw is None:
        return F.adaptive_avg_pool1d(x.transpose(1, 2), num).transpose(1, 2)  # [B, P, C]
    H, W = hw
    a, b = _pool_grid(num, H, W)
    grid = x.transpose(1, 2).reshape(B, C, H, W)
    return F.adaptive_avg_pool2d(grid, (a, b)).flatten(2).transpose(1, 2)  # [B, P, C]


def squared_distance(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """||x_i - c_p||^2 = ||x_i||^2 - 2 x_i . c_p + ||c_p||^2 without broadcasting: [B, N, C], [B, P, C] -> [B, N, P]."""
    x_sq = (x * x).sum(-1, keepdim=True)  # [B, N, 1]
    c_sq = (c * c).sum(-1).unsqueeze(1)  # [B, 1, P]
    return torch.baddbmm(x_sq + c_sq, x, c.transpose(1, 2), alpha=-2.0).clamp_min_(0.0)


class DistanceClustering(nn.Module):
    r"""Base of the k-means and mean-shift modules of LHGNN's Table V ablation (Singh, Benetos, Phan, Stowell,
    *LHGNN: Local-Higher Order Graph Neural Networks for Audio Classification and Tagging*): ``iters`` steps of
    ``update`` from :func:`init_centroids`, then node scores

    .. math::
        \mathrm{score}_{ip} = -\lVert \mathbf{x}_i - \mathbf{c}_p \rVert^2 \quad \text{(larger = nearer)}

    Args:
        num_clusters: P (default 50). iters: update steps (default 1). init: ``"pool"`` (default) or ``"randn"``.

    Shapes:
        - **input:** nodes :math:`(B, N, C)`, optional grid size ``hw`` = (H, W)
        - **output:** centroids :math:`(B, P, C)`, scores :math:`(B, N, P)`
    """

    update = None  # a function (x [B, N, C], centroids [B, P, C], iters) -> centroids [B, P, C]

    def __init__(self, num_clusters: int = 50, iters: int = 1, init: str = "pool"):
        super().__init__()
        self.num_clusters, self.iters, self.init = num_clusters, iters, init

    @torch.no_grad()
    def forward(
        self, x: torch.Tensor, hw: tuple[int, int] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        c = type(self).update(x, init_centroids(x, self.num_clusters, self.init, hw), self.iters)
        return c, -squared_distance(x, c)
