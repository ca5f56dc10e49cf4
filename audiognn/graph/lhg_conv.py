"""Local-Higher order Graph convolution (LHGNN, Singh et al., §II-B1, eqs. 3-4) and the Table IV / V ablations.

    x_i'' = sigma( x_i (+) max(S_i - x_i) (+) max(L_i - x_i) )                          (3)
    y_i   = x_i + h(x_i'')                                                               (4)

S_i: the dilated k-NN of x_i among the pooled keys (knn.py); L_i: the K centroids of largest u^m from
Fuzzy C-Means (fuzzy_cmeans.py); (+) concatenation; max elementwise over the set. This module computes
sigma(.) of eq. 3; h and the residual of eq. 4 live in the Grapher (models/lhgnn.py).

Implementation choices (paper silent, official code followed unless said):
- max(S_i - x_i) = max_{j in S_i} x_j - x_i: one gather-max (max_gather.py), no x_i gather.
- sigma is "an MLP with GELU": a 1x1 conv 3C -> 3C with groups = 4, BatchNorm, GELU (official
  ``BasicConv``). The three terms are interleaved per channel ([x_c, local_c, cluster_c, ...], the
  official ``stack(dim=2).reshape``) so every conv group sees all three terms.
- Centroids carry no gradient (clustering under no_grad, as in the official code); the cluster term
  still passes gradient through -x_i.
- Table IV: ``kernel`` = "local" (x (+) max(S - x)), "higher" (x (+) max(L - x)) or "both" (eq. 3).
  Table V: ``clustering`` = "fcm" (eqs. 1-2), "kmeans" or "density" (mean shift, density.py).
"""

from __future__ import annotations

import torch
from torch import nn

from audiognn.graph.density import MeanShift
from audiognn.graph.fuzzy_cmeans import FuzzyCMeans
from audiognn.graph.kmeans import KMeans
from audiognn.graph.knn import dense_dilated_knn, pool_keys
from audiognn.graph.max_gather import max_gather
from audiognn.graph.pointwise import pointwise_conv
from audiognn.graph.relative_pos import RelativePositionCache

KERNELS = ("both", "local", "higher")
CLUSTERINGS = ("fcm", "kmeans", "density")


def build_clustering(name: str, num_clusters: int, m: float, iters: int, init: str) -> nn.Module:
    if name == "fcm":
        return FuzzyCMeans(num_clusters, m, iters, init)
    if name == "kmeans":
        return KMeans(num_clusters, iters, init)
    if name == "density":
        return MeanShift(num_clusters, iters, init)
    raise ValueError(f"clustering {name!r} is not one of {CLUSTERINGS}")


