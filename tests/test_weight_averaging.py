"""Checkpoint weight averaging: online window average, EMA guard, offline averager, `test` on the average."""

import copy

import lightning.pytorch as pl
import pytest
import torch
from tiny_lightning import TinyData, TinyModule, eval_loss

from audiognn.checkpoint import CheckpointError, SafeCheckpointIO, load_checkpoint
from callbacks import average_checkpoints as avg_cli
from callbacks.weight_averaging import EMAWeightAveraging, WindowWeightAveraging


class Recorder(pl.Callback):
    """Independent record of the live end-of-epoch weights and of each epoch's validation loss."""

    def __init__(self):
        self.epoch_weights, self.val_loss = [], {}

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.val_loss[trainer.current_epoch] = float(trainer.callback_metrics["val/loss"])

    def on_train_epoch_end(self, trainer, pl_module):
        self.epoch_weights.append(copy.deepcopy(pl_module.state_dict()))


def _mean(state_dicts):
    return {k: torch.stack([sd[k].double() for sd in state_dicts]).mean(0)
            for k, v in state_dicts[0].items() if v.is_floating_point()}


def _assert_close(sd, ref, atol=1e-6):
    assert ref, "nothing compared"
    for k, v in ref.items():
        torch.testing.assert_close(sd[k].double(), v, atol=atol, rtol=0, msg=k)


def _trainer(tmp_path, callbacks, max_epochs=4):
    return pl.Trainer(default_root_dir=tmp_path, max_epochs=max_epochs, accelerator="cpu", devices=1,
                      logger=False, enable_progress_bar=False, enable_model_summary=False,
                      callbacks=callbacks, plugins=[SafeCheckpointIO()], deterministic=True)


@pytest.fixture(scope="module")
def window_run(tmp_path_factory):
    """4 epochs, average of epochs 2..3; every epoch's checkpoint kept."""
    tmp = tmp_path_factory.mktemp("wa")
    torch.manual_seed(0)
    rec = Recorder()
    ckpt = pl.callbacks.ModelCheckpoint(dirpath=tmp / "ckpt", save_top_k=-1, filename="e{epoch}",
                                        auto_insert_metric_name=False)
    wa = WindowWeightAveraging(wa_start=2, wa_end=3)
    model = TinyModule()
    init = copy.deepcopy(model.state_dict())
    trainer = _trainer(tmp, [wa, rec, ckpt])
    trainer.fit(model, datamodule=TinyData())
    files = [tmp / "ckpt" / f"e{e}.ckpt" for e in range(4)]
    return dict(tmp=tmp, rec=rec, model=model, init=init, files=files, trainer=trainer)


def test_window_average_is_mean_of_epoch_weights(window_run):
    rec, model = window_run["rec"], window_run["model"]
    assert len(rec.epoch_weights) == 4
    mean23 = _mean(rec.epoch_weights[1:3])  # epochs 2 and 3 (1-based)
    _assert_close(model.state_dict(), mean23)  # the model after fit holds the average, BN buffers included
    assert any("running_var" in k for k in mean23)
    # a wrong window (e.g. 0-based, or all epochs) would be far off
    assert max((model.state_dict()[k].double() - _mean(rec.epoch_weights[2:4])[k]).abs().max()
               for k in mean23) > 1e-3
    files = [load_checkpoint(f) for f in window_run["files"]]
    for e, ck in enumerate(files):  # live weights of each epoch stored beside the average
        _assert_close(ck["current_model_state"], _mean([rec.epoch_weights[e]]))
    _assert_close(files[0]["state_dict"], _mean(rec.epoch_weights[:1]))  # before the window: live (guard)
    _assert_close(files[1]["state_dict"], _mean(rec.epoch_weights[1:2]))
    _assert_close(files[2]["state_dict"], mean23)  # the epoch's checkpoint already includes the epoch
    _assert_close(files[3]["state_dict"], mean23)  # window closed: epoch 4 not added
    assert [int(f["averaging_state"]["n_averaged"]) for f in files] == [0, 1, 2, 2]


def test_validation_uses_live_weights_until_first_update_then_average(window_run):
    rec, init = window_run["rec"], window_run["init"]
    w = rec.epoch_weights
    # epoch 1 (index 0): no average yet -> the trained live model, not the untrained copy (upstream #21724)
    assert rec.val_loss[0] == pytest.approx(eval_loss(w[0]), abs=1e-5)
    assert abs(eval_loss(init) - eval_loss(w[0])) > 1e-3  # the bug would be visible
    assert rec.val_loss[1] == pytest.approx(eval_loss(w[1]), abs=1e-5)
    mean23 = {**w[2], **{k: v.float() for k, v in _mean(w[1:3]).items()}}
    assert rec.val_loss[2] == pytest.approx(eval_loss(mean23), abs=1e-5)
    assert rec.val_loss[3] == pytest.approx(eval_loss(mean23), abs=1e-5)


