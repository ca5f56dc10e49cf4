"""RecDataModule: readers, leakage-free splits and graph, BPR negatives, modality files."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch_geometric.nn import LGConv

from audiognn.data.modality_file import read_modality, write_modality
from audiognn.graph.sparse_propagation import sym_spmm
from datamodules.recsys import BPRTriples, RecData, RecDataModule, RecGraph, read_table, split_interactions

# ../shared/data beside the repository (as on the developers' machines and in CI)
LASTFM = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "hetrec2011-lastfm-2k")


def planted(num_users=60, num_items=120, groups=4, per_user=14, seed=0, feat_dim=8):
    """Users of group g mostly like items of group g; items carry a noisy group feature ('text')."""
    rng = np.random.default_rng(seed)
    ug = np.arange(num_users) % groups
    ig = np.arange(num_items) % groups
    users, items = [], []
    for u in range(num_users):
        own = np.flatnonzero(ig == ug[u])
        other = np.flatnonzero(ig != ug[u])
        chosen = np.r_[rng.choice(own, per_user - 2, replace=False), rng.choice(other, 2, replace=False)]
        users += [u] * per_user
        items += chosen.tolist()
    feats = np.eye(groups, feat_dim, dtype=np.float32)[ig] + 0.1 * rng.standard_normal((num_items, feat_dim)).astype(np.float32)
    present = rng.random(num_items) < 0.7
    friends = np.array([[u, v] for u in range(num_users) for v in range(num_users)
                        if u < v and ug[u] == ug[v] and rng.random() < 0.2]).T
    social = np.concatenate([friends, friends[::-1]], 1)
    emo = np.eye(4, dtype=np.float32)[ig]
    return RecData(num_users, num_items, np.array(users), np.array(items), np.ones(len(users)), social,
                   {"text": (feats * present[:, None], present)}, (emo, rng.random(num_items) < 0.5))


def pairs(dm, code):
    sel = dm.split == code
    return set(zip(dm.data.user[sel].tolist(), dm.data.item[sel].tolist(), strict=True))


@pytest.mark.parametrize("cold", [0.0, 0.1])
def test_split_and_training_graph_hold_no_eval_edge(cold):
    dm = RecDataModule.from_data(planted(), cold_item_fraction=cold, seed=3)
    dm.setup()
    train, val, test, coldp = (pairs(dm, c) for c in range(4))
    g = set(zip(*dm.graph.train_edge_index.tolist(), strict=True))
    assert g == train
    assert not (g & val) and not (g & test) and not (g & coldp)
    assert len(train) + len(val) + len(test) + len(coldp) == len(dm.data.user)
    # the normalised adjacency's non-zeros are exactly the training edges, both directions
    adj = dm.graph.bipartite_adjacency().to_sparse_coo().coalesce()
    r, c = adj.indices()
    U = dm.data.num_users
    ui = {(int(a), int(b) - U) for a, b in zip(r, c, strict=True) if a < U}
    assert ui == train
    if cold:
        cold_items = set(dm.data.item[dm.split == 3].tolist())
        assert cold_items and not cold_items & set(dm.data.item[dm.split < 3].tolist())
    else:
        # per-user 8:1:1 with RecBole rounding: 14 interactions -> 12 / 1 / 1
        counts = np.stack([np.bincount(dm.data.user[dm.split == c], minlength=U) for c in range(3)])
        assert (counts[:, 0] == [12, 1, 1]).all() and (counts.T == [12, 1, 1]).all()


def test_rec_graph_is_read_on_first_access_and_described_by_sizes_only():
    dm = RecDataModule.from_data(planted(), cold_item_fraction=0.1, seed=3)
    assert dm.data is None
    g = dm.rec_graph  # what train.py's link reads right after instantiating the DataModule
    assert dm.data is not None and g is dm.graph
    desc = g.describe()
    flat = str(desc)
    assert "tensor" not in flat.lower() and len(flat) < 300
    p = RecGraph.placeholder(desc)
    assert p.describe() == desc
    assert p.train_edge_index.shape == g.train_edge_index.shape
    assert p.social_edge_index.shape == g.social_edge_index.shape
    assert p.modalities["text"][0].shape == g.modalities["text"][0].shape
    assert p.emotion[0].shape == g.emotion[0].shape


def batch_pairs(batch, key):
    """(user, item) pairs of an evaluation batch's ``key`` ([2, n] positions in the batch and items)."""
    users = batch["users"].tolist()
    return {(users[r], i) for r, i in batch[key].T.tolist()}


