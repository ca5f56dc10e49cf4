"""Run-level faults: each is planted and must end in ONE line naming the file / key / value, before any work.

* a YAML syntax error (or a missing file) in ``--config``;
* ``--ckpt_path`` of a checkpoint trained on 8 classes tested on 3-class data, of another LightningModule
  class, of another backbone, or with hyper-parameters the configured model does not take;
* a DataModule rejecting its input (``--data.batch_size 0``, a directory without ``dataset.json``);
* SIGUSR1 outside SLURM: a checkpoint is saved at the next batch boundary and the run exits with code 0;
* ``data/corrupt_shards`` is logged by a callback from the DataModule's declared ``corrupt_shards``.
"""

from __future__ import annotations

import functools
import inspect
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import lightning.pytorch as pl
import pytest
import torch
import yaml
from tiny_lightning import TinyData, TinyModule

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from audiognn.checkpoint import CheckpointError, check_checkpoint_fits, find_resume_checkpoint  # noqa: E402
from audiognn.cli.errors import RunError, check_config_files, instantiation_error  # noqa: E402
from audiognn.models.cnn import CNN  # noqa: E402
from audiognn.models.rnn import RNN  # noqa: E402
from audiognn.tasks.audio_classifier import AudioClassifier  # noqa: E402
from callbacks.data_health import DataHealth  # noqa: E402
from callbacks.signals import SignalCheckpoint  # noqa: E402
from train import DEFAULT_CONFIG, LINKED_FROM_DATA, cli_main  # noqa: E402

AC = "audiognn.tasks.audio_classifier.AudioClassifier"
CNN_ARGS = {"channels": [8, 16, 32, 64], "dropout": 0.2}  # conf/default.yaml's backbone


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), WANDB_MODE="disabled")
    return env


def run_train(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "train.py"), *map(str, args)], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=180)


def tiny_trainer(root, **kw) -> pl.Trainer:
    return pl.Trainer(default_root_dir=root, accelerator="cpu", logger=False, enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=False, **kw)


def error_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith("error:")]


@pytest.fixture
def three_class(tmp_path, make_shards):
    """A 3-class shard set and a tiny config (conf/default.yaml on it: no logger, no extra callbacks)."""
    make_shards(tmp_path / "three", [8], extra_splits={"val": [8], "test": [8]}, frames=32, bins=16)
    cfg = yaml.safe_load(DEFAULT_CONFIG.read_text())
    cfg["trainer"].update(default_root_dir=str(tmp_path / "run"), logger=False, callbacks=[],
                          enable_progress_bar=False, max_epochs=1)
    cfg["checkpoint"].update(dirpath=str(tmp_path / "run" / "ckpt"), monitor=None, filename="x")
    cfg["data"]["init_args"].update(root=str(tmp_path / "three"), batch_size=8, num_workers=0, synthetic=None)
    path = tmp_path / "tiny3.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def save_classifier_ckpt(path, backbone, num_classes, class_path=AC, hparams=True):
    """A Lightning-style checkpoint of ``AudioClassifier(backbone, num_classes)`` as LightningCLI writes it."""
    model = AudioClassifier(backbone, num_classes=num_classes)
    ckpt = {"state_dict": model.state_dict(), "pytorch-lightning_version": L.__version__, "epoch": 0,
            "global_step": 0}
    if hparams:
        ckpt["hyper_parameters"] = {"_class_path": class_path, **dict(model.hparams)} if class_path else \
            dict(model.hparams)
    torch.save(ckpt, path)
    return path


def run_cli_expecting_error(args, capsys, monkeypatch) -> str:
    """``cli_main(args)`` must exit with code 2 and one ``error:`` line, never reaching the Trainer."""
    monkeypatch.setattr(pl.Trainer, "_run", lambda *a, **k: pytest.fail("the run started"))
    with pytest.raises(SystemExit) as exc:
        cli_main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    lines = error_lines(err)
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