class LHGConv(nn.Module):
    r"""Local-Higher order graph convolution of LHGNN (Singh, Benetos, Phan, Stowell,
    *LHGNN: Local-Higher Order Graph Neural Networks for Audio Classification and Tagging*, §II-B1, eq. 3):

    .. math::
        \mathbf{x}_i'' = \sigma\Big(\mathbf{x}_i \,\Vert\, \max_{j \in \mathcal{S}_i}(\mathbf{x}_j - \mathbf{x}_i)
            \,\Vert\, \max_{\mathbf{c}_p \in \mathcal{L}_i}(\mathbf{c}_p - \mathbf{x}_i)\Big)

    :math:`\mathcal{S}_i`: dilated k-NN among the pooled keys; :math:`\mathcal{L}_i`: the K centroids of
    largest :math:`u^m` (eqs. 1-2); :math:`\sigma`: grouped 1x1 conv, BN, GELU. h and the residual of eq. 4
    are the Grapher's (models/lhgnn.py).

    Args:
        channels: C (divisible by 4 for the relative position and the grouped conv).
        k: neighbours in S_i (default 25, §II-C). dilation: ViG dilation d (default 1). reduce: key pooling r
            (default 1). num_clusters: P (default 50, §II-C). top_clusters: K (default 10, §II-C).
        kernel: ``"both"`` (default, eq. 3), ``"local"`` or ``"higher"`` (Table IV).
        clustering: ``"fcm"`` (default), ``"kmeans"`` or ``"density"`` (Table V).
        fcm_m: m (default 2.0, §II-B1). cluster_iters: v (default 1). cluster_init: ``"pool"`` (default,
            deterministic) or ``"randn"`` (official). relative_pos: add ViG's term (default True).
        rel_pos_cache: shared cache of relative positions (one per stage); built here if None (default).
        groups: groups of the 1x1 conv of sigma (default 4, official).

    Shapes:
        - **input:** :math:`(B, C, H, W)`
        - **output:** :math:`(B, tC, H, W)`, t = 3 for kernel ``"both"``, else 2
    """

    def __init__(
        self,
        channels: int,
        k: int = 25,
        dilation: int = 1,
        reduce: int = 1,
        num_clusters: int = 50,
        top_clusters: int = 10,
        kernel: str = "both",
        clustering: str = "fcm",
        fcm_m: float = 2.0,
        cluster_iters: int = 1,
        cluster_init: str = "pool",
        relative_pos: bool = True,
        rel_pos_cache: RelativePositionCache | None = None,
        groups: int = 4,
    ):
        super().__init__()
        if kernel not in KERNELS:
            raise ValueError(f"LHG kernel {kernel!r} is not one of {KERNELS}")
        self.channels, self.k, self.dilation, self.reduce = channels, k, dilation, reduce
        self.kernel, self.top_clusters = kernel, top_clusters
        self.use_local = kernel in ("both", "local")
        self.use_higher = kernel in ("both", "higher")
        self.terms = 1 + int(self.use_local) + int(self.use_higher)
        self.cluster = (
            build_clustering(clustering, num_clusters, fcm_m, cluster_iters, cluster_init)
            if self.use_higher
            else None
        )
        if relative_pos and self.use_local:
            self.rel_pos = (
                rel_pos_cache if rel_pos_cache is not None else RelativePositionCache(channels, reduce)
            )
        else:
            self.rel_pos = None
        width = self.terms * channels
        if width % groups:
            raise ValueError(f"LHGConv: {width} channels not divisible by groups={groups}")
        self.nn = nn.Sequential(nn.Conv2d(width, width, 1, groups=groups), nn.BatchNorm2d(width), nn.GELU())

    @property
    def out_channels(self) -> int:
        return self.terms * self.channels

    def keys(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled keys of x [B, C, H, W]: [B, M, C] (differentiable: gradient flows back through the pooling)."""
        return pool_keys(x, self.reduce).flatten(2).transpose(1, 2).contiguous()

    def neighbours(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys [B, M, C] and k-NN indices [B, N, k] of x [B, C, H, W]."""
        B, C, H, W = x.shape
        keys = self.keys(x)  # [B, M, C]
        rel = self.rel_pos(H, W, x.device) if self.rel_pos is not None else None
        idx = dense_dilated_knn(x.flatten(2).transpose(1, 2), keys, self.k, self.dilation, rel)  # [B, N, k]
        return keys, idx

    def clusters(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Centroids [B, P, C] and indices of L_i [B, N, K] (no gradient)."""
        B, C, H, W = x.shape
        with torch.no_grad(), torch.autocast(x.device.type, enabled=False):  # clustering in float32
            nodes = x.detach().flatten(2).transpose(1, 2).float()  # [B, N, C]
            c, score = self.cluster(nodes, (H, W))
            top = score.topk(min(self.top_clusters, c.shape[1]), dim=-1).indices  # [B, N, K]
        return c.to(x.dtype), top

    def sources(self, x: torch.Tensor) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
        """(kind, rows [B, S, C], indices [B, N, k]) of each max-relative term: ("local", keys, S_i), ("higher", c, L_i)."""
        out = []
        if self.use_local:
            out.append(("local", *self.neighbours(x)))
        if self.use_higher:
            out.append(("higher", *self.clusters(x)))
        return out

    def stack_terms(self, x: torch.Tensor, maxima: list[torch.Tensor]) -> torch.Tensor:
        """x [B, C, H, W] and max_j rows_j [B, N, C] per term -> [x, max - x, ...] interleaved per channel, [B, t*C, H, W]."""
        B, C, H, W = x.shape
        xf = x.flatten(2)  # [B, C, N]
        terms = [xf] + [v.transpose(1, 2) - xf for v in maxima]  # max_j (x_j - x_i) = max_j x_j - x_i
        return torch.stack(terms, dim=2).reshape(B, self.terms * C, H, W)

    def aggregate(self, x: torch.Tensor) -> torch.Tensor:
        """The concatenation inside sigma(.) of eq. 3, interleaved per channel: [B, t*C, H, W]."""
        return self.stack_terms(x, [max_gather(rows, idx) for _, rows, idx in self.sources(x)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, bn, act = self.nn
        return act(bn(pointwise_conv(self.aggregate(x), conv)))  # sigma: the 1x1 conv as a matmul on the CPU

    def extra_repr(self) -> str:
        return f"C={self.channels}, kernel={self.kernel!r}, k={self.k}, d={self.dilation}, r={self.reduce}, K={self.top_clusters}"