def test_eval_batches_carry_masks_targets_and_cold_candidates():
    dm = RecDataModule.from_data(planted(), cold_item_fraction=0.1, seed=3, eval_batch_size=7)
    dm.setup()
    train, val, test, cold = (pairs(dm, c) for c in range(4))
    cold_items = torch.zeros(dm.data.num_items, dtype=torch.bool)
    cold_items[dm.data.item[dm.split == 3]] = True
    val_loader = dm.val_dataloader()
    test_loader, cold_loader = dm.test_dataloader()
    for loader, target, masked in ((val_loader, val, train), (test_loader, test, train | val),
                                   (cold_loader, cold, train | val)):
        seen = []
        for b in loader:
            users = b["users"].tolist()
            seen += users
            assert batch_pairs(b, "exclude") == {(u, i) for u, i in masked if u in users}
            assert batch_pairs(b, "target") == {(u, i) for u, i in target if u in users}
            assert ("candidates" in b) == (loader is cold_loader)
            if "candidates" in b:
                assert torch.equal(b["candidates"], cold_items)
        assert seen == sorted({u for u, _ in target})


def test_split_is_seeded():
    d = planted()
    assert np.array_equal(split_interactions(d, seed=5), split_interactions(d, seed=5))
    assert not np.array_equal(split_interactions(d, seed=5), split_interactions(d, seed=6))


def test_negatives_never_positives_and_resampled_per_epoch_and_split_across_ranks():
    rng = np.random.default_rng(0)  # dense: 30 of 40 items are positives of each user
    items = np.concatenate([rng.choice(40, 30, replace=False) for _ in range(20)])
    d = RecData(20, 40, np.repeat(np.arange(20), 30), items, np.ones(600))
    pos = set(zip(d.user.tolist(), d.item.tolist(), strict=True))
    ds = BPRTriples(d.user, d.item, d.num_items, batch_size=64, seed=1)
    e0 = [tuple(t.tolist() for t in b) for b in ds]
    assert [tuple(t.tolist() for t in b) for b in ds] == e0  # iterating does not advance the epoch
    ds.set_epoch(1)
    e1 = [tuple(t.tolist() for t in b) for b in ds]
    for epoch in (e0, e1):
        for u, p, n in epoch:
            assert all((a, b) in pos for a, b in zip(u, p, strict=True))
            assert not any((a, b) in pos for a, b in zip(u, n, strict=True))
    assert sorted(x for b in e0 for x in zip(b[0], b[1], strict=True)) == sorted(pos)  # every pair once
    assert e0 != e1  # new permutation and negatives every epoch
    # two ranks: disjoint halves of the same epoch permutation, equal batch counts
    r0 = list(BPRTriples(d.user, d.item, d.num_items, 64, seed=1, rank=0, world_size=2).batches(0))
    r1 = list(BPRTriples(d.user, d.item, d.num_items, 64, seed=1, rank=1, world_size=2).batches(0))
    s0 = {x for b in r0 for x in zip(b[0].tolist(), b[1].tolist(), strict=True)}
    s1 = {x for b in r1 for x in zip(b[0].tolist(), b[1].tolist(), strict=True)}
    assert len(r0) == len(r1) and not s0 & s1 and len(s0) + len(s1) >= len(pos) - 1


def test_sym_spmm_equals_pyg_lgconv_and_its_gradient():
    dm = RecDataModule.from_data(planted())
    dm.setup()
    g = dm.graph
    u, i = g.train_edge_index
    ei = torch.cat([torch.stack([u, i + g.num_users]), torch.stack([i + g.num_users, u])], 1)
    x = torch.randn(g.num_users + g.num_items, 16, requires_grad=True)
    ref = LGConv()(x, ei)
    got = sym_spmm(g.bipartite_adjacency(), x)
    assert torch.allclose(got, ref, atol=1e-5)
    w = torch.randn_like(ref)
    (gr,) = torch.autograd.grad((ref * w).sum(), x)
    (gg,) = torch.autograd.grad((got * w).sum(), x)
    assert torch.allclose(gg, gr, atol=1e-5)


