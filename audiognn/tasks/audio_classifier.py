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

Optimisation: ``optimizer`` (an ``OptimizerCallable``: :class:`~audiognn.tasks.optim.PaperAdamW` by default,
LHGNN §III-A's AdamW, or the official code's Adam) and ``scheduler`` (an ``LRSchedulerCallable`` from
:mod:`audiognn.tasks.optim`: warm-up then cosine, multi-step per epoch or constant), combined by
:func:`~audiognn.tasks.optim.configure_schedule`.

Clip-level evaluation: with ``eval_crop_frames`` set, validation/test/predict clips longer than that are cut
into consecutive crops whose logits are averaged (GTZAN: 3 s crops of a 30 s clip, the segment-level training with clip-level
decisions of Dhongade and Rovira, *Graph Neural Networks for Music Genre Classification*, §4.1).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypedDict

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassF1Score,
    MultilabelAveragePrecision,
)

from audiognn.checkpoint import build_from_spec, callable_spec
from audiognn.tasks.optim import PaperAdamW, WarmupCosine, configure_schedule

__all__ = ["AudioClassifier", "EvalOutput", "PaperAdamW"]

STAGES = ("val", "test")


class EvalOutput(TypedDict):
    """What ``validation_step`` / ``test_step`` return (read by callbacks, e.g. confusion matrices)."""

    logits: torch.Tensor  # [B, C], clip-level (crop logits averaged, see ``eval_logits``)
    target: torch.Tensor  # [B] class indices (multi-class) or [B, C] 0/1 (multi-label)


class AudioClassifier(L.LightningModule):
    """Clip classification / tagging with any audio backbone (task description in the module docstring).

    Args:
        backbone: callable of the class count returning the model (an :class:`AudioBackbone` or any module
            mapping ``[B, T, F]`` to ``[B, C]``), or a ``{class_path, init_args}`` dict (:func:`audiognn.checkpoint.callable_spec`, from a checkpoint).
        num_classes: number of classes (linked from the data).
        multilabel: multi-label tagging (linked from the data). (default: ``False``)
        data_info: the data's description, e.g. ``{"classes": [...]}`` (linked from the data).
        optimizer: optimiser callable. (default: :class:`PaperAdamW`)
        scheduler: learning-rate schedule callable, or None. (default: :class:`WarmupCosine`, no warm-up)
        eval_crop_frames: clip-level evaluation over crops of this many frames; None: whole clips.
        top_k: classes per clip returned by ``predict``. (default: ``5``)

    ``self.metrics[stage]`` (stage "val" / "test") holds the metrics, ``self.losses[stage]`` the clip-weighted
    mean loss; ``validation_step`` / ``test_step`` return an :class:`EvalOutput`.
    """

    def __init__(
        self,
        backbone: Callable[[int], nn.Module],
        num_classes: int,
        multilabel: bool = False,
        data_info: dict | None = None,
        optimizer: OptimizerCallable = PaperAdamW,
        scheduler: LRSchedulerCallable | None = WarmupCosine,
        eval_crop_frames: int | None = None,
        top_k: int = 5,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["backbone", "optimizer", "scheduler"])
        self.hparams["backbone"] = callable_spec(backbone)  # load_from_checkpoint rebuilds it from this
        self.backbone = build_from_spec(backbone, num_classes)
        self.optimizer_fn, self.scheduler_fn = optimizer, scheduler
        self.num_classes, self.multilabel = num_classes, multilabel
        self.class_names = list((data_info or {}).get("classes") or [str(i) for i in range(num_classes)])
        if len(self.class_names) != num_classes:
            raise ValueError(f"data_info has {len(self.class_names)} classes but num_classes={num_classes}")
        if multilabel:
            metrics = {"mAP": MultilabelAveragePrecision(num_labels=num_classes, average="macro", thresholds=None)}
        else:
            metrics = {"acc": MulticlassAccuracy(num_classes=num_classes, average="micro"),
                       "f1": MulticlassF1Score(num_classes=num_classes, average="macro")}
        val = MetricCollection(metrics, prefix="val/")
        self.metrics = nn.ModuleDict({"val": val, "test": val.clone(prefix="test/")})
        # losses as clip-weighted means: exact under DDP even when ranks hold different numbers of clips
        self.losses = nn.ModuleDict({stage: MeanMetric() for stage in STAGES})
        if multilabel:
            self.test_ap = MultilabelAveragePrecision(num_labels=num_classes, average=None, thresholds=None)

    # --- forward ---------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def eval_logits(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """Clip-level logits ``[B, C]`` of ``x: [B, T, F]``: the mean over consecutive crops of
        ``eval_crop_frames`` frames when set and the clip is longer, else ``forward(x)``.

        ``valid`` ([B], frames of audio before the zero padding of prepare; the batch's ``"valid"``): crops that
        start in the padding are left out of the mean (training never shows a crop of padding only); the first
        crop always counts. None: every crop counts."""
        c = self.hparams.eval_crop_frames
        if c is None or x.shape[1] <= c:
            return self(x)
        n = x.shape[1] // c
        crops = x[:, : n * c].reshape(x.shape[0] * n, c, x.shape[2])  # [B·n, c, F]
        logits = self(crops).view(x.shape[0], n, -1)
        if valid is None:
            return logits.mean(1)  # mean of crop logits per clip
        starts = torch.arange(n, device=x.device) * c
        keep = (starts.unsqueeze(0) < valid.to(x.device).unsqueeze(1)) | (starts == 0).unsqueeze(0)  # [B, n]
        w = keep.to(logits.dtype).unsqueeze(-1)
        return (logits * w).sum(1) / w.sum(1)

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

    def _eval_step(self, batch: dict, stage: str) -> EvalOutput:
        logits = self.eval_logits(batch["x"], batch.get("valid"))
        loss = self.losses[stage]
        loss.update(self.loss(logits, batch["y"]), weight=batch["x"].shape[0])
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True)
        scores, target = self._scores(logits), self._target(batch["y"])
        self.metrics[stage].update(scores, target)
        if stage == "test" and self.multilabel:
            self.test_ap.update(scores, target)
        return EvalOutput(logits=logits, target=target)  # for callbacks (confusion matrices)

    def validation_step(self, batch: dict, batch_idx: int) -> EvalOutput:
        return self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self.log_dict(self.metrics["val"].compute(), prog_bar=True)
        self.metrics["val"].reset()

    def test_step(self, batch: dict, batch_idx: int) -> EvalOutput:
        return self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.metrics["test"].compute())
        self.metrics["test"].reset()
        if self.multilabel:
            ap = self.test_ap.compute()  # [C]; NaN for classes without positives
            self.log_dict({f"test/AP/{n}": v for n, v in zip(self.class_names, ap) if not torch.isnan(v)})
            self.test_ap.reset()

    def predict_step(self, batch: dict, batch_idx: int) -> list[dict]:
        scores = self._scores(self.eval_logits(batch["x"], batch.get("valid")))
        k = min(self.hparams.top_k, self.num_classes)
        top = scores.topk(k, dim=1)
        return [
            {"key": key, "top": [(self.class_names[i], float(s)) for s, i in zip(vals.tolist(), idx.tolist())]}
            for key, vals, idx in zip(batch["key"], top.values, top.indices)
        ]

    def _scores(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.sigmoid() if self.multilabel else logits.softmax(1)

    # --- optimisation ----------------------------------------------------------------------------------
    def configure_optimizers(self):
        return configure_schedule(self.optimizer_fn(self.parameters()), self.scheduler_fn, self.trainer)
