"""Batch transforms applied on the device while training: SpecWarp, mixup and SpecAugment.

Each is called as ``x, y = transform(x, y)`` on a log-mel batch ``x`` ``[B, T, F]`` and its targets ``y``
``[B, C]``; :class:`datamodules.audio_shards.AudioShardDataModule` applies them in ``on_after_batch_transfer``
while the trainer is training: on the normalised log-mel by default, on the raw (unnormalised) log-mel in the
official LHGNN / AST order (``pipeline_order="augment_first"``: mixup, SpecAugment, then normalisation).
"""

from __future__ import annotations

import math

import torch
import torchaudio
from torch import nn

#: log of the energy floor of Kaldi's fbank (float32 machine epsilon): the raw log-mel of silence
LOG_FLOOR = math.log(torch.finfo(torch.float32).eps)
MIXUP_DOMAINS = ("logmel", "power")


def power_mix(x1: torch.Tensor, x2: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    r"""The raw log-mel of the waveform mix :math:`\lambda w_1 + (1 - \lambda) w_2`, from the two raw log-mels.

    The official LHGNN code (as AST) mixes mean-removed waveforms and computes the Kaldi fbank of the mix.
    The STFT is linear, so the power spectrum of the mix is
    :math:`\lambda^2 |X_1|^2 + (1-\lambda)^2 |X_2|^2 + 2\lambda(1-\lambda)\,\mathrm{Re}(X_1 \bar X_2)`, and the
    mel filter bank is linear in the power. **Approximation:** the cross term of two uncorrelated signals
    (two different clips) vanishes in expectation and is dropped, which leaves, per mel cell,

    .. math::
        \tilde m = \log\big(\lambda^2 e^{m_1} + (1-\lambda)^2 e^{m_2}\big)
                  = \mathrm{logaddexp}(m_1 + 2\log\lambda,\; m_2 + 2\log(1-\lambda))

    on the natural-log mel energies :math:`m` (unnormalised), clamped below at Kaldi's floor
    :data:`LOG_FLOOR` as the fbank of the mix would be. The mixed power is right in expectation over the
    clips' phases, not cell by cell; it is wrong for a clip mixed with itself (fully correlated: the waveform
    mix is the clip itself), so :class:`Mixup` never pairs an example with itself.
    Zero-padded frames (every bin exactly 0: ``audiognn.features.fix_length``) follow the official order
    (waveform 2 cut or zero-padded to waveform 1's length, the fbank padded with zeros afterwards): where
    clip 1 is padding the result stays 0; where only clip 2 is, clip 2 is silence (:data:`LOG_FLOOR`).

    Args:
        x1, x2: raw log-mels; lam: :math:`\lambda` per example.

    Shapes:
        - x1, x2: ``[B, T, F]``; lam: ``[B]`` -> ``[B, T, F]``.
    """
    lam = lam.to(x1.dtype).view(-1, 1, 1)
    pad1 = (x1 == 0).all(-1, keepdim=True)  # [B, T, 1]
    m2 = x2.masked_fill((x2 == 0).all(-1, keepdim=True), LOG_FLOOR)
    mixed = torch.logaddexp(x1 + 2 * torch.log(lam.clamp_min(1e-12)),
                            m2 + 2 * torch.log((1 - lam).clamp_min(1e-12)))
    return mixed.clamp_min(LOG_FLOOR).masked_fill(pad1, 0.0)


class Mixup:
    r"""Per-example mixup of features and labels by the same :math:`\lambda`.

    From *mixup: Beyond Empirical Risk Minimization* (Zhang, Cisse, Dauphin, Lopez-Paz, 2018):

    .. math::
        \tilde x_i = \lambda_i x_i + (1 - \lambda_i) x_{\pi(i)}, \quad
        \tilde y_i = \lambda_i y_i + (1 - \lambda_i) y_{\pi(i)}, \quad
        \lambda_i \sim \mathrm{Beta}(\alpha, \alpha) \text{ with probability } p, \text{ else } 1

    ``domain="logmel"`` (default): the formula above on the (normalised) log-mel, :math:`\pi` a random
    permutation of the batch (an example may be its own partner). ``domain="power"``: the waveform-equivalent
    mix of the official LHGNN code and AST (*AST: Audio Spectrogram Transformer*, Gong, Chung, Glass), which
    mixes waveforms before the fbank: :math:`\tilde x_i` is :func:`power_mix` of the *raw* log-mels, the
    partner :math:`\pi(i) \ne i` (a random cyclic order of the batch, as AST draws a partner from the data
    set), labels as above; examples not drawn keep their own input and label exactly.
    ``alpha=0.5, prob=1.0`` is one reading of *LHGNN: Local-Higher Order Graph Neural Networks for Audio
    Classification and Tagging* (Singh et al., §III-A: "mixup with α = 0.5"); ``alpha=10, prob=0.5`` that
    of the official LHGNN code and AST (docs/lhgnn_recipes.md).

    Args:
        alpha: Beta concentration :math:`\alpha` (default 0.5); ``<= 0`` disables mixup.
        prob: probability :math:`p` that an example is mixed (default 1.0); ``<= 0`` disables mixup.
        domain: ``"logmel"`` (default) or ``"power"`` (raw log-mel input only).

    Shapes:
        - x: ``[B, T, F]``; y: ``[B, C]`` -> the same shapes. Batches of one example pass unchanged.

    The last draw is kept in ``last`` as ``(lam [B], perm [B])`` for inspection (:math:`\lambda_i = 1`: not drawn).
    """

    def __init__(self, alpha: float = 0.5, prob: float = 1.0, domain: str = "logmel"):
        if domain not in MIXUP_DOMAINS:
            raise ValueError(f"mixup domain must be one of {MIXUP_DOMAINS}, got {domain!r}")
        self.alpha, self.prob, self.domain = alpha, prob, domain
        self.last: tuple[torch.Tensor, torch.Tensor] | None = None

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, p = self.alpha, self.prob
        if p <= 0 or a <= 0 or x.shape[0] < 2:
            return x, y
        b = x.shape[0]
        lam = torch.distributions.Beta(a, a).sample((b,)).to(x.device)  # [B]
        drawn = torch.rand(b, device=x.device) < p
        lam = torch.where(drawn, lam, torch.ones_like(lam))
        ly = lam.view(b, 1)
        if self.domain == "logmel":
            perm = torch.randperm(b, device=x.device)
            self.last = (lam, perm)
            lx = lam.view(b, 1, 1)
            return lx * x + (1 - lx) * x[perm], ly * y + (1 - ly) * y[perm]
        order = torch.randperm(b, device=x.device)
        perm = torch.empty_like(order)
        perm[order] = order.roll(-1)  # the partner of order[k] is order[k + 1]: never the example itself
        self.last = (lam, perm)
        x_mix = torch.where(drawn.view(b, 1, 1), power_mix(x, x[perm], lam), x)
        return x_mix, torch.where(drawn.view(b, 1), ly * y + (1 - ly) * y[perm], y)


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


class SpecWarp(nn.Module):
    r"""Time-stretch, pitch-shift, time-shift and gain drawn per example, applied to the log-mel itself.

    Salamon and Bello (*Deep Convolutional Neural Networks and Data Augmentation for Environmental Sound
    Classification*, 2017, §III-B) raise SB-CNN from 73 % to 79 % on UrbanSound8K with time-stretching
    (rates 0.81-1.23), pitch-shifting (±2 semitones and more) and dynamic range compression of the waveform.
    The shards hold log-mels, not waveforms, so this applies their spectrogram-domain counterparts, drawn per
    example, in one :func:`torch.nn.functional.grid_sample` over the batch (bilinear; no audio library does
    these on a log-mel batch, and re-featurising audio every epoch would cost more than the model's step; with
    the gain alone the gain is added without resampling):

    .. math::
        \tilde x(t, f) = x\big(r\,t + s,\; f + k\big) + g\,\tfrac{\ln 10}{10}\,/\,\sigma, \qquad
        \ln r \sim \mathcal{U}[-\ln(1 + a), \ln(1 + a)],\;
        s \sim \mathcal{U}[-S, S],\; k \sim \mathcal{U}[-K, K],\; g \sim \mathcal{U}[-G, G]

    with :math:`t` in frames from the clip's start (a time-stretch by :math:`1/r` anchored at the start),
    :math:`k` in mel bins (a pitch shift: mel bins are near-logarithmic in frequency above ~1 kHz, so a shift
    by :math:`k` bins is a near-constant musical interval there) and :math:`g` in dB of power (Kaldi's fbank is the
    natural log of power: :math:`g` dB adds :math:`g \ln 10 / 10`; divided by the normalisation's
    :math:`\sigma` when the log-mel is already normalised). Cells read from outside the clip are 0, as
    SpecAugment's masks.

    Args:
        time_stretch: :math:`a`, the largest relative rate change (0.25: rates 0.8-1.25); 0 disables.
        pitch_shift: :math:`K`, the largest shift in mel bins (float); 0 disables.
        time_shift: :math:`S` as a fraction of the clip's frames; 0 disables.
        gain_db: :math:`G`, the largest gain in dB; 0 disables.

    Shapes:
        - x: ``[B, T, F]`` -> ``[B, T, F]``; y: any, returned as given.
    """

    def __init__(self, time_stretch: float = 0.0, pitch_shift: float = 0.0, time_shift: float = 0.0,
                 gain_db: float = 0.0):
        super().__init__()
        for name, v in (("time_stretch", time_stretch), ("pitch_shift", pitch_shift), ("time_shift", time_shift),
                        ("gain_db", gain_db)):
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0 or (name == "time_shift" and v > 1):
                raise ValueError(f"SpecWarp {name} must be a number >= 0{' and <= 1' * (name == 'time_shift')}, "
                                 f"got {v!r}")
        self.time_stretch, self.pitch_shift = float(time_stretch), float(pitch_shift)
        self.time_shift, self.gain_db = float(time_shift), float(gain_db)

    @property
    def enabled(self) -> bool:
        return any((self.time_stretch, self.pitch_shift, self.time_shift, self.gain_db))

    def draw(self, b: int, device=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per example: rate :math:`r`, time shift (fraction of the clip), pitch shift (bins), gain (dB)."""
        u = torch.rand(4, b, device=device) * 2 - 1  # U[-1, 1]
        rate = torch.exp(u[0] * math.log1p(self.time_stretch))
        return rate, u[1] * self.time_shift, u[2] * self.pitch_shift, u[3] * self.gain_db

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, log_scale: float = 1.0,
                params: tuple | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Warp ``x`` per example; ``log_scale``: 1 / σ on a normalised log-mel; ``params``: :meth:`draw`'s."""
        if not self.enabled and params is None:
            return x, y
        b, t, f = x.shape
        rate, shift, pitch, gain = params if params is not None else self.draw(b, x.device)
        gain = (gain * (math.log(10) / 10) * log_scale).view(b, 1, 1).to(x.dtype)
        if params is None and not (self.time_stretch or self.pitch_shift or self.time_shift):
            return x + gain, y  # the gain alone: no resampling (an identity grid_sample costs time and rounds)
        # grid_sample coordinates with align_corners=True: -1 is the first frame / bin, +1 the last
        ut = torch.linspace(-1, 1, t, device=x.device, dtype=x.dtype)
        uf = torch.linspace(-1, 1, f, device=x.device, dtype=x.dtype)
        src_t = (ut + 1).unsqueeze(0) * rate.view(b, 1).to(x.dtype) - 1 + 2 * shift.view(b, 1).to(x.dtype)
        src_f = uf.unsqueeze(0) + 2 * pitch.view(b, 1).to(x.dtype) / max(f - 1, 1)
        grid = torch.stack(torch.broadcast_tensors(src_f.view(b, 1, f), src_t.view(b, t, 1)), dim=-1)  # [B, T, F, 2]
        out = nn.functional.grid_sample(x.unsqueeze(1), grid, mode="bilinear", padding_mode="zeros",
                                        align_corners=True).squeeze(1)
        return out + gain, y


class FilterAugment(nn.Module):
    r"""A random smooth filter over frequency, drawn per example: the recording's microphone, room and distance.

    From *FilterAugment: An Acoustic Environmental Data Augmentation Method* (Nam, Kim and Park, ICASSP 2022),
    its "linear" type: the mel axis is cut at :math:`n - 1` random bins into :math:`n` bands
    (:math:`n \sim \mathcal{U}\{n_{\min}, \dots, n_{\max}\}`, the same for a batch), every band edge (the first
    and last bin included) gets a gain :math:`g_k \sim \mathcal{U}[-G, G]` dB, and the gain of each bin is the
    linear interpolation between its band's edges. Gains are added to the log-mel in the units of
    :class:`SpecWarp`'s gain (:math:`g \ln 10 / 10`, divided by the normalisation's :math:`\sigma` on a
    normalised log-mel). The paper uses :math:`G = 6`, :math:`n \in [3, 6]`. No library has it.

    Args:
        max_db: :math:`G`, the largest gain in dB at a band edge; 0 disables it.
        bands: :math:`(n_{\min}, n_{\max})`, the number of bands.

    Shapes:
        - x: ``[B, T, F]`` -> ``[B, T, F]``; y: any, returned as given.
    """

    def __init__(self, max_db: float = 0.0, bands: tuple[int, int] = (3, 6)):
        super().__init__()
        if not isinstance(max_db, (int, float)) or isinstance(max_db, bool) or max_db < 0:
            raise ValueError(f"FilterAugment max_db must be a number >= 0, got {max_db!r}")
        lo, hi = bands
        if not (isinstance(lo, int) and isinstance(hi, int) and 1 <= lo <= hi):
            raise ValueError(f"FilterAugment bands must be two integers 1 <= min <= max, got {bands!r}")
        self.max_db, self.bands = float(max_db), (lo, hi)

    def gains(self, b: int, f: int, device=None) -> torch.Tensor:
        """Per example and bin, the gain in dB: ``[B, F]``."""
        n = int(torch.randint(self.bands[0], self.bands[1] + 1, ()).item())
        n = max(1, min(n, f - 1))
        inner = torch.rand(b, f - 2, device=device).argsort(dim=1)[:, : n - 1] + 1  # n - 1 distinct inner edges
        edges = torch.cat([torch.zeros(b, 1, dtype=torch.long, device=device), inner.sort(dim=1).values,
                           torch.full((b, 1), f - 1, dtype=torch.long, device=device)], dim=1)  # [B, n + 1]
        g = (torch.rand(b, n + 1, device=device) * 2 - 1) * self.max_db  # dB at every edge
        bins = torch.arange(f, device=device).expand(b, f)
        k = (torch.searchsorted(edges, bins.contiguous(), right=True) - 1).clamp(0, n - 1)  # band of each bin
        left, right = edges.gather(1, k), edges.gather(1, k + 1)
        w = (bins - left).float() / (right - left).float()
        return g.gather(1, k) * (1 - w) + g.gather(1, k + 1) * w

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None,
                log_scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Filter ``x`` per example; ``log_scale``: 1 / σ on a normalised log-mel."""
        if not self.max_db or x.shape[2] < 3:
            return x, y
        g = self.gains(x.shape[0], x.shape[2], x.device) * (math.log(10) / 10) * log_scale
        return x + g.unsqueeze(1).to(x.dtype), y
