"""RNN baseline for genre classification (Dhongade and Rovira, *Graph Neural Networks for Music Genre
Classification*, §1, §3: "RNNs ... with LSTM [4]").

The paper names the baseline only ("RNN-LSTM" over MFCCs, ref. [4]); this implementation chooses:
an LSTM or GRU (``cell``), optionally bidirectional, over the clip's MFCC frames (DCT-II of the
log-mel, :func:`audiognn.features.mfcc_from_logmel`, ``n_mfcc`` = 20 by default, or the raw log-mel with
``n_mfcc=None``), a per-coefficient BatchNorm on the input, and as clip embedding the mean over time of
the last layer's outputs concatenated with their max over time (robust to any length T, unlike the
last hidden state, which forgets the start of a 30 s clip), then a linear classifier.

Two front ends replace the MFCCs with learned features (neither is in the paper): ``conv_channels``, the
GenreGNN's frame encoder (every frame kept, the mel axis pooled away), and ``cnn_channels``, the CNN baseline's
blocks (time and mel pooled 2× per block, the bins left kept apart as bands): the convolutional recurrent network
(CRNN) of sound event detection (Cakir et al., *Convolutional Recurrent Neural Networks for Polyphonic Sound
Event Detection*, 2017), the RNN reading a short sequence of CNN features.
"""

from __future__ import annotations

import torch
from torch import nn

from audiognn.features import mfcc_from_logmel
from audiognn.models.base import AudioBackbone, check_choice
from audiognn.models.cnn import _block as cnn_block
from audiognn.models.genre_gnn import FrameEncoder

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
        conv_channels (list[int], optional): when set, the RNN reads learned frame features instead of the
            MFCCs: a :class:`~audiognn.models.genre_gnn.FrameEncoder` with these channels (conv 3x3, BN, ReLU and
            a max-pool of 4 mel bins each; then the mean over the bins left), ``conv_channels[-1]`` features per
            frame, every frame kept; ``n_mfcc`` is then unused. ``None``: MFCCs (or log-mel). (default: ``None``)
        cnn_channels (list[int], optional): when set (and ``conv_channels`` is not), the RNN reads the feature
            map of the :class:`~audiognn.models.cnn.CNN` baseline's blocks with these channels (two conv 3x3, BN,
            ReLU, then a 2x2 max-pool each: ``len(cnn_channels)`` blocks leave :math:`T / 2^{n}` steps),
            average-pooled over the mel axis into ``cnn_bands`` bands kept apart: ``cnn_channels[-1] *
            cnn_bands`` features per step, a CRNN. ``None``: no CNN front end. (default: ``None``)
        cnn_bands (int, optional): mel bands of the CNN front end's features (``cnn_channels`` only; 64 mel bins
            after four blocks leave 4). (default: ``4``)
        time_pool (int, optional): average the frame features over this many frames before the RNN (``4`` on
            10 ms frames: 40 ms steps). The RNN's cost is in proportion to its steps, so ``4`` lets it read
            whole 4 s clips at the cost of 1 s crops. (default: ``1``)

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
        conv_channels: list[int] | None = None,
        time_pool: int = 1,
        cnn_channels: list[int] | None = None,
        cnn_bands: int = 4,
    ):
        super().__init__()
        check_choice("cell", cell, sorted(CELLS))
        if not isinstance(time_pool, int) or isinstance(time_pool, bool) or time_pool < 1:
            raise ValueError(f"RNN time_pool must be an integer >= 1, got {time_pool!r}")
        self.time_pool = time_pool
        self.n_mels = n_mels
        self.n_mfcc = n_mfcc
        if conv_channels is not None and (not conv_channels or any(not isinstance(c, int) or c < 1
                                                                   for c in conv_channels)):
            raise ValueError(f"RNN conv_channels must be None or a non-empty list of positive integers, "
                             f"got {conv_channels!r}")
        if cnn_channels is not None and (conv_channels is not None or not cnn_channels or any(
                not isinstance(c, int) or c < 1 for c in cnn_channels)):
            raise ValueError(f"RNN cnn_channels must be None or a non-empty list of positive integers, and "
                             f"conv_channels None with it; got cnn_channels={cnn_channels!r}, "
                             f"conv_channels={conv_channels!r}")
        if not isinstance(cnn_bands, int) or isinstance(cnn_bands, bool) or cnn_bands < 1:
            raise ValueError(f"RNN cnn_bands must be an integer >= 1, got {cnn_bands!r}")
        self.frames = None if conv_channels is None else FrameEncoder(tuple(conv_channels))
        self.cnn = None
        if cnn_channels is not None:
            self.cnn = nn.Sequential(*(cnn_block(cin, c) for cin, c in zip([1, *cnn_channels], cnn_channels)))
            self.cnn_bands = cnn_bands
        if self.frames is not None:
            in_dim = self.frames.out_dim
        elif self.cnn is not None:
            in_dim = cnn_channels[-1] * cnn_bands
        else:
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
        if self.frames is not None:
            x = self.frames(x)  # [B, T, conv_channels[-1]]
        elif self.cnn is not None:
            h = self.cnn(x.float().unsqueeze(1))  # [B, C, T', F']
            h = nn.functional.adaptive_avg_pool2d(h, (h.shape[2], self.cnn_bands))  # [B, C, T', bands]
            x = h.permute(0, 2, 1, 3).flatten(2)  # [B, T', C * bands]
        else:
            x = x.float() if self.n_mfcc is None else mfcc_from_logmel(x, self.n_mfcc)  # [B, T, M]
        x = x.transpose(1, 2)  # [B, M, T]
        if self.time_pool > 1:
            x = nn.functional.avg_pool1d(x, self.time_pool, ceil_mode=True)  # [B, M, ceil(T / time_pool)]
        x = self.norm(x).transpose(1, 2)  # [B, T', M]
        out, _ = self.rnn(x)  # [B, T, H*dirs]
        return torch.cat([out.mean(1), out.amax(1)], dim=-1)
