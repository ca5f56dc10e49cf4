"""1x1 convolutions as batched matrix products on the CPU (LHGNN's Grapher, sigma of eq. 3, and ConvFFN).

A 1x1 conv with G groups is ``W_g @ X_g`` per group: ``[G, Co/G, C/G] @ [B, G, C/G, H*W]``. Hand-written because
oneDNN's CPU convolution (what ``nn.Conv2d`` dispatches to) is slow for these shapes: measured on 2 threads
(forward + backward, ms; conv vs matmul), sigma's grouped conv of LHGNN-s (groups 4) 48.5 vs 19.3 at
[2, 1200, 8, 64] and 58.6 vs 19.3 at [2, 240, 32, 256]; the dense 400 -> 1600 conv of stage 3 24.0 vs 20.9
(``bench/lhgnn.py`` gives the whole-model figure). Elsewhere (CUDA, ``torch.compile``, any other kernel size,
stride, padding or dilation) the module itself runs.

``pointwise_conv(x, conv)`` equals ``conv(x)`` up to float rounding, gradients included (autograd of matmul);
``pointwise_conv_backward`` is the same backward for the custom Functions of ``models/lean_ops.py``.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["is_pointwise", "pointwise_conv", "pointwise_conv_backward", "use_matmul"]


def is_pointwise(conv: nn.Conv2d) -> bool:
    """A 1x1 conv with stride 1, no padding, no dilation (a per-pixel linear map, grouped or not)."""
    return (
        tuple(conv.kernel_size) == (1, 1)
        and tuple(conv.stride) == (1, 1)
        and tuple(conv.padding) == (0, 0)
        and tuple(conv.dilation) == (1, 1)
    )


def use_matmul(x: torch.Tensor, conv: nn.Conv2d) -> bool:
    """Whether ``pointwise_conv`` takes the matmul form for x (CPU, eager, a pointwise conv, 4-D float input)."""
    return (
        x.device.type == "cpu"
        and x.ndim == 4
        and is_pointwise(conv)
        and not torch.compiler.is_compiling()
        and not torch.is_autocast_enabled("cpu")
    )


def pointwise_conv(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``conv(x)`` for a 1x1 conv, as one batched matmul per group on the CPU.

    Shapes: x [B, C, H, W] -> [B, Co, H, W] (C, Co: the conv's in and out channels)."""
    if not use_matmul(x, conv):
        return conv(x)
    B, C, H, W = x.shape
    G, Co = conv.groups, conv.out_channels
    w = conv.weight.view(G, Co // G, C // G)
    y = torch.matmul(w, x.reshape(B, G, C // G, H * W))  # [B, G, Co/G, H*W]
    if conv.bias is not None:
        y = y + conv.bias.view(1, G, Co // G, 1)
    return y.view(B, Co, H, W)


def pointwise_conv_backward(
    grad: torch.Tensor, inp: torch.Tensor, conv: nn.Conv2d
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(grad input, grad weight or None, grad bias or None) of ``pointwise_conv(inp, conv)``.

    Shapes: grad [B, Co, H, W], inp [B, C, H, W] -> [B, C, H, W], weight's shape, [Co]."""
    B, C, H, W = inp.shape
    G, Co = conv.groups, conv.out_channels
    g = grad.reshape(B, G, Co // G, H * W)
    w = conv.weight.view(G, Co // G, C // G)
    g_in = torch.matmul(w.transpose(1, 2), g).view(B, C, H, W)
    g_w = None
    if conv.weight.requires_grad:
        g_w = torch.matmul(g, inp.reshape(B, G, C // G, H * W).transpose(2, 3)).sum(0).view_as(conv.weight)
    g_b = grad.sum((0, 2, 3)) if conv.bias is not None and conv.bias.requires_grad else None
    return g_in, g_w, g_b
