"""Driver for tests/test_ddp.py: one DDP launch that fits, averages the epoch checkpoints and tests the average.

    python tests/ddp_driver.py OUT_DIR <train.py fit arguments ...>

Built from train.py's LightningCLI (`run=False`), so the configs and flags are exactly train.py's; Lightning's
DDP launcher re-runs this script for the other ranks. Each rank writes OUT_DIR/rank{r}.json: the clip keys
it saw per stage and epoch and its metrics after fit and after test; rank 0 writes the model's weights
after fit (final_state.pt) and the offline average of the epoch checkpoints (avg.ckpt). With the environment
variable AUDIOGNN_DDP_FIT_ONLY=1 it only fits (no average, no test) and records the optimiser steps.
"""

from __future__ import annotations

import json
import os
import sys
from collections import defaultdict
from pathlib import Path

import lightning.pytorch as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from callbacks.average_checkpoints import average_checkpoints  # noqa: E402
from train import cli_main  # noqa: E402


class KeyRecorder(pl.Callback):
    """The clip keys each rank sees, per stage and epoch (sanity-check batches excluded)."""

    def __init__(self) -> None:
        self.keys: dict[str, list[str]] = defaultdict(list)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.keys[f"train/{trainer.current_epoch}"] += list(batch["key"])

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if not trainer.sanity_checking:
            self.keys[f"val/{trainer.current_epoch}"] += list(batch["key"])

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.keys["test"] += list(batch["key"])


def _metrics(trainer) -> dict[str, float]:
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


def main() -> None:
    out = Path(sys.argv[1])
    cli = cli_main(["fit", *sys.argv[2:]], run=False)
    trainer, model, dm = cli.trainer, cli.model, cli.datamodule
    rec = KeyRecorder()
    trainer.callbacks.append(rec)
    trainer.fit(model, datamodule=dm)
    fit_metrics = _metrics(trainer)
    if os.environ.get("AUDIOGNN_DDP_FIT_ONLY") == "1":
        report = {"rank": trainer.global_rank, "world": trainer.world_size, "keys": rec.keys, "fit": fit_metrics,
                  "steps": trainer.global_step}
        (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(report))
        return
    if trainer.is_global_zero:
        torch.save(model.state_dict(), out / "final_state.pt")
        epochs = sorted((out / "epochs").glob("*.ckpt"))
        average_checkpoints(epochs, out / "avg.ckpt")
    trainer.strategy.barrier()
    trainer.test(model, datamodule=dm, ckpt_path=str(out / "avg.ckpt"), verbose=False)
    report = {"rank": trainer.global_rank, "world": trainer.world_size, "keys": rec.keys,
              "fit": fit_metrics, "test": _metrics(trainer)}
    (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main()
