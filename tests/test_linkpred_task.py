"""The genre graph DataModule (structure, held-out edges) and the R-GCN link predictor learning it."""

import io
import json
from functools import partial

import lightning as L
import numpy as np
import pytest
import torch

from audiognn.data.linkpred import BY_ARTIST, HAS_GENRE, NUM_RELATIONS, SIMILAR_TO
from audiognn.linkpred_metrics import triple_keys
from audiognn.models.rgcn import RGCNLinkPredictor
from audiognn.tasks.link_prediction import LinkPrediction
from datamodules.genre_graph import GenreGraphDataModule


def _write_shards(root, classes, clips, frames=40, n_mels=16):
    """Hand-written shard set in the prepare format: clips = [(key, split, label, artist or None)]."""
    import webdataset as wds

    rng = np.random.default_rng(0)
    splits = {}
    for split in sorted({c[1] for c in clips}):
        name = f"{split}-000000.tar"
        with open(root / name, "wb") as fh:
            w = wds.TarWriter(fh, encoder=False)
            n = 0
            for key, s, label, artist in clips:
                if s != split:
                    continue
                buf = io.BytesIO()
                mel = rng.normal(size=(frames, n_mels)) + label  # tracks of a genre look alike
                np.save(buf, mel.astype(np.float16))
                meta = {"labels": [label], "split": split, "valid_frames": frames, "meta": {}}
                if artist is not None:
                    meta["meta"]["artist"] = artist
                w.write({"__key__": key, "mel.npy": buf.getvalue(), "json": json.dumps(meta).encode()})
                n += 1
            w.close()
        splits[split] = {"shards": [name], "clips": n}
    info = {"classes": classes, "multilabel": False, "splits": splits, "norm": {"mean": 0.0, "std": 1.0}}
    (root / "dataset.json").write_text(json.dumps(info))


def test_graph_structure(tmp_path):
    clips = [
        ("a", "train", 0, "x"),
        ("b", "train", 1, "x"),
        ("c", "train", 2, "y"),
        ("d", "train", 0, None),
        ("e", "val", 1, "y"),
        ("f", "test", 2, "z"),
    ]
    _write_shards(tmp_path, ["g0", "g1", "g2"], clips)
    dm = GenreGraphDataModule(str(tmp_path), n_mfcc=4, k=2)
    assert dm.num_classes == 3 and dm.class_names == ["g0", "g1", "g2"]
    # the sizes linked into the model: 2 * n_mfcc features; 3 genres + 3 artists without features
    assert (dm.num_node_features, dm.num_free_nodes, dm.num_relations) == (8, 6, NUM_RELATIONS)
    dm.setup()
    g, h = dm.graph, dm.hetero
    # 6 tracks, 3 genres, 3 artists (x, y, z)
    assert g.num_nodes == 12 and g.x.shape == (6, 8) and h["artist"].num_nodes == 3
    keys = h["track"].key
    tid = {k: keys.index(k) for k in "abcdef"}
    trip = torch.stack([g.edge_index[0], g.edge_type, g.edge_index[1]], 1)
    hg = {(int(a), int(b) - 6) for a, r, b in trip.tolist() if r == HAS_GENRE}
    # only training tracks have has_genre edges in the message-passing graph
    assert hg == {(tid["a"], 0), (tid["b"], 1), (tid["c"], 2), (tid["d"], 0)}
    assert g.val_triples.tolist() == [[tid["e"], HAS_GENRE, 6 + 1]]
    assert g.test_triples.tolist() == [[tid["f"], HAS_GENRE, 6 + 2]]
    assert g.val_tracks.tolist() == [tid["e"]] and g.test_labels.tolist() == [2]
    # by_artist: 5 tracks with an artist
    ba = trip[trip[:, 1] == BY_ARTIST]
    assert len(ba) == 5 and (ba[:, 2] >= 9).all()
    assert ba[ba[:, 0] == tid["a"], 2].item() == ba[ba[:, 0] == tid["b"], 2].item()
    # similar_to: k = 2 per track, among tracks, no self loops
    st = trip[trip[:, 1] == SIMILAR_TO]
    assert len(st) == 12 and (st[:, [0, 2]] < 6).all() and (st[:, 0] != st[:, 2]).all()
    # the filter knows every true triple, held-out ones included
    known = triple_keys(torch.cat([trip, g.val_triples, g.test_triples]), 12, 3)
    assert torch.equal(torch.unique(known), g.known_keys)
    # typed corruption ranges
    assert g.node_lo.tolist() == [0] * 6 + [6] * 3 + [9] * 3
    assert g.node_hi.tolist() == [6] * 6 + [9] * 3 + [12] * 3


def test_bad_root_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset.json"):
        GenreGraphDataModule(str(tmp_path))
    with pytest.raises(ValueError, match="checkpoint"):
        _write_shards(tmp_path, ["g0"], [("a", "train", 0, None), ("b", "val", 0, None)])
        GenreGraphDataModule(str(tmp_path), features="checkpoint")


def _trainer(**kw):
    return L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, **kw)


