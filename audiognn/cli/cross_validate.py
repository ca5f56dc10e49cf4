"""ESC-50 cross-validation: one ``train.py fit`` + ``test`` per (seed, held-out fold), then mean ± std.

    python -m audiognn.cli.cross_validate --config conf/lhgnn/esc50.yaml --folds 1 2 3 4 5 --seeds 0 1 2 3 4
    python -m audiognn.cli.cross_validate --config conf/lhgnn/esc50.yaml --dry-run          # print the plan only
    python -m audiognn.cli.cross_validate --config ... -- --trainer.max_epochs 5            # extra train.py args

Singh et al., *LHGNN*, §III-C: "trained 5 times by selecting 4 folds (1600 samples) as training and 1 fold (400
samples) as test set. The entire experiment was repeated 5 times with different random seeds to get the
mean score along with its deviation." For every seed s and fold k this writes
``OUT/seed{s}-fold{k}/config.yaml`` — the given config with ``seed_everything: s``, train splits = the other
folds, val = test = fold k (ESC-50 has no validation fold: validation is for monitoring only), and its
run directory, checkpoint directory (``checkpoint.dirpath``) and wandb run name moved under ``OUT/seed{s}-fold{k}`` — then runs, as
subprocesses, ``train.py fit`` and ``train.py test --ckpt_path .../checkpoints/last.ckpt`` (the last,
weight-averaged model: never a checkpoint chosen on the test fold). A small callback added to the run's
config (`callbacks.metrics_json.TestMetricsToJson`) writes the test metrics to ``OUT/seed{s}-fold{k}/test_metrics.json``.

Printed: accuracy per run; per seed the 5-fold CV accuracy (mean over folds: every fold has 400 clips);
finally the mean ± std over seeds of the CV accuracy (sample std, ddof = 1) — the paper's figure — and
also mean ± std over all runs. A run whose ``test_metrics.json`` exists is not repeated (resume a
half-done study by re-running the same command; ``--force`` re-runs everything).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def run_config(base: dict, seed: int, fold: int, folds: list[int], run_dir: Path, split_prefix: str = "fold",
               where: str = "config") -> dict:
    """The config of one run (see the module docstring); ``base`` is not modified."""
    cfg = copy.deepcopy(base)
    if not isinstance(cfg.get("data"), dict) or not isinstance(cfg.get("trainer"), dict):
        raise ValueError(f"{where}: needs 'trainer' and 'data' sections (a full train.py config)")
    cfg["seed_everything"] = seed
    test = [f"{split_prefix}{fold}"]
    train = [f"{split_prefix}{f}" for f in folds if f != fold]
    init = cfg["data"].setdefault("init_args", {})
    init.update(train_splits=train, val_splits=list(test), test_splits=list(test))
    tr = cfg["trainer"]
    tr["default_root_dir"] = str(run_dir)
    logger = tr.get("logger")
    if isinstance(logger, dict) and "init_args" in logger:
        logger["init_args"]["save_dir"] = str(run_dir)
        if "name" in logger["init_args"] or "WandbLogger" in str(logger.get("class_path", "")):
            logger["init_args"]["name"] = f"{logger['init_args'].get('name', 'esc50')}-{run_dir.name}"
    callbacks = [c for c in (tr.get("callbacks") or []) if "TestMetricsToJson" not in str(c.get("class_path"))]
    if any(str(c.get("class_path", "")).endswith("ModelCheckpoint") for c in callbacks):
        raise ValueError(f"{where}: put ModelCheckpoint under the top-level 'checkpoint:' key (train.py), "
                         "not in trainer.callbacks")  # fmt: skip
    ckpt = cfg.get("checkpoint") if isinstance(cfg.get("checkpoint"), dict) else {}
    ckpt.update(dirpath=str(run_dir / "checkpoints"), save_last=True)  # the last model is tested
    cfg["checkpoint"] = ckpt
    callbacks.append({"class_path": "callbacks.metrics_json.TestMetricsToJson",
                      "init_args": {"path": str(run_dir / "test_metrics.json")}})  # fmt: skip
    tr["callbacks"] = callbacks
    return cfg


def summarise(results: dict[tuple[int, int], float], metric: str = "test/acc") -> list[str]:
    """Lines of the report: per run, per seed (mean over folds), and mean ± std (in %)."""
    lines = [f"{'seed':>4} {'fold':>4} {metric:>10}"]
    for (s, f), acc in sorted(results.items()):
        lines.append(f"{s:>4} {f:>4} {100 * acc:>9.2f}%")
    seeds = sorted({s for s, _ in results})
    per_seed = [statistics.fmean(a for (s, _), a in results.items() if s == seed) for seed in seeds]
    for seed, acc in zip(seeds, per_seed, strict=True):
        n = sum(1 for s, _ in results if s == seed)
        lines.append(f"seed {seed}: {n}-fold CV accuracy {100 * acc:.2f}%")
    sd = statistics.stdev(per_seed) if len(per_seed) > 1 else 0.0
    lines.append(f"ESC-50 accuracy over {len(seeds)} seed(s) (mean ± std of the per-seed CV accuracy): "
                 f"{100 * statistics.fmean(per_seed):.2f} ± {100 * sd:.2f} %")  # fmt: skip
    allv = list(results.values())
    sd_all = statistics.stdev(allv) if len(allv) > 1 else 0.0
    lines.append(f"over all {len(allv)} runs: {100 * statistics.fmean(allv):.2f} ± {100 * sd_all:.2f} %")
    return lines


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    p = argparse.ArgumentParser(description="ESC-50 k-fold cross-validation with train.py (Singh et al., LHGNN §III-C)")
    p.add_argument("--config", required=True, help="a full train.py config, e.g. conf/lhgnn/esc50.yaml")
    p.add_argument("--folds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--out", default="runs/esc50-cv", help="directory of the per-run configs, checkpoints, metrics")
    p.add_argument("--split-prefix", default="fold", help="split names are PREFIX<k> (prepare esc50: fold1..fold5)")
    p.add_argument("--metric", default="test/acc")
    p.add_argument("--dry-run", action="store_true", help="write the configs and print the commands only")
    p.add_argument("--force", action="store_true", help="re-run runs that already have test metrics")
    args = p.parse_args(argv)
    if len(set(args.folds)) < 2:
        p.error(f"--folds needs at least two distinct folds, got {args.folds}")
    cfg_path = Path(args.config)
    if not cfg_path.is_file():
        p.error(f"--config {cfg_path}: file not found")
    base = yaml.safe_load(cfg_path.read_text())
    if not isinstance(base, dict):
        p.error(f"--config {cfg_path}: expected a YAML mapping")
    out = Path(args.out).resolve()
    results: dict[tuple[int, int], float] = {}
    for seed in args.seeds:
        for fold in args.folds:
            run_dir = out / f"seed{seed}-fold{fold}"
            run_dir.mkdir(parents=True, exist_ok=True)
            cfg = run_config(base, seed, fold, args.folds, run_dir, args.split_prefix, str(cfg_path))
            run_cfg = run_dir / "config.yaml"
            run_cfg.write_text(yaml.safe_dump(cfg, sort_keys=False))
            metrics_file = run_dir / "test_metrics.json"
            cmds = [
                [sys.executable, str(REPO / "train.py"), "fit", "--config", str(run_cfg), *extra],
                [sys.executable, str(REPO / "train.py"), "test", "--config", str(run_cfg),
                 "--ckpt_path", str(run_dir / "checkpoints" / "last.ckpt"), *extra],
            ]  # fmt: skip
            if args.dry_run:
                for c in cmds:
                    print(" ".join(c))
                continue
            if metrics_file.exists() and not args.force:
                print(f"seed {seed} fold {fold}: done before, reading {metrics_file}", flush=True)
            else:
                metrics_file.unlink(missing_ok=True)
                for c in cmds:
                    print("$ " + " ".join(c), flush=True)
                    rc = subprocess.run(c, cwd=REPO, check=False).returncode
                    if rc != 0:
                        print(f"seed {seed} fold {fold}: '{c[2]}' failed with exit code {rc}; see {run_dir}",
                              file=sys.stderr)  # fmt: skip
                        return rc
            metrics = json.loads(metrics_file.read_text())
            if args.metric not in metrics:
                raise KeyError(f"{metrics_file}: no '{args.metric}' (has {sorted(metrics)})")
            results[(seed, fold)] = metrics[args.metric]
            print(f"seed {seed} fold {fold}: {args.metric} = {100 * results[(seed, fold)]:.2f}%", flush=True)
    if results:
        print("\n".join(summarise(results, args.metric)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
