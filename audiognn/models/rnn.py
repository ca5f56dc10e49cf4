"""RNN baseline for genre classification (Dhongade and Rovira, *Graph Neural Networks for Music Genre
Classification*, §1, §3: "RNNs ... with LSTM [4]").

The paper names the baseline only ("RNN-LSTM" over MFCCs, ref. [4]); this implementation chooses:
an LSTM or GRU (``cell``), optionally bidirectional, over the clip's MFCC frames (DCT-II of the
log-mel, :func:`audiognn.features.mfcc_from_logmel`, ``n_mfcc`` = 20 by default, or the raw log-mel with
``n_mfcc=None``), a per-coefficient BatchNorm on the input, and as clip embedding the mean over time of
the last layer's outputs concatenated with their max over time (robust to any length T, unlike the
last hidden state, which forgets the start of a 30 s clip), then a linear classifier.
"""

from __future__ import annotations

import torch
from torch import nn

from audiognn.features import mfcc_from_logmel
from audiognn.models.base import AudioBackbone, check_choice

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU}


class RNN(AudioBackbone):
    r"""LSTM/GRU baseline of Dhongade and Rovira, *Graph Neural Networks for Music Genre Classification*
    (§1, §3) over MFCC frames (choices in the module docstring).

    .. math::
        \mathbf{o}_{1..T} = \mathrm{RNN}(\mathrm{BN}(\mathrm{MFCC}(\mathbf{X}))), \quad
        \mathbf{z} = \tfrac{1}{T} \textstyle\sum_t \mathbf{o}_t \,\Vert\, \max_t \mathbf{o}_t, \quad
        \hat{\mathbf{y}} = \mathbf{W} \, \mathrm{Dropout}(\mathbf{z}) + \mathbf{b}

    Args:
        num_classes (int): number of classes.
        cell (str, optional): ``"lstm"`` or ``"gru"``. (default: ``"lstm"``)
        bidirectional (bool, optional): run a second RNN backwards in time. (default: ``True``)
        n_mels (int, optional): mel bins F of the input. (default: ``128``)
        n_mfcc (int, optional): MFCC coefficients per frame; ``None``: use the log-mel. (default: ``20``)
        hidden (int, optional): hidden size H per direction. (default: ``128``)
        num_layers (int, optional): stacked RNN layers. (default: ``2``)
        dropout (float, optional): between RNN layers and before the head. (default: ``0.2``)

    Shapes:
        - **input:** normalised log-mel :math:`(B, T, F)`
        - **embed output:** :math:`(B, 2 H d)`, d = 2 if bidirectional else 1
        - **output:** logits :math:`(B, \text{num\_classes})`
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
        check_choice("cell", cell, sorted(CELLS))
        self.n_mels = n_mels
        self.n_mfcc = n_mfcc
        in_dim = n_mfcc or n_mels
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
        x = x.float() if self.n_mfcc is None else mfcc_from_logmel(x, self.n_mfcc)  # [B, T, M]
        x = self.norm(x.transpose(1, 2)).transpose(1, 2)  # [B, T, M]
        out, _ = self.rnn(x)  # [B, T, H*dirs]
        return torch.cat([out.mean(1), out.amax(1)], dim=-1)
