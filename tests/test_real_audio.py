"""bench/real_audio.py's recipe handling: the shipped UrbanSound8K recipes read with their fragments, screening
overrides (``--set``), and the recipe digest that keeps a changed recipe from reading back an older run."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("real_audio", ROOT / "bench" / "real_audio.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_recipes_read_with_fragments_and_crops_match_their_tests():
    mod = _bench()
    for name in mod.MODELS:
        r = mod.recipe(name)
        assert {"backbone", "optimizer"} <= set(r["model"]) and "batch_size" in r["data"]
        crop = r["data"].get("train_crop_frames")
        if crop is not None:  # trained on crops: tested on crops of the same length (LHGNN's positions too)
            assert r["model"].get("eval_crop_frames") == crop
            assert r["model"]["backbone"]["init_args"].get("time_num", crop) == crop


def test_overrides_and_digest():
    mod = _bench()
    base = mod.recipe("cnn")
    r = mod.recipe("cnn", ["data.train_crop_frames=200", "model.backbone.init_args.channels=[16, 32]",
                           "model.eval_crop_frames=null", "model.new.deep.key=1.5"])
    assert r["data"]["train_crop_frames"] == 200 and r["model"]["backbone"]["init_args"]["channels"] == [16, 32]
    assert "eval_crop_frames" not in r["model"] and r["model"]["new"]["deep"]["key"] == 1.5
    assert mod.recipe("cnn") == base  # the shipped recipe is not changed by an override
    assert mod.recipe_id(base) == mod.recipe_id(mod.recipe("cnn")) != mod.recipe_id(r)
    with pytest.raises(ValueError, match="model.<path>"):
        mod.recipe("cnn", ["trainer.max_epochs=3"])
    with pytest.raises(ValueError, match="model.<path>"):
        mod.recipe("cnn", ["data.batch_size"])


def test_weight_averaging_of_a_recipe_is_kept_and_can_be_overridden(tmp_path, monkeypatch):
    """A recipe's weight-averaging callback changes the tested weights: the bench keeps it (and its digest
    changes with it); ``averaging=[...]`` sets it for a screen, ``averaging=[]`` removes it."""
    mod = _bench()
    ema = "[{class_path: callbacks.weight_averaging.EMAWeightAveraging, init_args: {decay: 0.99}}]"
    r = mod.recipe("cnn", [f"averaging={ema}"])
    assert r["averaging"] == [{"class_path": "callbacks.weight_averaging.EMAWeightAveraging",
                               "init_args": {"decay": 0.99}}]
    assert mod.recipe_id(r) != mod.recipe_id(mod.recipe("cnn", [f"averaging={ema.replace('0.99', '0.9')}"]))
    cb = mod._callable(r["averaging"][0])()
    from callbacks.weight_averaging import EMAWeightAveraging

    assert isinstance(cb, EMAWeightAveraging)
    conf = tmp_path / "conf" / "urbansound8k"
    conf.mkdir(parents=True)
    (conf / "x.yaml").write_text(
        "model: {init_args: {backbone: {class_path: a.B}}}\ndata: {init_args: {batch_size: 4}}\n"
        "trainer:\n  callbacks:\n    - class_path: lightning.pytorch.callbacks.LearningRateMonitor\n"
        "    - class_path: callbacks.weight_averaging.WindowWeightAveraging\n      init_args: {wa_start: 2}\n")
    monkeypatch.setattr(mod, "ROOT", tmp_path)
    r = mod.recipe("x")
    assert r["averaging"] == [{"class_path": "callbacks.weight_averaging.WindowWeightAveraging",
                               "init_args": {"wa_start": 2}}]  # only the callbacks that change the weights
    assert "averaging" not in mod.recipe("x", ["averaging=[]"])


def test_two_runs_never_share_an_out_directory(tmp_path, capsys):
    """A second run on an --out that a running one holds stops with a one-line error before it trains (both
    would rewrite results.json and lose each other's runs)."""
    import fcntl
    import json

    mod = _bench()
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "dataset.json").write_text(json.dumps({"classes": ["a", "b"], "splits": {"fold1": {}, "fold2": {}}}))
    out = tmp_path / "out"
    out.mkdir()
    with (out / ".lock").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(SystemExit):
            mod.main(["--shards", str(shards), "--out", str(out), "--models", "cnn"])
    err = capsys.readouterr().err
    assert "another real_audio run is writing there" in err and str(out) in err
    assert not (out / "results.json").exists()


