"""The audio models on equal terms on real recordings: UrbanSound8K, train on two folds, test on the third.

    python -m datamodules.prepare urbansound8k /data/UrbanSound8K --folds 1 2 3 \\
        --target-frames 400 --num-mel-bins 64 --out data/urbansound8k
    python bench/real_audio.py --shards data/urbansound8k --seeds 0 1 2 --jobs 2 --out bench/out/us8k-seeds3

For every model (CNN, RNN, GenreGNN, LHGNN-xs) and every held-out fold of the set (the folds are the
splits ``fold<N>`` of ``dataset.json``; with UrbanSound8K folds 1-3 that is three rotations), the model is
trained on the other folds for ``--epochs`` epochs (the same for every model), once per seed of ``--seeds``,
and tested on the held-out fold (``--train-folds`` trains on fewer folds: a learning curve). Backbone, optimiser, schedule,
batch size, training crops, test crops and augmentation come from ``conf/urbansound8k/<model>.yaml`` (the recipes ``train.py`` runs), so the bench measures what the recipes
train; ``--set data.train_crop_frames=200 ...`` overrides recipe values for screening. The normalisation
statistics of each rotation are pooled over its training folds only (never the held-out fold). No validation
runs during training and the last model is tested: no choice is made on the test fold. A recipe that tests
on crops (``eval_crop_frames``: the mean of the logits of consecutive crops) is, with ``--whole``, also tested
on whole clips (``acc_whole`` / ``f1_whole`` in results.json).

Prints one table: accuracy and macro-F1 (mean ± sample std over the runs: rotations × seeds), trainable
parameters and training seconds per epoch (wall clock, ``--threads`` torch threads); with two seeds or more,
a second one: the ensemble of a model's seeds (each test clip's class scores averaged over the seeds), per
rotation, mean ± std over the rotations. Writes ``results.json`` (one record per model, fold and seed, with its
recipe, its digest, a digest of the code, the load average and each test clip's class scores; a finished run
of the same recipe on the same code is read back, not repeated: re-run the same command to resume; a record
without the scores, written before they were kept, is run again), ``table.md`` (also per fold, and the load
average), ``confusion_<model>.png`` (summed over the runs) and ``confusion_<model>_ensemble.png`` to ``--out``.

``--mix cnn+gnn`` adds an ensemble across models: per held-out fold, each clip's class scores averaged over every
run of the named models (all their seeds, each run weighing the same), scored like one run, its training time the
members' summed (``confusion_mix_<models>.png``). Nothing is chosen on the test fold: the members and their
weights are fixed before the runs are scored.

UrbanSound8K cuts each source recording (a freesound ID, the first field of a clip's name
``fsID-classID-occurrenceID-sliceID``) into up to dozens of 4 s clips, all of one fold: a held-out fold holds far
fewer independent recordings than clips, and one long recording can weigh several points of a fold's accuracy.
``--report`` (and ``table.md``) therefore also gives, per held-out fold, the clips, the source recordings and the
largest one's share, and each model's accuracy with every source recording weighing the same (the mean over
recordings of the accuracy on its clips): a figure beside the clip accuracy, never in its place.
"""

from __future__ import annotations

import argparse
import copy
import fcntl
import hashlib
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("WANDB_MODE", "disabled")

from bench.genre_compare import EpochTimer, _callable, _trainer  # noqa: E402

MODELS = ("cnn", "rnn", "gnn", "lhgnn")
NAMES = {"cnn": "CNN", "rnn": "RNN (CRNN)", "gnn": "GenreGNN", "lhgnn": "LHGNN-xs"}


#: the recipe's trainer callbacks that change the trained weights, and so the result: the bench keeps them
AVERAGING = "callbacks.weight_averaging."


