"""The official LHGNN recipe (conf/lhgnn/official_recipe.yaml after conf/lhgnn/fsd50k.yaml): its data pipeline
is mixup (power domain, raw log-mel) -> SpecAugment (masks at raw 0) -> fixed normalisation; the default
pipeline is what it was; every shipped LHGNN config says in docs/lhgnn_recipes.md what it does; the
checkpoint average of the top k + last."""

import io
import re
import sys
from contextlib import redirect_stdout
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from audiognn.tasks.optim import WarmupMultiStep  # noqa: E402
from callbacks.weight_averaging import CheckpointAveraging  # noqa: E402
from datamodules.audio_shards import AudioShardDataModule  # noqa: E402
from datamodules.transforms import LOG_FLOOR, power_mix  # noqa: E402
from train import cli_main  # noqa: E402

MEAN, STD = -4.6476, 4.5699  # the official normalisation: (fbank + 4.6476) / 4.5699
OFFICIAL = ("conf/lhgnn/fsd50k.yaml", "conf/lhgnn/official_recipe.yaml")
COLUMNS = {  # docs table column -> the configs it describes, in train.py order
    "`audioset.yaml`": ("conf/lhgnn/audioset.yaml",),
    "`fsd50k.yaml`": ("conf/lhgnn/fsd50k.yaml",),
    "`esc50.yaml`": ("conf/lhgnn/esc50.yaml",),
    "`official_recipe.yaml`": OFFICIAL,
    "`urbansound8k/lhgnn.yaml`": ("conf/urbansound8k/lhgnn.yaml",),
}
_CONFIGS: dict = {}


def composed(*configs: str) -> dict:
    """The config train.py parses from ``configs`` (``--print_config``), cached."""
    if configs not in _CONFIGS:
        out = io.StringIO()
        with redirect_stdout(out), pytest.raises(SystemExit) as e:
            cli_main(["fit", *[x for c in configs for x in ("--config", str(REPO / c))], "--print_config"], run=False)
        assert e.value.code in (0, None), out.getvalue()[-2000:]
        _CONFIGS[configs] = yaml.safe_load(out.getvalue())
    return _CONFIGS[configs]


def datamodule(tmp_path, make_shards, init_args: dict) -> AudioShardDataModule:
    """The DataModule of a composed config, on tiny shards (dataset.json: mean 1, std 2)."""
    make_shards(tmp_path, [4], frames=8, bins=16)
    args = {**init_args, "root": str(tmp_path), "batch_size": 4, "num_workers": 0, "synthetic": None}
    dm = AudioShardDataModule(**args)
    dm.setup("fit")
    dm.trainer = SimpleNamespace(training=True, global_rank=0, world_size=1, current_epoch=0)
    return dm


