"""Dataset readers (datamodules/readers/) on tiny fake layouts: classes, labels, splits, folds, keys,
failures with reasons, split files, seeded splits. Readers do not decode audio, so most audio files
are empty placeholders (one test writes real WAVs to show the path is what soundfile reads)."""

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from datamodules.readers import (
    READERS,
    Clip,
    ReaderError,
    ReadResult,
    dedupe_keys,
    read_dataset,
    sanitize_key,
    stratified_split,
)

SAFE = re.compile(r"^[A-Za-z0-9_-]+$")


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def check_common(res: ReadResult) -> None:
    """Invariants every reader keeps."""
    keys = [c.key for c in res.clips]
    assert len(keys) == len(set(keys)), Counter(keys).most_common(3)
    assert all(SAFE.match(k) for k in keys), [k for k in keys if not SAFE.match(k)]
    known = set(res.classes)
    assert len(known) == len(res.classes)
    for c in res.clips:
        assert c.labels and set(c.labels) <= known, c
        assert res.multilabel or len(c.labels) == 1
        assert c.path and Path(c.path).is_absolute() and Path(c.path).is_file()
        assert c.split
        json.dumps(c.meta)
    for f in res.failures:
        assert set(f) == {"key", "path", "split", "reason", "detail"} and f["detail"]
        assert re.fullmatch(r"[a-z_]+", f["reason"]), f  # a short tag; the driver counts failures by it
    json.dumps(res.failures)


def reasons(res: ReadResult) -> dict[str, str]:
    """key -> "reason: detail" (the last one where a key failed twice)."""
    return {f["key"]: f"{f['reason']}: {f['detail']}" for f in res.failures}


# ---------------------------------------------------------------------------------------------------
# helpers


def test_sanitize_key_is_webdataset_safe():
    assert sanitize_key("blues.00000") == "blues_00000"  # no dot: webdataset splits keys at the first dot
    assert sanitize_key("a b/c:d.wav") == "a_b_c_d_wav"
    assert sanitize_key("--PJHxphWEs") == "--PJHxphWEs"
    assert sanitize_key("_abcdefghij") == "_abcdefghij"  # YouTube ids are kept as they are
    assert sanitize_key("...") == "clip"


def test_dedupe_keys_stable_and_order_independent():
    def run(order):
        clips = [Clip(sanitize_key(s), ["x"], "train") for s in order]
        dedupe_keys(clips, list(order))
        return {s: c.key for s, c in zip(order, clips, strict=True)}

    a = run(["a.b", "a_b", "a b"])
    b = run(["a b", "a_b", "a.b"])
    assert a == b
    assert a["a b"] == "a_b"  # the first in sorted source order keeps the plain key
    assert len(set(a.values())) == 3 and all(SAFE.match(k) for k in a.values())


def test_stratified_split_counts_deterministic_and_seeded():
    strata = {f"{c}{i:03d}": c for c in "abc" for i in range(20)}
    strata.update({"d000": "d"})  # a class with one member stays in train
    s1 = stratified_split(strata, 0.1, 0.2, seed=0)
    assert s1 == stratified_split(dict(reversed(list(strata.items()))), 0.1, 0.2, seed=0)
    for c in "abc":
        cnt = Counter(s1[k] for k in strata if strata[k] == c)
        assert cnt == {"train": 14, "val": 2, "test": 4}
    assert s1["d000"] == "train"
    s2 = stratified_split(strata, 0.1, 0.2, seed=1)
    assert s1 != s2 and Counter(s1.values()) == Counter(s2.values())
    with pytest.raises(ReaderError):
        stratified_split(strata, 0.6, 0.5, seed=0)


# ---------------------------------------------------------------------------------------------------
# (a) folder


