"""``DataHealth``: log what the DataModule reports about its data's health (``data/corrupt_shards``).

A callback, so that tasks never read DataModule internals: it uses only the declared, documented property
``corrupt_shards`` (an ``int``: shards skipped as corrupt so far, e.g.
:attr:`datamodules.audio_shards.AudioShardDataModule.corrupt_shards` with ``skip_corrupt_shards``), and does
nothing for DataModules without it.
"""

from __future__ import annotations

import lightning.pytorch as pl


class DataHealth(pl.Callback):
    """At the end of each training epoch, log ``data/corrupt_shards`` (summed over ranks) when the
    DataModule has a ``corrupt_shards`` property whose value is a number (None: not counted)."""

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        value = getattr(trainer.datamodule, "corrupt_shards", None)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            pl_module.log("data/corrupt_shards", float(value), reduce_fx="sum", sync_dist=True)
