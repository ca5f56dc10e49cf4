"""Synthetic audio: deterministic, planted labels, difficulty knob."""

import numpy as np

from datamodules.synthetic import EVENT_NAMES, GENRE_NAMES, events_clip, genre_clip, synth_clip


def test_deterministic_and_labelled():
    a, la = genre_clip(13, 1.0, seed=2)
    b, lb = genre_clip(13, 1.0, seed=2)
    assert np.array_equal(a, b) and la == lb == 13 % len(GENRE_NAMES)
    assert not np.array_equal(a, genre_clip(13, 1.0, seed=3)[0])
    assert a.dtype == np.float32 and a.shape == (16000,) and 0.1 < np.abs(a).max() <= 0.8 + 1e-6
    counts = [len(events_clip(i, 1.0)[1]) for i in range(60)]
    assert set(counts) == {1, 2, 3}
    for i in range(20):
        w, labels = synth_clip("events", i, 1.0)
        assert labels == sorted(set(labels)) and all(0 <= k < len(EVENT_NAMES) for k in labels)
        assert np.isfinite(w).all()


def test_difficulty_changes_clips_not_labels():
    clean, lc = genre_clip(5, 1.0, difficulty=0.0)
    hard, lh = genre_clip(5, 1.0, difficulty=0.9)
    assert lc == lh and not np.array_equal(clean, hard)