def test_code_digest_changes_with_the_code(tmp_path):
    """Results are keyed by the code too: editing, adding or renaming a source file gives another digest."""
    mod = _bench()
    for d in mod.CODE_DIRS:
        (tmp_path / d / "sub").mkdir(parents=True)
        (tmp_path / d / "sub" / "m.py").write_text("x = 1\n")
    first = mod.code_id(tmp_path)
    assert first == mod.code_id(tmp_path) and len(first) == 10
    (tmp_path / "audiognn" / "sub" / "m.py").write_text("x = 2\n")
    edited = mod.code_id(tmp_path)
    (tmp_path / "callbacks" / "sub" / "m.py").rename(tmp_path / "callbacks" / "sub" / "n.py")
    renamed = mod.code_id(tmp_path)
    (tmp_path / "callbacks" / "README.md").write_text("not code")
    assert len({first, edited, renamed}) == 3 and mod.code_id(tmp_path) == renamed


def test_code_digest_of_a_model_leaves_out_the_other_models(tmp_path):
    """A model's digest covers its own module and the model modules it imports (transitively), and every file
    outside ``audiognn/models``: editing one model re-runs that model only, editing shared code re-runs all."""
    mod = _bench()
    models = tmp_path / "audiognn" / "models"
    models.mkdir(parents=True)
    for d in ("datamodules", "callbacks"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "m.py").write_text("x = 1\n")
    (models / "__init__.py").write_text("")
    (models / "base.py").write_text("B = 1\n")
    (models / "front.py").write_text("from audiognn.models.base import B\n")
    (models / "a.py").write_text("import torch\nfrom audiognn.models import front\n")
    (models / "b.py").write_text("import audiognn.models.base\n")
    assert mod.model_modules("audiognn.models.a", tmp_path) == {
        "audiognn/models/a.py", "audiognn/models/front.py", "audiognn/models/base.py"}
    assert mod.model_modules("audiognn.models.b", tmp_path) == {"audiognn/models/b.py", "audiognn/models/base.py"}
    digests = lambda: (mod.code_id(tmp_path, "audiognn.models.a.A"), mod.code_id(tmp_path, "audiognn.models.b.B"))  # noqa: E731
    a0, b0 = digests()
    (models / "front.py").write_text("from audiognn.models.base import B\nC = 2\n")  # only a imports it
    a1, b1 = digests()
    assert a1 != a0 and b1 == b0
    (models / "base.py").write_text("B = 2\n")  # both import it
    a2, b2 = digests()
    assert a2 != a1 and b2 != b1
    (tmp_path / "callbacks" / "m.py").write_text("x = 2\n")  # shared code
    a3, b3 = digests()
    assert a3 != a2 and b3 != b2
    assert mod.code_id(tmp_path) not in (a3, b3)  # without a backbone: every file


def _record(seed: int, keys: list[str], scores: list[list[float]], targets: list[int], fold: int = 3) -> dict:
    n = len(scores[0])
    return {"model": "cnn", "test_fold": fold, "seed": seed, "classes": [str(i) for i in range(n)],
            "test_keys": keys, "test_scores": scores, "test_targets": targets}