def raw_logmel(b: int, t: int, f: int, seed: int = 0) -> torch.Tensor:
    """Raw log-mel-like values in [-8, -4] (natural-log energies; any mix of them stays far from a mask's 0),
    exact in float16 as the shards store them."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(b, t, f, generator=g) * 4 - 8).half().float()


def formula(m1: torch.Tensor, m2: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """log(λ² exp(m1) + (1 - λ)² exp(m2)) in float64, straight from the definition."""
    lam = lam.double().view(-1, 1, 1)
    return torch.log(lam**2 * m1.double().exp() + (1 - lam) ** 2 * m2.double().exp()).float()


# --- the official pipeline ----------------------------------------------------------------------------------
def test_official_pipeline_mixes_then_masks_then_normalises_with_fixed_statistics(tmp_path, make_shards):
    dm = datamodule(tmp_path, make_shards, composed(*OFFICIAL)["data"]["init_args"])
    assert (dm.mean, dm.std) == (MEAN, STD)  # not the data set's 1, 2
    b, t, f = 16, 400, 128  # SpecAugment 48 bins / 192 frames need inputs wider than the masks
    x, y = raw_logmel(b, t, f), torch.nn.functional.one_hot(torch.arange(b) % 5, 5).float()
    torch.manual_seed(1)
    out = dm.on_after_batch_transfer({"x": x.half(), "y": y, "key": list("abcdefghijklmnop")}, 0)
    lam, perm = dm.mixup.last
    drawn = lam < 1
    assert 0 < int(drawn.sum()) < b and (perm != torch.arange(b)).all()
    mixed = torch.where(drawn.view(b, 1, 1), formula(x, x[perm], lam), x)  # the power-domain mix of raw inputs
    masked_value = (0.0 + 4.6476) / 4.5699  # a cell masked at raw 0, then normalised
    masked = out["x"] == torch.tensor(masked_value)
    assert masked.any(-1).any(-1).all(), "every example has a mask"
    for e in range(b):  # masks are one band of bins and one run of frames
        cells = masked[e]
        rows, cols = cells.all(1), cells.all(0)
        assert torch.equal(cells, rows[:, None] | cols[None, :])
        assert rows.sum() < 192 and cols.sum() < 48
    torch.testing.assert_close(out["x"][~masked], ((mixed - MEAN) / STD)[~masked], atol=2e-5, rtol=0)
    # masks after mixup: a drawn example's masked cells are exactly the constant, not mixed with its partner
    assert masked[drawn].any()
    ly = lam.view(b, 1)
    torch.testing.assert_close(out["y"], torch.where(drawn.view(b, 1), ly * y + (1 - ly) * y[perm], y))


def test_official_mixup_leaves_undrawn_examples_untouched_and_mixes_labels_by_lambda(tmp_path, make_shards):
    dm = datamodule(tmp_path, make_shards, composed(*OFFICIAL)["data"]["init_args"])
    assert (dm.mixup.alpha, dm.mixup.prob, dm.mixup.domain) == (10.0, 0.5, "power")
    b = 400
    x, y = raw_logmel(b, 6, 5, seed=2), torch.rand(b, 7)
    torch.manual_seed(4)
    xm, ym = dm.mixup(x, y)
    lam, perm = dm.mixup.last
    drawn = lam < 1
    assert 0.4 < drawn.float().mean() < 0.6  # probability 0.5 per example
    assert abs(lam[drawn].mean() - 0.5) < 0.03 and abs(lam[drawn].std() - (1 / 84) ** 0.5) < 0.02  # Beta(10, 10)
    assert torch.equal(xm[~drawn], x[~drawn]) and torch.equal(ym[~drawn], y[~drawn])
    torch.testing.assert_close(xm[drawn], formula(x, x[perm], lam)[drawn], atol=1e-5, rtol=0)
    ly = lam.view(b, 1)
    torch.testing.assert_close(ym[drawn], (ly * y + (1 - ly) * y[perm])[drawn])
    assert (perm != torch.arange(b)).all() and torch.equal(perm.sort().values, torch.arange(b))


def test_power_mix_keeps_padding_and_treats_the_partners_padding_as_silence():
    x1, x2 = raw_logmel(1, 6, 4, seed=5), raw_logmel(1, 6, 4, seed=6)
    x1[0, 4:] = 0  # clip 1: 4 valid frames, zero-padded (features.fix_length)
    x2[0, 2:] = 0  # clip 2: 2 valid frames
    lam = torch.tensor([0.3])
    out = power_mix(x1, x2, lam)
    torch.testing.assert_close(out[0, :2], formula(x1, x2, lam)[0, :2])  # both clips: the formula
    silence = torch.full_like(x2, LOG_FLOOR)  # the fbank of a zero wave: every mel energy at the floor
    torch.testing.assert_close(out[0, 2:4], formula(x1, silence, lam)[0, 2:4], atol=1e-5, rtol=0)
    assert torch.equal(out[0, 4:], torch.zeros(2, 4))  # clip 1's padding stays padding
    floor = power_mix(torch.full((1, 1, 2), LOG_FLOOR), torch.full((1, 1, 2), LOG_FLOOR), torch.tensor([0.5]))
    assert torch.equal(floor, torch.full((1, 1, 2), LOG_FLOOR))  # never below the fbank's floor


def test_data_info_records_the_fixed_statistics_and_bad_settings_fail(tmp_path, make_shards):
    dm = datamodule(tmp_path, make_shards, composed(*OFFICIAL)["data"]["init_args"])
    assert dm.data_info["norm"] == {"mean": MEAN, "std": STD, "over": [], "fixed": True}
    dm.trainer = SimpleNamespace(training=False)  # validation: normalised only
    x = raw_logmel(2, 8, 16)
    torch.testing.assert_close(dm.on_after_batch_transfer({"x": x, "y": torch.zeros(2, 3)}, 0)["x"], (x - MEAN) / STD)
    for bad, match in (({"mixup_domain": "power"}, "mixup_domain"), ({"norm": {"mean": 0.0, "std": 0.0}}, "norm"),
                       ({"pipeline_order": "official"}, "pipeline_order")):
        with pytest.raises(ValueError, match=match):
            AudioShardDataModule(root=str(tmp_path), **bad)


# --- the default pipeline is what it was --------------------------------------------------------------------
def previous_pipeline(dm: AudioShardDataModule, batch: dict, alpha: float, prob: float) -> dict:
    """on_after_batch_transfer as it was before pipeline_order / norm / mixup_domain: normalise with the data
    set's statistics, then log-mel mixup (λ, then the draw, then a permutation), then SpecAugment."""
    x, y = (batch["x"].float() - dm.mean) / dm.std, batch["y"]
    b = x.shape[0]
    lam = torch.distributions.Beta(alpha, alpha).sample((b,))
    lam = torch.where(torch.rand(b) < prob, lam, torch.ones_like(lam))
    perm = torch.randperm(b)
    lx, ly = lam.view(b, 1, 1), lam.view(b, 1)
    x, y = lx * x + (1 - lx) * x[perm], ly * y + (1 - ly) * y[perm]
    x, y = dm.spec_augment(x, y)
    return {**batch, "x": x, "y": y}


