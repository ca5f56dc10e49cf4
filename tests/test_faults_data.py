"""The fault matrix of the audio data layer (prepare, shards, stream): each fault planted, its handling asserted.

Every case ends in an error naming the thing, or in a skipped-and-counted result with nothing good lost.
Ctrl-C runs ``prepare`` in a subprocess (with a timeout); the 2-process DDP case is in ``tests/test_ddp.py``.
"""

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from torch.utils.data import DataLoader

from audiognn.data.shards import DatasetInfoError, ShardError, iter_tar, join, load_dataset_info
from datamodules.audio_shards import AudioShardDataModule
from datamodules.prepare import main as prepare
from datamodules.readers import read_dataset
from datamodules.shard_stream import ShardStream, SharedCounter

REPO = Path(__file__).resolve().parents[1]
C = 3  # classes of the conftest shard factory
SMALL = ["--target-frames", "16", "--num-mel-bins", "16", "--workers", "1", "--quiet"]


def _tone(path: Path, freq: float = 440.0) -> None:
    t = np.arange(8000) / 16000
    sf.write(path, (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 16000)


def _files(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir()) if p.is_file()}


def _stream(root: Path, info: dict, rank=0, world=1, workers=0, mode="exact", skip=True, counter=None):
    meta = info["splits"]["train"]
    ds = ShardStream([str(root / s) for s in meta["shards"]], meta["counts"], C, 3, mode, seed=1, shuffle_buffer=4,
                     skip_corrupt=skip, counter=counter, sha256=meta.get("sha256"))
    ds.rank, ds.world, ds.num_workers = rank, world, max(1, workers)
    return ds, DataLoader(ds, batch_size=None, num_workers=workers)


def _member_offsets(shard: Path) -> list[tuple[int, str]]:
    """(byte offset, name) of every member header in an uncompressed tar (ustar: 512-byte blocks)."""
    data, pos, out = shard.read_bytes(), 0, []
    while pos + 512 <= len(data) and data[pos : pos + 512].strip(b"\0"):
        out.append((pos, data[pos : pos + 100].split(b"\0", 1)[0].decode()))
        size = int(data[pos + 124 : pos + 136].split(b"\0", 1)[0].strip() or b"0", 8)
        pos += 512 + size + (-size) % 512
    return out


def _zero(shard: Path, start: int, n: int) -> None:
    data = bytearray(shard.read_bytes())
    data[start : start + n] = bytes(n)
    shard.write_bytes(bytes(data))


