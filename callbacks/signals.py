"""``SignalCheckpoint``: on SIGUSR1 outside SLURM, save a checkpoint at the next batch boundary and stop cleanly.

Under SLURM, Lightning's SLURM environment plugin handles ``SIGUSR1`` (sent by ``#SBATCH --signal=SIGUSR1@90``):
it saves ``hpc_ckpt_<n>.ckpt`` and requeues the job. Outside SLURM nothing handles the signal and its default
action kills the run with nothing saved. This callback fills that gap and only that gap: when no handler is
installed for the signal (and the run is not under SLURM) it installs one that merely sets a flag; at the next
training batch boundary every rank (the flag is OR-reduced over ranks, so signalling one rank is enough) saves
the same ``hpc_ckpt_<n>.ckpt`` into the trainer's ``default_root_dir`` with ``trainer.save_checkpoint`` and
sets ``trainer.should_stop``: ``fit`` returns and the process exits with code 0. Resume with
``--ckpt_path <that file>`` (or ``python -m audiognn.checkpoint resume-path RUN_DIR``, which picks it).
"""

from __future__ import annotations

import re
import signal
import sys
import threading
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.plugins.environments import SLURMEnvironment


class SignalCheckpoint(pl.Callback):
    """Save ``hpc_ckpt_<n>.ckpt`` and stop the fit at the next batch boundary after ``signum`` (outside SLURM).

    Args:
        signum: the signal, by name or number. (default: ``"SIGUSR1"``)

    ``saved`` holds the path written (None until then). The previous handler is restored when fit ends.
    """

    def __init__(self, signum: str | int = "SIGUSR1") -> None:
        self.signum = signal.Signals[signum] if isinstance(signum, str) else signal.Signals(signum)
        self.received = False
        self.saved: Path | None = None
        self._previous = None
        self._installed = False

    def _handler(self, signum, frame) -> None:
        self.received = True  # only a flag: the checkpoint is saved at the next batch boundary

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.received, self.saved = False, None
        current = signal.getsignal(self.signum)
        if (SLURMEnvironment.detect() or current not in (signal.SIG_DFL, None)
                or threading.current_thread() is not threading.main_thread()):
            return  # Lightning's SLURM handler (requeue) or someone else's handler stays in charge
        self._previous, self._installed = current, True
        signal.signal(self.signum, self._handler)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if not self._installed:
            return
        if trainer.world_size > 1:
            stop = trainer.strategy.reduce_boolean_decision(self.received, all=False)
        else:
            stop = self.received
        if not stop or self.saved is not None:
            return
        root = Path(trainer.default_root_dir)
        versions = [int(m.group(1)) for p in root.glob("hpc_ckpt_*.ckpt")
                    if (m := re.fullmatch(r"hpc_ckpt_(\d+)\.ckpt", p.name))]
        self.saved = root / f"hpc_ckpt_{max(versions, default=0) + 1}.ckpt"
        trainer.save_checkpoint(self.saved)
        trainer.should_stop = True
        if trainer.is_global_zero:
            print(f"{self.signum.name}: saved checkpoint {str(self.saved)!r} at step {trainer.global_step}, "
                  f"stopping (resume with --ckpt_path {self.saved})", file=sys.stderr, flush=True)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.teardown(trainer, pl_module, "fit")

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._installed:
            signal.signal(self.signum, self._previous if self._previous is not None else signal.SIG_DFL)
            self._installed = False
