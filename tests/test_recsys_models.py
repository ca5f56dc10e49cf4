"""Recommender models and the Recommender LightningModule: missing modalities, mutual learning, training."""

import functools
import os

import lightning as L
import numpy as np
import pytest
import torch

from audiognn.checkpoint import load_checkpoint
from audiognn.models.mmgnn import MMGNN, mutual_learning_loss
from audiognn.models.recsys_baselines import BPRMF, NGCF, VBPR, LightGCN, MostPop
from audiognn.tasks.recommender import Recommender
from datamodules.recsys import RecDataModule
from tests.test_recsys_data import LASTFM, planted


def _adam(lr):
    return functools.partial(torch.optim.Adam, lr=lr)


def _dm(data=None, **kw):
    dm = RecDataModule.from_data(data if data is not None else planted(), batch_size=128, eval_batch_size=32, **kw)
    dm.setup()
    return dm


def test_mutual_learning_zero_when_modalities_agree_positive_otherwise():
    a = torch.randn(6, 10)
    assert float(mutual_learning_loss([a, a.clone(), a.clone()])) == pytest.approx(0.0, abs=1e-6)
    b = torch.randn(6, 10)
    pos = mutual_learning_loss([a, b])
    assert float(pos) > 1e-3
    # symmetric, and adding a constant per user does not change a softmax distribution
    assert float(mutual_learning_loss([b, a])) == pytest.approx(float(pos), rel=1e-5)
    assert float(mutual_learning_loss([a, a + 3.0])) == pytest.approx(0.0, abs=1e-5)
    # candidates missing in a modality are excluded: disagreement only there gives zero
    c = a.clone()
    c[:, :3] = 50.0
    valid = [torch.ones(10, dtype=torch.bool), torch.arange(10) >= 3]
    assert float(mutual_learning_loss([a, c], valid)) == pytest.approx(0.0, abs=1e-5)
    assert float(mutual_learning_loss([a, c])) > 1.0


def test_mmgnn_mutual_term_in_model_zero_for_identical_modalities():
    d = planted()
    d.modalities["copy"] = d.modalities["text"]
    dm = _dm(d)
    m = MMGNN(dm.graph, modalities=["text", "copy"], use_id_modality=False, modality_bpr_weight=0)
    m.proj["m_copy"].load_state_dict(m.proj["m_text"].state_dict())
    m.user_emb["m_copy"].load_state_dict(m.user_emb["m_text"].state_dict())
    m.missing["m_copy"].data.copy_(m.missing["m_text"].data)
    u, p, n = next(iter(dm.train_dataloader()))
    assert float(m.aux_losses(m(), u, p, n)["mutual"]) == pytest.approx(0.0, abs=1e-6)
    m2 = MMGNN(dm.graph, modalities=["text", "copy"], use_id_modality=False, modality_bpr_weight=0)
    assert float(m2.aux_losses(m2(), u, p, n)["mutual"]) > 0


def test_missing_modalities_give_finite_embeddings_and_absent_modality_is_dropped():
    d = planted()
    f, _ = d.modalities["text"]
    d.modalities["audio"] = (np.zeros((d.num_items, 5), np.float32), np.zeros(d.num_items, bool))  # absent
    d.modalities["sparse"] = (f, np.arange(d.num_items) < 3)  # present for 3 items only
    dm = _dm(d)
    m = MMGNN(dm.graph)
    assert m.names == ["id", "text", "sparse"]  # "audio" is absent everywhere -> left out
    out = m()
    assert torch.isfinite(out.user).all() and torch.isfinite(out.item).all()
    for name in m.names:
        assert torch.isfinite(out.extra["items"][name]).all()
    # a modality-only model (no ID embeddings) still gives every item, with or without features, a
    # finite and distinct embedding through propagation
    m = MMGNN(dm.graph, modalities=["sparse"])
    out = m()
    assert torch.isfinite(out.item).all() and torch.unique(out.item, dim=0).shape[0] > d.num_items // 2
    with pytest.raises(ValueError, match="lyrics"):
        MMGNN(dm.graph, modalities=["lyrics"])


def _fit(model_fn, dm, epochs, lr=1e-2, **trainer_kw):
    rec = Recommender(model_fn, rec_graph=dm.rec_graph, optimizer=_adam(lr))
    tr = L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False, num_sanity_val_steps=0, check_val_every_n_epoch=epochs,
                   **trainer_kw)
    tr.fit(rec, dm)
    return rec, tr