def test_ensemble_averages_the_class_scores_of_each_clip_across_seeds():
    """The ensemble's prediction for a clip is the argmax of its scores averaged over the seeds, matched by key
    (each run may list the clips in another order); accuracy and macro-F1 against a brute-force count."""
    mod = _bench()
    keys = ["a", "b", "c", "d"]
    targets = [0, 1, 2, 1]
    s0 = [[0.6, 0.4, 0.0], [0.5, 0.4, 0.1], [0.1, 0.1, 0.8], [0.0, 0.9, 0.1]]  # right: a, c, d
    s1 = [[0.45, 0.55, 0.0], [0.1, 0.9, 0.0], [0.2, 0.5, 0.3], [0.0, 0.2, 0.8]]  # right: b
    order = [3, 1, 0, 2]  # seed 1 lists the clips in another order
    r1 = _record(1, [keys[i] for i in order], [s1[i] for i in order], [targets[i] for i in order])
    e = mod.ensemble([_record(0, keys, s0, targets), r1])
    mean = [[(x + y) / 2 for x, y in zip(a, b)] for a, b in zip(s0, s1)]
    pred = [max(range(3), key=row.__getitem__) for row in mean]
    assert pred == [0, 1, 2, 1]  # every clip right, though each seed alone gets some wrong
    assert e["acc"] == 1.0 and e["f1"] == 1.0 and e["seeds"] == [0, 1]
    assert e["cm"] == [[1, 0, 0], [0, 2, 0], [0, 0, 1]]
    # one seed: its own predictions; macro-F1 by hand (class 0: P 1/2 R 1, class 1: P 1 R 1/2, class 2: 1)
    one = mod.ensemble([_record(0, keys, s0, targets)])
    f1 = [2 / 3, 2 / 3, 1.0]
    assert one["acc"] == 0.75 and abs(one["f1"] - sum(f1) / 3) < 1e-6


def test_ensemble_refuses_runs_on_other_clips():
    mod = _bench()
    a = _record(0, ["a", "b"], [[1.0, 0.0], [0.0, 1.0]], [0, 1])
    b = _record(1, ["a", "c"], [[1.0, 0.0], [0.0, 1.0]], [0, 1])
    with pytest.raises(ValueError, match="cnn fold 3 seed 1: tested other clips than cnn fold 3 seed 0"):
        mod.ensemble([a, b])


def test_table_with_seeds_reports_runs_and_ensembles():
    """With two seeds the table counts folds × seeds, names the best run's seed, adds the ensemble row and
    gives the per-fold mean over the seeds; with one seed there is no ensemble."""
    mod = _bench()
    runs = []
    for fold in (1, 2):
        for seed, scores, acc in ((0, [[0.9, 0.1], [0.6, 0.4]], 0.5), (1, [[0.4, 0.6], [0.1, 0.9]], 0.5)):
            runs.append({**_record(seed, ["a", "b"], scores, [0, 1], fold), "acc": acc + 0.1 * fold * seed,
                         "f1": 0.4, "params": 10, "epoch_seconds": [60.0, 60.0]})
    lines = mod.table(runs, threads=1, folds=2)
    text = "\n".join(lines)
    assert "| CNN | 2 folds × 2 seeds | 0.575 ± 0.096 |" in text  # accs 0.5, 0.6, 0.5, 0.7
    assert "0.700 (fold 2, seed 1)" in text
    # ensemble: clip a 0.65 / 0.35 -> class 0 (right), b 0.35 / 0.65 -> class 1 (right), on both folds
    assert "| CNN | 2 folds × 2 seeds | 1.000 ± 0.000 | 1.000 ± 0.000 | 1.000 (fold 1) | 4.0–4.0 |" in text
    assert "| CNN | 0.550 / 0.400; ens 1.000 | 0.600 / 0.400; ens 1.000 |" in text
    single = "\n".join(mod.table([r for r in runs if r["seed"] == 0], threads=1, folds=2))
    assert "ensemble" not in single and "| CNN | 2 folds × 1 seed | 0.500 ± 0.000 |" in single


