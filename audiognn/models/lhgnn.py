"""LHGNN: Local-Higher order Graph Neural Network (Singh, Benetos, Phan, Stowell, arXiv:2501.03464).

Input x [B, T, F] normalised log-mel (time, mel) -> logits [B, num_classes]; ``embed(x)`` -> [B, 1024].

    mel [B, 1, F, T] -> stem (/4) -> + position embedding -> stage 1 -> down -> stage 2 -> down
        -> stage 3 -> down -> stage 4 -> global average pool -> 1x1 conv -> BN -> GELU -> dropout
        -> 1x1 conv (classifier)                                               (§II-A, Fig. 1)
    stage t: L_t x [ Grapher (fc1 -> LHG conv, eq. 3 -> fc2 = h, + residual, eq. 4)
                     then ConvFFN (1x1 C->4C, GELU, depth-wise 3x3, 1x1 4C->C, + residual) ]  (§II-B)

Size "s" (§II-C): depths [2, 2, 6, 2], k = 25, K = 10, P = 50, m = 2, v = 1. Where the paper's text and
its 31 M parameters (Table I) disagree, the default follows the parameter count (official code):
- channels [80, 160, 400, 640] (31.48 M trainable with 527 classes, 31.14 M with 200); the text's
  [80, 160, 320, 640] is ``channels=[80, 160, 320, 640]`` (about 25.3 M with 527 classes).
- stem: the official 3 convs, strides 2, 2, 1 (1 -> C/2 -> C -> C, BN, GELU between; no GELU at the end);
  the text's "four 3x3 convs with strides 2, 1, 2, 1" is ``stem="paper"`` (+14.5 k parameters).
Other choices (paper silent; official code followed): mel is the height and time the width of the
image; learnable position embedding [1, C0, F/4, T/4] (zeros) sized for ``freq_num x time_num``
(128 x 1024) and bicubically resized for other inputs (on every forward: it is trainable, so the resize
must stay in the autograd graph; the frozen relative-position tables are computed once per input size
and cached); reduce ratios r = [4, 2, 1, 1]; dilation
min(block // 4 + 1, 2); drop-path linear 0 -> 0.1; 1x1 convs kaiming-normal initialised.
The relative-position term is computed for the true grid (graph/relative_pos.py), and the FCM
initialisation is deterministic by default (``cluster_init="randn"`` for the official one).
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from audiognn.graph.lhg_conv import LHGConv
from audiognn.graph.pointwise import pointwise_conv
from audiognn.graph.relative_pos import RelativePositionCache
from audiognn.models.base import AudioBackbone
from audiognn.models.lean_ops import bn_act_conv, bn_graph_conv, frozen_batchnorm_stats

SIZES: dict[str, dict] = {
    # §II-C: the paper's configuration (channels from the official code, see module docstring)
    "s": dict(channels=[80, 160, 400, 640], depths=[2, 2, 6, 2], k=25, top_clusters=10, num_clusters=50, embed_dim=1024),
    # a CPU size (not in the paper): twice tiny's width, two blocks in stage 3; on the real-audio bench
    # (UrbanSound8K, 15 epochs, seed 0, folds 1 / 2 / 3 held out) 0.510 / 0.547 / 0.527 against tiny's
    # 0.501 / 0.501 / 0.512, at about 2x the cost per epoch (README, Benchmarks: Real audio)
    "xs": dict(channels=[32, 64, 96, 128], depths=[1, 1, 2, 1], k=9, top_clusters=3, num_clusters=16, embed_dim=256),
    # small model for CPU tests and smoke runs
    "tiny": dict(channels=[16, 32, 48, 64], depths=[1, 1, 1, 1], k=9, top_clusters=3, num_clusters=8, embed_dim=128),
}


class DropPath(nn.Module):
    """Stochastic depth per sample (Huang et al. 2016). Hand-written: timm/torchvision are not in the stack."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


def conv_bn(cin: int, cout: int, kernel: int = 1, stride: int = 1, bias: bool = True, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=bias, groups=groups), nn.BatchNorm2d(cout)
    )


