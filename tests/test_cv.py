"""The fold runner (audiognn/cli/cross_validate.py, alias audiognn/esc50_cv.py): per-run configs, folds read from
the prepared set, results per run + summary, resume without re-running finished folds."""

import json
import statistics
import subprocess
from pathlib import Path

import pytest
import yaml

from audiognn.cli import cross_validate as cv
from tests.conftest import write_shards

ROOT = Path(__file__).resolve().parents[1]


def test_run_config_holds_out_one_fold(tmp_path):
    from audiognn.esc50_cv import run_config  # the old import path still works

    base = yaml.safe_load((ROOT / "conf" / "lhgnn" / "esc50.yaml").read_text())
    cfg = run_config(base, seed=3, fold=2, folds=[1, 2, 3, 4, 5], run_dir=tmp_path / "seed3-fold2")
    d = cfg["data"]["init_args"]
    assert d["train_splits"] == ["fold1", "fold3", "fold4", "fold5"]
    assert d["val_splits"] == d["test_splits"] == ["fold2"]
    assert cfg["seed_everything"] == 3 and cfg["trainer"]["default_root_dir"] == str(tmp_path / "seed3-fold2")
    cbs = {c["class_path"].rsplit(".", 1)[-1]: c.get("init_args", {}) for c in cfg["trainer"]["callbacks"]}
    assert cfg["checkpoint"]["dirpath"] == str(tmp_path / "seed3-fold2" / "checkpoints")
    assert cfg["checkpoint"]["save_last"] is True
    assert cbs["TestMetricsToJson"]["path"].endswith("seed3-fold2/test_metrics.json")
    assert base["data"]["init_args"]["val_splits"] == ["fold1"]  # the base config is left alone
    bad = {"trainer": {"callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint"}]}, "data": {}}
    with pytest.raises(ValueError, match="checkpoint"):
        run_config(bad, 0, 1, [1, 2], tmp_path)


def test_summary_mean_and_std_over_seeds():
    from audiognn.esc50_cv import summarise

    res = {(0, 1): 0.90, (0, 2): 0.80, (1, 1): 0.95, (1, 2): 0.85}
    lines = summarise(res)
    per_seed = [0.85, 0.90]
    want = f"{100 * statistics.fmean(per_seed):.2f} ± {100 * statistics.stdev(per_seed):.2f} %"
    assert want in lines[-2] and "2 seed(s)" in lines[-2]
    assert "seed 0: 2-fold CV accuracy 85.00%" in lines


def _study(tmp_path, folds=(1, 2, 3)) -> Path:
    """A prepared set with splits fold1..fold3 (+ a non-fold split) and a config pointing at it."""
    root = tmp_path / "data"
    write_shards(root, [2], split=f"fold{folds[0]}", extra_splits={**{f"fold{f}": [2] for f in folds[1:]},
                                                                   "extra": [1]})
    cfg = yaml.safe_load((ROOT / "conf" / "urbansound8k" / "cnn.yaml").read_text())
    cfg["data"]["init_args"]["root"] = str(root)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_folds_come_from_the_prepared_set(tmp_path, capsys):
    cfg = _study(tmp_path, folds=(1, 2, 3, 10))
    assert cv.dataset_folds(tmp_path / "data") == [1, 2, 3, 10]
    assert cv.main(["--config", str(cfg), "--out", str(tmp_path / "cv"), "--dry-run"]) == 0
    fits = [line for line in capsys.readouterr().out.splitlines() if " fit " in line]
    assert len(fits) == 4  # one run per fold of the set, seed 0
    run = yaml.safe_load((tmp_path / "cv" / "seed0-fold10" / "config.yaml").read_text())
    assert run["data"]["init_args"]["train_splits"] == ["fold1", "fold2", "fold3"]
    assert run["data"]["init_args"]["test_splits"] == ["fold10"]
    # chosen test folds x seeds; training folds are still every other fold of the set
    assert cv.main(["--config", str(cfg), "--out", str(tmp_path / "cv2"), "--folds", "2", "--seeds", "4", "5",
                    "--dry-run"]) == 0
    assert sorted(p.name for p in (tmp_path / "cv2").iterdir()) == ["seed4-fold2", "seed5-fold2"]
    run = yaml.safe_load((tmp_path / "cv2" / "seed5-fold2" / "config.yaml").read_text())
    assert run["data"]["init_args"]["train_splits"] == ["fold1", "fold3", "fold10"] and run["seed_everything"] == 5
    with pytest.raises(SystemExit):
        cv.main(["--config", str(cfg), "--folds", "7", "--dry-run", "--out", str(tmp_path / "cv3")])


