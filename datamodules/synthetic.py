"""Deterministic procedural audio with planted class structure.

Two variants, both reproducible bit for bit from ``(variant, seed, index)``:

* ``genre`` (multi-class): each class is a "style" fixed by five musical attributes — tempo, timbre
  (harmonic profile), pitch contour, rhythm pattern and noise colour. Every attribute value is shared by
  at least two classes, so no single attribute separates them all; every clip draws its own tempo jitter,
  key, loudness, noise level and start offset, so clips of a class are never copies of one another.
* ``events`` (multi-label): a coloured-noise background with 1–3 distinct sound events (tone bursts,
  chirps, click trains, hums, band-limited noise, ...) at random onsets and levels.

Chance levels: 1/num_classes accuracy for ``genre``; for ``events`` a random scorer gets mAP ≈ label
frequency (about 0.2). A model that hears the planted structure gets far above both.

:class:`SyntheticConfig` describes a whole synthetic set (what the DataModules' ``synthetic:`` block holds);
``datamodules.readers.synthetic.ensure_synthetic`` writes it as shards.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

SR = 16000

# --- genre variant -------------------------------------------------------------------------------------
# Attribute vocabularies. Harmonic profiles: relative amplitudes of harmonics 1..8.
_TIMBRES = {
    "sine": [1.0],
    "odd": [1.0, 0.0, 0.5, 0.0, 0.3, 0.0, 0.2],  # square-like, hollow
    "saw": [1.0, 0.5, 0.33, 0.25, 0.2, 0.16, 0.14, 0.12],  # bright
    "bell": [1.0, 0.0, 0.0, 0.6, 0.0, 0.0, 0.0, 0.4],  # sparse upper partials
}
_CONTOURS = ("flat", "rising", "falling", "arpeggio")
_RHYTHMS = {  # 16-step onset patterns
    "four": [1, 0, 0, 0] * 4,
    "offbeat": [0, 0, 1, 0] * 4,
    "clave": [1, 0, 0, 1, 0, 0, 1, 0, 0, 0, 1, 0, 1, 0, 0, 0],
    "dense": [1, 0, 1, 1] * 4,
}
_NOISES = {"white": 0.0, "pink": 1.0, "brown": 2.0}  # spectral slope beta of 1/f^beta power

# (name, tempo bpm, timbre, contour, rhythm, noise colour, base pitch Hz)
GENRES = [
    ("drone", 70, "sine", "flat", "four", "brown", 220.0),
    ("march", 120, "odd", "flat", "four", "white", 330.0),
    ("skank", 90, "odd", "rising", "offbeat", "pink", 262.0),
    ("salsa", 180, "saw", "arpeggio", "clave", "white", 392.0),
    ("techno", 130, "saw", "flat", "dense", "pink", 110.0),
    ("chime", 100, "bell", "falling", "clave", "pink", 523.0),
    ("ballad", 70, "bell", "rising", "offbeat", "brown", 294.0),
    ("breaks", 170, "sine", "arpeggio", "dense", "white", 440.0),
]
GENRE_NAMES = [g[0] for g in GENRES]

# --- events variant ------------------------------------------------------------------------------------
EVENT_NAMES = [
    "beep",
    "chirp_up",
    "chirp_down",
    "clicks",
    "hum",
    "whistle",
    "hiss",
    "rumble",
    "trill",
    "knock",
]


def _rng(variant: str, seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, 0 if variant == "genre" else 1, index])


def coloured_noise(rng: np.random.Generator, n: int, beta: float) -> np.ndarray:
    """Unit-RMS noise with power spectrum ∝ 1/f^beta (0 white, 1 pink, 2 brown)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / SR)
    f[0] = f[1]
    spec *= f ** (-beta / 2.0)
    x = np.fft.irfft(spec, n)
    return x / (np.sqrt(np.mean(x**2)) + 1e-12)


def _band_noise(rng, n, lo, hi):
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / SR)
    spec[(f < lo) | (f > hi)] = 0
    x = np.fft.irfft(spec, n)
    return x / (np.sqrt(np.mean(x**2)) + 1e-12)