def recipe(name: str, overrides: list[str] = ()) -> dict:
    """The ``model`` and ``data`` init args of ``conf/urbansound8k/<name>.yaml``, its ``compose:`` fragments
    merged in (as ``train.py`` reads it), and its weight-averaging callbacks (``averaging``, when it has any:
    they change the trained weights), then ``overrides``: ``"data.train_crop_frames=128"``,
    ``"model.backbone.init_args.hidden=64"`` (dotted path ``=`` a YAML value; ``null`` removes the key),
    ``"averaging=[{class_path: callbacks.weight_averaging.EMAWeightAveraging, init_args: {decay: 0.99}}]"``."""
    import yaml

    from audiognn.cli.runs import load_composed

    cfg = load_composed(ROOT / "conf" / "urbansound8k" / f"{name}.yaml")
    r = copy.deepcopy({"model": cfg["model"]["init_args"], "data": cfg["data"]["init_args"]})
    averaging = [c for c in (cfg.get("trainer") or {}).get("callbacks") or []
                 if isinstance(c, dict) and str(c.get("class_path", "")).startswith(AVERAGING)]
    if averaging:  # only then a key: the digest of a recipe without weight averaging stays what it was
        r["averaging"] = copy.deepcopy(averaging)
    for item in overrides:
        path, _, value = item.partition("=")
        *parents, leaf = path.split(".")
        if path == "averaging" and _:  # the weight-averaging callbacks, a YAML list ([] or null: none)
            r.pop("averaging", None)
            if v := yaml.safe_load(value):
                r["averaging"] = v
            continue
        if not _ or parents[:1] not in (["model"], ["data"]):
            raise ValueError(f"override {item!r}: expected model.<path>=<value>, data.<path>=<value> or "
                             "averaging=<list of callbacks>")
        node = r
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        v = yaml.safe_load(value)
        node.pop(leaf, None) if v is None else node.__setitem__(leaf, v)
    return r


def recipe_id(r: dict) -> str:
    """A short digest of a recipe (after overrides): a changed recipe is a new run, never read back."""
    return hashlib.sha1(json.dumps(r, sort_keys=True).encode()).hexdigest()[:10]


#: the code a run executes besides its recipe: a change to any of these files is a new run, never read back
CODE_DIRS = ("audiognn", "datamodules", "callbacks")
MODELS_DIR = "audiognn/models"


def model_modules(module: str, root: Path = ROOT) -> set[str]:
    """The files of ``audiognn/models/`` a backbone's module needs: ``module`` (``"audiognn.models.rnn"``) and
    every module of that package it imports, transitively (read with :mod:`ast`, nothing imported)."""
    import ast

    seen, todo = set(), [module]
    while todo:
        mod = todo.pop()
        path = root / (mod.replace(".", "/") + ".py")
        if mod in seen or not path.is_file():
            continue
        seen.add(mod)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names] \
                if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            todo += [n for n in names if n.startswith("audiognn.models.")]
    return {f"{m.replace('.', '/')}.py" for m in seen}


def code_id(root: Path = ROOT, backbone: str | None = None) -> str:
    """A short digest of the ``.py`` files of :data:`CODE_DIRS` (paths and contents): the same recipe on other
    code can train other weights (a reordered float sum changes 15 epochs), so results are keyed by both.
    With ``backbone`` (a class path, ``"audiognn.models.cnn.CNN"``) the files of ``audiognn/models/`` that
    module does not import are left out: a change to one model does not re-run the others."""
    keep = model_modules(backbone.rpartition(".")[0], root) if backbone else None
    h = hashlib.sha1()
    for path in sorted(p for d in CODE_DIRS for p in (root / d).rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if keep is not None and rel.startswith(MODELS_DIR + "/") and rel.count("/") == 2 \
                and not rel.endswith("__init__.py") and rel not in keep:
            continue
        h.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:10]


def folds_of(info: dict) -> list[int]:
    """The fold numbers of a prepared set (its splits ``fold<N>``)."""
    return sorted(int(s[4:]) for s in info["splits"] if s.startswith("fold") and s[4:].isdigit())


def train_fold_norm(root: Path, splits: list[str]) -> tuple[float, float]:
    """Mean and std of the log-mel over the valid frames of ``splits`` (pooled: the training folds only)."""
    import numpy as np

    from audiognn.data.shards import read_split_clips

    acc = np.zeros(3)  # sum, sum of squares, count
    for split in splits:
        for c in read_split_clips(root, split):
            v = c["mel"][: c["valid"]].astype(np.float64)
            acc += (v.sum(), (v**2).sum(), v.size)
    mean = acc[0] / acc[2]
    return float(mean), float(np.sqrt(max(acc[1] / acc[2] - mean**2, 1e-12)))


