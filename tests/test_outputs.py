"""What a run leaves for people to look at, and that runs never overwrite each other: the default job fitted
twice from the command line with stdout in a file, no wandb account and no GPU (two versioned runs with their
own checkpoints, quiet readable output, confusion matrix and t-SNE PNGs), then `test` and the README's
EmbeddingWriter `predict` beside the training run (its config.yaml byte-identical; predictions.jsonl; embeddings
whose keys are the recommender's item ids); PR curves for a multi-label fit; last.ckpt at every epoch."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import yaml
from lightning.pytorch.demos.boring_classes import BoringModel

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from callbacks.checkpointing import RunCheckpoint  # noqa: E402
from callbacks.confusion_matrix import ConfusionMatrixPlot  # noqa: E402
from train import DEFAULT_CONFIG, cli_main  # noqa: E402

SPLITS = {"train": 48, "val": 16, "test": 16}
NOISE = ("LeafSpec", "IterableDataset", "💡 Tip", "anonymous setting", "git root", "litlogger")


def _digest(files) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture(scope="module")
def default_job(tmp_path_factory):
    """`python train.py fit` (the default job on a smaller synthetic set), run twice, then test and predict."""
    tmp = tmp_path_factory.mktemp("default-job")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "SLURM_"))}
    env.update(HOME=str(tmp), OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), WANDB_DIR=str(tmp),
               WANDB_CACHE_DIR=str(tmp), WANDB_CONFIG_DIR=str(tmp))  # no account, no GPU needed
    data = ["--trainer.default_root_dir", str(tmp / "runs"), "--data.init_args.root", str(tmp / "syn"),
            "--data.init_args.num_workers", "0", "--data.init_args.batch_size", "16",
            *[x for s, n in SPLITS.items() for x in (f"--data.init_args.synthetic.{s}", str(n))],
            "--data.init_args.synthetic.target_frames", "64", "--data.init_args.synthetic.workers", "1"]

    def run(*args, name):
        with open(tmp / f"{name}.out", "w") as out, open(tmp / f"{name}.err", "w") as err:
            r = subprocess.run([sys.executable, str(REPO / "train.py"), *args], stdout=out, stderr=err, cwd=tmp,
                               env=env, timeout=600)
        assert r.returncode == 0, (tmp / f"{name}.err").read_text()[-3000:]

    run("fit", *data, name="fit0")
    run0 = tmp / "runs" / "default" / "version_0"
    before = _digest((run0 / "checkpoints").iterdir()), (run0 / "config.yaml").read_bytes()
    run("fit", *data, "--trainer.max_epochs", "1", name="fit1")
    ckpt = run0 / "checkpoints" / "last.ckpt"
    run("test", "--config", str(run0 / "config.yaml"), "--ckpt_path", str(ckpt), name="test")
    # the README's EmbeddingWriter command, on the training run's saved config
    run("predict", "--config", str(run0 / "config.yaml"), "--ckpt_path", str(ckpt),
        "--trainer.callbacks+=callbacks.embeddings.EmbeddingWriter", "--trainer.callbacks.output", "audio.npz",
        "--data.init_args.test_splits", "[train, val, test]", name="predict")
    return tmp, run0, before


def test_two_fits_of_a_recipe_are_two_runs(default_job):
    tmp, run0, (ckpts0, config0) = default_job
    run1 = tmp / "runs" / "default" / "version_1"
    assert _digest((run0 / "checkpoints").iterdir()) == ckpts0  # the second fit touched nothing of the first
    assert "last.ckpt" in ckpts0 and [n for n in ckpts0 if n.startswith("best-epoch")]  # best kept beside last
    assert (run1 / "checkpoints" / "last.ckpt").exists() and list((run1 / "checkpoints").glob("best-*.ckpt"))
    assert torch.load(run1 / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0
    assert torch.load(run0 / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 3
    assert (tmp / "runs" / "default" / "latest").resolve() == run1.resolve()
    assert list((run0 / "wandb").glob("offline-run-*")) and list((run1 / "wandb").glob("offline-run-*"))


def test_test_and_predict_write_beside_the_training_run(default_job):
    tmp, run0, (_, config0) = default_job
    assert (run0 / "config.yaml").read_bytes() == config0  # byte-identical after test and predict
    assert (run0 / "test_0" / "config.yaml").exists() and (run0 / "predict_0" / "config.yaml").exists()
    assert (run0 / "test_0" / "plots" / "confusion_test.png").stat().st_size > 1000
    assert "test/acc" in (tmp / "test.out").read_text()
    lines = (run0 / "predict_0" / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == sum(SPLITS.values())  # every clip of the three splits, not the 1 of a stale config
    record = json.loads(lines[0])
    assert set(record) == {"file", "top"} and len(record["top"]) == 5
    printed = (tmp / "predict.out").read_text()
    assert f"{record['file']}: {record['top'][0]['class']} (" in printed and "predictions of 80 clips" in printed


def test_embeddings_key_the_recommenders_items(default_job, tmp_path):
    """The README's flow: clips named by item id -> audio.npz -> RecDataModule(modality_files={"audio": ...})."""
    from audiognn.data.modality_file import read_modality
    from datamodules.recsys import RecDataModule

    tmp, run0, _ = default_job
    keys, emb = read_modality(tmp / "audio.npz")
    assert len(keys) == len(set(keys)) == sum(SPLITS.values()) and np.isfinite(emb).all()
    rng = np.random.default_rng(0)
    rows = [(u, k) for u in range(12) for k in rng.choice(keys, 10, replace=False)]  # items = the clips' ids
    (tmp_path / "plays.csv").write_text("user,item\n" + "".join(f"u{u},{k}\n" for u, k in rows))
    dm = RecDataModule(reader="table", interactions=str(tmp_path / "plays.csv"),
                       modality_files={"audio": str(tmp / "audio.npz")}, use_social=False)
    feats, present = dm.rec_graph.modalities["audio"]
    assert present.all() and feats.shape == (dm.data.num_items, emb.shape[1])
    row = {k: i for i, k in enumerate(keys)}
    item = dm.data.item_keys[0]
    np.testing.assert_allclose(feats[0].numpy(), emb[row[item]], rtol=1e-6)


