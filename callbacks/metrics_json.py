"""``TestMetricsToJson``: writes a run's test metrics to a JSON file (used by the fold runner)."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L


class TestMetricsToJson(L.Callback):
    """Writes ``trainer.callback_metrics`` (floats) to ``path`` at the end of ``test`` (rank 0)."""

    def __init__(self, path: str):
        self.path = path

    def on_test_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            Path(self.path).write_text(json.dumps(metrics, indent=1))