# --- 1. config files ------------------------------------------------------------------------------------
def test_yaml_syntax_error_is_one_line_naming_file_and_line(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("trainer:\n  max_epochs: 2\n  devices: [1\nmodel: x\n")
    r = run_train("fit", "--config", bad, cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == error_lines(r.stderr), r.stderr[-3000:]  # nothing but that line
    (line,) = error_lines(r.stderr)
    assert str(bad) in line and "line 4, column" in line and "invalid YAML" in line


def test_missing_config_file_is_named():
    with pytest.raises(RunError, match=r"config file 'conf/nope\.yaml' does not exist"):
        check_config_files(["fit", "--config", str(DEFAULT_CONFIG), "--config=conf/nope.yaml"])
    check_config_files(["fit", "--config", str(DEFAULT_CONFIG), "--config", "{trainer: {max_epochs: 1}}"])


# --- 2. checkpoints that do not fit ---------------------------------------------------------------------
def test_checkpoint_of_8_classes_on_3_class_data(three_class, tmp_path, capsys, monkeypatch):
    ckpt = save_classifier_ckpt(tmp_path / "c8.ckpt", functools.partial(CNN, **CNN_ARGS), 8)
    line = run_cli_expecting_error(["test", "--config", str(three_class), "--ckpt_path", str(ckpt)],
                                   capsys, monkeypatch)
    assert "c8.ckpt" in line and "num_classes=8" in line and "num_classes=3" in line
    assert "AudioShardDataModule" in line


def test_checkpoint_of_another_task_class(three_class, tmp_path, capsys, monkeypatch):
    ckpt = save_classifier_ckpt(tmp_path / "lp.ckpt", functools.partial(CNN, **CNN_ARGS), 3,
                                class_path="audiognn.tasks.link_prediction.LinkPrediction")
    line = run_cli_expecting_error(["validate", "--config", str(three_class), "--ckpt_path", str(ckpt)],
                                   capsys, monkeypatch)
    assert "lp.ckpt" in line and "audiognn.tasks.link_prediction.LinkPrediction" in line and AC in line


def test_checkpoint_of_another_backbone_without_hyperparameters(three_class, tmp_path, capsys, monkeypatch):
    ckpt = save_classifier_ckpt(tmp_path / "rnn.ckpt", functools.partial(RNN, n_mels=16), 3, hparams=False)
    line = run_cli_expecting_error(["test", "--config", str(three_class), "--ckpt_path", str(ckpt)],
                                   capsys, monkeypatch)
    assert "rnn.ckpt" in line and "AudioClassifier(backbone=CNN)" in line and "missing keys" in line
    assert "unexpected keys" in line


def test_checkpoint_hyperparameters_the_model_does_not_take(three_class, tmp_path, capsys, monkeypatch):
    ckpt = tmp_path / "odd.ckpt"
    save_classifier_ckpt(ckpt, functools.partial(CNN, **CNN_ARGS), 3, class_path=None)
    saved = torch.load(ckpt, weights_only=True)
    saved["hyper_parameters"]["num_relations"] = 4  # a link-prediction argument
    torch.save(saved, ckpt)
    line = run_cli_expecting_error(["test", "--config", str(three_class), "--ckpt_path", str(ckpt)],
                                   capsys, monkeypatch)
    assert "odd.ckpt" in line and "hyper-parameters do not fit" in line and AC in line


def test_matching_checkpoint_reaches_the_trainer(three_class, tmp_path, monkeypatch):
    """The control: a checkpoint that fits passes the checks and the run starts with it."""
    ckpt = save_classifier_ckpt(tmp_path / "ok.ckpt", functools.partial(CNN, **CNN_ARGS), 3)
    called = {}

    class Reached(Exception):
        pass

    def reached(self, model, **kw):
        called.update(kw, model=model)
        raise Reached

    monkeypatch.setattr(pl.Trainer, "_run", reached)
    with pytest.raises(Reached):
        cli_main(["test", "--config", str(three_class), "--ckpt_path", str(ckpt)])
    assert called["ckpt_path"] == str(ckpt) and called["model"].num_classes == 3
    state = torch.load(ckpt, weights_only=True)
    check_checkpoint_fits(state, ckpt, called["model"], LINKED_FROM_DATA)  # silent
    state["state_dict"]["backbone.head.1.bias"] = torch.zeros(5)  # a shape no hyper-parameter explains
    with pytest.raises(CheckpointError, match=r"ok\.ckpt.*backbone\.head\.1\.bias has shape \[5\] in the "
                                              r"checkpoint, \[3\] in the model"):
        check_checkpoint_fits(state, ckpt, called["model"], LINKED_FROM_DATA)


# --- 5. DataModules rejecting their input: one line from train.py ----------------------------------------
def test_datamodule_input_errors_are_one_line(three_class, tmp_path):
    r = run_train("validate", "--config", three_class, "--data.init_args.batch_size", "0", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    (line,) = error_lines(r.stderr)
    assert "AudioShardDataModule" in line and "batch_size" in line and "0" in line
    assert r.stderr.strip().splitlines()[-1] == line  # the last word, after at most a few notices
    r = run_train("validate", "--config", three_class, "--data.init_args.root", tmp_path / "empty", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    (line,) = error_lines(r.stderr)
    assert "AudioShardDataModule" in line and str(tmp_path / "empty") in line and "dataset.json" in line


def test_bugs_keep_their_traceback():
    """Only input errors (ValueError, OSError, ShardError) become one line; a TypeError is a bug."""
    try:
        try:
            raise TypeError("bug")
        except TypeError as e:
            raise ValueError("jsonargparse-like wrapper") from e
    except ValueError as wrapped:
        assert str(instantiation_error(wrapped)) == "jsonargparse-like wrapper"
    assert instantiation_error(TypeError("bug")) is None


# --- 3. SIGUSR1 outside SLURM -----------------------------------------------------------------------------
DRIVER = """
import sys, json
sys.path[:0] = [{tests!r}, {repo!r}]
import lightning.pytorch as pl
from tiny_lightning import SignalAt, TinyData, TinyModule
from callbacks.signals import SignalCheckpoint
cbs = ([SignalAt(int(sys.argv[2]))] if sys.argv[2] != "-" else []) + [SignalCheckpoint()]
t = pl.Trainer(default_root_dir=sys.argv[1], max_epochs=3, accelerator="cpu", logger=False,
               enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False, callbacks=cbs)
t.fit(TinyModule(), datamodule=TinyData(), ckpt_path=None if sys.argv[3] == "-" else sys.argv[3])
print("RESULT " + json.dumps({{"global_step": t.global_step, "saved": str(cbs[-1].saved)}}), flush=True)
"""


def test_sigusr1_outside_slurm_saves_and_exits_cleanly(tmp_path):
    code = DRIVER.format(tests=str(REPO / "tests"), repo=str(REPO))
    run = tmp_path / "run"

    def drive(signal_at, ckpt):
        return subprocess.run([sys.executable, "-c", code, str(run), signal_at, ckpt], env=_env(), cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)

    first = drive("3", "-")  # 4 steps per epoch; SIGUSR1 after step 3: saved mid-epoch, at that boundary
    assert first.returncode == 0, first.stderr[-3000:]
    hpc = run / "hpc_ckpt_1.ckpt"
    assert f"saved checkpoint '{hpc}' at step 3" in first.stderr
    assert '"global_step": 3' in first.stdout  # stopped at that batch boundary
    assert torch.load(hpc, weights_only=True)["global_step"] == 3
    assert find_resume_checkpoint(run) == hpc  # what the resume helper (and the sbatch scripts) pick
    second = drive("-", str(hpc))
    assert second.returncode == 0, second.stderr[-3000:]
    # resumed mid-epoch at step 3: 3 epochs x 4 steps in all, no epoch repeated
    assert '"global_step": 12' in second.stdout and not (run / "hpc_ckpt_2.ckpt").exists()


def test_signal_handler_left_to_slurm(tmp_path, monkeypatch):
    """Under SLURM, Lightning's requeue handler keeps SIGUSR1 (tests/test_slurm.py runs it end to end)."""
    import signal

    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_JOB_NAME", "fit")
    cb = SignalCheckpoint()
    trainer = tiny_trainer(tmp_path, max_steps=1)
    before = signal.getsignal(signal.SIGUSR1)
    cb.on_train_start(trainer, TinyModule())
    assert signal.getsignal(signal.SIGUSR1) is before and not cb._installed
    monkeypatch.delenv("SLURM_NTASKS")
    cb.on_train_start(trainer, TinyModule())
    assert signal.getsignal(signal.SIGUSR1) == cb._handler
    cb.teardown(trainer, TinyModule(), "fit")
    assert signal.getsignal(signal.SIGUSR1) is before


# --- 4. data health through a declared interface -----------------------------------------------------------
class CorruptData(TinyData):
    @property
    def corrupt_shards(self) -> int:
        return 2


def test_corrupt_shards_logged_by_a_callback(tmp_path):
    trainer = tiny_trainer(tmp_path, max_epochs=1, limit_train_batches=1, limit_val_batches=0,
                           callbacks=[DataHealth()])
    trainer.fit(TinyModule(), datamodule=CorruptData())
    assert float(trainer.callback_metrics["data/corrupt_shards"]) == 2.0
    trainer = tiny_trainer(tmp_path, max_epochs=1, limit_train_batches=1, limit_val_batches=0,
                           callbacks=[DataHealth()])
    trainer.fit(TinyModule(), datamodule=TinyData())  # no such property: nothing logged
    assert "data/corrupt_shards" not in trainer.callback_metrics
    # the task no longer reads the DataModule; train.py adds both callbacks to every run
    assert "datamodule" not in inspect.getsource(AudioClassifier)
    cli = cli_main(["fit", "--trainer.logger", "false"], run=False)
    kinds = {type(cb) for cb in cli.trainer.callbacks}
    assert {SignalCheckpoint, DataHealth} <= kinds



def test_fit_check_follows_state_dict_pre_hooks():
    """Keys renamed by a module's load_state_dict pre-hook (e.g. LHGNN's former ``classifier``) still fit."""
    class Renamed(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.new = torch.nn.Linear(2, 3)
            self._register_load_state_dict_pre_hook(self._rename)

        @staticmethod
        def _rename(state_dict, prefix, *args):
            for name in ("weight", "bias"):
                if (old := state_dict.pop(f"{prefix}old.{name}", None)) is not None:
                    state_dict[f"{prefix}new.{name}"] = old

    old = {"state_dict": {"old.weight": torch.ones(3, 2), "old.bias": torch.zeros(3)}}
    model = Renamed()
    check_checkpoint_fits(old, "old.ckpt", model)
    assert torch.equal(model.new.weight, torch.ones(3, 2))
    with pytest.raises(CheckpointError, match=r"old\.ckpt.*an unnamed model.*model Linear: "
                                              r"2 missing keys \(weight, bias\), 2 unexpected"):
        check_checkpoint_fits(old, "old.ckpt", torch.nn.Linear(2, 3))
