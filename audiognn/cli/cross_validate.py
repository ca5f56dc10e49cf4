"""Fold cross-validation for any prepared set with folds: one ``train.py fit`` + ``test`` per (seed, test fold).

    python -m audiognn.cli.cross_validate --config conf/urbansound8k/cnn.yaml                # every fold, seed 0
    python -m audiognn.cli.cross_validate --config conf/lhgnn/esc50.yaml --seeds 0 1 2 3 4    # ESC-50, 5 x 5 runs
    python -m audiognn.cli.cross_validate --config ... --folds 1 2 --dry-run                  # print the plan only
    python -m audiognn.cli.cross_validate --config ... -- --trainer.max_epochs 5              # extra train.py args

The folds are the splits ``<prefix><k>`` of the config's prepared set (``data.init_args.root``/dataset.json:
ESC-50's ``fold1``..``fold5``, UrbanSound8K's ``fold1``..``fold10``); ``--folds`` chooses the test folds
(default: all of them) and ``--seeds`` the seeds. For every seed s and test fold k this writes
``OUT/seed{s}-fold{k}/config.yaml`` -- the given config with ``seed_everything: s``, train splits = every other
fold of the set, val = test = fold k (these protocols have no validation fold: validation is for monitoring
only) and its run directory, checkpoint directory and logger run name moved under ``OUT/seed{s}-fold{k}`` --
then runs, as subprocesses, ``train.py fit`` and ``train.py test --ckpt_path .../checkpoints/last.ckpt`` (the
last, weight-averaged model: never a checkpoint chosen on the test fold). The normalisation statistics of a
run are those of its training folds only: the DataModule pools the per-split statistics ``prepare`` records
for its ``train_splits``. A callback added to the run's config (``callbacks.metrics_json.TestMetricsToJson``)
writes the test metrics to ``OUT/seed{s}-fold{k}/test_metrics.json``, another
(``TestScoresToJson``) each test clip's class scores to ``test_scores.json``, a third
(``callbacks.throughput.FitThroughputToJson``) the fit's training clips/s and peak GPU memory to
``fit_throughput.json``.

Outputs: ``OUT/results.json`` (one record per run: seed, fold, train folds, every test metric, the fit's
throughput under ``fit``) and
``OUT/summary.md`` (per run; per seed the CV score, the mean over its folds; mean ± std over seeds of the CV
score -- the figure of Singh et al., *LHGNN*, §III-C, for ESC-50 -- and over all runs; sample std, ddof = 1).
With two seeds or more, the **ensemble of the seeds** per test fold (each clip's class scores averaged over
the seeds, then accuracy and macro-F1 as for one run: ``audiognn.ensemble``) goes to ``OUT/ensembles.json`` and
the summary (single-label classification; a fold whose runs kept no scores is left out and named).
Resumable: a run whose ``test_metrics.json`` exists is not repeated (re-run the same command; ``--force``
re-runs everything).
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import statistics
import subprocess
import sys
from pathlib import Path

import yaml

from audiognn.ensemble import read_test_scores, score_ensemble

REPO = Path(__file__).resolve().parents[2]


def dataset_folds(root: str | Path, split_prefix: str = "fold") -> list[int]:
    """The fold numbers k of the splits ``<split_prefix><k>`` in ``root/dataset.json`` (sorted)."""
    info = json.loads((Path(root) / "dataset.json").read_text())
    pattern = re.compile(rf"{re.escape(split_prefix)}(\d+)")
    return sorted(int(m.group(1)) for s in info["splits"] if (m := pattern.fullmatch(s)))


def run_config(base: dict, seed: int, fold: int, folds: list[int], run_dir: Path, split_prefix: str = "fold",
               where: str = "config") -> dict:
    """The config of one run (see the module docstring): train on ``folds`` but ``fold``, test on ``fold``;
    ``base`` is not modified."""
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
            logger["init_args"]["name"] = f"{logger['init_args'].get('name', 'cv')}-{run_dir.name}"
    ours = ("TestMetricsToJson", "TestScoresToJson", "FitThroughputToJson")
    callbacks = [c for c in (tr.get("callbacks") or []) if not str(c.get("class_path")).endswith(ours)]
    if any(str(c.get("class_path", "")).endswith("ModelCheckpoint") for c in callbacks):
        raise ValueError(f"{where}: put ModelCheckpoint under the top-level 'checkpoint:' key (train.py), "
                         "not in trainer.callbacks")  # fmt: skip
    ckpt = cfg.get("checkpoint") if isinstance(cfg.get("checkpoint"), dict) else {}
    ckpt.update(dirpath=str(run_dir / "checkpoints"), save_last=True)  # the last model is tested
    cfg["checkpoint"] = ckpt
    callbacks.append({"class_path": "callbacks.metrics_json.TestMetricsToJson",
                      "init_args": {"path": str(run_dir / "test_metrics.json")}})  # fmt: skip
    callbacks.append({"class_path": "callbacks.metrics_json.TestScoresToJson",
                      "init_args": {"path": str(run_dir / "test_scores.json")}})  # fmt: skip
    callbacks.append({"class_path": "callbacks.throughput.FitThroughputToJson",
                      "init_args": {"path": str(run_dir / "fit_throughput.json")}})  # fmt: skip
    tr["callbacks"] = callbacks
    return cfg


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(results: dict[tuple[int, int], float], metric: str = "test/acc", name: str = "CV") -> list[str]:
    """Lines of the report: per run, per seed (mean over folds), and mean ± std (in %)."""
    lines = [f"{'seed':>4} {'fold':>4} {metric:>10}"]
    for (s, f), acc in sorted(results.items()):
        lines.append(f"{s:>4} {f:>4} {100 * acc:>9.2f}%")
    seeds = sorted({s for s, _ in results})
    per_seed = [statistics.fmean(a for (s, _), a in results.items() if s == seed) for seed in seeds]
    for seed, acc in zip(seeds, per_seed, strict=True):
        n = sum(1 for s, _ in results if s == seed)
        lines.append(f"seed {seed}: {n}-fold CV accuracy {100 * acc:.2f}%")
    m, sd = _mean_sd(per_seed)
    lines.append(f"{name} {metric} over {len(seeds)} seed(s) (mean ± std of the per-seed CV score): "
                 f"{100 * m:.2f} ± {100 * sd:.2f} %")  # fmt: skip
    m, sd = _mean_sd(list(results.values()))
    lines.append(f"over all {len(results)} runs: {100 * m:.2f} ± {100 * sd:.2f} %")
    return lines


def seed_ensembles(out: Path, seeds: list[int], folds: list[int]) -> tuple[list[dict], list[str]]:
    """Per test fold, the ensemble of the seeds' runs from their ``test_scores.json`` (see the module docstring);
    records ``{"fold", "seeds", "acc", "f1", "cm", "clips"}`` and the summary's lines. Empty for one seed."""
    if len(seeds) < 2:
        return [], []
    records, skipped = [], []
    for fold in folds:
        files = [out / f"seed{s}-fold{fold}" / "test_scores.json" for s in seeds]
        if not all(f.is_file() for f in files):
            skipped.append(f"fold {fold}: no test_scores.json in " + ", ".join(str(f.parent.name) for f in files
                                                                                if not f.is_file()))
            continue
        runs = [read_test_scores(f) for f in files]
        if any(not isinstance(t, int) for r in runs for t in r["targets"]):
            skipped.append(f"fold {fold}: multi-label targets (the ensemble scores single-label classes only)")
            continue
        n = len(runs[0]["classes"]) or len(runs[0]["scores"][0])
        e = score_ensemble(runs, n, [f.parent.name for f in files])
        records.append({"fold": fold, "seeds": list(seeds), **e})
    lines = []
    if records:
        lines += ["", f"ensemble of seeds {' '.join(map(str, seeds))} (mean of the class scores per clip):"]
        lines += [f"fold {r['fold']}: acc {100 * r['acc']:.2f}%, macro-F1 {100 * r['f1']:.2f}% ({r['clips']} clips)"
                  for r in records]  # fmt: skip
        for k, name in (("acc", "accuracy"), ("f1", "macro-F1")):
            m, sd = _mean_sd([r[k] for r in records])
            lines.append(f"ensemble {name} over {len(records)} fold(s): {100 * m:.2f} ± {100 * sd:.2f} %")
    lines += [f"no ensemble for {s}" for s in skipped]
    return records, lines


