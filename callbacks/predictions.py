"""``predict`` results: each clip's top classes with their scores, printed and written to a JSONL file."""

from __future__ import annotations

import json
from pathlib import Path

from lightning.pytorch.callbacks import BasePredictionWriter

from callbacks.plotting import run_dir


class PredictionPrinter(BasePredictionWriter):
    """Prints ``file: class (score), ...`` per clip and writes one JSON object per clip,
    ``{"file": ..., "top": [{"class": ..., "score": ...}, ...]}``, to ``output``.

    Args:
        output: the JSONL file. (default: ``None``: ``<run directory>/predictions.jsonl``, the predict run's own
            directory, never the training run's files; ``<stem>.rank<r>.jsonl`` per rank under DDP)
        print_top: print each clip's line too. (default: ``True``)
        write_file: write the file. (default: ``True``)
    """

    def __init__(self, output: str | None = None, print_top: bool = True, write_file: bool = True):
        super().__init__(write_interval="batch")
        self.output, self.print_top, self.write_file = output, print_top, write_file
        self.path: Path | None = None
        self.count = 0

    def on_predict_start(self, trainer, pl_module) -> None:
        self.count, self.path = 0, None
        if self.write_file:
            path = Path(self.output or run_dir(trainer) / "predictions.jsonl")
            if trainer.world_size > 1:
                path = path.with_name(f"{path.stem}.rank{trainer.global_rank}{path.suffix}")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("")
            self.path = path

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        bar = trainer.progress_bar_callback
        for p in prediction:
            self.count += 1
            if self.print_top:
                line = f"{p['key']}: " + ", ".join(f"{c} ({s:.3f})" for c, s in p["top"])
                if bar is not None and bar.is_enabled:
                    bar.print(line)  # above the progress bar, not inside its line
                else:
                    print(line, flush=True)
            if self.path is not None:
                record = {"file": p["key"], "top": [{"class": c, "score": round(float(s), 6)} for c, s in p["top"]]}
                with open(self.path, "a") as f:
                    f.write(json.dumps(record) + "\n")

    def on_predict_end(self, trainer, pl_module) -> None:
        if self.path is not None:
            print(f"predictions of {self.count} clips written to {self.path}", flush=True)