@pytest.mark.parametrize("alpha,prob", [(0.5, 1.0), (10.0, 0.5)])
def test_default_pipeline_output_is_unchanged(tmp_path, make_shards, alpha, prob):
    dm = datamodule(tmp_path, make_shards, {"mixup_alpha": alpha, "mixup_prob": prob, "freq_mask": 6, "time_mask": 3})
    assert (dm.hparams.pipeline_order, dm.hparams.norm, dm.mixup.domain) == ("normalise_first", "dataset", "logmel")
    assert dm.data_info["norm"] == {"mean": 1.0, "std": 2.0, "over": []}  # the shards' single statistics
    batch = next(iter(dm.train_dataloader()))
    for seed in range(3):
        torch.manual_seed(seed)
        want = previous_pipeline(dm, batch, alpha, prob)
        torch.manual_seed(seed)
        got = dm.on_after_batch_transfer(batch, 0)
        assert torch.equal(got["x"], want["x"]) and torch.equal(got["y"], want["y"])


def test_the_paper_recipes_keep_the_default_pipeline():
    for recipe in ("conf/lhgnn/fsd50k.yaml", "conf/lhgnn/audioset.yaml"):
        d = composed(recipe)["data"]["init_args"]
        assert (d["pipeline_order"], d["norm"], d["mixup_domain"]) == ("normalise_first", "dataset", "logmel")


# --- the docs table -----------------------------------------------------------------------------------------
def docs_table() -> dict[str, dict[str, str]]:
    """docs/lhgnn_recipes.md's table as {row item: {column header: cell}}."""
    lines = [ln for ln in (REPO / "docs" / "lhgnn_recipes.md").read_text().splitlines() if ln.startswith("| ")]
    split = [[c.strip() for c in ln.strip().strip("|").split(" | ")] for ln in lines]
    header, rows = split[0], [r for r in split[1:] if not r[0].startswith("---")]
    assert all(len(r) == len(header) for r in rows), "a docs table row with a wrong number of cells"
    return {r[0]: dict(zip(header, r)) for r in rows}


def numbers(cell: str) -> list[float]:
    return [float(n) for n in re.findall(r"(?<![\w.])-?\d+(?:\.\d+)?(?:e-?\d+)?", cell)]


def averaging_of(cfg: dict) -> str:
    """What a config averages, in the docs table's words."""
    cbs = {c["class_path"].rsplit(".", 1)[-1]: c.get("init_args") or {} for c in cfg["trainer"]["callbacks"]}
    ckpt = cfg["checkpoint"]
    if "CheckpointAveraging" in cbs:
        assert "WindowWeightAveraging" not in cbs  # validation mAP of each epoch's own weights picks the best
        last = " + last" if cbs["CheckpointAveraging"]["include_last"] else ""
        return f"top {ckpt['save_top_k']} by {ckpt['monitor'].replace('/', ' ')}{last}"
    if "WindowWeightAveraging" in cbs:
        w = cbs["WindowWeightAveraging"]
        return f"epochs {w['wa_start']}..{w['wa_end']}"
    return "none"


