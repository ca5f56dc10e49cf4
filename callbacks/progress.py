"""``LineProgress``: progress as whole lines, for output that is not a terminal (SLURM ``.out`` files, pipes)."""

from __future__ import annotations

import time

from lightning.pytorch.callbacks import ProgressBar


class LineProgress(ProgressBar):
    """One line per epoch (its metrics and duration) and, within long epochs, a line every ``interval``
    seconds -- never a carriage return. ``train.py`` uses it in place of the tqdm bar when stdout is not a
    terminal; put it in ``trainer.callbacks`` to use it anywhere.

    Args:
        interval: seconds between lines within an epoch. (default: ``60``)
    """

    def __init__(self, interval: float = 60.0):
        super().__init__()
        self.interval = interval
        self.enabled = True
        self.start = self.last = 0.0

    def disable(self) -> None:
        self.enabled = False

    def enable(self) -> None:
        self.enabled = True

    @property
    def is_enabled(self) -> bool:
        return self.enabled

    def _say(self, text: str) -> None:
        if self.enabled and self.trainer.is_global_zero:
            print(text, flush=True)

    def _begin(self) -> None:
        self.start = self.last = time.monotonic()

    def _tick(self, what: str, done: int, total) -> None:
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            of = f"/{int(total)}" if total not in (None, float("inf")) else ""
            self._say(f"{what}: batch {done}{of} ({now - self.start:.0f} s)")

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._begin()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._tick(f"epoch {trainer.current_epoch}", batch_idx + 1, self.total_train_batches)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        metrics = {k: v for k, v in self.get_metrics(trainer, pl_module).items() if k != "v_num"}
        shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in sorted(metrics.items()))
        epochs = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        self._say(f"epoch {trainer.current_epoch + 1}{epochs} ({time.monotonic() - self.start:.1f} s): {shown}")

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if trainer.state.fn != "fit":  # `validate` alone; within fit the epoch line includes validation
            self._begin()

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self._begin()

    def on_predict_epoch_start(self, trainer, pl_module) -> None:
        self._begin()

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._tick("test", batch_idx + 1, trainer.num_test_batches[dataloader_idx])

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._tick("predict", batch_idx + 1, trainer.num_predict_batches[dataloader_idx])

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._say(f"test done ({time.monotonic() - self.start:.1f} s)")

    def on_predict_epoch_end(self, trainer, pl_module) -> None:
        self._say(f"predict done ({time.monotonic() - self.start:.1f} s)")
