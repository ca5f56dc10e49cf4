"""The batched full-ranking evaluator equals a brute-force numpy computation and PyG's LinkPred metrics."""

import numpy as np
import pytest
import torch
from torch_geometric.metrics import LinkPredNDCG, LinkPredPrecision, LinkPredRecall

from audiognn.recsys_metrics import (
    TopKMetrics,
    csr_rows_to_dense,
    evaluate_full_ranking,
    mask_pairs_,
    rank_top_items,
    topk_ranked,
    topk_select,
)

KS = (5, 10, 20, 50)


def brute_force(scores: np.ndarray, targets: np.ndarray, ks=KS) -> dict:
    """Per-user loop: rank by (score desc, item index asc), count hits, ideal DCG over min(K, |T|)."""
    out = {f"{m}@{k}": [] for m in ("precision", "recall", "ndcg") for k in ks}
    for s, t in zip(scores, targets, strict=True):
        n_t = t.sum()
        if n_t == 0:
            continue
        order = np.lexsort((np.arange(len(s)), -s))
        for k in ks:
            top = order[:k]
            rel = t[top].astype(float)
            out[f"precision@{k}"].append(rel.sum() / k)
            out[f"recall@{k}"].append(rel.sum() / n_t)
            dcg = (rel / np.log2(np.arange(2, len(top) + 2))).sum()
            idcg = (1 / np.log2(np.arange(2, min(k, n_t) + 2))).sum()
            out[f"ndcg@{k}"].append(dcg / idcg)
    return {k: float(np.mean(v)) for k, v in out.items()}


def random_case(seed, users=37, items=80, ties=True):
    rng = np.random.default_rng(seed)
    # integer scores -> many ties; some -inf (masked train items); users with 0, 1, few and many targets
    scores = rng.integers(0, 6, (users, items)).astype(np.float32) if ties else rng.standard_normal((users, items))
    scores[rng.random((users, items)) < 0.1] = -np.inf
    n_t = rng.choice([0, 1, 2, 3, 7, 30, 60], users)
    targets = np.zeros((users, items), bool)
    for u in range(users):
        targets[u, rng.choice(items, n_t[u], replace=False)] = True
    targets &= np.isfinite(scores)
    return scores.astype(np.float32), targets


@pytest.mark.parametrize("form", ["dense", "pairs"])
@pytest.mark.parametrize("seed,ties", [(0, True), (1, True), (2, False)])
def test_equals_brute_force(seed, ties, form):
    scores, targets = random_case(seed, ties=ties)
    m = TopKMetrics(KS)
    for b in range(0, len(scores), 10):  # several batches
        t = torch.from_numpy(targets[b:b + 10])
        m.update(torch.from_numpy(scores[b:b + 10]), t if form == "dense" else t.nonzero().T)
    got = {k: float(v) for k, v in m.compute().items()}
    ref = brute_force(scores, targets)
    assert int(m.users) == int((targets.sum(1) > 0).sum())
    for k in ref:
        assert got[k] == pytest.approx(ref[k], abs=1e-6), k


def test_topk_tie_break_is_score_then_index():
    s = torch.tensor([[1.0, 3.0, 3.0, 2.0, 3.0, 0.0]])
    assert topk_ranked(s, 4).tolist() == [[1, 2, 4, 3]]
    assert topk_ranked(s, 2).tolist() == [[1, 2]]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mask_pairs_sets_exactly_the_pairs(seed):
    scores, _ = random_case(seed, ties=seed < 2)
    s = torch.from_numpy(scores)
    masked = torch.from_numpy(scores).clone()
    pairs = torch.tensor([[0, 3, 3], [5, 0, 79]])
    assert torch.isinf(mask_pairs_(masked, pairs)[pairs[0], pairs[1]]).all()
    assert int(torch.isinf(masked).sum()) <= int(torch.isinf(s).sum()) + 3


@pytest.mark.parametrize("seed", [0, 1, 2, 6])
@pytest.mark.parametrize("block", [1, 4, 7, 64])
def test_topk_select_equals_topk_ranked(seed, block):
    """The block-maximum bound keeps every item tied with the k-th: the same items in the same order, with
    many ties, -inf rows and rows with fewer finite scores than k; rows with fewer than k blocks sort all."""
    scores, _ = random_case(seed, ties=seed != 2)
    s = torch.from_numpy(scores)
    if seed == 6:
        s[0] = float("-inf")
        s[1, 5:] = float("-inf")
        s[2] = 1.0  # one value everywhere: the lowest indices win
    for k in (1, 2, 5, 20, 50, 80):
        assert torch.equal(topk_select(s, k, block=block), topk_ranked(s, k)), (k, block)
    assert topk_select(s[:0], 5).shape == (0, 5)


