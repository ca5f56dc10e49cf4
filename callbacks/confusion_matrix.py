"""Confusion-matrix images during validation and test (the genre comparison of Dhongade and Rovira, *Graph
Neural Networks for Music Genre Classification*).

``ConfusionMatrixPlot`` accumulates a torchmetrics ``MulticlassConfusionMatrix`` over the validation (and
test) batches -- synchronised over DDP ranks by torchmetrics -- and at the end of each epoch draws it with
matplotlib, classes in dataset order (the module's ``class_names``, i.e. ``dataset.json``'s ``classes``); the
PNG goes to ``<run directory>/plots/confusion_<stage>[_epochNN].png`` (or ``dirpath``) and, with a
``WandbLogger``, the image to ``<stage>/confusion_matrix``. Multi-label runs (``pl_module.multilabel``) are
skipped: they get precision-recall curves (``callbacks.pr_curves``).

Predictions come from the step's outputs when the LightningModule returns a dict with ``target`` and
``preds`` or ``logits`` (AudioClassifier's ``EvalOutput``, LinkPrediction); otherwise the callback scores
the batch itself (``batch["x"]`` / ``batch["y"]``, one-hot or class indices, through the module's public
clip-level ``eval_logits`` when it has one), which costs a second forward pass of the batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torchmetrics.classification import MulticlassConfusionMatrix

from callbacks.plotting import epoch_suffix, plot_dir, publish, pyplot


def plot_confusion_matrix(
    cm: np.ndarray | torch.Tensor,
    class_names: list[str] | None = None,
    title: str = "",
    path: str | Path | None = None,
    normalize: bool = True,
):
    """Draw ``cm: [C, C]`` (rows = true class, columns = predicted) and return the matplotlib figure;
    rows are normalised to sum to 1 with ``normalize`` (counts are printed in the cells either way)."""
    plt = pyplot()
    cm = np.asarray(cm.cpu() if isinstance(cm, torch.Tensor) else cm, dtype=np.float64)
    C = cm.shape[0]
    names = class_names or [str(i) for i in range(C)]
    shown = cm / np.maximum(cm.sum(1, keepdims=True), 1) if normalize else cm
    size = max(4.0, 0.55 * C + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_xticks(range(C), names, rotation=60, ha="right")
    ax.set_yticks(range(C), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    acc = np.trace(cm) / max(cm.sum(), 1)
    ax.set_title(f"{title} (acc {acc:.3f})" if title else f"accuracy {acc:.3f}")
    if C <= 30:
        for i in range(C):
            for j in range(C):
                if cm[i, j]:
                    ax.text(
                        j,
                        i,
                        int(cm[i, j]),
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if shown[i, j] > 0.5 * (shown.max() or 1) else "black",
                    )
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    return fig


class ConfusionMatrixPlot(Callback):
    """Log a confusion-matrix image at the end of every ``every_n_epochs``-th validation and of each test.

    Args:
        dirpath: where the PNGs go (``confusion_val_epochNN.png``, ``confusion_test.png``). (default: ``None``:
            ``<run directory>/plots``)
        every_n_epochs: validation epochs between images (and the last epoch; test: always). (default: ``1``)
        normalize: show row-normalised rates (recall per class) instead of counts. (default: ``True``)
        class_names: axis labels, in class-index order. (default: ``None``: the module's ``class_names`` or the
            DataModule's, else indices)
        save_png: write the PNGs (``False``: only the wandb images and ``self.matrices``, e.g. in benchmarks).
            (default: ``True``)
    The latest matrix of each stage is kept in ``self.matrices[stage]`` (a ``[C, C]`` tensor).
    """

    def __init__(
        self,
        dirpath: str | None = None,
        every_n_epochs: int = 1,
        normalize: bool = True,
        class_names: list[str] | None = None,
        save_png: bool = True,
    ):
        super().__init__()
        self.dirpath, self.every_n_epochs, self.normalize = dirpath, every_n_epochs, normalize
        self.class_names, self.save_png = class_names, save_png
        self.matrices: dict[str, torch.Tensor] = {}
        self._cm: dict[str, MulticlassConfusionMatrix | None] = {}

    # --- accumulation ----------------------------------------------------------------------------------
    @staticmethod
    def _extract(pl_module, outputs, batch) -> tuple[torch.Tensor, torch.Tensor]:
        if (
            isinstance(outputs, Mapping)
            and "target" in outputs
            and ("preds" in outputs or "logits" in outputs)
        ):
            preds = outputs["preds"] if "preds" in outputs else outputs["logits"].argmax(-1)
            return preds.detach(), outputs["target"].detach()
        if isinstance(batch, Mapping) and "x" in batch and "y" in batch:
            with torch.no_grad():
                fn = getattr(pl_module, "eval_logits", None)
                logits = fn(batch["x"], batch.get("valid")) if fn is not None else pl_module(batch["x"])
            y = batch["y"]
            target = y.argmax(-1) if y.dim() == 2 else y
            return logits.argmax(-1), target.long()
        raise ValueError(
            "ConfusionMatrixPlot: the step must return a dict with 'target' and 'preds'/'logits', "
            "or the batch must be a dict with 'x' and 'y'"
        )

    def _active(self, trainer, pl_module, stage: str) -> bool:
        if trainer.sanity_checking or getattr(pl_module, "multilabel", False):
            return False
        epoch = trainer.current_epoch + 1  # every n-th validation epoch and the last one
        return stage == "test" or epoch % self.every_n_epochs == 0 or epoch == trainer.max_epochs

    def _update(self, trainer, pl_module, outputs, batch, stage: str) -> None:
        if not self._active(trainer, pl_module, stage):
            return
        preds, target = self._extract(pl_module, outputs, batch)
        cm = self._cm.get(stage)
        if cm is None:
            n = getattr(pl_module, "num_classes", None) or pl_module.hparams.get("num_classes")
            if n is None:
                raise ValueError("ConfusionMatrixPlot: the LightningModule has no num_classes")
            cm = self._cm[stage] = MulticlassConfusionMatrix(int(n)).to(pl_module.device)
        cm.update(preds, target)

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        self._update(trainer, pl_module, outputs, batch, "val")

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._update(trainer, pl_module, outputs, batch, "test")

    # --- drawing ---------------------------------------------------------------------------------------
    def _names(self, trainer, pl_module, C: int) -> list[str]:
        for src in (
            self.class_names,
            getattr(pl_module, "class_names", None),
            getattr(getattr(trainer, "datamodule", None), "class_names", None),
        ):
            if src is not None and len(src) == C:
                return list(src)
        return [str(i) for i in range(C)]

    def _finish(self, trainer, pl_module, stage: str) -> None:
        cm = self._cm.pop(stage, None)
        if cm is None:
            return
        matrix = cm.compute().cpu()  # [C, C], summed over ranks
        self.matrices[stage] = matrix
        if not trainer.is_global_zero:
            return
        names = self._names(trainer, pl_module, matrix.shape[0])
        path = plot_dir(trainer, self.dirpath) / f"confusion_{stage}{epoch_suffix(trainer, stage)}.png" \
            if self.save_png else None
        title = f"{type(pl_module).__name__} {stage}" + (
            f" epoch {trainer.current_epoch}" if stage == "val" else ""
        )
        publish(plot_confusion_matrix(matrix, names, title, None, self.normalize), trainer,
                f"{stage}/confusion_matrix", path)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self._finish(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._finish(trainer, pl_module, "test")
