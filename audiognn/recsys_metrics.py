"""Full-ranking top-K evaluation for recommendation: Precision, Recall and NDCG at K.

Protocol (as LightGCN, MMRec and RecBole's full sort): every item is scored for each evaluated user; the
user's training items (and validation items at test time) rank below every other item (-inf); only users with
at least one target item are counted; Precision@K = hits/K, Recall@K = hits/|targets|,
NDCG@K = DCG/IDCG with the ideal DCG over min(K, |targets|) (never over the predicted list).

Ties are broken deterministically: higher score first, then lower item index (`topk_ranked`), so a
brute-force reference (``np.lexsort``) reproduces the ranking exactly.

Speed. The evaluation never builds a ``[users, items]`` matrix: `rank_top_items` scores ``chunk_rows`` users
at a time (a ``[chunk, I]`` block that stays in the core's cache), sets the excluded (row, item) pairs to -inf
in place and selects the top K with `topk_select`: the K-th largest of the row's block maxima (blocks of
``BLOCK`` items) is a lower bound of the row's K-th largest score, so only the few items at or above it are
sorted (one stable sort: score descending, item index ascending). The hits are looked up in the sorted
(row, item) target pairs. On the CPU the chunks are ranked by ``torch.get_num_threads()`` Python threads with
one torch thread each (torch ops release the GIL): a chunk's ops are small, and with OpenMP threads each op
ends in a barrier where, on a CPU shared with other processes, the threads wait for each other (2 OpenMP
threads took 30x longer than 1 under a load average of 6 on 2 cores; the pool is never slower than 1
thread). Nothing is approximated: `topk_select` returns exactly `topk_ranked`'s items in
its order, and `tests/test_recsys_metrics.py` checks both against a brute-force numpy loop.
``bench/recsys_lastfm.py --eval-speed`` times it against the former evaluator (dense ``[B, I]`` masks and
targets, `topk_ranked` on every row) and prints where the time goes.

Why not PyG's LinkPred metrics directly: they take a top-k index matrix and search the targets with one
``searchsorted`` per metric object; P/R/NDCG at four K from one top-50 selection is simpler and as fast.
States are sums with ``dist_reduce_fx="sum"`` and every user lives on exactly one rank
(``datamodules.recsys.UserBatches``), so the DDP reduction is exact.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch
from torchmetrics import Metric

from audiognn.data.recgraph import csr_row_pairs

BLOCK = 32  # items per block of `topk_select`'s bound (32: fastest of 8-128 on Last.fm 2K)
CHUNK_ROWS = 128  # users scored at once by `rank_top_items`: 128 x 17,632 float32 = 9 MB (fastest of 16-4096 on 2 idle cores)


def topk_ranked(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices ``[B, k]`` of the top-k items per row, ordered by (score desc, item index asc).

    ``torch.topk`` does not specify which of several tied items it returns; this selects exactly the
    items above the k-th value plus the lowest-indexed items equal to it, then sorts them stably.
    """
    b, n = scores.shape
    k = min(k, n)
    kth = scores.topk(k, dim=1).values[:, -1:]  # [B, 1] k-th largest value
    above = scores > kth  # [B, I]
    tied = scores == kth
    need = k - above.sum(1, keepdim=True)  # [B, 1] tied items still to take
    sel = above | tied
    amb = (tied.sum(1, keepdim=True) > need).squeeze(1)  # [B] rows where ties straddle the k-th place
    if amb.any():  # only those rows pay for the cumulative count (rare with real-valued scores)
        t = tied[amb]
        sel[amb] = above[amb] | (t & (t.cumsum(1, dtype=torch.int32) <= need[amb]))  # exactly k per row
    idx = sel.nonzero()[:, 1].view(b, k)  # ascending item index within each row
    order = scores.gather(1, idx).sort(dim=1, descending=True, stable=True).indices
    return idx.gather(1, order)