def gtzan(tmp_path: Path, n: int = 10, genres=("blues", "jazz", "rock")) -> Path:
    for g in genres:
        for i in range(n):
            touch(tmp_path / "gtzan" / "genres" / g / f"{g}.{i:05d}.wav")
    touch(tmp_path / "gtzan" / "genres" / "blues" / "notes.txt")  # not audio: skipped, listed as a failure
    return tmp_path / "gtzan"


def test_folder_seeded_split_stratified_and_deterministic(tmp_path):
    root = gtzan(tmp_path)
    res = read_dataset("folder", [str(root)])  # the parent of genres/
    check_common(res)
    assert res.classes == ["blues", "jazz", "rock"] and not res.multilabel
    assert [(f["key"], f["reason"]) for f in res.failures] == [("notes", "unsupported_format")]
    assert len(res.clips) == 30
    c0 = next(c for c in res.clips if c.key == "blues_00003")
    assert c0.labels == ["blues"] and c0.path == str((root / "genres/blues/blues.00003.wav").resolve())
    for g in res.classes:
        assert Counter(c.split for c in res.clips if c.labels == [g]) == {"train": 8, "val": 1, "test": 1}
    assert "leaky" in res.split_note
    again = read_dataset("folder", [str(root / "genres")])  # the genres dir itself
    assert [(c.key, c.split) for c in again.clips] == [(c.key, c.split) for c in res.clips]
    other = read_dataset("folder", [str(root), "--seed", "3"])
    assert {c.key: c.split for c in other.clips} != {c.key: c.split for c in res.clips}


def test_folder_split_files(tmp_path):
    root = gtzan(tmp_path, n=4)
    (tmp_path / "train_filtered.txt").write_text(
        "# fault-filtered\nblues/blues.00000.wav\njazz.00000.wav\nrock.00000\n\nblues.00001\n"
    )
    (tmp_path / "valid_filtered.txt").write_text("blues/blues.00002.wav\njazz/jazz.00009.wav\n")
    (tmp_path / "test_filtered.txt").write_text(
        "rock/rock.00001.wav\nrock.00000.wav\n/data/gtzan/genres/rock/rock.00002.au\trock\n"
    )
    (root / "extra.txt").write_text("jazz.00003\n")  # found relative to the root
    res = read_dataset(
        "folder",
        [
            str(root),
            "--split-files",
            str(tmp_path / "train_filtered.txt"),
            str(tmp_path / "valid_filtered.txt"),
            str(tmp_path / "test_filtered.txt"),
            "extra.txt:holdout",
        ],
    )
    check_common(res)
    got = {c.key: c.split for c in res.clips}
    assert got == {
        "blues_00000": "train",
        "jazz_00000": "train",
        "rock_00000": "train",
        "blues_00001": "train",
        "blues_00002": "val",
        "rock_00001": "test",
        "rock_00002": "test",  # absolute path, .au name for a .wav file, "<TAB>label" column
        "jazz_00003": "holdout",
    }
    r = reasons(res)
    assert (
        r["jazz_jazz_00009_wav"].startswith("missing_file")
        and "no such audio file" in r["jazz_jazz_00009_wav"]
    )
    assert r["rock_00000"].startswith("duplicate") and "already in split 'train'" in r["rock_00000"]
    assert {f["split"] for f in res.failures if f["key"] == "rock_00000"} == {"test"}
    unlisted = {k for k, v in r.items() if v.startswith("not_in_split_files")}
    assert unlisted == {"blues_00003", "jazz_00001", "jazz_00002", "rock_00003"}


def test_folder_errors(tmp_path):
    with pytest.raises(ReaderError, match="does not exist"):
        read_dataset("folder", [str(tmp_path / "nope")])
    (tmp_path / "empty" / "blues").mkdir(parents=True)
    with pytest.raises(ReaderError, match="no class folders with audio"):
        read_dataset("folder", [str(tmp_path / "empty")])
    root = gtzan(tmp_path, n=2)
    with pytest.raises(ReaderError, match="missing.txt"):
        read_dataset("folder", [str(root), "--split-files", str(tmp_path / "missing.txt")])


