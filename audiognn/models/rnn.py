"""RNN baseline for genre classification (seed 000 §1, §3: "RNNs ... with LSTM [4]").

The seed names the baseline only ("RNN-LSTM" over MFCCs, ref. [4]); this implementation chooses:
an LSTM or GRU (``cell``), optionally bidirectional, over the clip's MFCC frames (DCT-II of the
log-mel via ``torchaudio.functional.create_dct``, ``n_mfcc`` = 20 by default, or the raw log-mel with
``n_mfcc=None``), a per-coefficient BatchNorm on the input, and as clip embedding the mean over time of
the last layer's outputs concatenated with their max over time (robust to any length T, unlike the
last hidden state, which forgets the start of a 30 s clip), then a linear classifier.
"""

from __future__ import annotations

import torch
import torchaudio.functional as AF
from torch import nn

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU}


class RNN(nn.Module):
    """LSTM/GRU over MFCC frames: ``x: [B, T, F]`` log-mel -> logits ``[B, num_classes]``.

    Args:
        num_classes: number of classes.
        cell: "lstm" or "gru".
        bidirectional: run a second RNN backwards in time.
        n_mels: mel bins F of the input; n_mfcc: MFCC coefficients per frame (None: use the log-mel).
        hidden: hidden size per direction; num_layers; dropout (between layers and before the classifier).
    """

    def __init__(
        self,
        num_classes: int,
        cell: str = "lstm",
        bidirectional: bool = True,
        n_mels: int = 128,
        n_mfcc: int | None = 20,
        hidden: int = 128,
        num_layers: int = 2,
        dropout: float = 0.2,
    ):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {sorted(CELLS)}, got {cell!r}")
        self.n_mels = n_mels
        if n_mfcc is not None:
            self.register_buffer(
                "dct", AF.create_dct(n_mfcc, n_mels, norm="ortho"), persistent=False
            )  # [F, M]
            in_dim = n_mfcc
        else:
            self.dct = None
            in_dim = n_mels
        self.norm = nn.BatchNorm1d(in_dim)
        self.rnn = CELLS[cell](
            in_dim,
            hidden,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        out = hidden * (2 if bidirectional else 1)
        self.embed_dim = 2 * out
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * out, num_classes))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``x: [B, T, F]`` -> ``[B, 2 * hidden * directions]`` (mean and max over time of the outputs)."""
        if x.dim() != 3 or x.shape[-1] != self.n_mels:
            raise ValueError(f"RNN expects x [B, T, {self.n_mels}] log-mel, got shape {tuple(x.shape)}")
        x = x.float()
        if self.dct is not None:
            x = x @ self.dct  # [B, T, M]
        x = self.norm(x.transpose(1, 2)).transpose(1, 2)  # [B, T, M]
        out, _ = self.rnn(x)  # [B, T, H*dirs]
        return torch.cat([out.mean(1), out.amax(1)], dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))
