"""train.py: fit / validate / test / predict on a tiny config; default config; links; --print_config."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from train import DEFAULT_CONFIG, cli_main, with_default_config  # noqa: E402


def _tiny_args(tmp_path, variant="genre", extra=(), synthetic=None, epochs=1):
    """A tiny config on conf/default.yaml: runs under tmp_path/run, a small synthetic set, no workers."""
    cfg = yaml.safe_load(DEFAULT_CONFIG.read_text())
    cfg["trainer"].update(default_root_dir=str(tmp_path / "run"), enable_progress_bar=False, max_epochs=epochs)
    if variant == "events":
        cfg["checkpoint"].update(monitor="val/mAP", filename="best")
    cfg["data"]["init_args"].update(
        root=str(tmp_path / f"syn-{variant}"), batch_size=16, num_workers=0,
        synthetic=synthetic or {"variant": variant, "train": 48, "val": 16, "test": 16, "target_frames": 64,
                                "workers": 1, "shard_size": 16})
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return ["--config", str(path), *extra]


def run_dir(tmp_path, version=0):
    """Where the tiny config's fit number ``version`` lives."""
    return tmp_path / "run" / "default" / f"version_{version}"


def test_default_config_inserted_only_without_config():
    assert with_default_config(["fit"]) == ["fit", "--config", str(DEFAULT_CONFIG)]
    assert with_default_config(["fit", "--config", "x.yaml"]) == ["fit", "--config", "x.yaml"]
    assert with_default_config(["--help"]) == ["--help"]


def test_data_values_are_linked_into_the_model(tmp_path):
    cli = cli_main(["fit", *_tiny_args(tmp_path, "events")], run=False)
    assert cli.model.num_classes == 10 and cli.model.multilabel is True
    assert cli.model.class_names[0] == "beep"
    assert cli.model.backbone.head[-1].out_features == 10
    cfg = yaml.safe_load((REPO / "conf" / "default.yaml").read_text())
    assert "num_classes" not in json.dumps(cfg)  # never repeated in a config