def _tone(freqs: np.ndarray, harmonics, t0: int) -> np.ndarray:
    """Harmonic tone following the instantaneous frequency track ``freqs`` [n] (Hz)."""
    phase = 2 * np.pi * np.cumsum(freqs) / SR + t0
    out = np.zeros_like(freqs)
    for h, a in enumerate(harmonics, start=1):
        if a:
            out += a * np.sin(h * phase) * (h * freqs < SR / 2)
    return out


def genre_clip(index: int, seconds: float, seed: int = 0, difficulty: float = 0.0) -> tuple[np.ndarray, int]:
    """Clip ``index`` of the genre variant: (wave float32 [n], class index). Class = index % 8.

    ``difficulty`` in [0, 1]: each of the six attributes (tempo, timbre, contour, rhythm, noise colour,
    pitch) is, with this probability, taken from a random other class, and the noise level rises with it —
    0 gives cleanly separable classes, 0.5 makes a good model work for its accuracy.
    """
    rng = _rng("genre", seed, index)
    label = index % len(GENRES)
    attrs = list(GENRES[label][1:])
    for a in range(len(attrs)):
        if difficulty > 0 and rng.random() < difficulty:
            attrs[a] = GENRES[(label + 1 + rng.integers(len(GENRES) - 1)) % len(GENRES)][1 + a]
    bpm, timbre, contour, rhythm, noise, f0 = attrs
    n = int(round(seconds * SR))
    bpm = bpm * rng.uniform(0.95, 1.05)
    f0 = f0 * 2 ** (rng.uniform(-2, 2) / 12)  # key within ± 2 semitones
    step = 60.0 / bpm / 4  # a 16th note
    pattern = _RHYTHMS[rhythm]
    wave = np.zeros(n)
    start = rng.uniform(0, step * 4)
    k = 0
    t = -start
    harmonics = _TIMBRES[timbre]
    while t < seconds:
        if pattern[k % 16] and t >= 0:
            i0 = int(t * SR)
            dur = int(min(step * 1.8, 0.5) * SR)
            i1 = min(n, i0 + dur)
            m = i1 - i0
            if m > 16:
                pos = (k % 16) / 16
                if contour == "flat":
                    semis = 0.0
                elif contour == "rising":
                    semis = 12 * pos
                elif contour == "falling":
                    semis = 12 * (1 - pos)
                else:  # arpeggio: root, third, fifth, octave
                    semis = [0, 4, 7, 12][k % 4]
                freqs = np.full(m, f0 * 2 ** (semis / 12))
                env = np.exp(-np.arange(m) / (0.25 * m)) * np.minimum(1, np.arange(m) / 80)
                wave[i0:i1] += env * _tone(freqs, harmonics, rng.uniform(0, 6.28))
        t += step
        k += 1
    wave /= np.max(np.abs(wave)) + 1e-9
    wave += rng.uniform(0.05, 0.2) * (1 + 3 * difficulty) * coloured_noise(rng, n, _NOISES[noise])
    wave *= rng.uniform(0.2, 0.8) / (np.max(np.abs(wave)) + 1e-9)
    return wave.astype(np.float32), label


def _event(rng: np.random.Generator, kind: str, n_max: int) -> np.ndarray:
    dur = {"hum": (1.0, 2.0), "rumble": (0.6, 1.2), "clicks": (0.5, 1.0), "trill": (0.5, 1.0)}.get(kind, (0.2, 0.6))
    m = min(n_max, int(rng.uniform(*dur) * SR))
    t = np.arange(m) / SR
    env = np.minimum(1, np.minimum(np.arange(m), m - np.arange(m)) / 160)
    if kind == "beep":
        x = np.sin(2 * np.pi * rng.uniform(800, 1200) * t)
    elif kind == "chirp_up":
        x = _tone(np.linspace(300, 3000, m), [1.0], 0.0)
    elif kind == "chirp_down":
        x = _tone(np.linspace(3000, 300, m), [1.0], 0.0)
    elif kind == "clicks":
        x = np.zeros(m)
        period = int(SR / rng.uniform(8, 15))
        for i in range(0, m, period):
            x[i : i + 40] = np.hanning(80)[40:][: len(x[i : i + 40])] * rng.choice([-1, 1])
        x *= 3
    elif kind == "hum":
        x = _tone(np.full(m, rng.uniform(100, 150)), [1.0, 0.6, 0.4, 0.3, 0.2], 0.0)
    elif kind == "whistle":
        f = rng.uniform(2500, 4000) * (1 + 0.02 * np.sin(2 * np.pi * 6 * t))
        x = _tone(f, [1.0], 0.0)
    elif kind == "hiss":
        x = _band_noise(rng, m, 4000, 7000)
    elif kind == "rumble":
        x = _band_noise(rng, m, 30, 400)
    elif kind == "trill":
        f = np.where((t * 12).astype(int) % 2 == 0, 600.0, 900.0) * rng.uniform(0.9, 1.1)
        x = _tone(f, [1.0, 0.3], 0.0)
    elif kind == "knock":
        x = np.zeros(m)
        for j in range(3):
            i0 = int(j * m / 3)
            k = np.arange(min(1600, m - i0))
            x[i0 : i0 + len(k)] += np.sin(2 * np.pi * 180 * k / SR) * np.exp(-k / 250)
        x *= 2
    else:
        raise ValueError(f"unknown synthetic event '{kind}': expected one of {EVENT_NAMES}")
    return x * env


