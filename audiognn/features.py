"""Log-mel front end (Singh et al., *LHGNN: Local-Higher Order Graph Neural Networks for Audio
Classification and Tagging*, §III-A), MFCCs, and audio decoding.

LHGNN §III-A: "All audio samples were converted to mono with a sampling rate of 16kHz. We computed the
Short-time Fourier transform (STFT) using a window size of 25 ms and a hop size of 10 ms. A 128-dimensional
mel filter bank was applied, followed by a logarithmic transformation ... we standardized the temporal
length of the mel-spectrogram to 1024 frames ... Shorter clips were zero-padded, and longer ones cropped."

Choice of transform: Kaldi-compatible filter banks (``torchaudio.compliance.kaldi.fbank``), as AST, PSLA and
the official LHGNN code use (htk_compat, Hanning window, no dither, no energy, mean-removed wave). This keeps
published normalisation statistics and pretrained AST-style weights meaningful. Like AST, padding is applied
to the log-mel with zeros (not to the wave), so padded frames have value 0 before normalisation.

Decoding uses soundfile (WAV, FLAC, OGG/Vorbis, and AU for the original GTZAN); torchaudio >= 2.9 delegates ``load`` to torchcodec, which is
not part of this stack. Resampling uses ``torchaudio.functional.resample``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio
import torchaudio.compliance.kaldi as kaldi

#: Audio containers this front end decodes (through soundfile / libsndfile).
SUPPORTED_EXTENSIONS = (".wav", ".flac", ".ogg", ".au")


class AudioError(ValueError):
    """A clip that cannot become a feature matrix; ``reason`` is a short machine-readable tag."""

    def __init__(self, path: str | Path | None, reason: str, detail: str = ""):
        self.path = str(path) if path is not None else None
        self.reason = reason
        self.detail = detail
        where = f"{self.path}: " if self.path else ""
        super().__init__(f"{where}{reason}" + (f" ({detail})" if detail else ""))


@dataclass(frozen=True)
class FeatureConfig:
    """Parameters of the log-mel front end; defaults are LHGNN §III-A's."""

    sample_rate: int = 16000  # §III-A: mono, 16 kHz
    num_mel_bins: int = 128  # §III-A: 128-dimensional mel filter bank
    frame_length_ms: float = 25.0  # §III-A: 25 ms window
    frame_shift_ms: float = 10.0  # §III-A: 10 ms hop
    target_frames: int = 1024  # §III-A: 1024 frames, zero-padded or cropped

    def to_dict(self) -> dict:
        return {"transform": "kaldi_fbank", **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> FeatureConfig:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    @property
    def clip_seconds(self) -> float:
        """Seconds of audio that fill ``target_frames`` frames exactly."""
        return ((self.target_frames - 1) * self.frame_shift_ms + self.frame_length_ms) / 1000.0


def load_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode ``path`` to float32 ``[channels, samples]`` and its sample rate.

    Raises :class:`AudioError` for unsupported formats, unreadable or empty files.
    """
    path = Path(path)
    if path.suffix.lower() not in SUPPORTED_EXTENSIONS:
        raise AudioError(
            path,
            "unsupported_format",
            f"'{path.suffix}' is not one of {', '.join(SUPPORTED_EXTENSIONS)}; convert it first (e.g. ffmpeg -i in.mp3 out.flac)",
        )
    if not path.exists():
        raise AudioError(path, "missing_file")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty_file")
    if path.suffix.lower() == ".wav":
        missing = _wav_missing_bytes(path)
        if missing > 0:  # libsndfile silently shortens such files; we refuse them
            raise AudioError(path, "truncated", f"the data chunk declares {missing} more bytes than the file holds")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)  # [samples, channels]
    except Exception as exc:  # libsndfile errors come as RuntimeError / LibsndfileError
        raise AudioError(path, "unreadable", str(exc).strip()) from exc
    return np.ascontiguousarray(data.T), int(sr)


def _wav_missing_bytes(path: Path) -> int:
    """Bytes a RIFF/WAVE file's ``data`` chunk declares beyond the end of the file (0 if complete/unknown)."""
    import struct

    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return 0  # not RIFF: let the decoder say what it is
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            cid, clen = struct.unpack("<4sI", f.read(8))
            if cid == b"data":
                if clen in (0, 0xFFFFFFFF):  # streaming writers leave the size unset
                    return 0
                return max(0, pos + 8 + clen - size)
            pos += 8 + clen + (clen & 1)
    return 0


def to_mono(wave: torch.Tensor | np.ndarray, sr: int, target_sr: int, path: str | Path | None = None) -> torch.Tensor:
    """``[channels, samples]`` (or ``[samples]``) at ``sr`` -> mono ``[samples]`` at ``target_sr``.

    Validates the content: empty, non-finite and all-silent clips raise :class:`AudioError`.
    """
    wave = torch.as_tensor(wave, dtype=torch.float32)
    if wave.ndim == 1:
        wave = wave.unsqueeze(0)
    if wave.numel() == 0 or wave.shape[-1] == 0:
        raise AudioError(path, "empty_audio", "no samples")
    if not torch.isfinite(wave).all():
        raise AudioError(path, "non_finite_audio", "NaN or Inf samples")
    mono = wave.mean(0)  # [N]
    if mono.abs().max() < 1e-7:
        raise AudioError(path, "silent_audio", "every sample is (near) zero")
    if sr != target_sr:
        mono = torchaudio.functional.resample(mono, sr, target_sr)
    return mono


def logmel(mono: torch.Tensor, cfg: FeatureConfig = FeatureConfig()) -> torch.Tensor:
    """Mono wave ``[N]`` at ``cfg.sample_rate`` -> log-mel ``[frames, num_mel_bins]`` (not length-fixed)."""
    wave = (mono - mono.mean()).unsqueeze(0)  # [1, N]; AST / LHGNN remove the mean first
    min_len = int(round(cfg.sample_rate * cfg.frame_length_ms / 1000.0))
    if wave.shape[-1] < min_len:  # shorter than one window: pad so that one frame exists
        wave = torch.nn.functional.pad(wave, (0, min_len - wave.shape[-1]))
    return kaldi.fbank(
        wave,
        htk_compat=True,
        sample_frequency=cfg.sample_rate,
        use_energy=False,
        window_type="hanning",
        num_mel_bins=cfg.num_mel_bins,
        dither=0.0,
        frame_length=cfg.frame_length_ms,
        frame_shift=cfg.frame_shift_ms,
    )


@functools.lru_cache(maxsize=16)
def _dct_matrix(n_mfcc: int, n_mels: int) -> torch.Tensor:
    # cached across calls: built outside inference mode so that a first call under ``torch.inference_mode``
    # (validation, predict) does not cache an inference tensor that training could not save for backward
    with torch.inference_mode(False):
        return torchaudio.functional.create_dct(n_mfcc, n_mels, norm="ortho")  # [F, n_mfcc]


def mfcc_from_logmel(mel: torch.Tensor, n_mfcc: int) -> torch.Tensor:
    r"""MFCCs of a log-mel: the orthonormal DCT-II over the mel axis, first ``n_mfcc`` coefficients (librosa's
    and ``torchaudio.transforms.MFCC``'s convention, matrix from ``torchaudio.functional.create_dct``).

    .. math::
        c_k = \sqrt{\tfrac{2 - [k = 0]}{F}} \sum_{f=0}^{F-1} m_f \cos\left(\tfrac{\pi}{F} (f + \tfrac12) k\right)

    On a normalised log-mel (an affine map of the raw one) the result is the raw log-mel's MFCCs up to an
    affine map: the DCT is linear.

    Args:
        mel: log-mel, mel bins last.
        n_mfcc: number of coefficients kept (<= F).

    Shapes:
        - **input:** :math:`(*, F)`
        - **output:** :math:`(*, n_{mfcc})`, float32
    """
    dct = _dct_matrix(n_mfcc, mel.shape[-1]).to(mel.device)
    return mel.float() @ dct


def fix_length(mel: torch.Tensor, frames: int) -> torch.Tensor:
    """Crop or zero-pad ``[t, F]`` to ``[frames, F]`` (§III-A)."""
    t = mel.shape[0]
    if t >= frames:
        return mel[:frames]
    return torch.nn.functional.pad(mel, (0, 0, 0, frames - t))


def extract(
    source: str | Path | tuple[np.ndarray | torch.Tensor, int], cfg: FeatureConfig = FeatureConfig()
) -> tuple[torch.Tensor, int]:
    """Audio file or ``(wave, sr)`` -> (log-mel ``[cfg.target_frames, F]`` float32, valid frame count)."""
    if isinstance(source, (str, Path)):
        wave, sr = load_audio(source)
        path = source
    else:
        (wave, sr), path = source, None
    mono = to_mono(wave, sr, cfg.sample_rate, path)
    mel = logmel(mono, cfg)
    if not torch.isfinite(mel).all():
        raise AudioError(path, "non_finite_features")
    valid = min(mel.shape[0], cfg.target_frames)
    return fix_length(mel, cfg.target_frames), valid


def mel_bin_of_frequency(freq_hz: float, cfg: FeatureConfig = FeatureConfig()) -> int:
    """Index of the mel bin whose centre is nearest ``freq_hz`` (HTK mel scale, Kaldi bin layout)."""
    def mel(f):
        return 1127.0 * math.log(1.0 + f / 700.0)

    low, high = mel(20.0), mel(cfg.sample_rate / 2)  # Kaldi defaults: low_freq 20, high_freq Nyquist
    delta = (high - low) / (cfg.num_mel_bins + 1)
    centres = [low + (i + 1) * delta for i in range(cfg.num_mel_bins)]
    m = mel(freq_hz)
    return int(min(range(cfg.num_mel_bins), key=lambda i: abs(centres[i] - m)))
