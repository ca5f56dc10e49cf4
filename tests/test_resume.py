"""Exact resume after SIGKILL (global step, optimizer and averaging state) and safe checkpoint loading."""

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from tiny_lightning import TinyData, TinyModule

from audiognn.checkpoint import CheckpointError, SafeCheckpointIO, find_resume_checkpoint, load_checkpoint

REPO = Path(__file__).resolve().parents[1]


def _tiny_cmd(*args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return [sys.executable, str(REPO / "tests" / "tiny_lightning.py"), *map(str, args)], env


def run_tiny(*args, timeout=120):
    cmd, env = _tiny_cmd(*args)
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def result_of(proc):
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, f"no RESULT line (rc={proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1][len("RESULT "):])


def test_sigkill_then_resume_from_last_is_exact(tmp_path):
    # reference: the same 4 epochs without interruption (a subprocess, alongside the killed run)
    cmd, env = _tiny_cmd("--root", tmp_path / "ref", "--max_epochs", 4)
    with subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as p:
        # killed with SIGKILL at the start of epoch 3 (0-based 2), after epoch 2's checkpoint
        killed = run_tiny("--root", tmp_path / "run", "--max_epochs", 4, "--kill_at_epoch", 2)
        out, _ = p.communicate(timeout=120)
    ref = result_of(subprocess.CompletedProcess(cmd, p.returncode, out, ""))
    assert killed.returncode == -9, killed.stderr[-2000:]
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    saved = load_checkpoint(last)
    assert saved["global_step"] == 8  # 2 epochs x 4 steps
    resumed = result_of(run_tiny("--root", tmp_path / "run", "--max_epochs", 4, "--ckpt_path", "last"))
    start = resumed["start"]
    assert start["global_step"] == saved["global_step"] and start["epoch"] == 2
    assert start["n_averaged"] == int(saved["averaging_state"]["n_averaged"]) == 1  # epoch 2 of window 2..3
    opt = saved["optimizer_states"][0]["state"]
    assert start["adam_steps"] == [float(s["step"]) for s in opt.values()] == [8.0] * len(opt)
    assert start["adam_exp_avg_sum"] == pytest.approx(float(sum(s["exp_avg"].abs().sum() for s in opt.values())),
                                                      rel=1e-6)
    assert resumed["global_step"] == ref["global_step"] == 16 and not resumed["interrupted"]
    # the resumed run ends with the reference's averaged weights (window 2..3 spans the kill)
    got = torch.load(tmp_path / "run" / "final_state.pt", weights_only=True)
    want = torch.load(tmp_path / "ref" / "final_state.pt", weights_only=True)
    for k, v in want.items():  # same process set-up and data order: bit-identical
        torch.testing.assert_close(got[k], v, atol=0, rtol=0, msg=k)


@pytest.fixture
def good_ckpt(tmp_path):
    trainer = pl.Trainer(default_root_dir=tmp_path, max_epochs=1, limit_train_batches=1, limit_val_batches=0,
                         logger=False, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, accelerator="cpu")
    trainer.fit(TinyModule(), datamodule=TinyData())
    path = tmp_path / "good.ckpt"
    trainer.save_checkpoint(path)
    return path


def test_damaged_and_foreign_checkpoints_give_clear_errors(good_ckpt, tmp_path):
    data = good_ckpt.read_bytes()
    cases = {
        "truncated.ckpt": (data[: len(data) // 2], "truncated, corrupt"),
        "empty.ckpt": (b"", "empty"),
        "text.ckpt": (b"not a checkpoint at all\n", "truncated, corrupt"),
    }
    for name, (content, msg) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CheckpointError, match=f"{name}.*{msg}"):
            load_checkpoint(tmp_path / name)
    torch.save(TinyModule().state_dict(), tmp_path / "bare.ckpt")  # foreign: a bare state_dict
    with pytest.raises(CheckpointError, match="bare.ckpt.*no 'state_dict'.*bare model state_dict"):
        load_checkpoint(tmp_path / "bare.ckpt")
    torch.save({"state_dict": {}, "obj": pl.Callback()}, tmp_path / "pickled.ckpt")  # code in the pickle
    with pytest.raises(CheckpointError, match="pickled.ckpt.*other than tensors"):
        load_checkpoint(tmp_path / "pickled.ckpt")
    with pytest.raises(CheckpointError, match="missing.ckpt.*does not exist"):
        load_checkpoint(tmp_path / "missing.ckpt")
    assert "state_dict" in load_checkpoint(good_ckpt)
    # the Trainer loads through SafeCheckpointIO: the same error, naming the file
    trainer = pl.Trainer(accelerator="cpu", logger=False, plugins=[SafeCheckpointIO()], enable_progress_bar=False)
    with pytest.raises(CheckpointError, match="truncated.ckpt"):
        trainer.test(TinyModule(), datamodule=TinyData(), ckpt_path=tmp_path / "truncated.ckpt")


def test_resume_path_picks_newest_loadable(good_ckpt, tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    assert find_resume_checkpoint(run, run / "checkpoints") is None
    last, hpc = run / "checkpoints" / "last.ckpt", run / "hpc_ckpt_1.ckpt"
    last.write_bytes(good_ckpt.read_bytes())
    hpc.write_bytes(good_ckpt.read_bytes())
    os.utime(last, (1e9, 1e9))
    assert find_resume_checkpoint(run, run / "checkpoints") == hpc  # newer
    os.utime(hpc, (9e8, 9e8))
    assert find_resume_checkpoint(run, run / "checkpoints") == last
    last.write_bytes(good_ckpt.read_bytes()[:100])  # a save killed half-way: newest but damaged
    assert find_resume_checkpoint(run, run / "checkpoints") == hpc