def test_fit_validate_test_predict_end_to_end(tmp_path):
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(REPO)}
    args = _tiny_args(tmp_path, "genre")

    def run(*a):
        r = subprocess.run([sys.executable, str(REPO / "train.py"), *a], capture_output=True, text=True,
                           cwd=tmp_path, env=env, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        return r

    run("fit", *args)
    fit = run_dir(tmp_path)
    ckpt = fit / "checkpoints" / "last.ckpt"
    assert ckpt.exists() and list((fit / "checkpoints").glob("best-epoch00-acc*.ckpt"))
    saved = (fit / "config.yaml").read_bytes()  # the config as asked for, saved with the run
    assert yaml.safe_load(saved)["run"]["name"] == "default"
    assert list((fit / "wandb").glob("offline-run-*"))  # offline wandb run directory
    out = run("validate", *args, "--ckpt_path", str(ckpt)).stdout
    assert "val/acc" in out
    out = run("test", *args, "--ckpt_path", str(ckpt)).stdout
    assert "test/acc" in out and "test/f1" in out
    wav = tmp_path / "clip.wav"
    from datamodules.synthetic import SR, genre_clip

    sf.write(wav, genre_clip(3, 1.0)[0], SR)
    out = run("predict", *args, "--ckpt_path", str(ckpt), "--data.predict_files", f"[{wav}]").stdout
    line = [ln for ln in out.splitlines() if ln.startswith(str(wav))][0]
    classes = ["drone", "march", "skank", "salsa", "techno", "chime", "ballad", "breaks"]
    top = [p.split(" (")[0] for p in line.split(": ", 1)[1].split(", ")]
    assert len(top) == 5 and set(top) <= set(classes)
    scores = [float(p.split("(")[1].rstrip(")")) for p in line.split(": ", 1)[1].split(", ")]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0001
    # each later command wrote its own directory inside the training run; the training config is untouched
    assert (fit / "config.yaml").read_bytes() == saved
    for sub in ("validate_0", "test_0", "predict_0"):
        assert (fit / sub / "config.yaml").exists(), sub
    record = json.loads((fit / "predict_0" / "predictions.jsonl").read_text().splitlines()[0])
    assert record["file"] == str(wav) and [t["class"] for t in record["top"]] == top


def test_a_batch_count_of_one_stays_one_batch(tmp_path):
    """``--trainer.limit_val_batches 1`` is one batch (an int), ``1.0`` all of them, as Lightning documents, on
    the command line and in a config file (jsonargparse used to try float first: ``1`` became 1.0, every batch)."""
    extra = ["--trainer.limit_val_batches", "1", "--trainer.limit_train_batches", "0.5",
             "--trainer.limit_test_batches", "1.0", "--trainer.val_check_interval", "1"]
    args = _tiny_args(tmp_path, extra=extra)
    cfg = yaml.safe_load(Path(args[1]).read_text())
    cfg["trainer"]["limit_predict_batches"] = 1
    Path(args[1]).write_text(yaml.safe_dump(cfg))
    t = cli_main(["fit", *args], run=False).trainer
    got = {k: getattr(t, k) for k in ("limit_val_batches", "limit_train_batches", "limit_test_batches",
                                      "limit_predict_batches", "val_check_interval")}
    assert got == {"limit_val_batches": 1, "limit_train_batches": 0.5, "limit_test_batches": 1.0,
                   "limit_predict_batches": 1, "val_check_interval": 1}
    assert {k: type(v) for k, v in got.items()} == {"limit_val_batches": int, "limit_train_batches": float,
                                                    "limit_test_batches": float, "limit_predict_batches": int,
                                                    "val_check_interval": int}


def test_print_config_runs():
    r = subprocess.run([sys.executable, str(REPO / "train.py"), "fit", "--print_config"], capture_output=True,
                       text=True, timeout=120, cwd=REPO)
    assert r.returncode == 0, r.stderr[-2000:]
    cfg = yaml.safe_load(r.stdout)
    assert cfg["model"]["class_path"] == "audiognn.tasks.audio_classifier.AudioClassifier"
    assert cfg["data"]["init_args"]["synthetic"]["variant"] == "genre"


@pytest.mark.slow
def test_default_model_learns_synthetic_genre_set(tmp_path):
    """The embedded default (CNN on synthetic genre), on a reduced set: val accuracy >= 0.6 (chance 0.125)."""
    syn = {"variant": "genre", "train": 320, "val": 80, "test": 16, "target_frames": 128, "workers": 2,
           "shard_size": 32}
    cli = cli_main(["fit", *_tiny_args(tmp_path, "genre", synthetic=syn, epochs=5)], run=False)
    cli.trainer.fit(cli.model, cli.datamodule)
    acc = float(cli.trainer.callback_metrics["val/acc"])
    assert acc >= 0.6, acc


def test_run_directories(tmp_path, monkeypatch):
    """fit: the next free version_N (--ckpt_path last: the latest one, in place; --run.dir: exactly there);
    validate/test/predict: <the run holding the checkpoint>/<subcommand>_N."""
    from audiognn.cli.runs import resolve_run_dir

    for k in ("LOCAL_RANK", "NODE_RANK", "RANK", "SLURM_NTASKS", "AUDIOGNN_RUN_DIR"):
        monkeypatch.delenv(k, raising=False)
    root = tmp_path / "runs"
    assert resolve_run_dir("fit", root, "x", ckpt_path="last") == root / "x" / "version_0"  # nothing to resume
    assert resolve_run_dir("fit", root, "x") == root / "x" / "version_1"
    assert resolve_run_dir("fit", root, "x", ckpt_path="last") == root / "x" / "version_1"  # resumed in place
    assert (root / "x" / "latest").resolve() == (root / "x" / "version_1").resolve()
    assert resolve_run_dir("fit", root, "x", run_dir=tmp_path / "pinned") == tmp_path / "pinned"
    ckpt = root / "x" / "version_0" / "checkpoints" / "best.ckpt"
    assert resolve_run_dir("test", root, "x", ckpt_path=ckpt) == root / "x" / "version_0" / "test_0"
    assert resolve_run_dir("test", root, "x", ckpt_path=ckpt) == root / "x" / "version_0" / "test_1"
    assert resolve_run_dir("predict", root, "x", ckpt_path=tmp_path / "elsewhere.ckpt") == root / "x" / "predict_0"
    monkeypatch.setenv("LOCAL_RANK", "1")  # a DDP process Lightning started: the directory rank 0 chose
    assert resolve_run_dir("fit", root, "x") == root / "x" / "predict_0"


def test_wandb_mode_and_package_messages(monkeypatch):
    import logging

    from audiognn.cli.runs import quiet_console, wandb_mode

    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert wandb_mode("offline") == "offline" and wandb_mode("online") == "online"
    monkeypatch.setenv("WANDB_MODE", "online")  # the environment wins over the config
    assert wandb_mode("offline") == "online"
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    assert wandb_mode("online") == "offline"
    for key in ("WANDB_SILENT", "WANDB_DISABLE_GIT", "TQDM_MININTERVAL"):
        monkeypatch.setenv(key, os.environ.get(key, "x"))  # restored after the test
    quiet_console(stdout_is_tty=False)
    # what users need, e.g. how many items a modality covers (RecDataModule logs it at INFO), is shown
    assert logging.getLogger("datamodules.recsys.datamodule").isEnabledFor(logging.INFO)
    assert logging.getLogger("datamodules").handlers