# ---------------------------------------------------------------------------------------------------
# (b) ESC-50

ESC_HEADER = "filename,fold,target,category,esc10,src_file,take\n"


def test_esc50(tmp_path):
    root = tmp_path / "ESC-50"
    rows = [
        ("1-100-A-1.wav", 1, 1, "rooster", "False"),
        ("1-101-A-0.wav", 1, 0, "dog", "True"),
        ("2-102-A-2.wav", 2, 2, "pig", "False"),
        ("3-103-A-0.wav", 3, 0, "dog", "True"),
        ("5-104-A-1.wav", 5, 1, "rooster", "False"),
        ("4-105-A-1.wav", 4, 1, "rooster", "False"),  # audio missing
    ]
    lines = [ESC_HEADER] + [f"{f},{fo},{t},{c},{e},{f[2:5]},A\n" for f, fo, t, c, e in rows]
    lines += [
        "4-106-A-2.wav,x,2,pig,False,106,A\n",
        "4-107-A-2.wav,4,2\n",
        "4-108-A-2.wav,4,2,cow,False,108,A\n",
    ]
    (root / "meta").mkdir(parents=True)
    (root / "meta" / "esc50.csv").write_text("".join(lines))
    for f, *_ in rows[:-1]:
        touch(root / "audio" / f)
    for f in ("4-106-A-2.wav", "4-107-A-2.wav", "4-108-A-2.wav"):
        touch(root / "audio" / f)
    res = read_dataset("esc50", [str(root)])
    check_common(res)
    assert res.classes == ["dog", "rooster", "pig"]  # target order
    assert not res.multilabel
    got = {c.key: (c.labels, c.split, c.fold) for c in res.clips}
    assert got == {
        "1-100-A-1": (["rooster"], "fold1", 1),
        "1-101-A-0": (["dog"], "fold1", 1),
        "2-102-A-2": (["pig"], "fold2", 2),
        "3-103-A-0": (["dog"], "fold3", 3),
        "5-104-A-1": (["rooster"], "fold5", 5),
    }
    r = reasons(res)
    assert r["4-105-A-1"] == "missing_file: audio file not found"
    assert next(f["split"] for f in res.failures if f["key"] == "4-105-A-1") == "fold4"
    assert r["4-106-A-2"].startswith("malformed_row") and "not integers" in r["4-106-A-2"]
    assert r["4-107-A-2"].startswith("malformed_row") and "wrong number of fields" in r["4-107-A-2"]
    assert r["4-108-A-2"].startswith("label_conflict") and "conflicts with 'pig'" in r["4-108-A-2"]
    assert "esc50.csv:10" in r["4-108-A-2"]  # file and line
    esc10 = read_dataset("esc50", [str(root), "--esc10"])
    assert esc10.name == "esc10" and esc10.classes == ["dog"] and len(esc10.clips) == 2


def test_esc50_malformed_metadata(tmp_path):
    with pytest.raises(ReaderError, match="esc50.csv"):
        read_dataset("esc50", [str(tmp_path)])
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "esc50.csv").write_text("name,fold\nx.wav,1\n")
    with pytest.raises(ReaderError, match=r"lacks column.*filename,fold,target"):
        read_dataset("esc50", [str(tmp_path)])


# ---------------------------------------------------------------------------------------------------
# (c) FSD50K