def events_clip(index: int, seconds: float, seed: int = 0) -> tuple[np.ndarray, list[int]]:
    """Clip ``index`` of the events variant: (wave float32 [n], sorted event indices)."""
    rng = _rng("events", seed, index)
    n = int(round(seconds * SR))
    count = int(rng.choice([1, 2, 3], p=[0.35, 0.4, 0.25]))
    labels = sorted(rng.choice(len(EVENT_NAMES), size=count, replace=False).tolist())
    wave = 0.03 * coloured_noise(rng, n, rng.choice([0.0, 1.0, 2.0]))
    for lab in labels:
        ev = _event(rng, EVENT_NAMES[lab], n)
        i0 = int(rng.integers(0, max(1, n - len(ev))))
        wave[i0 : i0 + len(ev)] += rng.uniform(0.3, 1.0) * ev[: n - i0]
    wave *= rng.uniform(0.2, 0.8) / (np.max(np.abs(wave)) + 1e-9)
    return wave.astype(np.float32), labels


VARIANTS = {
    "genre": (GENRE_NAMES, False),
    "events": (EVENT_NAMES, True),
}


def synth_clip(variant: str, index: int, seconds: float, seed: int = 0, difficulty: float = 0.0
               ) -> tuple[np.ndarray, list[int]]:
    """(wave [n] float32 at 16 kHz, label indices) of clip ``index`` of ``variant`` (difficulty: genre only)."""
    if variant == "genre":
        wave, label = genre_clip(index, seconds, seed, difficulty)
        return wave, [label]
    if variant == "events":
        return events_clip(index, seconds, seed)
    raise ValueError(f"unknown synthetic variant '{variant}': expected one of {sorted(VARIANTS)}")


@dataclass
class SyntheticConfig:
    """A synthetic shard set: which clips, and how ``prepare`` writes them.

    Args:
        variant: ``"genre"`` (8 classes, multi-class) or ``"events"`` (10 events, multi-label); default genre.
        train / val / test: clips per split (defaults 800 / 200 / 200; 0 leaves a split out).
        seed: generator seed (default 0).
        difficulty: genre only, the probability that each clip attribute comes from another class
            (default 0.0: cleanly separable classes; see :func:`genre_clip`).
        target_frames: log-mel frames per clip (default 256).
        workers: feature processes while writing (default 2).
        shard_size: clips per shard (default 64).
    """

    variant: Literal["genre", "events"] = "genre"
    train: int = 800
    val: int = 200
    test: int = 200
    seed: int = 0
    difficulty: float = 0.0
    target_frames: int = 256
    workers: int = 2
    shard_size: int = 64

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown synthetic variant '{self.variant}': expected one of {sorted(VARIANTS)}")
        if min(self.train, self.val, self.test) < 0:
            raise ValueError(f"synthetic split sizes must be >= 0, got {self.train}/{self.val}/{self.test}")

    @classmethod
    def coerce(cls, value: SyntheticConfig | dict | None) -> SyntheticConfig | None:
        """``value`` as a config: a dict (a ``synthetic:`` block given in Python) becomes one; None stays."""
        if value is None or isinstance(value, cls):
            return value
        return cls(**dict(value))
