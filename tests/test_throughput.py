"""Training throughput and peak memory per fit (callbacks/throughput.py) and the fold runner's record of it
(audiognn/cli/cross_validate.py). The clock is a fake one that the steps advance, so the figures are exact."""

import json
import subprocess
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from audiognn.cli import cross_validate as cv
from callbacks import throughput
from tests.test_cv import _study


class _Clock:
    def __init__(self):
        self.t = 0.0

    def perf_counter(self) -> float:
        return self.t


class _Module(L.LightningModule):
    """Each training step takes 1 s of the fake clock, each validation step 100 s."""

    def __init__(self, clock):
        super().__init__()
        self.clock, self.layer = clock, torch.nn.Linear(4, 2)

    def training_step(self, batch, batch_idx):
        self.clock.t += 1.0
        return self.layer(batch["x"]).sum()

    def validation_step(self, batch, batch_idx):
        self.clock.t += 100.0

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _loader(n: int, batch: int):
    data = [{"x": torch.randn(4)} for _ in range(n)]
    return DataLoader(data, batch_size=batch)


def test_clips_per_second_leave_validation_out(tmp_path, monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(throughput, "time", clock)
    cb = throughput.FitThroughputToJson(str(tmp_path / "fit.json"))
    trainer = L.Trainer(max_epochs=3, accelerator="cpu", callbacks=[cb], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, val_check_interval=0.5,
                        num_sanity_val_steps=1)
    # 10 clips in batches of 3 (3, 3, 3, 1): 4 steps, 4 s; validation in the middle and at the end: 200 s left out
    trainer.fit(_Module(clock), _loader(10, 3), _loader(2, 2))
    assert [(e["epoch"], e["clips"], e["seconds"]) for e in cb.epochs] == [(0, 10, 4.0), (1, 10, 4.0), (2, 10, 4.0)]
    rec = json.loads((tmp_path / "fit.json").read_text())
    assert rec["clips_per_s"] == rec["clips_per_s_first_epoch"] == 2.5
    assert rec["device"] == "cpu" and rec["peak_mem_mib"] is None and rec["world_size"] == 1
    assert rec["precision"] == "32-true" and len(rec["epochs"]) == 3
    assert float(trainer.callback_metrics["train/clips_per_s"]) == pytest.approx(2.5)


def test_the_first_epoch_is_left_out_of_the_rate(tmp_path, monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(throughput, "time", clock)

    class Slow(_Module):
        def training_step(self, batch, batch_idx):
            self.clock.t += 5.0 if self.current_epoch == 0 else 0.0  # warm-up: 5 s more per step
            return super().training_step(batch, batch_idx)

    cb = throughput.FitThroughputToJson()  # no path: nothing written, the records kept
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", callbacks=[cb], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(Slow(clock), _loader(8, 4))
    s = cb.summary(trainer, trainer.lightning_module)
    assert s["clips_per_s_first_epoch"] == round(8 / 12, 2) and s["clips_per_s"] == 4.0
    assert not list(tmp_path.iterdir())


def test_the_fold_runner_records_each_fits_throughput(tmp_path, monkeypatch):
    cfg = cv.run_config({"trainer": {}, "data": {}}, 0, 2, [1, 2, 3], tmp_path / "seed0-fold2")
    cbs = {c["class_path"]: c["init_args"] for c in cfg["trainer"]["callbacks"]}
    assert cbs["callbacks.throughput.FitThroughputToJson"]["path"] == str(tmp_path / "seed0-fold2" / "fit_throughput.json")

    def fake_run(cmd, cwd=None, check=False):
        run_dir = Path(cmd[4]).parent
        fold = int(run_dir.name.split("fold")[1])
        if cmd[2] == "fit":
            (run_dir / "fit_throughput.json").write_text(json.dumps(
                {"device": "NVIDIA H200", "precision": "bf16-mixed", "clips_per_s": 100.0 * fold,
                 "peak_mem_mib": 1000.0 + fold}))
        else:
            (run_dir / "test_metrics.json").write_text(json.dumps({"test/acc": fold / 10}))
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(cv.subprocess, "run", fake_run)
    out = tmp_path / "cv"
    assert cv.main(["--config", str(_study(tmp_path)), "--out", str(out)]) == 0
    records = json.loads((out / "results.json").read_text())
    assert [r["fit"]["clips_per_s"] for r in records] == [100.0, 200.0, 300.0]
    summary = (out / "summary.md").read_text()
    assert "| 0 | 3 | 300.0 | 1003 | NVIDIA H200 | bf16-mixed |" in summary
    # a re-run of a fold drops its old throughput file with its old metrics
    (out / "seed0-fold1" / "test_metrics.json").unlink()
    monkeypatch.setattr(cv.subprocess, "run", lambda cmd, cwd=None, check=False: subprocess.CompletedProcess(cmd, 1))
    assert cv.main(["--config", str(_study(tmp_path)), "--out", str(out)]) == 1
    assert not (out / "seed0-fold1" / "fit_throughput.json").exists()


def test_runs_without_a_throughput_file_add_no_table():
    assert cv.throughput_lines([{"seed": 0, "fold": 1, "metrics": {}}]) == []


def test_the_gpu_and_its_peak_memory_are_kept_when_the_fit_ends_on_the_cpu(tmp_path, monkeypatch):
    """Lightning hands ``on_fit_end`` a module already moved back to the CPU: the record still names the GPU the
    fit ran on and its peak memory (a fake CUDA here: the calls the callback makes, answered)."""
    from types import SimpleNamespace

    calls = []
    fake = {"synchronize": lambda d: calls.append(("sync", str(d))), "reset_peak_memory_stats": lambda d: calls.append("reset"),
            "max_memory_allocated": lambda d: 3 * 2**30, "max_memory_reserved": lambda d: 4 * 2**30,
            "get_device_name": lambda d: "Fake GPU"}  # fmt: skip
    for name, fn in fake.items():
        monkeypatch.setattr(torch.cuda, name, fn)
    clock = _Clock()
    monkeypatch.setattr(throughput, "time", clock)
    logged = {}
    module = SimpleNamespace(device=torch.device("cuda", 0), log=lambda k, v, **kw: logged.__setitem__(k, v))
    trainer = SimpleNamespace(world_size=1, current_epoch=0, sanity_checking=False, is_global_zero=True,
                              precision="bf16-mixed", state=SimpleNamespace(fn="fit"))
    cb = throughput.FitThroughputToJson(str(tmp_path / "fit.json"))
    cb.on_fit_start(trainer, module)
    cb.on_train_epoch_start(trainer, module)
    clock.t += 2.0
    cb.on_train_batch_end(trainer, module, None, {"x": torch.zeros(6, 3)}, 0)
    cb.on_train_epoch_end(trainer, module)
    module.device = torch.device("cpu")  # what on_fit_end sees
    cb.on_fit_end(trainer, module)
    rec = json.loads((tmp_path / "fit.json").read_text())
    assert rec["device"] == "Fake GPU" and rec["peak_mem_mib"] == 3072.0 and rec["peak_reserved_mib"] == 4096.0
    assert rec["clips_per_s"] == 3.0 and logged == {"train/clips_per_s": 3.0, "train/peak_mem_mib": 3072.0}
    assert calls[0] == "reset" and ("sync", "cuda:0") in calls
