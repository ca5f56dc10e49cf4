"""Song-embedding plots of Ziaoddini, *Socially Aware Music Recommendation: a Multi-Modal GNN*, Figs. 2-3, for
any `audiognn.tasks.recommender.Recommender` (through its public ``embeddings()``).

Fig. 2: the song embeddings projected to 2-D by t-SNE, coloured by k-means cluster (10 clusters in the
paper), cluster centroids marked with a black "X". Fig. 3: a user-cluster × song-cluster heat map of
interaction strength. What the paper leaves open, and what we chose: k-means on the (L2-normalised) final
embeddings in the model's space (t-SNE is only for display; the centroid marks are the mean t-SNE
position of each cluster's songs); t-SNE on the ``max_songs`` most popular songs (t-SNE is O(n²) in
sklearn's exact mode and slow on 17k points with Barnes-Hut on 2 cores); users clustered the same way
into ``user_clusters`` groups; the heat map cell (a, b) is the mean number of training interactions
between a user of cluster a and songs of cluster b, normalised per row (so rows are comparable; yellow =
highest, as in the paper, with viridis).

PNGs go to ``dirpath`` (default: ``<run directory>/plots``), named
``song_tsne_<stage>.png`` and ``user_song_heatmap_<stage>.png``; with a WandbLogger they are also logged
as images (``plots/song_tsne``, ``plots/user_song_heatmap``). Runs at the end of fit and of test, on rank 0.
"""

from __future__ import annotations

import os

import numpy as np
from lightning import Callback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from callbacks.plotting import plot_dir


def cluster_heatmap(user_labels: np.ndarray, item_labels: np.ndarray, users: np.ndarray, items: np.ndarray,
                    n_user: int, n_item: int) -> np.ndarray:
    """``[n_user, n_item]`` row-normalised mean interactions between user and song clusters."""
    counts = np.zeros((n_user, n_item))
    np.add.at(counts, (user_labels[users], item_labels[items]), 1.0)
    size_u = np.bincount(user_labels, minlength=n_user)[:, None].clip(min=1)
    size_i = np.bincount(item_labels, minlength=n_item)[None, :].clip(min=1)
    mean = counts / (size_u * size_i)
    return mean / mean.sum(1, keepdims=True).clip(min=1e-12)


def make_plots(user_emb: np.ndarray, item_emb: np.ndarray, users: np.ndarray, items: np.ndarray, outdir: str,
               stage: str = "fit", song_clusters: int = 10, user_clusters: int = 5, max_songs: int = 2000,
               seed: int = 0) -> dict[str, str]:
    """Compute clusters and t-SNE and write both PNGs; returns {name: path}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.cluster import KMeans
    from sklearn.manifold import TSNE
    from sklearn.preprocessing import normalize
    from threadpoolctl import threadpool_limits

    os.makedirs(outdir, exist_ok=True)
    with threadpool_limits(limits=1):  # sklearn's OpenMP pool next to torch's oversubscribes 2 cores badly
        return _make_plots(plt, KMeans, TSNE, normalize, user_emb, item_emb, users, items, outdir, stage,
                           song_clusters, user_clusters, max_songs, seed)


def _make_plots(plt, KMeans, TSNE, normalize, user_emb, item_emb, users, items, outdir, stage, song_clusters,
                user_clusters, max_songs, seed):
    k_i = min(song_clusters, len(item_emb))
    k_u = min(user_clusters, len(user_emb))
    item_labels = KMeans(k_i, n_init=4, random_state=seed).fit_predict(normalize(item_emb))
    user_labels = KMeans(k_u, n_init=4, random_state=seed).fit_predict(normalize(user_emb))
    pop = np.bincount(items, minlength=len(item_emb))
    show = np.argsort(-pop, kind="stable")[:max_songs]
    xy = TSNE(2, perplexity=min(30.0, max(2.0, (len(show) - 1) / 3)), init="pca", random_state=seed).fit_transform(
        item_emb[show])
    paths = {}
    fig, ax = plt.subplots(figsize=(7, 6))
    lab = item_labels[show]
    sc = ax.scatter(xy[:, 0], xy[:, 1], c=lab, cmap="tab10", s=6, alpha=0.8)
    for c in np.unique(lab):
        cx, cy = xy[lab == c].mean(0)
        ax.scatter([cx], [cy], marker="X", c="black", s=120)
    ax.set_title(f"Song embeddings (t-SNE, {len(show)} most played songs), {k_i} k-means clusters")
    fig.colorbar(sc, ax=ax, label="song cluster")
    paths["song_tsne"] = os.path.join(outdir, f"song_tsne_{stage}.png")
    fig.savefig(paths["song_tsne"], dpi=110, bbox_inches="tight")
    plt.close(fig)
    heat = cluster_heatmap(user_labels, item_labels, users, items, k_u, k_i)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    im = ax.imshow(heat, cmap="viridis", aspect="auto")
    ax.set_xlabel("song cluster")
    ax.set_ylabel("user cluster")
    ax.set_xticks(range(k_i))
    ax.set_yticks(range(k_u))
    ax.set_title("User-cluster × song-cluster interaction strength (row-normalised)")
    fig.colorbar(im, ax=ax)
    paths["user_song_heatmap"] = os.path.join(outdir, f"user_song_heatmap_{stage}.png")
    fig.savefig(paths["user_song_heatmap"], dpi=110, bbox_inches="tight")
    plt.close(fig)
    return paths


class EmbeddingPlots(Callback):
    """Writes the song t-SNE and the user × song cluster heat map (see the module docstring) at the end of fit
    and/or test.

    Args:
        dirpath: output directory. (default: ``None``: ``<run directory>/plots``)
        song_clusters: k-means clusters of songs (the paper's Fig. 2: 10). (default: ``10``)
        user_clusters: k-means clusters of users. (default: ``5``)
        max_songs: most played songs shown by t-SNE. (default: ``2000``)
        on_fit_end, on_test_end: when to plot. (default: both)
        seed: k-means and t-SNE seed. (default: ``0``)
    """

    def __init__(self, dirpath: str | None = None, song_clusters: int = 10, user_clusters: int = 5,
                 max_songs: int = 2000, on_fit_end: bool = True, on_test_end: bool = True, seed: int = 0):
        self.dirpath, self.song_clusters, self.user_clusters = dirpath, song_clusters, user_clusters
        self.max_songs, self.fit_end, self.test_end, self.seed = max_songs, on_fit_end, on_test_end, seed
        self.last_paths: dict[str, str] = {}

    @rank_zero_only
    def _run(self, trainer, pl_module, stage: str) -> None:
        emb = pl_module.embeddings()  # Recommender.embeddings: user [U, d], item [I, d], training pairs [2, E]
        users, items = emb.interactions.cpu().numpy()
        outdir = str(plot_dir(trainer, self.dirpath))  # not trainer.log_dir: a collective call, asked on rank 0 only
        self.last_paths = make_plots(emb.user.float().cpu().numpy(), emb.item.float().cpu().numpy(), users, items,
                                     outdir, stage, self.song_clusters, self.user_clusters, self.max_songs, self.seed)
        for lg in trainer.loggers:
            if isinstance(lg, WandbLogger):
                for name, path in self.last_paths.items():
                    lg.log_image(key=f"plots/{name}", images=[path])

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.fit_end:
            self._run(trainer, pl_module, "fit")

    def on_test_end(self, trainer, pl_module) -> None:
        if self.test_end:
            self._run(trainer, pl_module, "test")