def topk_select(scores: torch.Tensor, k: int, block: int = BLOCK) -> torch.Tensor:
    """`topk_ranked` (indices ``[B, k]``, score descending then item index ascending) by a bound and one small
    sort. t = the k-th largest of the row's block maxima (blocks of ``block`` columns): k blocks hold an item
    >= t, so the row's k-th largest score is >= t, and so is every item tied with it. Only the blocks whose
    maximum is >= t (about k of them) are read again; their items >= t (a few more than k), in column order,
    are stable-sorted by descending score. Rows with fewer than k blocks sort the whole row."""
    b, n = scores.shape
    k = min(k, n)
    g = n // block
    dev = scores.device
    if k == 0:
        return torch.zeros(b, 0, dtype=torch.long, device=dev)
    if g < k or b == 0:
        return scores.sort(dim=1, descending=True, stable=True).indices[:, :k]
    full = scores[:, : g * block].reshape(b, g, block)  # a view when the rows are contiguous
    bm = full.amax(2)  # [B, g] block maxima
    tail = scores[:, g * block:]  # [B, n - g·block] the last, partial block
    if tail.shape[1]:
        bm = torch.cat([bm, tail.amax(1, keepdim=True)], 1)
    t = bm.topk(k, dim=1, sorted=False).values.amin(1, keepdim=True)  # [B, 1] <= the row's k-th largest score
    brow, blk = (bm[:, :g] >= t).nonzero(as_tuple=True)  # [P] the blocks to read (rows, then blocks ascending)
    cand = full[brow, blk]  # [P, block]
    p, j = (cand >= t[brow]).nonzero(as_tuple=True)
    rows, cols = brow[p], blk[p] * block + j  # ascending column within each row
    if tail.shape[1]:
        tr, tc = (tail >= t).nonzero(as_tuple=True)
        if len(tr):  # merged in (row, column) order
            key = torch.cat([rows * n + cols, tr * n + (tc + g * block)]).sort().values
            rows, cols = key // n, key % n
    counts = torch.bincount(rows, minlength=b)  # [B], each >= k
    pos = torch.arange(len(rows), device=dev) - (counts.cumsum(0) - counts)[rows]
    vals = scores.new_full((b, int(counts.max())), float("-inf"))
    vals[rows, pos] = scores[rows, cols]
    idx = torch.full(vals.shape, n, dtype=torch.long, device=dev)  # padding after every real item
    idx[rows, pos] = cols
    order = vals.sort(dim=1, descending=True, stable=True).indices[:, :k]
    return idx.gather(1, order)


