"""SLURM: sbatch scripts (syntax, directives, dry runs with a stub srun) and Lightning's requeue on SIGUSR1."""

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = ["fit_1node_4gpu.sbatch", "fit_multinode.sbatch", "test.sbatch"]


def _stub(bin_dir: Path, name: str, body: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def _directives(script: str) -> dict[str, str]:
    text = (REPO / "slurm" / script).read_text()
    return dict(re.findall(r"^#SBATCH --([\w-]+)(?:=(\S+))?", text, flags=re.M))


@pytest.mark.parametrize("script", SCRIPTS)
def test_sbatch_syntax_and_directives(script):
    subprocess.run(["bash", "-n", str(REPO / "slurm" / script)], check=True)
    d = _directives(script)
    assert d["ntasks-per-node"] == "4" and d["gres"] == "gpu:4"
    trainer_cfg = "multinode.yaml" if "multinode" in script else "ddp4.yaml"
    assert f"conf/trainer/{trainer_cfg}" in (REPO / "slurm" / script).read_text()
    cfg = yaml.safe_load((REPO / "conf" / "trainer" / trainer_cfg).read_text())["trainer"]
    assert cfg["devices"] == int(d["ntasks-per-node"])  # one srun task per GPU, as Lightning requires
    assert (cfg["strategy"], cfg["precision"], cfg["sync_batchnorm"]) == ("ddp", "bf16-mixed", True)
    if script.startswith("fit"):
        assert d["signal"] == "SIGUSR1@90" and "requeue" in d


def _dry_run(tmp_path, script, args, **env):
    """Run an sbatch script with SLURM variables set by hand and `srun` replaced by a recorder."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "srun.py").write_text("import json, os, sys\nprint(json.dumps({'argv': sys.argv[1:], "
                                     "'wandb': os.environ.get('WANDB_RUN_ID')}))\n")
    _stub(bin_dir, "srun", f'{sys.executable} {bin_dir}/srun.py "$@" >> {tmp_path}/srun.log\n')
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    full_env.update(PATH=f"{bin_dir}:{os.environ['PATH']}", PYTHON=sys.executable, PYTHONPATH=str(REPO),
                    SLURM_JOB_ID="777", SLURM_JOB_NAME="dry", SLURM_SUBMIT_DIR=str(REPO),
                    SLURM_JOB_NODELIST="gpu01", RUN_DIR=str(tmp_path / "run"), **env)
    proc = subprocess.run(["bash", str(REPO / "slurm" / script), *args], env=full_env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads((tmp_path / "srun.log").read_text().splitlines()[-1])


def _valid_ckpt(path: Path, value: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"w": torch.full((2,), value)}, "pytorch-lightning_version": "2.6.6",
                "global_step": 1, "epoch": 0}, path)


def test_fit_dry_run_fresh_then_requeued(tmp_path):
    run = str(tmp_path / "run")
    got = _dry_run(tmp_path, "fit_1node_4gpu.sbatch", ["conf/default.yaml", "--trainer.max_epochs", "3"])
    assert got["argv"] == [sys.executable, "train.py", "fit", "--config", "conf/default.yaml",
                           "--config", "conf/trainer/ddp4.yaml", "--run.dir", run, "--trainer.max_epochs", "3"]
    assert got["wandb"] == "777"
    # requeued after SIGUSR1: the hpc checkpoint Lightning wrote (newer than last.ckpt) is resumed
    _valid_ckpt(tmp_path / "run" / "checkpoints" / "last.ckpt", 1.0)
    os.utime(tmp_path / "run" / "checkpoints" / "last.ckpt", (1e9, 1e9))
    _valid_ckpt(tmp_path / "run" / "hpc_ckpt_1.ckpt", 2.0)
    got = _dry_run(tmp_path, "fit_1node_4gpu.sbatch", ["conf/default.yaml"], SLURM_RESTART_COUNT="1")
    assert got["argv"][-2:] == ["--ckpt_path", f"{run}/hpc_ckpt_1.ckpt"] and got["wandb"] == "777"
    # requeued with nothing loadable in the run directory: Lightning's own search for last.ckpt
    (tmp_path / "run" / "hpc_ckpt_1.ckpt").write_bytes(b"truncated")
    (tmp_path / "run" / "checkpoints" / "last.ckpt").unlink()
    got = _dry_run(tmp_path, "fit_1node_4gpu.sbatch", ["conf/default.yaml"], SLURM_RESTART_COUNT="2")
    assert got["argv"][-2:] == ["--ckpt_path", "last"]


def test_multinode_and_test_dry_runs(tmp_path):
    got = _dry_run(tmp_path, "fit_multinode.sbatch", ["conf/default.yaml"], SLURM_JOB_NUM_NODES="3",
                   SLURM_ARRAY_JOB_ID="55", SLURM_ARRAY_TASK_ID="2")
    argv = got["argv"]
    assert argv[argv.index("--trainer.num_nodes") + 1] == "3"
    assert "conf/trainer/multinode.yaml" in argv and got["wandb"] == "55_2"
    a, b = tmp_path / "a.ckpt", tmp_path / "b.ckpt"
    _valid_ckpt(a, 1.0)
    _valid_ckpt(b, 4.0)
    got = _dry_run(tmp_path, "test.sbatch", ["conf/default.yaml", str(a), str(b), "--trainer.devices", "2"])
    avg = tmp_path / "run" / "averaged.ckpt"
    assert got["argv"] == [sys.executable, "train.py", "test", "--config", "conf/default.yaml", "--config",
                           "conf/trainer/ddp4.yaml", "--run.dir", str(tmp_path / "run"),
                           "--trainer.devices", "2", "--ckpt_path", str(avg)]
    torch.testing.assert_close(torch.load(avg, weights_only=True)["state_dict"]["w"], torch.full((2,), 2.5))


def test_trainer_configs_compose_with_the_recipe(capsys):
    """The command the sbatch launches parses: ddp4.yaml overrides the recipe's hardware keys only."""
    sys.path.insert(0, str(REPO))
    try:
        from train import cli_main

        with pytest.raises(SystemExit):
            cli_main(["fit", "--config", str(REPO / "conf/default.yaml"), "--config",
                      str(REPO / "conf/trainer/ddp4.yaml"), "--run.dir", "runs/x", "--print_config"], run=False)
    finally:
        sys.path.remove(str(REPO))
    cfg = yaml.safe_load(capsys.readouterr().out)
    t = cfg["trainer"]
    assert (t["devices"], t["strategy"], t["precision"], t["sync_batchnorm"]) == (4, "ddp", "bf16-mixed", True)
    assert t["plugins"][0]["class_path"] == "audiognn.checkpoint.SafeCheckpointIO"
    assert cfg["run"]["dir"] == "runs/x" and t["default_root_dir"] == "runs"
    recipe = yaml.safe_load((REPO / "conf/base/audio.yaml").read_text())  # the default recipe's callbacks
    assert [c["class_path"] for c in t["callbacks"]] == [c["class_path"] for c in recipe["trainer"]["callbacks"]]


def test_sigusr1_under_slurm_checkpoints_requeues_and_resumes(tmp_path):
    """SIGUSR1 (SLURM's --signal) makes Lightning save hpc_ckpt_1.ckpt and call `scontrol requeue <job id>`;
    the stub scontrol then kills the job as SLURM would, and the restarted job resumes from that checkpoint."""
    bin_dir = tmp_path / "bin"
    _stub(bin_dir, "scontrol", f'echo "$@" >> {tmp_path}/scontrol.log\nkill -9 $PPID\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(PATH=f"{bin_dir}:{os.environ['PATH']}", PYTHONPATH=str(REPO), OMP_NUM_THREADS="1",
               SLURM_JOB_ID="4242", SLURM_JOB_NAME="fit", SLURM_NTASKS="1", SLURM_NTASKS_PER_NODE="1",
               SLURM_NODELIST="localhost", SLURM_PROCID="0", SLURM_LOCALID="0", SLURM_NODEID="0")
    cmd = [sys.executable, str(REPO / "tests" / "tiny_lightning.py"), "--root", str(tmp_path / "run"),
           "--max_epochs", "3"]
    first = subprocess.run(cmd + ["--sigusr1_at_step", "6"], env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == -9, first.stderr[-3000:]
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "4242"]
    hpc = tmp_path / "run" / "hpc_ckpt_1.ckpt"
    saved = torch.load(hpc, weights_only=True)
    assert saved["global_step"] == 6 and "averaging_state" in saved
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)  # ckpt_path=None
    assert second.returncode == 0, second.stderr[-3000:]
    res = json.loads(second.stdout.split("RESULT ", 1)[1])
    assert res["start"]["global_step"] == 6 and res["start"]["adam_steps"][0] == 6.0
    assert res["global_step"] == 12  # 3 epochs x 4 steps


def test_readme_dry_run_shows_what_the_script_runs(tmp_path):
    """slurm/README.md's dry-run block: the command it shows is the one the script hands to srun."""
    text = (REPO / "slurm" / "README.md").read_text()
    shown = re.search(r"^# srun (.+)$", text, flags=re.M).group(1).split()
    run = str(tmp_path / "run")
    got = _dry_run(tmp_path, "fit_1node_4gpu.sbatch", ["conf/default.yaml", "--trainer.max_epochs", "3"])
    assert [run if a == "/tmp/dry" else a for a in shown] == ["python", *got["argv"][1:]]