def test_offline_average_equals_mean_and_test_gives_its_metrics(window_run, tmp_path):
    rec, files = window_run["rec"], window_run["files"]
    out = tmp_path / "avg.ckpt"
    assert avg_cli.main([str(f) for f in files] + ["-o", str(out)]) == 0
    avg = load_checkpoint(out)
    mean_all = _mean(rec.epoch_weights)  # per-epoch weights (current_model_state), not the stored averages
    _assert_close(avg["state_dict"], mean_all)
    assert avg["averaged_from"] == [str(f) for f in files]
    assert "optimizer_states" not in avg and "current_model_state" not in avg
    # --key state_dict averages what the files store as state_dict
    out2 = tmp_path / "avg_sd.ckpt"
    assert avg_cli.main([str(f) for f in files[2:]] + ["-o", str(out2), "--key", "state_dict"]) == 0
    _assert_close(load_checkpoint(out2)["state_dict"], _mean(rec.epoch_weights[1:3]))
    # Lightning's test on the averaged checkpoint gives the metrics of the mean weights
    trainer = _trainer(tmp_path, [WindowWeightAveraging()])
    res = trainer.test(TinyModule(), datamodule=TinyData(), ckpt_path=str(out), verbose=False)[0]
    ref = {**rec.epoch_weights[-1], **{k: v.float() for k, v in mean_all.items()}}
    assert res["test/loss"] == pytest.approx(eval_loss(ref, split_seed=2), abs=1e-5)


def test_offline_average_rejects_mismatched_models(window_run, tmp_path):
    other = tmp_path / "other.ckpt"
    ck = load_checkpoint(window_run["files"][0])
    ck["state_dict"] = {k + "_x": v for k, v in ck["state_dict"].items()}
    del ck["current_model_state"]
    torch.save(ck, other)
    with pytest.raises(CheckpointError, match="other.ckpt.*missing keys"):
        avg_cli.average_checkpoints([window_run["files"][1], other], tmp_path / "x.ckpt")


def test_ema_guard_validates_live_model_before_first_update(tmp_path):
    """EMA starting late: until its first update, validation and checkpoints use the live weights."""
    torch.manual_seed(0)
    rec = Recorder()
    ema = EMAWeightAveraging(decay=0.5, update_starting_at_step=6)  # 4 steps per epoch: first update in epoch 2
    ckpt = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "c", save_top_k=-1, filename="e{epoch}",
                                        auto_insert_metric_name=False)
    model = TinyModule()
    _trainer(tmp_path, [ema, rec, ckpt], max_epochs=2).fit(model, datamodule=TinyData())
    assert rec.val_loss[0] == pytest.approx(eval_loss(rec.epoch_weights[0]), abs=1e-5)
    ck0 = load_checkpoint(tmp_path / "c" / "e0.ckpt")
    _assert_close(ck0["state_dict"], _mean(rec.epoch_weights[:1]))
    ck1 = load_checkpoint(tmp_path / "c" / "e1.ckpt")
    assert int(ck1["averaging_state"]["n_averaged"]) == 2  # 0-based step indices 6 and 7 of 0..7
    diff = max((ck1["state_dict"][k] - ck1["current_model_state"][k]).abs().max() for k in ck1["state_dict"]
               if ck1["state_dict"][k].is_floating_point())
    assert diff > 1e-6  # epoch 2's checkpoint holds a true EMA, distinct from the live weights


def test_checkpoint_saved_during_validation_keeps_weights_apart():
    """A save while the averaged weights are swapped in (SIGUSR1 during validation) stores each set under its key."""
    model = TinyModule()
    wa = WindowWeightAveraging()
    wa.setup(None, model, "fit")
    wa._update_average(model)  # average = A
    a = copy.deepcopy(model.state_dict())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # live = B
    b = copy.deepcopy(model.state_dict())
    wa.on_validation_epoch_start(None, model)  # model now holds A
    _assert_close(model.state_dict(), _mean([a]))
    ckpt = {"state_dict": model.state_dict()}  # what Lightning builds from the module
    wa.on_save_checkpoint(None, model, ckpt)
    _assert_close(ckpt["state_dict"], _mean([a]))
    _assert_close(ckpt["current_model_state"], _mean([b]))
    wa.on_validation_epoch_end(None, model)
    _assert_close(model.state_dict(), _mean([b]))
