"""ConfusionMatrixPlot: the matrix equals the brute-force count, PNGs are written, wandb gets the image."""

from unittest import mock

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import WandbLogger
from torch.utils.data import DataLoader

from audiognn.models.genre_gnn import GenreGNN
from audiognn.tasks.audio_classifier import AudioClassifier
from callbacks.confusion_matrix import ConfusionMatrixPlot, plot_confusion_matrix


def _batches(n=4, b=6, C=3):
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        y = torch.randint(0, C, (b,), generator=g)
        out.append(
            {
                "x": torch.randn(b, 24, 16, generator=g),
                "y": torch.nn.functional.one_hot(y, C).float(),
                "key": [str(i) for i in range(b)],
            }
        )
    return out


def test_confusion_matrix_callback(tmp_path):
    C = 3
    module = AudioClassifier(
        lambda n: GenreGNN(n, n_mels=16, segment_frames=4, hidden=8, num_layers=1),
        C,
        data_info={"classes": ["a", "b", "c"]},
    )
    batches = _batches(C=C)
    cb = ConfusionMatrixPlot(dirpath=str(tmp_path / "cm"))
    logger = WandbLogger(save_dir=str(tmp_path), offline=True)
    with mock.patch.object(WandbLogger, "log_image") as log_image:
        trainer = L.Trainer(
            logger=logger,
            callbacks=[cb],
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            num_sanity_val_steps=0,
        )
        trainer.validate(module, DataLoader(batches, batch_size=None), verbose=False)
        trainer.test(module, DataLoader(batches, batch_size=None), verbose=False)
    module.eval()
    expected = torch.zeros(C, C, dtype=torch.long)
    with torch.no_grad():
        for bt in batches:
            for t, p in zip(bt["y"].argmax(1).tolist(), module(bt["x"]).argmax(1).tolist(), strict=True):
                expected[t, p] += 1
    assert torch.equal(cb.matrices["val"], expected)
    assert torch.equal(cb.matrices["test"], expected)
    assert (tmp_path / "cm" / "confusion_val_epoch00.png").exists()
    assert (tmp_path / "cm" / "confusion_test.png").exists()
    keys = [c.kwargs["key"] for c in log_image.call_args_list]
    assert keys == ["val/confusion_matrix", "test/confusion_matrix"]
    img = log_image.call_args_list[0].kwargs["images"][0]
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3


def test_plot_confusion_matrix_writes_png(tmp_path):
    fig = plot_confusion_matrix(np.array([[3, 1], [0, 4]]), ["x", "y"], "t", tmp_path / "a.png")
    assert (tmp_path / "a.png").stat().st_size > 1000
    assert "0.875" in fig.axes[0].get_title()