def test_output_people_read(default_job):
    tmp, run0, _ = default_job
    out, err = (tmp / "fit0.out").read_bytes(), (tmp / "fit0.err").read_text()
    assert len(out) < 10_000 and b"\r" not in out, out[-2000:]  # line progress when stdout is a file
    assert b"epoch 4/4" in out
    assert not [n for n in NOISE if n in err], err[-3000:]
    assert f"run directory: {run0}" in err
    plots = run0 / "plots"
    assert (plots / "confusion_val_epoch03.png").stat().st_size > 1000  # the last epoch's, on by default
    assert (plots / "clip_tsne_val.png").stat().st_size > 1000
    assert not list(plots.glob("pr_curves*"))  # multi-class: no PR curves


def test_multilabel_fit_writes_pr_curves_and_per_class_ap(tmp_path, synthetic_set):
    root = synthetic_set(variant="events", train=32, val=16, test=16, target_frames=64)
    cfg = yaml.safe_load(DEFAULT_CONFIG.read_text())
    cfg["checkpoint"].update(monitor="val/mAP", filename="best")
    path = tmp_path / "events.yaml"
    path.write_text(yaml.safe_dump(cfg))
    cli = cli_main(["fit", "--config", str(path), "--trainer.default_root_dir", str(tmp_path / "runs"),
                    "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false",
                    "--data.init_args.root", str(root), "--data.init_args.synthetic", "null",
                    "--data.init_args.num_workers", "0", "--data.init_args.batch_size", "16"], run=False)
    cli.trainer.fit(cli.model, cli.datamodule)
    cli.trainer.test(cli.model, cli.datamodule)
    plots = Path(cli.trainer.default_root_dir) / "plots"
    for name in ("pr_curves_val_epoch00", "per_class_ap_val_epoch00", "pr_curves_test", "per_class_ap_test"):
        assert (plots / f"{name}.png").stat().st_size > 1000, name
    assert not list(plots.glob("confusion*"))  # multi-label: no confusion matrix
    cb = next(c for c in cli.trainer.callbacks if type(c).__name__ == "PRCurvePlot")
    precision, recall, ap = cb.curves["test"]
    assert precision.shape == recall.shape == (10, 201) and ap.shape == (10,)
    seen = ~ap.isnan()  # classes with positives among the 16 test clips
    assert seen.any() and ((ap[seen] >= 0) & (ap[seen] <= 1.0001)).all()


def test_confusion_matrix_classes_in_dataset_order():
    class Module:
        class_names = ["zeta", "alpha", "mid"]  # dataset.json order, not alphabetical

    assert ConfusionMatrixPlot()._names(None, Module(), 3) == ["zeta", "alpha", "mid"]


class WorseningModel(BoringModel):
    """val/acc falls every epoch: only epoch 0 is ever the best."""

    def on_validation_epoch_end(self):
        self.log("val/acc", 1.0 - 0.1 * self.current_epoch)


@pytest.mark.parametrize("every", [1, 2])
def test_last_checkpoint_is_the_latest_epoch_whatever_the_metric(tmp_path, every):
    ckpt = RunCheckpoint(dirpath=tmp_path, filename="best-{epoch}", monitor="val/acc", mode="max", save_top_k=1,
                         save_last=True)
    trainer = pl.Trainer(default_root_dir=tmp_path, max_epochs=3, limit_train_batches=2, limit_val_batches=1,
                         check_val_every_n_epoch=every, callbacks=[ckpt], logger=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")
    trainer.fit(WorseningModel())
    last = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert (last["epoch"], last["global_step"]) == (2, 6)  # the latest epoch: what a resume continues from
    best = 0 if every == 1 else 1  # the first validated epoch
    assert sorted(p.name for p in tmp_path.glob("best-*.ckpt")) == [f"best-epoch={best}.ckpt"]  # kept apart
