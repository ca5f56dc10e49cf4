"""``AudioClassifier``: the LightningModule of every audio backbone (LHGNN, GenreGNN, CNN, RNN).

The backbone is any ``nn.Module`` mapping normalised log-mel ``x: [B, T, F]`` to logits ``[B, C]``; it is
given as a callable of the class count (``backbone(num_classes)``), so configs never repeat what the data
knows (``num_classes``, ``multilabel`` and ``data_info`` are linked from the DataModule by ``train.py``).

Task:
* multi-label (AudioSet, FSD50K, synthetic events): BCE-with-logits; ``val/mAP`` = macro average precision
  (torchmetrics ``MultilabelAveragePrecision``, exact: ``thresholds=None``; classes without positives are
  skipped); at test also the per-class AP (``test/AP/<class>``).
* multi-class (ESC-50, GTZAN, synthetic genre): cross-entropy (soft targets after mixup); ``acc`` and macro
  ``f1``.

Optimisation: the optimiser is a callable from the config (AdamW by default, seed 001 §III-A: β = (0.9,
0.999), ε = 1e-8, weight decay 0.05; or the official code's Adam); the schedule is a linear warm-up over
``warmup_steps`` optimiser steps, then ``cosine`` (to 0 at the last step), ``multistep`` (× ``gamma`` at each
epoch in ``milestones``, as the official LHGNN code) or ``constant``.

Clip-level evaluation: with ``eval_crop_frames`` set, validation/test/predict clips longer than that are cut
into consecutive crops whose logits are averaged (GTZAN: 3 s crops of a 30 s clip, seed 000 §4.1's
segment-level training with clip-level decisions).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from torch import nn
from audiognn.tasks.optim import PaperAdamW  # noqa: F401  (re-export: its former home)
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassF1Score,
    MultilabelAveragePrecision,
)


class AudioClassifier(L.LightningModule):
    def __init__(
        self,
        backbone: Callable[[int], nn.Module],
        num_classes: int,
        multilabel: bool = False,
        data_info: dict | None = None,
        optimizer: OptimizerCallable = PaperAdamW,
        warmup_steps: int = 0,
        schedule: str = "cosine",
        milestones: list[int] | None = None,
        gamma: float = 0.5,
        eval_crop_frames: int | None = None,
        top_k: int = 5,
    ):
        super().__init__()
        if schedule not in ("cosine", "multistep", "constant"):
            raise ValueError(f"schedule must be 'cosine', 'multistep' or 'constant', got '{schedule}'")
        self.save_hyperparameters(ignore=["backbone", "optimizer"])
        self.backbone = backbone(num_classes)
        self.optimizer_fn = optimizer
        self.num_classes, self.multilabel = num_classes, multilabel
        self.class_names = list((data_info or {}).get("classes") or [str(i) for i in range(num_classes)])
        if len(self.class_names) != num_classes:
            raise ValueError(f"data_info has {len(self.class_names)} classes but num_classes={num_classes}")
        if multilabel:
            metrics = {"mAP": MultilabelAveragePrecision(num_labels=num_classes, average="macro", thresholds=None)}
        else:
            metrics = {"acc": MulticlassAccuracy(num_classes=num_classes, average="micro"),
                       "f1": MulticlassF1Score(num_classes=num_classes, average="macro")}
        self.val_metrics = MetricCollection(metrics, prefix="val/")
        self.test_metrics = self.val_metrics.clone(prefix="test/")
        # losses as clip-weighted means: exact under DDP even when ranks hold different numbers of clips
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        if multilabel:
            self.test_ap = MultilabelAveragePrecision(num_labels=num_classes, average=None, thresholds=None)

    # --- forward ---------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def _eval_logits(self, x: torch.Tensor) -> torch.Tensor:
        c = self.hparams.eval_crop_frames
        if c is None or x.shape[1] <= c:
            return self(x)
        n = x.shape[1] // c
        crops = x[:, : n * c].reshape(x.shape[0] * n, c, x.shape[2])  # [B·n, c, F]
        return self(crops).view(x.shape[0], n, -1).mean(1)  # mean of crop logits per clip

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.multilabel:
            return F.binary_cross_entropy_with_logits(logits, y)
        return F.cross_entropy(logits, y)  # y: (mixed) one-hot probabilities

    def _target(self, y: torch.Tensor) -> torch.Tensor:
        return y.round().long() if self.multilabel else y.argmax(1)

    # --- steps ---------------------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.loss(self(batch["x"]), batch["y"])
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["x"].shape[0])
        return loss

    def _eval_step(self, batch: dict, stage: str) -> dict:
        logits = self._eval_logits(batch["x"])
        loss = getattr(self, f"{stage}_loss")
        loss.update(self.loss(logits, batch["y"]), weight=batch["x"].shape[0])
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True)
        scores, target = self._scores(logits), self._target(batch["y"])
        getattr(self, f"{stage}_metrics").update(scores, target)
        if stage == "test" and self.multilabel:
            self.test_ap.update(scores, target)
        return {"logits": logits, "target": target}  # for callbacks (confusion matrices)

    def validation_step(self, batch: dict, batch_idx: int) -> dict:
        return self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self.log_dict(self.val_metrics.compute(), prog_bar=True)
        self.val_metrics.reset()

    def test_step(self, batch: dict, batch_idx: int) -> dict:
        return self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.test_metrics.compute())
        self.test_metrics.reset()
        if self.multilabel:
            ap = self.test_ap.compute()  # [C]; NaN for classes without positives
            self.log_dict({f"test/AP/{n}": v for n, v in zip(self.class_names, ap) if not torch.isnan(v)})
            self.test_ap.reset()

    def predict_step(self, batch: dict, batch_idx: int) -> list[dict]:
        scores = self._scores(self._eval_logits(batch["x"]))
        k = min(self.hparams.top_k, self.num_classes)
        top = scores.topk(k, dim=1)
        return [
            {"key": key, "top": [(self.class_names[i], float(s)) for s, i in zip(vals.tolist(), idx.tolist())]}
            for key, vals, idx in zip(batch["key"], top.values, top.indices)
        ]

    def _scores(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.sigmoid() if self.multilabel else logits.softmax(1)

    def on_train_epoch_end(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and hasattr(dm, "corrupt_shards") and dm.hparams.get("skip_corrupt_shards"):
            self.log("data/corrupt_shards", float(dm.corrupt_shards))

    # --- optimisation ----------------------------------------------------------------------------------
    def configure_optimizers(self):
        opt = self.optimizer_fn(self.parameters())
        hp = self.hparams
        warm = max(0, hp.warmup_steps)
        if hp.schedule == "multistep":  # per-epoch decay: the step's epoch is read from the trainer
            milestones = sorted(hp.milestones or [])
            trainer = self.trainer

            def factor(step: int) -> float:
                w = min(1.0, (step + 1) / warm) if warm else 1.0
                return w * hp.gamma ** sum(trainer.current_epoch >= m for m in milestones)
        else:
            total = max(1, int(self.trainer.estimated_stepping_batches))

            def factor(step: int) -> float:
                if warm and step < warm:
                    return (step + 1) / warm
                if hp.schedule == "constant":
                    return 1.0
                progress = min(1.0, (step - warm) / max(1, total - warm))
                return 0.5 * (1.0 + math.cos(math.pi * progress))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
