"""The audio models on equal terms on real recordings: UrbanSound8K, train on two folds, test on the third.

    python -m datamodules.prepare urbansound8k ../shared/data/urbansound8k-folds123 \\
        --target-frames 400 --num-mel-bins 64 --out data/urbansound8k
    python bench/real_audio.py --shards data/urbansound8k --epochs 8

For every model (CNN, RNN, GenreGNN, LHGNN-tiny) and every held-out fold of the set (the folds are the
splits ``fold<N>`` of ``dataset.json``; with UrbanSound8K folds 1-3 that is three rotations), the model is
trained on the other folds for ``--epochs`` epochs (the same for every model), seeded, and tested on the
held-out fold. Backbone, optimiser, schedule and augmentation come from ``conf/urbansound8k/<model>.yaml``
(the recipes ``train.py`` runs), so the bench measures what the recipes train. The normalisation statistics
of each rotation are pooled over its training folds only (never the held-out fold). No validation runs
during training and the last model is tested: no choice is made on the test fold.

Prints one table: accuracy and macro-F1 (mean ± sample std over the rotations), trainable parameters and
training seconds per epoch (wall clock, ``--threads`` torch threads); writes ``results.json`` (one record per
model and fold; a finished run is read back, not repeated: re-run the same command to resume) and
``confusion_<model>.png`` (summed over the rotations) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("WANDB_MODE", "disabled")

from bench.genre_compare import EpochTimer, _callable, _trainer  # noqa: E402

MODELS = ("cnn", "rnn", "gnn", "lhgnn")
NAMES = {"cnn": "CNN", "rnn": "RNN (BiLSTM)", "gnn": "GenreGNN", "lhgnn": "LHGNN-tiny"}


def recipe(name: str) -> dict:
    """The ``model`` and ``data`` init args of ``conf/urbansound8k/<name>.yaml``, its ``compose:`` fragments
    merged in (as ``train.py`` reads it)."""
    from audiognn.cli.runs import load_composed

    cfg = load_composed(ROOT / "conf" / "urbansound8k" / f"{name}.yaml")
    return {"model": cfg["model"]["init_args"], "data": cfg["data"]["init_args"]}


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


def run_one(name: str, root: Path, test_fold: int, folds: list[int], args) -> dict:
    """Train ``name`` on every fold but ``test_fold``, test on it; accuracy, F1, parameters, epoch times, CM."""
    import lightning as L

    from audiognn.tasks.audio_classifier import AudioClassifier
    from callbacks.confusion_matrix import ConfusionMatrixPlot
    from datamodules.audio_shards import AudioShardDataModule

    r = recipe(name)
    data = {k: v for k, v in r["data"].items() if k not in ("root", "num_workers", "train_splits", "val_splits",
                                                             "test_splits", "seed", "batch_size")}
    train = [f"fold{f}" for f in folds if f != test_fold]
    norm = train_fold_norm(root, train)

    class TrainFoldNorm(AudioShardDataModule):
        def setup(self, stage=None):
            super().setup(stage)
            self.mean, self.std = norm

    dm = TrainFoldNorm(str(root), batch_size=args.batch_size, num_workers=0, train_splits=train,
                       val_splits=[f"fold{test_fold}"], test_splits=[f"fold{test_fold}"], seed=args.seed, **data)
    L.seed_everything(args.seed, verbose=False)
    m = r["model"]
    feats = dm.info["features"]  # input sizes the data knows override the recipe's
    sizes = {"n_mels": feats["num_mel_bins"], "freq_num": feats["num_mel_bins"], "time_num": feats["target_frames"]}
    bb = m["backbone"]
    bb = {**bb, "init_args": {k: sizes.get(k, v) for k, v in (bb.get("init_args") or {}).items()}}
    model = AudioClassifier(_callable(bb), dm.num_classes, dm.multilabel, data_info=dm.data_info,
                            optimizer=_callable(m["optimizer"]), scheduler=_callable(m.get("scheduler")),
                            eval_crop_frames=m.get("eval_crop_frames"))
    timer, cm = EpochTimer(), ConfusionMatrixPlot(every_n_epochs=10**9)
    trainer = _trainer(args.epochs, [timer, cm])
    trainer.fit(model, dm)
    res = trainer.test(model, dm, verbose=False)[0]
    return {"model": name, "test_fold": test_fold, "train_folds": [f for f in folds if f != test_fold],
            "epochs": args.epochs, "seed": args.seed, "acc": res["test/acc"], "f1": res["test/f1"],
            "params": sum(p.numel() for p in model.backbone.parameters() if p.requires_grad),
            "epoch_seconds": timer.times, "norm_over": train, "norm": norm, "cm": cm.matrices["test"].tolist(),
            "classes": dm.class_names}


def _run_job(job: tuple) -> dict:
    """One (model, held-out fold) run in a worker process (``--threads`` torch threads), timed."""
    import torch

    name, root, fold, folds, args = job
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    return {**run_one(name, root, fold, folds, args), "seconds": time.perf_counter() - t0}


def _mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {sd:.3f}"


def table(runs: list[dict], threads: int) -> list[str]:
    """Markdown table: per model, accuracy and macro-F1 (mean ± std over folds), best fold, params, training
    seconds per epoch and minutes per run (mean over folds)."""
    lines = ["| model | test acc (mean ± std) | macro-F1 (mean ± std) | best fold acc | params | "
             f"train s/epoch ({threads} thread{'s' * (threads > 1)}) | train min/run |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name in dict.fromkeys(r["model"] for r in runs):
        rs = [r for r in runs if r["model"] == name]
        secs = [t for r in rs for t in r["epoch_seconds"]]
        best = max(rs, key=lambda r: r["acc"])
        lines.append(f"| {NAMES.get(name, name)} | {_mean_sd([r['acc'] for r in rs])} | "
                     f"{_mean_sd([r['f1'] for r in rs])} | {best['acc']:.3f} (fold {best['test_fold']}) | "
                     f"{rs[0]['params']:,} | {statistics.fmean(secs):.0f} | "
                     f"{statistics.fmean(sum(r['epoch_seconds']) for r in rs) / 60:.1f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shards", default="data/urbansound8k", help="prepared UrbanSound8K (prepare urbansound8k)")
    p.add_argument("--out", default="bench/out/real_audio", help="results.json and confusion PNGs")
    p.add_argument("--epochs", type=int, default=8, help="training epochs, the same for every model")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--test-folds", type=int, nargs="+", default=None, help="held-out folds (default: every fold)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=1, help="runs trained at once, in worker processes")
    p.add_argument("--merge", nargs="+", default=[], help="also read finished runs from these --out directories")
    p.add_argument("--report", action="store_true", help="train nothing: the table of the finished models")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1: on a shared 2-core machine 2 threads were several times slower)")
    args = p.parse_args(argv)

    import numpy as np
    import torch

    from callbacks.confusion_matrix import plot_confusion_matrix

    torch.set_num_threads(args.threads)
    root, out = Path(args.shards), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    info = json.loads((root / "dataset.json").read_text())
    folds = folds_of(info)
    if len(folds) < 2:
        p.error(f"{root}: needs at least two splits fold<N>, has {sorted(info['splits'])}")
    test_folds = args.test_folds or folds
    print(f"data: {root} ({info.get('name', '?')}, {len(info['classes'])} classes, "
          + ", ".join(f"{s}: {m['clips']}" for s, m in sorted(info["splits"].items()))
          + f"); epochs {args.epochs}; seed {args.seed}; held-out folds {test_folds}", flush=True)
    results_file = out / "results.json"
    key = lambda r: (r["model"], r["test_fold"], r["epochs"], r["seed"])  # noqa: E731
    have = {}
    for f in [*(Path(d) / "results.json" for d in args.merge), results_file]:
        have.update({key(r): r for r in (json.loads(f.read_text()) if f.exists() else [])})
    todo = [(m, f) for m in args.models for f in test_folds if (m, f, args.epochs, args.seed) not in have]
    if args.report:
        for m, f in todo:
            print(f"{m} fold {f}: not run yet", flush=True)
        args.models = [m for m in args.models if all((m, f) not in todo for f in test_folds)]
        todo = []
    for m, f in [(m, f) for m in args.models for f in test_folds if (m, f) not in todo]:
        print(f"{m} fold {f}: done before, acc {have[(m, f, args.epochs, args.seed)]['acc']:.3f}", flush=True)
    cost = {"lhgnn": 0, "rnn": 1, "cnn": 2, "gnn": 3}  # the slowest first, so that --jobs overlap well
    jobs = [(m, root, f, folds, args) for m, f in sorted(todo, key=lambda t: (cost[t[0]], t[1]))]
    with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) if args.jobs > 1 else nullcontext() as pool:
        it = as_completed([pool.submit(_run_job, j) for j in jobs]) if pool else map(_run_job, jobs)
        for r in it:
            r = r.result() if pool else r  # results.json is written by this process only, after every finished run
            have[key(r)] = r
            results_file.write_text(json.dumps(list(have.values()), indent=1))
            print(f"{r['model']} fold {r['test_fold']}: acc {r['acc']:.3f} f1 {r['f1']:.3f} in {r['seconds']:.0f} s "
                  f"({statistics.fmean(r['epoch_seconds']):.0f} s/epoch)", flush=True)
    runs = [have[(m, f, args.epochs, args.seed)] for m in args.models for f in test_folds]
    for name in args.models:
        rs = [r for r in runs if r["model"] == name]
        cm = np.sum([np.array(r["cm"]) for r in rs], axis=0)
        plot_confusion_matrix(cm, rs[0]["classes"], f"{NAMES[name]}, UrbanSound8K folds {test_folds} held out",
                              out / f"confusion_{name}.png")
    print("\n" + "\n".join(table(runs, args.threads)))
    print(f"chance accuracy: {1 / len(info['classes']):.3f}; per run: {results_file}; "
          f"confusion matrices: {out}/confusion_<model>.png", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
