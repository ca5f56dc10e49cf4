"""ViG's 2-D sin-cos relative-position term for the dilated k-NN (LHGNN ref. [10], Vision GNN).

Vision GNN adds to the k-NN distance the term

    R[i, j] = 2 * e_i . e_j / D,        e = 2-D sin-cos position embedding of dimension D

(its ``get_2d_relative_pos_embed``), negated, so that spatially close nodes look closer. ViG and the
official LHGNN build R for a *square* grid of side int(sqrt(N)) and resize it bicubically to
(N, N / r^2); for the non-square 32 x 256 audio grid that resize no longer maps rows and columns to
real positions. Choice made here: R is computed exactly for the actual H x W query grid and the
actual pooled key grid (keys at the centres of their r x r pooling windows), for any input size.
The diagonal of R is 1 for un-pooled keys, as in ViG. Not a learnable parameter (ViG freezes it).
"""

from __future__ import annotations

import math

import torch


def _sincos_1d(pos: torch.Tensor, dim: int) -> torch.Tensor:
    """MAE / ViG 1-D sin-cos embedding: pos [M] -> [M, dim] = [sin(pos * w), cos(pos * w)]."""
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / 10000**omega  # [dim/2]
    out = pos.double()[:, None] * omega[None, :]  # [M, dim/2]
    return torch.cat([out.sin(), out.cos()], dim=1)


def sincos_2d(rows: torch.Tensor, cols: torch.Tensor, dim: int) -> torch.Tensor:
    """2-D sin-cos embedding of the grid ``rows x cols`` (row-major): [len(rows) * len(cols), dim]."""
    if dim % 4:
        raise ValueError(f"relative position: channel count {dim} must be divisible by 4")
    r, c = torch.meshgrid(rows.double(), cols.double(), indexing="ij")
    # ViG concatenates [emb(w-coordinate), emb(h-coordinate)], each of dim / 2
    return torch.cat([_sincos_1d(c.reshape(-1), dim // 2), _sincos_1d(r.reshape(-1), dim // 2)], dim=1)


def relative_position(dim: int, height: int, width: int, reduce: int = 1) -> torch.Tensor:
    r"""Vision GNN's relative-position term of the k-NN distance used by LHGNN (Singh, Benetos, Phan, Stowell,
    *LHGNN: Local-Higher Order Graph Neural Networks for Audio Classification and Tagging*, ref. [10]):

    .. math::
        R_{ij} = \frac{2}{D} \, \mathbf{e}_i^{q} \cdot \mathbf{e}_j^{k}

    with :math:`\mathbf{e}` the 2-D sin-cos embedding of dimension D of the query / key grid positions.

    Args:
        dim: D (divisible by 4). height, width: the query grid. reduce: key pooling ratio r (default 1).

    Shapes:
        - **output:** :math:`(N, M)` float32, N = H * W, M = ceil(H / r) * ceil(W / r)

    Key grid: ceil(H / r) x ceil(W / r) cells (``avg_pool2d(..., ceil_mode=True)``), each placed at the
    centre of the query positions it averages.
    """
    q = sincos_2d(torch.arange(height), torch.arange(width), dim)  # [N, dim]
    if reduce == 1:
        k = q
    else:
        hk, wk = math.ceil(height / reduce), math.ceil(width / reduce)
        rows = torch.tensor([(i * reduce + min(height, (i + 1) * reduce) - 1) / 2 for i in range(hk)])
        cols = torch.tensor([(j * reduce + min(width, (j + 1) * reduce) - 1) / 2 for j in range(wk)])
        k = sincos_2d(rows, cols, dim)  # [M, dim]
    return (2.0 * q @ k.T / dim).float()  # [N, M]


class RelativePositionCache:
    """Computes R once per (H, W, device) and keeps it: 'interpolated once and cached per input size'.

    Shared by every block of a stage (same channels and reduce ratio). Plain Python object, not a
    buffer: it is derived data and never belongs in a checkpoint.
    """

    def __init__(self, dim: int, reduce: int):
        self.dim, self.reduce = dim, reduce
        self._cache: dict[tuple, torch.Tensor] = {}

    def __call__(self, height: int, width: int, device: torch.device) -> torch.Tensor:
        key = (height, width, str(device))
        if key not in self._cache:
            self._cache[key] = relative_position(self.dim, height, width, self.reduce).to(device)
        return self._cache[key]