def test_results_per_run_summary_and_resume(tmp_path, monkeypatch, capsys):
    """Every run's metrics land in results.json and summary.md; a second call re-runs nothing."""
    calls = []

    def fake_run(cmd, cwd=None, check=False):
        calls.append(cmd[2])
        run_dir = Path(cmd[4]).parent
        if cmd[2] == "test":
            fold = int(run_dir.name.split("fold")[1])
            (run_dir / "test_metrics.json").write_text(json.dumps({"test/acc": fold / 10, "test/f1": fold / 20}))
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(cv.subprocess, "run", fake_run)
    cfg, out = _study(tmp_path), tmp_path / "cv"
    assert cv.main(["--config", str(cfg), "--out", str(out)]) == 0
    assert calls == ["fit", "test"] * 3
    records = json.loads((out / "results.json").read_text())
    assert [(r["seed"], r["fold"], r["train_folds"]) for r in records] == [
        (0, 1, [2, 3]), (0, 2, [1, 3]), (0, 3, [1, 2])]
    assert records[2]["metrics"] == {"test/acc": 0.3, "test/f1": 0.15}
    summary = (out / "summary.md").read_text()
    assert f"| test/acc | {0.2:.4f} ± {statistics.stdev([0.1, 0.2, 0.3]):.4f} | 3 |" in summary
    assert "20.00 ± 0.00 %" in summary  # one seed: its CV score 20 %, std over seeds 0
    calls.clear()
    (out / "seed0-fold2" / "test_metrics.json").unlink()  # an unfinished run
    assert cv.main(["--config", str(cfg), "--out", str(out)]) == 0
    assert calls == ["fit", "test"]  # only fold 2 runs again
    assert "seed0-fold1: done before" in capsys.readouterr().out


def _direct_norm(root, splits):
    """Mean and std of the log-mel over the valid frames of ``splits``, read back from the shards."""
    import numpy as np

    from audiognn.data.shards import read_split_clips

    v = np.concatenate([c["mel"][: c["valid"]].ravel() for s in splits for c in read_split_clips(root, s)])
    return float(v.mean()), float(v.std())


def test_fold_runs_are_normalised_by_their_training_folds_only(tmp_path):
    """Fold 3 is planted 60 dB louder (log-mel about +14): a run that tests on fold 3 must not see it in its
    statistics; one that trains on it must. Fails if the test fold's statistics are included."""
    from datamodules.audio_shards import AudioShardDataModule
    from datamodules.prepare import main as prepare_main
    from tests.test_urbansound8k import us8k

    root = tmp_path / "shards"
    assert prepare_main(["urbansound8k", str(us8k(tmp_path, gain={3: 1000.0})), "--out", str(root), "--workers",
                         "1", "--quiet", "--target-frames", "32", "--num-mel-bins", "16"]) == 0
    info = json.loads((root / "dataset.json").read_text())
    assert info["norm"]["over"] == ["fold1", "fold2", "fold3"]  # the set-wide figure still covers every fold
    base = yaml.safe_load((ROOT / "conf" / "urbansound8k" / "cnn.yaml").read_text())
    base["data"]["init_args"].update(root=str(root), num_workers=0)
    quiet_mean, _ = _direct_norm(root, ["fold1", "fold2"])
    loud_mean, _ = _direct_norm(root, ["fold3"])
    assert loud_mean - quiet_mean > 10
    for fold in (1, 2, 3):
        cfg = cv.run_config(base, 0, fold, [1, 2, 3], tmp_path / f"run{fold}")
        init = {k: v for k, v in cfg["data"]["init_args"].items()}
        dm = AudioShardDataModule(**init)
        dm.setup("fit")
        train = [f"fold{f}" for f in (1, 2, 3) if f != fold]
        assert dm.norm_over == train and dm.data_info["norm"]["over"] == train
        mean, std = _direct_norm(root, train)  # exact pooling of the per-split statistics
        assert dm.mean == pytest.approx(mean, abs=1e-4) and dm.std == pytest.approx(std, rel=1e-4)
        if fold == 3:
            assert abs(dm.mean - quiet_mean) < 1e-4 and dm.mean < info["norm"]["mean"] - 3


def test_sets_without_per_split_statistics_keep_their_single_norm(tmp_path):
    from datamodules.audio_shards import AudioShardDataModule

    write_shards(tmp_path, [2], split="fold1", extra_splits={"fold2": [2]})  # norm mean 1, std 2, no splits
    dm = AudioShardDataModule(str(tmp_path), num_workers=0, train_splits=["fold1"], val_splits=["fold2"],
                              test_splits=["fold2"])
    dm.setup("fit")
    assert (dm.mean, dm.std) == (1.0, 2.0)