class Stem(nn.Sequential):
    """Convolutional stem (§II-A), /4 in both axes: conv-BN blocks with GELU between, none after the last.

    'official': 1 -> C/2 -> C -> C, strides 2, 2, 1; 'paper': 1 -> C/2 -> C/2 -> C -> C, strides 2, 1, 2, 1.
    In training only each conv's output is kept for the backward (BN and GELU recomputed, lean_ops.py).
    """

    def __init__(self, channels: int, kind: str = "official"):
        half = channels // 2
        plans = {"official": [(1, half, 2), (half, channels, 2), (channels, channels, 1)],
                 "paper": [(1, half, 2), (half, half, 1), (half, channels, 2), (channels, channels, 1)]}  # fmt: skip
        if kind not in plans:
            raise ValueError(f"LHGNN stem {kind!r} is not one of {tuple(plans)}")
        layers = []
        for cin, cout, stride in plans[kind]:
            layers += [conv_bn(cin, cout, 3, stride), nn.GELU()]
        super().__init__(*layers[:-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        convs = list(self)[::2]  # the conv_bn blocks; a GELU between consecutive ones
        a = convs[0][0](x)
        for prev, nxt in zip(convs[:-1], convs[1:], strict=True):
            a = bn_act_conv(a, prev[1], None, nxt[0])  # BN, GELU, next conv
        return convs[-1][1](a)


def make_stem(channels: int, kind: str = "official") -> Stem:
    """The convolutional stem (alias kept for callers of the function)."""
    return Stem(channels, kind)


class Grapher(nn.Module):
    """y = x + drop_path(h(sigma(fc1(x) ...)))  — eqs. 3-4 with fc1 (1x1 conv + BN) before the graph conv."""

    def __init__(self, channels: int, drop_path: float = 0.0, **conv_kwargs):
        super().__init__()
        self.fc1 = conv_bn(channels, channels)
        self.graph_conv = LHGConv(channels, **conv_kwargs)
        self.fc2 = conv_bn(self.graph_conv.out_channels, channels)  # h(.) of eq. 4
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, H, W]
        g = bn_graph_conv(pointwise_conv(x, self.fc1[0]), self.fc1[1], self.graph_conv)  # fc1, eq. 3's concat, sigma's conv
        h = bn_act_conv(g, self.graph_conv.nn[1], None, self.fc2[0])  # sigma's BN + GELU, then h's conv
        return x + self.drop_path(self.fc2[1](h))


class ConvFFN(nn.Module):
    """ConvFFN (§II-B2, ref. [14]): 1x1 C->4C + BN, GELU, depth-wise 3x3 (bias), 1x1 4C->C + BN, residual."""

    def __init__(self, channels: int, hidden: int, drop_path: float = 0.0):
        super().__init__()
        self.fc1 = conv_bn(channels, hidden, bias=False)
        self.act = nn.GELU()
        self.dw = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)
        self.fc2 = conv_bn(hidden, channels, bias=False)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = bn_act_conv(pointwise_conv(x, self.fc1[0]), self.fc1[1], self.dw, self.fc2[0])  # BN, GELU, dw conv, 1x1 4C -> C
        return x + self.drop_path(self.fc2[1](h))


