"""prepare: round trip, bad-file matrix, exit codes, idempotence."""

import io
import json
import tarfile

import numpy as np
import pytest
import soundfile as sf
import torch

from audiognn.features import FeatureConfig, extract
from datamodules.prepare import main


def _tone(freq, seconds=0.6, sr=16000):
    t = np.arange(int(seconds * sr)) / sr
    return (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _read_shards(out, split):
    info = json.loads((out / "dataset.json").read_text())
    samples = {}
    for name in info["splits"][split]["shards"]:
        with tarfile.open(out / name) as tf:
            for m in tf.getmembers():
                key, ext = m.name.split(".", 1)
                samples.setdefault(key, {})[ext] = tf.extractfile(m).read()
    return info, samples


@pytest.fixture
def bad_matrix(tmp_path):
    """A CSV manifest with 6 good clips and one of each kind of bad input."""
    audio = tmp_path / "audio"
    audio.mkdir()
    rows = ["path,labels,split"]
    for i in range(6):
        name = f"good{i}.wav" if i % 2 else f"good{i}.flac"
        sf.write(audio / name, _tone(300 + 200 * i), 16000)
        rows.append(f"audio/{name},{'low' if i < 3 else 'high'},{'train' if i < 4 else 'test'}")
    sf.write(audio / "trunc.wav", _tone(500), 16000)
    data = (audio / "trunc.wav").read_bytes()
    (audio / "trunc.wav").write_bytes(data[: len(data) // 2])
    (audio / "empty.wav").write_bytes(b"")
    (audio / "text.wav").write_text("this is not audio\n")
    nan = _tone(700)
    nan[10:20] = np.nan
    sf.write(audio / "nan.wav", nan, 16000, subtype="FLOAT")
    sf.write(audio / "silent.wav", np.zeros(8000, np.float32), 16000)
    sf.write(audio / "unknown.wav", _tone(900), 16000)
    (audio / "song.mp3").write_bytes(b"ID3fake")
    rows += ["audio/trunc.wav,low,train", "audio/empty.wav,low,train", "audio/text.wav,high,train",
             "audio/nan.wav,high,train", "audio/silent.wav,low,train", "audio/unknown.wav,zzz,train",
             "audio/song.mp3,low,train"]
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "classes.txt").write_text("low\nhigh\n")
    return tmp_path


def test_bad_file_matrix_writes_every_good_clip_and_lists_every_bad(bad_matrix, capsys):
    out = bad_matrix / "shards"
    argv = ["csv", str(bad_matrix / "manifest.csv"), "--classes", str(bad_matrix / "classes.txt"),
            "--out", str(out), "--workers", "2", "--target-frames", "64", "--quiet"]
    assert main(argv) == 0
    info, train = _read_shards(out, "train")
    _, test = _read_shards(out, "test")
    assert sorted(k[-5:] for k in train) == ["good0", "good1", "good2", "good3"]
    assert sorted(k[-5:] for k in test) == ["good4", "good5"] and info["splits"]["train"]["clips"] == 4
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    reasons = {f["path"].rsplit("/", 1)[-1] if f.get("path") else f["key"]: f["reason"] for f in failures}
    assert reasons["trunc.wav"] == "truncated"
    assert reasons["empty.wav"] == "empty_file"
    assert reasons["text.wav"] == "unreadable"
    assert reasons["nan.wav"] == "non_finite_audio"
    assert reasons["silent.wav"] == "silent_audio"
    assert reasons["song.mp3"] == "unsupported_format"
    assert any(f["reason"] == "unknown_label" for f in failures)
    assert len(failures) == 7 and info["failures"] == 7
    assert "7 failed" in capsys.readouterr().out
    # --strict turns failures into a non-zero exit, and the good clips are still written
    assert main(argv + ["--strict"]) == 1
    assert json.loads((out / "dataset.json").read_text())["splits"]["train"]["clips"] == 4


def test_nothing_written_is_an_error(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"")
    (tmp_path / "m.csv").write_text("path,labels,split\na.wav,x,train\n")
    assert main(["csv", str(tmp_path / "m.csv"), "--out", str(tmp_path / "o"), "--workers", "1", "--quiet"]) == 1


def test_round_trip_keys_labels_features_and_idempotence(bad_matrix):
    out = bad_matrix / "shards"
    argv = ["csv", str(bad_matrix / "manifest.csv"), "--classes", str(bad_matrix / "classes.txt"),
            "--out", str(out), "--workers", "1", "--target-frames", "64", "--shard-size", "3", "--quiet"]
    assert main(argv) == 0
    info, train = _read_shards(out, "train")
    assert info["splits"]["train"]["counts"] == [3, 1]  # shard size honoured, counts recorded
    assert info["classes"] == ["low", "high"] and info["multilabel"] is False
    assert info["features"]["target_frames"] == 64 and info["features"]["num_mel_bins"] == 128
    for key, s in train.items():
        meta = json.loads(s["json"])
        mel = np.load(io.BytesIO(s["mel.npy"]))
        assert mel.dtype == np.float16 and mel.shape == (64, 128)
        ref, valid = extract(meta["path"], FeatureConfig(target_frames=64))
        np.testing.assert_allclose(mel.astype(np.float32), ref.numpy(), atol=0.02, rtol=1e-3)  # fp16 storage
        expected = 0 if int(key[-1]) < 3 else 1
        assert meta["labels"] == [expected] and meta["split"] == "train" and meta["valid_frames"] == valid
    # normalisation statistics over the training split's valid frames
    mels = [torch.from_numpy(np.load(io.BytesIO(s["mel.npy"])).astype(np.float64))[: json.loads(s["json"])["valid_frames"]]
            for s in train.values()]
    allv = torch.cat([m.flatten() for m in mels])
    assert abs(info["norm"]["mean"] - allv.mean().item()) < 0.01
    assert abs(info["norm"]["std"] - allv.std(unbiased=False).item()) < 0.01
    # idempotent: a second run gives byte-identical shards and no stale files
    before = {p.name: p.read_bytes() for p in out.glob("*.tar")}
    (out / "train-000009.tar").write_bytes(b"stale")
    assert main(argv) == 0
    after = {p.name: p.read_bytes() for p in out.glob("*.tar")}
    assert before == after
