"""Every YAML under conf/: recipes, overlays and fragments; every recipe alone and with each overlay that names
it parses (``--print_config``), as does every ``train.py`` command the docs show; overlays alone stop with a
message; no recipe hard-codes hardware or paths; every recipe + conf/trainer/cpu.yaml fits one tiny epoch
with no wandb account."""

import io
import re
import sys
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from audiognn.cli.runs import expand_configs, fragments_of, overlay_recipes  # noqa: E402
from train import cli_main  # noqa: E402

CONF = REPO / "conf"
ALL = sorted(CONF.rglob("*.yaml"))
FRAGMENTS = [p for p in ALL if p.is_relative_to(CONF / "base")]
OVERLAYS = [p for p in ALL if p not in FRAGMENTS and (yaml.safe_load(p.read_text()) or {}).get("overlay")]
RECIPES = [p for p in ALL if p not in FRAGMENTS and p not in OVERLAYS]
CPU = CONF / "trainer" / "cpu.yaml"
DOCS = [REPO / "README.md", REPO / "slurm" / "README.md", *ALL]


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_recipe_composes_from_fragments(recipe):
    """A recipe names its shared parts in ``compose:`` (run defaults, callbacks, data blocks) instead of
    pasting them: every recipe has one and every fragment it names exists."""
    compose = (yaml.safe_load(recipe.read_text()) or {}).get("compose")
    assert compose, f"{recipe.relative_to(REPO)}: no compose: list"
    assert all(f.is_file() for f in fragments_of(recipe))


def rel(p: Path) -> str:
    return str(p.relative_to(REPO))


def combinations() -> list[tuple[str, ...]]:
    combos = [(rel(r),) for r in RECIPES]
    combos += [(rel(r), rel(o)) for o in OVERLAYS for r in overlay_recipes(o, RECIPES)]
    return combos


def documented_commands() -> list[tuple[str, tuple[str, ...]]]:
    """(subcommand, config files) of every `train.py SUB ... --config X [--config Y]` line in the docs."""
    found = set()
    for doc in DOCS:
        if not doc.exists():
            continue
        text = re.sub(r"\\\n\s*#?\s*", " ", doc.read_text())  # continued lines
        for m in re.finditer(r"train\.py (fit|validate|test|predict)((?: [^\n`]*?)?)(?:`|\n|$)", text):
            configs = tuple(re.findall(r"--config[= ](\S+)", m.group(2)))
            if configs and all(c.startswith("conf/") and (REPO / c).is_file() for c in configs):
                found.add((m.group(1), configs))
    return sorted(found)


def print_config(*args: str) -> dict:
    out = io.StringIO()
    with redirect_stdout(out), pytest.raises(SystemExit) as e:
        cli_main([*args, "--print_config"], run=False)
    assert e.value.code in (0, None), out.getvalue()[-2000:]
    return yaml.safe_load(out.getvalue())


def test_every_yaml_is_a_recipe_an_overlay_or_a_used_fragment():
    assert RECIPES and OVERLAYS and FRAGMENTS
    used = {f for r in RECIPES for f in fragments_of(r)}
    assert {f.resolve() for f in FRAGMENTS} <= used, "fragments no recipe composes"
    for o in OVERLAYS:
        assert overlay_recipes(o, RECIPES), f"{rel(o)} names no existing recipe"
    names = [yaml.safe_load(r.read_text()).get("run", {}).get("name") for r in RECIPES]
    assert all(names) and len(set(names)) == len(names), names  # one run name per recipe, written once


@pytest.mark.parametrize("recipe", RECIPES, ids=rel)
def test_no_recipe_hard_codes_hardware_or_paths(recipe):
    text = recipe.read_text()
    cfg = yaml.safe_load(text)
    trainer = cfg.get("trainer") or {}
    for key in ("accelerator", "devices", "num_nodes", "strategy", "sync_batchnorm", "default_root_dir", "plugins"):
        assert key not in trainer, f"{rel(recipe)} sets trainer.{key} (overlays and conf/base/run.yaml do)"
    assert "logger" not in trainer and "dirpath" not in (cfg.get("checkpoint") or {})
    assert "offline: false" not in text and cfg.get("compose"), rel(recipe)
    assert str(CPU.relative_to(REPO)) in text or "conf/trainer/" in text or recipe.parent.name in (
        "genre", "mmgnn", "urbansound8k") or recipe.name == "default.yaml", "paper-scale recipes say how to run on CPU"


@pytest.mark.parametrize("configs", combinations(), ids="+".join)
def test_recipe_and_overlay_combinations_parse(configs):
    args = [x for c in configs for x in ("--config", str(REPO / c))]
    cfg = print_config("fit", *args)
    assert cfg["run"]["name"] and cfg["run"]["wandb"] == "offline"
    assert cfg["trainer"]["default_root_dir"] == "runs" and cfg["checkpoint"]["save_last"] is True
    assert cfg["trainer"]["plugins"][0]["class_path"] == "audiognn.checkpoint.SafeCheckpointIO"
    if len(configs) == 1:  # alone: one device of whatever kind is there
        assert (cfg["trainer"]["accelerator"], cfg["trainer"]["devices"]) == ("auto", 1)
    if configs[-1] == rel(CPU):
        assert (cfg["trainer"]["accelerator"], cfg["trainer"]["strategy"]) == ("cpu", "auto")