def run_one(name: str, root: Path, test_fold: int, train_folds: list[int], args, seed: int = 0) -> dict:
    """Train ``name`` on ``train_folds`` with ``seed``, test on ``test_fold``; accuracy, F1, parameters, epoch
    times, CM, and each test clip's class scores (``test_keys``, ``test_scores``, ``test_targets``).

    With ``eval_crop_frames`` in the recipe the clip is also tested whole (``acc_whole``, ``f1_whole``: the
    other evaluation, reported beside the recipe's; the table shows the recipe's)."""
    import lightning as L

    from audiognn.tasks.audio_classifier import AudioClassifier
    from callbacks.confusion_matrix import ConfusionMatrixPlot
    from callbacks.metrics_json import TestScoresToJson
    from datamodules.audio_shards import AudioShardDataModule

    r = recipe(name, args.set)
    code = code_id(backbone=r["model"]["backbone"]["class_path"])  # before training: the code that trains
    data = {k: v for k, v in r["data"].items() if k not in ("root", "num_workers", "train_splits", "val_splits",
                                                             "test_splits", "seed", "batch_size")}
    batch_size = r["data"].get("batch_size", 32)
    train = [f"fold{f}" for f in train_folds]
    norm = train_fold_norm(root, train)

    class TrainFoldNorm(AudioShardDataModule):
        def setup(self, stage=None):
            super().setup(stage)
            self.mean, self.std = norm

    dm = TrainFoldNorm(str(root), batch_size=batch_size, num_workers=0, train_splits=train,
                       val_splits=[f"fold{test_fold}"], test_splits=[f"fold{test_fold}"], seed=seed, **data)
    L.seed_everything(seed, verbose=False)
    m = r["model"]
    feats = dm.info["features"]  # input sizes the data knows override the recipe's (time: the training crop)
    sizes = {"n_mels": feats["num_mel_bins"], "freq_num": feats["num_mel_bins"],
             "time_num": data.get("train_crop_frames") or feats["target_frames"]}
    bb = m["backbone"]
    bb = {**bb, "init_args": {k: sizes.get(k, v) for k, v in (bb.get("init_args") or {}).items()}}
    crop = m.get("eval_crop_frames")
    model = AudioClassifier(_callable(bb), dm.num_classes, dm.multilabel, data_info=dm.data_info,
                            optimizer=_callable(m["optimizer"]), scheduler=_callable(m.get("scheduler")),
                            eval_crop_frames=crop)
    timer, cm, scores = EpochTimer(), ConfusionMatrixPlot(every_n_epochs=10**9), TestScoresToJson()
    averaging = [_callable(c)() for c in r.get("averaging", [])]  # the averaged weights are the ones tested
    trainer = _trainer(args.epochs, [*averaging, timer, cm, scores,
                                     _progress(f"{name} fold {test_fold} seed {seed}", timer)])
    load0 = os.getloadavg()
    trainer.fit(model, dm)
    load1 = os.getloadavg()
    res = trainer.test(model, dm, verbose=False)[0]
    out = {"model": name, "test_fold": test_fold, "train_folds": list(train_folds),
           "epochs": args.epochs, "seed": seed, "acc": res["test/acc"], "f1": res["test/f1"],
           "params": sum(p.numel() for p in model.backbone.parameters() if p.requires_grad),
           "epoch_seconds": timer.times, "norm_over": train, "norm": norm, "cm": cm.matrices["test"].tolist(),
           "classes": dm.class_names, "recipe": r, "recipe_id": recipe_id(r), "code_id": code,
           "batch_size": batch_size, "threads": args.threads, "load_start": load0, "load_end": load1,
           "test_keys": scores.keys, "test_targets": scores.targets,
           "test_scores": scores.scores}
    if crop is not None and args.whole:
        model.hparams.eval_crop_frames = None
        whole = trainer.test(model, dm, verbose=False)[0]
        out.update(acc_whole=whole["test/acc"], f1_whole=whole["test/f1"])
    return out


