"""The ``urbansound8k`` reader and its prepare on a tiny generated UrbanSound8K layout (``metadata/UrbanSound8K.csv``
+ ``audio/fold<N>/``), and -- ``slow`` -- on the real subset ``../shared/data/urbansound8k-folds123`` when present."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from datamodules.prepare import main as prepare_main
from datamodules.readers import READERS, ReaderError, read_dataset

HEADER = "slice_file_name,fsID,start,end,salience,fold,classID,class\n"
CLASSES = {0: "air_conditioner", 1: "car_horn", 3: "dog_bark"}  # classID -> class (ids need not be contiguous)
REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "urbansound8k-folds123"


def us8k(tmp_path: Path, folds=(1, 2, 3), per_class: int = 2, extra_rows: str = "", gain=None) -> Path:
    """A fake UrbanSound8K: ``per_class`` short generated clips of every class in every fold (a 0.3 s tone whose
    pitch depends on the class, times ``gain[fold]`` when given), named ``<fsID>-<classID>-0-<slice>.wav`` as
    the original, plus ``extra_rows``."""
    root = tmp_path / "UrbanSound8K"
    rows, rng = [], np.random.default_rng(0)
    for fold in folds:
        (root / "audio" / f"fold{fold}").mkdir(parents=True, exist_ok=True)
        for cid, name in CLASSES.items():
            for s in range(per_class):
                fs_id = 1000 * fold + 10 * cid + s
                fname = f"{fs_id}-{cid}-0-{s}.wav"
                t = np.arange(int(0.3 * 16000)) / 16000
                wave = 0.3 * np.sin(2 * np.pi * 220 * (cid + 1) * t) + 0.01 * rng.standard_normal(t.size)
                wave *= (gain or {}).get(fold, 1.0)
                sf.write(root / "audio" / f"fold{fold}" / fname, wave.astype(np.float32), 16000, subtype="FLOAT")
                rows.append(f"{fname},{fs_id},0.0,0.3,1,{fold},{cid},{name}\n")
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    (root / "metadata" / "UrbanSound8K.csv").write_text(HEADER + "".join(rows) + extra_rows)
    return root


def test_registered():
    assert READERS["urbansound8k"].name == "urbansound8k"


def test_reader_folds_classes_and_metadata(tmp_path):
    res = read_dataset("urbansound8k", [str(us8k(tmp_path))])
    assert res.name == "urbansound8k" and not res.multilabel and res.failures == []
    assert res.classes == ["air_conditioner", "car_horn", "dog_bark"]  # ordered by classID
    assert len(res.clips) == 3 * 3 * 2
    for c in res.clips:
        assert c.split == f"fold{c.fold}" and Path(c.path).is_file() and f"/fold{c.fold}/" in c.path
        fs_id, cid = c.meta["fsID"], c.meta["classID"]
        assert c.labels == [CLASSES[cid]] and c.key == Path(c.meta["filename"]).stem
        assert int(fs_id) // 1000 == c.fold  # the fold of the metadata, never re-split
    assert {c.split for c in res.clips} == {"fold1", "fold2", "fold3"}
    # --folds keeps only the listed folds
    res12 = read_dataset("urbansound8k", [str(us8k(tmp_path)), "--folds", "1", "2"])
    assert {c.split for c in res12.clips} == {"fold1", "fold2"} and len(res12.clips) == 12


def test_reader_subset_without_optional_columns_and_bad_rows(tmp_path):
    root = us8k(tmp_path, folds=(1,), per_class=1)
    meta = root / "metadata" / "UrbanSound8K.csv"
    lines = meta.read_text().splitlines()
    subset = ["slice_file_name,fsID,fold,classID,class"]  # the shared subset's columns
    subset += [",".join(line.split(",")[i] for i in (0, 1, 5, 6, 7)) for line in lines[1:]]
    subset += ["missing-1-0-0.wav,9,1,1,car_horn", "conflict.wav,9,1,1,dog_bark", "bad.wav,9,x,1,car_horn",
               "short.wav,9,1"]
    meta.write_text("\n".join(subset) + "\n")
    shutil.copy(root / "audio" / "fold1" / "1010-1-0-0.wav", root / "audio" / "fold1" / "conflict.wav")
    res = read_dataset("urbansound8k", [str(root)])
    assert len(res.clips) == 3
    why = {f["key"]: f["reason"] for f in res.failures}
    assert why == {"missing-1-0-0": "missing_file", "conflict": "label_conflict", "bad": "malformed_row",
                   "short": "malformed_row"}
    assert all(f["detail"] for f in res.failures)


def test_reader_fatal_layout_errors(tmp_path):
    with pytest.raises(ReaderError, match="UrbanSound8K root"):
        read_dataset("urbansound8k", [str(tmp_path / "nope")])
    (tmp_path / "r" / "metadata").mkdir(parents=True)
    (tmp_path / "r" / "metadata" / "UrbanSound8K.csv").write_text("name,label\n")
    with pytest.raises(ReaderError, match="lacks column"):
        read_dataset("urbansound8k", [str(tmp_path / "r")])


def test_prepare_writes_every_fold(tmp_path, capsys):
    out = tmp_path / "shards"
    rc = prepare_main(["urbansound8k", str(us8k(tmp_path)), "--out", str(out), "--workers", "1", "--quiet",
                       "--target-frames", "40", "--num-mel-bins", "16"])
    assert rc == 0
    info = json.loads((out / "dataset.json").read_text())
    assert {s: m["clips"] for s, m in info["splits"].items()} == {"fold1": 6, "fold2": 6, "fold3": 6}
    assert info["failures"] == 0 and info["name"] == "urbansound8k" and info["features"]["target_frames"] == 40
    assert "wrote 18 clips" in capsys.readouterr().out


def test_prepare_defaults_to_4_s_and_warns_when_mostly_padding(tmp_path, capsys):
    from datamodules.prepare import build_parser

    root = us8k(tmp_path, folds=(1,), per_class=1)
    assert build_parser().parse_args(["urbansound8k", str(root), "--out", "x"]).target_frames == 400
    assert build_parser().parse_args(["esc50", str(root), "--out", "x"]).target_frames == 1024
    # 0.3 s clips (about 30 frames) padded to 400 frames: a warning naming a better --target-frames
    assert prepare_main(["urbansound8k", str(root), "--out", str(tmp_path / "a"), "--workers", "1", "--quiet",
                         "--num-mel-bins", "16"]) == 0
    err = capsys.readouterr().err
    assert "3 of 3 clips (100 %) are padded" in err and "consider --target-frames 2" in err
    assert prepare_main(["urbansound8k", str(root), "--out", str(tmp_path / "b"), "--workers", "1", "--quiet",
                         "--num-mel-bins", "16", "--target-frames", "40"]) == 0
    assert "padded" not in capsys.readouterr().err


REAL_COUNTS = {"fold1": 873, "fold2": 888, "fold3": 387}
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason="the real UrbanSound8K subset is not present")


@needs_real
def test_real_subset_lists_2148_clips_in_three_folds():
    """The shared real subset, read (not decoded): 2,148 clips of folds 1-3, 10 classes, nothing rejected."""
    res = read_dataset("urbansound8k", [str(REAL)])
    assert res.failures == [] and len(res.clips) == 2148 and len(res.classes) == 10
    assert {s: sum(c.split == s for c in res.clips) for s in REAL_COUNTS} == REAL_COUNTS


@pytest.mark.slow
@needs_real
def test_real_subset_prepare_2148_clips_0_failures(tmp_path):
    """``prepare urbansound8k`` on the real subset decodes every clip: 2,148 written, 0 failures, three folds
    (about 1.5 min on 2 busy cores)."""
    out = tmp_path / "us8k"
    assert prepare_main(["urbansound8k", str(REAL), "--out", str(out), "--quiet", "--workers", "2",
                         "--target-frames", "400", "--num-mel-bins", "64"]) == 0
    info = json.loads((out / "dataset.json").read_text())
    assert info["failures"] == 0 and {s: m["clips"] for s, m in info["splits"].items()} == REAL_COUNTS


def test_real_audio_bench_smoke(tmp_path, capsys):
    """bench/real_audio.py on the fake layout: every fold held out once, one table row per model, results.json
    per run with training-fold normalisation, PNGs; a second call reads the finished runs back."""
    import importlib.util

    import torch

    shards = tmp_path / "shards"
    assert prepare_main(["urbansound8k", str(us8k(tmp_path)), "--out", str(shards), "--workers", "1", "--quiet",
                         "--target-frames", "48", "--num-mel-bins", "16"]) == 0
    spec = importlib.util.spec_from_file_location("real_audio", Path(__file__).resolve().parents[1] / "bench" / "real_audio.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    argv = ["--shards", str(shards), "--out", str(tmp_path / "out"), "--epochs", "1", "--batch-size", "4",
            "--models", "gnn", "cnn"]
    n = torch.get_num_threads()
    try:
        assert mod.main(argv) == 0
        first = capsys.readouterr().out
        assert mod.main(argv) == 0
    finally:
        torch.set_num_threads(n)
    rows = [r for r in first.splitlines() if r.startswith("| ") and "---" not in r]
    assert [r.split("|")[1].strip() for r in rows] == ["model", "GenreGNN", "CNN"]
    runs = json.loads((tmp_path / "out" / "results.json").read_text())
    assert sorted((r["model"], r["test_fold"]) for r in runs) == [(m, f) for m in ("cnn", "gnn") for f in (1, 2, 3)]
    for r in runs:
        assert r["norm_over"] == [f"fold{f}" for f in (1, 2, 3) if f != r["test_fold"]]
        assert 0 <= r["acc"] <= 1 and len(r["epoch_seconds"]) == 1
        # keyed by the code as well as the recipe: the code shared by all models and this model's own module
        assert r["code_id"] == mod.code_id(backbone=r["recipe"]["model"]["backbone"]["class_path"]) != mod.code_id()
    assert "done before" in capsys.readouterr().out
    assert all((tmp_path / "out" / f"confusion_{m}.png").stat().st_size > 1000 for m in ("gnn", "cnn"))
    # a learning-curve point: held-out fold 3 trained on fold 1 alone, a run of its own beside the full rotation
    argv = ["--shards", str(shards), "--out", str(tmp_path / "out"), "--epochs", "1", "--batch-size", "4",
            "--models", "gnn", "--test-folds", "3", "--train-folds", "1"]
    try:
        assert mod.main(argv) == 0
    finally:
        torch.set_num_threads(n)
    runs = json.loads((tmp_path / "out" / "results.json").read_text())
    assert len(runs) == 7 and runs[-1]["train_folds"] == [1] and runs[-1]["norm_over"] == ["fold1"]
    for bad, msg in ((["--train-folds", "3"], "also held out"), (["--train-folds", "7"], "has folds")):
        with pytest.raises(SystemExit):
            mod.main(argv[:-2] + bad)
        assert msg in capsys.readouterr().err