# --- 1. Ctrl-C in prepare --workers 2 ------------------------------------------------------------------------
def test_ctrl_c_terminates_pool_removes_partial_keeps_previous_set(tmp_path, make_shards):
    out = tmp_path / "out"
    make_shards(out, [4, 4])
    before = _files(out)
    # 30,000 clips: far more than the pool writes before the Ctrl-C (3,000 finished first once, on an idle machine)
    cmd = [sys.executable, "-m", "datamodules.prepare", "synthetic", "--train", "30000", "--val", "0", "--test", "0",
           "--out", str(out), "--workers", "2", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        deadline = time.time() + 120
        while not list(out.glob(".partial-*")) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        time.sleep(4)  # the pool is started and busy
        assert proc.poll() is None, proc.communicate()[0]
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the whole foreground group, workers included
        log, _ = proc.communicate(timeout=90)  # seconds when idle; generous for a loaded CI machine (a hang is forever)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("prepare hung after Ctrl-C")
    assert proc.returncode == 130, log[-3000:]
    assert "interrupted" in log
    assert not list(out.glob(".partial-*"))
    assert _files(out) == before  # the previous set intact


def test_next_prepare_removes_partials_of_killed_runs_only(tmp_path, make_shards):
    """kill -9 leaves ``.partial-<pid>-*`` behind (no ``finally`` runs); the next prepare into the same --out
    removes those of dead processes and never one of a prepare still running."""
    out = tmp_path / "out"
    make_shards(out, [2])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs
    stale = out / f".partial-{dead.pid}-abc"
    (stale / "sub").mkdir(parents=True)
    (stale / "train-000000.tar").write_bytes(b"half written")
    live = out / f".partial-{os.getpid()}-xyz"  # this process is alive: a concurrent prepare's directory
    live.mkdir()
    assert prepare(["synthetic", "--train", "2", "--val", "0", "--test", "0", "--out", str(out), *SMALL]) == 0
    assert not stale.exists() and live.is_dir()
    assert [p.name for p in out.glob(".partial-*")] == [live.name]


# --- 2. other .tar files in --out --------------------------------------------------------------------------
def test_prepare_replaces_only_the_previous_sets_shards(tmp_path, make_shards):
    out = tmp_path / "out"
    make_shards(out, [2] * 5)  # previous set: train-000000..000004
    (out / "my_backup.tar").write_bytes(b"precious")
    (out / "other-000000.tar").write_bytes(b"another set")
    assert prepare(["synthetic", "--train", "4", "--val", "2", "--test", "2", "--out", str(out), *SMALL]) == 0
    assert (out / "my_backup.tar").read_bytes() == b"precious"
    assert (out / "other-000000.tar").read_bytes() == b"another set"
    info = load_dataset_info(out)
    listed = {s for m in info["splits"].values() for s in m["shards"]}
    assert {p.name for p in out.glob("*.tar")} == listed | {"my_backup.tar", "other-000000.tar"}


# --- 3. unusable output directory ------------------------------------------------------------------------
def _one_line_error(capsys, *words) -> None:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:") and "Traceback" not in err, err
    for w in words:
        assert w in err, err


def test_output_is_a_file(tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("x")
    assert prepare(["synthetic", "--train", "2", "--out", str(target), *SMALL]) == 2
    _one_line_error(capsys, str(target), "not a directory")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_output_read_only(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    assert prepare(["synthetic", "--train", "2", "--out", str(ro), *SMALL]) == 2
    _one_line_error(capsys, str(ro), "not writable")


def test_full_disk_one_line_no_partial_previous_set_intact(tmp_path, make_shards, capsys, monkeypatch):
    out = tmp_path / "out"
    make_shards(out, [3])
    before = _files(out)

    def enospc(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(out / "train-000000.tar"))

    monkeypatch.setattr("audiognn.data.shards.ShardWriter.write", enospc)
    assert prepare(["synthetic", "--train", "4", "--out", str(out), *SMALL]) == 2
    _one_line_error(capsys, "No space left on device")
    assert not list(out.glob(".partial-*"))
    assert _files(out) == before


# --- 4. folder reader: every skipped file listed -------------------------------------------------------------
def test_folder_lists_mp3_and_symlink_loop_as_failures(tmp_path):
    root = tmp_path / "genres"
    for g in ("blues", "jazz"):
        (root / g).mkdir(parents=True)
        for i in range(3):
            _tone(root / g / f"{g}.{i}.wav", 300 + 100 * i)
    (root / "blues" / "song.mp3").write_bytes(b"ID3")
    os.symlink("loop.wav", root / "jazz" / "loop.wav")  # a link to itself
    out = tmp_path / "out"
    assert prepare(["folder", str(root), "--out", str(out), "--val-fraction", "0", "--test-fraction", "0", *SMALL]) == 0
    reasons = {Path(r["path"]).name: r["reason"] for r in map(json.loads, (out / "failures.jsonl").open())}
    assert reasons == {"song.mp3": "unsupported_format", "loop.wav": "unreadable"}
    assert load_dataset_info(out)["splits"]["train"]["clips"] == 6  # every good clip written
    res = read_dataset("folder", [str(root)])
    assert {f["reason"] for f in res.failures} == {"unsupported_format", "unreadable"}


# --- 5. split names from a CSV manifest ----------------------------------------------------------------------
def test_csv_bad_split_names_are_failures_before_featurising(tmp_path, monkeypatch):
    import datamodules.shard_writer as sw

    (tmp_path / "a").mkdir()
    rows = ["path,labels,split"]
    bad = {"../../../pwned", str(tmp_path / "abs"), "sub/dir", ".hidden"}
    for i, split in enumerate(["train", "train", *sorted(bad)]):
        _tone(tmp_path / "a" / f"c{i}.wav", 200 + 50 * i)
        rows.append(f"a/c{i}.wav,x,{split}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    seen = []
    real = sw._featurize
    monkeypatch.setattr(sw, "_featurize", lambda job: seen.append(job[0]["key"]) or real(job))
    out = tmp_path / "deep" / "er" / "out"
    assert prepare(["csv", str(tmp_path / "m.csv"), "--out", str(out), *SMALL]) == 0
    fails = [json.loads(line) for line in (out / "failures.jsonl").open()]
    assert sorted(f["reason"] for f in fails) == ["bad_split"] * 4
    assert sorted(seen) == ["a_c0", "a_c1"]  # the bad rows were never featurised
    assert not list(tmp_path.rglob("pwned*")) and not (tmp_path / "abs-000000.tar").exists()
    assert {p.name for p in out.iterdir() if p.suffix == ".tar"} == {"train-000000.tar"}


# --- 6. shard names pasted into a pipe: command --------------------------------------------------------------
def test_unsafe_shard_name_rejected_before_any_command(tmp_path, make_shards):
    info = make_shards(tmp_path, [2])
    marker = tmp_path / "INJECTED"
    info["splits"]["train"]["shards"] = [f"x.tar; touch {marker} #"]
    (tmp_path / "dataset.json").write_text(json.dumps(info))
    with pytest.raises(DatasetInfoError, match="splits.train.shards"):
        AudioShardDataModule(root=f"pipe:cat {tmp_path}", num_workers=0)
    assert not marker.exists()
    assert join("pipe:cat /d", "a b.tar") == "pipe:cat /d/'a b.tar'"  # quoted as well
    assert join("pipe:cat /d", "train-000000.tar") == "pipe:cat /d/train-000000.tar"


# --- 7. checksums ----------------------------------------------------------------------------------------
def test_prepare_records_sha256_and_counts(tmp_path):
    assert prepare(["synthetic", "--train", "5", "--val", "0", "--test", "0", "--shard-size", "2", "--out",
                    str(tmp_path), *SMALL]) == 0
    meta = load_dataset_info(tmp_path)["splits"]["train"]
    assert meta["counts"] == [2, 2, 1]
    assert meta["sha256"] == [hashlib.sha256((tmp_path / s).read_bytes()).hexdigest() for s in meta["shards"]]


def test_zero_bytes_in_a_logmel_payload_error_or_skip_and_count(tmp_path, make_shards):
    info = make_shards(tmp_path, [4, 4, 4])
    shard = tmp_path / "train-000001.tar"
    pos, name = [m for m in _member_offsets(shard) if m[1].endswith(".mel.npy")][1]  # the second clip's log-mel
    assert name == "clip00005.mel.npy"
    _zero(shard, pos + 512 + 160, 32)  # 32 zero bytes inside its payload (the values are 5.0), header intact
    with pytest.raises(ShardError, match=r"train-000001\.tar.*sha256"):
        list(_stream(tmp_path, info, skip=False)[1])
    counter = SharedCounter()
    ds, loader = _stream(tmp_path, info, counter=counter)
    with pytest.warns(UserWarning, match="train-000001.tar"):
        keys = [k for b in loader for k in b["key"]]
    assert counter.get() == 1
    assert len(keys) == 12  # the epoch keeps its length, refilled from the readable shards ...
    assert {f"clip{i:05d}" for i in [*range(4), *range(8, 12)]} <= set(keys)  # ... nothing good lost
    assert not {f"clip{i:05d}" for i in range(4, 8)} & set(keys)


def test_old_dataset_json_without_checksums_loads_with_one_warning(tmp_path, make_shards):
    make_shards(tmp_path, [4], extra_splits={"val": [2]}, checksums=False)
    dm = AudioShardDataModule(root=str(tmp_path), batch_size=2, num_workers=0)
    with pytest.warns(UserWarning, match="no shard checksums") as rec:
        dm.setup("fit")
        dm.setup("validate")
    assert len([w for w in rec if "checksums" in str(w.message)]) == 1
    assert sum(len(b["key"]) for b in dm.train_dataloader()) == 4


# --- 8. zeroed member header ------------------------------------------------------------------------------
@pytest.mark.parametrize("checksums", [True, False])
def test_zeroed_member_header_is_not_the_end_of_the_archive(tmp_path, make_shards, checksums):
    info = make_shards(tmp_path, [4, 4], checksums=checksums)
    shard = tmp_path / "train-000000.tar"
    _zero(shard, _member_offsets(shard)[2][0], 512)  # header of the second clip's first member
    with open(shard, "rb") as f, pytest.raises(ValueError, match="all-zero tar block"):
        list(iter_tar(f))
    with pytest.raises(ShardError, match=r"train-000000\.tar"):
        list(_stream(tmp_path, info, skip=False)[1])
    counter = SharedCounter()
    with pytest.warns(UserWarning, match="train-000000.tar"):
        keys = [k for b in _stream(tmp_path, info, counter=counter)[1] for k in b["key"]]
    assert counter.get() == 1 and len(keys) == 8


# --- 9. every epoch its declared length, on every rank -------------------------------------------------------
@pytest.mark.parametrize("fault", ["truncated", "deleted", "counts_too_high"])
def test_exact_epoch_length_on_every_rank_with_skipped_shards(tmp_path, make_shards, fault):
    info = make_shards(tmp_path, [5, 5, 5, 5])
    shard = tmp_path / "train-000002.tar"
    if fault == "truncated":
        shard.write_bytes(shard.read_bytes()[:3000])
    elif fault == "deleted":
        shard.unlink()
    else:
        info["splits"]["train"]["counts"][2] = 7
    lengths = []
    for rank in (0, 1):
        counter = SharedCounter()
        ds, loader = _stream(tmp_path, info, rank=rank, world=2, workers=2, counter=counter)
        batches = list(loader)  # (the skip warnings come from the worker processes)
        assert counter.get() >= 1  # the shard is read by a worker of each rank that owns one of its clips
        assert len(batches) == len(ds) and all(len(b["key"]) >= 1 for b in batches)
        lengths.append(len(batches))
    assert lengths[0] == lengths[1]  # DDP: no rank waits for a batch the other never sends


def test_counts_too_low_error_names_the_file(tmp_path, make_shards):
    info = make_shards(tmp_path, [5, 5], checksums=False)
    info["splits"]["train"]["counts"][1] = 3
    with pytest.raises(ShardError, match=r"train-000001\.tar holds 5 clips but dataset.json lists 3"):
        list(_stream(tmp_path, info, skip=False)[1])


# --- 10. errors before work -------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [0, -1])
def test_bad_batch_size_fails_in_init(tmp_path, make_shards, value):
    make_shards(tmp_path, [2])
    with pytest.raises(ValueError, match=rf"^data.batch_size must be an integer >= 1, got {value}$"):
        AudioShardDataModule(root=str(tmp_path), batch_size=value)


def test_missing_dataset_json_one_line_naming_file_and_fix(tmp_path):
    with pytest.raises(FileNotFoundError) as exc:
        AudioShardDataModule(root=str(tmp_path / "nothing-here"))
    msg = str(exc.value)
    assert "\n" not in msg and "dataset.json" in msg and "python -m datamodules.prepare" in msg


# --- 11. predict ----------------------------------------------------------------------------------------------
def test_predict_directory_skips_bad_files_keeps_good(tmp_path, make_shards):
    make_shards(tmp_path / "set", [2])
    songs = tmp_path / "songs"
    songs.mkdir()
    for name in ("b.wav", "a.flac", "d.wav"):
        _tone(songs / name)
    (songs / "c.wav").write_bytes(b"not audio at all")
    (songs / "notes.txt").write_text("ignored")
    dm = AudioShardDataModule(root=str(tmp_path / "set"), batch_size=2, num_workers=0, predict_files=[str(songs)])
    dm.setup("predict")
    with pytest.warns(UserWarning, match="c.wav"):
        keys = [k for b in dm.predict_dataloader() for k in b["key"]]
    assert [Path(k).name for k in keys] == ["a.flac", "b.wav", "d.wav"]  # sorted, every good file
    assert [Path(f["path"]).name for f in dm.predict_failures] == ["c.wav"]
