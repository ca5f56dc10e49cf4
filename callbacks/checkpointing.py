"""``RunCheckpoint``: ``last.ckpt`` at the end of every epoch, the best checkpoints by a metric beside it."""

from __future__ import annotations

from lightning.pytorch.callbacks import ModelCheckpoint


class RunCheckpoint(ModelCheckpoint):
    """A ``ModelCheckpoint`` whose ``last.ckpt`` is the latest epoch, whatever the monitored metric did.

    Lightning (2.6) rewrites ``last.ckpt`` only in a step where it also saved a top-k checkpoint, so with
    ``monitor: val/acc, save_top_k: 1`` the file stays at the best epoch and ``--ckpt_path last``, the resume
    helper and SLURM requeues would resume from there instead of from the latest epoch. Here ``last.ckpt`` is
    also written at the end of every training epoch (after that epoch's validation, when there is one) and
    after every validation; the ``save_top_k`` best files by ``monitor`` (``filename``, e.g.
    ``best-epoch07-acc0.812.ckpt``) are kept beside it.

    Which to use: ``best-*.ckpt`` to test and predict with (the epoch chosen on the validation split);
    ``last.ckpt`` to resume, and to test recipes with checkpoint weight averaging (its ``state_dict`` holds
    the average over the window). Arguments: those of ``ModelCheckpoint``.
    """

    def _save_last_now(self, trainer) -> None:
        # skipped during sanity checks, outside fit and when this step is already saved (top-k + last)
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self._save_last_now(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_now(trainer)
