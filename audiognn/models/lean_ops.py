"""Memory-lean training path of LHGNN's blocks: recompute cheap tensors in the backward instead of saving them.

A plain ``conv -> BN -> GELU -> [depth-wise 3x3] -> conv`` chain saves, for its backward, the BN input, the
GELU input, the depth-wise input and the second conv's input. In ConvFFN each of these is 4C wide (the
FFN's expansion), in the Grapher 3C wide (the concatenation of eq. 3); together they were 70 % of the
saved activations of an LHGNN-s train step. ``bn_act_conv`` saves only the BN input (and the batch
statistics); in the backward it recomputes BN, GELU and the depth-wise conv (elementwise or 9 MACs per
element) and back-propagates through them, while the expensive 1x1 conv is never recomputed: its input
gradient and weight gradient come from ``aten.convolution_backward`` on the recomputed input.

Used in training mode with autograd on, in eager float32 (``use_lean``). Under ``torch.compile`` the plain
modules are traced instead (AOT autograd's min-cut partitioner makes the same recompute choice), and
under autocast too (the plain path handles the dtype casts).

``frozen_batchnorm_stats(module)``: a context in which BatchNorm layers do not update their running
statistics (momentum 0, ``num_batches_tracked`` restored), for the recompute pass of activation
checkpointing (``torch.utils.checkpoint`` would otherwise update them twice per step).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from audiognn.graph.lhg_conv import LHGConv
from audiognn.graph.max_gather import gather_max_with_arg
from audiognn.graph.pointwise import pointwise_conv, pointwise_conv_backward, use_matmul

__all__ = ["bn_act_conv", "bn_graph_conv", "conv_backward", "frozen_batchnorm_stats", "use_lean"]


def use_lean(x: torch.Tensor, module: nn.Module) -> bool:
    """Whether the memory-lean custom Functions apply (training, autograd on, eager, no autocast)."""
    return (
        module.training
        and torch.is_grad_enabled()
        and not torch.compiler.is_compiling()
        and not torch.is_autocast_enabled(x.device.type)
    )


def conv_backward(grad: torch.Tensor, inp: torch.Tensor, conv: nn.Conv2d) -> tuple:
    """(grad input, grad weight, grad bias or None) of ``conv(inp)`` without re-running the conv (1x1 convs on the
    CPU as the matmul of ``graph/pointwise.py``, the form their forward took)."""
    if use_matmul(inp, conv):
        return pointwise_conv_backward(grad, inp, conv)
    has_bias = conv.bias is not None
    return torch.ops.aten.convolution_backward(
        grad, inp, conv.weight, [conv.out_channels] if has_bias else None, list(conv.stride), list(conv.padding),
        list(conv.dilation), False, [0, 0], conv.groups, [True, conv.weight.requires_grad, has_bias],
    )  # fmt: skip


def bn_forward(a: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training-mode ``bn(a)`` as nn.BatchNorm2d computes it (running statistics updated once), also returning
    the batch mean and inverse standard deviation [C] that its backward needs."""
    factor = 0.0 if bn.momentum is None else bn.momentum
    if bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:  # cumulative moving average
            factor = 1.0 / float(bn.num_batches_tracked)
    return torch.ops.aten.native_batch_norm(
        a, bn.weight, bn.bias, bn.running_mean, bn.running_var, True, factor, bn.eps
    )


def bn_recompute(
    a: torch.Tensor, bn: nn.BatchNorm2d, mean: torch.Tensor, invstd: torch.Tensor
) -> torch.Tensor:
    """bn(a) again from the saved batch statistics: one elementwise pass, no reduction."""
    scale = invstd if bn.weight is None else invstd * bn.weight
    shift = -mean * scale if bn.bias is None else bn.bias - mean * scale
    return torch.addcmul(shift.view(1, -1, 1, 1), a, scale.view(1, -1, 1, 1))


def bn_backward(grad, a, bn, mean, invstd) -> tuple:
    """(grad a, grad weight, grad bias) of training-mode BN with the saved batch statistics."""
    affine = bn.weight is not None
    mask = [True, affine and bn.weight.requires_grad, affine and bn.bias.requires_grad]
    return torch.ops.aten.native_batch_norm_backward(
        grad, a, bn.weight, None, None, mean, invstd, True, bn.eps, mask
    )


