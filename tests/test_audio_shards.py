"""AudioShardDataModule: rank/worker splitting, exactness, corrupt shards, on-device augmentation."""

import io
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from audiognn.data.shards import DatasetInfoError, ShardError, iter_tar, load_dataset_info, read_split_clips
from datamodules.audio_shards import AudioShardDataModule
from datamodules.shard_stream import ShardStream

T, F, C = 8, 16, 3  # the conftest shard factory's defaults: frames, mel bins, classes


def stream_batches(root, info, split, mode, rank, world, workers, batch_size=3, epoch=0):
    urls = [str(root / s) for s in info["splits"][split]["shards"]]
    ds = ShardStream(urls, info["splits"][split]["counts"], C, batch_size, mode, seed=1, shuffle_buffer=4)
    ds.rank, ds.world, ds.num_workers, ds.epoch = rank, world, max(1, workers), epoch
    loader = DataLoader(ds, batch_size=None, num_workers=workers)
    return [b["key"] for b in loader], len(ds)


@pytest.mark.parametrize("counts,workers", [([5, 3, 7, 1, 4], 2), ([9], 2), ([2, 11], 0)])
def test_exact_mode_two_ranks_disjoint_complete_equal_batches(tmp_path, make_shards, counts, workers):
    info = make_shards(tmp_path, counts)
    total = sum(counts)
    for epoch in (0, 1):
        seen, nbatches = [], []
        for rank in (0, 1):
            batches, length = stream_batches(tmp_path, info, "train", "exact", rank, 2, workers, epoch=epoch)
            assert all(len(b) >= 1 for b in batches)
            assert len(batches) == length  # len() of the loader is exact
            nbatches.append(len(batches))
            seen.append([k for b in batches for k in b])
        assert nbatches[0] == nbatches[1]  # DDP never waits on a rank that ran out
        assert not set(seen[0]) & set(seen[1])  # disjoint
        assert sorted(seen[0] + seen[1]) == [f"clip{i:05d}" for i in range(total)]  # each clip exactly once
        if epoch == 0:
            first = set(seen[0])
    assert first != set(seen[0])  # a new epoch deals the clips anew


def test_resampled_mode_equal_batches_per_rank(tmp_path, make_shards):
    info = make_shards(tmp_path, [5, 3, 7])
    counts = [stream_batches(tmp_path, info, "train", "resampled", r, 2, 2)[0] for r in (0, 1)]
    assert len(counts[0]) == len(counts[1]) == 2 * 2  # ceil(ceil(15 / (3·2)) / 2) = 2 per worker
    assert all(len(b) == 3 for b in counts[0])


@pytest.mark.parametrize("counts", [[4, 4, 3], [10]])
def test_eval_mode_every_clip_exactly_once_over_ranks(tmp_path, make_shards, counts):
    info = make_shards(tmp_path, counts)
    seen = []
    for rank in (0, 1):
        batches, length = stream_batches(tmp_path, info, "train", "eval", rank, 2, 2)
        assert len(batches) == length
        seen += [k for b in batches for k in b]
    assert sorted(seen) == [f"clip{i:05d}" for i in range(sum(counts))]


def test_truncated_shard_error_names_it_or_is_skipped_and_counted(tmp_path, make_shards):
    info = make_shards(tmp_path, [4, 4, 4])
    bad = tmp_path / "train-000001.tar"
    bad.write_bytes(bad.read_bytes()[:3000])
    with pytest.raises(ShardError, match="train-000001.tar"):
        stream_batches(tmp_path, info, "train", "eval", 0, 1, 0)
    dm = AudioShardDataModule(root=str(tmp_path), batch_size=4, num_workers=0, skip_corrupt_shards=True,
                              val_splits=["train"])
    dm.setup("validate")
    with pytest.warns(UserWarning, match="train-000001.tar"):
        keys = [k for b in dm.val_dataloader() for k in b["key"]]
    assert dm.corrupt_shards == 1
    assert set(keys) >= {f"clip{i:05d}" for i in list(range(4)) + list(range(8, 12))}


