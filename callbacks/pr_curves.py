"""Precision-recall curves and a per-class AP chart for multi-label runs (audio tagging: AudioSet, FSD50K).

``PRCurvePlot`` accumulates torchmetrics' binned ``MultilabelPrecisionRecallCurve`` over the validation (every
``every_n_epochs``-th epoch) and test batches -- synchronised over DDP ranks, constant memory whatever the
number of clips -- and at the end of the epoch draws two images: the per-class PR curves (every class thin, the
``highlight`` best and worst by AP labelled) and the per-class average precision as sorted horizontal bars
(all classes up to ``max_bars``, else the best and worst halves). Each goes to ``<run directory>/plots/
{pr_curves,per_class_ap}_<stage>[_epochNN].png`` and, with a WandbLogger, to ``<stage>/pr_curves`` and
``<stage>/per_class_ap``. AP here is computed from the binned curve (``thresholds`` levels), which is close to
the exact per-class AP the task logs as ``test/AP/<class>``. Multi-class runs (``pl_module.multilabel`` false)
are skipped: they get confusion matrices.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torchmetrics.classification import MultilabelPrecisionRecallCurve

from callbacks.plotting import epoch_suffix, plot_dir, publish, pyplot


def binned_average_precision(precision: torch.Tensor, recall: torch.Tensor) -> torch.Tensor:
    """``[C]`` AP from binned curves ``[C, T+1]`` (recall decreasing along T): Σ (R_t − R_{t+1}) P_t; NaN for
    a class without positives. (A threshold above every score has an undefined precision; recall does not
    change there, so it adds nothing.)"""
    return -(torch.diff(recall, dim=1) * precision[:, :-1].nan_to_num(0.0)).sum(1)


def plot_pr_curves(precision, recall, ap, names: list[str], title: str, highlight: int = 5):
    """The per-class PR curves, the ``highlight`` best and worst classes by AP labelled; returns the figure."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 6))
    order = [c for c in np.argsort(-ap) if np.isfinite(ap[c])]  # classes with positives
    marked = set(order[:highlight]) | set(order[-highlight:])
    for c in order:
        if c not in marked:
            ax.plot(recall[c], precision[c], color="0.8", lw=0.6)
    for c in order:
        if c in marked:
            ax.plot(recall[c], precision[c], lw=1.5, label=f"{names[c]} (AP {ap[c]:.2f})")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
           title=f"{title}: mAP {np.mean(ap[order]) if order else float('nan'):.3f} over {len(order)} classes")
    ax.legend(fontsize=7, loc="lower left")
    return fig


def plot_per_class_ap(ap, names: list[str], title: str, max_bars: int = 60):
    """Horizontal bars of the per-class AP of the classes with positives, sorted (the best and worst
    ``max_bars // 2`` when there are more)."""
    plt = pyplot()
    order = np.array([c for c in np.argsort(-ap) if np.isfinite(ap[c])], dtype=int)  # classes with positives
    if len(order) > max_bars:
        order = np.concatenate([order[: max_bars // 2], order[-(max_bars // 2):]])
    fig, ax = plt.subplots(figsize=(7, max(3.0, 0.2 * len(order) + 1)))
    ax.barh(range(len(order)), ap[order], color="tab:blue")
    ax.set_yticks(range(len(order)), [names[c] for c in order], fontsize=7)
    ax.invert_yaxis()
    ax.set(xlim=(0, 1), xlabel="average precision",
           title=f"{title}: per-class AP" + (f" (best and worst {max_bars // 2})" if len(order) == max_bars else ""))
    return fig


class PRCurvePlot(Callback):
    """PR curves and per-class AP images for multi-label runs (see the module docstring).

    Args:
        dirpath: where the PNGs go. (default: ``None``: ``<run directory>/plots``)
        every_n_epochs: validation epochs between images (and the last epoch; test: always). (default: ``5``)
        thresholds: score levels of the binned curves. (default: ``200``)
        highlight: best and worst classes labelled on the curves. (default: ``5``)
        max_bars: classes shown in the AP chart. (default: ``60``)
    The latest ``(precision [C, T+1], recall [C, T+1], ap [C])`` of each stage is kept in ``self.curves[stage]``.
    """

    def __init__(self, dirpath: str | None = None, every_n_epochs: int = 5, thresholds: int = 200,
                 highlight: int = 5, max_bars: int = 60):
        super().__init__()
        self.dirpath, self.every_n_epochs, self.thresholds = dirpath, every_n_epochs, thresholds
        self.highlight, self.max_bars = highlight, max_bars
        self.curves: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self._metric: dict[str, MultilabelPrecisionRecallCurve] = {}

    def _active(self, trainer, pl_module, stage: str) -> bool:
        if trainer.sanity_checking or not getattr(pl_module, "multilabel", False):
            return False
        epoch = trainer.current_epoch + 1  # every n-th validation epoch and the last one
        return stage == "test" or epoch % self.every_n_epochs == 0 or epoch == trainer.max_epochs

    def _update(self, trainer, pl_module, outputs, stage: str) -> None:
        if not self._active(trainer, pl_module, stage):
            return
        if not (isinstance(outputs, Mapping) and "logits" in outputs and "target" in outputs):
            raise ValueError("PRCurvePlot: the eval step must return a dict with 'logits' and 'target'")
        if stage not in self._metric:
            self._metric[stage] = MultilabelPrecisionRecallCurve(
                int(pl_module.num_classes), thresholds=self.thresholds).to(pl_module.device)
        self._metric[stage].update(outputs["logits"].detach().float().sigmoid(), outputs["target"].detach().long())

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._update(trainer, pl_module, outputs, "val")

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._update(trainer, pl_module, outputs, "test")

    def _finish(self, trainer, pl_module, stage: str) -> None:
        metric = self._metric.pop(stage, None)
        if metric is None:
            return
        precision, recall, _ = (t.cpu() for t in metric.compute())  # [C, T+1] each, summed over ranks
        ap = binned_average_precision(precision, recall)
        self.curves[stage] = (precision, recall, ap)
        if not trainer.is_global_zero:
            return
        names = list(getattr(pl_module, "class_names", None) or map(str, range(len(ap))))
        title = f"{stage}" + (f" epoch {trainer.current_epoch}" if stage == "val" else "")
        out, suffix = plot_dir(trainer, self.dirpath), epoch_suffix(trainer, stage)
        p, r, a = precision.numpy(), recall.numpy(), ap.numpy()
        publish(plot_pr_curves(p, r, a, names, title, self.highlight), trainer, f"{stage}/pr_curves",
                out / f"pr_curves_{stage}{suffix}.png")
        publish(plot_per_class_ap(a, names, title, self.max_bars), trainer, f"{stage}/per_class_ap",
                out / f"per_class_ap_{stage}{suffix}.png")

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self._finish(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._finish(trainer, pl_module, "test")
