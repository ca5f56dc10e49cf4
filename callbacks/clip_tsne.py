"""t-SNE of clip embeddings for audio runs (what ``callbacks.embedding_plots`` draws for the recommender).

``ClipEmbeddingTSNE`` embeds up to ``max_clips`` validation clips per epoch (and test clips) with the module's
backbone (``backbone.embed(x)``: any :class:`~audiognn.models.base.AudioBackbone`, on the batch as the step
saw it: normalised on the device), projects them to 2-D with t-SNE and colours them by class (multi-label
clips by their first label). The validation image is drawn once, at the end of fit, from the last validation
epoch; the test image at the end of test. PNGs: ``<run directory>/plots/clip_tsne_{val,test}.png``; with a
WandbLogger also ``<stage>/clip_tsne``. Under DDP rank 0 plots its own share of the clips. Costs one extra
``embed`` of at most ``max_clips`` clips per validation epoch.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from audiognn.models.base import AudioBackbone
from callbacks.plotting import plot_dir, publish, pyplot


def tsne_2d(emb: np.ndarray, seed: int = 0) -> np.ndarray:
    """``[N, D] -> [N, 2]`` t-SNE (PCA init, perplexity ≤ 30 scaled to small N), one thread."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):  # sklearn's OpenMP pool next to torch's oversubscribes small machines
        return TSNE(2, perplexity=min(30.0, max(2.0, (len(emb) - 1) / 3)), init="pca",
                    random_state=seed).fit_transform(emb)


def plot_clip_tsne(xy: np.ndarray, labels: np.ndarray, names: list[str], title: str):
    """Scatter of ``xy [N, 2]`` coloured by ``labels [N]`` (a legend up to 20 classes); returns the figure."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 6))
    cmap = plt.get_cmap("tab20" if len(names) > 10 else "tab10")
    for c in np.unique(labels):
        m = labels == c
        ax.scatter(xy[m, 0], xy[m, 1], s=8, alpha=0.8, color=cmap(int(c) % cmap.N), label=names[int(c)])
    if len(np.unique(labels)) <= 20:
        ax.legend(fontsize=7, markerscale=2, loc="best")
    ax.set(title=title, xticks=[], yticks=[])
    return fig


class ClipEmbeddingTSNE(Callback):
    """t-SNE images of clip embeddings (see the module docstring).

    Args:
        dirpath: where the PNGs go. (default: ``None``: ``<run directory>/plots``)
        max_clips: clips embedded per epoch and stage. (default: ``500``)
        seed: t-SNE seed. (default: ``0``)
    The latest ``(embeddings [N, D], labels [N])`` of each stage is kept in ``self.clips[stage]``.
    """

    def __init__(self, dirpath: str | None = None, max_clips: int = 500, seed: int = 0):
        super().__init__()
        self.dirpath, self.max_clips, self.seed = dirpath, max_clips, seed
        self.clips: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._emb: dict[str, list[torch.Tensor]] = {}
        self._lab: dict[str, list[torch.Tensor]] = {}

    def _start(self, stage: str) -> None:
        self._emb[stage], self._lab[stage] = [], []

    def _update(self, trainer, pl_module, outputs, batch, stage: str) -> None:
        backbone = getattr(pl_module, "backbone", None)
        if (trainer.sanity_checking or not isinstance(backbone, AudioBackbone) or stage not in self._emb
                or not isinstance(batch, Mapping) or "x" not in batch):
            return
        room = self.max_clips - sum(len(e) for e in self._emb[stage])
        if room <= 0:
            return
        x = batch["x"][:room]
        crop = pl_module.hparams.get("eval_crop_frames")
        if crop and x.shape[1] > crop:  # whole clips scored by crops: embed the first crop
            x = x[:, :crop]
        with torch.no_grad():
            self._emb[stage].append(backbone.embed(x).detach().float().cpu())
        target = outputs["target"] if isinstance(outputs, Mapping) and "target" in outputs else batch["y"]
        target = target[:room].detach().cpu()
        self._lab[stage].append(target.float().argmax(-1) if target.dim() == 2 else target.long())

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._start("val")

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self._start("test")

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._update(trainer, pl_module, outputs, batch, "val")

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._update(trainer, pl_module, outputs, batch, "test")

    def _collect(self, stage: str) -> None:
        emb, lab = self._emb.pop(stage, []), self._lab.pop(stage, [])
        if emb:
            self.clips[stage] = (torch.cat(emb).numpy(), torch.cat(lab).numpy())

    def _plot(self, trainer, pl_module, stage: str) -> None:
        if stage not in self.clips or not trainer.is_global_zero or len(self.clips[stage][0]) < 5:
            return
        emb, labels = self.clips[stage]
        names = list(getattr(pl_module, "class_names", None) or map(str, range(int(labels.max()) + 1)))
        fig = plot_clip_tsne(tsne_2d(emb, self.seed), labels, names,
                             f"{type(pl_module.backbone).__name__} clip embeddings ({stage}, {len(emb)} clips)")
        publish(fig, trainer, f"{stage}/clip_tsne", plot_dir(trainer, self.dirpath) / f"clip_tsne_{stage}.png")

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._collect("val")

    def on_fit_end(self, trainer, pl_module) -> None:
        self._plot(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._collect("test")
        self._plot(trainer, pl_module, "test")