def _dm(tmp_path, make_shards, **kw):
    make_shards(tmp_path, [4])
    dm = AudioShardDataModule(root=str(tmp_path), batch_size=4, num_workers=0, val_splits=["train"], **kw)
    dm.setup("fit")
    return dm


def test_mixup_mixes_labels_by_the_same_lambda_as_features(tmp_path, make_shards):
    dm = _dm(tmp_path, make_shards, mixup_alpha=0.5, mixup_prob=1.0)
    b = 64
    x = torch.arange(b, dtype=torch.float32).view(b, 1, 1).expand(b, T, F).clone()  # example i is all i
    y = torch.nn.functional.one_hot(torch.arange(b) % C, C).float()
    xm, ym = dm.mixup(x, y)
    lam, perm = dm.mixup.last
    partner = perm
    for i in range(b):
        j = int(partner[i])
        if j == i:
            continue
        lam_x = (xm[i, 0, 0] - j) / (i - j)  # λ recovered from the features alone
        assert torch.allclose(xm[i], xm[i, 0, 0].expand(T, F))
        expect_y = lam_x * y[i] + (1 - lam_x) * y[j]
        torch.testing.assert_close(ym[i], expect_y, atol=1e-5, rtol=0)
    assert 0.05 < lam.std() and ((lam > 0) & (lam < 1)).all()  # per-example λ ~ Beta(0.5, 0.5)


def test_mixup_probability_leaves_some_examples_unmixed(tmp_path, make_shards):
    dm = _dm(tmp_path, make_shards, mixup_alpha=10.0, mixup_prob=0.5)  # the official code / AST parametrisation
    torch.manual_seed(3)
    x, y = torch.randn(400, T, F), torch.rand(400, C)
    dm.mixup(x, y)
    lam = dm.mixup.last[0]
    frac_unmixed = (lam == 1).float().mean().item()
    assert 0.4 < frac_unmixed < 0.6
    mixed = lam[lam < 1]
    assert abs(mixed.mean().item() - 0.5) < 0.05 and mixed.std().item() < 0.15  # Beta(10, 10)


def test_specaugment_masks_within_widths_and_per_example(tmp_path, make_shards):
    dm = _dm(tmp_path, make_shards, freq_mask=6, time_mask=3)
    x = torch.ones(32, T, F)
    out, same_y = dm.spec_augment(x, None)
    assert same_y is None  # targets pass unchanged
    patterns = set()
    for e in out:
        zero_f = torch.nonzero((e == 0).all(0)).flatten().tolist()  # fully masked mel bins
        zero_t = torch.nonzero((e == 0).all(1)).flatten().tolist()  # fully masked frames
        if zero_f:
            assert zero_f == list(range(zero_f[0], zero_f[-1] + 1)) and len(zero_f) < 6
        if zero_t:
            assert zero_t == list(range(zero_t[0], zero_t[-1] + 1)) and len(zero_t) < 3
        assert ((e == 0) == ((e == 0).all(0, keepdim=True) | (e == 0).all(1, keepdim=True))).all()
        patterns.add((tuple(zero_f), tuple(zero_t)))
    assert len(patterns) > 4  # masks drawn per example


def test_augmentation_only_while_training_and_normalisation_always(tmp_path, make_shards):
    dm = _dm(tmp_path, make_shards, mixup_alpha=0.5, mixup_prob=1.0, freq_mask=6, time_mask=3)
    batch = next(iter(dm.val_dataloader()))
    dm.trainer = SimpleNamespace(training=False)
    out = dm.on_after_batch_transfer(batch, 0)
    torch.testing.assert_close(out["x"], (batch["x"].float() - 1.0) / 2.0)  # dataset.json mean 1, std 2
    torch.testing.assert_close(out["y"], batch["y"])
    dm.trainer = SimpleNamespace(training=True)
    torch.manual_seed(0)
    out = dm.on_after_batch_transfer(batch, 0)
    assert not torch.equal(out["x"], (batch["x"].float() - 1.0) / 2.0)