def test_fsd50k(tmp_path):
    root = tmp_path / "FSD50K"
    gt = root / "FSD50K.ground_truth"
    gt.mkdir(parents=True)
    (gt / "vocabulary.csv").write_text("0,Bark,/m/05tny_\n1,Dog,/m/0bt9lr\n2,Guitar,/m/0342h\n")
    (gt / "dev.csv").write_text(
        "fname,labels,mids,split\n"
        '64760,"Bark,Dog","/m/05tny_,/m/0bt9lr",train\n'
        "16399,Guitar,/m/0342h,val\n"
        '11,"Meow",/m/07qrkrw,train\n'  # unknown label
        "12,Dog,/m/0bt9lr,train\n"  # audio missing
        "13,Dog,/m/0bt9lr,dev\n"  # bad split
        "14,Dog\n"  # malformed
    )
    (gt / "eval.csv").write_text('fname,labels,mids\n37199,"Guitar,Dog","/m/0342h,/m/0bt9lr"\n')
    for f in ("64760", "16399", "11", "13", "14"):
        touch(root / "FSD50K.dev_audio" / f"{f}.wav")
    touch(root / "FSD50K.eval_audio" / "37199.wav")
    res = read_dataset("fsd50k", [str(root)])
    check_common(res)
    assert res.classes == ["Bark", "Dog", "Guitar"] and res.multilabel
    got = {c.key: (c.labels, c.split) for c in res.clips}
    assert got == {
        "64760": (["Bark", "Dog"], "train"),
        "16399": (["Guitar"], "val"),
        "37199": (["Guitar", "Dog"], "test"),
    }
    r = reasons(res)
    assert r["11"].startswith("unknown_label") and "Meow" in r["11"] and "dev.csv:4" in r["11"]
    assert r["12"] == "missing_file: audio file not found"
    assert r["13"].startswith("malformed_row") and "not train or val" in r["13"]
    assert r["14"].startswith("malformed_row")


def test_fsd50k_malformed_vocabulary(tmp_path):
    gt = tmp_path / "FSD50K.ground_truth"
    gt.mkdir()
    (gt / "vocabulary.csv").write_text("index,label,mid\n0,Bark,/m/05tny_\n")
    with pytest.raises(ReaderError, match=r"vocabulary.csv:1.*no header"):
        read_dataset("fsd50k", [str(tmp_path)])


# ---------------------------------------------------------------------------------------------------
# (d) AudioSet

AS_HEADER = (
    "# Segments csv created Sun Mar  5 10:54:31 2017\n"
    "# num_ytids=4, num_segs=4, num_unique_labels=3, num_positive_labels=5\n"
    "# YTID, start_seconds, end_seconds, positive_labels\n"
)


