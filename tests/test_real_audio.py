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
