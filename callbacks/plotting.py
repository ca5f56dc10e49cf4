"""Where the plot callbacks put their images: a PNG in the run directory and an image in wandb."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger


def pyplot():
    """matplotlib's pyplot on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def run_dir(trainer) -> Path:
    """``trainer.log_dir`` without its broadcast from rank 0 (a collective call: when only rank 0 asks, as
    plots do, the run hangs): the first logger's directory, else ``default_root_dir``."""
    if trainer.loggers:
        lg = trainer.loggers[0]
        path = lg.log_dir if isinstance(lg, (TensorBoardLogger, CSVLogger)) else lg.save_dir
        if path:
            return Path(path)
    return Path(trainer.default_root_dir)


def plot_dir(trainer, dirpath: str | None = None) -> Path:
    """``dirpath`` when given, else ``<the run directory>/plots``."""
    return Path(dirpath) if dirpath else run_dir(trainer) / "plots"


def publish(fig, trainer, key: str, path: str | Path | None) -> None:
    """Save ``fig`` as a PNG at ``path`` (when given), log it to every WandbLogger as image ``key``, close it."""
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110, bbox_inches="tight")
    for lg in trainer.loggers:
        if isinstance(lg, WandbLogger):
            fig.canvas.draw()
            image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()  # [H, W, 3] uint8
            lg.log_image(key=key, images=[image], step=trainer.global_step)
    pyplot().close(fig)


def epoch_suffix(trainer, stage: str) -> str:
    """``_epochNN`` for validation images (one per epoch), nothing for test."""
    return f"_epoch{trainer.current_epoch:02d}" if stage == "val" else ""
