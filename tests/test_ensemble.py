"""Ensembles of runs from stored per-clip scores (audiognn/ensemble.py), the callback that stores them
(callbacks/metrics_json.py) and the fold runner's ensemble of its seeds (audiognn/cli/cross_validate.py)."""

import json
import subprocess
from functools import partial
from pathlib import Path

import pytest
import torch
import yaml

from audiognn.cli import cross_validate as cv
from audiognn.ensemble import read_test_scores, score_ensemble
from callbacks.metrics_json import TestScoresToJson
from tests.test_cv import _study  # a prepared set with folds 1-3 and a config on it

ROOT = Path(__file__).resolve().parents[1]


def _brute(runs, n):
    """Accuracy and macro-F1 of the mean scores, counted by hand."""
    keys = runs[0]["keys"]
    mean = {k: [0.0] * n for k in keys}
    target = {}
    for r in runs:
        for k, s, t in zip(r["keys"], r["scores"], r["targets"]):
            mean[k] = [a + b for a, b in zip(mean[k], s)]
            target[k] = t
    pred = {k: max(range(n), key=mean[k].__getitem__) for k in keys}
    acc = sum(pred[k] == target[k] for k in keys) / len(keys)
    f1s = []
    for c in range(n):
        tp = sum(pred[k] == c and target[k] == c for k in keys)
        fp = sum(pred[k] == c and target[k] != c for k in keys)
        fn = sum(pred[k] != c and target[k] == c for k in keys)
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return acc, sum(f1s) / n


def test_score_ensemble_equals_a_brute_force_count_in_any_clip_order():
    g = torch.Generator().manual_seed(0)
    n, keys = 4, [f"clip{i}" for i in range(40)]
    targets = torch.randint(0, n, (40,), generator=g).tolist()
    runs = []
    for _ in range(3):
        order = torch.randperm(40, generator=g).tolist()
        scores = torch.rand(40, n, generator=g).softmax(1).tolist()
        runs.append({"keys": [keys[i] for i in order], "scores": [scores[i] for i in order],
                     "targets": [targets[i] for i in order]})
    e = score_ensemble(runs, n, ["a", "b", "c"])
    acc, f1 = _brute(runs, n)
    assert e["acc"] == pytest.approx(acc) and e["f1"] == pytest.approx(f1, abs=1e-6)
    assert e["clips"] == 40 and e["members"] == ["a", "b", "c"] and sum(map(sum, e["cm"])) == 40
    assert 0.1 < acc < 0.6  # random scores: a real test of the counting, not a trivial 1.0


def test_score_ensemble_can_be_right_where_every_member_is_wrong_somewhere():
    s0 = {"keys": ["a", "b"], "scores": [[0.6, 0.4], [0.55, 0.45]], "targets": [0, 1]}  # b wrong
    s1 = {"keys": ["b", "a"], "scores": [[0.1, 0.9], [0.45, 0.55]], "targets": [1, 0]}  # a wrong
    e = score_ensemble([s0, s1], 2)
    assert e["acc"] == 1.0 and e["cm"] == [[1, 0], [0, 1]]


@pytest.mark.parametrize("bad, message", [
    ({"keys": ["a", "c"], "scores": [[1, 0], [0, 1]], "targets": [0, 1]}, "second: tested other clips than first"),
    ({"keys": ["a", "a"], "scores": [[1, 0], [0, 1]], "targets": [0, 1]}, "second: duplicate test clip keys"),
    ({"keys": ["a", "b"], "scores": [[1, 0, 0], [0, 1, 0]], "targets": [0, 1]}, "3 class scores per clip, expected 2"),
    ({"keys": ["a", "b"], "scores": [[1, 0], [0, 1]], "targets": [1, 1]}, "target classes differ"),
])
def test_score_ensemble_refuses_mismatched_runs(bad, message):
    good = {"keys": ["a", "b"], "scores": [[1.0, 0.0], [0.0, 1.0]], "targets": [0, 1]}
    with pytest.raises(ValueError, match=message):
        score_ensemble([good, bad], 2, ["first", "second"])