def test_audioset(tmp_path):
    root = tmp_path / "audioset"
    root.mkdir()
    (root / "class_labels_indices.csv").write_text(
        'index,mid,display_name\n0,/m/09x0r,"Speech"\n1,/m/05zppz,"Male speech, man speaking"\n'
        "2,/m/0ytgt,Child speech\n"
    )
    (root / "balanced_train_segments.csv").write_text(
        AS_HEADER + '--PJHxphWEs, 30.000, 40.000, "/m/09x0r,/m/05zppz"\n'
        'abcdefghijk, 0.000, 10.000, "/m/0ytgt"\n'
        'Ymissing000, 0.000, 10.000, "/m/0ytgt"\n'  # not downloaded
        'unknownmid0, 0.000, 10.000, "/m/zzz"\n'  # unknown mid
        "badrow00000, 0.000\n"  # malformed
        'mp3only0000, 0.000, 10.000, "/m/09x0r"\n'  # unsupported extension
    )
    (root / "eval_segments.csv").write_text(
        AS_HEADER + 'twoseg00000, 20.000, 30.000, "/m/09x0r"\n'
        'abcdefghijk, 0.000, 10.000, "/m/09x0r"\n'  # duplicate id
        'a_b-c_d-e_f, 5.000, 15.000, "/m/05zppz"\n'
    )
    audio = root / "audio"
    touch(audio / "balanced" / "Y--PJHxphWEs.wav")  # Y prefix (PANNs), in a subfolder
    sf.write(audio / "abcdefghijk.flac", np.zeros(160, dtype="float32"), 16000)
    touch(audio / "mp3only0000.mp3")
    touch(audio / "twoseg00000_0.wav")  # two files for one id: the start picks one
    touch(audio / "twoseg00000_20000.wav")
    touch(audio / "a_b-c_d-e_f_5.000_15.000.ogg")
    touch(audio / "unknownmid0.wav")
    touch(audio / "badrow00000.wav")
    res = read_dataset(
        "audioset",
        [str(root), "--segments", "balanced_train_segments.csv:train", "eval_segments.csv:test"],
    )
    check_common(res)
    assert res.classes == ["Speech", "Male speech, man speaking", "Child speech"] and res.multilabel
    got = {c.key: (c.labels, c.split, Path(c.path).name) for c in res.clips}
    assert got == {
        "--PJHxphWEs": (["Speech", "Male speech, man speaking"], "train", "Y--PJHxphWEs.wav"),
        "abcdefghijk": (["Child speech"], "train", "abcdefghijk.flac"),
        "twoseg00000": (["Speech"], "test", "twoseg00000_20000.wav"),
        "a_b-c_d-e_f": (["Male speech, man speaking"], "test", "a_b-c_d-e_f_5.000_15.000.ogg"),
    }
    clip = next(c for c in res.clips if c.key == "--PJHxphWEs")
    assert clip.meta["start"] == 30.0 and clip.meta["end"] == 40.0 and clip.meta["ytid"] == "--PJHxphWEs"
    assert sf.info(next(c.path for c in res.clips if c.key == "abcdefghijk")).frames == 160
    r = reasons(res)
    assert r["Ymissing000"].startswith("missing_file") and "balanced_train_segments.csv:6" in r["Ymissing000"]
    assert r["unknownmid0"].startswith("unknown_label") and "/m/zzz" in r["unknownmid0"]
    assert r["badrow00000"].startswith("malformed_row")
    assert r["mp3only0000"].startswith("unsupported_format") and ".mp3" in r["mp3only0000"]
    assert r["abcdefghijk"].startswith("duplicate") and "already in split 'train'" in r["abcdefghijk"]
    assert len(res.failures) == 5
    assert "not downloaded: train 1" in res.split_note


def test_audioset_errors(tmp_path):
    (tmp_path / "audio").mkdir()
    with pytest.raises(ReaderError, match="class_labels_indices.csv"):
        read_dataset("audioset", [str(tmp_path), "--segments", "x.csv:train"])
    (tmp_path / "class_labels_indices.csv").write_text("index,mid,display_name\n0,/m/a,A\n")
    with pytest.raises(ReaderError, match="x.csv"):
        read_dataset("audioset", [str(tmp_path), "--segments", "x.csv:train"])
    with pytest.raises(ReaderError, match="CSV:SPLIT"):
        read_dataset("audioset", [str(tmp_path), "--segments", "x.csv"])


# ---------------------------------------------------------------------------------------------------
# (e) generic CSV