@pytest.mark.parametrize("order", ["normalise_first", "augment_first"])
def test_spec_warp_while_training_only_with_gain_in_log_units(tmp_path, make_shards, order):
    """SpecWarp runs on training batches only, before mixup; a gain of g dB adds g ln(10)/10 to the raw log-mel,
    g ln(10)/10 / std once normalised (dataset.json std 2)."""
    dm = _dm(tmp_path, make_shards, mixup_prob=0.0, freq_mask=0, time_mask=0, gain_db=10.0, pipeline_order=order)
    batch = next(iter(dm.val_dataloader()))
    norm = (batch["x"].float() - 1.0) / 2.0
    dm.trainer = SimpleNamespace(training=False)
    torch.testing.assert_close(dm.on_after_batch_transfer(batch, 0)["x"], norm)
    dm.trainer = SimpleNamespace(training=True)
    torch.manual_seed(0)
    g = dm.spec_warp.draw(len(batch["x"]))[3]
    torch.manual_seed(0)
    out = dm.on_after_batch_transfer(batch, 0)["x"]
    torch.testing.assert_close(out - norm, (g * math.log(10) / 10 / 2.0).view(-1, 1, 1).expand_as(norm))
    assert g.abs().min() > 0 and g.std() > 0


@pytest.mark.parametrize("order", ["normalise_first", "augment_first"])
def test_filter_augment_while_training_only_in_log_units(tmp_path, make_shards, order):
    """FilterAugment (data.filter_db) runs on training batches only; its gain curve of g dB per bin adds
    g ln(10)/10 to the raw log-mel, g ln(10)/10 / std once normalised (dataset.json std 2)."""
    dm = _dm(tmp_path, make_shards, mixup_prob=0.0, freq_mask=0, time_mask=0, filter_db=6.0, pipeline_order=order)
    batch = next(iter(dm.val_dataloader()))
    norm = (batch["x"].float() - 1.0) / 2.0
    dm.trainer = SimpleNamespace(training=False)
    torch.testing.assert_close(dm.on_after_batch_transfer(batch, 0)["x"], norm)
    dm.trainer = SimpleNamespace(training=True)
    torch.manual_seed(0)
    g = dm.filter_augment.gains(len(batch["x"]), batch["x"].shape[2])
    torch.manual_seed(0)
    out = dm.on_after_batch_transfer(batch, 0)["x"]
    torch.testing.assert_close(out - norm, (g * math.log(10) / 10 / 2.0).unsqueeze(1).expand_as(norm))
    assert g.abs().max() > 0


@pytest.mark.parametrize("fmt", ["USTAR_FORMAT", "GNU_FORMAT", "PAX_FORMAT"])
def test_tar_reader_equals_tarfile(tmp_path, fmt):
    import tarfile

    rng = np.random.default_rng(0)
    path = tmp_path / "x.tar"
    members = {("k" * (120 if fmt != "USTAR_FORMAT" else 40)) + f"{i}.mel.npy": rng.bytes(int(rng.integers(0, 3000)))
               for i in range(5)}
    with tarfile.open(path, "w", format=getattr(tarfile, fmt)) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    with open(path, "rb") as f:
        assert dict(iter_tar(f)) == members
    raw = path.read_bytes()
    with pytest.raises(ValueError, match="truncated"):
        list(iter_tar(io.BytesIO(raw[:2000])))


def test_reads_any_webdataset_url(tmp_path, make_shards):
    """A ``pipe:`` URL prefix (as for ``pipe:curl -s https://...``) reads the same clips as the local path."""
    make_shards(tmp_path, [3, 2], extra_splits={"val": [4]})
    local = AudioShardDataModule(root=str(tmp_path), batch_size=2, num_workers=0)
    piped = AudioShardDataModule(root=f"pipe:cat {tmp_path}", batch_size=2, num_workers=0)
    assert piped.class_names == local.class_names
    keys = []
    for dm in (local, piped):
        dm.setup("fit")
        keys.append([k for b in dm.val_dataloader() for k in b["key"]])
    assert keys[0] == keys[1] and len(keys[0]) == 4