def test_mix_averages_every_run_of_the_named_models_per_fold(capsys):
    """``--mix cnn+gnn``: per held-out fold, the class scores of every run of both models averaged (each run
    weighing the same), scored like one run, its minutes the members' summed; a fold where one model has no run
    has no mix; the table gives the row and the per-fold cell. A bad spec stops with an error naming it."""
    mod = _bench()
    keys, targets = ["a", "b", "c"], [0, 1, 1]
    cnn = [[0.8, 0.2], [0.7, 0.3], [0.2, 0.8]]  # right: a, c
    gnn = [[0.4, 0.6], [0.1, 0.9], [0.6, 0.4]]  # right: b
    runs = [{**_record(0, keys, cnn, targets, fold), "acc": 2 / 3, "f1": 0.5, "params": 1, "epoch_seconds": [60.0]}
            for fold in (1, 2)]
    runs.append({**_record(0, keys, gnn, targets, 1), "model": "gnn", "acc": 1 / 3, "f1": 0.3, "params": 1,
                 "epoch_seconds": [120.0, 120.0]})
    mix = mod.mixes(runs, ["cnn+gnn"])
    assert set(mix) == {("cnn+gnn", 1)}  # fold 2 has no GenreGNN run
    # mean scores: a 0.6/0.4 -> 0 (right), b 0.4/0.6 -> 1 (right), c 0.4/0.6 -> 1 (right)
    e = mix["cnn+gnn", 1]
    assert e["acc"] == 1.0 and e["runs"] == 2 and e["minutes"] == 5.0 and e["cm"] == [[1, 0], [0, 2]]
    text = "\n".join(mod.table(runs, threads=1, folds=2, mix=mix))
    assert "| CNN + GenreGNN | 2 (1 fold) | 1.000 ± 0.000 | 1.000 ± 0.000 | 1.000 (fold 1) | 5.0–5.0 |" in text
    assert "| CNN + GenreGNN (ensemble across models) | ens 1.000 / 1.000 | - |" in text
    for bad in ("cnn", "cnn+cnn", "cnn+lhgnn"):
        with pytest.raises(SystemExit):
            mod.main(["--models", "cnn", "gnn", "--mix", bad, "--report", "--out", "/nonexistent/never"])
        assert f"--mix {bad}:" in capsys.readouterr().err


def test_recording_accuracy_weighs_every_source_recording_the_same():
    """UrbanSound8K clip names ``fsID-classID-occurrenceID-sliceID``: a fold's clips grouped by source recording
    (fsID), the largest one's share, and the accuracy with every recording weighing the same, against a count by
    hand; names of another form give no such lines."""
    mod = _bench()
    # recording 100: four clips of class 0, one right; recording 7: one clip of class 1, right
    keys = ["100-0-0-0", "100-0-0-1", "100-0-1-0", "100-0-1-1", "7-1-0-3"]
    scores = [[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.4, 0.6], [0.1, 0.9]]
    run = {**_record(0, keys, scores, [0, 0, 0, 0, 1]), "acc": 0.4, "f1": 0.4, "params": 1, "epoch_seconds": [60.0]}
    assert [mod.recording_of(k) for k in keys] == ["100"] * 4 + ["7"]
    assert mod.recording_of("a-b") is None and mod.recording_of("1-2-3") is None
    assert mod.recording_acc(run) == (1 / 4 + 1) / 2  # 0.625, against 0.4 over clips
    text = "\n".join(mod.table([run], threads=1, folds=1))
    assert "| 3 | 5 | 2 | 4 (80.0%) | 100.0% |" in text
    assert "| CNN | 0.625 |" in text
    other = {**run, "test_keys": ["a", "b", "c", "d", "e"]}
    assert mod.recording_acc(other) is None
    assert "source recordings" not in "\n".join(mod.table([other], threads=1, folds=1))
