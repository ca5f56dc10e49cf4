"""Synthetic audio: deterministic, planted labels, difficulty knob."""

import numpy as np
import pytest

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


def test_ensure_synthetic_writes_once_and_honours_every_field(synthetic_set, tmp_path):
    import json

    from audiognn.data.shards import load_dataset_info, read_split_clips
    from datamodules.readers import ensure_synthetic, synthetic_info
    from datamodules.synthetic import SyntheticConfig

    hard = synthetic_set(train=8, val=0, test=4, difficulty=0.9, target_frames=32)
    info = load_dataset_info(hard)
    assert sorted(info["splits"]) == ["test", "train"] and info["splits"]["train"]["clips"] == 8
    assert info["source"]["difficulty"] == 0.9 and info["features"]["target_frames"] == 32
    clean = synthetic_set(train=8, val=0, test=4, difficulty=0.0, target_frames=32)
    a, b = read_split_clips(hard, "train"), read_split_clips(clean, "train")
    assert [c["labels"] for c in a] == [c["labels"] for c in b]  # the same planted labels ...
    assert not np.array_equal(a[0]["mel"], b[0]["mel"])  # ... from other clips: difficulty reached the generator
    assert synthetic_set(train=8, val=0, test=4, difficulty=0.9, target_frames=32) == hard  # cached per session
    before = (hard / "dataset.json").read_text()
    assert ensure_synthetic(hard, {"variant": "events", "train": 2}) is None  # present: nothing written
    assert (hard / "dataset.json").read_text() == before
    cfg = SyntheticConfig(train=8, val=0, test=4, difficulty=0.9, target_frames=32)
    expect = synthetic_info(cfg)
    assert expect["classes"] == info["classes"] and expect["features"] == info["features"]
    assert sorted(expect["splits"]) == sorted(info["splits"]) and json.dumps(expect)
    assert SyntheticConfig.coerce({"variant": "events"}) == SyntheticConfig(variant="events")
    with pytest.raises(ValueError, match="unknown synthetic variant"):
        SyntheticConfig(variant="speech")
