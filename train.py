"""audiognn's entry point: ``python train.py {fit,validate,test,predict} [--config conf/...yaml] [--key value]``.

A LightningCLI in subclass mode: any LightningModule (``--model``) and LightningDataModule (``--data``).
Without ``--config``, ``conf/default.yaml`` (the embedded default: a small CNN on the synthetic genre set)
is used. Values the data knows are linked into the model when both are instantiated: ``num_classes``,
``multilabel`` and ``data_info`` (classes, feature parameters, normalisation); modules without those
arguments (the recommender) are left alone.

Configs are composed (``compose:`` fragments are put before the recipe; an ``overlay:`` given first stops with a
message) and every path of an invocation derives from its run directory, ``<trainer.default_root_dir>/
<run.name>/version_N`` for ``fit`` and ``<that run>/<subcommand>_N`` for the others (``audiognn.cli.runs``).
The checkpoint callback has its own key, ``checkpoint:`` (``callbacks.checkpointing.RunCheckpoint``).
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and not sys.stdout.isatty():  # tqdm reads its TQDM_* defaults when imported
    os.environ.setdefault("TQDM_MININTERVAL", "30")
from pathlib import Path
from typing import Literal, Union

import lightning as L
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger

from audiognn.checkpoint import (
    CheckpointError,
    check_checkpoint_class,
    check_checkpoint_fits,
    load_checkpoint,
)
from audiognn.cli.errors import RunError, check_config_files, instantiation_error
from audiognn.cli.runs import (
    discard_if_empty,
    expand_configs,
    quiet_console,
    quiet_wandb,
    resolve_run_dir,
    wandb_mode,
)
from callbacks.checkpointing import RunCheckpoint
from callbacks.data_health import DataHealth
from callbacks.progress import LineProgress
from callbacks.signals import SignalCheckpoint

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
# Trainer arguments where an int counts batches and a float is a fraction (Lightning: ``1`` is one batch, ``1.0``
# all of them). Their annotation ``Optional[Union[int, float]]`` reaches jsonargparse as ``Union[float, int,
# None]`` (typing caches a Union by its set of members, so whichever order some library wrote first wins) and
# jsonargparse tries the members in that order: ``--trainer.limit_val_batches 1`` became 1.0, every batch.
# ``Union[int, float, None]`` written out has its own cache key: int first, as Lightning documents.
INT_OR_FRACTION = ("limit_train_batches", "limit_val_batches", "limit_test_batches", "limit_predict_batches",
                   "val_check_interval", "overfit_batches")


class SaveConfigToLogger(SaveConfigCallback):
    """Saves the config as requested (run name and root, not the derived paths) as ``config.yaml`` in this
    invocation's own run directory and, with wandb, into the run's config."""

    def save_config(self, trainer, pl_module, stage: str) -> None:
        if isinstance(trainer.logger, WandbLogger) and trainer.is_global_zero:
            trainer.logger.experiment.config.update(self.config.as_dict(), allow_val_change=True)


class AudioGNNCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        for action in parser._actions:  # jsonargparse has no public way to retype an added argument
            if action.dest.removeprefix("trainer.") in INT_OR_FRACTION and hasattr(action, "_typehint"):
                action._typehint = Union[int, float, None]
        for key in LINKED_FROM_DATA:
            parser.link_arguments(f"data.{key}", f"model.init_args.{key}", apply_on="instantiate")
        # the checkpoint callback has its own key: last.ckpt every epoch, the best by `monitor` beside it
        parser.add_lightning_class_args(RunCheckpoint, "checkpoint")
        parser.add_argument("--run.name", type=str, default="default",
                            help="the run's name: everything goes to <trainer.default_root_dir>/<name>/version_N")
        parser.add_argument("--run.dir", type=str | None, default=None,
                            help="pin this invocation's directory (SLURM jobs: requeues reuse it)")
        parser.add_argument("--run.wandb", type=Literal["offline", "online", "disabled"], default="offline",
                            help="wandb mode of a WandbLogger (the WANDB_MODE environment variable wins)")
        parser.add_argument("--compose", type=list[str] | None, default=None,
                            help="fragments this config builds on (train.py puts them before it)")
        parser.add_argument("--overlay", type=list[str] | None, default=None,
                            help="an overlay: the recipes (glob patterns) it goes after")

    def before_instantiate_classes(self) -> None:
        """Derive every path of this invocation from its run directory (see ``audiognn.cli.runs``)."""
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        self.requested_config = cfg.clone()  # what config.yaml records: the run's name, not derived paths
        for key in ("compose", "overlay", "run.dir"):  # a saved config is a whole recipe, never pinned
            self.requested_config[key] = None
        run_dir = resolve_run_dir(self.subcommand or "fit", cfg.trainer.default_root_dir or "runs", cfg.run.name,
                                  cfg.run.dir, cfg.get("ckpt_path"))
        root = Path(cfg.trainer.default_root_dir or "runs")
        cfg.trainer.default_root_dir = str(run_dir)
        if cfg.checkpoint.dirpath is None:
            cfg.checkpoint.dirpath = str(run_dir / "checkpoints")
        mode = wandb_mode(cfg.run.wandb)
        loggers = cfg.trainer.logger if isinstance(cfg.trainer.logger, list) else [cfg.trainer.logger]
        for lg in loggers:
            if getattr(lg, "class_path", "").endswith("WandbLogger"):
                args = lg.init_args
                if args.get("save_dir") in (None, "."):
                    args.save_dir = str(run_dir)
                args.name = args.get("name") or (run_dir.relative_to(root).as_posix()
                                                 if run_dir.is_relative_to(root) else run_dir.name)
                args.offline = mode == "offline"
                if mode == "disabled":
                    os.environ["WANDB_MODE"] = "disabled"
                quiet_wandb()
        self.line_progress = (not sys.stdout.isatty() and cfg.trainer.get("enable_progress_bar") is not False
                              and not any("Progress" in (c.get("class_path") or "") for c in cfg.trainer.callbacks or []))
        wandb = any(getattr(lg, "class_path", "").endswith("WandbLogger") for lg in loggers)
        hint = f"; upload later: wandb sync {run_dir}/wandb/offline-run-*" if mode == "offline" else ""
        self.run_dir = run_dir  # announced once the model and data are built (a bad input leaves no run behind)
        self.run_banner = f"run directory: {run_dir}" + (f" (wandb {mode}{hint})" if wandb else "")

    def instantiate_trainer(self, **kwargs):
        if getattr(self, "line_progress", False):  # output to a file: one line per epoch, no carriage returns
            prefix = f"{self.subcommand}." if self.subcommand else ""
            kwargs["callbacks"] = [*(self.config_init.get(f"{prefix}trainer.callbacks") or []), LineProgress()]
        trainer = super().instantiate_trainer(**kwargs)
        for cb in trainer.callbacks:
            if isinstance(cb, SaveConfigToLogger) and hasattr(self, "requested_config"):
                cb.config = self.requested_config
        return trainer

    def _parse_ckpt_path(self) -> None:
        # LightningCLI reads --ckpt_path's hyper-parameters before the Trainer (and its SafeCheckpointIO)
        # exists: check the file first so that a damaged or foreign checkpoint gets an error naming it, and
        # one of another model class gets one line naming both classes (not jsonargparse's dump).
        sub = self.config.get("subcommand")
        path = sub and self.config[sub].get("ckpt_path")
        self.ckpt = None
        if not (path and Path(str(path)).is_file()):
            return super()._parse_ckpt_path()
        self.ckpt = (str(path), load_checkpoint(path))
        check_checkpoint_class(self.ckpt[1], path, (self.config[sub].get("model") or {}).get("class_path"))
        self.parser.exit_on_error = False  # a mismatch raises (and is reported in one line) instead of exiting
        try:
            super()._parse_ckpt_path()
        except Exception as e:  # jsonargparse's ArgumentError: hyper-parameters the configured model does not take
            raise RunError(f"checkpoint {str(path)!r}: its hyper-parameters do not fit the configured model "
                           f"{self.config[sub]['model']['class_path']}: {str(e).splitlines()[0]}") from e
        finally:
            self.parser.exit_on_error = True

    def instantiate_classes(self) -> None:
        # a DataModule or model rejecting its input (a missing dataset.json, batch_size 0) is one line, and a
        # --ckpt_path whose sizes or weights do not fit the model is reported before any work
        try:
            super().instantiate_classes()
        except Exception as e:
            if (error := instantiation_error(e)) is None:
                raise
            discard_if_empty(self.run_dir)
            raise error from e
        print(self.run_banner, file=sys.stderr)
        if getattr(self, "ckpt", None) is not None:
            check_checkpoint_fits(self.ckpt[1], self.ckpt[0], self.model, LINKED_FROM_DATA,
                                  f"the data ({type(self.datamodule).__name__})")


def with_default_config(argv: list[str]) -> list[str]:
    """Insert ``--config conf/default.yaml`` after the subcommand when no ``--config`` is given."""
    if not argv or argv[0] not in SUBCOMMANDS:
        return argv
    if any(a == "--config" or a.startswith("--config=") for a in argv):
        return argv
    return [argv[0], "--config", str(DEFAULT_CONFIG), *argv[1:]]


def cli_main(args: list[str] | None = None, run: bool = True) -> AudioGNNCLI:
    """Parse, build and (``run``) run; a mistake in the input (:class:`RunError`, a damaged or mismatched
    checkpoint) is printed as one line ``error: ...`` and exits with code 2."""
    try:
        return _cli_main(args, run)
    except (RunError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def _cli_main(args: list[str] | None, run: bool) -> AudioGNNCLI:
    argv = expand_configs(with_default_config(list(sys.argv[1:] if args is None else args)))
    check_config_files(argv)
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
        trainer_defaults={"callbacks": [SignalCheckpoint(), DataHealth()]},  # added to every run's callbacks
        args=None if args is None else argv,
        run=run,
    )


if __name__ == "__main__":
    quiet_console(sys.stdout.isatty())
    cli_main()
