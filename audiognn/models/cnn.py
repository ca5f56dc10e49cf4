"""The CNN baseline of seed 000: a compact 2-D CNN on the log-mel spectrogram.

Seed 000 (§1, §3) compares its genre GNN with "standard methods such as CNNs" on spectrograms but gives no
architecture. We use the common compact design of that literature: ``len(channels)`` blocks of
conv3×3 → BatchNorm → ReLU → conv3×3 → BatchNorm → ReLU → 2×2 max-pool, then global average + max pooling
over (time, mel), dropout and a linear classifier. With the default channels (32, 64, 128, 256) it has
about 1.2 M parameters.
"""

from __future__ import annotations

import torch
from torch import nn


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


class CNN(nn.Module):
    """Compact 2-D CNN: ``x [B, T, F]`` log-mel -> logits ``[B, num_classes]``."""

    def __init__(self, num_classes: int, channels: tuple[int, ...] = (32, 64, 128, 256), dropout: float = 0.3):
        super().__init__()
        layers, cin = [], 1
        for c in channels:
            layers.append(_block(cin, c))
            cin = c
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(2 * cin, num_classes)
        self.embed_dim = 2 * cin

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T, F]`` -> clip embedding ``[B, 2·C]`` (global mean ⊕ max of the last feature map)."""
        h = self.features(x.unsqueeze(1))  # [B, C, T', F']
        return torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.embed(x)))
