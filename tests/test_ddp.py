"""DDP on 2 CPU processes (gloo) over shards: data split, synced metrics, weight averaging, `test` of the average.

One DDP launch (tests/ddp_driver.py, a subprocess with a timeout: `strategy="ddp"` inside pytest would
relaunch pytest) fits 2 epochs with WindowWeightAveraging(1..2), averages the epoch checkpoints offline and
tests the average on both ranks. The data has fewer shards than ranks x workers (3 train shards for 2 x 2,
1 val shard for 2 ranks), so a worker or rank without a shard must not hang the run.
"""

import json
import os
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 400  # seconds; a hang (a rank waiting for a batch another rank never sends) fails here


def _keys_of(data: Path, split: str) -> list[str]:
    info = json.loads((data / "dataset.json").read_text())
    keys = []
    for shard in info["splits"][split]["shards"]:
        with tarfile.open(data / shard) as tar:
            keys += sorted({m.name.split(".", 1)[0] for m in tar.getmembers()})
    return keys


def _common_args(data: Path, tmp: Path) -> list[str]:
    return ["--config", str(REPO / "conf/default.yaml"), "--data.init_args.root", str(data),
            "--data.init_args.synthetic", "null", "--data.init_args.batch_size", "8",
            "--data.init_args.num_workers", "2", "--model.init_args.backbone.init_args.channels", "[4, 8]",
            "--trainer.default_root_dir", str(tmp), "--trainer.enable_progress_bar", "false",
            "--trainer.max_epochs", "2"]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    data = tmp / "data"
    from datamodules.prepare import main as prepare

    assert prepare(["synthetic", "--variant", "genre", "--train", "48", "--val", "12", "--test", "20",
                    "--out", str(data), "--shard-size", "16", "--target-frames", "64", "--num-mel-bins", "32",
                    "--workers", "1", "--quiet"]) == 0
    out = tmp / "out"
    out.mkdir()
    args = [*_common_args(data, tmp), "--config", str(REPO / "conf/trainer/ddp_cpu2.yaml"),
            "--trainer.callbacks+=callbacks.weight_averaging.WindowWeightAveraging",
            "--trainer.callbacks.init_args.wa_start", "1", "--trainer.callbacks.init_args.wa_end", "2",
            "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
            "--trainer.callbacks.init_args.dirpath", str(out / "epochs"),
            "--trainer.callbacks.init_args.filename", "e{epoch}", "--trainer.callbacks.init_args.save_top_k", "-1",
            "--trainer.callbacks.init_args.auto_insert_metric_name", "false"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "LOCAL_RANK", "WORLD_SIZE"))}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, str(REPO / "tests/ddp_driver.py"), str(out), *args], cwd=tmp,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # both ranks and their data workers
        log, _ = proc.communicate()
        pytest.fail(f"DDP fit hung (> {TIMEOUT} s):\n{log[-4000:]}")
    assert proc.returncode == 0, log[-6000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    return dict(tmp=tmp, data=data, out=out, ranks=ranks)


def test_ddp_fit_same_metrics_on_both_ranks(ddp_run):
    r0, r1 = ddp_run["ranks"]
    assert (r0["world"], r1["world"]) == (2, 2)
    synced = [k for k in r0["fit"] if k.startswith("val/")]
    assert {"val/acc", "val/f1", "val/loss"} <= set(synced)
    for k in synced:
        assert r0["fit"][k] == pytest.approx(r1["fit"][k], abs=1e-6), k
    for k in ("test/acc", "test/f1"):
        assert r0["test"][k] == pytest.approx(r1["test"][k], abs=1e-6), k


def test_ddp_every_clip_once_per_epoch(ddp_run):
    r0, r1 = ddp_run["ranks"]
    data = ddp_run["data"]
    train, val, test = (_keys_of(data, s) for s in ("train", "val", "test"))
    for epoch in (0, 1):  # exact mode: each training clip on exactly one rank per epoch
        k0, k1 = r0["keys"][f"train/{epoch}"], r1["keys"][f"train/{epoch}"]
        assert sorted(k0 + k1) == sorted(train)
        assert len(k0) > 0 and len(k1) > 0
        v0, v1 = r0["keys"][f"val/{epoch}"], r1["keys"][f"val/{epoch}"]  # no padding duplicates
        assert sorted(v0 + v1) == sorted(val)
    assert r0["keys"]["train/0"] != r0["keys"]["train/1"]  # reshuffled between epochs
    assert sorted(r0["keys"]["test"] + r1["keys"]["test"]) == sorted(test)


def test_ddp_average_and_test_of_the_average(ddp_run, tmp_path, monkeypatch):
    out, data = ddp_run["out"], ddp_run["data"]
    epochs = sorted((out / "epochs").glob("e*.ckpt"))
    assert [p.name for p in epochs] == ["e0.ckpt", "e1.ckpt"]
    live = [torch.load(p, weights_only=True)["current_model_state"] for p in epochs]
    mean = {k: torch.stack([sd[k].double() for sd in live]).mean(0) for k in live[0]
            if live[0][k].is_floating_point()}
    # online (WindowWeightAveraging 1..2, buffers included) == offline == independent mean
    final = torch.load(out / "final_state.pt", weights_only=True)
    avg = torch.load(out / "avg.ckpt", weights_only=True)["state_dict"]
    assert any("running_var" in k for k in mean)
    for k, v in mean.items():
        torch.testing.assert_close(final[k].double(), v, atol=1e-6, rtol=0, msg=k)
        torch.testing.assert_close(avg[k].double(), v, atol=1e-6, rtol=0, msg=k)
    # `train.py test --ckpt_path avg.ckpt` in one process: the CLI accepts the averaged file, and its
    # metrics equal the DDP test's (each test clip scored once over the ranks)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(REPO))
    from train import cli_main

    cli = cli_main(["test", *_common_args(data, tmp_path), "--config", str(REPO / "conf/trainer/cpu.yaml"), "--data.init_args.num_workers",
                    "0", "--ckpt_path", str(out / "avg.ckpt")])
    single = {k: float(v) for k, v in cli.trainer.callback_metrics.items()}
    r0 = ddp_run["ranks"][0]
    for k in ("test/acc", "test/f1"):
        assert single[k] == pytest.approx(r0["test"][k], abs=1e-6), k
    # ... and those of the mean weights, computed here without Lightning's test loop
    model, dm = cli.model, cli.datamodule
    state = {**model.state_dict(), **{k: v.float() for k, v in mean.items()}}
    model.load_state_dict(state)
    model.eval()
    hits = n = 0
    with torch.no_grad():
        for batch in dm.test_dataloader():
            batch = dm.on_after_batch_transfer(batch, 0)
            hits += int((model(batch["x"]).argmax(1) == batch["y"].argmax(1)).sum())
            n += len(batch["key"])
    assert n == 20
    assert single["test/acc"] == pytest.approx(hits / n, abs=1e-6)


def test_ddp_corrupt_shard_skipped_counted_and_validated(tmp_path):
    """skip_corrupt_shards: a truncated training shard is skipped and counted, both ranks run the same
    number of steps (no hang) and validation still runs."""
    data = tmp_path / "data"
    from datamodules.prepare import main as prepare

    assert prepare(["synthetic", "--variant", "genre", "--train", "48", "--val", "12", "--test", "0",
                    "--out", str(data), "--shard-size", "16", "--target-frames", "64", "--num-mel-bins", "32",
                    "--workers", "1", "--quiet"]) == 0
    shard = data / "train-000001.tar"
    shard.write_bytes(shard.read_bytes()[:5000])
    out = tmp_path / "out"
    out.mkdir()
    args = [*_common_args(data, tmp_path), "--config", str(REPO / "conf/trainer/ddp_cpu2.yaml"),
            "--trainer.max_epochs", "1", "--data.init_args.skip_corrupt_shards", "true",
            "--trainer.callbacks+=callbacks.data_health.DataHealth"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "LOCAL_RANK", "WORLD_SIZE"))}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), AUDIOGNN_DDP_FIT_ONLY="1")
    proc = subprocess.Popen([sys.executable, str(REPO / "tests/ddp_driver.py"), str(out), *args], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        pytest.fail(f"DDP fit with a corrupt shard hung (> {TIMEOUT} s):\n{log[-4000:]}")
    assert proc.returncode == 0, log[-6000:]
    r0, r1 = (json.loads((out / f"rank{r}.json").read_text()) for r in range(2))
    assert r0["fit"]["data/corrupt_shards"] >= 1
    assert {"val/acc", "val/loss"} <= set(r0["fit"]) and {"val/acc", "val/loss"} <= set(r1["fit"])
    assert r0["steps"] == r1["steps"] > 0