class LHGNN(AudioBackbone):
    r"""LHGNN backbone from Singh, Benetos, Phan, Stowell, *LHGNN: Local-Higher Order Graph Neural Networks for
    Audio Classification and Tagging* (architecture in the module docstring). Plain nn.Module.

    Each block of stage t updates the node features X (one node per time-frequency patch) by eqs. 3-4:

    .. math::
        \mathbf{x}_i'' = \sigma\Big(\mathbf{x}_i \,\Vert\, \max_{j \in \mathcal{S}_i}(\mathbf{x}_j - \mathbf{x}_i)
            \,\Vert\, \max_{\mathbf{c}_p \in \mathcal{L}_i}(\mathbf{c}_p - \mathbf{x}_i)\Big), \qquad
        \mathbf{y}_i = \mathbf{x}_i + h(\mathbf{x}_i'')

    followed by a ConvFFN; :math:`\mathcal{S}_i` are the k dilated nearest neighbours, :math:`\mathcal{L}_i` the
    K Fuzzy C-Means centroids of largest membership (eqs. 1-2, :class:`~audiognn.graph.LHGConv`).

    Args:
        num_classes: output classes (527 AudioSet, 200 FSD50K, 50 ESC-50).
        size: ``"s"`` (paper, §II-C), ``"xs"`` (a CPU size: [32, 64, 96, 128], [1, 1, 2, 1], 9, 3, 16, 256) or
            ``"tiny"`` (tests); explicit arguments below override the preset.
        channels, depths, k, top_clusters (K), num_clusters (P), embed_dim: override the size preset
            (``"s"``: [80, 160, 400, 640], [2, 2, 6, 2], 25, 10, 50, 1024).
        kernel: ``"both"`` (eq. 3), ``"local"``, ``"higher"`` (Table IV). clustering: ``"fcm"``, ``"kmeans"``,
            ``"density"`` (Table V). Default ``"both"``, ``"fcm"``.
        fcm_m: m of eq. 1 (default 2.0, §II-B1). cluster_iters: v (default 1, §II-B1).
        cluster_init: ``"pool"`` (default, deterministic) or ``"randn"`` (official).
        reduce_ratios: key pooling per stage (default (4, 2, 1, 1)). max_dilation: cap of ViG's dilation
            (default 2 = official 128 // P).
        drop_path: final drop-path rate, linear from 0 (default 0.1). dropout: before the classifier (default 0).
        freq_num, time_num: input size the position embedding is built for (default 128 x 1024, §III-A).
        stem: ``"official"`` (3 convs, default) or ``"paper"`` (4 convs, §II-A text).
        freq_bands: ``None`` (default, the paper's global average pool) or a number of frequency bands: the
            stage-4 map is average-pooled over frequency into that many bands that stay apart and the neck
            reads the mean and max over time of each (channel, band), ``2 C4 · freq_bands`` features, as the
            CNN baseline's ``freq_bands`` (not in the paper: global pooling is shift-invariant in frequency).
        relative_pos: ViG's relative-position term in the k-NN distance (default True).
        checkpoint_blocks: activation checkpointing of every Grapher and ConvFFN in training (default False):
            only block inputs are kept and each block, its k-NN and clustering included, is run again in the
            backward (about a third more compute for a much smaller peak memory). BatchNorm running
            statistics are updated once per step either way.

    Shapes:
        - **input:** log-mel :math:`(B, T, F)`
        - **embed output:** :math:`(B, D)`, D = ``embed_dim``
        - **output:** logits :math:`(B, \text{num\_classes})`
    """

    def __init__(
        self,
        num_classes: int,
        size: str = "s",
        channels: list[int] | None = None,
        depths: list[int] | None = None,
        k: int | None = None,
        top_clusters: int | None = None,
        num_clusters: int | None = None,
        embed_dim: int | None = None,
        kernel: str = "both",
        clustering: str = "fcm",
        fcm_m: float = 2.0,
        cluster_iters: int = 1,
        cluster_init: str = "pool",
        reduce_ratios: list[int] = (4, 2, 1, 1),
        max_dilation: int = 2,
        drop_path: float = 0.1,
        dropout: float = 0.0,
        freq_num: int = 128,
        time_num: int = 1024,
        stem: str = "official",
        freq_bands: int | None = None,
        relative_pos: bool = True,
        checkpoint_blocks: bool = False,
    ):
        super().__init__()
        self.checkpoint_blocks = checkpoint_blocks
        if size not in SIZES:
            raise ValueError(f"LHGNN size {size!r} is not one of {tuple(SIZES)}")
        cfg = dict(SIZES[size])
        for name, val in dict(channels=channels, depths=depths, k=k, top_clusters=top_clusters,
                              num_clusters=num_clusters, embed_dim=embed_dim).items():  # fmt: skip
            if val is not None:
                cfg[name] = list(val) if isinstance(val, (list, tuple)) else val
        chans, depths = cfg["channels"], cfg["depths"]
        if len(chans) != 4 or len(depths) != 4 or len(reduce_ratios) != 4:
            raise ValueError(f"LHGNN: channels {chans}, depths {depths}, reduce_ratios {reduce_ratios} need 4 stages")
        if freq_bands is not None and (not isinstance(freq_bands, int) or freq_bands < 1):
            raise ValueError(f"LHGNN freq_bands must be None or an integer >= 1, got {freq_bands!r}")
        self.freq_bands = freq_bands
        if any(c % 4 for c in chans):
            raise ValueError(f"LHGNN: channels {chans} must be divisible by 4 (grouped conv, sin-cos position)")
        self.num_classes, self.channels, self.depths = num_classes, chans, depths
        self.embed_dim = cfg["embed_dim"]
        self.freq_num, self.time_num = freq_num, time_num

        self.stem = make_stem(chans[0], stem)
        self.pos_embed = nn.Parameter(torch.zeros(1, chans[0], math.ceil(freq_num / 4), math.ceil(time_num / 4)))

        total = sum(depths)
        rates = [drop_path * i / max(1, total - 1) for i in range(total)]  # linear 0 -> drop_path
        self.rel_pos_caches = [RelativePositionCache(c, r) for c, r in zip(chans, reduce_ratios, strict=True)]
        stages, idx = [], 0
        for s, (c, depth) in enumerate(zip(chans, depths, strict=True)):
            blocks = [] if s == 0 else [conv_bn(chans[s - 1], c, 3, 2)]  # downsample (§II-B3)
            for _ in range(depth):
                conv = dict(
                    k=cfg["k"], dilation=min(idx // 4 + 1, max_dilation), reduce=reduce_ratios[s],
                    num_clusters=cfg["num_clusters"], top_clusters=cfg["top_clusters"], kernel=kernel,
                    clustering=clustering, fcm_m=fcm_m, cluster_iters=cluster_iters, cluster_init=cluster_init,
                    relative_pos=relative_pos, rel_pos_cache=self.rel_pos_caches[s],
                )  # fmt: skip
                blocks += [Grapher(c, rates[idx], **conv), ConvFFN(c, 4 * c, rates[idx])]
                idx += 1
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        pooled = chans[-1] * (2 * freq_bands if freq_bands else 1)
        self.neck = nn.Sequential(nn.Conv2d(pooled, self.embed_dim, 1), nn.BatchNorm2d(self.embed_dim), nn.GELU())
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.embed_dim, num_classes))  # classifier
        self._init_weights()
        self._register_load_state_dict_pre_hook(_old_head_keys)

    def _init_weights(self) -> None:
        # official / ViG: kaiming-normal conv weights, zero biases
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def _position(self, h: int, w: int) -> torch.Tensor:
        if self.pos_embed.shape[-2:] == (h, w):
            return self.pos_embed
        return F.interpolate(self.pos_embed, size=(h, w), mode="bicubic", align_corners=False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, T, F] -> pooled stage-4 features [B, C4, 1, 1] ([B, 2 C4 · freq_bands, 1, 1] with bands)."""
        if x.ndim != 3:
            raise ValueError(f"LHGNN expects log-mel [B, T, F], got shape {tuple(x.shape)}")
        x = x.transpose(1, 2).unsqueeze(1)  # [B, 1, F, T]: mel is the height, time the width
        x = self.stem(x)  # [B, C0, F/4, T/4]
        x = x + self._position(x.shape[-2], x.shape[-1])
        for stage in self.stages:
            for block in stage:
                x = self._run(block, x)  # [B, C4, F/32, T/32] at the end
        if self.freq_bands is None:
            return F.adaptive_avg_pool2d(x, 1)
        h = F.adaptive_avg_pool2d(x, (self.freq_bands, x.shape[-1]))  # [B, C4, bands, T/32]
        return torch.cat([h.mean(-1), h.amax(-1)], dim=1).flatten(1)[..., None, None]

    def _run(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if not (self.checkpoint_blocks and self.training and torch.is_grad_enabled()):
            return block(x)
        # the recompute in the backward must not update BatchNorm's running statistics a second time
        ctx = lambda: (contextlib.nullcontext(), frozen_batchnorm_stats(block))  # noqa: E731
        return checkpoint(block, x, use_reentrant=False, context_fn=ctx)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Clip embedding [B, embed_dim]: the head's hidden layer (after GELU, before dropout)."""
        return self.neck(self.features(x)).flatten(1)


def _old_head_keys(state_dict, prefix, *args) -> None:
    """Checkpoints written before the classifier became ``head`` (a 1x1 conv then, a Linear now) still load."""
    for name in ("weight", "bias"):
        old = state_dict.pop(f"{prefix}classifier.{name}", None)
        if old is not None:
            state_dict[f"{prefix}head.1.{name}"] = old.flatten(1) if name == "weight" else old


def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