def test_training_with_a_modality_absent_everywhere_and_all_switches():
    d = planted()
    d.modalities["audio"] = (np.zeros((d.num_items, 5), np.float32), np.zeros(d.num_items, bool))
    dm = _dm(d)
    for kw in ({}, {"use_social": False, "mutual_learning": False, "use_emotion": False,
                    "modalities": ["text"], "user_activation": "identity"}):
        rec, tr = _fit(functools.partial(MMGNN, num_layers=2, **kw), dm, epochs=1)
        assert np.isfinite(float(tr.callback_metrics["train/loss"]))
        assert 0 <= float(tr.callback_metrics["val/recall@20"]) <= 1
        assert ("train/mutual" in tr.callback_metrics) == (not kw)
        assert rec.model.names == (["id", "text"] if not kw else ["text"])


@pytest.mark.parametrize("cls", [MostPop, BPRMF, VBPR, NGCF, LightGCN])
def test_baselines_fit_and_test_with_cold_split(cls):
    dm = _dm(cold_item_fraction=0.1)
    rec, tr = _fit(functools.partial(cls, embedding_dim=16) if cls is not MostPop else cls, dm, epochs=1)
    res = tr.test(rec, dm, verbose=False)
    assert "test/recall@10" in res[0] and "test_cold/recall@10" in res[1]
    assert 0 <= res[0]["test/ndcg@50"] <= 1


def test_mmgnn_unseen_item_ids_zero_leaves_cold_items_to_their_content():
    dm = _dm(cold_item_fraction=0.1)
    m = MMGNN(dm.rec_graph, embedding_dim=8, num_layers=2, unseen_item_ids="zero")
    seen = torch.bincount(dm.rec_graph.train_edge_index[1], minlength=m.num_items) > 0
    assert not bool(seen.all())
    x = m._item_input("id")
    assert bool((x[~seen] == 0).all()) and torch.equal(x[seen], m.item_id.weight[seen])
    m.item_id.weight.data[~seen] += 5.0  # unseen items' ID rows do not reach the output
    before = m().item[~seen]
    m.item_id.weight.data[~seen] -= 5.0
    assert torch.allclose(m().item[~seen], before)
    assert MMGNN(dm.rec_graph, embedding_dim=8).modality_bpr_weight == 4.0  # the default (module docstring)


def test_chunked_evaluation_equals_dense_masked_scores():
    """The Recommender's evaluation (chunked scoring, candidate columns) gives exactly the metrics of its dense
    masked scores (`Recommender.rank_scores`) ranked by the reference `topk_ranked` path."""
    from audiognn.recsys_metrics import TopKMetrics, pairs_to_dense

    dm = _dm(cold_item_fraction=0.1)
    rec, _ = _fit(functools.partial(LightGCN, embedding_dim=16, num_layers=2), dm, epochs=1)
    rec.eval()
    for loader, stage in ((dm.val_dataloader(), "val"), (dm.test_dataloader()[1], "test_cold")):
        ref = TopKMetrics()
        rec._eval_cache = None
        for batch in loader:
            rec._eval_step(batch, stage)
            s = rec.rank_scores(batch)
            ref.update(s, pairs_to_dense(batch["target"], s.shape))
        got = rec.metrics[stage].compute()
        assert int(rec.metrics[stage].users) == int(ref.users) > 0
        assert all(float(got[k]) == float(v) for k, v in ref.compute().items()), stage
        rec._reset(stage)


def test_lightgcn_learns_planted_groups_and_eval_masks_train_items():
    dm = _dm()
    rec, tr = _fit(functools.partial(LightGCN, embedding_dim=16, num_layers=2), dm, epochs=12, lr=5e-2)
    test_loader = dm.test_dataloader()
    for batch in test_loader:  # the test batches mask training and validation items with -inf, nothing else
        s = rec.rank_scores(batch)
        train = torch.zeros_like(s, dtype=torch.bool)
        for r, u in enumerate(batch["users"].tolist()):
            train[r, dm.csr("train")[1][dm.csr("train")[0][u]:dm.csr("train")[0][u + 1]]] = True
            train[r, dm.csr("val")[1][dm.csr("val")[0][u]:dm.csr("val")[0][u + 1]]] = True
        assert torch.isneginf(s[train]).all() and torch.isfinite(s[~train]).all()
    # 12 of a user's 14 items are from its group of 30; the val item is one of 108 unseen candidates:
    # chance recall@10 ~ 0.09, a perfect group model ~ (12/14)(10/18) ~ 0.48
    assert float(tr.callback_metrics["val/recall@10"]) > 0.25