def test_modality_file_roundtrip_and_alignment(tmp_path):
    d = planted(num_items=10, num_users=8, per_user=4)
    d.modalities = {}
    path = os.fspath(tmp_path / "audio.npz")
    # item "3" has two clips (averaged), item "99" is unknown (ignored), items without a key are missing
    write_modality(path, ["3", "3", "5", "99"], np.array([[1, 0], [3, 2], [7, 7], [9, 9]], np.float32))
    keys, emb = read_modality(path)
    assert keys.tolist() == ["3", "3", "5", "99"] and emb.shape == (4, 2)
    dm = RecDataModule.from_data(d, modality_files={"audio": path})
    dm.setup()
    f, present = dm.graph.modalities["audio"]
    assert present.tolist() == [i in (3, 5) for i in range(10)]
    assert f[3].tolist() == [2.0, 1.0] and f[5].tolist() == [7.0, 7.0]
    with pytest.raises(ValueError, match="emb"):
        write_modality(os.fspath(tmp_path / "bad.npz"), ["a"], np.zeros((2, 3)))
    np.savez(tmp_path / "nokeys.npz", emb=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="keys"):
        read_modality(os.fspath(tmp_path / "nokeys.npz"))


def test_table_and_msd_readers(tmp_path):
    (tmp_path / "inter.csv").write_text("user,item,plays\nu1,a,3\nu1,b,1\nu2,a,2\nu2,a,5\n")
    (tmp_path / "soc.csv").write_text("user,friend\nu1,u2\n")
    d = read_table(os.fspath(tmp_path / "inter.csv"), os.fspath(tmp_path / "soc.csv"), weight_col="plays")
    assert (d.num_users, d.num_items, len(d.user)) == (2, 2, 3)
    assert sorted(d.weight.tolist()) == [1.0, 3.0, 7.0]  # duplicate pair aggregated
    assert d.social.shape == (2, 2)
    with pytest.raises(KeyError, match="nope"):
        read_table(os.fspath(tmp_path / "inter.csv"), user_col="nope")
    (tmp_path / "triplets.txt").write_text("u1\tS1\t3\nu2\tS2\t1\nu2\tS1\t4\n")
    dm = RecDataModule(reader="msd", interactions=os.fspath(tmp_path / "triplets.txt"))
    dm.setup()
    assert (dm.data.num_users, dm.data.num_items) == (2, 2)
    # the same table as parquet reads the same
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"user": ["u1", "u1", "u2", "u2"], "item": ["a", "b", "a", "a"],
                             "plays": [3, 1, 2, 5]}), tmp_path / "inter.parquet")
    p = read_table(os.fspath(tmp_path / "inter.parquet"), os.fspath(tmp_path / "soc.csv"), weight_col="plays")
    assert (p.num_users, p.num_items) == (d.num_users, d.num_items)
    assert np.array_equal(p.user, d.user) and np.array_equal(p.item, d.item) and np.array_equal(p.weight, d.weight)
    with pytest.raises(FileNotFoundError, match="x.parquet"):
        read_table(os.fspath(tmp_path / "x.parquet"))


@pytest.mark.skipif(not os.path.isdir(LASTFM), reason="Last.fm 2K not available")
def test_lastfm2k_reader():
    dm = RecDataModule(root=LASTFM, seed=2020)
    dm.setup()
    d = dm.data
    assert (d.num_users, d.num_items, len(d.user)) == (1892, 17632, 92834)
    assert d.social.shape[1] == 25434
    text, present = d.modalities["text"]
    assert text.shape == (17632, 64) and 10000 < present.sum() < 17632 and np.isfinite(text).all()
    assert (np.abs(text[~present]) == 0).all()
    emo, has = d.emotion
    assert emo.shape == (17632, 4) and has.sum() > 1000 and np.allclose(emo[has].sum(1), 1)
    g = set(zip(*dm.graph.train_edge_index.tolist(), strict=True))
    assert not g & (pairs(dm, 1) | pairs(dm, 2))
