"""Filtered ranking and filtered negative sampling against brute force; R-GCN / DistMult shapes."""

import pytest
import torch

from audiognn.linkpred_metrics import (
    filtered_negative_sampling,
    filtered_ranks,
    known_triple_keys,
    ranking_metrics,
    triple_keys,
)
from audiognn.models.rgcn import DistMult, RGCNEncoder


def _tiny_graph():
    # 6 nodes, 2 relations
    train = torch.tensor([[0, 0, 4], [1, 0, 4], [2, 0, 5], [0, 1, 1], [1, 1, 2], [3, 1, 0]])
    test = torch.tensor([[3, 0, 4], [2, 1, 3], [0, 0, 5]])
    return train, test, 6, 2


def _brute_force_rank(score_fn, triple, known, side, N):
    h, r, t = triple
    own = score_fn(h, r, t)
    rank = 1.0
    for c in range(N):
        cand = (c, r, t) if side == "head" else (h, r, c)
        if cand == (h, r, t) or cand in known:
            continue
        s = score_fn(*cand)
        if s > own:
            rank += 1
        elif s == own:
            rank += 0.5
    return rank


@pytest.mark.parametrize("side", ["head", "tail"])
def test_filtered_ranks_equal_brute_force(side):
    train, test, N, R = _tiny_graph()
    known = {tuple(t) for t in torch.cat([train, test]).tolist()}
    keys = known_triple_keys(torch.cat([train, test]), N, R)
    g = torch.Generator().manual_seed(1)
    z = torch.randn(N, 4, generator=g)
    dm = DistMult(R, 4)
    # round scores to create ties on purpose
    z = (z * 2).round() / 2
    with torch.no_grad():
        dm.rel.copy_(torch.randint(-1, 2, (R, 4)).float())
        scores = dm.score_all(z, test, side=side)  # [E, N]
        ranks = filtered_ranks(scores, test, keys, N, R, side=side)

    def score_fn(h, r, t):
        return float((z[h] * dm.rel[r] * z[t]).sum())

    with torch.no_grad():
        expected = [_brute_force_rank(score_fn, tuple(t), known, side, N) for t in test.tolist()]
    assert ranks.tolist() == expected
    m = ranking_metrics(ranks)
    assert m["mrr"].item() == pytest.approx(sum(1 / r for r in expected) / len(expected))
    assert m["hits@1"].item() == pytest.approx(sum(r <= 1 for r in expected) / len(expected))
    assert m["hits@3"].item() == pytest.approx(sum(r <= 3 for r in expected) / len(expected))


def test_filtering_changes_the_rank():
    # tail corruption of (0, 0, 5): node 4 also is a true tail of (0, 0, .) and outscores 5 -> filtered out
    keys = known_triple_keys(torch.tensor([[0, 0, 4], [0, 0, 5]]), 6, 1)
    scores = torch.tensor([[0.0, 0.0, 0.0, 0.0, 9.0, 1.0]])
    ranks = filtered_ranks(scores, torch.tensor([[0, 0, 5]]), keys, 6, 1, "tail")
    assert ranks.tolist() == [1.0]
    unfiltered = filtered_ranks(scores, torch.tensor([[0, 0, 5]]), keys[:0], 6, 1, "tail")
    assert unfiltered.tolist() == [2.0]


def test_filtered_negative_sampling_never_returns_a_true_triple():
    # dense true set: most corruptions are true, so the filter has work to do
    N, R = 8, 2
    g = torch.Generator().manual_seed(0)
    all_triples = torch.cartesian_prod(torch.arange(N), torch.arange(R), torch.arange(N))
    true = all_triples[torch.rand(all_triples.shape[0], generator=g) < 0.7]
    keys = known_triple_keys(true, N, R)
    neg, src = filtered_negative_sampling(true, keys, N, R, num_negatives=5, generator=g)
    assert neg.shape[0] > 0.9 * 5 * true.shape[0]
    assert not torch.isin(triple_keys(neg, N, R), keys).any()
    # each negative differs from its positive in exactly head or tail, with the same relation
    pos = true[src]
    assert torch.equal(neg[:, 1], pos[:, 1])
    diff = (neg[:, [0, 2]] != pos[:, [0, 2]]).sum(1)
    assert (diff == 1).all()
    # both sides get corrupted
    assert (neg[:, 0] != pos[:, 0]).any() and (neg[:, 2] != pos[:, 2]).any()


def test_typed_negative_sampling_stays_in_range_and_drops_impossible():
    # nodes 0-3 tracks, 4-5 genres; track 0 has both genres -> its tail corruptions are impossible
    N, R = 6, 1
    lo = torch.tensor([0, 0, 0, 0, 4, 4])
    hi = torch.tensor([4, 4, 4, 4, 6, 6])
    true = torch.tensor([[0, 0, 4], [0, 0, 5], [1, 0, 4], [2, 0, 5], [3, 0, 4]])
    keys = known_triple_keys(true, N, R)
    g = torch.Generator().manual_seed(0)
    neg, src = filtered_negative_sampling(
        true, keys, N, R, 50, node_lo=lo, node_hi=hi, generator=g, max_tries=20
    )
    assert not torch.isin(triple_keys(neg, N, R), keys).any()
    assert (neg[:, 0] < 4).all() and (neg[:, 2] >= 4).all()
    # tails of track 0 can never be corrupted, heads can: only head corruptions survive for src 0, 1
    first = src <= 1
    assert (neg[first, 2] == true[src[first], 2]).all()


@pytest.mark.parametrize(
    "decomp", [{"num_bases": 3, "num_blocks": None}, {"num_bases": None, "num_blocks": 4}]
)
def test_rgcn_encoder_and_distmult(decomp):
    enc = RGCNEncoder(in_dim=5, num_free_nodes=3, num_relations=2, hidden=8, **decomp)
    dec = DistMult(2, 8)
    x = torch.randn(4, 5)
    ei = torch.tensor([[0, 1, 2, 0], [4, 5, 6, 1]])
    et = torch.tensor([0, 0, 0, 1])
    z = enc(x, ei, et)
    assert z.shape == (7, 8)
    trip = torch.tensor([[0, 0, 4], [1, 1, 2]])
    s = dec(z, trip)
    torch.testing.assert_close(dec.score_all(z, trip, "tail")[torch.arange(2), trip[:, 2]], s)
    torch.testing.assert_close(dec.score_all(z, trip, "head")[torch.arange(2), trip[:, 0]], s)
    s.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in enc.convs.parameters())
    with pytest.raises(ValueError, match="not both"):
        RGCNEncoder(5, 3, 2, num_bases=2, num_blocks=2)
