"""Training throughput and peak accelerator memory of a fit, logged per epoch and written to JSON.

``FitThroughputToJson`` times each training epoch from its start to its last batch, validation left out (the
clock stops while a validation runs, inside the epoch or after its last batch), and counts the clips the
batches held; on CUDA it synchronises the device before it reads the clock, so the figure is the GPU's work,
not the launch queue. It logs ``train/clips_per_s`` per epoch and, on a GPU, ``train/peak_mem_mib``
(``torch.cuda.max_memory_allocated`` since the fit started: what the tensors took, not the caching
allocator's reserve). At the end of the fit
rank 0 writes ``{"device", "precision", "world_size", "epochs": [{"epoch", "clips", "seconds"}],
"clips_per_s", "clips_per_s_first_epoch", "peak_mem_mib", "peak_reserved_mib"}`` to ``path``;
``clips_per_s`` is over the epochs after the first (the first one carries cuDNN's autotuning and the data
workers' start), or the first when there is one. Under DDP every rank counts its own clips: the figure is
rank 0's clips times the world size (an estimate that takes the ranks' shares as equal), over rank 0's time,
and the peak memory is rank 0's.

Lightning's ``ThroughputMonitor`` logs a windowed per-step rate to the logger only; the fold runner needs one
figure per run in a file beside the run's test metrics, with the peak memory and the device named, so the
few lines here do that.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning as L
import torch


class FitThroughputToJson(L.Callback):
    """See the module docstring. ``path=None``: logs only; the records stay in ``epochs``."""

    def __init__(self, path: str | None = None):
        self.path = path
        self.epochs: list[dict] = []
        self._t0: float | None = None
        self._device: torch.device | None = None  # the fit's GPU, kept: at on_fit_end the module is on the CPU
        self._seconds = 0.0
        self._clips = 0

    def _cuda(self, pl_module) -> torch.device | None:
        if pl_module.device.type == "cuda":
            self._device = pl_module.device
        return self._device

    def _now(self, pl_module) -> float:
        if (dev := self._cuda(pl_module)) is not None:
            torch.cuda.synchronize(dev)
        return time.perf_counter()

    def on_fit_start(self, trainer, pl_module) -> None:
        self.epochs, self._device = [], None
        if (dev := self._cuda(pl_module)) is not None:
            torch.cuda.reset_peak_memory_stats(dev)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._t0, self._seconds, self._clips = self._now(pl_module), 0.0, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        x = batch.get("x") if isinstance(batch, dict) else (batch[0] if isinstance(batch, (list, tuple)) else batch)
        if isinstance(x, torch.Tensor):
            self._clips += int(x.shape[0])
        elif hasattr(x, "num_graphs"):  # a PyG batch
            self._clips += int(x.num_graphs)

    def _in_fit(self, trainer) -> bool:
        return trainer.state.fn == "fit" and not trainer.sanity_checking

    def on_validation_start(self, trainer, pl_module) -> None:
        if self._in_fit(trainer) and self._t0 is not None:  # the clock stops while validation runs
            self._seconds += self._now(pl_module) - self._t0
            self._t0 = None

    def on_validation_end(self, trainer, pl_module) -> None:
        # a validation inside the epoch (val_check_interval < 1): the clock runs on; after the last batch the
        # epoch is over (the checkpoint saved after validation is not training)
        if self._in_fit(trainer) and self._t0 is None and not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            self._t0 = self._now(pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self._t0 is not None:
            self._seconds += self._now(pl_module) - self._t0
            self._t0 = None
        seconds, clips = self._seconds, self._clips * trainer.world_size
        self.epochs.append({"epoch": trainer.current_epoch, "clips": clips, "seconds": round(seconds, 4)})
        metrics = {"train/clips_per_s": clips / max(seconds, 1e-9)}
        if (dev := self._cuda(pl_module)) is not None:
            metrics["train/peak_mem_mib"] = torch.cuda.max_memory_allocated(dev) / 2**20
        for k, v in metrics.items():
            pl_module.log(k, v, on_epoch=True, sync_dist=False, rank_zero_only=True)

    def summary(self, trainer, pl_module) -> dict:
        """The record written to ``path`` (see the module docstring)."""
        later = self.epochs[1:] or self.epochs
        clips, seconds = sum(e["clips"] for e in later), sum(e["seconds"] for e in later)
        out = {
            "device": torch.cuda.get_device_name(dev) if (dev := self._cuda(pl_module)) is not None else "cpu",
            "precision": str(trainer.precision),
            "world_size": trainer.world_size,
            "epochs": self.epochs,
            "clips_per_s": round(clips / seconds, 2) if seconds > 0 else None,
            "clips_per_s_first_epoch": (round(self.epochs[0]["clips"] / self.epochs[0]["seconds"], 2)
                                        if self.epochs and self.epochs[0]["seconds"] > 0 else None),
            "peak_mem_mib": None,
            "peak_reserved_mib": None,
        }
        if dev is not None:
            out["peak_mem_mib"] = round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)
            out["peak_reserved_mib"] = round(torch.cuda.max_memory_reserved(dev) / 2**20, 1)
        return out

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.path and trainer.is_global_zero:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            Path(self.path).write_text(json.dumps(self.summary(trainer, pl_module), indent=1))