@pytest.mark.parametrize("sub,configs", documented_commands(), ids=lambda x: "+".join(x) if isinstance(x, tuple) else x)
def test_documented_commands_parse(sub, configs):
    print_config(sub, *[x for c in configs for x in ("--config", str(REPO / c))])


@pytest.mark.parametrize("overlay", OVERLAYS, ids=rel)
def test_overlay_alone_says_to_put_a_recipe_first(overlay, capsys):
    with pytest.raises(SystemExit) as e:
        cli_main(["fit", "--config", str(overlay)], run=False)
    assert "is an overlay, not a recipe: put a recipe first" in str(e.value.code)
    assert str(overlay) in str(e.value.code)


def test_fragments_come_first_and_once():
    argv = expand_configs(["fit", "--config", "conf/default.yaml", "--config", rel(CPU), "--trainer.max_epochs", "1"])
    configs = [argv[i + 1] for i, a in enumerate(argv) if a == "--config"]
    assert [Path(c).name for c in configs] == ["run.yaml", "audio.yaml", "synthetic_genre.yaml", "default.yaml",
                                               "cpu.yaml"]
    assert argv[-2:] == ["--trainer.max_epochs", "1"]


# --- one tiny epoch of every recipe on the CPU, no wandb account ------------------------------------------
def tiny_overrides(recipe: Path, tmp_path: Path, synthetic_set) -> list[str]:
    cfg = print_config("fit", "--config", str(recipe))
    data, model = cfg["data"]["class_path"], cfg["model"]["class_path"]
    common = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
              "--trainer.enable_model_summary", "false", "--trainer.default_root_dir", str(tmp_path / "runs")]
    if data.endswith("RecDataModule"):
        from tests.test_recsys_lastfm import write_lastfm2k

        write_lastfm2k(str(tmp_path / "lastfm"))
        return [*common, "--data.init_args.root", str(tmp_path / "lastfm"), "--data.init_args.text_dim", "4",
                "--data.init_args.batch_size", "64", "--data.init_args.eval_batch_size", "8",
                "--trainer.check_val_every_n_epoch", "1"]
    multilabel = cfg["checkpoint"]["monitor"] == "val/mAP"
    bins = ((cfg["model"]["init_args"].get("backbone") or {}).get("init_args") or {}).get("n_mels") or 128
    if bins != 128:  # a recipe for other features (UrbanSound8K: 64 bins): tiny fake shards of that shape
        from tests.conftest import write_shards

        root = tmp_path / "shards"
        write_shards(root, [8], extra_splits={"val": [8], "test": [8]}, frames=64, bins=bins)
    else:
        root = synthetic_set(variant="events" if multilabel else "genre", train=16, val=8, test=8, target_frames=64)
    args = [*common, "--data.init_args.root", str(root), "--data.init_args.synthetic", "null"]
    if data.endswith("GenreGraphDataModule"):
        return [*args, "--data.init_args.steps_per_epoch", "2"]
    args += ["--data.init_args.batch_size", "8", "--data.init_args.num_workers", "0",
             "--data.init_args.train_splits", "[train]", "--data.init_args.val_splits", "[val]",
             "--data.init_args.test_splits", "[test]", "--data.init_args.train_mode", "exact"]
    backbone = cfg["model"]["init_args"].get("backbone") or {}
    if model.endswith("AudioClassifier") and backbone.get("class_path", "").endswith("LHGNN"):
        args += ["--model.init_args.backbone.init_args.size", "tiny",
                 "--model.init_args.backbone.init_args.time_num", "64"]
    return args


@pytest.mark.parametrize("recipe", RECIPES, ids=rel)
def test_every_recipe_fits_one_tiny_epoch_on_cpu(recipe, tmp_path, synthetic_set, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "disabled")  # tests/test_outputs.py runs one fit offline end to end
    monkeypatch.chdir(tmp_path)  # whatever a recipe writes relative to the working directory stays here
    args = ["fit", "--config", str(recipe), "--config", str(CPU), *tiny_overrides(recipe, tmp_path, synthetic_set)]
    cli = cli_main(args, run=False)
    cli.trainer.fit(cli.model, cli.datamodule)
    assert cli.trainer.global_step >= 1
    run = Path(cli.trainer.default_root_dir)
    assert run.parent.parent == tmp_path / "runs" and run.name == "version_0"
    assert (run / "checkpoints" / "last.ckpt").exists()


@pytest.mark.parametrize("recipe", RECIPES, ids=rel)
def test_load_composed_gives_what_train_py_parses(recipe, tmp_path):
    """One flat mapping per recipe (for tools that rewrite recipes): it parses to the same config."""
    from audiognn.cli.runs import load_composed

    flat = load_composed(recipe)
    assert "compose" not in flat and not any(k.endswith("+") for k in flat.get("trainer", {}))
    (tmp_path / "flat.yaml").write_text(yaml.safe_dump(flat))
    want = print_config("fit", "--config", str(recipe))
    assert print_config("fit", "--config", str(tmp_path / "flat.yaml")) == {**want, "compose": None}
