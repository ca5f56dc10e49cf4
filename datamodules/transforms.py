"""Batch transforms applied on the device while training: mixup and SpecAugment.

Each is called as ``x, y = transform(x, y)`` on a normalised log-mel batch ``x`` ``[B, T, F]`` and its
targets ``y`` ``[B, C]``; :class:`datamodules.audio_shards.AudioShardDataModule` applies them in
``on_after_batch_transfer`` while the trainer is training.
"""

from __future__ import annotations

import torch
import torchaudio
from torch import nn


class Mixup:
    r"""Per-example mixup of features and labels by the same :math:`\lambda`.

    From *mixup: Beyond Empirical Risk Minimization* (Zhang, Cisse, Dauphin, Lopez-Paz, 2018):

    .. math::
        \tilde x_i = \lambda_i x_i + (1 - \lambda_i) x_{\pi(i)}, \quad
        \tilde y_i = \lambda_i y_i + (1 - \lambda_i) y_{\pi(i)}, \quad
        \lambda_i \sim \mathrm{Beta}(\alpha, \alpha) \text{ with probability } p, \text{ else } 1

    for a random permutation :math:`\pi` of the batch. ``alpha=0.5, prob=1.0`` is the parametrisation of
    *LHGNN: Local-Higher Order Graph Neural Networks for Audio Classification and Tagging* (Singh et al.,
    §III-A); ``alpha=10, prob=0.5`` that of the official LHGNN code and AST. The official code mixes
    waveforms before the fbank; here log-mels are mixed on the device (no re-featurisation).

    Args:
        alpha: Beta concentration :math:`\alpha` (default 0.5); ``<= 0`` disables mixup.
        prob: probability :math:`p` that an example is mixed (default 1.0); ``<= 0`` disables mixup.

    Shapes:
        - x: ``[B, T, F]``; y: ``[B, C]`` -> the same shapes. Batches of one example pass unchanged.

    The last draw is kept in ``last`` as ``(lam [B], perm [B])`` for inspection.
    """

    def __init__(self, alpha: float = 0.5, prob: float = 1.0):
        self.alpha, self.prob = alpha, prob
        self.last: tuple[torch.Tensor, torch.Tensor] | None = None

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, p = self.alpha, self.prob
        if p <= 0 or a <= 0 or x.shape[0] < 2:
            return x, y
        b = x.shape[0]
        lam = torch.distributions.Beta(a, a).sample((b,)).to(x.device)  # [B]
        lam = torch.where(torch.rand(b, device=x.device) < p, lam, torch.ones_like(lam))
        perm = torch.randperm(b, device=x.device)
        self.last = (lam, perm)
        lx = lam.view(b, 1, 1)
        ly = lam.view(b, 1)
        return lx * x + (1 - lx) * x[perm], ly * y + (1 - ly) * y[perm]


def mask_width(width: int | float, size: int) -> int:
    """The widest mask in bins or frames: ``width`` itself when it is an int (or a float >= 1), else the
    fraction ``width`` of ``size`` (the input's bins or frames), rounded; 0 disables."""
    if width < 0 or (isinstance(width, float) and width != int(width) and width > 1):
        raise ValueError(f"a mask width is a number of bins/frames (int) or a fraction in [0, 1), got {width}")
    return int(round(width * size)) if isinstance(width, float) and width < 1 else int(width)


class SpecAugment(nn.Module):
    r"""SpecAugment frequency and time masking with masks drawn per example (targets pass unchanged).

    From *SpecAugment: A Simple Data Augmentation Method for Automatic Speech Recognition* (Park, Chan,
    Zhang, Chiu, Zoph, Cubuk, Le, 2019), through torchaudio's ``mask_along_axis_iid`` (the function behind
    ``FrequencyMasking`` / ``TimeMasking`` with ``iid_masks=True``): for each example one band of bins
    :math:`[f_0, f_0 + f)` and one run of frames :math:`[t_0, t_0 + t)` are zeroed, with

    .. math::
        f \sim \mathcal{U}[0, F_{\max}), \quad t \sim \mathcal{U}[0, T_{\max})

    A width is either absolute (an int: bins or frames) or relative to the clip (a float in (0, 1): that
    fraction of the batch's bins or frames), so that one setting carries over from 10 s clips to 0.4 s ones.
    Widths 48 bins and 192 frames are those of LHGNN (Singh et al., §III-A) for 128 x 1024 inputs: 0.375 and
    0.1875 as fractions. A 48-frame mask hides a whole word of a 128-frame spoken digit; 0.1 of it is 13 frames.

    Args:
        freq_mask: :math:`F_{\max}` in bins (int) or as a fraction of the bins (float < 1) (default 48);
            0 disables it.
        time_mask: :math:`T_{\max}` in frames (int) or as a fraction of the frames (float < 1) (default 192);
            0 disables it.

    Shapes:
        - x: ``[B, T, F]`` -> ``[B, T, F]``; y: any, returned as given.
    """

    def __init__(self, freq_mask: int | float = 48, time_mask: int | float = 192):
        super().__init__()
        for w in (freq_mask, time_mask):
            mask_width(w, 1)  # validate early
        self.freq_mask, self.time_mask = freq_mask, time_mask

    def widths(self, frames: int, bins: int) -> tuple[int, int]:
        r"""(:math:`F_{\max}`, :math:`T_{\max}`) for an input of ``frames`` x ``bins``."""
        return mask_width(self.freq_mask, bins), mask_width(self.time_mask, frames)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Mask ``x`` per example; ``y`` passes unchanged."""
        f_max, t_max = self.widths(x.shape[1], x.shape[2])
        if not f_max and not t_max:
            return x, y
        s = x.transpose(1, 2).unsqueeze(1)  # [B, 1, F, T]: torchaudio's (..., freq, time)
        for width, axis in ((f_max, 2), (t_max, 3)):
            if width:
                s = torchaudio.functional.mask_along_axis_iid(s, width, 0.0, axis)
        return s.squeeze(1).transpose(1, 2), y
