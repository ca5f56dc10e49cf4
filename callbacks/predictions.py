"""Print (and optionally save) ``predict`` results: each clip's top classes with their scores."""

from __future__ import annotations

import json
from pathlib import Path

from lightning.pytorch.callbacks import BasePredictionWriter


class PredictionPrinter(BasePredictionWriter):
    """Prints ``key: class (score), ...`` per clip; with ``output`` also writes one JSON object per line."""

    def __init__(self, output: str | None = None, print_top: bool = True):
        super().__init__(write_interval="batch")
        self.output, self.print_top = output, print_top

    def on_predict_start(self, trainer, pl_module) -> None:
        if self.output:
            Path(self.output).parent.mkdir(parents=True, exist_ok=True)
            Path(self.output).write_text("")

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        bar = trainer.progress_bar_callback
        for p in prediction:
            if self.print_top:
                line = f"{p['key']}: " + ", ".join(f"{c} ({s:.3f})" for c, s in p["top"])
                if bar is not None and bar.is_enabled:
                    bar.print(line)  # above the progress bar, not inside its line
                else:
                    print(line, flush=True)
            if self.output:
                with open(self.output, "a") as f:
                    f.write(json.dumps(p) + "\n")
