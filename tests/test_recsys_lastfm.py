"""Last.fm 2K without the real files: a small fixture in the HetRec 2011 format, the missing-file check before any
run starts, and the BPR sampling epoch after a resume with DataLoader workers."""

import functools
import os

import lightning as L
import numpy as np
import pytest

from audiognn.models.recsys_baselines import BPRMF
from audiognn.tasks.recommender import Recommender
from datamodules.recsys import BPRTriples, RecDataModule
from tests.test_recsys_data import planted

TAGS = ["rock", "happy pop", "sad songs", "chill", "metal", "indie"]


def write_lastfm2k(root, num_users=12, num_artists=30, seed=0):
    """HetRec 2011 Last.fm 2K files (tab-separated with a header, tags.dat latin-1) of a tiny made-up set:
    user and artist ids not contiguous, a third of the artists untagged, friendships listed both ways."""
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    users, artists = 2 + 3 * np.arange(num_users), 100 + 7 * np.arange(num_artists)
    plays = {(int(u), int(a)) for u in users for a in rng.choice(artists, 8, replace=False)}

    def write(name, header, rows, encoding="utf-8"):
        with open(os.path.join(root, name), "w", encoding=encoding) as f:
            f.write("\t".join(header) + "\n" + "".join("\t".join(map(str, r)) + "\n" for r in rows))

    write("user_artists.dat", ["userID", "artistID", "weight"], [(u, a, rng.integers(1, 500)) for u, a in sorted(plays)])
    friends = [(int(u), int(v)) for u in users for v in users if u < v and rng.random() < 0.3]
    write("user_friends.dat", ["userID", "friendID"], friends + [(v, u) for u, v in friends])
    write("tags.dat", ["tagID", "tagValue"], [(10 + t, name) for t, name in enumerate(TAGS)], encoding="latin-1")
    tagged = [(u, a, 10 + int(rng.integers(len(TAGS))), 1, 1, 2009) for u, a in sorted(plays) if a % 3 != 1]
    write("user_taggedartists.dat", ["userID", "artistID", "tagID", "day", "month", "year"], tagged)
    write("artists.dat", ["id", "name", "url", "pictureURL"], [(a, f"artist {a}", "", "") for a in artists])
    return len(users), len({a for _, a in plays}), len(plays), 2 * len(friends)


def test_lastfm2k_fixture_reads_like_the_real_files(tmp_path):
    n_users, n_items, n_pairs, n_social = write_lastfm2k(str(tmp_path))
    dm = RecDataModule(root=str(tmp_path), text_dim=4, seed=1)
    d = dm.rec_graph and dm.data
    assert (d.num_users, d.num_items, len(d.user), d.social.shape[1]) == (n_users, n_items, n_pairs, n_social)
    text, present = d.modalities["text"]
    tagged = np.array([int(k) % 3 != 1 for k in d.item_keys])
    assert text.shape == (n_items, 4) and np.array_equal(present, tagged) and (text[~present] == 0).all()
    emo, has = d.emotion
    assert has.any() and np.allclose(emo[has].sum(1), 1) and (emo[~has] == 0).all()


@pytest.mark.parametrize("missing", ["user_artists.dat", "tags.dat"])
def test_missing_lastfm_file_is_named_at_construction(tmp_path, missing):
    write_lastfm2k(str(tmp_path))
    os.remove(tmp_path / missing)
    with pytest.raises(FileNotFoundError) as e:
        RecDataModule(root=str(tmp_path))
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / missing) in msg and "hetrec2011-lastfm-2k.zip" in msg
    if missing == "tags.dat":  # not needed without tags
        RecDataModule(root=str(tmp_path), use_tags=False, emotion_from_tags=False)


@pytest.mark.parametrize("recipe", ["mmgnn_lastfm", "lightgcn_lastfm"])
def test_recipe_fails_before_any_run_starts(tmp_path, monkeypatch, capsys, recipe):
    from train import ROOT, cli_main

    monkeypatch.chdir(tmp_path)  # the recipe's runs/ directory would appear here
    config = str(ROOT / "conf" / "mmgnn" / f"{recipe}.yaml")
    with pytest.raises((FileNotFoundError, SystemExit)) as e:  # train.py may print it as one line, exit code 2
        cli_main(["fit", "--config", config, "--data.init_args.root", str(tmp_path / "nowhere")])
    assert e.type is SystemExit and e.value.code == 2
    err = capsys.readouterr().err
    assert "nowhere/user_artists.dat is missing" in err and "hetrec2011-lastfm-2k.zip" in err
    assert "run directory:" not in err  # no run is announced, and none is left behind: not even an empty directory
    assert sorted(os.listdir(tmp_path)) == []


def test_failed_start_keeps_earlier_runs_and_latest(tmp_path, monkeypatch, capsys):
    from train import ROOT, cli_main

    monkeypatch.chdir(tmp_path)
    earlier = tmp_path / "runs" / "mmgnn_lastfm" / "version_0"
    earlier.mkdir(parents=True)
    (earlier / "config.yaml").write_text("x: 1\n")
    (earlier.parent / "latest").symlink_to("version_0", target_is_directory=True)
    with pytest.raises(SystemExit):
        cli_main(["fit", "--config", str(ROOT / "conf" / "mmgnn" / "mmgnn_lastfm.yaml"),
                  "--data.init_args.root", str(tmp_path / "nowhere")])
    assert sorted(os.listdir(earlier.parent)) == ["latest", "version_0"]  # version_1 was reserved, then removed
    assert os.readlink(earlier.parent / "latest") == "version_0" and (earlier / "config.yaml").is_file()


class _Batches(L.Callback):
    def __init__(self):
        self.seen = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen.setdefault(trainer.current_epoch, []).append([t.tolist() for t in batch])


def _fit(dm, epochs, tmp_path, ckpt=None):
    rec = Recommender(functools.partial(BPRMF, embedding_dim=8), rec_graph=dm.rec_graph)
    cb = _Batches()
    tr = L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False, limit_val_batches=0, callbacks=[cb], default_root_dir=str(tmp_path))
    tr.fit(rec, dm, ckpt_path=ckpt)
    return tr, cb.seen


@pytest.mark.parametrize("workers", [0, 1])
def test_resume_draws_the_next_epoch_negatives_whatever_num_workers(tmp_path, workers):
    def dm():
        return RecDataModule.from_data(planted(), batch_size=256, num_workers=workers, seed=4)

    tr, first = _fit(dm(), 2, tmp_path)
    tr.save_checkpoint(tmp_path / "e2.ckpt")
    _, resumed = _fit(dm(), 3, tmp_path, ckpt=str(tmp_path / "e2.ckpt"))
    _, straight = _fit(dm(), 3, tmp_path)
    assert first[0] != first[1] and list(resumed) == [2]
    assert resumed[2] == straight[2]  # the resumed run draws epoch 2's triples, not epoch 0's again
    d = dm().rec_graph and dm()
    d.setup()
    tr_pairs = d.split == 0
    ref = BPRTriples(d.data.user[tr_pairs], d.data.item[tr_pairs], d.data.num_items, 256, seed=4)
    assert resumed[2] == [[t.tolist() for t in b] for b in ref.batches(2)]
