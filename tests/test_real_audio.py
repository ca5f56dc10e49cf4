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
