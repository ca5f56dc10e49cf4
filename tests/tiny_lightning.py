"""A tiny, deterministic LightningModule (Linear + BatchNorm, so buffers matter) for the scale-out tests.

Also a script for the subprocess tests (kill / resume / SLURM signal):
`python tests/tiny_lightning.py --root DIR --max_epochs 4 [--ckpt_path last] [--kill_at_epoch 2]
[--sigusr1_at_step 5] [--slurm]`; it prints one JSON line "RESULT {...}" at the end of fit.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, when run as a script

from audiognn.checkpoint import SafeCheckpointIO  # noqa: E402
from callbacks.weight_averaging import WindowWeightAveraging  # noqa: E402


def make_data(n: int = 64, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)  # [N, 4]
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()  # [N]
    return TensorDataset(x, y)


class TinyModule(pl.LightningModule):
    def __init__(self, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))

    def forward(self, x):
        return self.net(x)

    def _loss(self, batch):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def training_step(self, batch, batch_idx):
        loss = self._loss(batch)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self._loss(batch))

    def test_step(self, batch, batch_idx):
        self.log("test/loss", self._loss(batch))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


class TinyData(pl.LightningDataModule):
    def __init__(self, batch_size: int = 16) -> None:
        super().__init__()
        self.batch_size = batch_size

    def train_dataloader(self):
        return DataLoader(make_data(64, 0), batch_size=self.batch_size, shuffle=False)

    def val_dataloader(self):
        return DataLoader(make_data(32, 1), batch_size=32)

    def test_dataloader(self):
        return DataLoader(make_data(32, 2), batch_size=32)


@torch.no_grad()
def eval_loss(state_dict: dict, split_seed: int = 1) -> float:
    """Loss of TinyModule with `state_dict` on a held-out set, computed without Lightning."""
    m = TinyModule()
    m.load_state_dict(state_dict)
    m.eval()
    x, y = make_data(32, split_seed).tensors
    return float(nn.functional.cross_entropy(m(x), y))


class KillAt(pl.Callback):
    """SIGKILL this process at the start of an epoch (after the previous epoch's checkpoint was written)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGKILL)


class SignalAt(pl.Callback):
    """Send SIGUSR1 to this process after optimizer step `step` (what SLURM's --signal does)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGUSR1)


class StartState(pl.Callback):
    """Record what a (resumed) fit starts from: global step, epoch, optimizer and averaging state."""

    def on_train_start(self, trainer, pl_module):
        wa = next(cb for cb in trainer.callbacks if isinstance(cb, WindowWeightAveraging))
        opt = trainer.optimizers[0].state_dict()
        self.start = {
            "global_step": trainer.global_step,
            "epoch": trainer.current_epoch,
            "n_averaged": int(wa._average_model.n_averaged),
            "adam_steps": [float(s["step"]) for s in opt["state"].values()],
            "adam_exp_avg_sum": float(sum(s["exp_avg"].abs().sum() for s in opt["state"].values())),
        }


def main(argv=None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--root", required=True)
    p.add_argument("--max_epochs", type=int, default=4)
    p.add_argument("--ckpt_path", default=None)
    p.add_argument("--kill_at_epoch", type=int, default=None)
    p.add_argument("--sigusr1_at_step", type=int, default=None)
    p.add_argument("--wa_start", type=int, default=2)
    p.add_argument("--wa_end", type=int, default=3)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    root = Path(args.root)
    start = StartState()
    callbacks = [WindowWeightAveraging(wa_start=args.wa_start, wa_end=args.wa_end), start,
                 pl.callbacks.ModelCheckpoint(dirpath=root / "checkpoints", save_last=True, save_top_k=-1,
                                              filename="epoch{epoch}", auto_insert_metric_name=False)]
    if args.kill_at_epoch is not None:
        callbacks.append(KillAt(args.kill_at_epoch))
    if args.sigusr1_at_step is not None:
        callbacks.append(SignalAt(args.sigusr1_at_step))
    trainer = pl.Trainer(default_root_dir=root, max_epochs=args.max_epochs, accelerator="cpu", devices=1,
                         callbacks=callbacks, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, plugins=[SafeCheckpointIO()], deterministic=True)
    model = TinyModule()
    trainer.fit(model, datamodule=TinyData(), ckpt_path=args.ckpt_path)
    out = {"start": start.start, "global_step": trainer.global_step, "epoch": trainer.current_epoch,
           "interrupted": trainer.interrupted, "should_stop": trainer.should_stop,
           "final_weights_sum": float(sum(v.double().sum() for v in model.state_dict().values()
                                          if v.is_floating_point()))}
    torch.save(model.state_dict(), root / "final_state.pt")
    print("RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