def test_eval_ranks_read_only_their_own_shards(tmp_path, make_shards, monkeypatch):
    import datamodules.shard_stream as mod

    info = make_shards(tmp_path, [4, 4, 3, 2])
    opened = []
    real = mod._read_shard
    monkeypatch.setattr(mod, "_read_shard", lambda url, *a: (opened.append(url), (yield from real(url, *a)))[1])
    for rank in (0, 1):
        opened.clear()
        stream_batches(tmp_path, info, "train", "eval", rank, 2, 0)
        assert sorted(u.rsplit("-", 1)[1] for u in opened) == (["000000.tar", "000002.tar"] if rank == 0
                                                                else ["000001.tar", "000003.tar"])


def test_dataset_json_errors_name_the_file_and_the_key(tmp_path, make_shards):
    info = make_shards(tmp_path, [2])
    assert load_dataset_info(tmp_path)["classes"] == info["classes"]
    for broken, key in [({k: v for k, v in info.items() if k != "norm"}, "'norm'"),
                        ({**info, "classes": "c0"}, "'classes'"),
                        ({**info, "splits": {"train": {"shards": ["train-000000.tar"], "counts": [1, 1]}}},
                         "'splits.train.counts'")]:
        (tmp_path / "dataset.json").write_text(json.dumps(broken))
        with pytest.raises(DatasetInfoError, match=f"dataset.json: key {key}") as err:
            load_dataset_info(tmp_path)
        assert "\n" not in str(err.value)
    (tmp_path / "dataset.json").write_text("{")
    with pytest.raises(DatasetInfoError, match="dataset.json is not valid JSON"):
        load_dataset_info(tmp_path)
    with pytest.raises(FileNotFoundError, match="dataset.json"):
        load_dataset_info(tmp_path / "none")


def test_read_split_clips_local_and_url(tmp_path, make_shards):
    make_shards(tmp_path, [3, 2], extra_splits={"val": [1]})
    clips = read_split_clips(tmp_path, "train")
    assert [c["key"] for c in clips] == [f"clip{i:05d}" for i in range(5)]
    assert all(c["mel"].dtype == np.float32 and c["mel"].shape == (T, F) for c in clips)
    assert [c["labels"] for c in clips] == [[i % C] for i in range(5)] and clips[4]["mel"][0, 0] == 4
    assert clips[0]["valid"] == T and clips[0]["artist"] is None
    assert [c["key"] for c in read_split_clips(f"pipe:cat {tmp_path}", "val")] == ["clip00005"]
    assert read_split_clips(tmp_path, "test") == []
    (tmp_path / "train-000001.tar").unlink()
    with pytest.raises(FileNotFoundError, match="train-000001.tar"):
        read_split_clips(tmp_path, "train")


def test_batches_carry_the_valid_frames_of_each_clip(tmp_path):
    """``batch["valid"]``: the frames of audio in each x (prepare's ``valid_frames``; within a training crop,
    what of the crop is audio)."""
    import webdataset as wds

    from audiognn.data.shards import encode_sample

    lengths = [3, 10, 16, 6]
    with open(tmp_path / "s.tar", "wb") as fh, wds.TarWriter(fh, encoder=False) as w:
        for i, v in enumerate(lengths):
            mel = np.zeros((16, 4), np.float16)
            mel[:v] = 1.0  # audio, then zero padding
            w.write(encode_sample(f"c{i}", mel, {"labels": [0], "split": "train", "valid_frames": v}))
    url = [str(tmp_path / "s.tar")]
    (batch,) = list(ShardStream(url, [4], 2, batch_size=4, mode="eval"))
    assert batch["valid"].tolist() == lengths
    for seed in range(5):
        (batch,) = list(ShardStream(url, [4], 2, batch_size=4, mode="exact", seed=seed, crop_frames=8))
        assert batch["x"].shape == (4, 8, 4)
        # a crop starts inside the audio; its valid frames are exactly its non-padding rows
        assert batch["valid"].tolist() == (batch["x"][:, :, 0] == 1.0).sum(1).tolist()
        assert (batch["x"][:, 0, 0] == 1.0).all()