@pytest.mark.parametrize("column", list(COLUMNS))
def test_docs_table_says_what_each_config_does(column):
    cfg = composed(*COLUMNS[column])
    table = docs_table()
    cell = {item: row[column] for item, row in table.items()}
    model, data, trainer = cfg["model"]["init_args"], cfg["data"]["init_args"], cfg["trainer"]
    opt, sched = model["optimizer"], model["scheduler"]
    assert cell["optimiser"].split()[0] == {"Adam": "Adam", "PaperAdamW": "AdamW"}[opt["class_path"].rsplit(".", 1)[-1]]
    assert numbers(cell["betas"]) == opt["init_args"]["betas"]
    assert numbers(cell["weight decay"]) == [opt["init_args"]["weight_decay"]]
    assert numbers(cell["learning rate"]) == [opt["init_args"]["lr"]]
    assert numbers(cell["warm-up"])[0] == sched["init_args"]["warmup_steps"]
    if sched["class_path"].endswith("WarmupMultiStep"):
        assert numbers(cell["schedule"]) == [*sched["init_args"]["milestones"], sched["init_args"]["gamma"]]
    else:
        assert sched["class_path"].endswith("WarmupCosine") and cell["schedule"].startswith("cosine")
    assert numbers(cell["epochs"]) == [trainer["max_epochs"]]
    assert numbers(cell["gradient clip"]) == ([trainer["gradient_clip_val"]] if trainer["gradient_clip_val"] else [])
    assert numbers(cell["mixup probability"]) == [data["mixup_prob"]]
    assert numbers(cell["mixup α"]) == [data["mixup_alpha"]]
    domain = cell["mixup domain"].split(":")[0].split()[0]
    words = {"power": "power", "logmel": "log-mel"}
    assert domain == ("off" if data["mixup_prob"] == 0 else words[data["mixup_domain"]])
    assert numbers(cell["SpecAugment widths"]) == [data["freq_mask"], data["time_mask"]]
    assert cell["SpecAugment position"].startswith(
        {"augment_first": "before normalisation", "normalise_first": "after normalisation"}[data["pipeline_order"]])
    if data["norm"] == "dataset":
        assert "mean and std" in cell["normalisation"]
    else:
        assert cell["normalisation"].startswith("fixed")
        assert numbers(cell["normalisation"]) == [-data["norm"]["mean"], data["norm"]["std"]]
    assert f"`{model['backbone']['init_args']['cluster_init']}`" in cell["FCM init"]
    assert cell["FCM memberships"].startswith(f"eq. 1, m = {model['backbone']['init_args']['fcm_m']:g}, v = "
                                              f"{model['backbone']['init_args']['cluster_iters']}")
    want = averaging_of(cfg)
    assert (want in cell["averaging"]) if want != "none" else cell["averaging"] == "none", (want, cell["averaging"])


def test_official_schedule_runs_as_the_table_says():
    """Adam with (0.95, 0.999) / 5e-7; linear warm-up over 1000 steps to 1e-3, halved at epochs 10, 15, ..., 40."""
    model = composed(*OFFICIAL)["model"]["init_args"]
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], **model["optimizer"]["init_args"])
    assert opt.defaults["betas"] == (0.95, 0.999) and opt.defaults["weight_decay"] == 5e-7
    sched = WarmupMultiStep(opt, **model["scheduler"]["init_args"])
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3 / 1000)
    for _ in range(999):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3)
    lrs = []
    for _epoch in range(50):
        lrs.append(opt.param_groups[0]["lr"])
        sched.per_epoch.step()
    assert lrs[9] == pytest.approx(1e-3) and lrs[10] == pytest.approx(5e-4) and lrs[15] == pytest.approx(2.5e-4)
    assert lrs[49] == pytest.approx(1e-3 * 0.5**7)


# --- the checkpoint average ---------------------------------------------------------------------------------
def test_checkpoint_averaging_means_the_kept_best_and_last(tmp_path):
    def save(name: str, value: float) -> str:
        torch.save({"state_dict": {"w": torch.full((2,), value), "n": torch.tensor(int(value))},
                    "hyper_parameters": {"name": name}, "optimizer_states": [{}]}, tmp_path / name)
        return str(tmp_path / name)

    best = {save("best-a.ckpt", 1.0): torch.tensor(0.5), save("best-b.ckpt", 2.0): torch.tensor(0.7)}
    save("best-dropped.ckpt", 100.0)  # not among the kept: not averaged
    ckpt = SimpleNamespace(best_k_models=best, mode="max", last_model_path=save("last.ckpt", 6.0))
    barriers = []
    trainer = SimpleNamespace(checkpoint_callback=ckpt, is_global_zero=True,
                              strategy=SimpleNamespace(barrier=lambda: barriers.append(1)))
    cb = CheckpointAveraging()
    cb.on_fit_end(trainer, None)
    out = torch.load(tmp_path / "averaged.ckpt", weights_only=True)
    assert torch.equal(out["state_dict"]["w"], torch.full((2,), 3.0))  # (1 + 2 + 6) / 3
    assert out["state_dict"]["n"] == 6 and out["hyper_parameters"] == {"name": "last.ckpt"}  # last's metadata
    assert "optimizer_states" not in out and barriers == [1]
    assert [Path(p).name for p in cb.averaged_from] == ["best-b.ckpt", "best-a.ckpt", "last.ckpt"]
    CheckpointAveraging(output="no-last.ckpt", include_last=False).on_fit_end(trainer, None)
    out = torch.load(tmp_path / "no-last.ckpt", weights_only=True)
    assert torch.equal(out["state_dict"]["w"], torch.full((2,), 1.5))  # (1 + 2) / 2