def test_csv_manifest_multilabel(tmp_path):
    for n in ("a", "b", "c", "d", "e", "sub/f"):
        touch(tmp_path / "data" / f"{n}.wav")
    (tmp_path / "data" / "m.csv").write_text(
        "path,labels,split,fold,source\n"
        'a.wav,"dog;bark",train,,x\n'
        'b.wav,"cat,meow",val,,y\n'
        "c.wav,cat,,2,z\n"
        "d.wav,owl,test,,w\n"  # unknown with --classes
        "sub/f.wav,dog,,,v\n"
        "missing.wav,dog,train,,u\n"
        "e.wav,,train,,t\n"  # no labels
    )
    res = read_dataset("csv", [str(tmp_path / "data" / "m.csv")])
    check_common(res)
    assert res.multilabel and res.classes == ["bark", "cat", "dog", "meow", "owl"] and res.name == "m"
    got = {c.key: (c.labels, c.split, c.fold) for c in res.clips}
    assert got["a"] == (["dog", "bark"], "train", None)
    assert got["b"] == (["cat", "meow"], "val", None)
    assert got["c"] == (["cat"], "fold2", 2)
    assert got["sub_f"][1] in ("train", "val", "test")
    assert next(c for c in res.clips if c.key == "a").meta["source"] == "x"
    r = reasons(res)
    assert r["missing"] == "missing_file: audio file not found" and r["e"].startswith("no_label")

    (tmp_path / "classes.txt").write_text("dog\nbark\ncat\nmeow\n")
    res = read_dataset("csv", [str(tmp_path / "data" / "m.csv"), "--classes", str(tmp_path / "classes.txt")])
    assert res.classes == ["dog", "bark", "cat", "meow"]
    assert reasons(res)["d"].startswith("unknown_label") and "owl" in reasons(res)["d"]

    res = read_dataset("csv", [str(tmp_path / "data" / "m.csv"), "--no-multilabel"])
    check_common(res)
    assert not res.multilabel and reasons(res)["a"].startswith("multiple_labels")
    assert res.classes == ["cat", "dog", "owl"]


def test_csv_manifest_seeded_split_multiclass(tmp_path):
    lines = ["path,labels\n"]
    for cls in ("x", "y"):
        for i in range(10):
            touch(tmp_path / cls / f"{i}.wav")
            lines.append(f"{cls}/{i}.wav,{cls}\n")
    lines.append("bad.wav\n")  # too few fields
    (tmp_path / "m.csv").write_text("".join(lines))
    res = read_dataset("csv", [str(tmp_path / "m.csv"), "--val-fraction", "0.2", "--test-fraction", "0.1"])
    check_common(res)
    assert not res.multilabel and res.classes == ["x", "y"]
    for cls in ("x", "y"):
        assert Counter(c.split for c in res.clips if c.labels == [cls]) == {"train": 7, "val": 2, "test": 1}
    assert reasons(res)["bad"].startswith("malformed_row")
    again = read_dataset("csv", [str(tmp_path / "m.csv"), "--val-fraction", "0.2", "--test-fraction", "0.1"])
    assert [(c.key, c.split) for c in again.clips] == [(c.key, c.split) for c in res.clips]


def test_csv_manifest_with_bom(tmp_path):
    touch(tmp_path / "a.wav")
    (tmp_path / "m.csv").write_text("path,labels\na.wav,x\n", encoding="utf-8-sig")
    res = read_dataset("csv", [str(tmp_path / "m.csv")])
    assert [(c.key, c.labels, c.split) for c in res.clips] == [("a", ["x"], "train")]


def test_csv_manifest_bad_header(tmp_path):
    (tmp_path / "m.csv").write_text("file,label\na.wav,x\n")
    with pytest.raises(ReaderError, match=r"m.csv.*path,labels"):
        read_dataset("csv", [str(tmp_path / "m.csv")])
    with pytest.raises(ReaderError, match="not found"):
        read_dataset("csv", [str(tmp_path / "none.csv")])


def test_registry():
    assert set(READERS) == {"folder", "esc50", "fsd50k", "audioset", "csv", "synthetic", "urbansound8k"}
    for name, cls in READERS.items():
        assert cls.name == name


def test_audioset_repeated_display_name_kept_apart(tmp_path):
    (tmp_path / "class_labels_indices.csv").write_text("index,mid,display_name\n0,/m/a,Bell\n1,/m/b,Bell\n")
    (tmp_path / "seg.csv").write_text(AS_HEADER + 'abcdefghijk, 0.000, 10.000, "/m/b"\n')
    touch(tmp_path / "audio" / "abcdefghijk.wav")
    res = read_dataset("audioset", [str(tmp_path), "--segments", "seg.csv:train"])
    check_common(res)
    assert res.classes == ["Bell", "Bell (/m/b)"] and res.clips[0].labels == ["Bell (/m/b)"]
