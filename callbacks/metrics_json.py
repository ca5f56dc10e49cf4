"""Test results to JSON files (used by the fold runner, ``audiognn.cli.cross_validate``).

``TestMetricsToJson`` writes a run's test metrics; ``TestScoresToJson`` writes each test clip's key, class
scores and target, from which runs are combined into ensembles; ``audiognn.ensemble.read_test_scores`` reads
them back, the files of every DDP rank merged.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L


class TestMetricsToJson(L.Callback):
    """Writes ``trainer.callback_metrics`` (floats) to ``path`` at the end of ``test`` (rank 0)."""

    __test__ = False  # not a pytest test class

    def __init__(self, path: str):
        self.path = path

    def on_test_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            Path(self.path).write_text(json.dumps(metrics, indent=1))


class TestScoresToJson(L.Callback):
    """Keeps each test clip's key, class scores and target; writes ``{"keys", "scores", "targets",
    "classes"}`` to ``path`` at the end of ``test`` (``path=None``: kept in ``keys``, ``scores``, ``targets``
    only).

    Reads what ``AudioClassifier.test_step`` returns (``logits``, ``target``) and the batch's ``key`` list; the
    scores are those the task's metrics see: softmax over the classes for single-label targets ([B] class
    indices), sigmoid for multi-label ones ([B, C]). A module whose test step returns something else is left
    alone and no file is written. Under DDP every rank tests its own clips: rank r > 0
    writes ``path`` + ``.rank{r}``; ``audiognn.ensemble.read_test_scores`` merges them."""

    __test__ = False  # not a pytest test class

    def __init__(self, path: str | None = None, digits: int = 6):
        self.path, self.digits = path, digits
        self.keys: list[str] = []
        self.scores: list[list[float]] = []
        self.targets: list = []

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self.keys, self.scores, self.targets = [], [], []

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not (isinstance(outputs, dict) and {"logits", "target"} <= outputs.keys() and isinstance(batch, dict)
                and "key" in batch):  # fmt: skip
            return
        logits, target = outputs["logits"].detach().float(), outputs["target"]
        scores = logits.softmax(1) if target.ndim == 1 else logits.sigmoid()
        self.keys += [str(k) for k in batch["key"]]
        self.scores += [[round(v, self.digits) for v in row] for row in scores.cpu().tolist()]
        self.targets += target.cpu().tolist()

    def on_test_end(self, trainer, pl_module) -> None:
        if not self.keys or self.path is None:
            return
        rank = trainer.global_rank
        path = Path(self.path if rank == 0 else f"{self.path}.rank{rank}")
        path.parent.mkdir(parents=True, exist_ok=True)
        classes = list(getattr(pl_module, "class_names", []) or [])
        path.write_text(json.dumps({"keys": self.keys, "scores": self.scores, "targets": self.targets,
                                    "classes": classes}))  # fmt: skip