def test_heldout_genre_by_link_ranking_above_chance(tmp_path):
    from audiognn.features import FeatureConfig
    from datamodules.prepare import prepare, synthetic_result

    prepare(
        synthetic_result("genre", 96, 32, 48, seed=1),
        tmp_path,
        FeatureConfig(target_frames=200),
        workers=1,
        progress=False,
    )
    L.seed_everything(0)
    dm = GenreGraphDataModule(str(tmp_path), k=5, steps_per_epoch=20)
    model = LinkPrediction(dm.num_node_features, dm.num_free_nodes, dm.num_classes,
                           model=partial(RGCNLinkPredictor, hidden=32))
    trainer = _trainer(max_epochs=3, num_sanity_val_steps=0)
    trainer.fit(model, dm)
    res = trainer.test(model, dm, verbose=False)[0]
    # 8 genres: chance accuracy 0.125; a random scorer's filtered MRR on has_genre triples is far below 0.5
    assert res["test/acc"] >= 0.5, res
    assert res["test/mrr"] >= 0.3, res
    assert 0 < res["test/hits@1"] <= res["test/hits@3"] <= res["test/hits@10"] <= 1

    # the checkpoint alone rebuilds the network (no DataModule, no arguments) and scores the same
    trainer.save_checkpoint(tmp_path / "lp.ckpt")
    loaded = LinkPrediction.load_from_checkpoint(tmp_path / "lp.ckpt", map_location="cpu")
    assert loaded.hparams.model["init_args"]["hidden"] == 32
    model.eval()
    loaded.eval()
    with torch.no_grad():
        tracks = dm.graph.test_tracks
        want = model.genre_scores(model.encode(dm.graph), dm.graph, tracks)
        got = loaded.genre_scores(loaded.encode(dm.graph), dm.graph, tracks)
    torch.testing.assert_close(got, want)
    assert _trainer().test(loaded, dm, verbose=False)[0]["test/acc"] == pytest.approx(res["test/acc"])


def test_checkpoint_features_are_backbone_embeddings(tmp_path):
    import yaml

    from audiognn.checkpoint import load_backbone
    from audiognn.data.shards import read_split_clips
    from audiognn.models.genre_gnn import GenreGNN
    from audiognn.tasks.audio_classifier import AudioClassifier

    clips = [("a", "train", 0, None), ("b", "train", 1, None), ("c", "train", 2, None), ("d", "val", 1, None)]
    _write_shards(tmp_path, ["g0", "g1", "g2"], clips)
    init = {"n_mels": 16, "segment_frames": 4, "hidden": 8, "num_layers": 1}
    module = AudioClassifier(partial(GenreGNN, **init), 3)
    trainer = _trainer(max_steps=1)
    batch = {"x": torch.randn(4, 40, 16), "y": torch.eye(3)[[0, 1, 2, 1]], "key": list("abcd")}
    trainer.fit(module, torch.utils.data.DataLoader([batch], batch_size=None))
    trainer.save_checkpoint(tmp_path / "full.ckpt")
    # a run whose checkpoint does not name its backbone class: it comes from the run's config.yaml, as train.py
    # writes it (runs/NAME/config.yaml beside runs/NAME/checkpoints/)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    ckpt = torch.load(tmp_path / "full.ckpt", weights_only=True)
    ckpt["hyper_parameters"].pop("backbone", None)
    torch.save(ckpt, run / "checkpoints" / "last.ckpt")
    cfg = {
        "model": {
            "init_args": {"backbone": {"class_path": "audiognn.models.genre_gnn.GenreGNN", "init_args": init}}
        }
    }
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    dm = GenreGraphDataModule(
        str(tmp_path), features="checkpoint", checkpoint=str(run / "checkpoints" / "last.ckpt"), k=2
    )
    assert dm.num_node_features == module.backbone.embed_dim
    dm.setup()
    module.eval()
    with torch.no_grad():
        mels = [torch.from_numpy(c["mel"]) for s in ("train", "val") for c in read_split_clips(tmp_path, s)]
        emb = torch.cat([module.backbone.embed(m[None]) for m in mels])  # [4, D]
        # the checkpoint's own hyper-parameters name the class when they can
        if isinstance(torch.load(tmp_path / "full.ckpt", weights_only=True)["hyper_parameters"].get("backbone"),
                      dict):
            bb = load_backbone(tmp_path / "full.ckpt")
            torch.testing.assert_close(torch.cat([bb.embed(m[None]) for m in mels]), emb)
    assert dm.num_node_features == emb.shape[1]
    emb = (emb - emb[:3].mean(0)) / emb[:3].std(0).clamp_min(1e-6)
    torch.testing.assert_close(dm.graph.x, emb, rtol=1e-4, atol=1e-4)
    (run / "config.yaml").unlink()
    with pytest.raises(ValueError, match="backbone"):
        GenreGraphDataModule(
            str(tmp_path), features="checkpoint", checkpoint=str(run / "checkpoints" / "last.ckpt")
        ).setup()


def test_setup_only_reads_the_synthetic_set_that_prepare_data_writes(tmp_path):
    """prepare_data (one process per node) writes the synthetic set; setup (every DDP rank) never does."""
    root = tmp_path / "syn"
    syn = {"train": 16, "val": 8, "test": 8, "difficulty": 0.5, "target_frames": 64, "workers": 1, "shard_size": 8}
    dm = GenreGraphDataModule(str(root), k=3, n_mfcc=10, synthetic=syn)
    # the sizes linked into the model are known before the set exists (synthetic clips carry no artist)
    assert (dm.num_node_features, dm.num_free_nodes, dm.num_classes) == (20, 8, 8)
    with pytest.raises(FileNotFoundError, match="prepare_data"):
        dm.setup()
    assert not (root / "dataset.json").exists()
    dm.prepare_data()
    info = json.loads((root / "dataset.json").read_text())
    assert info["source"]["difficulty"] == 0.5 and info["splits"]["train"]["clips"] == 16
    dm.setup()
    g = dm.graph
    assert (g.num_tracks, g.num_nodes, g.x.shape[1]) == (32, 40, 20)
    assert dm.num_free_nodes == 8 and dm.num_node_features == 20
