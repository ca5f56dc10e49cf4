"""audiognn's entry point: ``python train.py {fit,validate,test,predict} [--config conf/...yaml] [--key value]``.

A LightningCLI in subclass mode: any LightningModule (``--model``) and LightningDataModule (``--data``).
Without ``--config``, ``conf/default.yaml`` (the embedded default: a small CNN on the synthetic genre set)
is used. Values the data knows are linked into the model when both are instantiated: ``num_classes``,
``multilabel`` and ``data_info`` (classes, feature parameters, normalisation); modules without those
arguments (the recommender) are left alone.
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger

from audiognn.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parent
DEFAULT_CONFIG = ROOT / "conf" / "default.yaml"
SUBCOMMANDS = ("fit", "validate", "test", "predict")
# What the data knows reaches the model when both are instantiated: each key is a DataModule attribute linked
# to the model's init argument of the same name; models without that argument are left alone.
LINKED_FROM_DATA = (
    "num_classes", "multilabel", "data_info",  # audio classification
    "num_node_features", "num_free_nodes", "num_relations",  # link prediction
    "rec_graph",  # recommendation: the training graph and item modalities
)


class SaveConfigToLogger(SaveConfigCallback):
    """Saves the resolved config beside the run (overwriting) and, with wandb, into the run's config."""

    def save_config(self, trainer, pl_module, stage: str) -> None:
        if isinstance(trainer.logger, WandbLogger) and trainer.is_global_zero:
            trainer.logger.experiment.config.update(self.config.as_dict(), allow_val_change=True)


class AudioGNNCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        for key in LINKED_FROM_DATA:
            parser.link_arguments(f"data.{key}", f"model.init_args.{key}", apply_on="instantiate")
        # the checkpoint callback has its own key, so `--checkpoint.dirpath DIR` works from the command line
        # (SLURM scripts give each job a stable directory that survives requeues)
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")

    def _parse_ckpt_path(self) -> None:
        # LightningCLI reads --ckpt_path's hyper-parameters before the Trainer (and its SafeCheckpointIO)
        # exists: check the file first so that a damaged or foreign checkpoint gets an error naming it.
        sub = self.config.get("subcommand")
        path = sub and self.config[sub].get("ckpt_path")
        if path and Path(str(path)).is_file():
            load_checkpoint(path)
        super()._parse_ckpt_path()


def with_default_config(argv: list[str]) -> list[str]:
    """Insert ``--config conf/default.yaml`` after the subcommand when no ``--config`` is given."""
    if not argv or argv[0] not in SUBCOMMANDS:
        return argv
    if any(a == "--config" or a.startswith("--config=") for a in argv):
        return argv
    return [argv[0], "--config", str(DEFAULT_CONFIG), *argv[1:]]


def cli_main(args: list[str] | None = None, run: bool = True) -> AudioGNNCLI:
    argv = with_default_config(list(sys.argv[1:] if args is None else args))
    if not run and argv and argv[0] in SUBCOMMANDS:  # run=False parses without a subcommand
        argv = argv[1:]
    if args is None:  # from the command line: hand LightningCLI the (amended) sys.argv
        sys.argv[1:] = argv
    return AudioGNNCLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_callback=SaveConfigToLogger,
        save_config_kwargs={"overwrite": True},
        args=None if args is None else argv,
        run=run,
    )


if __name__ == "__main__":
    cli_main()