def _trained_task(tmp_path):
    """A small CNN AudioClassifier trained a few steps on clips whose class sets their level, and the data."""
    import lightning as L
    from torch.utils.data import DataLoader

    from audiognn.models.cnn import CNN
    from audiognn.tasks.audio_classifier import AudioClassifier

    torch.manual_seed(0)
    clips = [{"x": torch.randn(32, 16) + (i % 3), "y": torch.eye(3)[i % 3], "key": f"k{i}"} for i in range(24)]
    task = AudioClassifier(partial(CNN, channels=(4, 8)), num_classes=3, data_info={"classes": ["x", "y", "z"]})
    trainer = L.Trainer(max_steps=4, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(task, DataLoader(clips, batch_size=8))
    return task, trainer, DataLoader(clips, batch_size=5)


def test_test_scores_callback_reproduces_the_runs_test_metrics(tmp_path):
    """The stored scores of a real ``trainer.test`` give back its test/acc and test/f1 (an ensemble of one)."""
    task, trainer, loader = _trained_task(tmp_path)
    path = tmp_path / "scores" / "test_scores.json"
    cb = TestScoresToJson(str(path))
    trainer.callbacks.append(cb)
    res = trainer.test(task, loader, verbose=False)[0]
    stored = read_test_scores(path)
    assert stored["keys"] == [f"k{i}" for i in range(24)] and stored["targets"] == [i % 3 for i in range(24)]
    assert stored["classes"] == ["x", "y", "z"]
    assert all(abs(sum(row) - 1) < 1e-4 for row in stored["scores"])  # softmax rows
    one = score_ensemble([stored], 3)
    assert one["acc"] == pytest.approx(res["test/acc"], abs=1e-6)
    assert one["f1"] == pytest.approx(res["test/f1"], abs=1e-6)


def test_in_memory_scores_and_rank_files_merge_without_repeats(tmp_path):
    cb = TestScoresToJson()  # no path: kept in memory only, no file
    task, trainer, loader = _trained_task(tmp_path)
    trainer.callbacks.append(cb)
    trainer.test(task, loader, verbose=False)
    assert len(cb.keys) == 24 and not list(tmp_path.glob("**/*.json"))
    path = tmp_path / "test_scores.json"
    path.write_text(json.dumps({"keys": ["a", "b"], "scores": [[1, 0], [0, 1]], "targets": [0, 1],
                                "classes": ["p", "q"]}))
    Path(f"{path}.rank1").write_text(json.dumps({"keys": ["c", "a"], "scores": [[0, 1], [1, 0]],
                                                 "targets": [1, 0]}))  # "a" repeated by the sampler's padding
    merged = read_test_scores(path)
    assert merged["keys"] == ["a", "b", "c"] and merged["targets"] == [0, 1, 1] and merged["classes"] == ["p", "q"]
    path.write_text("{not json")
    with pytest.raises(ValueError, match="test_scores.json: not a test-scores file"):
        read_test_scores(path)
    path.write_text(json.dumps({"keys": ["a", "b"], "scores": [[1, 0]], "targets": [0, 1]}))
    with pytest.raises(ValueError, match="test_scores.json: not a test-scores file .*2 keys, 1 score rows"):
        read_test_scores(path)


def test_fold_runner_reports_the_ensemble_of_its_seeds(tmp_path, monkeypatch):
    """Two seeds per fold: the runner asks each run to store its scores, then writes ensembles.json and the
    summary's ensemble lines, equal to a brute-force count over the stored scores."""
    run_cfg = cv.run_config(yaml.safe_load(_study(tmp_path).read_text()), 0, 1, [1, 2, 3], tmp_path / "r")
    cbs = {c["class_path"]: c["init_args"] for c in run_cfg["trainer"]["callbacks"]}
    assert cbs["callbacks.metrics_json.TestScoresToJson"]["path"] == str(tmp_path / "r" / "test_scores.json")

    g = torch.Generator().manual_seed(1)
    stored = {}

    def fake_run(cmd, cwd=None, check=False):
        run_dir = Path(cmd[4]).parent
        if cmd[2] == "test":
            cfg = yaml.safe_load(Path(cmd[4]).read_text())
            path = next(c["init_args"]["path"] for c in cfg["trainer"]["callbacks"]
                        if c["class_path"].endswith("TestScoresToJson"))
            keys = [f"c{i}" for i in range(12)]
            scores = torch.rand(12, 3, generator=g).softmax(1).tolist()
            stored[run_dir.name] = {"keys": keys, "scores": scores, "targets": [i % 3 for i in range(12)]}
            Path(path).write_text(json.dumps({**stored[run_dir.name], "classes": ["a", "b", "c"]}))
            (run_dir / "test_metrics.json").write_text(json.dumps({"test/acc": 0.5, "test/f1": 0.4}))
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(cv.subprocess, "run", fake_run)
    out = tmp_path / "cv"
    assert cv.main(["--config", str(_study(tmp_path)), "--out", str(out), "--seeds", "0", "1"]) == 0
    ens = json.loads((out / "ensembles.json").read_text())
    assert [e["fold"] for e in ens] == [1, 2, 3] and all(e["seeds"] == [0, 1] for e in ens)
    for e in ens:
        acc, f1 = _brute([stored[f"seed{s}-fold{e['fold']}"] for s in (0, 1)], 3)
        assert e["acc"] == pytest.approx(acc) and e["f1"] == pytest.approx(f1, abs=1e-6)
    summary = (out / "summary.md").read_text()
    assert f"fold 2: acc {100 * ens[1]['acc']:.2f}%" in summary and "ensemble accuracy over 3 fold(s)" in summary
    # one seed: no ensemble, and no stale file from the call before
    assert cv.main(["--config", str(_study(tmp_path)), "--out", str(out), "--seeds", "0"]) == 0
    assert not (out / "ensembles.json").exists() and "ensemble" not in (out / "summary.md").read_text()
    # a run finished before scores were kept: its fold is named, not ensembled
    (out / "seed1-fold3" / "test_scores.json").unlink()
    assert cv.main(["--config", str(_study(tmp_path)), "--out", str(out), "--seeds", "0", "1"]) == 0
    summary = (out / "summary.md").read_text()
    assert "no ensemble for fold 3: no test_scores.json in seed1-fold3" in summary
    assert [e["fold"] for e in json.loads((out / "ensembles.json").read_text())] == [1, 2]