def mask_pairs_(scores: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """Set ``scores`` ``[B, I]`` to -inf in place at the (row, item) ``pairs`` ``[2, n]`` (no dense mask)."""
    scores.index_put_((pairs[0], pairs[1]), scores.new_tensor(float("-inf")))
    return scores


def rank_top_items(score_rows: Callable[[torch.Tensor], torch.Tensor], rows: torch.Tensor, k: int,
                   exclude: torch.Tensor | None = None, columns: torch.Tensor | None = None,
                   chunk_rows: int | None = None, workers: int | None = None) -> torch.Tensor:
    """Top-``k`` items ``[R, k]`` (`topk_ranked` order) of the batch rows ``rows`` ``[R]``, ``chunk_rows`` at a time.

    Args:
        score_rows: batch rows ``[b]`` -> float scores ``[b, C]`` over the ``C`` scored columns, which
            `rank_top_items` overwrites (a fresh tensor, or a buffer of the calling thread).
        rows (torch.Tensor): the batch rows to rank (ascending).
        k (int): list length (at most ``C``).
        exclude (torch.Tensor, optional): ``[2, n]`` (batch row, item) pairs ranked below every other item.
        columns (torch.Tensor, optional): the ascending item ids of the ``C`` columns when ``score_rows``
            scores a subset of the items (candidates); the result holds item ids. (default: ``None``: all)
        chunk_rows (int, optional): rows scored at once. (default: ``None``: ``CHUNK_ROWS`` on the CPU, 1024 on
            an accelerator, where larger blocks keep it busy)
        workers (int, optional): chunks ranked in parallel on the CPU, each with one torch thread (torch's
            thread count is restored afterwards). (default: ``None``: ``torch.get_num_threads()``)
    """
    dev = rows.device
    chunk_rows = chunk_rows or (CHUNK_ROWS if dev.type == "cpu" else 1024)
    ex = _exclusions_by_position(rows, exclude, columns)  # (positions in rows ascending, columns) or None
    bounds = None if ex is None else torch.searchsorted(
        ex[0], torch.arange(0, len(rows) + chunk_rows, chunk_rows, device=dev)).tolist()

    def chunk(j: int) -> torch.Tensor:  # [b, k] top items of the j-th chunk of rows
        r0 = j * chunk_rows
        s = score_rows(rows[r0:r0 + chunk_rows])  # [b, C]
        if bounds is not None and bounds[j + 1] > bounds[j]:
            a, e = bounds[j], bounds[j + 1]
            s.index_put_((ex[0][a:e] - r0, ex[1][a:e]), s.new_tensor(float("-inf")))
        return topk_select(s, k)

    n_chunks = -(-len(rows) // chunk_rows)
    workers = min(torch.get_num_threads() if workers is None else workers, n_chunks)
    if workers <= 1 or dev.type != "cpu":
        tops = [chunk(j) for j in range(n_chunks)]
    else:  # chunks in parallel, each single-threaded: no OpenMP barrier per small op (see the module docstring)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(workers) as pool:
                tops = list(pool.map(chunk, range(n_chunks)))
        finally:
            torch.set_num_threads(threads)
    top = torch.cat(tops) if tops else torch.zeros(0, k, dtype=torch.long, device=dev)
    return top if columns is None else columns[top]


def _exclusions_by_position(rows: torch.Tensor, exclude: torch.Tensor | None, columns: torch.Tensor | None):
    """The (batch row, item) ``exclude`` pairs as (position in ``rows``, scored column), sorted by position;
    pairs of other rows or of unscored items dropped; None when none is left."""
    if exclude is None or exclude.numel() == 0 or len(rows) == 0:
        return None
    dev = rows.device
    ex_row, ex_col = exclude[0], exclude[1]
    if columns is not None:  # items outside the scored columns need no mask
        col_of = torch.full((max(int(ex_col.max()), int(columns.max()) if len(columns) else 0) + 1,), -1,
                            dtype=torch.long, device=dev)
        col_of[columns] = torch.arange(len(columns), device=dev)
        ex_col = col_of[ex_col]
    pos_of_row = torch.full((max(int(rows.max()), int(ex_row.max())) + 1,), -1, dtype=torch.long, device=dev)
    pos_of_row[rows] = torch.arange(len(rows), device=dev)
    p = pos_of_row[ex_row]
    ok = (p >= 0) & (ex_col >= 0)
    if not bool(ok.any()):
        return None
    p, ex_col = p[ok], ex_col[ok]
    order = torch.argsort(p, stable=True)
    return p[order], ex_col[order]


class TopKMetrics(Metric):
    """P/R/NDCG@K for K in ``ks``: ``update(scores [B, I] masked, targets)`` or ``update_ranked(top, rows,
    targets, num_items)``; ``compute()`` returns ``{"precision@K", "recall@K", "ndcg@K"}`` averaged over users
    with targets.

    ``targets`` is a dense bool mask ``[B, I]`` (ranked with `topk_ranked`: the reference) or int64 (batch row,
    item) pairs ``[2, n]`` (ranked with `topk_select`, hits looked up in the sorted pairs); both give the same
    values (the tests check it). `update_ranked` takes the top items already selected (`rank_top_items`)."""

    full_state_update = False

    def __init__(self, ks: Sequence[int] = (5, 10, 20, 50)):
        super().__init__()
        self.ks = sorted(int(k) for k in ks)
        nk = len(self.ks)
        for name in ("precision", "recall", "ndcg"):
            self.add_state(name, torch.zeros(nk, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("users", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def kmax(self, num_items: int) -> int:
        """Length of the ranked list the metrics read: the largest K, at most the number of items."""
        return min(self.ks[-1], num_items)

    def update(self, scores: torch.Tensor | None, targets: torch.Tensor, top: torch.Tensor | None = None,
               rows: torch.Tensor | None = None, num_items: int | None = None) -> None:
        """``scores`` ``[B, I]`` (masked) and ``targets`` (``[B, I]`` bool or ``[2, n]`` pairs); or, with
        ``scores=None``, the ranked lists ``top`` of the batch rows ``rows`` (see `update_ranked`)."""
        if top is not None:
            return self._update_ranked(top, rows, targets, num_items)
        kmax = self.kmax(scores.shape[1])
        if targets.dtype == torch.bool:
            n_t = targets.sum(1)  # [B]
            keep = n_t > 0
            scores, targets, n_t = scores[keep], targets[keep], n_t[keep].double()
            if scores.shape[0] == 0:
                return None
            return self._accumulate(targets.gather(1, topk_ranked(scores, kmax)).double(), n_t, kmax)
        rows = self.target_rows(targets, scores.shape[0])
        if len(rows):
            top = topk_select(scores if len(rows) == scores.shape[0] else scores[rows], kmax)
            self._update_ranked(top, rows, targets, scores.shape[1])
        return None

    def update_ranked(self, top: torch.Tensor, rows: torch.Tensor, targets: torch.Tensor, num_items: int) -> None:
        """``top`` ``[R, k']`` the ranked item ids of the batch rows ``rows`` ``[R]`` (each with targets;
        k' <= `kmax`: a shorter list, e.g. over fewer candidates, has no hits beyond its end), ``targets``
        ``[2, n]`` (batch row, item) pairs, ``num_items`` the number of items (the cut-offs' bound)."""
        self.update(None, targets, top=top, rows=rows, num_items=num_items)  # through torchmetrics' update

    @staticmethod
    def target_rows(targets: torch.Tensor, num_rows: int) -> torch.Tensor:
        """The batch rows ``[R]`` (ascending) that have at least one of the target pairs ``[2, n]``."""
        return (torch.bincount(targets[0], minlength=num_rows) > 0).nonzero().squeeze(1)

    def _update_ranked(self, top: torch.Tensor, rows: torch.Tensor, targets: torch.Tensor, num_items: int) -> None:
        if len(rows) == 0:
            return
        kmax = self.kmax(num_items)
        keys = torch.sort(targets[0] * num_items + targets[1]).values  # [n]
        q = rows[:, None] * num_items + top
        at = torch.searchsorted(keys, q).clamp(max=len(keys) - 1)
        hit = (keys[at] == q).double()  # [R, k']
        if hit.shape[1] < kmax:
            hit = torch.cat([hit, hit.new_zeros(len(rows), kmax - hit.shape[1])], 1)
        n_t = torch.bincount(targets[0], minlength=int(rows.max()) + 1)[rows].double()
        self._accumulate(hit, n_t, kmax)

    def _accumulate(self, hit: torch.Tensor, n_t: torch.Tensor, kmax: int) -> None:  # [R, kmax], [R]
        disc = 1.0 / torch.log2(torch.arange(2, kmax + 2, device=hit.device, dtype=torch.float64))  # [Kmax]
        cum_hits = hit.cumsum(1)
        cum_dcg = (hit * disc).cumsum(1)
        cum_idcg = disc.cumsum(0)
        for j, k in enumerate(self.ks):
            kk = min(k, kmax)
            h = cum_hits[:, kk - 1]
            self.precision[j] += (h / k).sum()
            self.recall[j] += (h / n_t).sum()
            ideal = cum_idcg[(n_t.long().clamp(max=kk) - 1)]
            self.ndcg[j] += (cum_dcg[:, kk - 1] / ideal).sum()
        self.users += len(n_t)

    def compute(self) -> dict[str, torch.Tensor]:
        n = self.users.clamp(min=1).double()
        out = {}
        for j, k in enumerate(self.ks):
            out[f"precision@{k}"] = (self.precision[j] / n).float()
            out[f"recall@{k}"] = (self.recall[j] / n).float()
            out[f"ndcg@{k}"] = (self.ndcg[j] / n).float()
        return out


def pairs_to_dense(pairs: torch.Tensor, shape) -> torch.Tensor:
    """Dense bool mask of ``shape`` ``[B, num_cols]``, True at the (row, column) ``pairs`` ``[2, n]``."""
    out = torch.zeros(tuple(shape), dtype=torch.bool, device=pairs.device)
    out[pairs[0], pairs[1]] = True
    return out


def csr_rows_to_dense(indptr: torch.Tensor, indices: torch.Tensor, rows: torch.Tensor, num_cols: int) -> torch.Tensor:
    """Dense ``[B, num_cols]`` bool mask of the CSR rows ``rows`` ``[B]``."""
    return pairs_to_dense(csr_row_pairs(indptr, indices, rows), (len(rows), num_cols))


@torch.no_grad()
def evaluate_full_ranking(user_emb: torch.Tensor, item_emb: torch.Tensor, users: torch.Tensor,
                          targets: tuple[torch.Tensor, torch.Tensor], masks: Sequence[tuple[torch.Tensor, torch.Tensor]],
                          ks: Sequence[int] = (5, 10, 20, 50), batch_size: int = 4096,
                          chunk_rows: int = CHUNK_ROWS) -> dict[str, float]:
    """Evaluator over embeddings (bench and scripts): scores = user_emb @ item_emb.T, the ``masks`` (CSR:
    train, and val at test time) set to -inf at their pairs, targets as CSR pairs; ``batch_size`` users'
    pairs at a time, ranked ``chunk_rows`` users at a time (`rank_top_items`)."""
    metric = TopKMetrics(ks)
    item_t = item_emb.T.contiguous()  # [d, I]
    num_items = item_emb.shape[0]
    kmax = metric.kmax(num_items)
    scratch = threading.local()  # one [chunk_rows, I] score buffer per worker thread: no page faults per chunk

    def scores(u: torch.Tensor) -> torch.Tensor:
        buf = getattr(scratch, "buf", None)
        if buf is None:
            buf = scratch.buf = item_t.new_empty(chunk_rows, num_items)
        return torch.matmul(user_emb[u], item_t, out=buf[: len(u)])

    for b in range(0, len(users), batch_size):
        u = users[b:b + batch_size]
        tgt = csr_row_pairs(*targets, u)
        rows = metric.target_rows(tgt, len(u))
        exclude = torch.cat([csr_row_pairs(*m, u) for m in masks], 1) if masks else None
        top = rank_top_items(lambda r, u=u: scores(u[r]), rows, kmax, exclude, chunk_rows=chunk_rows)
        metric.update_ranked(top, rows, tgt, num_items)
    return {k: float(v) for k, v in metric.compute().items()}