def _progress(tag: str, timer):
    """A callback printing each epoch's seconds and mean training loss (to follow long runs)."""
    from lightning.pytorch.callbacks import Callback

    class _Progress(Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            loss = trainer.callback_metrics.get("train/loss")
            print(f"  {tag} epoch {trainer.current_epoch + 1}/{trainer.max_epochs}: {timer.times[-1]:.1f} s, "
                  f"last batch loss {float(loss) if loss is not None else float('nan'):.3f}", flush=True)

    return _Progress()


def _run_job(job: tuple) -> dict:
    """One (model, held-out fold) run in a worker process (``--threads`` torch threads), timed."""
    import torch

    name, root, fold, train_folds, seed, args = job
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    return {**run_one(name, root, fold, train_folds, args, seed), "seconds": time.perf_counter() - t0}


def ensemble(records: list[dict]) -> dict:
    """The ensemble of ``records`` (one model and held-out fold, other seeds): each clip's class scores averaged
    over the runs, scored as one run (``audiognn.ensemble.score_ensemble``), with the members' seeds."""
    from audiognn.ensemble import score_ensemble

    runs = [{"keys": r["test_keys"], "scores": r["test_scores"], "targets": r["test_targets"]} for r in records]
    names = [f"{r['model']} fold {r['test_fold']} seed {r['seed']}" for r in records]
    e = score_ensemble(runs, len(records[0]["classes"]), names)
    return {"acc": e["acc"], "f1": e["f1"], "cm": e["cm"], "seeds": [r["seed"] for r in records]}


def _mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {sd:.3f}"


def ensembles(runs: list[dict]) -> dict[tuple[str, int], dict]:
    """(model, held-out fold) -> :func:`ensemble` of its runs, where it has two seeds or more with scores."""
    by: dict[tuple[str, int], list[dict]] = {}
    for r in runs:
        if "test_scores" in r:
            by.setdefault((r["model"], r["test_fold"]), []).append(r)
    return {k: ensemble(rs) for k, rs in by.items() if len(rs) > 1}


def mix_name(spec: str) -> str:
    return " + ".join(NAMES.get(m, m) for m in spec.split("+"))


def mixes(runs: list[dict], specs: list[str]) -> dict[tuple[str, int], dict]:
    """(spec, held-out fold) -> the ensemble of every run of the spec's models (``"cnn+gnn"``) on that fold, all
    their seeds, each run weighing the same, where each of the models has a run with scores there; with
    ``runs`` (members per fold) and ``minutes`` (their training time summed)."""
    out = {}
    for spec in specs:
        models = spec.split("+")
        for f in sorted({r["test_fold"] for r in runs}):
            rs = [r for r in runs if r["model"] in models and r["test_fold"] == f and "test_scores" in r]
            if {r["model"] for r in rs} == set(models):
                out[spec, f] = {**ensemble(rs), "runs": len(rs),
                                "minutes": sum(sum(r["epoch_seconds"]) for r in rs) / 60}
    return out


def recording_of(key: str) -> str | None:
    """The source recording (freesound ID) of an UrbanSound8K clip name ``fsID-classID-occurrenceID-sliceID``;
    ``None`` for a name of another form."""
    parts = key.split("-")
    return parts[0] if len(parts) == 4 and all(p.isdigit() for p in parts) else None


def recording_acc(record: dict) -> float | None:
    """Accuracy with every source recording weighing the same: the mean over the held-out fold's recordings of
    the accuracy on that recording's clips (``None`` when a clip name is not UrbanSound8K's)."""
    hits: dict[str, list[bool]] = {}
    for key, scores, target in zip(record["test_keys"], record["test_scores"], record["test_targets"]):
        rec = recording_of(key)
        if rec is None:
            return None
        hits.setdefault(rec, []).append(max(range(len(scores)), key=scores.__getitem__) == target)
    return statistics.fmean(statistics.fmean(h) for h in hits.values()) if hits else None


def recordings(runs: list[dict], names: list[str], fs: list[int]) -> list[str]:
    """The held-out folds' source recordings (clips, recordings, the largest one's share) and each model's
    :func:`recording_acc` per fold (mean over its runs); no lines when the clip names are not UrbanSound8K's."""
    with_scores = [r for r in runs if "test_scores" in r]
    per = {f: next((r["test_keys"] for r in with_scores if r["test_fold"] == f), None) for f in fs}
    if not all(per.values()) or any(recording_of(k) is None for keys in per.values() for k in keys):
        return []
    lines = ["", "| held-out fold | clips | source recordings | largest recording: clips (share of the fold) | "
             "five largest: share |", "| --- | --- | --- | --- | --- |"]
    for f, keys in per.items():
        sizes = sorted(Counter(map(recording_of, keys)).values(), reverse=True)
        lines.append(f"| {f} | {len(keys)} | {len(sizes)} | {sizes[0]} ({sizes[0] / len(keys):.1%}) | "
                     f"{sum(sizes[:5]) / len(keys):.1%} |")
    lines += ["", "| model (accuracy with every source recording weighing the same, mean over its runs) | "
              + " | ".join(f"fold {f} held out" for f in fs) + " |", "| --- |" + " --- |" * len(fs)]
    for name in names:
        cells = []
        for f in fs:
            accs = [recording_acc(r) for r in with_scores if r["model"] == name and r["test_fold"] == f]
            cells.append(f"{statistics.fmean(accs):.3f}" if accs else "-")
        lines.append(f"| {NAMES.get(name, name)} | " + " | ".join(cells) + " |")
    return lines


def table(runs: list[dict], threads: int, folds: int | None = None, ens: dict | None = None,
          mix: dict | None = None) -> list[str]:
    """Markdown tables: per model, accuracy and macro-F1 (mean ± std over its runs: folds × seeds), best run,
    params, training seconds per epoch and minutes per run (a row short of ``folds`` folds says so); with two
    seeds or more, the ensemble of the seeds per held-out fold (mean ± std over the folds); then per held-out
    fold (mean over the seeds); then the held-out folds' source recordings and each model's accuracy with every
    recording weighing the same (:func:`recordings`); then the load average. ``ens``: :func:`ensembles` of
    ``runs``, when the caller has them already; ``mix``: :func:`mixes` of ``runs`` (ensembles across models), a
    table of their own and a row each per fold."""
    names = list(dict.fromkeys(r["model"] for r in runs))
    seeds = sorted({r["seed"] for r in runs})
    multi = len(seeds) > 1
    lines = [f"| model | runs | test acc (mean ± std) | macro-F1 (mean ± std) | best {'run' if multi else 'fold'} acc | "
             f"params | train s/epoch ({threads} thread{'s' * (threads > 1)}) | train min/run |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name in names:
        rs = [r for r in runs if r["model"] == name]
        secs = [t for r in rs for t in r["epoch_seconds"]]
        best = max(rs, key=lambda r: r["acc"])
        nf = len({r["test_fold"] for r in rs})
        part = "" if nf == (folds or len({r["test_fold"] for r in runs})) else f" ({nf} of {folds} folds)"
        ns = len({r["seed"] for r in rs})
        where = f"fold {best['test_fold']}" + (f", seed {best['seed']}" if multi else "")
        lines.append(f"| {NAMES.get(name, name)}{part} | {nf} fold{'s' * (nf > 1)} × {ns} seed{'s' * (ns > 1)} | "
                     f"{_mean_sd([r['acc'] for r in rs])} | {_mean_sd([r['f1'] for r in rs])} | "
                     f"{best['acc']:.3f} ({where}) | {rs[0]['params']:,} | {statistics.fmean(secs):.0f} | "
                     f"{statistics.fmean(sum(r['epoch_seconds']) for r in rs) / 60:.1f} |")
    ens = ensembles(runs) if ens is None else ens
    if ens:
        lines += ["", "| model: ensemble of its seeds (mean of the class scores) | runs | test acc (mean ± std over "
                  "folds) | macro-F1 (mean ± std) | best fold acc | train min per fold (all seeds) |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for name in names:
            es = {f: e for (m, f), e in ens.items() if m == name}
            if not es:
                continue
            best = max(es, key=lambda f: es[f]["acc"])
            minutes = [sum(sum(r["epoch_seconds"]) for r in runs if r["model"] == name and r["test_fold"] == f
                           and r["seed"] in e["seeds"]) / 60 for f, e in es.items()]
            nf, ns = len(es), len(es[best]["seeds"])
            lines.append(f"| {NAMES.get(name, name)} | {nf} fold{'s' * (nf > 1)} × {ns} seeds | "
                         f"{_mean_sd([e['acc'] for e in es.values()])} | {_mean_sd([e['f1'] for e in es.values()])} "
                         f"| {es[best]['acc']:.3f} (fold {best}) | {min(minutes):.1f}–{max(minutes):.1f} |")
    specs = list(dict.fromkeys(spec for spec, _ in (mix or {})))
    if specs:
        lines += ["", "| models: ensemble across models (mean of the class scores of all their runs) | runs per fold | "
                  "test acc (mean ± std over folds) | macro-F1 (mean ± std) | best fold acc | "
                  "train min per fold (members summed) |", "| --- | --- | --- | --- | --- | --- |"]
        for spec in specs:
            es = {f: e for (s, f), e in mix.items() if s == spec}
            best = max(es, key=lambda f: es[f]["acc"])
            minutes = [e["minutes"] for e in es.values()]
            lines.append(f"| {mix_name(spec)} | {'–'.join(sorted({str(e['runs']) for e in es.values()}))} "
                         f"({len(es)} fold{'s' * (len(es) > 1)}) | {_mean_sd([e['acc'] for e in es.values()])} | "
                         f"{_mean_sd([e['f1'] for e in es.values()])} | {es[best]['acc']:.3f} (fold {best}) | "
                         f"{min(minutes):.1f}–{max(minutes):.1f} |")
    fs = sorted({r["test_fold"] for r in runs})
    head = "acc / macro-F1" + (f", mean over {len(seeds)} seeds; ensemble acc" if multi else "") + ", whole-clip acc"
    lines += ["", f"| model ({head}) | " + " | ".join(f"fold {f} held out" for f in fs) + " |",
              "| --- |" + " --- |" * len(fs)]
    for name in names:
        cells = []
        for f in fs:
            rs = [r for r in runs if r["model"] == name and r["test_fold"] == f]
            if not rs:
                cells.append("-")
                continue
            cell = f"{statistics.fmean(r['acc'] for r in rs):.3f} / {statistics.fmean(r['f1'] for r in rs):.3f}"
            if (name, f) in ens:
                cell += f"; ens {ens[name, f]['acc']:.3f}"
            if all("acc_whole" in r for r in rs):
                cell += f" ({statistics.fmean(r['acc_whole'] for r in rs):.3f})"
            cells.append(cell)
        lines.append(f"| {NAMES.get(name, name)} | " + " | ".join(cells) + " |")
    for spec in specs:
        lines.append(f"| {mix_name(spec)} (ensemble across models) | " + " | ".join(
            f"ens {mix[spec, f]['acc']:.3f} / {mix[spec, f]['f1']:.3f}" if (spec, f) in mix else "-" for f in fs) + " |")
    lines += recordings(runs, names, fs)
    loads = [x for r in runs for x in (r.get("load_start", [None])[0], r.get("load_end", [None])[0]) if x is not None]
    if loads:
        lines += ["", f"load average (1 min) at the start / end of the runs: {min(loads):.1f} to {max(loads):.1f}, "
                  f"mean {statistics.fmean(loads):.1f} ({os.cpu_count()} cores)"]
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shards", default="data/urbansound8k", help="prepared UrbanSound8K (prepare urbansound8k)")
    p.add_argument("--out", default="bench/out/real_audio", help="results.json and confusion PNGs")
    p.add_argument("--epochs", type=int, default=15, help="training epochs, the same for every model")
    p.add_argument("--batch-size", type=int, default=None, help="default: the recipe's data.batch_size")
    p.add_argument("--set", nargs="+", default=[], metavar="PATH=VALUE",
                   help="recipe overrides for screening, e.g. data.train_crop_frames=128 model.eval_crop_frames=128")
    p.add_argument("--whole", action="store_true", help="a recipe that tests on crops is also tested on whole clips")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--test-folds", type=int, nargs="+", default=None, help="held-out folds (default: every fold)")
    p.add_argument("--train-folds", type=int, nargs="+", default=None,
                   help="train on only these folds (default: every fold but the held-out one): a learning curve, "
                        "e.g. --test-folds 3 --train-folds 1")
    p.add_argument("--seeds", "--seed", type=int, nargs="+", default=[0],
                   help="seeds: every model and held-out fold is trained once per seed; two or more also give "
                        "the ensemble of the seeds (the mean of their class scores per clip)")
    p.add_argument("--mix", nargs="+", default=[], metavar="MODEL+MODEL",
                   help="ensembles across models, e.g. cnn+gnn: per held-out fold, each clip's class scores averaged "
                        "over every run of those models (each run weighs the same), scored like one run")
    p.add_argument("--jobs", type=int, default=1, help="runs trained at once, in worker processes")
    p.add_argument("--merge", nargs="+", default=[], help="also read finished runs from these --out directories")
    p.add_argument("--report", action="store_true", help="train nothing: the table of the finished models")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1: on a shared 2-core machine 2 threads were several times slower)")
    args = p.parse_args(argv)
    if args.batch_size:
        args.set = [*args.set, f"data.batch_size={args.batch_size}"]

    for spec in args.mix:
        parts = spec.split("+")
        if len(parts) < 2 or len(set(parts)) != len(parts) or not set(parts) <= set(args.models):
            p.error(f"--mix {spec}: expected two or more of the models run here ({'+'.join(args.models)}), "
                    "joined by +, each once")

    import torch

    torch.set_num_threads(args.threads)
    root, out = Path(args.shards), Path(args.out)
    info = json.loads((root / "dataset.json").read_text())
    folds = folds_of(info)
    if len(folds) < 2:
        p.error(f"{root}: needs at least two splits fold<N>, has {sorted(info['splits'])}")
    test_folds = args.test_folds or folds
    for name, chosen in (("--test-folds", args.test_folds), ("--train-folds", args.train_folds)):
        if unknown := sorted(set(chosen or ()) - set(folds)):
            p.error(f"{name} {unknown}: {root} has folds {folds}")
    if args.train_folds and (both := sorted(set(args.train_folds) & set(test_folds))):
        p.error(f"--train-folds {both} are also held out: a fold is trained on or tested on, never both")
    train_of = {f: sorted(set(args.train_folds or folds) - {f}) for f in test_folds}  # training folds per run
    out.mkdir(parents=True, exist_ok=True)
    with (out / ".lock").open("w") as lock:  # two runs writing one results.json would lose each other's runs
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            p.error(f"{out}: another real_audio run is writing there ({out / '.lock'} is locked); "
                    "give this one its own --out and read both with --merge")
        return _bench(args, root, out, info, test_folds, train_of)


def _bench(args, root: Path, out: Path, info: dict, test_folds: list[int], train_of: dict[int, list[int]]) -> int:
    """``main`` once the arguments are checked and ``out`` is locked: train what is not done, write the tables."""
    import numpy as np

    from callbacks.confusion_matrix import plot_confusion_matrix

    recipes = {m: recipe(m, args.set) for m in args.models}
    rid = {m: recipe_id(r) for m, r in recipes.items()}
    cid = {m: code_id(backbone=r["model"]["backbone"]["class_path"]) for m, r in recipes.items()}
    print(f"data: {root} ({info.get('name', '?')}, {len(info['classes'])} classes, "
          + ", ".join(f"{s}: {m['clips']}" for s, m in sorted(info["splits"].items()))
          + f"); epochs {args.epochs}; seeds {args.seeds}; held-out folds {test_folds}; "
          + (f"training folds {args.train_folds}; " if args.train_folds else "")
          + f"overrides {args.set}; "
          + f"recipes {rid}; code {cid}", flush=True)
    results_file = out / "results.json"
    key = lambda r: (r["model"], r["test_fold"], tuple(r["train_folds"]), r["epochs"], r["seed"],  # noqa: E731
                     r.get("recipe_id"), r.get("code_id"))
    want = lambda m, f, s: (m, f, tuple(train_of[f]), args.epochs, s, rid[m], cid[m])  # noqa: E731
    have = {}
    for f in [*(Path(d) / "results.json" for d in args.merge), results_file]:
        # a run recorded before the per-clip scores were kept is run again (the ensembles need them)
        have.update({key(r): r for r in (json.loads(f.read_text()) if f.exists() else []) if "test_scores" in r})
    mine = [r for r in (json.loads(results_file.read_text()) if results_file.exists() else [])]
    grid = [(m, f, s) for m in args.models for f in test_folds for s in args.seeds]
    todo = [t for t in grid if want(*t) not in have]
    if args.report:
        for m, f, s in todo:
            print(f"{m} fold {f} seed {s}: not run yet", flush=True)
        args.models = [m for m in args.models if any(t not in todo for t in grid if t[0] == m)]  # partial rows too
        todo = []
    for t in [t for t in grid if want(*t) in have]:
        print(f"{t[0]} fold {t[1]} seed {t[2]}: done before, acc {have[want(*t)]['acc']:.3f}", flush=True)
    cost = {"lhgnn": 0, "rnn": 1, "cnn": 2, "gnn": 3}  # the slowest first, so that --jobs overlap well
    jobs = [(m, root, f, train_of[f], s, args) for m, f, s in sorted(todo, key=lambda t: (cost[t[0]], t[2], t[1]))]
    with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) if args.jobs > 1 else nullcontext() as pool:
        it = as_completed([pool.submit(_run_job, j) for j in jobs]) if pool else map(_run_job, jobs)
        for r in it:
            r = r.result() if pool else r  # results.json is written by this process only, after every finished run
            have[key(r)] = r
            mine = [x for x in mine if key(x) != key(r)] + [r]  # this directory's runs (merged ones stay there)
            results_file.write_text(json.dumps(mine, indent=1))
            whole = f" (whole clips: acc {r['acc_whole']:.3f} f1 {r['f1_whole']:.3f})" if "acc_whole" in r else ""
            print(f"{r['model']} fold {r['test_fold']} seed {r['seed']}: acc {r['acc']:.3f} f1 {r['f1']:.3f}{whole} in "
                  f"{r['seconds']:.0f} s ({statistics.fmean(r['epoch_seconds']):.0f} s/epoch)", flush=True)
    runs = [have[want(*t)] for t in grid if want(*t) in have]
    ens = ensembles(runs)
    for name in args.models:
        rs = [r for r in runs if r["model"] == name]
        seeds = "" if len(args.seeds) == 1 else f", {len({r['seed'] for r in rs})} seeds summed"
        cm = np.sum([np.array(r["cm"]) for r in rs], axis=0)
        plot_confusion_matrix(cm, rs[0]["classes"], f"{NAMES[name]}, UrbanSound8K folds {test_folds} held out{seeds}",
                              out / f"confusion_{name}.png")
        if es := [e for (m, _), e in ens.items() if m == name]:
            plot_confusion_matrix(np.sum([np.array(e["cm"]) for e in es], axis=0), rs[0]["classes"],
                                  f"{NAMES[name]}, ensemble of its seeds, folds {test_folds} held out",
                                  out / f"confusion_{name}_ensemble.png")
    mix = mixes(runs, args.mix)
    for spec in args.mix:
        if es := [e for (s, _), e in mix.items() if s == spec]:
            plot_confusion_matrix(np.sum([np.array(e["cm"]) for e in es], axis=0), runs[0]["classes"],
                                  f"{mix_name(spec)}, ensemble of their runs, folds {test_folds} held out",
                                  out / f"confusion_mix_{spec.replace('+', '-')}.png")
    lines = table(runs, args.threads, len(test_folds), ens, mix)
    (out / "table.md").write_text("\n".join(lines) + "\n")
    blocks = "\n".join(lines).split("\n\n")  # per fold and load: table.md, --report
    print("\n" + "\n\n".join(blocks if args.report else blocks[: 1 + bool(ens) + bool(mix)]))
    print(f"chance accuracy: {1 / len(info['classes']):.3f}; per run: {results_file}; "
          f"tables: {out}/table.md; "
          f"confusion matrices: {out}/confusion_<model>.png", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