class _BnActConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, bn, dw, conv, *params):
        b, mean, invstd = bn_forward(a, bn)
        h = F.gelu(b)
        del b
        out = pointwise_conv(dw(h) if dw is not None else h, conv)
        ctx.mods = (bn, dw, conv)
        ctx.save_for_backward(a, mean, invstd)
        return out

    @staticmethod
    def backward(ctx, grad):
        a, mean, invstd = ctx.saved_tensors
        bn, dw, conv = ctx.mods
        b = bn_recompute(a, bn, mean, invstd)  # recomputed: BN, GELU, depth-wise conv (never the 1x1 conv)
        h = F.gelu(b)
        g, g_w, g_cb = conv_backward(grad, dw(h) if dw is not None else h, conv)
        dw_grads = []
        if dw is not None:
            g, g_dww, g_dwb = conv_backward(g, h, dw)
            dw_grads = [g_dww, g_dwb]
        del h
        g_a, g_bnw, g_bnb = bn_backward(torch.ops.aten.gelu_backward(g, b), a, bn, mean, invstd)
        tail = [g_w, g_cb] if conv.bias is not None else [g_w]
        return (g_a, None, None, None, g_bnw, g_bnb, *dw_grads, *tail)


def bn_act_conv(a: torch.Tensor, bn: nn.BatchNorm2d, dw: nn.Conv2d | None, conv: nn.Conv2d) -> torch.Tensor:
    """``conv(dw(GELU(bn(a))))`` (``dw`` optional) saving only ``a`` for the backward.

    Args:
        a: BN input [B, C_in, H, W]. bn: training-mode BatchNorm2d. dw: depth-wise conv or None. conv: the conv
            after them (any 1x1 or k x k conv).
    Shapes: a [B, C_in, H, W] -> [B, C_out, H', W'].
    """
    if not use_lean(a, bn):
        h = F.gelu(bn(a))
        return pointwise_conv(dw(h) if dw is not None else h, conv)
    params = [bn.weight, bn.bias] + ([dw.weight, dw.bias] if dw is not None else []) + [conv.weight]
    params += [conv.bias] if conv.bias is not None else []
    return _BnActConv.apply(a, bn, dw, conv, *params)


@contextlib.contextmanager
def frozen_batchnorm_stats(module: nn.Module):
    """BatchNorm layers of ``module`` leave their running statistics as they are inside the context."""
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [
        (m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone()) for m in bns
    ]
    for m in bns:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (mom, nbt) in zip(bns, saved, strict=True):
            m.momentum = mom
            if nbt is not None:
                m.num_batches_tracked.copy_(nbt)


class _BnGraphConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, bn, graph, *params):
        b, mean, invstd = bn_forward(a, bn)  # running statistics updated once
        kinds, args, maxima, rows_kept = [], [], [], []
        for kind, rows, idx in graph.sources(b):
            val, arg = gather_max_with_arg(rows, idx)  # [B, N, C] each
            kinds.append(kind)
            args.append(arg)
            maxima.append(val)
            rows_kept.append(rows if kind != "local" else None)  # centroids: constants; keys: recomputed
        ctx.mods, ctx.kinds, ctx.rows = (bn, graph), kinds, rows_kept
        ctx.save_for_backward(a, mean, invstd, *args)
        return pointwise_conv(graph.stack_terms(b, maxima), graph.nn[0])

    @staticmethod
    def backward(ctx, grad):
        a, mean, invstd, *args = ctx.saved_tensors
        bn, graph = ctx.mods
        with torch.enable_grad():  # recomputed: BN, pooled keys, the gathered maxima (from the saved arg-max)
            b = bn_recompute(a, bn, mean, invstd).detach().requires_grad_(True)
            maxima = []
            for kind, arg, rows in zip(ctx.kinds, args, ctx.rows, strict=True):
                src = graph.keys(b) if kind == "local" else rows
                maxima.append(src.gather(1, arg.long()))
            s = graph.stack_terms(b, maxima)
        g_s, g_w, g_cb = conv_backward(grad, s.detach(), graph.nn[0])
        (g_b,) = torch.autograd.grad(s, b, g_s)
        g_a, g_bnw, g_bnb = bn_backward(g_b, a, bn, mean, invstd)
        return g_a, None, None, g_bnw, g_bnb, g_w, g_cb


def bn_graph_conv(a: torch.Tensor, bn: nn.BatchNorm2d, graph: LHGConv) -> torch.Tensor:
    """``graph.nn[0](graph.aggregate(bn(a)))``: BN, eq. 3's concatenation and sigma's 1x1 conv, saving only ``a``
    and the arg-max key index of each max-relative term ([B, N, C] int32) for the backward.

    Args:
        a: the Grapher's fc1 conv output. bn: its training-mode BatchNorm2d. graph: the LHG convolution.
    Shapes: a [B, C, H, W] -> [B, t*C, H, W] (before sigma's BN and GELU).
    """
    conv = graph.nn[0]
    if not use_lean(a, bn):
        return pointwise_conv(graph.aggregate(bn(a)), conv)
    return _BnGraphConv.apply(a, bn, graph, bn.weight, bn.bias, conv.weight, conv.bias)
