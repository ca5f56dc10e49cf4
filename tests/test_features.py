"""Log-mel front end: equal to torchaudio called directly, tones land in the right mel bin, errors named."""

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio
import torchaudio.compliance.kaldi as kaldi

from audiognn.features import AudioError, FeatureConfig, extract, fix_length, load_audio, mel_bin_of_frequency


def _tone(freq, seconds=1.0, sr=16000, amp=0.5):
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_equals_torchaudio_fbank_called_directly(tmp_path):
    rng = np.random.default_rng(0)
    wave = (0.1 * rng.standard_normal((2, 44100))).astype(np.float32)  # stereo, 44.1 kHz
    path = tmp_path / "a.wav"
    sf.write(path, wave.T, 44100, subtype="FLOAT")
    cfg = FeatureConfig(target_frames=150)
    mel, valid = extract(path, cfg)
    mono = torchaudio.functional.resample(torch.from_numpy(wave).mean(0), 44100, 16000)
    ref = kaldi.fbank((mono - mono.mean()).unsqueeze(0), htk_compat=True, sample_frequency=16000, use_energy=False,
                      window_type="hanning", num_mel_bins=128, dither=0.0, frame_shift=10, frame_length=25)
    assert mel.shape == (150, 128)
    assert valid == ref.shape[0] == 98  # 1 s at 10 ms hop with a 25 ms window
    torch.testing.assert_close(mel[:valid], ref, rtol=1e-5, atol=1e-5)
    assert torch.all(mel[valid:] == 0)  # zero padding after the valid frames (§III-A)


@pytest.mark.parametrize("freq", [250.0, 1000.0, 3000.0])
def test_pure_tone_energy_lands_in_expected_mel_bin(freq):
    mel, _ = extract((_tone(freq), 16000), FeatureConfig(target_frames=90))
    peak = int(mel[5:85].mean(0).argmax())
    assert abs(peak - mel_bin_of_frequency(freq)) <= 1


def test_default_shape_is_1024_by_128_and_crop():
    mel, valid = extract((_tone(440, seconds=12.0), 16000))
    assert mel.shape == (1024, 128) and valid == 1024
    assert fix_length(torch.ones(5, 3), 2).shape == (2, 3)


def test_bad_audio_is_named(tmp_path):
    with pytest.raises(AudioError, match="unsupported_format") as e:
        load_audio(tmp_path / "x.mp3")
    assert "x.mp3" in str(e.value) and ".wav" in str(e.value)
    with pytest.raises(AudioError, match="silent_audio"):
        extract((np.zeros(16000, np.float32), 16000))
    bad = _tone(440)
    bad[100] = np.nan
    with pytest.raises(AudioError, match="non_finite_audio"):
        extract((bad, 16000))


def test_mfcc_first_called_in_inference_mode_still_trains():
    """The DCT matrix is cached: a first call under ``torch.inference_mode`` (a validation or predict run that
    comes first in a process) must not cache an inference tensor that a later training step cannot save."""
    from audiognn.features import _dct_matrix, mfcc_from_logmel

    _dct_matrix.cache_clear()
    with torch.inference_mode():
        first = mfcc_from_logmel(torch.ones(1, 3, 16), 8)
    x = torch.randn(2, 5, 16, requires_grad=True)
    out = mfcc_from_logmel(x, 8)
    out.sum().backward()
    torch.testing.assert_close(x.grad[0, 0], _dct_matrix(8, 16).sum(dim=1))  # d(sum(x @ D))/dx = D · 1
    torch.testing.assert_close(first[0, 0], torchaudio.functional.create_dct(8, 16, norm="ortho").sum(dim=0))
