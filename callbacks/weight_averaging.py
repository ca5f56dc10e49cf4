"""Checkpoint weight averaging (AST / PSLA, used by LHGNN: Singh et al., *LHGNN: Local-Higher Order Graph
Neural Networks for Audio Classification and Tagging*, §III-A) on Lightning's `WeightAveraging`.

LHGNN reports AudioSet mAP from "a weighted average of different model checkpoints as mentioned in [20]"
(PSLA). PSLA and AST average the end-of-epoch weights of epochs `wa_start..wa_end` (1-based, inclusive)
with equal weights; the paper gives neither the window nor non-equal weights, so the default here is the
equal mean over `wa_start=1..wa_end=None` (= the last epoch); set the window in the config
(AST AudioSet: 1..5, PSLA AudioSet: 16..30). The official LHGNN code (github.com/shubhrsingh22/LHGNN)
averages every saved checkpoint (the top 20 by validation mAP + last): `CheckpointAveraging` does that at
the end of fit, `python -m callbacks.average_checkpoints` offline.

`WindowWeightAveraging` keeps the running mean online (no per-epoch files), buffers included:
averaged = (1/n) Σ_{e=wa_start}^{min(wa_end, last)} θ_e, where θ_e are the parameters and float buffers
(BatchNorm running statistics) at the end of epoch e. Integer buffers (BatchNorm `num_batches_tracked`)
are counters, not weights: they take the live model's value instead of a truncated integer mean.

What the Lightning 2.6 callback does and what this module changes:
- Validation and the final model use the averaged weights; checkpoints hold the averaged weights in
  `state_dict` (so `test --ckpt_path` evaluates the average) and the live ones in `current_model_state`
  with the averaging state (`n_averaged`) in `averaging_state` (so `fit --ckpt_path` resumes exactly).
- Guard for upstream bug #21724: before the first update, upstream swaps the untrained copy in for
  validation, copies it into the model at the end of training and saves it as `state_dict`. Here the
  swap, the final copy and the checkpoint's `state_dict` use the average only once `n_averaged > 0`.
- The averaged copy holds weights only: other attributes are shared with the model, not deep-copied
  (upstream deep-copies the whole LightningModule, which fails on e.g. a jsonargparse optimizer partial).
- A checkpoint written while the weights are swapped (e.g. SLURM's SIGUSR1 arriving during validation)
  stores the two weight sets under the right keys (upstream would swap them).
- The epoch update happens at the epoch's last training batch rather than in `on_train_epoch_end`,
  which Lightning runs after the epoch's validation: this way the epoch's own validation (and a
  checkpoint saved on validation end) already includes it; the weights are the same, nothing changes
  them in between. `on_train_epoch_end` remains the fallback when the last batch cannot be recognised.
- The epoch of the last update is part of the callback state, so a resumed run never counts an epoch twice.

`EMAWeightAveraging` is Lightning's EMA with the same guards, selectable in the config instead.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import weight_averaging as _wa
from lightning.pytorch.utilities.model_helpers import is_overridden
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

from audiognn.cli.average_checkpoints import average_checkpoints


def _copy_weights(module: nn.Module) -> nn.Module:
    """Deep copy of `module`'s parameters, buffers and submodules; other attributes are shared, not copied.

    The averaged copy only stores weights (it is never called: values are swapped into the live module), and
    `AveragedModel`'s plain deepcopy fails on attributes that cannot be copied, e.g. a jsonargparse optimizer
    partial that references the DataModule's `multiprocessing.Value`.
    """
    memo = {id(v): v for m in module.modules() for k, v in vars(m).items()
            if k not in ("_parameters", "_buffers", "_modules") and not isinstance(v, (Tensor, nn.Module))}
    return copy.deepcopy(module, memo)


class _GuardedAveraging(_wa.WeightAveraging):
    """`WeightAveraging` that never lets the not-yet-updated copy stand in for the model (see module doc)."""

    _swapped = False

    def setup(self, trainer, pl_module, stage: str) -> None:
        # As upstream, except for how the module is copied (see _copy_weights).
        if stage != "fit":
            return
        if is_overridden("configure_model", pl_module):
            rank_zero_warn(f"{type(self).__name__} does not shard the averaged copy of a model built in "
                           "configure_model: it may not fit in memory.")
            pl_module.configure_model()
        self._average_model = AveragedModel(nn.Module(), use_buffers=self._use_buffers, **self._kwargs)
        self._average_model.module = _copy_weights(pl_module).to(self._device or pl_module.device)

    def has_average(self) -> bool:
        """True once the averaged model has been updated at least once."""
        return self._average_model is not None and int(self._average_model.n_averaged) > 0

    def _update_average(self, pl_module: pl.LightningModule) -> None:
        assert self._average_model is not None
        self._average_model.update_parameters(pl_module)
        # Integer buffers are counters (BatchNorm num_batches_tracked): keep the live value.
        for avg_buf, buf in zip(self._average_model.module.buffers(), pl_module.buffers()):
            if not (avg_buf.is_floating_point() or avg_buf.is_complex()):
                avg_buf.copy_(buf)

    # -- updates (the same logic as upstream, routed through _update_average) --------------------------
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step_idx = trainer.global_step - 1
        if trainer.global_step > self._latest_update_step and self.should_update(step_idx=step_idx):
            self._update_average(pl_module)
            self._latest_update_step = trainer.global_step

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        epoch = trainer.current_epoch
        if epoch > self._latest_update_epoch and self.should_update(epoch_idx=epoch):
            self._update_average(pl_module)
            self._latest_update_epoch = epoch

    # -- guards ----------------------------------------------------------------------------------------
    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._swapped = self.has_average()
        if self._swapped:
            self._swap_models(pl_module)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if self._swapped:
            self._swap_models(pl_module)
            self._swapped = False

    def on_train_end(self, trainer, pl_module) -> None:
        if self.has_average():
            self._copy_average_to_current(pl_module)
        elif self._average_model is not None:
            rank_zero_warn(
                f"{type(self).__name__}: training ended before the first averaging update; the model keeps its "
                "last weights (check the averaging window against max_epochs)."
            )

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        if self._average_model is None:  # outside fit: upstream only logs
            return super().on_save_checkpoint(trainer, pl_module, checkpoint)
        avg_state = self._average_model.state_dict()
        other = {k[len("module."):]: v for k, v in avg_state.items() if k.startswith("module.")}
        # While validating, pl_module holds the averaged weights and the AveragedModel the live ones.
        live, average = (other, checkpoint["state_dict"]) if self._swapped else (checkpoint["state_dict"], other)
        checkpoint["current_model_state"] = live
        checkpoint["state_dict"] = average if self.has_average() else live
        checkpoint["averaging_state"] = {k: v for k, v in avg_state.items() if not k.startswith("module.")}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "latest_update_epoch": self._latest_update_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._latest_update_epoch = state_dict.get("latest_update_epoch", -1)


class WindowWeightAveraging(_GuardedAveraging):
    """Equal mean of the end-of-epoch weights of epochs `wa_start..wa_end` (1-based, inclusive; AST/PSLA).

    Args:
        wa_start: first epoch in the average (1-based, as in AST/PSLA's `--wa_start`).
        wa_end: last epoch in the average (inclusive); None = up to the last epoch trained.
        device: where the averaged copy lives (None = the model's device; "cpu" saves GPU memory).
        use_buffers: average the float buffers (BatchNorm statistics) too, as PSLA/AST's state-dict
            average does; False leaves them to `torch.optim.swa_utils.update_bn`.
    """

    def __init__(self, wa_start: int = 1, wa_end: int | None = None, device: str | None = None,
                 use_buffers: bool = True) -> None:
        if wa_start < 1 or (wa_end is not None and wa_end < wa_start):
            raise ValueError(f"WindowWeightAveraging: need 1 <= wa_start <= wa_end, got wa_start={wa_start}, "
                             f"wa_end={wa_end} (epochs are 1-based and inclusive)")
        super().__init__(device=device, use_buffers=use_buffers)  # default avg_fn: equal-weight mean
        self.wa_start = wa_start
        self.wa_end = wa_end

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        # epoch_idx is 0-based; the window is 1-based inclusive.
        end = math.inf if self.wa_end is None else self.wa_end
        return epoch_idx is not None and self.wa_start - 1 <= epoch_idx <= end - 1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # Update at the epoch's last batch so that this epoch's validation and checkpoint include it.
        if trainer.is_last_batch or batch_idx + 1 >= trainer.num_training_batches:
            self.on_train_epoch_end(trainer, pl_module)


class EMAWeightAveraging(_GuardedAveraging, _wa.EMAWeightAveraging):
    """Lightning's exponential moving average (`decay`, `update_every_n_steps`, `update_starting_at_step`,
    `update_starting_at_epoch`) with this module's guards."""



class CheckpointAveraging(pl.Callback):
    """At the end of fit, the equal mean of every checkpoint the run's checkpoint callback kept (its
    `save_top_k` best by `monitor`, plus `last.ckpt`), written beside them as `output` (AST / PSLA's and the
    official LHGNN code's averaging: the top 20 by validation mAP + last, BatchNorm statistics included).

    The files are averaged as files, with `audiognn.cli.average_checkpoints` (per-epoch weights, integer
    buffers from `last.ckpt`, whose metadata the result keeps): when the last epoch is also among the best,
    its weights count twice, as in an average of every saved file. Test the result with
    `train.py test --ckpt_path <run>/checkpoints/<output>`. Rank 0 writes it; the other ranks wait. The
    inputs are held in memory together (about 21 x one checkpoint for the top 20 + last).

    Args:
        output: file name of the average in the checkpoint directory (default "averaged.ckpt").
        include_last: average `last.ckpt` too (default True).
    """

    def __init__(self, output: str = "averaged.ckpt", include_last: bool = True) -> None:
        self.output, self.include_last = output, include_last
        self.averaged_from: list[str] = []

    def inputs(self, trainer) -> list[str]:
        """The kept checkpoints, best first, then `last.ckpt` (when kept and `include_last`)."""
        ckpt = trainer.checkpoint_callback
        if ckpt is None:
            return []
        best = sorted(ckpt.best_k_models, key=lambda k: float(ckpt.best_k_models[k]), reverse=ckpt.mode == "max")
        last = [ckpt.last_model_path] if self.include_last and ckpt.last_model_path else []
        return [p for p in best + last if Path(p).is_file()]

    def on_fit_end(self, trainer, pl_module) -> None:
        paths = self.inputs(trainer)
        if not paths:
            rank_zero_warn("CheckpointAveraging: the run kept no checkpoint to average")
            return
        out = Path(paths[-1]).parent / self.output
        if trainer.is_global_zero:
            average_checkpoints(paths, out)
        trainer.strategy.barrier()
        self.averaged_from = paths
        rank_zero_info(f"CheckpointAveraging: {len(paths)} checkpoints averaged -> {out}")