def test_recommender_from_lightning_cli_and_its_checkpoint_alone(tmp_path):
    """train.py links the DataModule's rec_graph into the Recommender; the checkpoint loads without data."""
    from train import cli_main

    d = planted()
    np.savetxt(tmp_path / "inter.csv", np.stack([d.user, d.item], 1), fmt="%d", delimiter=",",
               header="user,item", comments="")
    cli = cli_main(
        ["--model=audiognn.tasks.recommender.Recommender",
         "--model.model=audiognn.models.recsys_baselines.LightGCN", "--model.model.num_layers=2",
         "--data=datamodules.recsys.RecDataModule", "--data.reader=table",
         f"--data.interactions={tmp_path / 'inter.csv'}", "--data.batch_size=256",
         "--trainer.max_epochs=2", "--trainer.logger=false", "--trainer.enable_progress_bar=false",
         f"--trainer.default_root_dir={tmp_path}"], run=False)
    cli.trainer.fit(cli.model, cli.datamodule)
    assert isinstance(cli.model.model, LightGCN) and cli.model.model.num_layers == 2
    assert "val/recall@20" in cli.trainer.callback_metrics
    cli.trainer.save_checkpoint(tmp_path / "cli.ckpt")
    _assert_loads_alone(cli.model, tmp_path / "cli.ckpt")


def _assert_loads_alone(rec, path):
    """``Recommender.load_from_checkpoint(path)`` with no data and no model argument scores like ``rec``."""
    hp = load_checkpoint(path)["hyper_parameters"]  # weights-only load: primitives and containers only
    assert len(str(hp)) < 2000 and not any(isinstance(v, torch.Tensor) for v in hp.values())
    loaded = Recommender.load_from_checkpoint(path, map_location="cpu")
    assert type(loaded.model) is type(rec.model)
    users = torch.arange(rec.model.num_users)
    rec.model.eval()
    rec._eval_cache = None
    assert torch.equal(loaded.eval().score_users(users), rec.score_users(users))
    return loaded


@pytest.mark.parametrize("cls", [MostPop, BPRMF, VBPR, NGCF, LightGCN, MMGNN])
def test_checkpoint_loads_without_datamodule_and_tests_the_same(cls, tmp_path):
    dm = _dm(cold_item_fraction=0.1)
    rec, tr = _fit(functools.partial(cls, embedding_dim=16) if cls is not MostPop else cls, dm, epochs=1)
    tr.save_checkpoint(tmp_path / "m.ckpt")
    before = tr.test(rec, dm, verbose=False)
    loaded = _assert_loads_alone(rec, tmp_path / "m.ckpt")
    after = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False).test(
        loaded, dm, verbose=False)
    assert after == before


@pytest.mark.skipif(not os.path.isdir(LASTFM), reason="Last.fm 2K not available")
def test_short_lightgcn_fit_on_lastfm_improves_recall_over_init():
    dm = RecDataModule(root=LASTFM, use_tags=False, emotion_from_tags=False, batch_size=4096, eval_batch_size=2048)
    rec = Recommender(functools.partial(LightGCN, num_layers=2), rec_graph=dm.rec_graph, optimizer=_adam(1e-2))
    tr = L.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=1)
    before = tr.validate(rec, dm, verbose=False)[0]["val/recall@10"]
    tr.fit(rec, dm)
    after = float(tr.callback_metrics["val/recall@10"])
    assert after > before + 0.05 and after > 0.08


def test_embedding_plots_write_pngs_and_heatmap_shows_planted_groups(tmp_path):
    from callbacks.embedding_plots import EmbeddingPlots, cluster_heatmap, make_plots

    d = planted()
    groups = 4
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((groups, 8)) * 3
    ue = centres[np.arange(d.num_users) % groups] + 0.1 * rng.standard_normal((d.num_users, 8))
    ie = centres[np.arange(d.num_items) % groups] + 0.1 * rng.standard_normal((d.num_items, 8))
    paths = make_plots(ue, ie, d.user, d.item, str(tmp_path), song_clusters=groups, user_clusters=groups,
                       max_songs=100)
    assert all(os.path.getsize(p) > 1000 for p in paths.values())
    # with the planted groups as clusters, each user group interacts mostly with its own song group
    heat = cluster_heatmap(np.arange(d.num_users) % groups, np.arange(d.num_items) % groups, d.user, d.item,
                           groups, groups)
    assert np.allclose(heat.sum(1), 1) and (heat.argmax(1) == np.arange(groups)).all()
    # as a callback after a short fit
    dm = _dm()
    cb = EmbeddingPlots(dirpath=str(tmp_path / "cb"), song_clusters=3, user_clusters=2, max_songs=60,
                        on_test_end=False)
    _fit(functools.partial(LightGCN, embedding_dim=8, num_layers=1), dm, epochs=1, callbacks=[cb])
    assert sorted(os.listdir(tmp_path / "cb")) == ["song_tsne_fit.png", "user_song_heatmap_fit.png"]
