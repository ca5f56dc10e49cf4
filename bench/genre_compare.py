"""The comparison of Dhongade and Rovira, *Graph Neural Networks for Music Genre Classification*: GenreGNN vs
the CNN and RNN baselines vs R-GCN link prediction, on the same shards with the same number of epochs.

    python bench/genre_compare.py          # synthetic genre set, CI-sized (a few minutes on 2 cores)
    python bench/genre_compare.py --shards data/gtzan --epochs 60 --crop-frames 300 --threads 4

Each model is built from its conf/genre/*.yaml (the classifiers' backbones and the link predictor's
hyper-parameters), trained with Lightning (classifiers through AudioClassifier on AudioShardDataModule, the
link predictor on GenreGraphDataModule's graph of the same shards) and tested on the test split. Prints
one table -- test accuracy, macro-F1, trainable parameters, training seconds per epoch and its ratio to the
CNN's (the reference measured in the same run, or the first model's when the CNN is not run; absolute times
on a shared machine are noisy) -- and writes ``confusion_<model>.png`` per model to ``--out``.

Notes: an epoch of the link predictor is ``steps_per_epoch`` full-graph steps (conf/genre/linkpred.yaml), not
a pass over clips; it predicts held-out tracks' genres from the graph (their MFCC statistics and similar
tracks), the classifiers from the audio alone. For the comparison every classifier trains without mixup and
SpecAugment (the configs' augmentation is for long runs). GTZAN with a seeded stratified split is the leaky
protocol (see conf/genre/gtzan.yaml).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("WANDB_MODE", "disabled")

MODELS = ("gnn", "cnn", "rnn", "linkpred")


def _load_yaml(name: str) -> dict:
    import yaml

    with open(ROOT / "conf" / "genre" / f"{name}.yaml") as f:
        return yaml.safe_load(f)


def _class(path: str):
    mod, _, cls = path.rpartition(".")
    return getattr(importlib.import_module(mod), cls)


class EpochTimer:
    """Wall-clock seconds of each training epoch (validation excluded)."""

    def __new__(cls):
        from lightning.pytorch.callbacks import Callback

        class _Timer(Callback):
            def __init__(self):
                self.times: list[float] = []

            def on_train_epoch_start(self, trainer, pl_module):
                self._t = time.perf_counter()

            def on_train_epoch_end(self, trainer, pl_module):
                self.times.append(time.perf_counter() - self._t)

        return _Timer()


def make_synthetic(out: Path, train: int, val: int, test: int, frames: int, seed: int, difficulty: float = 0.0) -> Path:
    from datamodules.readers.synthetic import ensure_synthetic
    from datamodules.synthetic import SyntheticConfig

    root = out / f"synthetic-genre-{train}-{val}-{test}-{frames}-{seed}-d{difficulty:g}"
    cfg = SyntheticConfig("genre", train, val, test, seed, difficulty, target_frames=frames, workers=1)
    ensure_synthetic(root, cfg)
    return root


def _callable(spec: dict | None, **overrides):
    """``partial(class, **init_args, **overrides)`` of a ``{class_path, init_args}`` config block; None stays."""
    if spec is None:
        return None
    return partial(_class(spec["class_path"]), **{**(spec.get("init_args") or {}), **overrides})


def _trainer(epochs: int, callbacks: list):
    import lightning as L

    return L.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=callbacks,
        accelerator="cpu",
        devices=1,
    )


def run_classifier(name: str, root: Path, args) -> dict:
    from audiognn.tasks.audio_classifier import AudioClassifier
    from datamodules.audio_shards import AudioShardDataModule

    cfg = _load_yaml(name)["model"]["init_args"]
    dm = AudioShardDataModule(
        str(root),
        batch_size=args.batch_size,
        num_workers=0,
        mixup_prob=0.0,
        freq_mask=0,
        time_mask=0,
        train_crop_frames=args.crop_frames,
        seed=args.seed,
    )
    sched = cfg.get("scheduler")
    warmup = min((sched or {}).get("init_args", {}).get("warmup_steps", 0), 10)  # short runs: short warm-up
    model = AudioClassifier(
        _callable(cfg["backbone"]),
        dm.num_classes,
        dm.multilabel,
        data_info=dm.data_info,
        optimizer=_callable(cfg["optimizer"]),
        scheduler=_callable(sched, warmup_steps=warmup),
        eval_crop_frames=args.crop_frames,
    )
    return _fit_and_test(model, model.backbone, dm, args)[0]


def run_linkpred(root: Path, args) -> dict:
    from audiognn.tasks.link_prediction import LinkPrediction
    from datamodules.genre_graph import GenreGraphDataModule

    conf = _load_yaml("linkpred")
    dcfg = {k: v for k, v in conf["data"]["init_args"].items() if k not in ("root", "synthetic")}
    dm = GenreGraphDataModule(str(root), **dcfg)
    mcfg = dict(conf["model"]["init_args"])
    model = LinkPrediction(
        dm.num_node_features,
        dm.num_free_nodes,
        dm.num_classes,
        model=_callable(mcfg.pop("model")),
        optimizer=_callable(mcfg.pop("optimizer")),
        scheduler=_callable(mcfg.pop("scheduler", None)),
        num_relations=dm.num_relations,
        data_info={"classes": dm.class_names},
        **mcfg,
    )
    out, res = _fit_and_test(model, model, dm, args)
    out["extra"] = {k: res[f"test/{k}"] for k in ("mrr", "hits@1", "hits@3", "hits@10")}
    return out


def _fit_and_test(model, counted, dm, args) -> tuple[dict, dict]:
    """Fit and test ``model`` on ``dm``: (accuracy, F1, trainable parameters of ``counted``, epoch times,
    confusion matrix; the raw test metrics)."""
    from callbacks.confusion_matrix import ConfusionMatrixPlot

    timer, cm = EpochTimer(), ConfusionMatrixPlot(every_n_epochs=10**9)
    trainer = _trainer(args.epochs, [timer, cm])
    trainer.fit(model, dm)
    res = trainer.test(model, dm, verbose=False)[0]
    return {
        "acc": res["test/acc"],
        "f1": res["test/f1"],
        "params": sum(p.numel() for p in counted.parameters() if p.requires_grad),
        "times": timer.times,
        "cm": cm.matrices["test"],
        "classes": dm.class_names,
    }, res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--shards", help="prepared shard directory (e.g. GTZAN); default: generate the synthetic set"
    )
    p.add_argument("--out", default="runs/genre-compare", help="where PNGs (and the synthetic set) go")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument(
        "--crop-frames",
        type=int,
        default=None,
        help="train on random crops of this many frames, test on the mean of consecutive crops' logits "
        "(GTZAN: 300 = 3 s)",
    )
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--train", type=int, default=160, help="synthetic: training clips")
    p.add_argument("--val", type=int, default=16, help="synthetic: validation clips")
    p.add_argument("--test", type=int, default=80, help="synthetic: test clips")
    p.add_argument("--frames", type=int, default=256, help="synthetic: frames per clip")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--difficulty", type=float, default=0.3,
                   help="synthetic: probability that a clip attribute comes from another class (0 = clean)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1 by default: PyG scatter slows down badly with 2 threads on a busy 2-core box)",
    )
    args = p.parse_args(argv)

    import lightning as L
    import torch

    from callbacks.confusion_matrix import plot_confusion_matrix

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    root = (
        Path(args.shards)
        if args.shards
        else make_synthetic(out, args.train, args.val, args.test, args.frames, args.seed, args.difficulty)
    )
    info = json.loads((root / "dataset.json").read_text())
    print(
        f"data: {root} ({info.get('name', '?')}; {len(info['classes'])} classes; "
        + ", ".join(f"{s}: {m.get('clips', '?')}" for s, m in info["splits"].items())
        + f"); epochs: {args.epochs}"
    )
    results = {}
    for name in args.models:
        L.seed_everything(args.seed, verbose=False)
        t0 = time.perf_counter()
        results[name] = run_linkpred(root, args) if name == "linkpred" else run_classifier(name, root, args)
        r = results[name]
        plot_confusion_matrix(r["cm"], r["classes"], f"{name} test", out / f"confusion_{name}.png")
        print(f"  {name}: done in {time.perf_counter() - t0:.1f} s", flush=True)

    ref_name = "cnn" if "cnn" in results else next(iter(results))  # the reference timed in this run
    ref = results[ref_name]
    ref_t = sum(ref["times"]) / len(ref["times"])
    print(f"\n| model | test acc | macro-F1 | params | train s/epoch | vs {ref_name} |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, r in results.items():
        t = sum(r["times"]) / len(r["times"])
        ratio = f"{t / ref_t:.2f}x"
        print(f"| {name} | {r['acc']:.3f} | {r['f1']:.3f} | {r['params']:,} | {t:.2f} | {ratio} |")
    if "linkpred" in results:
        e = results["linkpred"]["extra"]
        print(
            "\nlinkpred, filtered ranking of held-out has_genre triples "
            "(head and tail corruption, all nodes): " + ", ".join(f"{k} {v:.3f}" for k, v in e.items())
        )
    print(f"chance accuracy: {1 / len(info['classes']):.3f}; confusion matrices: {out}/confusion_<model>.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
