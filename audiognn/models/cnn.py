"""The CNN baseline of Dhongade and Rovira, *Graph Neural Networks for Music Genre Classification*: a
compact 2-D CNN on the log-mel spectrogram.

The paper (§1, §3) compares its genre GNN with "standard methods such as CNNs" on spectrograms but gives no
architecture. We use the common compact design of that literature: ``len(channels)`` blocks of
conv3×3 → BatchNorm → ReLU → conv3×3 → BatchNorm → ReLU → 2×2 max-pool, then global average + max pooling
over (time, mel), dropout and a linear classifier. With the default channels (32, 64, 128, 256) it has
about 1.2 M parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from audiognn.models.base import AudioBackbone


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class CNN(AudioBackbone):
    r"""Compact 2-D CNN baseline of Dhongade and Rovira, *Graph Neural Networks for Music Genre
    Classification* (§1, §3; architecture chosen here, see the module docstring).

    .. math::
        \mathbf{H} = \mathrm{Blocks}(\mathbf{X}) \in \mathbb{R}^{C \times T' \times F'}, \quad
        \mathbf{z} = \mathrm{mean}_{t,f} \mathbf{H} \,\Vert\, \max_{t,f} \mathbf{H}, \quad
        \hat{\mathbf{y}} = \mathbf{W} \, \mathrm{Dropout}(\mathbf{z}) + \mathbf{b}

    Args:
        num_classes (int): number of classes.
        channels (tuple[int, ...], optional): output channels of each block (each block halves T and F).
            (default: ``(32, 64, 128, 256)``)
        dropout (float, optional): dropout before the head. (default: ``0.3``)
        freq_bands (int, optional): when set, the last feature map is average-pooled over frequency into this
            many bands that stay apart: :math:`\mathbf{z}` is the mean and max over time of each (channel,
            band), ``2 C · freq_bands`` features, so the head sees where in frequency a pattern is (the global
            pooling is shift-invariant in frequency: stationary noises such as air conditioners and idling
            engines differ mostly in spectral shape). ``None``: global pooling over (time, mel).
            (default: ``None``)
        time_pool (int, optional): average-pool the input over this many frames before the first block (``2``
            on 10 ms frames: 20 ms frames). The blocks cost in proportion to the frames they see, so ``2`` halves
            the compute, or buys twice the channels at about the same cost. (default: ``1``)

    Shapes:
        - **input:** normalised log-mel :math:`(B, T, F)`
        - **embed output:** :math:`(B, 2 C)`, C = ``channels[-1]`` (:math:`(B, 2 C \cdot` ``freq_bands`` :math:`)`
          with ``freq_bands``)
        - **output:** logits :math:`(B, \text{num\_classes})`
    """

    def __init__(self, num_classes: int, channels: tuple[int, ...] = (32, 64, 128, 256), dropout: float = 0.3,
                 freq_bands: int | None = None, time_pool: int = 1):
        super().__init__()
        if not isinstance(time_pool, int) or time_pool < 1:
            raise ValueError(f"CNN time_pool must be an integer >= 1, got {time_pool!r}")
        self.time_pool = time_pool
        if freq_bands is not None and (not isinstance(freq_bands, int) or freq_bands < 1):
            raise ValueError(f"CNN freq_bands must be None or an integer >= 1, got {freq_bands!r}")
        self.freq_bands = freq_bands
        layers, cin = [], 1
        for c in channels:
            layers.append(_block(cin, c))
            cin = c
        self.features = nn.Sequential(*layers)
        self.embed_dim = 2 * cin * (freq_bands or 1)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.embed_dim, num_classes))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T, F]`` -> clip embedding ``[B, 2·C]`` (global mean ⊕ max of the last feature map), or
        ``[B, 2·C·freq_bands]`` (mean ⊕ max over time of each band)."""
        x = x.unsqueeze(1)  # [B, 1, T, F]
        if self.time_pool > 1:
            x = nn.functional.avg_pool2d(x, (self.time_pool, 1), ceil_mode=True)
        h = self.features(x)  # [B, C, T', F']
        if self.freq_bands is None:
            return torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)
        h = nn.functional.adaptive_avg_pool2d(h, (h.shape[2], self.freq_bands))  # [B, C, T', bands]
        return torch.cat([h.mean(dim=2), h.amax(dim=2)], dim=1).flatten(1)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints written before the head was named `head`: `classifier.*` is now `head.1.*`
        for key in [k for k in state_dict if k.startswith(prefix + "classifier.")]:
            state_dict[prefix + "head.1." + key[len(prefix + "classifier."):]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