def metrics_table(records: list[dict]) -> list[str]:
    """Markdown table: every test metric of the runs as mean ± std over all runs (values as recorded)."""
    keys = sorted({k for r in records for k in r["metrics"]})
    lines = ["| metric | mean ± std | runs |", "| --- | --- | --- |"]
    for k in keys:
        vals = [r["metrics"][k] for r in records if k in r["metrics"]]
        m, sd = _mean_sd(vals)
        lines.append(f"| {k} | {m:.4f} ± {sd:.4f} | {len(vals)} |")
    return lines


def throughput_lines(records: list[dict]) -> list[str]:
    """Training throughput per run (``fit_throughput.json`` of ``callbacks.throughput.FitThroughputToJson``):
    clips/s over the epochs after the first, peak accelerator memory, device and precision; empty when no run
    has the file (runs from before it was written)."""
    rows = [r for r in records if isinstance(r.get("fit"), dict)]
    if not rows:
        return []
    lines = ["", "| seed | fold | train clips/s | peak memory (MiB) | device | precision |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        f = r["fit"]
        mem = "—" if f.get("peak_mem_mib") is None else f"{f['peak_mem_mib']:.0f}"
        rate = "—" if f.get("clips_per_s") is None else f"{f['clips_per_s']:.1f}"
        lines.append(f"| {r['seed']} | {r['fold']} | {rate} | {mem} | {f.get('device', '?')} | {f.get('precision', '?')} |")
    return lines


def _parse(argv: list[str]) -> tuple[argparse.Namespace, list[str], argparse.ArgumentParser]:
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    p = argparse.ArgumentParser(description="Fold cross-validation with train.py (ESC-50, UrbanSound8K, ...)")
    p.add_argument("--config", required=True, help="a full train.py config, e.g. conf/urbansound8k/cnn.yaml")
    p.add_argument("--folds", type=int, nargs="+", default=None,
                   help="test folds (default: every fold of the config's prepared set)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--out", default=None, help="per-run configs, checkpoints, metrics (default: runs/cv/<config>)")
    p.add_argument("--split-prefix", default="fold", help="split names are PREFIX<k> (prepare esc50 / urbansound8k)")
    p.add_argument("--all-folds", type=int, nargs="+", default=None,
                   help="the folds of the set (default: read from its dataset.json; else --folds)")
    p.add_argument("--metric", default="test/acc")
    p.add_argument("--dry-run", action="store_true", help="write the configs and print the commands only")
    p.add_argument("--force", action="store_true", help="re-run runs that already have test metrics")
    return p.parse_args(argv), extra, p


def _run(run_dir: Path, run_cfg: Path, extra: list[str], force: bool, dry_run: bool) -> int:
    """fit + test of one run unless its metrics exist (or ``force``); the exit code of the first failure."""
    metrics_file = run_dir / "test_metrics.json"
    cmds = [
        [sys.executable, str(REPO / "train.py"), "fit", "--config", str(run_cfg), *extra],
        [sys.executable, str(REPO / "train.py"), "test", "--config", str(run_cfg),
         "--ckpt_path", str(run_dir / "checkpoints" / "last.ckpt"), *extra],
    ]  # fmt: skip
    if dry_run:
        print("\n".join(" ".join(c) for c in cmds))
        return 0
    if metrics_file.exists() and not force:
        print(f"{run_dir.name}: done before, reading {metrics_file}", flush=True)
        return 0
    for stale in (metrics_file, run_dir / "fit_throughput.json", *run_dir.glob("test_scores.json*")):  # a re-run writes its own
        stale.unlink(missing_ok=True)
    for c in cmds:
        print("$ " + " ".join(c), flush=True)
        rc = subprocess.run(c, cwd=REPO, check=False).returncode
        if rc != 0:
            print(f"{run_dir.name}: '{c[2]}' failed with exit code {rc}; see {run_dir}", file=sys.stderr)
            return rc
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the study; 0 when every run finished (or ``--dry-run``), else the failing run's exit code."""
    args, extra, p = _parse(list(sys.argv[1:] if argv is None else argv))
    cfg_path = Path(args.config)
    if not cfg_path.is_file():
        p.error(f"--config {cfg_path}: file not found")
    base = yaml.safe_load(cfg_path.read_text())
    if not isinstance(base, dict):
        p.error(f"--config {cfg_path}: expected a YAML mapping")
    root = Path(str(((base.get("data") or {}).get("init_args") or {}).get("root", "")))
    all_folds = args.all_folds or ((root / "dataset.json").is_file() and dataset_folds(root, args.split_prefix))
    all_folds = sorted(set(all_folds or args.folds or []))
    test_folds = args.folds or all_folds
    if len(all_folds) < 2 or not set(test_folds) <= set(all_folds):
        p.error(f"folds of the set {all_folds} (from {root / 'dataset.json'} or --all-folds) must be at least two "
                f"and hold the test folds {test_folds}")
    out = Path(args.out or REPO / "runs" / "cv" / cfg_path.stem).resolve()
    records = []
    for seed in args.seeds:
        for fold in test_folds:
            run_dir = out / f"seed{seed}-fold{fold}"
            run_dir.mkdir(parents=True, exist_ok=True)
            run_cfg = run_dir / "config.yaml"
            run_cfg.write_text(yaml.safe_dump(run_config(base, seed, fold, all_folds, run_dir, args.split_prefix,
                                                         str(cfg_path)), sort_keys=False))
            rc = _run(run_dir, run_cfg, extra, args.force, args.dry_run)
            if rc or args.dry_run:
                if rc:
                    return rc
                continue
            metrics = json.loads((run_dir / "test_metrics.json").read_text())
            if args.metric not in metrics:
                raise KeyError(f"{run_dir / 'test_metrics.json'}: no '{args.metric}' (has {sorted(metrics)})")
            record = {"seed": seed, "fold": fold, "train_folds": [f for f in all_folds if f != fold],
                      "metrics": metrics}
            if (fit_file := run_dir / "fit_throughput.json").is_file():
                record["fit"] = json.loads(fit_file.read_text())
            records.append(record)
            print(f"seed {seed} fold {fold}: {args.metric} = {100 * metrics[args.metric]:.2f}%", flush=True)
    if records:
        results = {(r["seed"], r["fold"]): r["metrics"][args.metric] for r in records}
        lines = summarise(results, args.metric, cfg_path.stem) + [""] + metrics_table(records)
        ens, ens_lines = seed_ensembles(out, list(args.seeds), list(test_folds))
        lines += ens_lines + throughput_lines(records)
        if ens:
            (out / "ensembles.json").write_text(json.dumps(ens, indent=1))
        else:
            (out / "ensembles.json").unlink(missing_ok=True)  # from an earlier call with more seeds
        (out / "results.json").write_text(json.dumps(records, indent=1))
        (out / "summary.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines) + f"\nper run: {out / 'results.json'}; summary: {out / 'summary.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
