r"""Propagation over a symmetric normalised adjacency: the graph operator of LightGCN, NGCF and MM-GNN.

`sym_spmm` multiplies by :math:`\hat{A} = D^{-1/2} A D^{-1/2}` (PyG's ``LGConv`` operator; the tests check
that it equals ``LGConv()(x, edge_index)`` and its gradient), `light_propagate` sums weighted powers of it.

Why not ``LGConv`` itself: on 2 CPU cores, one 3-layer forward+backward over Last.fm 2K took ~0.16 s with
``LGConv`` on an edge_index (gather/scatter of every edge; torch-sparse is not available), 0.3-2 s with
``LGConv`` or ``torch.sparse.mm`` on a CSR adjacency (autograd transposes the CSR matrix, a sort, on every
backward) and 5x less with `sym_spmm`, whose backward reuses :math:`\hat{A}` because it is symmetric
(:math:`\hat{A}^\top = \hat{A}`). Training does one full propagation per batch, so this sets the epoch time.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class _SymSpMM(torch.autograd.Function):
    """Â @ h for a *symmetric* sparse Â (no gradient for Â): backward is Âᵀ g = Â g, no transpose."""

    @staticmethod
    def forward(ctx, adj, h):
        ctx.adj = adj
        return adj @ h

    @staticmethod
    def backward(ctx, grad):
        return None, ctx.adj @ grad


def sym_spmm(adj: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    r""":math:`\hat{A} h` for a symmetric sparse :math:`\hat{A}`, differentiable in ``h`` only.

    Args:
        adj (torch.Tensor): sparse (CSR or COO) symmetric matrix; its symmetry is assumed, not checked.
        h (torch.Tensor): dense node features.

    Shapes:
        - **input:** adj ``[N, N]``, h ``[N, d]``
        - **output:** ``[N, d]``
    """
    return _SymSpMM.apply(adj, h)


def light_propagate(x: torch.Tensor, adj: torch.Tensor, num_layers: int, weights: Sequence[float]) -> torch.Tensor:
    r"""Weighted sum of the layers of light graph convolution (no transform, no non-linearity).

    From He et al., *LightGCN: Simplifying and Powering Graph Convolution Network for Recommendation*
    (eqs. 3-4) and Ziaoddini, *Socially Aware Music Recommendation: a Multi-Modal GNN* (eqs. 2-3):

    .. math::
        e^{(l+1)} = \hat{A} e^{(l)}, \qquad e = \sum_{l=0}^{L} w_l \, e^{(l)}, \qquad e^{(0)} = x

    Args:
        x (torch.Tensor): layer-0 embeddings.
        adj (torch.Tensor): :math:`\hat{A}`, symmetric normalised sparse adjacency (see `sym_spmm`).
        num_layers (int): L.
        weights (Sequence[float]): :math:`w_0, \dots, w_L` (LightGCN: :math:`1/(L+1)`; MM-GNN: :math:`1/(l+1)`).

    Shapes:
        - **input:** x ``[N, d]``, adj ``[N, N]``
        - **output:** ``[N, d]``
    """
    out = weights[0] * x
    h = x
    for layer in range(1, num_layers + 1):
        h = sym_spmm(adj, h)
        out = out + weights[layer] * h
    return out