@pytest.mark.parametrize("ties", [True, False])
def test_rank_top_items_in_chunks_equals_masked_dense_ranking(ties):
    """Chunked scoring with excluded pairs (any order, rows without targets skipped, a subset of columns)
    ranks exactly as the dense masked scores; metrics from `update_ranked` equal the dense reference."""
    scores, targets = random_case(7, users=45, items=300, ties=ties)
    s = torch.from_numpy(scores)
    exclude = torch.from_numpy(np.stack(np.nonzero(np.random.default_rng(1).random(scores.shape) < 0.2)))
    exclude = exclude[:, torch.randperm(exclude.shape[1], generator=torch.Generator().manual_seed(0))]
    masked = mask_pairs_(s.clone(), exclude)
    t = torch.from_numpy(targets) & torch.isfinite(masked)
    pairs = t.nonzero().T
    rows = TopKMetrics.target_rows(pairs, len(s))
    assert len(rows) < len(s)
    for chunk in (1, 7, 64):
        top = rank_top_items(lambda r: s[r].clone(), rows, 50, exclude, chunk_rows=chunk)
        assert torch.equal(top, topk_ranked(masked[rows], 50))
        m = TopKMetrics(KS)
        m.update_ranked(top, rows, pairs, s.shape[1])
        ref = brute_force(masked.numpy(), t.numpy())
        assert all(float(v) == pytest.approx(ref[k], abs=1e-6) for k, v in m.compute().items())
    cols = torch.arange(0, 300, 3)  # candidates: every third item; the others ranked below all
    cand = masked.clone()
    cand[:, torch.ones(300, dtype=torch.bool).index_fill_(0, cols, False)] = float("-inf")
    top = rank_top_items(lambda r: s[r][:, cols].clone(), rows, 50, exclude, columns=cols, chunk_rows=5)
    assert torch.equal(top, topk_ranked(cand[rows], 50))


def test_equals_pyg_linkpred():
    scores, targets = random_case(3)
    keep = targets.sum(1) > 0
    s, t = torch.from_numpy(scores[keep]), torch.from_numpy(targets[keep])
    ours = TopKMetrics(KS)
    ours.update(s, t)
    got = ours.compute()
    top = topk_ranked(s, max(KS))
    label_index = t.nonzero().T  # [2, n] (row in batch, item)
    for k in KS:
        for name, cls in (("precision", LinkPredPrecision), ("recall", LinkPredRecall), ("ndcg", LinkPredNDCG)):
            pyg = cls(k)
            pyg.update(top[:, :k], label_index)
            assert float(got[f"{name}@{k}"]) == pytest.approx(float(pyg.compute()), abs=1e-6), (name, k)


def test_csr_rows_and_embedding_evaluator():
    rng = np.random.default_rng(4)
    U, n_items, d = 20, 50, 8
    ue, ie = torch.randn(U, d), torch.randn(n_items, d)
    train = rng.random((U, n_items)) < 0.2
    test = (rng.random((U, n_items)) < 0.1) & ~train

    def csr(mask):
        indptr = torch.from_numpy(np.r_[0, np.cumsum(mask.sum(1))])
        return indptr, torch.from_numpy(np.nonzero(mask)[1])

    users = torch.arange(U)
    assert torch.equal(csr_rows_to_dense(*csr(train), users[[3, 1, 7]], n_items), torch.from_numpy(train[[3, 1, 7]]))
    got = evaluate_full_ranking(ue, ie, users, csr(test), [csr(train)], batch_size=6)
    s = (ue @ ie.T).numpy()
    s[train] = -np.inf
    ref = brute_force(s, test)
    for k in ref:
        assert got[k] == pytest.approx(ref[k], abs=1e-6), k


def test_rank_split_and_sum_reduction_are_exact():
    """Under DDP each rank evaluates users[rank::world] (no padding) and the states are sums: adding two
    ranks' states gives exactly the single-process result."""
    from datamodules.recsys import UserBatches

    scores, targets = random_case(5, users=41)
    users = np.arange(41)
    parts = [np.concatenate([b["users"].numpy() for b in UserBatches(users, 4, rank=r, world_size=3)])
             for r in range(3)]
    assert sorted(np.concatenate(parts).tolist()) == users.tolist()
    full, ranks = TopKMetrics(KS), [TopKMetrics(KS) for _ in parts]
    full.update(torch.from_numpy(scores), torch.from_numpy(targets))
    for m, p in zip(ranks, parts, strict=True):
        m.update(torch.from_numpy(scores[p]), torch.from_numpy(targets[p]))
    merged = TopKMetrics(KS)
    for name in ("precision", "recall", "ndcg", "users"):
        setattr(merged, name, sum(getattr(m, name) for m in ranks))
    a, b = full.compute(), merged.compute()
    assert all(float(a[k]) == pytest.approx(float(b[k]), abs=1e-7) for k in a)
